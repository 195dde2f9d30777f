"""A tiny real HTTPS server on 127.0.0.1 that records every request, for tests of upstream clients.

    async with RecordingHttpsServer() as srv:            # its own CA, a certificate for 127.0.0.1/localhost
        ... GET srv.url + "/version" trusting srv.ca_pem ...
        assert srv.requests[0].headers["Authorization"] == "Bearer t"

With `require_client_cert_ca=ca.cert_pem` the TLS handshake requires a client certificate signed by
that CA (and `RecordedRequest.client_cert_subject` tells who presented it). By default it answers
GET `.../version` (under any path prefix) with a Kubernetes version object and anything else with a
404 Status; pass `handler` to answer differently (requests are recorded before it runs).
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from connector.kube.status import status_json
from connector.pki import KeyPair, generate_ca, issue_certificate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # the raw path, with its query string
    headers: CIMultiDictProxy[str]
    body: bytes
    client_cert_subject: dict[str, str] | None = field(default=None)


def version_body(git_version: str) -> dict[str, str]:
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


class RecordingHttpsServer:
    def __init__(
        self,
        *,
        require_client_cert_ca: bytes | None = None,
        handler: Handler | None = None,
        git_version: str = "v1.30.2",
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    ):
        self.ca: KeyPair = generate_ca("recording-https-server-ca")
        self.server_cert: KeyPair = issue_certificate(self.ca, "recording-https-server", hosts=hosts)
        self.requests: list[RecordedRequest] = []
        self.git_version = git_version
        self._client_ca = require_client_cert_ca
        self._handler = handler
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def write_ca(self, directory: Path, name: str = "ca.crt") -> Path:
        """Write the CA certificate to `directory/name` (for settings that take a file)."""
        path = directory / name
        path.write_bytes(self.ca_pem)
        return path

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self.server_cert.cert_pem)
            key.write_bytes(self.server_cert.key_pem)
            ctx.load_cert_chain(cert, key)
        if self._client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self._client_ca.decode())
        return ctx

    async def _record(self, request: web.Request) -> web.StreamResponse:
        peercert = request.transport.get_extra_info("peercert") if request.transport is not None else None
        subject = None
        if peercert:
            subject = {key: value for rdn in peercert.get("subject", ()) for key, value in rdn}
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.raw_path,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=await request.read(),
                client_cert_subject=subject,
            )
        )
        if self._handler is not None:
            return await self._handler(request)
        if request.method == "GET" and request.path.rstrip("/").endswith("/version"):
            return web.json_response(version_body(self.git_version))
        return web.Response(
            status=404,
            body=status_json(404, f"the server could not find the requested resource {request.path}"),
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl_context())
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RecordingHttpsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
