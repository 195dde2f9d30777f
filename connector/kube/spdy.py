"""SPDY/3.1 framing: an incremental frame reader and a frame writer, pure and free of I/O.

Kubernetes still speaks SPDY/3.1 for `exec`, `attach` and `port-forward` (kubectl < 1.30, or with
`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, and tunnelled inside websocket messages for
`SPDY/3.1+portforward.k8s.io`). Two users need the framing: the recording tap, which decodes the
bytes the proxy relays without ever changing them, and the sandbox's emulated API server, which
speaks the protocol to the real kubectl. Both feed bytes in as they arrive and get whole frames out.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with the SPDY/3 dictionary, and
each direction of a connection is ONE zlib stream: a reader or writer must see every header block
of its direction, in order, from the first byte after the HTTP 101. So use one `SpdyFrameReader`
per direction and one `SpdyFrameWriter` per direction, never shared between connections.

Malformed input raises `SpdyProtocolError`; after that the reader refuses further input, because
its decompression context can no longer be trusted. What is checked follows the SPDY/3.1 draft and
the Go implementation kubectl and the kubelet use (github.com/moby/spdystream/spdy).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

SPDY_VERSION = 3
MAX_STREAM_ID = 0x7FFF_FFFF
MAX_FRAME_LENGTH = 0xFF_FFFF  # a frame's length field has 24 bits
MAX_WINDOW_DELTA = 0x7FFF_FFFF

FLAG_FIN = 0x01  # DATA, SYN_STREAM, SYN_REPLY, HEADERS: the sender is done with the stream
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM: the recipient may not send on the stream
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01  # SETTINGS frame flag

_HEADER = struct.Struct(">II")  # the 8-byte frame header, both kinds


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def _build_dictionary() -> bytes:
    # The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1):
    # length-prefixed header names and common values, then a run of status codes, reason phrases,
    # dates and content types. Peers must use it byte for byte: zlib checks its Adler-32.
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date "
        "etag expect expires from host if-match if-modified-since if-none-match if-range "
        "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
        "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
        "user-agent vary via warning www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
        "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
        "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, "
        "Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
        "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


SPDY_DICTIONARY = _build_dictionary()

# Header names and values travel as bytes; latin-1 maps each byte to one character and back, so a
# block decodes and re-encodes to the same bytes whatever it holds.
_TEXT = "latin-1"
# Go lowercases header names with strings.ToLower; ASCII is all SPDY peers put in names.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

Headers = Mapping[str, tuple[str, ...]]
"""A header block: lowercase name -> its values (SPDY joins several values of a name with NUL)."""


class SpdyProtocolError(Exception):
    """The bytes are not valid SPDY/3.1; the message says what was wrong and where."""


class _FinFlag:
    """The FIN flag of the frames that can end the sender's half of a stream."""

    __slots__ = ()
    flags: int

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True, slots=True)
class DataFrame(_FinFlag):
    stream_id: int
    data: bytes
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SynStreamFrame(_FinFlag):
    stream_id: int
    headers: Headers
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0


@dataclass(frozen=True, slots=True)
class _StreamHeaders(_FinFlag):
    """SYN_REPLY and HEADERS carry the same fields: a header block for an open stream."""

    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SynReplyFrame(_StreamHeaders):
    """The recipient's acceptance of a stream, with its reply headers."""


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class SettingsEntry:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    entries: tuple[SettingsEntry, ...] = ()
    flags: int = 0


@dataclass(frozen=True, slots=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame(_StreamHeaders):
    """More headers on an open stream."""


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class UnknownControlFrame:
    """A control frame of a type SPDY/3.1 does not define; the draft says to ignore these."""

    frame_type: int
    flags: int
    payload: bytes = field(repr=False)


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
    | UnknownControlFrame
)


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of header `name` (lowercase), or None: what Go's `http.Header.Get` returns."""
    values = headers.get(name)
    return values[0] if values else None


class SpdyFrameReader:
    """Turns one direction's bytes into frames, however the bytes are split.

    `max_frame_length` bounds the memory one frame may take (a passive tap can lower it);
    `max_header_block` bounds a decompressed header block, so a small compressed block cannot
    expand into gigabytes.
    """

    def __init__(self, *, max_frame_length: int = MAX_FRAME_LENGTH, max_header_block: int = 1 << 20) -> None:
        if not 0 < max_frame_length <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_frame_length must be in 1..{MAX_FRAME_LENGTH}, got {max_frame_length}")
        self._max_frame_length = max_frame_length
        self._max_header_block = max_header_block
        self._buffer = bytearray()
        self._inflater = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self._offset = 0  # stream offset of the first byte in _buffer, for error messages
        self._failure: SpdyProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame (a truncated frame at EOF)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame they complete, in order."""
        if self._failure is not None:
            raise SpdyProtocolError(f"reader stopped after an earlier error: {self._failure}")
        self._buffer += data
        frames: list[Frame] = []
        try:
            while len(self._buffer) >= _HEADER.size:
                word, flags_length = _HEADER.unpack_from(self._buffer)
                length = flags_length & MAX_FRAME_LENGTH
                if length > self._max_frame_length:
                    raise self._error(f"frame of {length} bytes exceeds the limit of {self._max_frame_length}")
                end = _HEADER.size + length
                if len(self._buffer) < end:
                    break
                payload = bytes(self._buffer[_HEADER.size : end])
                frames.append(self._parse(word, flags_length >> 24, payload))
                del self._buffer[:end]
                self._offset += end
        except SpdyProtocolError as exc:
            self._failure = exc
            raise
        return frames

    def _error(self, message: str) -> SpdyProtocolError:
        return SpdyProtocolError(f"SPDY frame at byte {self._offset}: {message}")

    def _parse(self, word: int, flags: int, payload: bytes) -> Frame:
        if not word & 0x8000_0000:
            stream_id = word & MAX_STREAM_ID
            if stream_id == 0:
                raise self._error("DATA frame on stream 0")
            return DataFrame(stream_id=stream_id, data=payload, flags=flags)
        version = (word >> 16) & 0x7FFF
        if version != SPDY_VERSION:
            raise self._error(f"unsupported SPDY version {version} (expected {SPDY_VERSION})")
        frame_type = word & 0xFFFF
        if frame_type == FrameType.SYN_STREAM:
            self._expect_min(payload, 10, "SYN_STREAM")
            stream_id, associated, priority, slot = struct.unpack_from(">IIBB", payload)
            return SynStreamFrame(
                stream_id=self._stream_id(stream_id, "SYN_STREAM"),
                headers=self._header_block(payload[10:], "SYN_STREAM"),
                associated_stream_id=associated & MAX_STREAM_ID,
                priority=priority >> 5,
                slot=slot,
                flags=flags,
            )
        if frame_type in (FrameType.SYN_REPLY, FrameType.HEADERS):
            name = FrameType(frame_type).name
            self._expect_min(payload, 4, name)
            stream_id = self._stream_id(struct.unpack_from(">I", payload)[0], name)
            headers = self._header_block(payload[4:], name)
            if frame_type == FrameType.SYN_REPLY:
                return SynReplyFrame(stream_id=stream_id, headers=headers, flags=flags)
            return HeadersFrame(stream_id=stream_id, headers=headers, flags=flags)
        if frame_type == FrameType.RST_STREAM:
            self._expect_exact(payload, 8, "RST_STREAM")
            stream_id, status = struct.unpack(">II", payload)
            if status == 0:
                raise self._error("RST_STREAM with status 0")
            return RstStreamFrame(stream_id=self._stream_id(stream_id, "RST_STREAM"), status=status)
        if frame_type == FrameType.SETTINGS:
            self._expect_min(payload, 4, "SETTINGS")
            (count,) = struct.unpack_from(">I", payload)
            if len(payload) != 4 + 8 * count:
                raise self._error(f"SETTINGS announces {count} entries but carries {len(payload) - 4} bytes")
            entries = []
            for index in range(count):
                flags_id, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                entries.append(SettingsEntry(id=flags_id & 0xFF_FFFF, value=value, flags=flags_id >> 24))
            return SettingsFrame(entries=tuple(entries), flags=flags)
        if frame_type == FrameType.PING:
            self._expect_exact(payload, 4, "PING")
            (ping_id,) = struct.unpack(">I", payload)
            if ping_id == 0:
                raise self._error("PING with id 0")
            self._expect_no_flags(flags, "PING")
            return PingFrame(ping_id=ping_id)
        if frame_type == FrameType.GOAWAY:
            self._expect_exact(payload, 8, "GOAWAY")
            self._expect_no_flags(flags, "GOAWAY")
            last_good, status = struct.unpack(">II", payload)
            return GoAwayFrame(last_good_stream_id=last_good & MAX_STREAM_ID, status=status)
        if frame_type == FrameType.WINDOW_UPDATE:
            self._expect_exact(payload, 8, "WINDOW_UPDATE")
            self._expect_no_flags(flags, "WINDOW_UPDATE")
            stream_id, delta = struct.unpack(">II", payload)
            delta &= MAX_WINDOW_DELTA
            if delta == 0:
                raise self._error("WINDOW_UPDATE with a delta of 0")
            # stream 0 is legal here: it updates the session window (SPDY/3.1)
            return WindowUpdateFrame(stream_id=stream_id & MAX_STREAM_ID, delta=delta)
        return UnknownControlFrame(frame_type=frame_type, flags=flags, payload=payload)

    def _expect_min(self, payload: bytes, size: int, name: str) -> None:
        if len(payload) < size:
            raise self._error(f"{name} frame of {len(payload)} bytes is shorter than its {size}-byte minimum")

    def _expect_exact(self, payload: bytes, size: int, name: str) -> None:
        if len(payload) != size:
            raise self._error(f"{name} frame must be {size} bytes long, got {len(payload)}")

    def _expect_no_flags(self, flags: int, name: str) -> None:
        if flags:
            raise self._error(f"{name} frame with flags 0x{flags:02x} (none are defined)")

    def _stream_id(self, raw: int, name: str) -> int:
        stream_id = raw & MAX_STREAM_ID
        if stream_id == 0:
            raise self._error(f"{name} on stream 0")
        return stream_id

    def _header_block(self, compressed: bytes, name: str) -> dict[str, tuple[str, ...]]:
        if not compressed:
            raise self._error(f"{name} without a header block")
        try:
            block = self._inflater.decompress(compressed, self._max_header_block + 1)
        except zlib.error as exc:
            raise self._error(f"{name} header block does not decompress: {exc}") from exc
        if len(block) > self._max_header_block or self._inflater.unconsumed_tail:
            raise self._error(f"{name} header block decompresses past {self._max_header_block} bytes")
        if self._inflater.eof:
            # The compressor ended its stream: later header blocks could not be decompressed.
            raise self._error(f"{name} header block ends the connection's compression stream")
        return self._parse_block(block, name)

    def _parse_block(self, block: bytes, name: str) -> dict[str, tuple[str, ...]]:
        def take(offset: int, what: str) -> tuple[bytes, int]:
            if offset + 4 > len(block):
                raise self._error(f"{name} header block is truncated in the length of {what}")
            (size,) = struct.unpack_from(">I", block, offset)
            start = offset + 4
            if start + size > len(block):
                raise self._error(f"{name} header block is truncated in {what} ({size} bytes announced)")
            return block[start : start + size], start + size

        if len(block) < 4:
            raise self._error(f"{name} header block of {len(block)} bytes has no header count")
        (count,) = struct.unpack_from(">I", block)
        headers: dict[str, tuple[str, ...]] = {}
        offset = 4
        for index in range(count):
            raw_name, offset = take(offset, f"header #{index} name")
            raw_value, offset = take(offset, f"header #{index} value")
            header = raw_name.decode(_TEXT)
            if not raw_name:
                raise self._error(f"{name} header #{index} has an empty name")
            if any(0x41 <= byte <= 0x5A for byte in raw_name) or b"\x00" in raw_name:
                raise self._error(f"{name} header name {header!r} is not lowercase")
            if header in headers:
                raise self._error(f"{name} header {header!r} appears twice")
            headers[header] = tuple(raw_value.decode(_TEXT).split("\x00"))
        if offset != len(block):
            raise self._error(f"{name} header block has {len(block) - offset} bytes after its {count} headers")
        return headers


class SpdyFrameWriter:
    """Serializes frames for one direction of one connection.

    Frames must go on the wire in the order they are encoded: every header block continues the
    direction's single zlib stream.
    """

    def __init__(self) -> None:
        self._deflater = zlib.compressobj(level=zlib.Z_BEST_COMPRESSION, zdict=SPDY_DICTIONARY)

    def encode(self, frame: Frame) -> bytes:
        """The wire bytes of `frame`; raises ValueError for a frame no peer would accept."""
        if isinstance(frame, DataFrame):
            _check_stream_id(frame.stream_id, "DATA")
            _check_flags(frame.flags)
            if len(frame.data) > MAX_FRAME_LENGTH:
                raise ValueError(f"DATA payload of {len(frame.data)} bytes exceeds {MAX_FRAME_LENGTH}")
            return _HEADER.pack(frame.stream_id, frame.flags << 24 | len(frame.data)) + frame.data
        if isinstance(frame, SynStreamFrame):
            _check_stream_id(frame.stream_id, "SYN_STREAM")
            if not 0 <= frame.associated_stream_id <= MAX_STREAM_ID:
                raise ValueError(f"associated stream id {frame.associated_stream_id} is out of range")
            if not 0 <= frame.priority <= 7:
                raise ValueError(f"SYN_STREAM priority must be 0..7, got {frame.priority}")
            if not 0 <= frame.slot <= 0xFF:
                raise ValueError(f"SYN_STREAM slot must be 0..255, got {frame.slot}")
            fixed = struct.pack(">IIBB", frame.stream_id, frame.associated_stream_id, frame.priority << 5, frame.slot)
            return self._control(FrameType.SYN_STREAM, frame.flags, fixed + self._compress(frame.headers))
        if isinstance(frame, SynReplyFrame | HeadersFrame):
            kind = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
            _check_stream_id(frame.stream_id, kind.name)
            block = struct.pack(">I", frame.stream_id) + self._compress(frame.headers)
            return self._control(kind, frame.flags, block)
        if isinstance(frame, RstStreamFrame):
            _check_stream_id(frame.stream_id, "RST_STREAM")
            if not 0 < frame.status <= 0xFFFF_FFFF:
                raise ValueError(f"RST_STREAM status must be 1..2^32-1, got {frame.status}")
            return self._control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, SettingsFrame):
            body = bytearray(struct.pack(">I", len(frame.entries)))
            for entry in frame.entries:
                if not 0 <= entry.id <= 0xFF_FFFF or not 0 <= entry.flags <= 0xFF:
                    raise ValueError(f"SETTINGS entry {entry} has an id or flags out of range")
                body += struct.pack(">II", entry.flags << 24 | entry.id, entry.value)
            return self._control(FrameType.SETTINGS, frame.flags, bytes(body))
        if isinstance(frame, PingFrame):
            if not 0 < frame.ping_id <= 0xFFFF_FFFF:
                raise ValueError(f"PING id must be 1..2^32-1, got {frame.ping_id}")
            return self._control(FrameType.PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAwayFrame):
            if not 0 <= frame.last_good_stream_id <= MAX_STREAM_ID:
                raise ValueError(f"GOAWAY last good stream id {frame.last_good_stream_id} is out of range")
            return self._control(FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdateFrame):
            if not 0 <= frame.stream_id <= MAX_STREAM_ID or not 0 < frame.delta <= MAX_WINDOW_DELTA:
                raise ValueError(f"WINDOW_UPDATE {frame} has a stream id or delta out of range")
            return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        if isinstance(frame, UnknownControlFrame):
            if frame.frame_type in _KNOWN_TYPES or not 0 <= frame.frame_type <= 0xFFFF:
                raise ValueError(f"control frame type {frame.frame_type} is not an unknown type")
            return self._control(frame.frame_type, frame.flags, frame.payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def _control(self, frame_type: int, flags: int, payload: bytes) -> bytes:
        _check_flags(flags)
        if len(payload) > MAX_FRAME_LENGTH:
            raise ValueError(f"control frame payload of {len(payload)} bytes exceeds {MAX_FRAME_LENGTH}")
        return _HEADER.pack(0x8000_0000 | SPDY_VERSION << 16 | frame_type, flags << 24 | len(payload)) + payload

    def _compress(self, headers: Mapping[str, str | Sequence[str]]) -> bytes:
        block = bytearray(struct.pack(">I", len(headers)))
        seen: set[str] = set()
        for name, values in headers.items():
            lowered = name.translate(_ASCII_LOWER)
            if not lowered or "\x00" in lowered or not _is_latin1(lowered):
                raise ValueError(f"invalid SPDY header name {name!r}")
            if lowered in seen:
                raise ValueError(f"header {lowered!r} is given twice")
            seen.add(lowered)
            items = (values,) if isinstance(values, str) else tuple(values)
            if not items or any("\x00" in value or not _is_latin1(value) for value in items):
                raise ValueError(f"header {lowered!r} needs at least one value, each of latin-1 text without NUL")
            raw_name, raw_value = lowered.encode(_TEXT), "\x00".join(items).encode(_TEXT)
            block += struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", len(raw_value)) + raw_value
        return self._deflater.compress(bytes(block)) + self._deflater.flush(zlib.Z_SYNC_FLUSH)


def _is_latin1(text: str) -> bool:
    return all(ord(char) < 0x100 for char in text)


def _check_stream_id(stream_id: int, name: str) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise ValueError(f"{name} stream id must be 1..{MAX_STREAM_ID}, got {stream_id}")


def _check_flags(flags: int) -> None:
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"frame flags must fit in one byte, got {flags}")
