"""A Kubernetes-shaped upstream for the proxy tests: lists, watches, logs -f, writes, exec upgrades.

It is the `handler` of tests.support.https_server.RecordingHttpsServer, so every request it gets is
recorded (tests assert "the upstream saw no request" on `server.requests`). `UpstreamControl` lets a
test hold a watch or a log stream open after its first chunk, to prove the proxy flushes at once.

Routes (under any path; matched on the last segments):
  .../pods                 list (gzip when the client accepts it); `?watch=1|true` a watch stream
  .../pods/NAME/log        `?follow=true` streams lines until released
  .../pods/NAME/exec|attach|portforward
                           websocket (echo, subprotocols v5/v4/channel.k8s.io) or SPDY/3.1 (raw echo
                           after the 101); `?refuse=1` answers 403 instead of switching
  /api                     APIVersions naming the cluster's address (gzip when the client accepts it)
  /redirect                302 to /elsewhere
  /slow                    answers when released (timeouts)
  /broken                  starts a chunked body and drops the connection
  POST/PUT/PATCH anything  201/200 echoing the body
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from connector.kube.status import status_json

WEBSOCKET_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io", "SPDY/3.1+portforward.k8s.io")


def pod(name: str, namespace: str = "default") -> dict:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "status": {"phase": "Running"},
    }


def pod_list(count: int) -> dict:
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": [pod(f"pod-{i}") for i in range(count)],
    }


@dataclass
class UpstreamControl:
    """Knobs a test turns: release held streams, see when a stream was closed by the other side."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    list_size: int = 3


class _Echo(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, done: asyncio.Event):
        self.transport = transport
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


CLUSTER_ADDRESS = "10.0.0.1:6443"


def _core_discovery(request: web.Request) -> web.Response:
    doc = {"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": CLUSTER_ADDRESS}]}  # fmt: skip
    body = json.dumps(doc).encode()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=gzip.compress(body), headers=headers)
    return web.Response(body=body, content_type="application/json")


def make_handler(control: UpstreamControl):
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if path == "/api":
            return _core_discovery(request)
        if path == "/healthz":
            return web.Response(text="ok")
        if path.endswith("/redirect"):
            raise web.HTTPFound("/elsewhere")
        if path.endswith("/slow"):
            await asyncio.wait_for(control.release.wait(), 30)
            return web.json_response({})
        if path.endswith("/broken"):
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"partial":')
            assert request.transport is not None
            request.transport.close()
            return response
        if last in ("exec", "attach", "portforward"):
            return await _upgrade(request, control)
        if request.method in ("POST", "PUT", "PATCH"):
            body = await request.read()
            return web.Response(
                status=201 if request.method == "POST" else 200, body=body, content_type="application/json"
            )
        if last == "log":
            return await _log(request, control)
        if last == "pods" and request.query.get("watch") in ("1", "true"):
            return await _watch(request, control)
        if last == "pods":
            body = json.dumps(pod_list(control.list_size)).encode()
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                return web.Response(
                    body=gzip.compress(body),
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json", "Audit-Id": "a-1"},
                )
            return web.Response(body=body, content_type="application/json", headers={"Audit-Id": "a-1"})
        return web.Response(
            status=404, body=status_json(404, f"not found: {request.path}"), content_type="application/json"
        )

    return handler


async def _released_or_disconnected(request: web.Request, control: UpstreamControl) -> bool:
    """Wait for the test to release the stream (True) or for the client to go away (False).

    aiohttp tells a handler about a disconnect only when it writes, so the transport is watched.
    """
    while not control.release.is_set():
        if request.transport is None or request.transport.is_closing():
            return False
        await asyncio.sleep(0.02)
    return True


async def _held_stream(request: web.Request, control: UpstreamControl, first: bytes, last: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(first)
        if not await _released_or_disconnected(request, control):
            control.stream_closed.set()
            return response
        await response.write(last)
        await response.write_eof()
    except ConnectionError:
        control.stream_closed.set()
    return response


async def _watch(request: web.Request, control: UpstreamControl) -> web.StreamResponse:
    added = json.dumps({"type": "ADDED", "object": pod("first")}).encode() + b"\n"
    modified = json.dumps({"type": "MODIFIED", "object": pod("first")}).encode() + b"\n"
    return await _held_stream(request, control, added, modified)


async def _log(request: web.Request, control: UpstreamControl) -> web.StreamResponse:
    if request.query.get("follow") != "true":
        return web.Response(text="line 1\nline 2\n")
    return await _held_stream(request, control, b"line 1\n", b"line 2\n")


async def _upgrade(request: web.Request, control: UpstreamControl) -> web.StreamResponse:
    if request.query.get("refuse") == "1":
        return web.Response(
            status=403,
            body=status_json(403, "pods/exec is forbidden by the cluster"),
            content_type="application/json",
        )
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse(protocols=WEBSOCKET_PROTOCOLS)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        control.stream_closed.set()
        return ws
    response = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"},
    )
    await response.prepare(request)
    transport = request.transport
    assert transport is not None
    done = asyncio.Event()
    transport.set_protocol(_Echo(transport, done))
    await done.wait()
    control.stream_closed.set()
    response.force_close()
    return response
