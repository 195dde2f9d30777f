"""`Upstream`: a resolved socket, i.e. everything the proxy needs to send a request to a cluster."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.upstream.credentials import CredentialError, CredentialSource

log = logging.getLogger(__name__)

# A cluster that refuses every credential must not make us re-sign a token or re-run a plugin for
# every request: after one invalidation, the next waits this long.
INVALIDATE_INTERVAL_SECONDS = 10.0


class SocketError(Exception):
    """A socket cannot be used. `str()` reads `socket prod: <what is wrong and how to fix it>`."""

    def __init__(self, socket: str, message: str):
        self.socket = socket
        self.message = message
        super().__init__(f"socket {socket}: {message}")


@dataclass(frozen=True, eq=False)
class Upstream:
    """Where a socket's requests go and with which credentials.

    `base_url` keeps the server's path prefix (e.g. `https://rancher.example.com/k8s/clusters/c-1`) and
    has no trailing slash: the proxy appends the request path to it. `ssl_context` is None only for
    a plain-http server. `tls_server_name`, when set, is the name to verify the certificate against
    instead of the URL's host (kubeconfig `tls-server-name`; pass it as aiohttp's `server_hostname`).
    """

    name: str
    service_type: str
    base_url: str
    ssl_context: ssl.SSLContext | None
    tags: dict[str, str]
    impersonation_enabled: bool
    credentials: CredentialSource = field(repr=False)
    tls_server_name: str | None = None
    # What describe() shows about where the settings came from and how TLS is verified.
    details: Mapping[str, str] = field(default_factory=dict)
    # When invalidate_credentials() last acted (time.monotonic()), in a list: the dataclass is frozen.
    _invalidated_at: list[float] = field(default_factory=list, init=False, repr=False)

    async def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate one request as the connector (fresh: refreshed by their source)."""
        try:
            return await self.credentials.headers()
        except CredentialError as exc:
            raise SocketError(self.name, str(exc)) from None

    def invalidate_credentials(self, *, now: float | None = None) -> bool:
        """The cluster answered 401: make the next request fetch fresh credentials (re-read the token
        file, re-run the exec plugin, re-sign the EKS token) instead of using the refused ones until
        their normal refresh. At most once per INVALIDATE_INTERVAL_SECONDS; returns whether it acted.
        `now` (a time.monotonic() value) is for tests."""
        now = time.monotonic() if now is None else now
        last = self._invalidated_at
        if last and now - last[0] < INVALIDATE_INTERVAL_SECONDS:
            return False
        last[:] = [now]
        self.credentials.invalidate()
        log.info("socket %s: the cluster refused the connector's credentials; fetching them again", self.name)
        return True

    def describe(self) -> dict[str, Any]:
        """A summary for people (CLI, /readyz, logs). Contains no secret."""
        return {
            "name": self.name,
            "service_type": self.service_type,
            "server": self.base_url,
            **self.details,
            "auth": self.credentials.describe(),
            "impersonation_enabled": self.impersonation_enabled,
            "tags": dict(self.tags),
        }
