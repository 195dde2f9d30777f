"""Bounds on every client connection before its request is known, so that holding one costs a client work.

A connector is reachable by anyone who can reach its port, before any credential is shown. Like
kube-apiserver (Go's `ReadHeaderTimeout`, `IdleTimeout`, `MaxHeaderBytes`), each connection is

- counted from its accept, in total and per client IP (`ConnectionSlots`), and closed at once, before
  any TLS work, when either count is full;
- given `tls_handshake_seconds` for its whole TLS handshake;
- given `header_read_seconds` for a request head: for the first request from the end of the
  handshake, for the next ones from their first byte, however slowly the bytes trickle in;
- given `keepalive_idle_seconds` between requests;
- allowed an unfinished request head of at most twice `max_header_bytes` plus the request line:
  aiohttp's parser bounds each header line and their count, not their sum, until the head is
  complete. A head that is over our limits but within that budget reaches the handler, which
  answers 413; a bigger one is answered 431 while it is still being read.

None of this runs while a request is with the handler: a quiet watch, `logs -f`, exec or
port-forward is a request in progress (or a connection the upgrade relay took over), and its
liveness is its own protocol's (websocket and SPDY pings, the cluster's watch timeout).

The listener is ours (accept, then `loop.connect_accepted_socket` with TLS) rather than
`loop.create_server(ssl=...)`, because there the handshake runs before any protocol learns of the
connection or its address: a refused connection would still cost a handshake, and a failed
handshake would never give its slot back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from yarl import URL

from connector import metrics
from connector.audit.sinks import AuditLog
from connector.proxy import parser_errors
from connector.proxy.config import LimitsConfig

log = logging.getLogger(__name__)

HEAD_TOO_LARGE = "Request header fields too large"
ACCEPT_RETRY_SECONDS = 0.1


class ConnectionSlots:
    """The open client connections, in total and per client IP, against the current limits.

    This process's count. With several serving processes (`serve --workers N`) the limits are the
    connector's, so the supervisor holds the one count and each worker claims through its link
    (connector.proxy.worker.RemoteConnectionSlots, the same `claim`/`release`).
    """

    def __init__(self, limits: Callable[[], LimitsConfig]):
        self._limits = limits
        self._total = 0
        self._per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> str | None:
        """Take a slot for a new connection from `ip`; the limit that refuses it, or None."""
        limits = self._limits()
        if self._total >= limits.max_connections:
            return "max_connections"
        held = self._per_ip.get(ip, 0)
        if held >= limits.max_connections_per_ip:
            return "max_connections_per_ip"
        self._total += 1
        self._per_ip[ip] = held + 1
        metrics.CONNECTIONS_OPEN.inc()
        return None

    async def claim(self, ip: str) -> str | None:
        """`acquire` as the accept loop calls it (a worker's claim asks its supervisor)."""
        return self.acquire(ip)

    def release(self, ip: str) -> None:
        self._total -= 1
        held = self._per_ip.pop(ip) - 1
        if held:
            self._per_ip[ip] = held
        metrics.CONNECTIONS_OPEN.dec()


class BoundedRequestHandler(RequestHandler):
    """aiohttp's request handler with the head deadlines and the head byte budget, holding its slot;
    its refusals of unreadable heads are the connector's own (connector.proxy.parser_errors)."""

    def __init__(self, manager: BoundedServer, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._bounds = manager.bounds
        self._slot_ip: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase = ""
        self._reading_head = True
        self._head_bytes = 0
        self._head_start = b""  # the first bytes of the head being read: its method, for a refusal

    def hold_slot(self, ip: str) -> None:
        self._slot_ip = ip

    def release_slot(self) -> None:
        """Give the connection's slot back (once, however the connection ended)."""
        if self._slot_ip is not None:
            self._bounds.slots.release(self._slot_ip)
            self._slot_ip = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._set_deadline("headers", self._bounds.limits().header_read_seconds)

    def data_received(self, data: bytes) -> None:
        if not self._reading_head or not data or self._close or self._force_close:
            super().data_received(data)
            return
        limits = self._bounds.limits()
        if self._head_bytes == 0 and self._deadline_phase == "idle":
            self._set_deadline("headers", limits.header_read_seconds)
        if self._head_bytes == 0:
            self._head_start = data[:32]
        self._head_bytes += len(data)
        requests_before = self._request_count
        super().data_received(data)
        if self._request_count != requests_before:
            self._head_complete()
        elif self._head_bytes > head_budget(limits):
            self._refuse_head()

    async def _handle_request(self, request: web.BaseRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._handle_request(request, *args, **kwargs)
        finally:
            # Pipelined requests already parsed start at once; otherwise the connection waits for the next.
            if not self._messages and not self._close and not self._force_close:
                self._reading_head = True
                self._head_bytes = 0
                self._set_deadline("idle", self._bounds.limits().keepalive_idle_seconds)

    def _make_error_handler(self, err_info: _ErrInfo) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        """For a head the parser refused (or the 431 above): the connector's answer, audited before it is sent."""
        if not isinstance(err_info.exc, HttpProcessingError):
            return super()._make_error_handler(err_info)

        async def refuse(request: web.BaseRequest) -> web.StreamResponse:
            method = parser_errors.head_method(self._head_start)
            response, event = parser_errors.new_refusal(err_info.status, err_info.message, request.remote or "", method)
            audit = self._bounds.audit()
            if audit is not None:
                await audit.emit(event)
            return response

        return refuse

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        self.release_slot()
        super().connection_lost(exc)

    def _set_deadline(self, phase: str, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline_phase = phase
        self._deadline = self._loop.call_later(seconds, self._deadline_passed, phase)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self, phase: str) -> None:
        self._deadline = None
        if not self._reading_head or self._force_close:
            return
        metrics.CONNECTION_TIMEOUTS.labels(phase).inc()
        log.debug("closing the connection from %s: %s deadline passed", self._slot_ip, phase)
        self.force_close()

    def _head_complete(self) -> None:
        self._cancel_deadline()
        self._reading_head = False
        self._head_bytes = 0

    def _refuse_head(self) -> None:
        """Answer 431 the way aiohttp answers its own parser errors, and read nothing more."""
        exc = HttpProcessingError(code=431, message=HEAD_TOO_LARGE)
        self._messages.append((_ErrInfo(status=431, exc=exc, message=HEAD_TOO_LARGE), EMPTY_PAYLOAD))
        self._head_complete()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        # No further bytes are parsed; the connection closes once the 431 is written.
        self._close = True


def head_budget(limits: LimitsConfig) -> int:
    """The bytes an unfinished request head may hold: aiohttp's own per-line and count limits are
    twice ours (so that the handler can answer 413), and so is this sum."""
    return 2 * limits.max_header_bytes + limits.max_request_line_bytes


class ConnectionBounds:
    """What every connection is held to: the current limits (reloads apply to new connections), the slots,
    and the audit log its refusals of unreadable heads are written to (the current one: reloads swap it)."""

    def __init__(
        self,
        limits: Callable[[], LimitsConfig],
        slots: ConnectionSlots | None = None,
        audit: Callable[[], AuditLog | None] = lambda: None,
    ):
        self.limits = limits
        self.slots = slots if slots is not None else ConnectionSlots(limits)
        self.audit = audit


class BoundedServer(web.Server):
    bounds: ConnectionBounds

    def __call__(self) -> BoundedRequestHandler:
        return BoundedRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An AppRunner whose connections are bounded and answer parser errors without quoting the request."""

    def __init__(self, app: web.Application, bounds: ConnectionBounds, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._bounds = bounds

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no setting for the request handler class; the server is ours to specialise.
        server.__class__ = BoundedServer
        server.bounds = self._bounds
        return server


class BoundedSite(web.BaseSite):
    """A TCP listener whose connections take a slot at accept, then get their TLS handshake under its deadline."""

    def __init__(
        self, runner: ProxyRunner, host: str, port: int, *, ssl_context: ssl.SSLContext, reuse_port: bool = False
    ):
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._reuse_port = reuse_port
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return str(URL.build(scheme="https", host=self._host, port=self.port))

    @property
    def port(self) -> int:
        return self._listeners[0].getsockname()[1] if self._listeners else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, _, _, _, address in dict.fromkeys((i[0], 0, 0, "", i[4]) for i in infos):
            listener = socket.socket(family, socket.SOCK_STREAM)
            self._listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                # The kernel spreads the port's connections over every worker's listener.
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(self._backlog)
            listener.setblocking(False)
        for listener in self._listeners:
            self._spawn(self._accept(listener))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._runner._unreg_site(self)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert isinstance(server, BoundedServer)
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of file descriptors, or a connection reset while queued: the listener stays.
                log.warning("accepting a connection failed: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            self._spawn(self._handshake(server, conn, str(peer[0])))

    async def _handshake(self, server: BoundedServer, conn: socket.socket, ip: str) -> None:
        """A slot, then the TLS handshake under `tls_handshake_seconds`; the request handler takes the
        connection after it. A connection refused a slot is closed before any TLS work."""
        try:
            refused = await server.bounds.slots.claim(ip)
        except BaseException:
            conn.close()
            raise
        if refused is not None:
            metrics.CONNECTIONS_REFUSED.labels(refused).inc()
            conn.close()
            return
        loop = asyncio.get_running_loop()
        handler = server()
        handler.hold_slot(ip)
        assert self._ssl_context is not None
        try:
            await asyncio.wait_for(
                loop.connect_accepted_socket(lambda: handler, conn, ssl=self._ssl_context),
                server.bounds.limits().tls_handshake_seconds,
            )
        except TimeoutError:
            metrics.CONNECTION_TIMEOUTS.labels("handshake").inc()
            handler.release_slot()
        except OSError:
            # ssl.SSLError and resets: a client that does not speak TLS, or left. Nothing to answer.
            handler.release_slot()
        except asyncio.CancelledError:
            handler.release_slot()
            raise
