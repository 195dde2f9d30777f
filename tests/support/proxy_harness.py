"""A real connector (connector.proxy.runtime.Connector, config file and all) in front of a recording
HTTPS upstream, everything on 127.0.0.1, for the proxy's integration tests.

    async with ProxyHarness(tmp_path) as h:
        status, headers, body = await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods")
        assert h.upstream.requests[-1].headers["Authorization"] == "Bearer upstream-token"

Users authenticate with service tokens (connector.authn's real service-token file): alice (group
dev: read pods and exec in `default` on socket prod), bob (group ops: everything everywhere), carol
(no policy). Audit events go to `h.audit_path`, one JSON object per line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml
from multidict import CIMultiDictProxy

from connector.authn.service_tokens import hash_token
from connector.proxy.runtime import Connector
from tests.support.https_server import RecordingHttpsServer
from tests.support.upstream_app import UpstreamControl, make_handler


@dataclass(frozen=True)
class Cluster:
    """A Kubernetes API for the socket `prod`: its URL, CA and the token the connector uses."""

    url: str
    ca_pem: bytes
    token: str


USERS: dict[str, list[str]] = {"alice": ["dev"], "bob": ["ops"], "carol": []}
UPSTREAM_TOKEN = "upstream-token"

DEFAULT_POLICIES: list[dict[str, Any]] = [
    {
        "name": "dev-read",
        "subjects": {"groups": ["dev"]},
        "sockets": ["prod"],
        "kubernetes": {
            "rules": [
                {"verbs": ["get", "list", "watch"], "resources": ["pods", "pods/log"], "namespaces": ["default"]},
                {
                    "verbs": ["create"],
                    "resources": ["pods/exec", "pods/attach", "pods/portforward", "configmaps"],
                    "namespaces": ["default"],
                },
            ]
        },
    },
    {"name": "ops-all", "subjects": {"groups": ["ops"]}, "sockets": ["*"], "kubernetes": {}},
]


class ProxyHarness:
    def __init__(
        self,
        tmp: Path,
        *,
        policies: list[dict[str, Any]] | None = None,
        socket: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        cluster: Cluster | None = None,
    ):
        self.tmp = tmp
        self.control = UpstreamControl()
        self.upstream = RecordingHttpsServer(handler=make_handler(self.control))
        # Another cluster to front instead of the recording upstream (e.g. the emulated API server).
        self.cluster = cluster
        self.tokens = {user: f"{user}-{secrets.token_urlsafe(24)}" for user in USERS}
        self.policies = DEFAULT_POLICIES if policies is None else policies
        self.socket_extra = socket or {}
        self.config_extra = config or {}
        self.config_path = tmp / "connector.yaml"
        self.audit_path = tmp / "audit.log"
        self.connector: Connector | None = None
        self._session: aiohttp.ClientSession | None = None

    def config(self) -> dict[str, Any]:
        tokens_file = self.tmp / "service-tokens.yaml"
        tokens_file.write_text(
            yaml.safe_dump(
                {
                    "tokens": [
                        {"sha256": hash_token(token), "user": user, "groups": USERS[user]}
                        for user, token in self.tokens.items()
                    ]
                }
            )
        )
        config: dict[str, Any] = {
            # Port 0 for the metrics too: connectors of tests run side by side.
            "server": {
                "listen": "127.0.0.1:0",
                "metrics_listen": "127.0.0.1:0",
                "state_dir": str(self.tmp / "state"),
                "config_poll_seconds": 0.2,
            },
            "audit": {"file": str(self.audit_path)},
            "authentication": {"service_tokens": {"file": str(tokens_file)}},
            "sockets": {
                "prod": {
                    "service_type": "standard",
                    "server": self.cluster.url if self.cluster else self.upstream.url,
                    "certificate_authority_data": base64.b64encode(
                        self.cluster.ca_pem if self.cluster else self.upstream.ca_pem
                    ).decode(),
                    "token": self.cluster.token if self.cluster else UPSTREAM_TOKEN,
                    **self.socket_extra,
                }
            },
            "policies": self.policies,
        }
        for key, value in self.config_extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    async def __aenter__(self) -> ProxyHarness:
        if self.cluster is None:
            await self.upstream.start()
        self.write_config(self.config())
        self.connector = Connector(self.config_path)
        await self.connector.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self.connector is not None:
            await self.connector.shutdown()
        await self.upstream.stop()

    @property
    def url(self) -> str:
        assert self.connector is not None
        return self.connector.url

    @property
    def ca_file(self) -> Path:
        assert self.connector is not None and self.connector.tls is not None and self.connector.tls.ca_file
        return self.connector.tls.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def session(self) -> aiohttp.ClientSession:
        """A client session trusting the connector's CA (closed by the harness)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl_context()))
        return self._session

    def auth(self, user: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = "alice",
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Send one request (the path is sent exactly as given) and read the whole answer."""
        url = aiohttp.client.URL(self.url + path, encoded=True)
        async with self.session().request(
            method, url, headers={**self.auth(user), **(headers or {})}, data=data, allow_redirects=False
        ) as resp:
            return resp.status, resp.headers, await resp.read()

    async def metrics(self) -> str:
        """What the metrics listener serves now."""
        assert self.connector is not None and self.connector.metrics_url
        async with aiohttp.ClientSession() as plain, plain.get(self.connector.metrics_url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain"), resp.status
            return await resp.text()

    async def raw(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send bytes as they are over TLS (for requests an HTTP client would not send); (status, response)."""
        assert self.connector is not None
        port = int(self.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=self.ssl_context())
        try:
            writer.write(head + body)
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        status_line = data.split(b"\r\n", 1)[0].split(b" ")
        return int(status_line[1]), data

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with one context per user (named after the user), all on socket prod."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "prod",
                    "cluster": {"server": f"{self.url}/sockets/prod", "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}} for user, token in self.tokens.items()],
            "contexts": [{"name": user, "context": {"cluster": "prod", "user": user}} for user in self.tokens],
            "current-context": "alice",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    async def settled_audit(self) -> list[dict[str, Any]]:
        """The audit events once every stream that started has completed (its end is written after the
        client saw it end, so a test waits for it rather than sleeping). Gives up after 10 s."""
        for _ in range(500):
            events = self.audit_events()
            started = {e["request_id"] for e in events if e["stage"] == "ResponseStarted"}
            complete = {e["request_id"] for e in events if e["stage"] == "ResponseComplete"}
            if events and started <= complete:
                return events
            await asyncio.sleep(0.02)
        raise AssertionError(f"streams {sorted(started - complete)} never completed in the audit log")

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
