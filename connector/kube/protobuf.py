"""Kubernetes protobuf on the wire: the protocol buffers encoding and the `k8s\\0` envelope, pure.

Two parts speak it: the proxy reads the self-reviews kubectl >= 1.30 sends as protobuf
(connector.proxy.reviews), and the sandbox's emulated API server reads protobuf request bodies and
writes the protobuf OpenAPI v2 document old kubectl asks for. This module knows only the wire;
the message layouts (field numbers) live with their users.

A body of `application/vnd.kubernetes.protobuf` is the magic `k8s\\0` followed by a
`runtime.Unknown` message (k8s.io/apimachinery/pkg/runtime/generated.proto): 1 typeMeta
(1 apiVersion, 2 kind), 2 raw (the object, in k8s.io/api's generated.proto layout),
3 contentEncoding, 4 contentType.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# Wire types.
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

Value = int | bytes
"""A field's value as read: an int for varint and fixed-width fields, bytes for length-delimited ones."""


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message, or a field of the wrong wire type."""


# ----- writing ---------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, LENGTH) + varint(len(payload)) + payload


def string(field: int, value: str) -> bytes:
    """A proto3 string field: nothing at all for the empty string."""
    return length_delimited(field, value.encode()) if value else b""


def boolean(field: int, value: bool) -> bytes:
    """A proto3 bool field: nothing at all for false."""
    return tag(field, VARINT) + b"\x01" if value else b""


def message(field: int, payload: bytes) -> bytes:
    """An embedded message (written even when empty: presence matters for messages)."""
    return length_delimited(field, payload)


# ----- reading ---------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 64 bits")


def fields(data: bytes) -> Iterator[tuple[int, int, Value]]:
    """(field number, wire type, value) for each field of a message, in wire order."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("field number 0")
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
            yield field, wire_type, value
        elif wire_type == LENGTH:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError(f"field {field}: length-delimited value runs past the end of the message")
            yield field, wire_type, data[pos : pos + size]
            pos += size
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if pos + width > len(data):
                raise ProtobufError(f"field {field}: fixed-width value runs past the end of the message")
            yield field, wire_type, int.from_bytes(data[pos : pos + width], "little")
            pos += width
        else:
            raise ProtobufError(f"field {field}: unsupported wire type {wire_type}")


def as_bytes(value: Value, field: int) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError(f"field {field} is not length-delimited")
    return value


def as_string(value: Value, field: int) -> str:
    return as_bytes(value, field).decode("utf-8")


def as_int64(value: Value, field: int) -> int:
    """A varint read as Go's int64 (two's complement above 2^63)."""
    if not isinstance(value, int):
        raise ProtobufError(f"field {field} is not a number")
    return value - (1 << 64) if value >= 1 << 63 else value


class Fields:
    """A message's fields by number, read with proto3's rules for fields given more than once."""

    def __init__(self, data: bytes) -> None:
        self._values: dict[int, list[Value]] = {}
        for field, _, value in fields(data):
            self._values.setdefault(field, []).append(value)

    def __contains__(self, field: int) -> bool:
        return field in self._values

    def raw(self, field: int) -> bytes:
        """A bytes field: the last value wins; empty when absent."""
        values = self._values.get(field)
        return as_bytes(values[-1], field) if values else b""

    def string(self, field: int) -> str:
        """A string field: the last value wins; "" when absent."""
        return self.raw(field).decode("utf-8")

    def message(self, field: int) -> Fields:
        """An embedded message: every occurrence merges into one (on the wire, their concatenation)."""
        return Fields(b"".join(as_bytes(value, field) for value in self._values.get(field, ())))


# ----- the Kubernetes envelope -------------------------------------------------------------------


@dataclass(frozen=True)
class Unknown:
    """A protobuf body's `runtime.Unknown`: what the object is, and its still-encoded bytes."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str = ""
    content_type: str = ""


def parse_envelope(body: bytes) -> Unknown:
    """The `runtime.Unknown` inside a protobuf body; raises ProtobufError."""
    if not body.startswith(MAGIC):
        raise ProtobufError("it does not start with the Kubernetes protobuf envelope's magic k8s\\0")
    unknown = Fields(body[len(MAGIC) :])
    type_meta = unknown.message(1)
    return Unknown(
        api_version=type_meta.string(1),
        kind=type_meta.string(2),
        raw=unknown.raw(2),
        content_encoding=unknown.string(3),
        content_type=unknown.string(4),
    )
