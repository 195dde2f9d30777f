"""The passive session taps: relayed bytes in both directions -> stdin/stdout/stderr/resize/exit events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.audit.tap import (
    DecodeError,
    PassiveTap,
    ProtocolNote,
    SessionEvent,
    SpdySessionDecoder,
    StreamClosed,
    StreamData,
    WebSocketSessionDecoder,
    session_decoder_for,
)
from connector.kube.channels import PROTOCOLS, ExitStatus, TerminalSize
from connector.kube.websocket_frames import Opcode, encode_frame
from tests.support.session_streams import (
    MASK,
    SpdyExec,
    exit_status,
    split_at,
    ws_client,
    ws_client_close,
    ws_client_close_stream,
    ws_client_resize,
    ws_server,
    ws_server_close,
)

V5 = PROTOCOLS["v5.channel.k8s.io"]
V4 = PROTOCOLS["v4.channel.k8s.io"]
B64 = PROTOCOLS["v4.base64.channel.k8s.io"]


def ws_session(protocol=V5) -> list[tuple[str, bytes]]:
    """A TTY exec session as the relay sees it: (direction, bytes) in order."""
    close = [("client", ws_client_close_stream(protocol, 0))] if protocol.has_close_signal else []
    return [
        ("upstream", ws_server(protocol, 1, b"")),  # the server's "connected" message
        ("client", ws_client_resize(protocol, 120, 40)),
        ("client", ws_client(protocol, 0, b"echo hi\r")),
        ("upstream", ws_server(protocol, 1, b"echo hi\r\nhi\r\n")),
        ("upstream", encode_frame(Opcode.PING, b"")),
        ("client", encode_frame(Opcode.PONG, b"", mask_key=MASK)),
        ("client", ws_client_resize(protocol, 100, 30)),
        ("upstream", ws_server(protocol, 2, b"warning\n")),
        ("client", ws_client(protocol, 0, b"exit 3\r")),
        *close,
        ("upstream", ws_server(protocol, 3, exit_status(3))),
        ("upstream", ws_server_close()),
        ("client", ws_client_close()),
    ]


EXPECTED = [
    TerminalSize(120, 40),
    StreamData("stdin", b"echo hi\r"),
    StreamData("stdout", b"echo hi\r\nhi\r\n"),
    TerminalSize(100, 30),
    StreamData("stderr", b"warning\n"),
    StreamData("stdin", b"exit 3\r"),
]


def run(decoder, session: list[tuple[str, bytes]]) -> list[SessionEvent]:
    tap = PassiveTap(decoder)
    events: list[SessionEvent] = []
    for direction, data in session:
        events += tap.client_bytes(data) if direction == "client" else tap.upstream_bytes(data)
    return events + tap.finish()


def merged(events: list[SessionEvent]) -> list[SessionEvent]:
    """Adjacent data of one stream joined: how the bytes were split must not matter."""
    out: list[SessionEvent] = []
    for event in events:
        if isinstance(event, StreamData) and out and isinstance(out[-1], StreamData) and out[-1].stream == event.stream:
            out[-1] = StreamData(event.stream, out[-1].data + event.data)
        else:
            out.append(event)
    return out


def test_websocket_v5_session() -> None:
    events = run(WebSocketSessionDecoder(V5), ws_session())
    assert events[: len(EXPECTED)] == EXPECTED
    assert events[len(EXPECTED)] == StreamClosed("stdin")
    assert isinstance(events[-1], ExitStatus) and events[-1].code == 3
    assert len(events) == len(EXPECTED) + 2


@pytest.mark.parametrize("protocol", [V4, B64, PROTOCOLS["channel.k8s.io"]])
def test_other_channel_protocols(protocol) -> None:
    events = run(WebSocketSessionDecoder(protocol), ws_session(protocol))
    assert events[: len(EXPECTED)] == EXPECTED
    last = events[-1]
    assert isinstance(last, ExitStatus)
    # v1 carries no Status: the error channel's text is the message.
    assert last.code == (3 if protocol.status_errors else None)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_the_relayed_chunks_gives_the_same_events(cuts: list[int]) -> None:
    session = ws_session()
    reference = merged(run(WebSocketSessionDecoder(V5), session))
    # Re-split each direction's byte stream at arbitrary points, keeping the order of directions.
    resplit: list[tuple[str, bytes]] = []
    for i, (direction, data) in enumerate(session):
        resplit += [(direction, piece) for piece in split_at(data, cuts[i::5])]
    assert merged(run(WebSocketSessionDecoder(V5), resplit)) == reference


def test_every_byte_boundary() -> None:
    session = ws_session()
    bytewise = [(d, data[i : i + 1]) for d, data in session for i in range(len(data))]
    assert merged(run(WebSocketSessionDecoder(V5), bytewise)) == merged(run(WebSocketSessionDecoder(V5), session))


def test_client_frames_are_channel_messages_each_as_the_server_reads_them() -> None:
    # A fragmented client message: the Kubernetes server reads every frame as a message of its own,
    # so the continuation's first byte is its channel. Recording the RFC message ("channel 5") would
    # hide the stdin the container got.
    client = encode_frame(Opcode.BINARY, b"\x05ignored", fin=False, mask_key=MASK) + encode_frame(
        Opcode.CONTINUATION, b"\x00rm -rf /tmp/x\n", mask_key=MASK
    )
    assert run(WebSocketSessionDecoder(V5), [("client", client)]) == [StreamData("stdin", b"rm -rf /tmp/x\n")]


def test_server_messages_are_joined_as_kubectl_reads_them() -> None:
    upstream = (
        encode_frame(Opcode.BINARY, b"\x01hel", fin=False)
        + encode_frame(Opcode.PING, b"x")
        + encode_frame(Opcode.CONTINUATION, b"lo")
    )
    assert merged(run(WebSocketSessionDecoder(V5), [("upstream", upstream)])) == [StreamData("stdout", b"hello")]


def test_channels_each_side_ignores_are_not_recorded() -> None:
    session = [
        ("client", ws_client(V5, 1, b"client pretending to be stdout")),
        ("client", ws_client(V5, 9, b"unknown channel")),
        ("upstream", ws_server(V5, 0, b"server writing to stdin")),
        ("upstream", ws_server(V5, 4, b'{"Width":1,"Height":1}')),
        ("client", encode_frame(Opcode.BINARY, b"", mask_key=MASK)),  # empty message: skipped
    ]
    assert run(WebSocketSessionDecoder(V5), session) == []


def test_a_bad_message_is_noted_and_decoding_goes_on() -> None:
    session = [
        ("client", encode_frame(Opcode.TEXT, b"0!!!!", mask_key=MASK)),
        ("client", ws_client(B64, 0, b"ls\n")),
    ]
    events = run(WebSocketSessionDecoder(B64), session)
    assert isinstance(events[0], ProtocolNote) and "invalid base64" in events[0].message
    assert events[1:] == [StreamData("stdin", b"ls\n")]


def test_a_bad_resize_stops_resizes_only() -> None:
    session = [
        ("client", ws_client(V5, 4, b'{"Width":-1}')),
        ("client", ws_client_resize(V5, 80, 24)),
        ("client", ws_client(V5, 0, b"x")),
    ]
    events = run(WebSocketSessionDecoder(V5), session)
    assert isinstance(events[0], ProtocolNote) and "0..65535" in events[0].message
    assert events[1:] == [StreamData("stdin", b"x")]


def test_exit_status_is_read_when_the_server_closes_or_the_session_ends() -> None:
    decoder = WebSocketSessionDecoder(V5)
    tap = PassiveTap(decoder)
    assert tap.upstream_bytes(ws_server(V5, 3, exit_status(0))) == []
    assert tap.upstream_bytes(ws_server_close()) == [ExitStatus(0, "")]
    assert tap.finish() == []  # once only
    tap = PassiveTap(WebSocketSessionDecoder(V5))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(2)))
    assert [e.code for e in tap.finish() if isinstance(e, ExitStatus)] == [2]


@pytest.mark.parametrize(
    ("direction", "junk", "reason"),
    [
        ("client", encode_frame(Opcode.BINARY, b"\x00ls"), "not masked"),
        ("upstream", bytes([0xC2, 0x00]), "RSV bits"),
        ("upstream", bytes([0x83, 0x00]), "reserved opcode"),
    ],
)
def test_a_decode_error_is_recorded_once_and_bytes_are_still_counted(direction: str, junk: bytes, reason: str) -> None:
    tap = PassiveTap(WebSocketSessionDecoder(V5))
    assert tap.client_bytes(ws_client(V5, 0, b"before\n")) == [StreamData("stdin", b"before\n")]
    feed = tap.client_bytes if direction == "client" else tap.upstream_bytes
    [error] = feed(junk)
    assert isinstance(error, DecodeError) and reason in error.message and error.direction == direction
    assert tap.decode_error == error.message
    # Decoding has stopped, the byte counts go on.
    assert tap.client_bytes(ws_client(V5, 0, b"after\n")) == []
    assert tap.upstream_bytes(ws_server(V5, 1, b"out")) == []
    assert tap.finish() == []
    sent = len(ws_client(V5, 0, b"before\n")) + len(ws_client(V5, 0, b"after\n"))
    assert tap.bytes_from_client == sent + (len(junk) if direction == "client" else 0)
    assert not tap.decoding


def test_a_decoder_bug_never_reaches_the_relay() -> None:
    class Broken:
        def client_bytes(self, data: bytes) -> list:
            raise RuntimeError("bug")

        def upstream_bytes(self, data: bytes) -> list:
            return []

        def finish(self) -> list:
            return []

    tap = PassiveTap(Broken())
    [error] = tap.client_bytes(b"abc")
    assert isinstance(error, DecodeError) and "RuntimeError: bug" in error.message
    assert tap.client_bytes(b"def") == [] and tap.bytes_from_client == 6


@settings(max_examples=200, deadline=None)
@given(client=st.binary(max_size=200), upstream=st.binary(max_size=200))
def test_garbage_never_raises(client: bytes, upstream: bytes) -> None:
    sniffing = session_decoder_for("v4.channel.k8s.io", "exec")
    for decoder in (WebSocketSessionDecoder(V5), SpdySessionDecoder(), sniffing):
        tap = PassiveTap(decoder)
        tap.client_bytes(client)
        tap.upstream_bytes(upstream)
        tap.finish()
        assert tap.bytes_from_client == len(client)


# -- SPDY ------------------------------------------------------------------------------------------------


def spdy_session() -> list[tuple[str, bytes]]:
    s = SpdyExec()
    client_open, server_open = s.open("error", "stdin", "stdout", "stderr", "resize")
    return [
        ("client", client_open),
        ("upstream", server_open),
        ("client", s.client_data("resize", b'{"Width":120,"Height":40}\n')),
        ("client", s.client_data("stdin", b"echo hi\r")),
        ("upstream", s.server_data("stdout", b"echo hi\r\nhi\r\n")),
        ("client", s.client_data("resize", b'{"Width":100,"Height":30}\n')),
        ("upstream", s.server_data("stderr", b"warning\n")),
        ("client", s.client_data("stdin", b"exit 3\r")),
        ("client", s.client_data("stdin", b"", fin=True)),
        ("upstream", s.server_data("stdout", b"", fin=True)),
        ("upstream", s.server_data("error", exit_status(3), fin=True)),
        ("upstream", s.server_goaway()),
    ]


def test_spdy_session() -> None:
    events = run(SpdySessionDecoder(structured=True), spdy_session())
    assert events[: len(EXPECTED)] == EXPECTED
    assert events[len(EXPECTED) :] == [
        StreamClosed("stdin"),
        StreamClosed("stdout"),
        ExitStatus(3, events[-1].message),  # type: ignore[union-attr]
    ]


def test_spdy_every_byte_boundary() -> None:
    session = spdy_session()
    bytewise = [(d, data[i : i + 1]) for d, data in session for i in range(len(data))]
    assert merged(run(SpdySessionDecoder(), bytewise)) == merged(run(SpdySessionDecoder(), session))


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_spdy_any_split(cuts: list[int]) -> None:
    session = spdy_session()
    joined: dict[str, bytes] = {"client": b"", "upstream": b""}
    for d, data in session:
        joined[d] += data
    reference = merged(run(SpdySessionDecoder(), session))
    # Each direction as one stream, split anywhere; client bytes first, as kubectl opens the streams.
    resplit = []
    for i, direction in enumerate(("client", "upstream")):
        data = joined[direction]
        resplit += [(direction, piece) for piece in split_at(data, cuts[i::2])]
    got = merged(run(SpdySessionDecoder(), resplit))
    # Output order between the two directions may differ; each stream's content may not.
    assert sorted(map(repr, got)) == sorted(map(repr, reference))


def test_spdy_large_data_frames_stream_through() -> None:
    s = SpdyExec()
    client_open, server_open = s.open("error", "stdout")
    big = bytes(range(256)) * 4096  # 1 MiB in one DATA frame
    frame = s.server_data("stdout", big)
    tap = PassiveTap(SpdySessionDecoder())
    tap.client_bytes(client_open)
    tap.upstream_bytes(server_open)
    events = []
    for i in range(0, len(frame), 65536):
        events += tap.upstream_bytes(frame[i : i + 65536])
    # Output arrives as the frame does, not once it is complete.
    assert len(events) > 10
    assert b"".join(e.data for e in events if isinstance(e, StreamData)) == big


def test_spdy_malformed_input_is_a_decode_error() -> None:
    tap = PassiveTap(SpdySessionDecoder())
    [error] = tap.client_bytes(b"\x80\x02\x00\x01\x00\x00\x00\x0a" + b"\x00" * 10)
    assert isinstance(error, DecodeError) and "unsupported SPDY version 2" in error.message
    tap = PassiveTap(SpdySessionDecoder())
    [error] = tap.client_bytes(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    assert isinstance(error, DecodeError) and "DATA frame on stream 0" in error.message
    # A header block that is not zlib with the SPDY dictionary.
    tap = PassiveTap(SpdySessionDecoder())
    [error] = tap.client_bytes(b"\x80\x03\x00\x01\x00\x00\x00\x0e" + b"\x00\x00\x00\x01" * 2 + b"\x00\x00" + b"xxxx")
    assert isinstance(error, DecodeError) and "does not decompress" in error.message


def test_the_same_protocol_name_over_spdy_or_websocket_is_told_apart_by_the_bytes() -> None:
    # The proxy names a SPDY session by its X-Stream-Protocol-Version, e.g. v4.channel.k8s.io.
    spdy = run(session_decoder_for("v4.channel.k8s.io", "exec"), spdy_session())
    ws = run(session_decoder_for("v4.channel.k8s.io", "exec"), ws_session(V4))
    assert spdy[: len(EXPECTED)] == EXPECTED == ws[: len(EXPECTED)]
    assert not any(isinstance(e, DecodeError | ProtocolNote) for e in spdy + ws)


@pytest.mark.parametrize(
    ("protocol", "subresource", "kind"),
    [
        ("v5.channel.k8s.io", "exec", "_FirstBytesDecoder"),
        ("v5.channel.k8s.io", "attach", "_FirstBytesDecoder"),
        ("SPDY/3.1", "exec", "SpdySessionDecoder"),
        ("SPDY/3.1+v4.channel.k8s.io", "exec", "SpdySessionDecoder"),
        ("SPDY/3.1+portforward.k8s.io", "portforward", None),
        ("v4.channel.k8s.io", "portforward", None),
        ("unknown.example.com", "exec", None),
    ],
)
def test_session_decoder_for(protocol: str, subresource: str, kind: str | None) -> None:
    decoder = session_decoder_for(protocol, subresource)
    assert (type(decoder).__name__ if decoder is not None else None) == kind
