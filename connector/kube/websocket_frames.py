"""RFC 6455 websocket framing: an incremental parser and a serializer, with no I/O.

Two kinds of user: the passive session tap, which decodes the bytes the proxy relays for an exec or
attach session (input arrives in arbitrary pieces, and memory must stay bounded however large a
frame claims to be), and the sandbox's emulated API server and the tests, which want whole messages.
So the core, `FrameParser`, streams: it yields each frame's payload in pieces as they arrive,
unmasked, and only control frames (at most 125 bytes by the RFC) are held until complete.
`MessageReader` builds whole messages on top of it, with a size limit.

The parser enforces what RFC 6455 section 5 requires of a peer that negotiated no extension (which
is what every Kubernetes client and server does): RSV bits clear, known opcodes, control frames
unfragmented and short, masking in the right direction, continuation frames only inside a
fragmented message, nothing after a Close frame. A violation raises `WebSocketProtocolError`, whose
`close_code` is the status a conforming endpoint would close the connection with.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass

MAX_CONTROL_PAYLOAD = 125
# Payload lengths above this need the 8-byte form; its most significant bit must be 0 (RFC 6455 5.2).
_MAX_PAYLOAD_LENGTH = (1 << 63) - 1


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        return bool(self & 0x8)


class CloseCode(enum.IntEnum):
    """Close status codes registered in RFC 6455 section 7.4.1 and the IANA registry."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # only ever reported locally, never sent
    ABNORMAL = 1006  # only ever reported locally, never sent
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # only ever reported locally, never sent


class WebSocketProtocolError(Exception):
    """The byte stream is not valid websocket framing. `close_code` is what to close with."""

    def __init__(self, message: str, close_code: int = CloseCode.PROTOCOL_ERROR):
        super().__init__(message)
        self.close_code = close_code


def is_valid_close_code(code: int) -> bool:
    """Whether `code` may appear in a Close frame on the wire (RFC 6455 7.4, IANA registry)."""
    if 1000 <= code <= 1003 or 1007 <= code <= 1014:
        return True
    # 3000-3999: registered by libraries and frameworks; 4000-4999: private use.
    return 3000 <= code <= 4999


def apply_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte masking `key`, starting `offset` bytes into the frame's payload.

    Masking is its own inverse, so this both masks and unmasks. The XOR runs on one big integer
    rather than byte by byte, which keeps large payloads fast in pure Python.
    """
    if len(key) != 4:
        raise ValueError(f"a websocket masking key is 4 bytes, got {len(key)}")
    if not data:
        return b""
    shift = offset % 4
    rotated = key[shift:] + key[:shift]
    mask = (rotated * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(len(data), "little")


@dataclass(frozen=True)
class FrameHeader:
    fin: bool
    opcode: Opcode
    masked: bool
    length: int


@dataclass(frozen=True)
class FrameChunk:
    """A piece of one frame's payload, already unmasked.

    A data frame arrives as one or more chunks (`first` on the one that starts it, `last` on the one
    that ends it; a zero-length frame is a single chunk with both set). A control frame always
    arrives as exactly one chunk holding its whole payload.
    """

    header: FrameHeader
    data: bytes
    first: bool
    last: bool


def _parse_close_code_and_reason(payload: bytes) -> tuple[int | None, str]:
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WebSocketProtocolError("Close frame payload of 1 byte: a close code takes 2 bytes")
    code = struct.unpack("!H", payload[:2])[0]
    if not is_valid_close_code(code):
        raise WebSocketProtocolError(f"Close frame with code {code}, which may not be sent on the wire")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError(
            "Close frame reason is not valid UTF-8", close_code=CloseCode.INVALID_PAYLOAD
        ) from None
    return code, reason


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """A Close frame's payload -> (code or None when absent, reason). Raises WebSocketProtocolError."""
    return _parse_close_code_and_reason(payload)


class FrameParser:
    """Incremental frame parser for one direction of one connection.

    `masked` says what the sender must do: True for a client's frames, False for a server's, None
    to accept either (for a reader that does not know which side it is listening to).
    """

    def __init__(self, *, masked: bool | None = None):
        self._masked = masked
        self._buffer = bytearray()  # header bytes, or a control frame being collected
        self._header: FrameHeader | None = None
        self._mask_key: bytes | None = None
        self._remaining = 0  # payload bytes of the current frame not yet seen
        self._offset = 0  # payload bytes of the current frame already seen (for the mask phase)
        self._in_message = False  # a fragmented data message is open
        self._closed = False  # a Close frame was seen
        self._consumed = 0

    @property
    def consumed(self) -> int:
        """Bytes fed so far that were parsed (for error messages that point at an offset)."""
        return self._consumed

    @property
    def in_message(self) -> bool:
        """Whether a fragmented data message has begun and not yet ended."""
        return self._in_message

    @property
    def closed(self) -> bool:
        """Whether a Close frame has been seen; any frame after it is an error."""
        return self._closed

    def feed(self, data: bytes) -> list[FrameChunk]:
        chunks: list[FrameChunk] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._header is None:
                pos = self._take_header(view, pos)
                continue
            header = self._header
            if header.opcode.is_control:
                take = min(self._remaining, len(view) - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                self._remaining -= take
                self._consumed += take
                if self._remaining == 0:
                    chunks.append(self._finish_control())
                continue
            take = min(self._remaining, len(view) - pos)
            piece = bytes(view[pos : pos + take])
            if self._mask_key is not None:
                piece = apply_mask(piece, self._mask_key, self._offset)
            first = self._offset == 0
            self._offset += take
            self._remaining -= take
            self._consumed += take
            pos += take
            last = self._remaining == 0
            chunks.append(FrameChunk(header, piece, first, last))
            if last:
                self._header = None
        # A zero-length frame completes with its header, possibly at the very end of `data`.
        if self._header is not None and self._remaining == 0:
            if self._header.opcode.is_control:
                chunks.append(self._finish_control())
            else:
                chunks.append(FrameChunk(self._header, b"", True, True))
                self._header = None
        return chunks

    def _finish_control(self) -> FrameChunk:
        header = self._header
        assert header is not None
        payload = bytes(self._buffer)
        if self._mask_key is not None:
            payload = apply_mask(payload, self._mask_key)
        self._buffer.clear()
        self._header = None
        if header.opcode == Opcode.CLOSE:
            _parse_close_code_and_reason(payload)
            self._closed = True
        return FrameChunk(header, payload, True, True)

    def _take_header(self, view: memoryview, pos: int) -> int:
        """Collect header bytes from `view[pos:]`; set `_header` once complete. Returns the new pos."""
        need = 2
        while True:
            missing = need - len(self._buffer)
            if missing > 0:
                take = min(missing, len(view) - pos)
                self._buffer += view[pos : pos + take]
                pos += take
                self._consumed += take
                if len(self._buffer) < need:
                    return pos
            need = self._header_size()
            if len(self._buffer) >= need:
                break
        self._decode_header()
        return pos

    def _header_size(self) -> int:
        b1 = self._buffer[1]
        size = 2 + (4 if b1 & 0x80 else 0)
        length7 = b1 & 0x7F
        if length7 == 126:
            size += 2
        elif length7 == 127:
            size += 8
        return size

    def _decode_header(self) -> None:
        buf = bytes(self._buffer)
        self._buffer.clear()
        b0, b1 = buf[0], buf[1]
        where = f"at byte {self._consumed - len(buf)}"
        if self._closed:
            raise WebSocketProtocolError(f"frame {where} after the Close frame")
        fin = bool(b0 & 0x80)
        rsv = (b0 >> 4) & 0x7
        if rsv:
            raise WebSocketProtocolError(f"frame {where} has RSV bits {rsv:03b} set but no extension was negotiated")
        try:
            opcode = Opcode(b0 & 0x0F)
        except ValueError:
            raise WebSocketProtocolError(f"frame {where} has reserved opcode {b0 & 0x0F:#x}") from None
        masked = bool(b1 & 0x80)
        if self._masked is not None and masked != self._masked:
            if self._masked:
                raise WebSocketProtocolError(f"frame {where} from the client is not masked")
            raise WebSocketProtocolError(f"frame {where} from the server is masked")
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            length = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif length == 127:
            length = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
            if length > _MAX_PAYLOAD_LENGTH:
                raise WebSocketProtocolError(f"frame {where} has a 64-bit length with the most significant bit set")
        if opcode.is_control:
            if not fin:
                raise WebSocketProtocolError(f"control frame ({opcode.name}) {where} is fragmented")
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketProtocolError(
                    f"control frame ({opcode.name}) {where} has a {length}-byte payload; the limit is 125"
                )
        elif opcode == Opcode.CONTINUATION:
            if not self._in_message:
                raise WebSocketProtocolError(f"continuation frame {where} without a message to continue")
            self._in_message = not fin
        else:
            if self._in_message:
                raise WebSocketProtocolError(
                    f"{opcode.name} frame {where} starts a new message before the fragmented one ended"
                )
            self._in_message = not fin
        self._mask_key = buf[pos : pos + 4] if masked else None
        self._header = FrameHeader(fin=fin, opcode=opcode, masked=masked, length=length)
        self._remaining = length
        self._offset = 0


@dataclass(frozen=True)
class Message:
    """A whole data message (TEXT or BINARY, fragments joined) or a control frame (CLOSE, PING, PONG)."""

    opcode: Opcode
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def close(self) -> tuple[int | None, str]:
        """(code, reason) of a CLOSE message."""
        return parse_close_payload(self.payload)


class MessageReader:
    """Whole messages from one direction's bytes, control frames delivered as they interleave.

    `max_message_size` bounds the memory one message may take (the default is the 32 MiB that the
    websocket library inside kube-apiserver accepts per frame).
    """

    def __init__(self, *, masked: bool | None = None, max_message_size: int = 32 << 20):
        self._parser = FrameParser(masked=masked)
        self._max = max_message_size
        self._opcode: Opcode | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        for chunk in self._parser.feed(data):
            op = chunk.header.opcode
            if op.is_control:
                out.append(Message(op, chunk.data))
                continue
            if chunk.first and op != Opcode.CONTINUATION:
                self._opcode = op
            self._size += len(chunk.data)
            if self._size > self._max:
                raise WebSocketProtocolError(
                    f"message larger than the {self._max}-byte limit", close_code=CloseCode.MESSAGE_TOO_BIG
                )
            self._parts.append(chunk.data)
            if chunk.last and chunk.header.fin:
                assert self._opcode is not None
                payload = b"".join(self._parts)
                if self._opcode == Opcode.TEXT:
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WebSocketProtocolError(
                            "text message is not valid UTF-8", close_code=CloseCode.INVALID_PAYLOAD
                        ) from None
                out.append(Message(self._opcode, payload))
                self._opcode, self._parts, self._size = None, [], 0
        return out


def encode_frame(
    opcode: Opcode | int, payload: bytes = b"", *, fin: bool = True, mask_key: bytes | None = None
) -> bytes:
    """One frame on the wire. Clients must pass a `mask_key` (see `new_mask_key`); servers must not."""
    try:
        op = Opcode(opcode)
    except ValueError:
        raise ValueError(f"unknown websocket opcode {opcode!r}") from None
    if op.is_control:
        if not fin:
            raise ValueError(f"a control frame ({op.name}) cannot be fragmented")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a control frame ({op.name}) payload is at most 125 bytes, got {len(payload)}")
    b0 = (0x80 if fin else 0) | op
    mask_bit = 0x80 if mask_key is not None else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask_key is None:
        return head + payload
    return head + mask_key + apply_mask(payload, mask_key)


def new_mask_key() -> bytes:
    """A fresh masking key; RFC 6455 wants it unpredictable, so it comes from the OS's CSPRNG."""
    return os.urandom(4)


def encode_message(opcode: Opcode | int, payload: bytes, *, mask: bool, fragment_size: int | None = None) -> bytes:
    """A whole data message as frames, split into fragments of `fragment_size` bytes when given."""
    op = Opcode(opcode)
    if op not in (Opcode.TEXT, Opcode.BINARY):
        raise ValueError(f"a message is TEXT or BINARY, got {op.name}")
    if fragment_size is not None and fragment_size < 1:
        raise ValueError(f"fragment_size must be at least 1, got {fragment_size}")
    size = fragment_size or max(len(payload), 1)
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(
            encode_frame(
                op if i == 0 else Opcode.CONTINUATION,
                piece,
                fin=i == len(pieces) - 1,
                mask_key=new_mask_key() if mask else None,
            )
        )
    return b"".join(frames)


def encode_close_payload(code: int | None = None, reason: str = "") -> bytes:
    """The payload of a Close frame: empty, or the 2-byte code followed by a UTF-8 reason."""
    if code is None:
        if reason:
            raise ValueError("a Close frame reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent on the wire")
    payload = struct.pack("!H", code) + reason.encode("utf-8")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"a Close reason is at most 123 bytes of UTF-8, got {len(payload) - 2}")
    return payload
