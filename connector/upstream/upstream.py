"""`Upstream`: a resolved socket, i.e. everything the proxy needs to send a request to a cluster."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.upstream.credentials import CredentialError, CredentialSource


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

    async def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate one request as the connector (fresh: refreshed by their source)."""
        try:
            return await self.credentials.headers()
        except CredentialError as exc:
            raise SocketError(self.name, str(exc)) from None

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
