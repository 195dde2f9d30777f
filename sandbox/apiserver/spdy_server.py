"""The server side of a SPDY/3.1 connection as the kubelet runs it, over a raw upgraded socket or a websocket.

`SpdySession` is transport-independent: bytes from the client go to `feed()`, bytes for the client
leave through an async `send` callable, one frame at a time and in encoding order (header blocks
share one zlib stream). Streams are opened by the client only (kubectl's SYN_STREAMs); each
accepted one is answered with SYN_REPLY and handed to the session's consumer as a `SpdyStream`
(a `ByteSource` and `ByteSink`). Client PINGs are echoed. Like moby/spdystream, which the kubelet
uses, the session does no SPDY flow control (WINDOW_UPDATE and SETTINGS are ignored); backpressure
comes from TCP instead: the transport stops reading while a stream holds too much unread data.

Taking over an aiohttp connection: aiohttp's server only treats `websocket` and `tcp` as upgrades,
so for `Upgrade: SPDY/3.1` it parsed a plain request. `accept_upgrade` answers it with a 101
through aiohttp itself (prepare + write_eof: aiohttp records the response as complete, with
`Connection: close` semantics so the connection is never reused), then swaps the transport's
protocol (`transport.set_protocol`) to one that feeds the session. kubectl writes nothing before
it reads the 101, so no SPDY byte can have reached aiohttp's HTTP parser. The aiohttp handler
keeps running until the session ends; when the socket closes, the new protocol passes
`connection_lost` on to aiohttp's, so aiohttp's bookkeeping (open connections, shutdown) stays right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from connector.kube.spdy import (
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    DataFrame,
    Frame,
    GoAwayFrame,
    GoAwayStatus,
    HeadersFrame,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    SpdyFrameReader,
    SpdyFrameWriter,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    header_value,
)
from sandbox.apiserver.channels import close_websocket
from sandbox.apiserver.pipes import ClientGone, InboundBuffer

log = logging.getLogger(__name__)

HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_ACCEPTED_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
OUTBOUND_HIGH_WATER = 256 * 1024  # bytes queued for the client before writers wait
MAX_DATA_FRAME = 32 * 1024
FLUSH_TIMEOUT = 2.0  # seconds to get the last frames out to a client before giving up on it

StreamAcceptor = Callable[["SpdyStream"], str | None]
"""Decides on a new client stream: None accepts it, a message refuses it (the stream is reset)."""


class SpdyStream:
    """One client-opened stream: read what the client sends, write back, half-close with FIN."""

    def __init__(self, session: SpdySession, frame: SynStreamFrame) -> None:
        self._session = session
        self.stream_id = frame.stream_id
        self.headers = frame.headers
        self.inbound = InboundBuffer()
        # A unidirectional stream is one the server may not send on.
        self.local_closed = bool(frame.flags & FLAG_UNIDIRECTIONAL)
        self.reset = False
        if frame.fin:
            self.inbound.end()

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    async def read(self) -> bytes:
        return await self.inbound.read()

    async def write(self, data: bytes) -> None:
        if self.reset or self._session.lost:
            raise ClientGone(f"stream {self.stream_id} is closed")
        if self.local_closed:
            raise ClientGone(f"stream {self.stream_id} was already half-closed by the server")
        view = memoryview(data)
        for start in range(0, len(view), MAX_DATA_FRAME):
            self._session.queue(DataFrame(self.stream_id, bytes(view[start : start + MAX_DATA_FRAME])))
        await self._session.drain()

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN (once; not after a reset)."""
        if self.local_closed or self.reset or self._session.lost:
            return
        self.local_closed = True
        self._session.queue(DataFrame(self.stream_id, b"", FLAG_FIN))
        self._session.forget_if_done(self)
        await self._session.drain()

    def discard(self) -> None:
        """The server is done with the stream: drop what the client still sends on it (no frame is sent)."""
        self.inbound.discard()
        self._session.forget(self)

    def cancel(self) -> None:
        """Reset the stream (RST_STREAM CANCEL): both directions end at once."""
        if not self.reset and not self._session.lost:
            self._session.queue(RstStreamFrame(self.stream_id, RstStatus.CANCEL))
        self._on_reset()

    def _on_reset(self) -> None:
        self.reset = True
        self.inbound.end()


class SpdySession:
    """A server-side SPDY/3.1 session; see the module docstring."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        accept: StreamAcceptor,
        *,
        pause_reading: Callable[[], None] | None = None,
        resume_reading: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._accept = accept
        self._pause_reading = pause_reading
        self._resume_reading = resume_reading
        self._reader = SpdyFrameReader()
        self._writer = SpdyFrameWriter()
        self._outbound: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._outbound_size = 0
        self._room = asyncio.Event()
        self._room.set()
        self._streams: dict[int, SpdyStream] = {}
        self._last_stream_id = 0
        self._going_away = False
        self._paused = False
        self._resumer: asyncio.Task[None] | None = None  # held so the task is not garbage-collected
        self.lost = False
        self.closed = asyncio.Event()  # the client went away (GOAWAY, disconnect, protocol error)
        self.new_streams: asyncio.Queue[SpdyStream] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop())

    # -- inbound ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client, in order."""
        if self.lost:
            return
        try:
            frames = self._reader.feed(data)
        except SpdyProtocolError as exc:
            log.warning("SPDY protocol error from client: %s", exc)
            self.queue(GoAwayFrame(self._last_stream_id, GoAwayStatus.PROTOCOL_ERROR))
            self._client_gone()
            return
        for frame in frames:
            self._dispatch(frame)
        full = [stream for stream in self._streams.values() if stream.inbound.full()]
        if full and self._pause_reading is not None and self._resume_reading is not None and not self._paused:
            self._paused = True
            self._pause_reading()
            self._resumer = asyncio.get_running_loop().create_task(self._resume_when_drained(full))

    async def _resume_when_drained(self, full: list[SpdyStream]) -> None:
        for stream in full:
            await stream.inbound.wait_for_room()
        self._paused = False
        if self._resume_reading is not None and not self.lost:
            self._resume_reading()

    def _dispatch(self, frame: Frame) -> None:
        if isinstance(frame, SynStreamFrame):
            self._open_stream(frame)
        elif isinstance(frame, DataFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is not None and not stream.reset:  # data for a gone stream is dropped, as spdystream does
                stream.inbound.feed(frame.data)
                if frame.fin:
                    stream.inbound.end()
                    self.forget_if_done(stream)
        elif isinstance(frame, RstStreamFrame):
            stream = self._streams.pop(frame.stream_id, None)
            if stream is not None:
                stream._on_reset()
        elif isinstance(frame, PingFrame):
            if frame.ping_id % 2 == 1:  # client-initiated (odd); even ids would answer our own pings
                self.queue(frame)
        elif isinstance(frame, GoAwayFrame):
            self._client_gone()
        elif isinstance(frame, HeadersFrame) and frame.fin:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream.inbound.end()
                self.forget_if_done(stream)
        # SYN_REPLY (we open no streams), SETTINGS, WINDOW_UPDATE and unknown frames: nothing to do

    def _open_stream(self, frame: SynStreamFrame) -> None:
        # Client streams are odd and strictly increasing; anything else is a protocol error.
        if self._going_away or frame.stream_id % 2 == 0 or frame.stream_id <= self._last_stream_id:
            self.queue(RstStreamFrame(frame.stream_id, RstStatus.PROTOCOL_ERROR))
            return
        self._last_stream_id = frame.stream_id
        stream = SpdyStream(self, frame)
        refusal = self._accept(stream)
        if refusal is not None:
            log.info("SPDY stream %d refused: %s", frame.stream_id, refusal)
            stream.cancel()
            return
        self._streams[frame.stream_id] = stream
        self.queue(SynReplyFrame(frame.stream_id, {}))
        self.new_streams.put_nowait(stream)

    def forget_if_done(self, stream: SpdyStream) -> None:
        """Drop a stream both sides have finished, so long sessions do not accumulate them."""
        if stream.local_closed and stream.inbound.ended:
            self.forget(stream)

    def forget(self, stream: SpdyStream) -> None:
        """Stop routing frames to `stream`; later DATA for it is dropped, as spdystream drops it."""
        self._streams.pop(stream.stream_id, None)

    def connection_lost(self) -> None:
        self._client_gone()

    def _client_gone(self) -> None:
        self._going_away = True
        for stream in self._streams.values():
            stream.inbound.end()
        self.closed.set()

    # -- outbound -----------------------------------------------------------------------------

    def queue(self, frame: Frame) -> None:
        """Encode `frame` now (compression order is wire order) and queue it for the client."""
        if self.lost:
            return
        data = self._writer.encode(frame)
        self._outbound_size += len(data)
        if self._outbound_size > OUTBOUND_HIGH_WATER:
            self._room.clear()
        self._outbound.put_nowait(data)

    async def drain(self) -> None:
        """Wait while too much is queued for the client; raises ClientGone once it is gone."""
        await self._room.wait()
        if self.lost:
            raise ClientGone("the SPDY connection is closed")

    async def _send_loop(self) -> None:
        try:
            while (data := await self._outbound.get()) is not None:
                await self._send(data)
                self._outbound_size -= len(data)
                if self._outbound_size <= OUTBOUND_HIGH_WATER:
                    self._room.set()
        except (ConnectionError, ClientGone) as exc:
            log.debug("SPDY connection lost while sending: %s", exc)
            self._lose()

    def _lose(self) -> None:
        self.lost = True
        self._room.set()
        self._client_gone()

    async def go_away(self) -> None:
        """Send GOAWAY (status OK) after everything queued; returns once it is sent (or cannot be)."""
        if self._sender.done():
            return
        if not self._going_away:
            self._going_away = True
            self.queue(GoAwayFrame(self._last_stream_id, GoAwayStatus.OK))
            self._outbound.put_nowait(None)  # the sender stops after the GOAWAY
        await asyncio.wait({self._sender})

    def abort(self) -> None:
        """Stop sending at once (the transport is being closed)."""
        self._sender.cancel()
        self._lose()


@dataclass
class UpgradedConnection:
    """An aiohttp request taken over for SPDY: the session, the 101 response, and how to close."""

    session: SpdySession
    response: web.StreamResponse
    _close: Callable[[], Awaitable[None]]

    async def close(self, grace: float) -> None:
        """GOAWAY, then give the client `grace` seconds to close its side before closing ours.

        Closing first could reset the connection while the client still reads the last output.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session.go_away(), max(grace, FLUSH_TIMEOUT))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session.closed.wait(), grace)
        await self._close()
        self.session.abort()


def negotiate_version(request: web.BaseRequest, supported: Iterable[str]) -> str | web.Response:
    """The X-Stream-Protocol-Version handshake of k8s.io/apimachinery/pkg/util/httpstream.

    Returns the protocol, or the error response the kubelet sends.
    """
    supported = tuple(supported)
    offered = [item.strip() for line in request.headers.getall(HEADER_PROTOCOL_VERSION, [])
               for item in line.split(",") if item.strip()]
    if not offered:
        return web.Response(status=400, text=f"unable to upgrade: {HEADER_PROTOCOL_VERSION} is required")
    for protocol in offered:
        if protocol in supported:
            return protocol
    response = web.Response(
        status=403,
        text=f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(offered)}], "
        f"server accepts [{' '.join(supported)}]",
    )
    for protocol in supported:
        response.headers.add(HEADER_ACCEPTED_VERSIONS, protocol)
    return response


def is_spdy_upgrade(request: web.BaseRequest) -> bool:
    connection = ",".join(request.headers.getall("Connection", [])).lower()
    upgrade = ",".join(request.headers.getall("Upgrade", [])).lower()
    return "upgrade" in connection and "spdy/3.1" in upgrade


class _UpgradedProtocol(asyncio.Protocol):
    """Replaces aiohttp's protocol on an upgraded transport: bytes go to the SPDY session."""

    def __init__(self, previous: asyncio.BaseProtocol) -> None:
        self._previous = previous
        self.session: SpdySession | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.feed(data)

    def eof_received(self) -> bool:
        if self.session is not None:
            self.session.connection_lost()
        return False  # close the transport: nothing more is coming and the client will not read either

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def writable(self) -> None:
        await self._writable.wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self._writable.set()
        if self.session is not None:
            self.session.connection_lost()
        # aiohttp's handler protocol still owns the connection's bookkeeping: let it clean up.
        self._previous.connection_lost(exc)


async def accept_upgrade(request: web.BaseRequest, protocol: str, accept: StreamAcceptor) -> UpgradedConnection:
    """Answer `request` with 101 SPDY/3.1 (X-Stream-Protocol-Version: protocol) and take the socket over."""
    response = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", HEADER_PROTOCOL_VERSION: protocol},
    )
    response.force_close()  # aiohttp must never read another request from this connection
    await response.prepare(request)
    await response.write_eof()
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ClientGone("the client closed the connection before the upgrade")
    upgraded = _UpgradedProtocol(transport.get_protocol())

    async def send(data: bytes) -> None:
        if transport.is_closing():
            raise ClientGone("the connection is closed")
        transport.write(data)
        await upgraded.writable()

    session = SpdySession(send, accept, pause_reading=transport.pause_reading, resume_reading=transport.resume_reading)
    upgraded.session = session
    transport.set_protocol(upgraded)

    async def close() -> None:
        if not transport.is_closing():
            transport.close()
        try:
            await asyncio.wait_for(upgraded.lost.wait(), FLUSH_TIMEOUT)
        except TimeoutError:
            transport.abort()  # a client that reads nothing must not keep the connection open

    return UpgradedConnection(session=session, response=response, _close=close)


@dataclass
class Tunnel:
    """A SPDY session carried by an accepted websocket, and the task feeding it the client's messages."""

    session: SpdySession
    _ws: web.WebSocketResponse
    _pump: asyncio.Task[None]

    async def close(self) -> None:
        """GOAWAY (bounded wait), then close the websocket."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session.go_away(), FLUSH_TIMEOUT)
        self.session.abort()
        await close_websocket(self._ws, self._pump)


def accept_tunnel(ws: web.WebSocketResponse, accept: StreamAcceptor) -> Tunnel:
    """A SPDY session in the binary messages of an accepted websocket (SPDY/3.1+portforward.k8s.io).

    Message boundaries mean nothing: the messages' payloads form one byte stream each way.
    """

    async def send(data: bytes) -> None:
        if ws.closed:
            raise ClientGone("the websocket is closed")
        try:
            await ws.send_bytes(data)
        except ConnectionError as exc:
            raise ClientGone(str(exc)) from exc

    room = asyncio.Event()
    room.set()
    session = SpdySession(send, accept, pause_reading=room.clear, resume_reading=room.set)

    async def pump() -> None:
        try:
            while not ws.closed:
                await room.wait()
                message = await ws.receive()
                if message.type is WSMsgType.BINARY:
                    session.feed(message.data)
                elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                elif message.type is WSMsgType.TEXT:
                    # client-go's tunnel accepts binary messages only, and so does the apiserver's
                    log.warning("text message in a SPDY tunnel: closing it")
                    break
        finally:
            session.connection_lost()

    return Tunnel(session, ws, asyncio.create_task(pump()))
