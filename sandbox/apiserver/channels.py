"""Kubernetes channel protocols over websocket, server side: subprotocol negotiation and the channel socket.

The framing itself (channel bytes, the base64 variants, v5's close signal [255, channel], the
client's half-close of a stream) is connector.kube.channels'; this module adds what only the
server does: choosing the subprotocol, reading and writing the channels of an accepted aiohttp
websocket, and how a server treats a message that breaks the protocol.

Which subprotocols are accepted follows kube-apiserver 1.30+: a request offering
`v5.channel.k8s.io` is served by the apiserver's own translator (v5 only); any other websocket
request is proxied to the kubelet, which offers "", `channel.k8s.io`, `base64.channel.k8s.io`,
`v4.channel.k8s.io` and `v4.base64.channel.k8s.io` for exec/attach and "", `v4.channel.k8s.io`,
`v4.base64.channel.k8s.io` for port-forward, picking the first the client lists. Nothing in common
is refused with 403, as the kubelet's websocket handshake does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiohttp import WSCloseCode, WSMsgType, web

from connector.kube.channels import (
    CLOSE_STREAM,
    PROTOCOLS,
    ChannelClose,
    ChannelData,
    ChannelMessageError,
    ChannelProtocol,
    decode_message,
    encode_message,
)
from sandbox.apiserver.pipes import ClientGone, InboundBuffer

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
PORTFORWARD_TUNNEL = SPDY_TUNNEL_PREFIX + "portforward.k8s.io"

KUBELET_EXEC_PROTOCOLS = ("", V1, V1_BASE64, V4, V4_BASE64)
KUBELET_PORTFORWARD_PROTOCOLS = ("", V4, V4_BASE64)


class ChannelProtocolError(Exception):
    """The client broke the channel protocol badly enough that the connection must end."""


def requested_protocols(headers: Mapping[str, str] | Iterable[str]) -> list[str]:
    """The subprotocols a websocket request offers, in its order (all Sec-WebSocket-Protocol lines)."""
    lines = headers.getall("Sec-WebSocket-Protocol", []) if hasattr(headers, "getall") else list(headers)
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def _first_supported(requested: list[str], supported: tuple[str, ...]) -> ChannelProtocol | None:
    for name in requested or [""]:
        if name in supported:
            return PROTOCOLS[name]
    return None


def negotiate_exec(requested: list[str], *, kubelet: bool = False) -> ChannelProtocol | None:
    """The subprotocol for exec/attach, or None when the server supports none of those offered.

    v5 (stdin close) is what kube-apiserver ≥ 1.30 speaks to clients; a kubelet, which the 1.29
    apiserver hands websocket upgrades to as they are, knows only the older ones."""
    if V5 in requested and not kubelet:
        return PROTOCOLS[V5]
    return _first_supported(requested, KUBELET_EXEC_PROTOCOLS)


def negotiate_portforward(requested: list[str]) -> ChannelProtocol | None:
    """The channel subprotocol for port-forward (the SPDY tunnel is negotiated separately)."""
    return _first_supported(requested, KUBELET_PORTFORWARD_PROTOCOLS)


def decode(protocol: ChannelProtocol, message: bytes) -> ChannelData | ChannelClose | None:
    """A client message as the server takes it: None for one it ignores (empty, or base64 that does
    not decode, which the kubelet drops alone); a malformed v5 close signal ends the connection, as
    in kube-apiserver's wsstream, so it raises ChannelProtocolError."""
    try:
        return decode_message(protocol, message)
    except ChannelMessageError as exc:
        if protocol.has_close_signal and message[0] == CLOSE_STREAM:
            raise ChannelProtocolError(str(exc)) from None
        return None


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
        message = encode_message(self.protocol, channel, data)
        try:
            if self.protocol.base64:  # base64 protocols send text messages
                await self._ws.send_str(message.decode("ascii"))
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
                buffer = self._inbound.get(decoded.channel)
                if buffer is None:
                    continue  # a channel the session does not read: the kubelet drops these too
                if isinstance(decoded, ChannelClose):
                    buffer.end()
                    continue
                buffer.feed(decoded.data)
                # Stop reading the socket while a stream is full: TCP then slows the client down.
                await buffer.wait_for_room()
        finally:
            for buffer in self._inbound.values():
                buffer.end()

    async def finish(self, reader: asyncio.Task[None], *, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        """Close the websocket after everything written so far; `reader` is the task running `run()`."""
        await close_websocket(self._ws, reader, code=code, message=message)


CLOSE_HANDSHAKE_SECONDS = 1.0


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
    # timeout bounds the wait for the client's close frame: kube-apiserver writes its close frame and
    # closes the connection; waiting aiohttp's default 10 s stalls clients that never answer it
    # (the Python kubernetes client, kubernetes-client/python#2414).
    return web.WebSocketResponse(protocols=(protocol_name,) if protocol_name else (), compress=False,
                                 autoping=True, max_msg_size=4 << 20, timeout=CLOSE_HANDSHAKE_SECONDS)

