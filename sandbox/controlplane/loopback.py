"""Serving on 127.0.0.1: a free port for a child process, and an aiohttp app over TLS on a port
the kernel picks (the kubelet API and the token webhook each run one)."""

from __future__ import annotations

import socket
import ssl

from aiohttp import web


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a process that must be told its port before it listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackApp:
    """`app` served over TLS on 127.0.0.1; `start()` returns the port."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext) -> None:
        self._app, self._ssl = app, ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.SockSite(self._runner, self._listen(), ssl_context=self._ssl)
        await site.start()
        return self.port

    def _listen(self) -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        return sock

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
