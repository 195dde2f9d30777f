"""Kubernetes channel protocols over websocket, server side: subprotocol negotiation and (de)multiplexing.

Every message carries one stream: its first byte is the channel number (exec/attach: 0 stdin,
1 stdout, 2 stderr, 3 error/status, 4 resize; port-forward: 2i data and 2i+1 error of the i-th
port). The `base64` variants send text messages whose first character is '0'+channel and whose
rest is base64. `v5.channel.k8s.io` adds the close signal [255, channel]: the client's half-close
of a stream (stdin EOF).

Which subprotocols are accepted follows kube-apiserver 1.30+: a request offering
`v5.channel.k8s.io` is served by the apiserver's own translator (v5 only); any other websocket
request is proxied to the kubelet, which offers "", `channel.k8s.io`, `base64.channel.k8s.io`,
`v4.channel.k8s.io` and `v4.base64.channel.k8s.io` for exec/attach and "", `v4.channel.k8s.io`,
`v4.base64.channel.k8s.io` for port-forward, picking the first the client lists. Nothing in common
is refused with 403, as the kubelet's websocket handshake does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from sandbox.apiserver.pipes import ClientGone, InboundBuffer

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
PORTFORWARD_TUNNEL = SPDY_TUNNEL_PREFIX + "portforward.k8s.io"

STREAM_CLOSE = 255  # v5: [255, channel] half-closes `channel`

KUBELET_EXEC_PROTOCOLS = ("", V1, V1_BASE64, V4, V4_BASE64)
KUBELET_PORTFORWARD_PROTOCOLS = ("", V4, V4_BASE64)


class ChannelProtocolError(Exception):
    """The client broke the channel protocol badly enough that the connection must end."""


@dataclass(frozen=True, slots=True)
class ChannelProtocol:
    """A negotiated channel subprotocol and what it implies."""

    name: str  # "" when the client asked for no subprotocol

    @property
    def base64(self) -> bool:
        return self.name in (V1_BASE64, V4_BASE64)

    @property
    def stream_close(self) -> bool:
        return self.name == V5

    @property
    def json_status(self) -> bool:
        """v4 and v5 report the outcome as a metav1.Status; older ones as plain text, on failure only."""
        return self.name in (V5, V4, V4_BASE64)


def requested_protocols(headers: Mapping[str, str] | Iterable[str]) -> list[str]:
    """The subprotocols a websocket request offers, in its order (all Sec-WebSocket-Protocol lines)."""
    lines = headers.getall("Sec-WebSocket-Protocol", []) if hasattr(headers, "getall") else list(headers)
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def _first_supported(requested: list[str], supported: tuple[str, ...]) -> ChannelProtocol | None:
    for name in requested or [""]:
        if name in supported:
            return ChannelProtocol(name)
    return None


def negotiate_exec(requested: list[str]) -> ChannelProtocol | None:
    """The subprotocol for exec/attach, or None when the server supports none of those offered."""
    if V5 in requested:
        return ChannelProtocol(V5)
    return _first_supported(requested, KUBELET_EXEC_PROTOCOLS)


def negotiate_portforward(requested: list[str]) -> ChannelProtocol | None:
    """The channel subprotocol for port-forward (the SPDY tunnel is negotiated separately)."""
    return _first_supported(requested, KUBELET_PORTFORWARD_PROTOCOLS)


def encode(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    if protocol.base64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes((channel,)) + data


def decode(protocol: ChannelProtocol, message: bytes) -> tuple[int, bytes | None] | None:
    """(channel, data) for data, (channel, None) for a v5 close signal, None for a message to ignore.

    Ignored, as the kubelet ignores them: empty messages and base64 that does not decode.
    """
    if not message:
        return None
    if protocol.stream_close and message[0] == STREAM_CLOSE:
        if len(message) != 2:
            raise ChannelProtocolError(
                f"a close signal carries exactly one channel byte, got {len(message) - 1} bytes"
            )
        return message[1], None
    if protocol.base64:
        try:
            return message[0] - ord("0"), base64.b64decode(message[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
    return message[0], message[1:]


class ChannelOutput:
    """Writes one channel's data to the websocket (a `ByteSink`)."""

    def __init__(self, channels: WebSocketChannels, channel: int) -> None:
        self._channels = channels
        self._channel = channel

    async def write(self, data: bytes) -> None:
        await self._channels.send(self._channel, data)

    async def close(self) -> None:
        # The server has no way to half-close a channel: the end is the websocket's close.
        return


class WebSocketChannels:
    """Demultiplexes an accepted websocket: one InboundBuffer per readable channel, writes per channel."""

    def __init__(self, ws: web.WebSocketResponse, protocol: ChannelProtocol, readable: Iterable[int]) -> None:
        self._ws = ws
        self.protocol = protocol
        self._inbound = {channel: InboundBuffer() for channel in readable}

    def inbound(self, channel: int) -> InboundBuffer:
        return self._inbound[channel]

    def output(self, channel: int) -> ChannelOutput:
        return ChannelOutput(self, channel)

    async def send(self, channel: int, data: bytes) -> None:
        if self._ws.closed:
            raise ClientGone("the websocket is closed")
        message = encode(self.protocol, channel, data)
        try:
            if isinstance(message, str):
                await self._ws.send_str(message)
            else:
                await self._ws.send_bytes(message)
        except ConnectionError as exc:
            raise ClientGone(str(exc)) from exc

    async def run(self) -> None:
        """Read messages until the client closes or goes away; then every inbound channel ends."""
        try:
            while not self._ws.closed:
                message = await self._ws.receive()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                data = message.data if isinstance(message.data, bytes) else message.data.encode()
                decoded = decode(self.protocol, data)
                if decoded is None:
                    continue
                channel, payload = decoded
                buffer = self._inbound.get(channel)
                if buffer is None:
                    continue  # a channel the session does not read: the kubelet drops these too
                if payload is None:
                    buffer.end()
                    continue
                buffer.feed(payload)
                # Stop reading the socket while a stream is full: TCP then slows the client down.
                await buffer.wait_for_room()
        finally:
            for buffer in self._inbound.values():
                buffer.end()

    async def finish(self, reader: asyncio.Task[None], *, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        """Close the websocket after everything written so far; `reader` is the task running `run()`."""
        await close_websocket(self._ws, reader, code=code, message=message)


async def close_websocket(ws: web.WebSocketResponse, reader: asyncio.Task[None], *, code: int = WSCloseCode.OK,
                          message: bytes = b"") -> None:
    """Stop `reader`, then close: send the close frame and wait (bounded) for the client's.

    aiohttp's close() does not wait for the client's close frame while another task is receiving;
    closing the socket with the client still sending could reset it before it has read our output.
    """
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    if not ws.closed:
        await ws.close(code=code, message=message)


def websocket_response(protocol_name: str) -> web.WebSocketResponse:
    """An aiohttp websocket answering with exactly `protocol_name` (nothing when it is "")."""
    # compress=False keeps every message's bytes in order with no executor round-trip in between.
    return web.WebSocketResponse(protocols=(protocol_name,) if protocol_name else (), compress=False,
                                 autoping=True, max_msg_size=4 << 20)

