"""RFC 6455 framing: the incremental parser, the message reader and the serializer."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websocket import ABNF  # websocket-client: an independent implementation to check against

from connector.kube.websocket_frames import (
    CloseCode,
    FrameParser,
    Message,
    MessageReader,
    Opcode,
    WebSocketProtocolError,
    apply_mask,
    encode_close_payload,
    encode_frame,
    encode_message,
    is_valid_close_code,
    parse_close_payload,
)
from tests.support.session_streams import split_at

KEY = b"\x37\xfa\x21\x3d"


def feed_bytewise(parser: FrameParser | MessageReader, data: bytes) -> list:
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


# -- serializer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_encode_frame_uses_the_shortest_length_form(length: int, header: bytes) -> None:
    frame = encode_frame(Opcode.BINARY, b"x" * length)
    assert frame[: len(header)] == header
    assert len(frame) == len(header) + length


def test_rfc_6455_examples() -> None:
    # Section 5.7: a single-frame unmasked text message, and the same masked.
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=KEY) == bytes.fromhex("818537fa213d7f9f4d5158")
    # A fragmented unmasked text message.
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    # Unmasked Ping with "Hello".
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opcode": Opcode.PING, "payload": b"x" * 126}, "at most 125 bytes"),
        ({"opcode": Opcode.CLOSE, "payload": b"", "fin": False}, "cannot be fragmented"),
        ({"opcode": 3, "payload": b""}, "unknown websocket opcode"),
        ({"opcode": Opcode.BINARY, "payload": b"", "mask_key": b"abc"}, "4 bytes"),
    ],
)
def test_encode_frame_refuses_what_the_rfc_forbids(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_frame(**kwargs)


def test_frames_agree_with_an_independent_implementation() -> None:
    for opcode, payload in [(ABNF.OPCODE_BINARY, b"\x01out\n"), (ABNF.OPCODE_TEXT, b"x" * 70000)]:
        theirs = ABNF.create_frame(payload, opcode).format()  # masked, as a client sends
        [message] = MessageReader(masked=True).feed(theirs)
        assert message == Message(Opcode(opcode), payload)
        ours = encode_frame(opcode, payload)
        frame = ABNF(1, 0, 0, 0, opcode, 0, payload).format()
        assert ours == frame


def test_apply_mask_is_its_own_inverse_and_follows_the_payload_offset() -> None:
    data = bytes(range(256)) * 3
    masked = apply_mask(data, KEY)
    assert apply_mask(masked, KEY) == data
    # Unmasking a frame piecewise gives the same bytes as unmasking it whole.
    pieces = [apply_mask(masked[i : i + 7], KEY, i) for i in range(0, len(masked), 7)]
    assert b"".join(pieces) == data
    assert masked[:4] == bytes(a ^ b for a, b in zip(data[:4], KEY, strict=True))


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        *[(999, False), (1000, True), (1003, True), (1004, False), (1005, False), (1006, False), (1007, True)],
        *[(1011, True), (1014, True), (1015, False), (1016, False), (2999, False), (3000, True), (4999, True)],
        (5000, False),
    ],
)
def test_close_codes(code: int, valid: bool) -> None:
    assert is_valid_close_code(code) is valid


def test_close_payload_round_trip_and_limits() -> None:
    assert parse_close_payload(encode_close_payload(1000, "bye")) == (1000, "bye")
    assert parse_close_payload(encode_close_payload()) == (None, "")
    with pytest.raises(ValueError, match="may not be sent"):
        encode_close_payload(1005)
    with pytest.raises(ValueError, match="needs a close code"):
        encode_close_payload(None, "why")
    with pytest.raises(ValueError, match="at most 123 bytes"):
        encode_close_payload(1000, "x" * 124)


def test_encode_message_fragments() -> None:
    wire = encode_message(Opcode.BINARY, b"abcdefg", mask=False, fragment_size=3)
    chunks = FrameParser(masked=False).feed(wire)
    assert [(c.header.opcode, c.header.fin, c.data) for c in chunks] == [
        (Opcode.BINARY, False, b"abc"),
        (Opcode.CONTINUATION, False, b"def"),
        (Opcode.CONTINUATION, True, b"g"),
    ]
    with pytest.raises(ValueError, match="TEXT or BINARY"):
        encode_message(Opcode.PING, b"", mask=False)


# -- parser --------------------------------------------------------------------------------------------


def test_parser_streams_a_large_frame_in_pieces_with_first_and_last() -> None:
    payload = bytes(range(256)) * 40
    wire = encode_frame(Opcode.BINARY, payload, mask_key=KEY)
    parser = FrameParser(masked=True)
    chunks = parser.feed(wire[:100]) + parser.feed(wire[100:5000]) + parser.feed(wire[5000:])
    assert b"".join(c.data for c in chunks) == payload
    assert [c.first for c in chunks] == [True, False, False]
    assert [c.last for c in chunks] == [False, False, True]
    assert all(c.header.length == len(payload) for c in chunks)


def test_zero_length_frames_and_control_frames_come_whole() -> None:
    wire = (
        encode_frame(Opcode.BINARY, b"")
        + encode_frame(Opcode.PING, b"are you there")
        + encode_frame(Opcode.PONG, b"")
        + encode_frame(Opcode.CLOSE, encode_close_payload(1000))
    )
    for chunks in (FrameParser(masked=False).feed(wire), feed_bytewise(FrameParser(masked=False), wire)):
        assert [(c.header.opcode, c.data, c.first, c.last) for c in chunks] == [
            (Opcode.BINARY, b"", True, True),
            (Opcode.PING, b"are you there", True, True),
            (Opcode.PONG, b"", True, True),
            (Opcode.CLOSE, b"\x03\xe8", True, True),
        ]


def test_control_frames_may_interleave_with_fragments() -> None:
    wire = (
        encode_frame(Opcode.TEXT, b"he", fin=False, mask_key=KEY)
        + encode_frame(Opcode.PING, b"p", mask_key=KEY)
        + encode_frame(Opcode.CONTINUATION, b"llo", mask_key=KEY)
    )
    messages = MessageReader(masked=True).feed(wire)
    assert messages == [Message(Opcode.PING, b"p"), Message(Opcode.TEXT, b"hello")]
    assert messages[1].text == "hello"


def _header(b0: int, b1: int, extra: bytes = b"") -> bytes:
    return bytes([b0, b1]) + extra


@pytest.mark.parametrize(
    ("masked", "wire", "message"),
    [
        (False, _header(0xC2, 0x00), "RSV bits 100"),
        (False, _header(0x92, 0x00), "RSV bits 001"),
        (False, _header(0x83, 0x00), "reserved opcode 0x3"),
        (False, _header(0x8B, 0x00), "reserved opcode 0xb"),
        (False, _header(0x09, 0x00), "control frame (PING) at byte 0 is fragmented"),
        (False, _header(0x89, 0x7E, b"\x00\x7e"), "126-byte payload; the limit is 125"),
        (True, _header(0x82, 0x00), "from the client is not masked"),
        (False, _header(0x82, 0x80, KEY), "from the server is masked"),
        (False, _header(0x80, 0x00), "continuation frame at byte 0 without a message"),
        (False, _header(0x02, 0x00) + _header(0x82, 0x00), "BINARY frame at byte 2 starts a new message"),
        (False, _header(0x82, 0x7F, b"\x80" + b"\x00" * 7), "most significant bit"),
        (False, _header(0x88, 0x01, b"\x03"), "payload of 1 byte"),
        (False, _header(0x88, 0x02, b"\x03\xed"), "code 1005"),
        (False, _header(0x88, 0x02, b"\x03\xe7"), "code 999"),
        (False, _header(0x88, 0x04, b"\x03\xe8\xff\xfe"), "not valid UTF-8"),
        (False, _header(0x88, 0x00) + _header(0x82, 0x00), "frame at byte 2 after the Close frame"),
    ],
)
def test_parser_rejects_protocol_violations(masked: bool, wire: bytes, message: str) -> None:
    with pytest.raises(WebSocketProtocolError, match=re.escape(message)):
        FrameParser(masked=masked).feed(wire)
    # The same violation is found however the bytes are split.
    with pytest.raises(WebSocketProtocolError, match=re.escape(message)):
        feed_bytewise(FrameParser(masked=masked), wire)


def test_invalid_close_reason_uses_the_invalid_payload_code() -> None:
    with pytest.raises(WebSocketProtocolError) as caught:
        FrameParser().feed(_header(0x88, 0x04, b"\x03\xe8\xff\xfe"))
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD


def test_message_reader_checks_text_and_size() -> None:
    with pytest.raises(WebSocketProtocolError, match="not valid UTF-8") as caught:
        MessageReader().feed(encode_frame(Opcode.TEXT, b"\xc3"))
    assert caught.value.close_code == CloseCode.INVALID_PAYLOAD
    # A character split across fragments is fine once joined.
    wire = encode_frame(Opcode.TEXT, b"\xc3", fin=False) + encode_frame(Opcode.CONTINUATION, b"\xa9")
    assert MessageReader().feed(wire) == [Message(Opcode.TEXT, "é".encode())]
    with pytest.raises(WebSocketProtocolError, match="larger than the 10-byte limit") as caught:
        MessageReader(max_message_size=10).feed(encode_message(Opcode.BINARY, b"x" * 11, mask=False, fragment_size=4))
    assert caught.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_parser_without_a_direction_accepts_both_maskings() -> None:
    wire = encode_frame(Opcode.BINARY, b"a", mask_key=KEY) + encode_frame(Opcode.BINARY, b"b")
    assert [c.data for c in FrameParser().feed(wire)] == [b"a", b"b"]


# -- property tests ------------------------------------------------------------------------------------

_data_messages = st.lists(
    st.tuples(
        st.sampled_from([Opcode.BINARY, Opcode.TEXT]),
        st.binary(max_size=300),
        st.integers(min_value=1, max_value=200),  # fragment size
        st.lists(st.binary(max_size=20), max_size=2),  # pings to put between the fragments
    ),
    min_size=1,
    max_size=6,
)


def _wire(messages: list, masked: bool) -> tuple[bytes, list[Message]]:
    wire = b""
    expected: list[Message] = []
    key = KEY if masked else None
    for opcode, payload, size, pings in messages:
        if opcode == Opcode.TEXT:
            payload = payload.decode("latin-1").encode("utf-8")
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, piece in enumerate(pieces):
            op = opcode if i == 0 else Opcode.CONTINUATION
            wire += encode_frame(op, piece, fin=i == len(pieces) - 1, mask_key=key)
            if i < len(pieces) - 1:
                for ping in pings:
                    wire += encode_frame(Opcode.PING, ping, mask_key=key)
                    expected.append(Message(Opcode.PING, ping))
        expected.append(Message(opcode, payload))
    return wire, expected


@settings(max_examples=150, deadline=None)
@given(messages=_data_messages, masked=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_any_frame_sequence_reads_the_same(messages: list, masked: bool, cuts: list[int]) -> None:
    wire, expected = _wire(messages, masked)
    reader = MessageReader(masked=masked)
    got: list[Message] = []
    for piece in split_at(wire, cuts):
        got += reader.feed(piece)
    assert got == expected


@settings(max_examples=30, deadline=None)
@given(messages=_data_messages)
def test_every_byte_boundary(messages: list) -> None:
    wire, expected = _wire(messages, True)
    assert feed_bytewise(MessageReader(masked=True), wire) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_either_parses_or_raises_a_protocol_error(junk: bytes) -> None:
    try:
        FrameParser(masked=True).feed(junk)
    except WebSocketProtocolError:
        pass
