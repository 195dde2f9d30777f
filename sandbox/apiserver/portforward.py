"""pods/portforward: bytes between the client and a port of the pod, over SPDY or websocket channels.

Three ways in, as with a real kube-apiserver and kubelet:
- SPDY/3.1 (`X-Stream-Protocol-Version: portforward.k8s.io`, kubectl < 1.31 or with websockets
  off): per local connection the client opens an `error` and a `data` stream carrying the same
  `port` and `requestid` headers; once both are there the server connects to the port and copies.
- The same SPDY session tunnelled through websocket binary messages
  (`SPDY/3.1+portforward.k8s.io`, kubectl >= 1.31).
- websocket channels (`v4.channel.k8s.io`, the Python client): ports from the `ports` query,
  channel 2i carries data and 2i+1 errors for the i-th port, and the server first sends each
  channel the port number (2 bytes, little endian).
A failure is reported on the error stream in the kubelet's words and ends that forwarding only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Sequence
from typing import Any

from aiohttp import WSCloseCode, web

from connector.kube.channels import ChannelProtocol
from sandbox.apiserver.channels import PORTFORWARD_TUNNEL, WebSocketChannels, websocket_response
from sandbox.apiserver.pipes import ByteSink, ByteSource, ClientGone
from sandbox.apiserver.processes import READ_CHUNK
from sandbox.apiserver.runtime import PodRuntime, PodRuntimeError
from sandbox.apiserver.spdy_server import SpdySession, SpdyStream, accept_tunnel, accept_upgrade

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's default wait for the second stream of a pair


async def forward(runtime: PodRuntime, pod: dict[str, Any], port: int, inbound: ByteSource,
                  outbound: ByteSink) -> str | None:
    """Copy between the client's stream and the pod's port until the pod side closes.

    The client's end of input half-closes the pod connection; the pod's end of output ends the
    forwarding. Returns the error to report, or None.
    """
    try:
        reader, writer = await runtime.open_port(pod, port)
    except PodRuntimeError as exc:
        uid = (pod.get("metadata") or {}).get("uid", "")
        return f"error forwarding port {port} to pod {uid}, uid : {exc}"

    async def upstream() -> None:
        while data := await inbound.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sending = asyncio.create_task(upstream())
    try:
        while chunk := await reader.read(READ_CHUNK):
            await outbound.write(chunk)
    except ClientGone:
        pass
    except ConnectionError as exc:
        return f"error forwarding port {port} to pod: {exc}"
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
    return None


async def serve_upgraded(request: web.Request, version: str, runtime: PodRuntime,
                         pod: dict[str, Any]) -> web.StreamResponse:
    """Port-forward over SPDY/3.1 on the upgraded HTTP connection; returns the 101 response."""
    connection = await accept_upgrade(request, version, accept_stream)
    try:
        await serve_spdy(connection.session, runtime, pod)
    finally:
        await connection.close(grace=0)
    return connection.response


async def serve_tunnel(request: web.Request, runtime: PodRuntime, pod: dict[str, Any]) -> web.WebSocketResponse:
    """Port-forward over SPDY/3.1 tunnelled in websocket binary messages (SPDY/3.1+portforward.k8s.io)."""
    ws = websocket_response(PORTFORWARD_TUNNEL)
    await ws.prepare(request)
    tunnel = accept_tunnel(ws, accept_stream)
    try:
        await serve_spdy(tunnel.session, runtime, pod)
    finally:
        await tunnel.close()
    return ws


def accept_stream(stream: SpdyStream) -> str | None:
    """The kubelet's checks on a new port-forward stream; a message refuses (resets) the stream."""
    port = stream.header("port")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or int(port) > 0xFFFF:
        return f'unable to parse "{port}" as a port'
    if int(port) < 1:
        return f'port "{port}" must be > 0'
    kind = stream.header("streamtype")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"'
    return None


class _Pair:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.streams: dict[str, SpdyStream] = {}
        self.complete = asyncio.Event()


def _request_id(stream: SpdyStream) -> str:
    request_id = stream.header("requestid")
    if request_id:
        return request_id
    # Clients older than request ids: pair an error stream N with the data stream N+2, as the kubelet does.
    return str(stream.stream_id if stream.header("streamtype") == "error" else stream.stream_id - 2)


async def serve_spdy(session: SpdySession, runtime: PodRuntime, pod: dict[str, Any]) -> None:
    """Forward every stream pair of the session until the client goes away."""
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def expire(pair: _Pair) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pair.complete.wait(), STREAM_CREATION_TIMEOUT)
        if not pair.complete.is_set():
            await _report(pair.streams.get("error"), f"timed out waiting for streams of request {pair.request_id}")
        pairs.pop(pair.request_id, None)

    async def run(pair: _Pair) -> None:
        data, error = pair.streams["data"], pair.streams["error"]
        port = int(data.header("port") or 0)
        message = await forward(runtime, pod, port, data, data)
        if message is not None:
            log.info("port-forward: %s", message)
            await _report(error, message)
        with contextlib.suppress(ClientGone):
            await data.close()
            await error.close()
        # Like the kubelet's RemoveStreams: data the client still sends must not pile up unread.
        data.discard()
        error.discard()

    async with runtime.session():
        ended = asyncio.create_task(_first(session.closed.wait(), runtime.stopping.wait()))
        try:
            while True:
                arrival = asyncio.create_task(session.new_streams.get())
                await asyncio.wait({arrival, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not arrival.done():
                    arrival.cancel()
                    return
                stream = arrival.result()
                request_id = _request_id(stream)
                pair = pairs.get(request_id)
                if pair is None:
                    pair = pairs[request_id] = _Pair(request_id)
                    spawn(expire(pair))
                kind = stream.header("streamtype") or ""
                if kind in pair.streams:
                    await _report(pair.streams.get("error"),
                                  f"error processing stream for request {request_id}: {kind} stream already assigned")
                    continue
                pair.streams[kind] = stream
                if len(pair.streams) == 2:
                    pair.complete.set()
                    spawn(run(pair))
        finally:
            ended.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(ended, *tasks, return_exceptions=True)


async def _first(*waits: Awaitable[object]) -> None:
    """Return as soon as one of `waits` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _report(error_stream: SpdyStream | None, message: str) -> None:
    if error_stream is not None:
        with contextlib.suppress(ClientGone):
            await error_stream.write(message.encode())


def parse_ports(values: Sequence[str]) -> tuple[int, ...]:
    """The websocket `ports` query: repeated and/or comma-separated; raises ValueError in the kubelet's words."""
    if not values:
        raise ValueError('query parameter "port" is required')
    ports = []
    for value in values:
        if not value:
            raise ValueError('query parameter "port" cannot be empty')
        for item in value.split(","):
            if not item.isdigit() or int(item) > 0xFFFF:
                raise ValueError(f'unable to parse "{value}" as a port')
            if int(item) < 1:
                raise ValueError(f'port "{value}" must be > 0')
            ports.append(int(item))
    return tuple(ports)


async def serve_channels(request: web.Request, protocol: ChannelProtocol, runtime: PodRuntime,
                         pod: dict[str, Any], ports: Sequence[int]) -> web.WebSocketResponse:
    """Port-forward over websocket channels (see the module docstring); returns the websocket response."""
    ws = websocket_response(protocol.name)
    async with runtime.session():
        await ws.prepare(request)
        channels = WebSocketChannels(ws, protocol, readable={2 * index for index in range(len(ports))})
        try:
            for index, port in enumerate(ports):
                prefix = struct.pack("<H", port)
                await channels.send(2 * index, prefix)
                await channels.send(2 * index + 1, prefix)
        except ClientGone:
            return ws

        async def one(index: int, port: int) -> None:
            message = await forward(runtime, pod, port, channels.inbound(2 * index), channels.output(2 * index))
            if message is not None:
                log.info("port-forward: %s", message)
                with contextlib.suppress(ClientGone):
                    await channels.send(2 * index + 1, message.encode())

        reader = asyncio.create_task(channels.run())
        forwards = asyncio.gather(*(one(index, port) for index, port in enumerate(ports)))
        stopping = asyncio.create_task(runtime.stopping.wait())
        try:
            await asyncio.wait({reader, forwards, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                code = WSCloseCode.GOING_AWAY if stopping.done() else WSCloseCode.OK
                with contextlib.suppress(ClientGone):
                    await channels.finish(reader, code=code)
        finally:
            for task in (forwards, reader, stopping):
                task.cancel()
            await asyncio.gather(forwards, reader, stopping, return_exceptions=True)
    return ws
