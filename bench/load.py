"""The bench's load generator: lean HTTP/1.1 clients on asyncio protocols, in the bench's own process.

Lean on purpose (no client library): the generator's own cost shares the machine with what it
measures, so it should be as small as the upstream's. Three loads:
- `measure_gets`: N keep-alive connections, each sending one GET at a time for a fixed time;
  requests per second, p50/p99 latency, and the CPU the proxy used per request;
- `measure_exec`: one exec session (websocket) whose stdout volume is fixed; MB/s;
- `measure_watches`: N concurrent `?watch=1` streams held open, the proxy's resident memory per open
  watch, and how long one event fanned out by the upstream takes to reach all of them (p50/p99).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import process_usage
from bench.static_upstream import SENT_MARK

PODS_PATH = "/api/v1/namespaces/default/pods"
EXEC_PATH = "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=yes&stdout=true"
WATCH_PATH = "/api/v1/namespaces/default/pods?watch=1"
CONNECTS_IN_FLIGHT = 256  # TLS handshakes started at once while opening thousands of watches
EVENTS_PER_LEVEL = 3


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    prefix: str
    tls: ssl.SSLContext | None
    headers: bytes
    pid: int | None = None  # the proxy's process, charged for CPU and memory; None for the upstream itself


class _Client(asyncio.Protocol):
    """One keep-alive connection sending one GET at a time, reading Content-Length or chunked bodies."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            done = end + 4 + length if len(self.buffer) >= end + 4 + length else -1
        elif b"transfer-encoding: chunked" in head:
            done = self._chunked_end(end + 4)
        else:
            done = end + 4
        if done >= 0:
            status = int(head[9:12])
            del self.buffer[:done]
            self.waiter.set_result(status)
            self.waiter = None

    def _chunked_end(self, at: int) -> int:
        """Where the chunked body starting at `at` ends, or -1 while it is incomplete."""
        while True:
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                return -1
            size = int(bytes(self.buffer[at:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n", line_end + 2)
                return trailer_end + 2 if trailer_end >= 0 else -1
            at = line_end + 2 + size + 2
            if len(self.buffer) < at:
                return -1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def get(self, request: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def _connect(target: Target, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
    _, protocol = await asyncio.get_running_loop().create_connection(
        factory, "127.0.0.1", target.port, ssl=target.tls, server_hostname="127.0.0.1" if target.tls else None
    )
    return protocol


def _request(target: Target, path: str) -> bytes:
    return (
        f"GET {target.prefix}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n".encode()
        + target.headers
        + b"\r\n"
    )


def _cpu(target: Target) -> float:
    return process_usage.cpu_seconds(target.pid) if target.pid is not None else 0.0


def _rss(target: Target) -> int:
    return process_usage.rss_bytes(target.pid) if target.pid is not None else 0


async def measure_gets(target: Target, concurrency: int, seconds: float, path: str = PODS_PATH) -> dict[str, float]:
    request = _request(target, path)
    clients = [await _connect(target, _Client) for _ in range(concurrency)]
    latencies: list[float] = []
    failures = 0

    async def worker(client: _Client, until: float, record: bool) -> None:
        nonlocal failures
        while time.perf_counter() < until:
            start = time.perf_counter()
            status = await client.get(request)
            if status != 200:
                failures += 1
            if record:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(c, time.perf_counter() + 0.5, False) for c in clients))  # warm-up
    cpu_before = _cpu(target)
    began = time.perf_counter()
    await asyncio.gather(*(worker(c, began + seconds, True) for c in clients))
    elapsed = time.perf_counter() - began
    cpu_used = _cpu(target) - cpu_before
    for client in clients:
        client.transport.close()
    if failures:
        raise RuntimeError(f"{target.name}: {failures} requests did not answer 200")
    cuts = statistics.quantiles(latencies, n=100)
    figures = {"rps": len(latencies) / elapsed, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}
    if target.pid is not None:
        figures["cpu_us_per_request"] = cpu_used / len(latencies) * 1e6
    return figures


class _HeadFirst(asyncio.Protocol):
    """Buffers the response head; resolves `started` (at its time) when the status is `expected`, then hands
    every later byte to `body_received`. Another status fails `started` with the head."""

    expected = b""

    def __init__(self) -> None:
        self.head = b""
        self.started: asyncio.Future[float] = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.started.done():
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, data = self.head.split(b"\r\n\r\n", 1)
            if not head.startswith(self.expected):
                self.started.set_exception(RuntimeError(head.decode(errors="replace")[:300]))
                return
            self.started.set_result(time.perf_counter())
        self.body_received(data)

    def body_received(self, data: bytes) -> None:
        raise NotImplementedError


class _ExecClient(_HeadFirst):
    expected = b"HTTP/1.1 101"

    def __init__(self, expected_bytes: int) -> None:
        super().__init__()
        self.expected_bytes = expected_bytes
        self.received = 0
        self.done = asyncio.get_event_loop().create_future()

    def body_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expected_bytes and not self.done.done():
            self.done.set_result(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter())


async def measure_exec(target: Target, exec_bytes: int) -> float:
    """MB/s of stdout from the 101 to the last byte."""
    client = await _connect(target, lambda: _ExecClient(exec_bytes))
    assert isinstance(client, _ExecClient)
    key = base64.b64encode(secrets.token_bytes(16))
    client.transport.write(
        f"GET {target.prefix}{EXEC_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n".encode()
        + b"Sec-WebSocket-Key: " + key + b"\r\n" + target.headers + b"\r\n"
    )  # fmt: skip
    start = await asyncio.wait_for(client.started, 30)
    end = await asyncio.wait_for(client.done, 300)
    client.transport.close()
    if client.received < exec_bytes:
        raise RuntimeError(f"{target.name}: exec stream ended after {client.received} of {exec_bytes} bytes")
    return client.received / (end - start) / 1e6


class _WatchClient(_HeadFirst):
    """One open watch: `started` at the response head; records each stamped event's delay."""

    expected = b"HTTP/1.1 200"

    def __init__(self, delays: list[float], arrived: Callable[[], None]) -> None:
        super().__init__()
        self.delays = delays
        self.arrived = arrived

    def body_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        at = data.find(SENT_MARK)
        while at >= 0:
            start = at + len(SENT_MARK)
            sent = int(data[start : data.index(b'"', start)])
            self.delays.append((now - sent) / 1e6)
            self.arrived()
            at = data.find(SENT_MARK, start)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError("closed before the watch opened"))


class UpstreamControl:
    """The client side of the static upstream's control connection (bench.static_upstream.WatchControl)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> UpstreamControl:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, command: bytes) -> int:
        self.writer.write(command + b"\n")
        answer = await self.reader.readline()
        return int(answer.split()[1])

    def close(self) -> None:
        self.writer.close()


async def measure_watches(target: Target, control: UpstreamControl, count: int) -> dict[str, float]:
    """Open `count` watches, fan out EVENTS_PER_LEVEL events, end them; memory per watch and delivery delay."""
    delays: list[float] = []
    left = 0  # deliveries of the current event still to arrive
    all_arrived = asyncio.Event()

    def arrived() -> None:
        nonlocal left
        left -= 1
        if left == 0:
            all_arrived.set()

    rss_before = _rss(target)
    request = _request(target, WATCH_PATH)
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def open_one() -> _WatchClient:
        async with gate:
            client = await _connect(target, lambda: _WatchClient(delays, arrived))
            assert isinstance(client, _WatchClient)
            client.transport.write(request)
            await asyncio.wait_for(client.started, 60)
            return client

    clients = await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.sleep(1.0)  # let the proxy settle (buffers allocated, garbage collected)
    rss_open = _rss(target)
    reached = []
    for _ in range(EVENTS_PER_LEVEL):
        left = count
        all_arrived.clear()
        reached.append(await control.send(b"event"))
        await asyncio.wait_for(all_arrived.wait(), 120)
        await asyncio.sleep(0.2)
    await control.send(b"end")
    for client in clients:
        client.transport.close()
    if min(reached) < count:
        raise RuntimeError(f"{target.name}: the upstream held {min(reached)} of {count} watches")
    cuts = statistics.quantiles(delays, n=100)
    figures = {"event_p50_ms": cuts[49], "event_p99_ms": cuts[98]}
    if target.pid is not None:
        figures["rss_kb_per_watch"] = (rss_open - rss_before) / count / 1024
    return figures
