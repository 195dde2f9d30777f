"""A TLS server on 127.0.0.1 that answers every connection with fixed bytes and records what it receives.

For proxy tests that need a cluster misbehaving at the HTTP level, which a real HTTP server will not
do: answer an upgrade request with 200 plus `Upgrade` headers, switch to a protocol nobody asked for,
send 101 and hang up at once, or send headers a cluster would not.

    async with RawUpstream(b"HTTP/1.1 101 Switching Protocols\\r\\n...\\r\\n\\r\\n", then="close") as up:
        async with ProxyHarness(tmp_path, cluster=up.cluster) as h:
            ...
        assert up.received[0].startswith(b"GET /api/v1/...")

After reading a request head it writes `response`; then `then="close"` closes the connection at once
and `then="read"` keeps reading (and recording) until the other side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Literal

from connector.pki import generate_ca, issue_certificate
from tests.support.proxy_harness import Cluster

CLUSTER_TOKEN = "raw-upstream-token"


class RawUpstream:
    def __init__(self, response: bytes, *, then: Literal["close", "read"] = "read"):
        self.response = response
        self.then = then
        self.ca = generate_ca("raw-upstream-ca")
        self._cert = issue_certificate(self.ca, "raw-upstream", hosts=("127.0.0.1",))
        self.received: list[bytearray] = []  # every byte of each connection, in order
        self.closed = asyncio.Event()  # set when a connection has ended
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.url, self.ca.cert_pem, CLUSTER_TOKEN)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self._cert.cert_pem)
            key.write_bytes(self._cert.key_pem)
            ctx.load_cert_chain(cert, key)
        return ctx

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        seen = bytearray()
        self.received.append(seen)
        try:
            seen += await reader.readuntil(b"\r\n\r\n")
            writer.write(self.response)
            await writer.drain()
            if self.then == "read":
                while data := await reader.read(65536):
                    seen += data
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self.closed.set()
            self._tasks.discard(task)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl_context())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> RawUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
