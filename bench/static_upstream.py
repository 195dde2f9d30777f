"""The bench's minimal HTTPS upstream: answers from memory so that the proxies in front of it are what is measured.

It answers a `GET` with a fixed pod list, an exec upgrade (websocket, `v5.channel.k8s.io` framing)
with a stdout stream of a given size, and a `?watch=1` with a chunked response held open. A plain TCP
control port on 127.0.0.1 drives the watches: each `event` line writes one watch event, stamped with
`time.monotonic_ns()` (CLOCK_MONOTONIC, the same clock in every process on the machine), to every
open watch, so a client can tell how long the event took to reach it; an `end` line ends every
watch as a complete response. Hand-written on asyncio protocols, not a web framework: a framework's
own cost would be part of the "direct" figure, the limit the proxies are compared with.

    python -m bench.proxy upstream CERT KEY PORT_FILE EXEC_BYTES   (run by bench.proxy)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import time
from pathlib import Path

FRAME = 64 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WATCH_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
SENT_MARK = b'"sent-ns":"'


def pod_list(count: int = 50) -> bytes:
    items = []
    for i in range(count):
        items.append(
            {
                "metadata": {
                    "name": f"web-{i:03d}-7c9d8f6b5-x{i:04d}",
                    "namespace": "default",
                    "uid": f"6f1c2d3e-0000-4000-8000-{i:012d}",
                    "resourceVersion": str(1000 + i),
                    "labels": {"app": "web", "pod-template-hash": "7c9d8f6b5"},
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.example.com/web:1.2.3",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ],
                    "nodeName": f"ip-10-0-{i % 4}-{i}.eu-west-1.compute.internal",
                    "serviceAccountName": "web",
                },
                "status": {
                    "phase": "Running",
                    "podIP": f"10.0.{i % 4}.{i}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    return json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1050"},
                       "items": items}).encode()  # fmt: skip


def watch_event(sequence: int) -> bytes:
    """One chunk of a watch stream: a MODIFIED pod stamped with the time it was written."""
    line = (
        b'{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web",'
        b'"namespace":"default","resourceVersion":"%d","annotations":{"sent-ns":"%d"}}}}\n'
        % (2000 + sequence, time.monotonic_ns())
    )
    return b"%x\r\n%s\r\n" % (len(line), line)


class StaticUpstream(asyncio.Protocol):
    def __init__(self, body: bytes, exec_bytes: int, watches: set[asyncio.Transport]):
        self.list_response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        self.exec_bytes = exec_bytes
        self.watches = watches
        self.buffer = b""
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.watches.discard(self.transport)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            if headers.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest())  # noqa: S324 - RFC 6455
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
                )
                asyncio.ensure_future(self._stream_stdout())  # noqa: RUF006 - ends with the connection
                return
            if "watch=1" in lines[0] or "watch=true" in lines[0]:
                self.transport.write(WATCH_HEAD)
                self.watches.add(self.transport)
                return
            self.transport.write(self.list_response)

    async def _stream_stdout(self) -> None:
        payload = b"\x01" + b"y\n" * ((FRAME - 1) // 2)  # channel 1 (stdout), as v5.channel.k8s.io frames it
        frame = b"\x82\x7f" + len(payload).to_bytes(8, "big") + payload
        sent = 0
        while sent < self.exec_bytes and not self.transport.is_closing():
            self.transport.write(frame)
            sent += len(payload) - 1
            if not self.can_write.is_set():
                await self.can_write.wait()
        self.transport.write(b"\x88\x02\x03\xe8")  # close frame, 1000
        self.transport.close()


class WatchControl(asyncio.Protocol):
    """`event` fans one event out to every open watch; `end` ends them all. Answers `ok N` (watches reached)."""

    def __init__(self, watches: set[asyncio.Transport]):
        self.watches = watches
        self.sequence = 0
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            command, self.buffer = self.buffer.split(b"\n", 1)
            reached = list(self.watches)
            if command == b"event":
                self.sequence += 1
                chunk = watch_event(self.sequence)
                for transport in reached:
                    transport.write(chunk)
            elif command == b"end":
                for transport in reached:
                    transport.write(b"0\r\n\r\n")
                    transport.close()
                self.watches.clear()
            self.transport.write(b"ok %d\n" % len(reached))


async def serve(cert: str, key: str, port_file: str, exec_bytes: int) -> None:
    """Serve until killed; PORT_FILE gets `<https port> <control port>`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    body = pod_list()
    watches: set[asyncio.Transport] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StaticUpstream(body, exec_bytes, watches), "127.0.0.1", 0,
                                      ssl=context, backlog=4096)  # fmt: skip
    control = await loop.create_server(lambda: WatchControl(watches), "127.0.0.1", 0)
    ports = f"{server.sockets[0].getsockname()[1]} {control.sockets[0].getsockname()[1]}"
    await asyncio.to_thread(Path(port_file).write_text, ports)
    await asyncio.Event().wait()
