"""Passive decoders for exec and attach sessions: relayed bytes in, session events out.

The proxy relays an upgraded connection byte for byte and shows every chunk to a tap, in both
directions. The tap never alters, delays or refuses a byte: decoding happens on the side, and
whatever goes wrong in it (malformed input, an unknown protocol, a bug) becomes one `DecodeError`
event, after which the tap only counts bytes. The relay goes on.

What is decoded is what the endpoints act on, so that a recording shows what the container was
given and what the user was shown:

- websocket (`v5.channel.k8s.io` and the other channel protocols, see connector.kube.channels):
  client frames are read one frame per channel message, because the websocket library inside the
  Kubernetes server reads one frame at a time (`golang.org/x/net/websocket` `Message.Receive`), so
  a client cannot hide input behind a fragmented message; server frames are read as RFC 6455
  messages, as kubectl's websocket library joins fragments.
- SPDY/3.1 (`kubectl` < 1.30, or with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`): the client opens
  one stream per channel with SYN_STREAM and a `streamtype` header; DATA frames on those streams
  carry the channel data (see connector.kube.spdy).

Port-forward sessions are not decoded (they carry arbitrary TCP data); their taps count bytes.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from connector.kube.channels import (
    ERROR,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    ChannelClose,
    ChannelData,
    ChannelMessageError,
    ChannelProtocol,
    ChannelStreamDecoder,
    ExitStatus,
    TerminalSize,
    TerminalSizeDecoder,
    parse_error_channel,
    protocol_for,
)
from connector.kube.spdy import FLAG_FIN, SpdyFrameReader, SpdyProtocolError, SynStreamFrame, header_value
from connector.kube.spdy import Frame as SpdyFrame
from connector.kube.websocket_frames import FrameParser, Opcode

log = logging.getLogger(__name__)

Direction = Literal["client", "upstream"]
StreamName = Literal["stdin", "stdout", "stderr"]

# The error channel holds one small Status; anything past this is not worth keeping in memory.
MAX_ERROR_CHANNEL_BYTES = 64 * 1024


@dataclass(frozen=True)
class StreamData:
    """Bytes the container read (stdin) or wrote (stdout, stderr)."""

    stream: StreamName
    data: bytes


@dataclass(frozen=True)
class StreamClosed:
    """The sender is done with a stream (v5's close signal, or a SPDY stream's FIN)."""

    stream: StreamName


@dataclass(frozen=True)
class ProtocolNote:
    """Something odd the endpoints tolerate (e.g. a message the server drops); decoding goes on."""

    direction: Direction
    message: str


@dataclass(frozen=True)
class DecodeError:
    """The bytes could not be decoded any further; the tap stops decoding (the relay does not)."""

    direction: Direction
    message: str


SessionEvent = StreamData | StreamClosed | TerminalSize | ExitStatus | ProtocolNote | DecodeError


class SessionDecoder(Protocol):
    """Turns one session's relayed bytes into events. May raise; PassiveTap contains that."""

    def client_bytes(self, data: bytes) -> list[SessionEvent]: ...

    def upstream_bytes(self, data: bytes) -> list[SessionEvent]: ...

    def finish(self) -> list[SessionEvent]: ...


class _ErrorChannel:
    """Collects the error channel until the session ends, then reads the exit status from it."""

    def __init__(self, structured: bool | None):
        self._structured = structured
        self._data = bytearray()
        self._seen = False
        self._reported = False

    def add(self, data: bytes) -> None:
        self._seen = True
        room = MAX_ERROR_CHANNEL_BYTES - len(self._data)
        if room > 0:
            self._data += data[:room]

    def status(self) -> list[SessionEvent]:
        """The exit status, once: when the server is done (close) or the session ends."""
        if self._reported or not self._seen or not self._data.strip():
            return []
        self._reported = True
        return [parse_error_channel(bytes(self._data), structured=self._structured)]


_STREAM_OF_CHANNEL: dict[int, StreamName] = {STDIN: "stdin", STDOUT: "stdout", STDERR: "stderr"}
_OUTPUT_STREAMS: dict[str, StreamName] = {"stdout": "stdout", "stderr": "stderr"}


class WebSocketSessionDecoder:
    """exec/attach over websocket with one of the Kubernetes channel protocols."""

    def __init__(self, protocol: ChannelProtocol):
        self.protocol = protocol
        self._client_frames = FrameParser(masked=True)
        self._upstream_frames = FrameParser(masked=False)
        self._client_channels = ChannelStreamDecoder(protocol)
        self._upstream_channels = ChannelStreamDecoder(protocol)
        self._resize = TerminalSizeDecoder()
        self._resize_noted = False
        self._errors = _ErrorChannel(protocol.status_errors)

    def client_bytes(self, data: bytes) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        channels = self._client_channels
        for chunk in self._client_frames.feed(data):
            if chunk.header.opcode.is_control:
                continue
            # The server reads each frame as a message of its own, continuation frames included.
            if chunk.first:
                channels.begin()
            self._dispatch("client", channels.feed, chunk.data, events)
            if chunk.last:
                self._dispatch("client", channels.end, None, events)
        return events

    def upstream_bytes(self, data: bytes) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        channels = self._upstream_channels
        for chunk in self._upstream_frames.feed(data):
            op = chunk.header.opcode
            if op == Opcode.CLOSE:
                events += self._errors.status()
                continue
            if op.is_control:
                continue
            if chunk.first and op != Opcode.CONTINUATION:
                channels.begin()
            self._dispatch("upstream", channels.feed, chunk.data, events)
            if chunk.last and chunk.header.fin:
                self._dispatch("upstream", channels.end, None, events)
        return events

    def finish(self) -> list[SessionEvent]:
        return self._errors.status()

    def _dispatch(
        self,
        direction: Direction,
        step: Callable[..., Sequence[ChannelData | ChannelClose]],
        data: bytes | None,
        events: list[SessionEvent],
    ) -> None:
        try:
            items = step(data) if data is not None else step()
        except ChannelMessageError as exc:
            events.append(ProtocolNote(direction, str(exc)))
            return
        for item in items:
            if direction == "client":
                self._from_client(item, events)
            else:
                self._from_upstream(item, events)

    def _from_client(self, item: ChannelData | ChannelClose, events: list[SessionEvent]) -> None:
        # The server reads only stdin and resize from the client; it discards anything else.
        if isinstance(item, ChannelClose):
            if item.channel == STDIN:
                events.append(StreamClosed("stdin"))
            return
        if item.channel == STDIN:
            if item.data:
                events.append(StreamData("stdin", item.data))
        elif item.channel == RESIZE:
            events.extend(self._resize.feed(item.data))
            if self._resize.failed and not self._resize_noted:
                self._resize_noted = True
                events.append(ProtocolNote("client", f"{self._resize.failed}; the server ignores resizes from here"))

    def _from_upstream(self, item: ChannelData | ChannelClose, events: list[SessionEvent]) -> None:
        # kubectl reads only stdout, stderr and the error channel from the server.
        if isinstance(item, ChannelClose):
            stream = _STREAM_OF_CHANNEL.get(item.channel)
            if stream in ("stdout", "stderr"):
                events.append(StreamClosed(stream))
            return
        if item.channel in (STDOUT, STDERR):
            if item.data:
                events.append(StreamData(_STREAM_OF_CHANNEL[item.channel], item.data))
        elif item.channel == ERROR:
            self._errors.add(item.data)


@dataclass(frozen=True)
class _DataPiece:
    """Part of a SPDY DATA frame's payload; `last` on the piece that ends the frame."""

    stream_id: int
    data: bytes
    last: bool
    fin: bool


class _SpdyDemux:
    """One direction's SPDY bytes: DATA payloads pass through in pieces, control frames go whole to the codec.

    Streaming DATA keeps a session's memory small however large a frame is; control frames (header
    blocks and the like) are parsed by connector.kube.spdy, which keeps the direction's zlib context.
    """

    _HEAD = 8

    def __init__(self) -> None:
        self._reader = SpdyFrameReader()
        self._head = bytearray()
        self._control: bytearray | None = None
        self._stream_id = 0
        self._flags = 0
        self._remaining: int | None = None  # payload bytes left in the current frame; None between frames

    def feed(self, data: bytes) -> list[_DataPiece | SpdyFrame]:
        out: list[_DataPiece | SpdyFrame] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view) or self._remaining == 0:
            if self._remaining is None:
                take = min(self._HEAD - len(self._head), len(view) - pos)
                self._head += view[pos : pos + take]
                pos += take
                if len(self._head) < self._HEAD:
                    break
                self._start_frame()
                continue
            take = min(self._remaining, len(view) - pos)
            piece = bytes(view[pos : pos + take])
            pos += take
            self._remaining -= take
            done = self._remaining == 0
            if self._control is not None:
                self._control += piece
                if done:
                    out += self._reader.feed(bytes(self._control))
                    self._control = None
            else:
                out.append(_DataPiece(self._stream_id, piece, done, bool(self._flags & FLAG_FIN)))
            if done:
                self._remaining = None
        return out

    def _start_frame(self) -> None:
        word, flags_length = struct.unpack(">II", self._head)
        self._remaining = flags_length & 0xFF_FFFF
        self._flags = flags_length >> 24
        if word & 0x8000_0000:
            self._control = bytearray(self._head)
        else:
            self._stream_id = word & 0x7FFF_FFFF
            if self._stream_id == 0:
                raise SpdyProtocolError("DATA frame on stream 0")
        self._head.clear()


class SpdySessionDecoder:
    """exec/attach over SPDY/3.1: one stream per channel, named by the `streamtype` header.

    kubectl opens every stream (stdout and stderr included) with a SYN_STREAM, so the stream ids
    and their types are learnt from the client's direction; the server's DATA frames on those ids
    carry the output and the error channel.
    """

    def __init__(self, *, structured: bool | None = None):
        self._client = _SpdyDemux()
        self._upstream = _SpdyDemux()
        self._types: dict[int, str] = {}
        self._resize = TerminalSizeDecoder()
        self._resize_noted = False
        self._errors = _ErrorChannel(structured)

    def client_bytes(self, data: bytes) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        for item in self._client.feed(data):
            if isinstance(item, SynStreamFrame):
                kind = header_value(item.headers, "streamtype")
                if kind:
                    self._types[item.stream_id] = kind
                if item.fin and kind == "stdin":
                    events.append(StreamClosed("stdin"))
            elif isinstance(item, _DataPiece):
                kind = self._types.get(item.stream_id)
                if kind == "stdin":
                    if item.data:
                        events.append(StreamData("stdin", item.data))
                    if item.last and item.fin:
                        events.append(StreamClosed("stdin"))
                elif kind == "resize":
                    events.extend(self._resize.feed(item.data))
                    if self._resize.failed and not self._resize_noted:
                        self._resize_noted = True
                        events.append(
                            ProtocolNote("client", f"{self._resize.failed}; the server ignores resizes from here")
                        )
        return events

    def upstream_bytes(self, data: bytes) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        for item in self._upstream.feed(data):
            if not isinstance(item, _DataPiece):
                continue
            kind = self._types.get(item.stream_id)
            output = _OUTPUT_STREAMS.get(kind or "")
            if output is not None:
                if item.data:
                    events.append(StreamData(output, item.data))
                if item.last and item.fin:
                    events.append(StreamClosed(output))
            elif kind == "error":
                self._errors.add(item.data)
                if item.last and item.fin:
                    events += self._errors.status()
        return events

    def finish(self) -> list[SessionEvent]:
        return self._errors.status()


class _FirstBytesDecoder:
    """Chooses between websocket and SPDY from the first two bytes either side sends.

    A SPDY session is named by its `X-Stream-Protocol-Version`, which uses the same names as the
    websocket subprotocols (`v4.channel.k8s.io`). The bytes tell them apart: every SPDY/3 control
    frame starts 0x80 0x03, which no websocket peer sends first (a server's first frame would be a
    continuation without a message, a client's would be unmasked).
    """

    def __init__(self, protocol: ChannelProtocol):
        self._protocol = protocol
        self._decoder: SessionDecoder | None = None
        self._held: dict[Direction, bytes] = {"client": b"", "upstream": b""}

    def client_bytes(self, data: bytes) -> list[SessionEvent]:
        return self._feed("client", data)

    def upstream_bytes(self, data: bytes) -> list[SessionEvent]:
        return self._feed("upstream", data)

    def finish(self) -> list[SessionEvent]:
        return self._decoder.finish() if self._decoder is not None else []

    def _feed(self, direction: Direction, data: bytes) -> list[SessionEvent]:
        if self._decoder is not None:
            return self._call(self._decoder, direction, data)
        held = self._held[direction] + data
        if len(held) < 2:
            self._held[direction] = held
            return []
        if held[0] == 0x80 and held[1] == 0x03:
            decoder: SessionDecoder = SpdySessionDecoder(structured=self._protocol.status_errors)
        else:
            decoder = WebSocketSessionDecoder(self._protocol)
        self._decoder = decoder
        other: Direction = "upstream" if direction == "client" else "client"
        events = self._call(decoder, other, self._held[other]) if self._held[other] else []
        self._held = {"client": b"", "upstream": b""}
        return events + self._call(decoder, direction, held)

    @staticmethod
    def _call(decoder: SessionDecoder, direction: Direction, data: bytes) -> list[SessionEvent]:
        return decoder.client_bytes(data) if direction == "client" else decoder.upstream_bytes(data)


class PassiveTap:
    """Runs a SessionDecoder on the relayed bytes and guarantees the relay never notices.

    Counts bytes in both directions whatever happens. The first failure of the decoder is turned
    into one DecodeError event, and the decoder is dropped: later bytes are only counted.
    """

    def __init__(self, decoder: SessionDecoder | None):
        self._decoder = decoder
        self.bytes_from_client = 0
        self.bytes_from_upstream = 0
        self.decode_error: str | None = None

    @property
    def decoding(self) -> bool:
        return self._decoder is not None

    def client_bytes(self, data: bytes) -> list[SessionEvent]:
        self.bytes_from_client += len(data)
        return self._run("client", lambda d: d.client_bytes(data))

    def upstream_bytes(self, data: bytes) -> list[SessionEvent]:
        self.bytes_from_upstream += len(data)
        return self._run("upstream", lambda d: d.upstream_bytes(data))

    def finish(self) -> list[SessionEvent]:
        events = self._run("upstream", lambda d: d.finish())
        self._decoder = None
        return events

    def _run(self, direction: Direction, step: Callable[[SessionDecoder], list[SessionEvent]]) -> list[SessionEvent]:
        decoder = self._decoder
        if decoder is None:
            return []
        try:
            return step(decoder)
        # Any failure, a protocol violation as much as a bug in a decoder, must stay on this side of
        # the relay: the session goes on, the recording says from where it is incomplete.
        except Exception as exc:
            self._decoder = None
            total = self.bytes_from_client if direction == "client" else self.bytes_from_upstream
            message = f"{type(exc).__name__}: {exc} (in the {direction} stream, within its first {total} bytes)"
            self.decode_error = message
            log.warning("session decode stopped: %s", message)
            return [DecodeError(direction, message)]


def session_decoder_for(protocol: str, subresource: str) -> SessionDecoder | None:
    """The decoder for a session's negotiated protocol, or None when it is not decoded.

    `protocol` is the websocket subprotocol the upstream chose, or the SPDY stream protocol version
    (`X-Stream-Protocol-Version`), or `SPDY/3.1` (optionally `SPDY/3.1+<version>`). Port-forward is
    never decoded; neither is a protocol this connector does not know (only bytes are counted).
    """
    if subresource not in ("exec", "attach"):
        return None
    if protocol.upper().startswith("SPDY/3.1"):
        _, _, version = protocol.partition("+")
        named = protocol_for(version) if version else None
        return SpdySessionDecoder(structured=named.status_errors if named else None)
    channel_protocol = protocol_for(protocol)
    if channel_protocol is None:
        return None
    return _FirstBytesDecoder(channel_protocol)
