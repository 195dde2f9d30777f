"""Relay upgraded connections (exec, attach, port-forward over websocket or SPDY/3.1) byte for byte.

The connector opens its own connection to the cluster and sends the upgrade request; only when the
cluster answers `101 Switching Protocols` does the client get a 101, after which bytes are spliced
both ways until either side closes. Any other answer is returned as a normal response and the
client connection is closed, so an upgrade the cluster refused can never turn into an open tunnel
(CVE-2018-1002105).

Taking the client connection over: aiohttp's server treats only `websocket` as an upgrade, and we
want the same path for SPDY/3.1. After aiohttp has written the 101 (so its response state is
"sent"), the transport's protocol is swapped for the relay's with `transport.set_protocol()`, and
bytes aiohttp had already buffered past the request are handed to the relay. aiohttp's request
handler never learns that the connection ended (its protocol no longer receives the events), so the
relay tells it with `connection_lost` once it is done; that releases aiohttp's per-connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from connector import metrics
from connector.proxy.config import UpstreamTimeoutsConfig
from connector.proxy.forward import ConnectTimeout, UpstreamFailure, classify_failure
from connector.proxy.registry import ActiveStream, SocketEntry

log = logging.getLogger(__name__)

MAX_RESPONSE_HEAD = 64 * 1024
# A refused upgrade's body is a Status object; more than this is not an error message.
MAX_REFUSAL_BODY = 1024 * 1024
READ_SIZE = 256 * 1024
# Pause reading a side when the other side's unsent bytes exceed this.
HIGH_WATER = 1024 * 1024
CLOSE_FLUSH_SECONDS = 5.0


class SessionTap(Protocol):
    """A passive observer of a relayed session (the recorder); it must never block or alter the relay."""

    def client_bytes(self, data: bytes) -> None: ...
    def upstream_bytes(self, data: bytes) -> None: ...
    async def close(self) -> Any: ...


def request_head(method: str, target: str, host: str, headers: CIMultiDict[str]) -> bytes:
    """The HTTP/1.1 request line and headers for the upgrade request to the cluster.

    Encoded as aiohttp's client encodes plain requests (UTF-8, and the client's own bytes restored from
    aiohttp's surrogate escapes), so that the cluster sees the same `Impersonate-User` for a user called
    `josé` whether the request is an exec or a get.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def parse_response_head(head: bytes) -> tuple[int, str, CIMultiDict[str]]:
    """Parse `HTTP/1.1 101 Switching Protocols\\r\\nName: value...\\r\\n\\r\\n`; raises ValueError."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"malformed status line {status_line[:100]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise ValueError(f"malformed header line {line[:100]!r}")
        headers.add(name, value.strip())
    return int(code), reason, headers


@dataclass
class UpstreamHandshake:
    """The cluster's answer to the upgrade request, with the connection still open."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


async def open_upgrade(
    entry: SocketEntry,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: CIMultiDict[str],
    timeouts: UpstreamTimeoutsConfig,
) -> UpstreamHandshake:
    """Connect to the socket's cluster, send the upgrade request and read the response head."""
    upstream = entry.upstream
    base = URL(upstream.base_url)
    target = base.raw_path.rstrip("/") + raw_path + (f"?{raw_query}" if raw_query else "")
    tls = upstream.ssl_context if base.scheme == "https" else None
    host = base.raw_host or ""
    default_port = 443 if base.scheme == "https" else 80
    host_header = base.raw_authority if base.explicit_port and base.port != default_port else host
    try:
        async with asyncio.timeout(timeouts.connect_seconds):
            reader, writer = await asyncio.open_connection(
                host,
                base.port or default_port,
                ssl=tls,
                server_hostname=(upstream.tls_server_name or host) if tls is not None else None,
                limit=MAX_RESPONSE_HEAD,
            )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        if isinstance(exc, TimeoutError):
            exc = ConnectTimeout(f"connecting to {host} took longer than {timeouts.connect_seconds:g} s")
        raise classify_failure(entry.name, exc, timeouts, connecting=True) from exc
    try:
        writer.write(request_head(method, target, host_header, headers))
        async with asyncio.timeout(timeouts.response_seconds):
            head = await reader.readuntil(b"\r\n\r\n")
        status, reason, response_headers = parse_response_head(head[:-4])
    except asyncio.LimitOverrunError as exc:
        writer.close()
        raise UpstreamFailure(
            502, f"socket {entry.name}: the cluster's response headers are too large", "response head over 64 KiB"
        ) from exc
    except ValueError as exc:
        writer.close()
        raise UpstreamFailure(502, f"socket {entry.name}: the cluster sent a malformed response", str(exc)) from exc
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        writer.close()
        raise classify_failure(entry.name, exc, timeouts) from exc
    return UpstreamHandshake(status, reason, response_headers, reader, writer)


async def read_refusal_body(handshake: UpstreamHandshake, timeouts: UpstreamTimeoutsConfig) -> bytes:
    """The body of a non-101 answer (bounded), read by its framing: Content-Length, chunked or to EOF."""
    reader, headers = handshake.reader, handshake.headers
    async with asyncio.timeout(timeouts.response_seconds):
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await reader.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
                if size == 0 or len(body) + size > MAX_REFUSAL_BODY:
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            return bytes(body)
        length = headers.get("Content-Length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_REFUSAL_BODY:
                raise ValueError(f"refusal body length {length!r} is not acceptable")
            return await reader.readexactly(int(length))
        if handshake.status in (204, 304) or 100 <= handshake.status < 200:
            return b""
        return await reader.read(MAX_REFUSAL_BODY)


@dataclass
class RelayResult:
    bytes_in: int
    bytes_out: int
    ended_by: str  # "client", "upstream" or "connector"
    tap_error: str | None
    # aiohttp's protocol that owned the connection before the relay took it over.
    server_protocol: asyncio.BaseProtocol | None = None


class _ClientSide(asyncio.Protocol):
    """The protocol put on the client's transport once the 101 is sent."""

    def __init__(self, relay: _Relay):
        self._relay = relay

    def data_received(self, data: bytes) -> None:
        self._relay.from_client(data)

    def eof_received(self) -> bool:
        self._relay.side_closed("client")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.client_lost.set()
        self._relay.side_closed("client")

    def pause_writing(self) -> None:
        self._relay.client_writable.clear()

    def resume_writing(self) -> None:
        self._relay.client_writable.set()


class _Relay:
    def __init__(self, client: asyncio.Transport, handshake: UpstreamHandshake, tap: SessionTap | None, socket: str):
        self.client = client
        self.reader = handshake.reader
        self.writer = handshake.writer
        self.tap = tap
        self.tap_error: str | None = None
        self.socket = socket
        self.bytes_in = 0
        self.bytes_out = 0
        self.ended_by: str | None = None
        self.done = asyncio.Event()
        self.client_lost = asyncio.Event()
        self.client_writable = asyncio.Event()
        self.client_writable.set()
        self._draining = False
        self._drain_task: asyncio.Future[None] | None = None

    def _tap(self, method: Callable[[bytes], None], data: bytes) -> None:
        try:
            method(data)
        except Exception as exc:  # the recorder must never break the session
            self.tap_error = f"{type(exc).__name__}: {exc}"
            log.error("socket %s: session recording failed, the session goes on unrecorded: %s", self.socket, exc)
            metrics.RECORDING_ERRORS.labels(stage="write").inc()
            self.tap = None

    def from_client(self, data: bytes) -> None:
        if self.done.is_set():
            return  # the relay is closing: nothing more goes upstream
        self.bytes_in += len(data)
        if self.tap is not None:
            self._tap(self.tap.client_bytes, data)
        self.writer.write(data)
        if not self._draining and self.writer.transport.get_write_buffer_size() > HIGH_WATER:
            self._draining = True
            self.client.pause_reading()
            self._drain_task = asyncio.ensure_future(self._drain_upstream())

    async def _drain_upstream(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.side_closed("upstream")
        finally:
            self._draining = False
            if not self.client.is_closing():
                self.client.resume_reading()

    async def pump_upstream(self) -> None:
        """Cluster -> client, until the cluster closes or the relay ends."""
        try:
            while not self.done.is_set():
                data = await self.reader.read(READ_SIZE)
                if not data or self.client.is_closing():
                    break
                self.bytes_out += len(data)
                if self.tap is not None:
                    self._tap(self.tap.upstream_bytes, data)
                self.client.write(data)
                if not self.client_writable.is_set():
                    await _first(self.client_writable.wait(), self.done.wait())
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        self.side_closed("upstream")

    def side_closed(self, side: str) -> None:
        if self.ended_by is None:
            self.ended_by = side
        self.done.set()

    async def finish(self) -> None:
        """Close both connections, letting each flush what it has (bounded)."""
        self.writer.close()
        self.client.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH_SECONDS):
                await self.client_lost.wait()
        if not self.client_lost.is_set():
            self.client.abort()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_FLUSH_SECONDS):
                await self.writer.wait_closed()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def relay(
    request: web.Request,
    response: web.StreamResponse,
    handshake: UpstreamHandshake,
    tap: SessionTap | None,
    stream: ActiveStream,
    socket: str,
) -> RelayResult:
    """Splice the client connection (101 already sent with `response`) and the cluster's, until one ends."""
    transport = request.transport
    if transport is None or transport.is_closing():
        handshake.close()
        return RelayResult(0, 0, "client", None)
    aiohttp_protocol = transport.get_protocol()
    # Bytes aiohttp read past the upgrade request (a client that did not wait for the 101).
    buffered: bytes = getattr(aiohttp_protocol, "_message_tail", b"") or b""
    state = _Relay(transport, handshake, tap, socket)
    transport.set_protocol(_ClientSide(state))
    if buffered:
        state.from_client(buffered)
    if not transport.is_reading():
        transport.resume_reading()
    pump = asyncio.ensure_future(state.pump_upstream())
    try:
        await _first(state.done.wait(), stream.stopped.wait())
        if not state.done.is_set():
            state.side_closed("connector")
    finally:
        await state.finish()
        pump.cancel()
        await asyncio.wait({pump})
        response.force_close()
    return RelayResult(
        state.bytes_in, state.bytes_out, state.ended_by or "connector", state.tap_error, aiohttp_protocol
    )


def release_server_connection(result: RelayResult) -> None:
    """Tell aiohttp's request handler that the taken-over connection is gone.

    It no longer receives transport events, so it would keep the connection in its books forever.
    Called last in the request handler (scheduled, so it runs once the handler has returned): the
    notification cancels whatever still runs for this connection.
    """
    if result.server_protocol is not None:
        asyncio.get_running_loop().call_soon(result.server_protocol.connection_lost, None)
