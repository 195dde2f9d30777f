"""The Kubernetes channel protocols that exec and attach speak over websocket, as pure functions.

Each websocket data message carries one channel's data, prefixed by the channel number: a byte
(`channel.k8s.io`, `v4.channel.k8s.io`, `v5.channel.k8s.io`, ...) or an ASCII digit followed by
base64 (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`). Channels are 0 stdin, 1 stdout,
2 stderr, 3 error (plain text up to v3, a metav1.Status JSON from v4, which is how the exit code
travels) and 4 resize (a stream of `{"Width": W, "Height": H}` JSON objects). v5 adds the close
signal: a message on channel 255 whose one data byte names the channel the sender is done with.

Decoding follows what the Kubernetes server side (`k8s.io/apimachinery/.../wsstream`) does, not a
stricter reading, because the session tap must see what the container sees: empty messages and
unknown channels are skipped, a bad base64 message is dropped alone, and the resize stream stops at
the first undecodable object (the server's `json.Decoder` loop ends there too).
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE_STREAM = 255

# The largest resize object we wait for; kubectl's are about 30 bytes.
MAX_RESIZE_OBJECT = 4096
# base64 protocols write a channel as the one ASCII character '0' + channel (Go's `string('0'+num)`).
MAX_BASE64_CHANNEL = 0x7F - 0x30


@dataclass(frozen=True)
class ChannelProtocol:
    """A websocket subprotocol for remote commands: its version and whether data is base64."""

    name: str
    version: int
    base64: bool

    @property
    def has_close_signal(self) -> bool:
        """v5 lets each side half-close a channel with a message on channel 255."""
        return self.version >= 5

    @property
    def status_errors(self) -> bool:
        """From v4 the error channel carries a metav1.Status (with the exit code), before it plain text."""
        return self.version >= 4


PROTOCOLS: dict[str, ChannelProtocol] = {
    p.name: p
    for p in (
        # No subprotocol negotiated: the server and client-go both fall back to v1 binary.
        ChannelProtocol("", 1, False),
        ChannelProtocol("channel.k8s.io", 1, False),
        ChannelProtocol("v2.channel.k8s.io", 2, False),
        ChannelProtocol("v3.channel.k8s.io", 3, False),
        ChannelProtocol("v4.channel.k8s.io", 4, False),
        ChannelProtocol("v5.channel.k8s.io", 5, False),
        ChannelProtocol("base64.channel.k8s.io", 1, True),
        ChannelProtocol("v4.base64.channel.k8s.io", 4, True),
    )
}


def protocol_for(name: str) -> ChannelProtocol | None:
    """The channel protocol of a negotiated websocket subprotocol, or None if it is not one."""
    return PROTOCOLS.get(name)


class ChannelMessageError(ValueError):
    """One message did not follow the channel protocol; the server drops such a message and goes on."""


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClose:
    """The sender will send nothing more on `channel` (v5's close signal)."""

    channel: int


def _channel_of(protocol: ChannelProtocol, first: int) -> int:
    # The server subtracts '0' in a byte, so anything below '0' wraps around to a high channel.
    return (first - 0x30) & 0xFF if protocol.base64 else first


def _b64decode(text: bytes) -> bytes:
    # Go's base64 decoder skips CR and LF, so the server accepts them anywhere.
    text = text.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise ChannelMessageError(f"invalid base64 data: {exc}") from None


def decode_message(protocol: ChannelProtocol, payload: bytes) -> ChannelData | ChannelClose | None:
    """One whole message -> its channel and data; None for a message the server skips (empty)."""
    if not payload:
        return None
    channel = _channel_of(protocol, payload[0])
    rest = payload[1:]
    if channel == CLOSE_STREAM and protocol.has_close_signal:
        if len(rest) != 1:
            raise ChannelMessageError(f"close signal with {len(rest)} data bytes; it takes exactly 1")
        return ChannelClose(rest[0])
    if protocol.base64:
        rest = _b64decode(rest)
    return ChannelData(channel, rest)


def encode_message(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes:
    """The payload of the websocket message that sends `data` on `channel`."""
    if not 0 <= channel <= 255:
        raise ValueError(f"a channel is 0..255, got {channel}")
    if protocol.base64:
        if channel > MAX_BASE64_CHANNEL:
            raise ValueError(
                f"base64 channel protocols write a channel as the ASCII character '0'+channel, so "
                f"0..{MAX_BASE64_CHANNEL}, got {channel}"
            )
        return bytes([0x30 + channel]) + binascii.b2a_base64(data, newline=False)
    return bytes([channel]) + data


def encode_close_stream(protocol: ChannelProtocol, channel: int) -> bytes:
    """The payload of v5's close signal for `channel`."""
    if not protocol.has_close_signal:
        raise ValueError(f"{protocol.name or 'the unnamed protocol'} has no close signal; it is new in v5")
    if not 0 <= channel <= 255:
        raise ValueError(f"a channel is 0..255, got {channel}")
    return bytes([CLOSE_STREAM, channel])


class ChannelStreamDecoder:
    """One direction's channel messages, fed piece by piece as frames arrive, in bounded memory.

    The caller says where messages begin and end (`begin`, `end`); everything between is `feed`.
    Data is returned as soon as it is decodable, so a large message never has to be held whole.
    """

    def __init__(self, protocol: ChannelProtocol):
        self.protocol = protocol
        self._channel: int | None = None
        self._carry = b""  # base64 characters not yet making a group of 4
        self._padded = False  # a padded base64 group was seen: the message must end there
        self._close_bytes = 0
        self._close_target = 0
        self._dropped = False  # this message broke the protocol; ignore the rest of it

    def begin(self) -> None:
        self._channel = None
        self._carry = b""
        self._padded = False
        self._close_bytes = 0
        self._dropped = False

    def feed(self, piece: bytes) -> list[ChannelData]:
        """Data from the current message. Raises ChannelMessageError once for a bad message."""
        if self._dropped or not piece:
            return []
        if self._channel is None:
            self._channel = _channel_of(self.protocol, piece[0])
            piece = piece[1:]
        if self._channel == CLOSE_STREAM and self.protocol.has_close_signal:
            if self._close_bytes == 0 and piece:
                self._close_target = piece[0]
            self._close_bytes += len(piece)
            return []
        if not self.protocol.base64:
            return [ChannelData(self._channel, bytes(piece))] if piece else []
        return self._feed_base64(piece)

    def _feed_base64(self, piece: bytes) -> list[ChannelData]:
        text = self._carry + piece.replace(b"\r", b"").replace(b"\n", b"")
        if self._padded and text:
            return self._drop("base64 data continues after its padding")
        whole = len(text) - len(text) % 4
        self._carry = text[whole:]
        if not whole:
            return []
        groups = text[:whole]
        self._padded = groups.endswith(b"=")
        try:
            data = _b64decode(groups)
        except ChannelMessageError as exc:
            return self._drop(str(exc))
        assert self._channel is not None
        return [ChannelData(self._channel, data)] if data else []

    def _drop(self, reason: str) -> list[ChannelData]:
        self._dropped = True
        raise ChannelMessageError(f"channel {self._channel}: {reason}; the server drops this message")

    def end(self) -> list[ChannelData | ChannelClose]:
        """The current message is complete: the close signal it carried, if any."""
        if self._dropped or self._channel is None:
            return []
        if self._channel == CLOSE_STREAM and self.protocol.has_close_signal:
            if self._close_bytes != 1:
                raise ChannelMessageError(f"close signal with {self._close_bytes} data bytes; it takes exactly 1")
            return [ChannelClose(self._close_target)]
        if self.protocol.base64 and self._carry:
            self._dropped = True
            raise ChannelMessageError(
                f"channel {self._channel}: base64 data ends with {len(self._carry)} characters short of a group"
            )
        return []


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


def _size_field(obj: dict[str, Any], name: str) -> int:
    # Go's encoding/json matches keys case-insensitively when no exact match exists; the last
    # matching key wins. A null leaves the zero value.
    value: Any = None
    for key, v in obj.items():
        if key.lower() == name.lower():
            value = v
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ChannelMessageError(f"resize {name} must be an integer 0..65535, got {value!r}")
    return value


def parse_terminal_size(raw: bytes) -> TerminalSize:
    """One resize JSON object -> TerminalSize, with the checks Go's decoder applies to `uint16` fields."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChannelMessageError(f"resize data is not JSON: {exc}") from None
    except RecursionError:  # a hostile object nested thousands deep, still under MAX_RESIZE_OBJECT
        raise ChannelMessageError("resize data is not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ChannelMessageError(f"resize data must be a JSON object, got {type(obj).__name__}")
    return TerminalSize(width=_size_field(obj, "Width"), height=_size_field(obj, "Height"))


def encode_terminal_size(size: TerminalSize) -> bytes:
    """What kubectl writes on the resize channel (Go's json.Encoder, with its newline)."""
    return json.dumps({"Width": size.width, "Height": size.height}, separators=(",", ":")).encode() + b"\n"


class TerminalSizeDecoder:
    """The resize channel as a stream of JSON objects, split across messages however they arrive.

    Like the server, it stops for good at the first thing it cannot decode; `failed` then says why.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.failed: str | None = None

    def feed(self, data: bytes) -> list[TerminalSize]:
        if self.failed is not None:
            return []
        self._buffer += data
        sizes: list[TerminalSize] = []
        while True:
            start = 0
            while start < len(self._buffer) and self._buffer[start] in b" \t\r\n":
                start += 1
            del self._buffer[:start]
            if not self._buffer:
                return sizes
            if self._buffer[0] != ord("{"):
                return self._fail(sizes, "resize data must be a stream of JSON objects")
            end = _object_end(self._buffer)
            if end is None:
                if len(self._buffer) > MAX_RESIZE_OBJECT:
                    return self._fail(sizes, f"resize object longer than {MAX_RESIZE_OBJECT} bytes")
                return sizes
            raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            try:
                sizes.append(parse_terminal_size(raw))
            except ChannelMessageError as exc:
                return self._fail(sizes, str(exc))

    def _fail(self, sizes: list[TerminalSize], reason: str) -> list[TerminalSize]:
        self.failed = reason
        self._buffer.clear()
        return sizes


def _object_end(buf: bytearray) -> int | None:
    """Index just past the JSON object starting at buf[0], or None if it is not complete yet."""
    depth = 0
    in_string = False
    escaped = False
    for i, b in enumerate(buf):
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in b"{[":
            depth += 1
        elif b in b"}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


@dataclass(frozen=True)
class ExitStatus:
    """How the remote command ended, as read from the error channel.

    `code` is the exit code when the server reported one (0 for a v4+ `Success` status), None when
    the session failed for another reason (then `message` says why) or the protocol carries none.
    """

    code: int | None
    message: str


def parse_error_channel(data: bytes, *, structured: bool | None) -> ExitStatus:
    """The error channel's bytes -> ExitStatus.

    `structured` is the protocol's `status_errors`, or None when the version is not known (SPDY
    relays see only `SPDY/3.1`): then a JSON object is read as a Status and anything else as text.
    """
    text = data.decode("utf-8", errors="replace")
    if structured is not False and text.lstrip().startswith("{"):
        try:
            status = json.loads(text)
        except ValueError:
            status = None
        if isinstance(status, dict):
            return _exit_from_status(status)
        if structured:
            return ExitStatus(None, f"the error channel held no Status: {text.strip()[:200]}")
    return ExitStatus(None, text.strip())


def _exit_from_status(status: dict[str, Any]) -> ExitStatus:
    message = status.get("message")
    message = message if isinstance(message, str) else ""
    if status.get("status") == "Success":
        return ExitStatus(0, message)
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if status.get("reason") == "NonZeroExitCode" and isinstance(causes, list):
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                value = cause.get("message")
                if isinstance(value, str) and value.isdigit() and int(value) < 1 << 31:
                    return ExitStatus(int(value), message)
    reason = status.get("reason")
    return ExitStatus(None, message or (reason if isinstance(reason, str) else "") or "failed without a message")
