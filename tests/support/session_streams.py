"""Hand-built exec/attach byte streams, both directions, as kubectl and a Kubernetes server send them.

Used by the tap, recording and sessions CLI tests: websocket with a channel protocol (client frames
masked, server frames not) and SPDY/3.1 (one stream per channel, opened by the client).
"""

from __future__ import annotations

import itertools
import json

from connector.kube.channels import ChannelProtocol, TerminalSize, encode_close_stream, encode_message
from connector.kube.channels import encode_terminal_size as resize_json
from connector.kube.spdy import (
    FLAG_FIN,
    DataFrame,
    GoAwayFrame,
    SpdyFrameWriter,
    SynReplyFrame,
    SynStreamFrame,
)
from connector.kube.status import status_body
from connector.kube.websocket_frames import Opcode, encode_close_payload, encode_frame

MASK = b"\x11\x22\x33\x44"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given points (taken modulo its length): for property tests on split input."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def exit_status(code: int) -> bytes:
    """The v4+ error channel content for a command that exited with `code`, as the kubelet writes it."""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    body = status_body(
        500,
        f"command terminated with non-zero exit code: error executing command, exit code {code}",
        reason="NonZeroExitCode",
        details={"causes": [{"reason": "ExitCode", "message": str(code)}]},
    )
    return json.dumps(body).encode()


def ws_client(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes:
    return encode_frame(Opcode.BINARY, encode_message(protocol, channel, data), mask_key=MASK)


def ws_client_close_stream(protocol: ChannelProtocol, channel: int) -> bytes:
    return encode_frame(Opcode.BINARY, encode_close_stream(protocol, channel), mask_key=MASK)


def ws_client_resize(protocol: ChannelProtocol, width: int, height: int) -> bytes:
    return ws_client(protocol, 4, resize_json(TerminalSize(width, height)))


def ws_server(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes:
    opcode = Opcode.TEXT if protocol.base64 else Opcode.BINARY
    return encode_frame(opcode, encode_message(protocol, channel, data))


def ws_server_close() -> bytes:
    return encode_frame(Opcode.CLOSE, encode_close_payload(1000))


def ws_client_close() -> bytes:
    return encode_frame(Opcode.CLOSE, encode_close_payload(1000), mask_key=MASK)


class SpdyExec:
    """Both directions of a SPDY exec session, built frame by frame with the real codec."""

    def __init__(self) -> None:
        self._client = SpdyFrameWriter()
        self._server = SpdyFrameWriter()
        self.ids: dict[str, int] = {}

    def open(self, *kinds: str) -> tuple[bytes, bytes]:
        """The client's SYN_STREAMs for `kinds` and the server's SYN_REPLYs."""
        client, server = b"", b""
        for kind in kinds:
            stream_id = 2 * len(self.ids) + 1
            self.ids[kind] = stream_id
            client += self._client.encode(SynStreamFrame(stream_id, {"streamtype": (kind,)}))
            server += self._server.encode(SynReplyFrame(stream_id, {}))
        return client, server

    def client_data(self, kind: str, data: bytes, *, fin: bool = False) -> bytes:
        return self._client.encode(DataFrame(self.ids[kind], data, FLAG_FIN if fin else 0))

    def server_data(self, kind: str, data: bytes, *, fin: bool = False) -> bytes:
        return self._server.encode(DataFrame(self.ids[kind], data, FLAG_FIN if fin else 0))

    def server_goaway(self) -> bytes:
        return self._server.encode(GoAwayFrame(max(self.ids.values(), default=0)))
