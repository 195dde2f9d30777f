"""The emulator's streaming protocol logic that needs no connection: parameters, negotiation, framing, outcomes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import MultiDict

from connector.kube.channels import PROTOCOLS, ChannelClose, ChannelData, ChannelProtocol, TerminalSize
from connector.kube.spdy import SynStreamFrame
from sandbox.apiserver import channels
from sandbox.apiserver.channels import ChannelProtocolError
from sandbox.apiserver.pipes import InboundBuffer
from sandbox.apiserver.portforward import accept_stream, parse_ports
from sandbox.apiserver.processes import exit_status_of
from sandbox.apiserver.remotecommand import Outcome, status_for, status_message, terminal_sizes
from sandbox.apiserver.runtime import (
    ATTACH_QUEUE_CHUNKS,
    Attachment,
    PodRef,
    PodRuntime,
    PodRuntimeError,
    declared_ports,
)
from sandbox.apiserver.spdy_server import SpdyStream
from sandbox.apiserver.streaming import StreamParams, StreamParamsError, query_bool


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], False), (["true"], True), (["True"], True), (["1"], True), ([""], True), (["yes"], True),
     (["false"], False), (["FALSE"], False), (["0"], False), (["false", "true"], False)],
)
def test_query_bool_is_the_apiservers(values: list[str], expected: bool) -> None:
    assert query_bool(values) is expected


def test_stream_params_from_query() -> None:
    query = MultiDict([("command", "sh"), ("command", "-c"), ("command", "echo a b"), ("container", "main"),
                       ("stdin", "true"), ("stdout", "1"), ("stderr", "false"), ("tty", "True"),
                       ("ports", "80,8080"), ("ports", "443")])
    assert StreamParams.from_query(query) == StreamParams(
        command=("sh", "-c", "echo a b"), container="main", stdin=True, stdout=True, stderr=False, tty=True,
        ports=(80, 8080, 443),
    )
    assert StreamParams.from_query(MultiDict()) == StreamParams()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("ports", "http")], 'unable to parse "http" as a port'),
        ([("ports", "80,")], 'unable to parse "80," as a port'),
        ([("ports", "70000")], 'unable to parse "70000" as a port'),
        ([("ports", "0")], 'port "0" must be > 0'),
        ([("ports", "")], 'query parameter "port" cannot be empty'),
        ([("command", "a\x00b")], "command arguments must not contain NUL characters"),
    ],
)
def test_stream_params_refuse_bad_values(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(StreamParamsError, match=message):
        StreamParams.from_query(MultiDict(query))


def test_parse_ports_requires_a_port() -> None:
    with pytest.raises(ValueError, match='query parameter "port" is required'):
        parse_ports([])


@pytest.mark.parametrize(
    ("offered", "exec_protocol", "portforward_protocol"),
    [
        ([], "", ""),
        (["v5.channel.k8s.io"], "v5.channel.k8s.io", None),
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], "v5.channel.k8s.io", "v4.channel.k8s.io"),
        (["v5.channel.k8s.io", "v4.channel.k8s.io"], "v5.channel.k8s.io", "v4.channel.k8s.io"),
        (["base64.channel.k8s.io", "v4.channel.k8s.io"], "base64.channel.k8s.io", "v4.channel.k8s.io"),
        (["v4.base64.channel.k8s.io"], "v4.base64.channel.k8s.io", "v4.base64.channel.k8s.io"),
        (["channel.k8s.io"], "channel.k8s.io", None),
        (["v3.channel.k8s.io", "v2.channel.k8s.io"], None, None),
        (["unknown", "v4.channel.k8s.io"], "v4.channel.k8s.io", "v4.channel.k8s.io"),
    ],
)
def test_websocket_subprotocol_negotiation(offered: list[str], exec_protocol: str | None,
                                           portforward_protocol: str | None) -> None:
    negotiated = channels.negotiate_exec(offered)
    assert (negotiated.name if negotiated else None) == exec_protocol
    negotiated = channels.negotiate_portforward(offered)
    assert (negotiated.name if negotiated else None) == portforward_protocol


def test_requested_protocols_reads_every_header_line() -> None:
    headers = MultiDict([("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io"),
                         ("Sec-WebSocket-Protocol", " channel.k8s.io ,")])
    assert channels.requested_protocols(headers) == ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]


V5, V4, V1, B64 = (PROTOCOLS[n] for n in ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io",
                                           "v4.base64.channel.k8s.io"))


@pytest.mark.parametrize(
    ("protocol", "message", "decoded"),
    [
        (V5, b"\x00data", ChannelData(0, b"data")),
        (V5, b"\xff\x00", ChannelClose(0)),  # v5 close signal for stdin
        (V4, b"\xff\x00", ChannelData(255, b"\x00")),  # before v5, 255 is just a channel number
        (V4, b"\x04{}", ChannelData(4, b"{}")),
        (V4, b"", None),
        (B64, b"0aGk=", ChannelData(0, b"hi")),
        (B64, b"0not base64!", None),  # the kubelet drops a message that does not decode, alone
        (V1, b"\x02", ChannelData(2, b"")),
    ],
)
def test_channel_decode(protocol: ChannelProtocol, message: bytes, decoded: Any) -> None:
    assert channels.decode(protocol, message) == decoded


def test_malformed_v5_close_signal_ends_the_connection() -> None:
    with pytest.raises(ChannelProtocolError, match="close signal with 2 data bytes"):
        channels.decode(V5, b"\xff\x00\x01")


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome(), {"metadata": {}, "status": "Success"}),
        (Outcome(exit_code=3), {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: command terminated with exit code 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }),
    ],
)
def test_exit_outcomes(outcome: Outcome, status: dict[str, Any]) -> None:
    assert status_for(outcome) == status
    assert json.loads(status_message(outcome, json_status=True) or b"") == status


def test_internal_error_outcome_and_text_protocols() -> None:
    status = status_for(Outcome(error="boom"))
    assert (status["status"], status["reason"], status["code"]) == ("Failure", "InternalError", 500)
    assert status["message"] == "Internal error occurred: boom"
    assert status_message(Outcome(), json_status=False) is None  # v1-v3 send nothing on success
    assert status_message(Outcome(error="boom"), json_status=False) == b"Internal error occurred: boom"


class Chunks:
    """A ByteSource replaying fixed chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def sizes(*chunks: bytes) -> list[TerminalSize]:
    return [size async for size in terminal_sizes(Chunks(*chunks))]


async def test_resize_messages_in_any_chunking() -> None:
    assert await sizes(b'{"Width":80,"Height":24}\n{"Width":1', b'00,"Height":30}\n') == [
        TerminalSize(80, 24), TerminalSize(100, 30)]
    assert await sizes(b'{"Width":80,', b'"Height":24}{"Height":5}') == [TerminalSize(80, 24), TerminalSize(0, 5)]


async def test_malformed_resize_ends_resize_handling() -> None:
    assert await sizes(b'{"Width":80,"Height":24}', b'{"Width":-1,"Height":5}', b'{"Width":9,"Height":9}') == [
        TerminalSize(80, 24)]
    assert await sizes(b'["not", "a", "size"]', b'{"Width":9,"Height":9}') == []
    assert await sizes(b"x" * 5000, b'{"Width":9,"Height":9}') == []
    assert await sizes(b"[" * 3000 + b"]" * 3000, b'{"Width":9,"Height":9}') == []  # too deep to decode


def stream(headers: dict[str, str], stream_id: int = 1) -> SpdyStream:
    frame = SynStreamFrame(stream_id=stream_id, headers={k: (v,) for k, v in headers.items()})
    return SpdyStream(None, frame)  # type: ignore[arg-type]  # header checks need no session


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ({"streamtype": "data", "port": "8080"}, None),
        ({"streamtype": "error", "port": "1"}, None),
        ({"streamtype": "data"}, '"port" header is required'),
        ({"streamtype": "data", "port": "http"}, 'unable to parse "http" as a port'),
        ({"streamtype": "data", "port": "65536"}, 'unable to parse "65536" as a port'),
        ({"streamtype": "data", "port": "0"}, 'port "0" must be > 0'),
        ({"port": "80"}, '"streamType" header is required'),
        ({"streamtype": "stdin", "port": "80"}, 'invalid stream type "stdin"'),
    ],
)
def test_port_forward_stream_checks(headers: dict[str, str], refusal: str | None) -> None:
    assert accept_stream(stream(headers)) == refusal


async def test_inbound_buffer_signals_when_full_and_drained() -> None:
    buffer = InboundBuffer(limit=10)
    buffer.feed(b"12345")
    assert not buffer.full()
    buffer.feed(b"67890")
    assert buffer.full()
    assert await buffer.read() == b"12345"
    assert not buffer.full()
    buffer.end()
    buffer.feed(b"ignored after the end")
    assert (await buffer.read(), await buffer.read()) == (b"67890", b"")


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_status_like_a_container_runtime(returncode: int, status: int) -> None:
    assert exit_status_of(returncode) == status


def test_pod_names_are_validated_before_becoming_paths(tmp_path: Any) -> None:
    assert PodRef.of({"metadata": {"namespace": "dev", "name": "web-1.a", "uid": "u"}}) == PodRef("dev", "web-1.a", "u")
    for metadata in ({"namespace": "..", "name": "x"}, {"namespace": "dev", "name": "../../etc"}, {}):
        with pytest.raises(PodRuntimeError):
            PodRef.of({"metadata": metadata})
    with pytest.raises(PodRuntimeError, match="not a valid container name"):
        PodRuntime(tmp_path).container_dir(PodRef("dev", "web", "u"), "../escape")


def test_environment_is_minimal_with_literal_container_values(tmp_path: Any) -> None:
    container = {"name": "main", "env": [
        {"name": "LITERAL", "value": "yes"},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "BAD=NAME", "value": "x"},
        {"name": "HOSTNAME", "value": "overridden by the runtime"},
    ]}
    env = PodRuntime.environment(PodRef("dev", "web", "u"), container, home=tmp_path, tty=True)
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
                   "LITERAL": "yes", "HOSTNAME": "web", "TERM": "xterm"}


def test_declared_ports_are_tcp_container_ports() -> None:
    pod = {"spec": {"containers": [
        {"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]},
        {"name": "b", "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": "x"}]},
    ]}}
    assert declared_ports(pod) == {80, 8080}


async def test_attached_client_gets_output_then_the_end() -> None:
    attachment = Attachment(None)  # type: ignore[arg-type]  # output delivery needs no process
    attachment.offer("stdout", b"a")
    attachment.offer("stderr", b"b")
    attachment.end()
    attachment.offer("stdout", b"after the end")
    assert [await attachment.next() for _ in range(3)] == [("stdout", b"a"), ("stderr", b"b"), None]
    assert not attachment.overflowed


async def test_attached_client_that_falls_behind_is_cut_off() -> None:
    attachment = Attachment(None)  # type: ignore[arg-type]
    for _ in range(ATTACH_QUEUE_CHUNKS + 1):
        attachment.offer("stdout", b"x")
    assert attachment.overflowed
    assert await attachment.next() is None  # buffered output dropped: memory stays bounded
