"""The Kubernetes channel protocols over websocket: channel bytes, base64, close signal, resize, exit status."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kube.channels import (
    PROTOCOLS,
    ChannelClose,
    ChannelData,
    ChannelMessageError,
    ChannelStreamDecoder,
    ExitStatus,
    TerminalSize,
    TerminalSizeDecoder,
    decode_message,
    encode_close_stream,
    encode_message,
    encode_terminal_size,
    parse_error_channel,
    parse_terminal_size,
    protocol_for,
)
from connector.kube.status import status_body
from tests.support.session_streams import split_at

V1 = PROTOCOLS["channel.k8s.io"]
V4 = PROTOCOLS["v4.channel.k8s.io"]
V5 = PROTOCOLS["v5.channel.k8s.io"]
B64 = PROTOCOLS["base64.channel.k8s.io"]
V4B64 = PROTOCOLS["v4.base64.channel.k8s.io"]


@pytest.mark.parametrize(
    ("name", "version", "base64", "close", "status"),
    [
        ("", 1, False, False, False),
        ("channel.k8s.io", 1, False, False, False),
        ("v2.channel.k8s.io", 2, False, False, False),
        ("v3.channel.k8s.io", 3, False, False, False),
        ("v4.channel.k8s.io", 4, False, False, True),
        ("v5.channel.k8s.io", 5, False, True, True),
        ("base64.channel.k8s.io", 1, True, False, False),
        ("v4.base64.channel.k8s.io", 4, True, False, True),
    ],
)
def test_protocols(name: str, version: int, base64: bool, close: bool, status: bool) -> None:
    protocol = protocol_for(name)
    assert protocol is not None
    assert (protocol.version, protocol.base64, protocol.has_close_signal, protocol.status_errors) == (
        version,
        base64,
        close,
        status,
    )


@pytest.mark.parametrize("name", ["SPDY/3.1+portforward.k8s.io", "portforward.k8s.io", "V5.channel.K8S.io", "x"])
def test_other_protocols_are_not_channel_protocols(name: str) -> None:
    assert protocol_for(name) is None


@pytest.mark.parametrize(
    ("protocol", "payload", "expected"),
    [
        (V5, b"", None),
        (V5, b"\x00foo\n", ChannelData(0, b"foo\n")),
        (V5, b"\x01", ChannelData(1, b"")),
        (V5, b"\xff\x00", ChannelClose(0)),
        (V4, b"\xff\x00", ChannelData(255, b"\x00")),  # no close signal before v5
        (V1, b"\x04{}", ChannelData(4, b"{}")),
        # The examples of k8s.io/apimachinery's wsstream documentation.
        (B64, b"0Zm9vCg==", ChannelData(0, b"foo\n")),
        (B64, b"1Cg==", ChannelData(1, b"\n")),
        (B64, b"1Zm9v\r\nCg==", ChannelData(1, b"foo\n")),  # Go's decoder skips CR and LF
        (V4B64, b"2", ChannelData(2, b"")),
        (B64, b"/Zm9v", ChannelData(255, b"foo")),  # '/' - '0' wraps around in a byte
    ],
)
def test_decode_message(protocol, payload: bytes, expected) -> None:
    assert decode_message(protocol, payload) == expected


@pytest.mark.parametrize(
    ("protocol", "payload", "message"),
    [
        (V5, b"\xff", "close signal with 0 data bytes"),
        (V5, b"\xff\x00\x01", "close signal with 2 data bytes"),
        (B64, b"0Zm9", "invalid base64"),
        (B64, b"0Zg==Zg==", "invalid base64"),
        (B64, b"0Zm9v!", "invalid base64"),
    ],
)
def test_decode_message_errors(protocol, payload: bytes, message: str) -> None:
    with pytest.raises(ChannelMessageError, match=message):
        decode_message(protocol, payload)


def test_encoders() -> None:
    assert encode_message(V5, 1, b"out") == b"\x01out"
    assert encode_message(B64, 2, b"foo\n") == b"2Zm9vCg=="
    assert encode_close_stream(V5, 0) == b"\xff\x00"
    with pytest.raises(ValueError, match="new in v5"):
        encode_close_stream(V4, 0)
    assert encode_message(B64, 10, b"") == b":"  # port-forward's 6th port, as the kubelet writes it
    assert decode_message(B64, b":") == ChannelData(10, b"")
    with pytest.raises(ValueError, match=r"0\.\.79, got 80"):
        encode_message(B64, 80, b"")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        encode_message(V5, 256, b"")


@settings(max_examples=200, deadline=None)
@given(
    protocol=st.sampled_from(sorted(PROTOCOLS.values(), key=lambda p: p.name)),
    channel=st.integers(min_value=0, max_value=4),
    data=st.binary(max_size=200),
)
def test_encode_decode_round_trip(protocol, channel: int, data: bytes) -> None:
    assert decode_message(protocol, encode_message(protocol, channel, data)) == ChannelData(channel, data)


def _stream_decode(protocol, payload: bytes, cuts: list[int]) -> list:
    decoder = ChannelStreamDecoder(protocol)
    decoder.begin()
    out: list = []
    for piece in split_at(payload, cuts):
        out += decoder.feed(piece)
    return out + decoder.end()


@settings(max_examples=200, deadline=None)
@given(
    protocol=st.sampled_from([V5, B64, V4B64]),
    channel=st.integers(min_value=0, max_value=4),
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_streaming_decode_equals_whole_message_decode(protocol, channel: int, data: bytes, cuts: list[int]) -> None:
    payload = encode_message(protocol, channel, data)
    got = _stream_decode(protocol, payload, cuts)
    assert all(isinstance(item, ChannelData) and item.channel == channel for item in got)
    assert b"".join(item.data for item in got) == data


def test_streaming_close_signal_and_bad_messages() -> None:
    assert _stream_decode(V5, b"\xff\x02", [1]) == [ChannelClose(2)]
    decoder = ChannelStreamDecoder(B64)
    decoder.begin()
    assert decoder.feed(b"0Zm9v") == [ChannelData(0, b"foo")]
    with pytest.raises(ChannelMessageError, match="channel 0: invalid base64"):
        decoder.feed(b"!!!!")
    # The rest of a dropped message is ignored; the next message decodes again.
    assert decoder.feed(b"Zm9v") == []
    assert decoder.end() == []
    decoder.begin()
    assert decoder.feed(b"1Zm9v") + decoder.end() == [ChannelData(1, b"foo")]
    decoder.begin()
    decoder.feed(b"1Zm9")
    with pytest.raises(ChannelMessageError, match="3 characters short of a group"):
        decoder.end()
    decoder.begin()
    decoder.feed(b"1Zg==")
    with pytest.raises(ChannelMessageError, match="continues after its padding"):
        decoder.feed(b"Zg==")


# -- resize -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (b'{"Width":80,"Height":24}', TerminalSize(80, 24)),
        (b'{"width":120,"HEIGHT":40}', TerminalSize(120, 40)),  # Go matches keys without case
        (b'{"Width":65535}', TerminalSize(65535, 0)),
        (b'{"Width":null,"Height":3,"Other":"x"}', TerminalSize(0, 3)),
    ],
)
def test_parse_terminal_size(raw: bytes, size: TerminalSize) -> None:
    assert parse_terminal_size(raw) == size


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"Width":-1,"Height":24}', "integer 0..65535"),
        (b'{"Width":65536,"Height":24}', "integer 0..65535"),
        (b'{"Width":80.5,"Height":24}', "integer 0..65535"),
        (b'{"Width":true,"Height":24}', "integer 0..65535"),
        (b'{"Width":"80","Height":24}', "integer 0..65535"),
        (b"[80,24]", "must be a JSON object"),
        (b"{", "not JSON"),
    ],
)
def test_parse_terminal_size_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ChannelMessageError, match=message):
        parse_terminal_size(raw)


def test_resize_stream_splits_and_joins_objects() -> None:
    decoder = TerminalSizeDecoder()
    stream = encode_terminal_size(TerminalSize(80, 24)) + b" \n" + encode_terminal_size(TerminalSize(100, 30))
    got = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == [TerminalSize(80, 24), TerminalSize(100, 30)]
    assert decoder.feed(b'{"Width":1,"Height":2}{"Width":3,"Height":4}') == [TerminalSize(1, 2), TerminalSize(3, 4)]
    # Braces inside strings do not end an object.
    assert decoder.feed(b'{"x":"}{","Width":5,"Height":6}') == [TerminalSize(5, 6)]
    assert decoder.failed is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"80x24", "stream of JSON objects"),
        (b'{"Width":-1}', "integer 0..65535"),
        (b'{"pad":"' + b"x" * 5000, "longer than 4096 bytes"),
        (b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
    ],
)
def test_resize_stream_stops_at_the_first_bad_object(data: bytes, reason: str) -> None:
    decoder = TerminalSizeDecoder()
    assert decoder.feed(b'{"Width":7,"Height":8}' + data) == [TerminalSize(7, 8)]
    assert decoder.failed is not None and reason in decoder.failed
    # Like the server's decoder loop, nothing after the failure counts.
    assert decoder.feed(b'{"Width":9,"Height":9}') == []


# -- exit status ---------------------------------------------------------------------------------------


def _status(**kwargs) -> bytes:
    return json.dumps(kwargs).encode()


NON_ZERO = status_body(
    500,
    "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
    reason="NonZeroExitCode",
    details={"causes": [{"reason": "ExitCode", "message": "3"}]},
)


@pytest.mark.parametrize(
    ("data", "structured", "expected"),
    [
        (_status(metadata={}, status="Success"), True, ExitStatus(0, "")),
        (json.dumps(NON_ZERO).encode(), True, ExitStatus(3, NON_ZERO["message"])),
        (json.dumps(NON_ZERO).encode(), None, ExitStatus(3, NON_ZERO["message"])),
        (
            _status(status="Failure", message="container not found", reason="NotFound"),
            True,
            ExitStatus(None, "container not found"),
        ),
        (_status(status="Failure", reason="InternalError"), True, ExitStatus(None, "InternalError")),
        (
            _status(status="Failure", reason="NonZeroExitCode", details={"causes": [{"reason": "ExitCode"}]}),
            True,
            ExitStatus(None, "NonZeroExitCode"),
        ),
        (b"error executing in Docker Container: 3", False, ExitStatus(None, "error executing in Docker Container: 3")),
        (b"{not json", True, ExitStatus(None, "the error channel held no Status: {not json")),
        (b"{not json", None, ExitStatus(None, "{not json")),
        (_status(status="Success"), False, ExitStatus(None, '{"status": "Success"}')),
    ],
)
def test_parse_error_channel(data: bytes, structured, expected: ExitStatus) -> None:
    assert parse_error_channel(data, structured=structured) == expected
