"""The protocol buffers wire format, just enough to write and read messages field by field.

Clients of kube-apiserver use protobuf in two places the emulator must handle: kubectl 1.27/1.28
download `/openapi/v2` only as protobuf (gnostic's OpenAPIv2 messages), and kubectl 1.32+ sends
some request bodies as `application/vnd.kubernetes.protobuf`. Both are built or read with these
helpers; the message layouts live with their users.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


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
    return length_delimited(field, value.encode()) if value else b""


def boolean(field: int, value: bool) -> bytes:
    return tag(field, VARINT) + b"\x01" if value else b""


def message(field: int, payload: bytes) -> bytes:
    """An embedded message (written even when empty: presence matters for messages)."""
    return length_delimited(field, payload)


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


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value): an int for varint/fixed fields, bytes for length-delimited."""
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
                raise ProtobufError("truncated length-delimited field")
            yield field, wire_type, data[pos:pos + size]
            pos += size
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if pos + width > len(data):
                raise ProtobufError("truncated fixed-width field")
            yield field, wire_type, int.from_bytes(data[pos:pos + width], "little")
            pos += width
        else:
            raise ProtobufError(f"unsupported wire type {wire_type}")
