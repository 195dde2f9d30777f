"""connector.kube.protobuf: the wire encoding against known bytes, malformed input, and the k8s\\0 envelope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.kube.protobuf import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    Fields,
    ProtobufError,
    Unknown,
    as_int64,
    boolean,
    fields,
    length_delimited,
    message,
    parse_envelope,
    string,
    varint,
)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (150, b"\x96\x01"),  # the protobuf encoding guide's example
        (300, b"\xac\x02"),
        ((1 << 64) - 1, b"\xff" * 9 + b"\x01"),
        (-1, b"\xff" * 9 + b"\x01"),  # int64 -1: ten bytes of two's complement
    ],
)
def test_varint(value: int, wire: bytes) -> None:
    assert varint(value) == wire


def test_writers_follow_proto3_presence() -> None:
    assert string(2, "testing") == b"\x12\x07testing"
    assert string(2, "") == b""
    assert boolean(3, True) == b"\x18\x01"
    assert boolean(3, False) == b""
    assert message(1, b"") == b"\x0a\x00"  # an empty message is still present
    assert length_delimited(4, b"ab") == b"\x22\x02ab"


def test_fields_reads_every_wire_type() -> None:
    data = b"\x08\x96\x01" + b"\x12\x07testing" + b"\x1d\x01\x00\x00\x00" + b"\x21" + (2).to_bytes(8, "little")
    assert list(fields(data)) == [(1, VARINT, 150), (2, LENGTH, b"testing"), (3, FIXED32, 1), (4, FIXED64, 2)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 64 bits"),
        (b"\x00\x00", "field number 0"),
        (b"\x0b", "field 1: unsupported wire type 3"),
        (b"\x12\x05ab", "field 2: length-delimited value runs past the end"),
        (b"\x1d\x01\x02", "field 3: fixed-width value runs past the end"),
    ],
)
def test_malformed_messages(data: bytes, error: str) -> None:
    with pytest.raises(ProtobufError, match=error):
        list(fields(data))


def test_fields_repeated_strings_last_wins_and_messages_merge() -> None:
    data = string(1, "a") + string(1, "b") + message(2, string(1, "x")) + message(2, string(2, "y"))
    read = Fields(data)
    assert read.string(1) == "b"
    assert (read.message(2).string(1), read.message(2).string(2)) == ("x", "y")
    assert 1 in read and 3 not in read
    assert (read.string(3), read.raw(3), 1 in read.message(3)) == ("", b"", False)


def test_fields_of_the_wrong_wire_type_name_the_field() -> None:
    with pytest.raises(ProtobufError, match="field 1 is not length-delimited"):
        Fields(b"\x08\x01").string(1)
    with pytest.raises(ProtobufError, match="field 5 is not length-delimited"):
        Fields(b"\x28\x01").message(5)
    with pytest.raises(ProtobufError, match="field 2 is not a number"):
        as_int64(b"x", 2)


def test_int64_reads_negative_values() -> None:
    ((_, _, value),) = fields(b"\x08" + varint(-5))
    assert as_int64(value, 1) == -5


def test_envelope() -> None:
    type_meta = string(1, "authorization.k8s.io/v1") + string(2, "SelfSubjectAccessReview")
    body = b"k8s\x00" + message(1, type_meta) + length_delimited(2, b"\x0a\x00") + string(3, "gzip")
    assert parse_envelope(body) == Unknown("authorization.k8s.io/v1", "SelfSubjectAccessReview", b"\x0a\x00", "gzip")
    assert parse_envelope(b"k8s\x00") == Unknown("", "", b"")
    with pytest.raises(ProtobufError, match="envelope"):
        parse_envelope(b"\x0a\x00")
    with pytest.raises(ProtobufError, match="field 1 is not length-delimited"):
        parse_envelope(b"k8s\x00\x08\x01")


_field_number = st.integers(min_value=1, max_value=(1 << 29) - 1)


@given(st.lists(st.tuples(_field_number, st.one_of(st.integers(0, (1 << 64) - 1), st.binary(max_size=40)))))
def test_written_fields_read_back(items: list[tuple[int, int | bytes]]) -> None:
    wire = b"".join(
        length_delimited(n, v) if isinstance(v, bytes) else varint(n << 3 | VARINT) + varint(v) for n, v in items
    )
    assert [(n, v) for n, _, v in fields(wire)] == items


@given(st.binary(max_size=200))
def test_noise_fails_only_with_protobuf_or_text_errors(noise: bytes) -> None:
    for body in (noise, b"k8s\x00" + noise):
        try:
            parse_envelope(body)
        except ValueError as exc:  # ProtobufError, or UnicodeDecodeError for a string that is not UTF-8
            assert isinstance(exc, ProtobufError | UnicodeDecodeError)
