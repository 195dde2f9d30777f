"""Proxy overhead: the same upstream reached directly, through the connector, and through `kubectl proxy`.

Measured on one machine in one run:
- `GET` of a 50-pod list (about 60 KB of JSON), at 1 and 32 concurrent keep-alive connections:
  requests per second, p50 and p99 latency;
- exec stdout throughput: a session (websocket, `v5.channel.k8s.io` framing) whose command writes
  100 MB, in MB/s.

The upstream is a minimal static HTTPS server (asyncio protocol, uvloop, answers from memory) in its
own process, so that the proxies are what is measured. The connector runs as it does in production
(service-token authentication, a policy with rules, audit events to a file), in its own process, once
on uvloop and once on asyncio's default loop. `kubectl proxy` (Go's reverse proxy; plain HTTP on
loopback, TLS to the upstream) needs a real kubectl beside the `kubectl` dispatcher; without it that
column is skipped. The load generator is a lean HTTP/1.1 client in this process (on uvloop).

    python -m bench.proxy [--seconds 3] [--exec-mb 100]

Figures depend on the machine and on what else runs on it; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from connector.authn.service_tokens import hash_token
from connector.pki import generate_ca, issue_certificate

PODS_PATH = "/api/v1/namespaces/default/pods"
EXEC_PATH = "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=yes&stdout=true"
FRAME = 64 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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
                    "podIP": f"10.0.{i % 4}.{i + 10}",
                    "hostIP": f"10.0.{i % 4}.1",
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}
                        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                    ],
                    "containerStatuses": [
                        {
                            "name": "web",
                            "ready": True,
                            "restartCount": 0,
                            "started": True,
                            "image": "registry.example.com/web:1.2.3",
                            "state": {"running": {"startedAt": "2026-01-01T00:00:04Z"}},
                        }
                    ],
                },
            }
        )
    return json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1050"},
                       "items": items}).encode()  # fmt: skip


# ---- the static upstream (run in its own process) -------------------------------------------------


class _StaticUpstream(asyncio.Protocol):
    def __init__(self, body: bytes, exec_bytes: int):
        self.list_response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        self.exec_bytes = exec_bytes
        self.buffer = b""
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

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


async def _serve_upstream(cert: str, key: str, port_file: str, exec_bytes: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    body = pod_list()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _StaticUpstream(body, exec_bytes), "127.0.0.1", 0, ssl=context)
    await asyncio.to_thread(Path(port_file).write_text, str(server.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


async def _serve_connector(config: str, port_file: str) -> None:
    from connector.proxy.runtime import Connector

    connector = Connector(config)
    await connector.start()
    await asyncio.to_thread(Path(port_file).write_text, connector.url.rsplit(":", 1)[1])
    await asyncio.Event().wait()


# ---- the load generator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    prefix: str
    tls: ssl.SSLContext | None
    headers: bytes


class _Client(asyncio.Protocol):
    """One keep-alive connection sending one GET at a time and reading Content-Length bodies."""

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
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buffer) >= end + 4 + length:
            status = int(head[9:12])
            del self.buffer[: end + 4 + length]
            self.waiter.set_result(status)
            self.waiter = None

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


async def measure_gets(target: Target, concurrency: int, seconds: float) -> dict[str, float]:
    request = (
        f"GET {target.prefix}{PODS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n".encode()
        + target.headers
        + b"\r\n"
    )
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
    began = time.perf_counter()
    await asyncio.gather(*(worker(c, began + seconds, True) for c in clients))
    elapsed = time.perf_counter() - began
    for client in clients:
        client.transport.close()
    if failures:
        raise RuntimeError(f"{target.name}: {failures} requests did not answer 200")
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


class _ExecClient(asyncio.Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.head = b""
        self.received = 0
        self.switched = asyncio.get_event_loop().create_future()
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.switched.done():
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, rest = self.head.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 101"):
                self.switched.set_exception(RuntimeError(head.decode(errors="replace")[:300]))
                return
            self.switched.set_result(time.perf_counter())
            data = rest
        self.received += len(data)
        if self.received >= self.expected and not self.done.done():
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
    start = await asyncio.wait_for(client.switched, 30)
    end = await asyncio.wait_for(client.done, 300)
    client.transport.close()
    if client.received < exec_bytes:
        raise RuntimeError(f"{target.name}: exec stream ended after {client.received} of {exec_bytes} bytes")
    return client.received / (end - start) / 1e6


# ---- orchestration --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], what: str) -> str:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    return path.read_text()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


def _real_kubectl() -> Path | None:
    dispatcher = shutil.which("kubectl")
    if dispatcher is None:
        return None
    directory = Path(os.path.realpath(dispatcher)).parent
    found = sorted(directory.glob("kubectl.1.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return found[-1] if found else None


class Bench:
    def __init__(self, tmp: Path, seconds: float, exec_mb: int):
        self.tmp = tmp
        self.seconds = seconds
        self.exec_bytes = exec_mb * 1_000_000
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def start_upstream(self) -> tuple[int, Path]:
        ca = generate_ca("bench-upstream-ca")
        leaf = issue_certificate(ca, "bench-upstream", hosts=("127.0.0.1",))
        (self.tmp / "up.crt").write_bytes(leaf.cert_pem)
        (self.tmp / "up.key").write_bytes(leaf.key_pem)
        (self.tmp / "up-ca.crt").write_bytes(ca.cert_pem)
        port_file = self.tmp / "up.port"
        process = self.spawn("-m", "bench.proxy", "upstream", str(self.tmp / "up.crt"), str(self.tmp / "up.key"),
                             str(port_file), str(self.exec_bytes + FRAME))  # fmt: skip
        return int(_wait_for_file(port_file, process, "the static upstream")), self.tmp / "up-ca.crt"

    def start_connector(self, upstream_port: int, ca: Path, loop: str, token: str) -> int:
        directory = self.tmp / f"connector-{loop}"
        directory.mkdir()
        (directory / "tokens.yaml").write_text(
            yaml.safe_dump({"tokens": [{"sha256": hash_token(token), "user": "bench", "groups": ["dev"]}]})
        )
        config = {
            "server": {"listen": "127.0.0.1:0", "state_dir": str(directory / "state")},
            "audit": {"file": str(directory / "audit.log")},
            "authentication": {"service_tokens": {"file": str(directory / "tokens.yaml")}},
            "sockets": {"bench": {"service_type": "standard", "server": f"https://127.0.0.1:{upstream_port}",
                                  "certificate_authority": str(ca), "token": "upstream-token"}},
            "policies": [{"name": "dev", "subjects": {"groups": ["dev"]}, "sockets": ["bench"], "kubernetes": {
                "rules": [{"verbs": ["get", "list", "watch"], "resources": ["pods", "pods/log"],
                           "namespaces": ["default", "web"]},
                          {"verbs": ["create"], "resources": ["pods/exec"], "namespaces": ["default"]}]}}],
        }  # fmt: skip
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        port_file = directory / "port"
        process = self.spawn("-m", "bench.proxy", "connector", str(directory / "config.yaml"), str(port_file), loop)
        return int(_wait_for_file(port_file, process, f"the connector ({loop})"))

    def start_kubectl_proxy(self, kubectl: Path, upstream_port: int, ca: Path) -> int:
        kubeconfig = self.tmp / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": f"https://127.0.0.1:{upstream_port}",
                                                       "certificate-authority": str(ca)}}],
            "users": [{"name": "bench", "user": {"token": "upstream-token"}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        }))  # fmt: skip
        port = _free_port()
        process = subprocess.Popen(
            [str(kubectl), "proxy", f"--port={port}", "--address=127.0.0.1", f"--kubeconfig={kubeconfig}",
             "--reject-paths=^$"],  # the default refuses exec, which is measured here
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(self.tmp)},
        )  # fmt: skip
        self.processes.append(process)
        _wait_for_port(port, process, "kubectl proxy")
        return port

    async def run(self) -> list[tuple[str, dict[str, float]]]:
        upstream_port, ca = self.start_upstream()
        upstream_tls = ssl.create_default_context(cafile=str(ca))
        targets = [Target("direct", upstream_port, "", upstream_tls, b"Authorization: Bearer upstream-token\r\n")]
        for loop in ("uvloop", "asyncio"):
            token = secrets.token_urlsafe(32)
            port = self.start_connector(upstream_port, ca, loop, token)
            tls = ssl.create_default_context(cafile=str(self.tmp / f"connector-{loop}" / "state" / "ca.crt"))
            auth = f"Authorization: Bearer {token}\r\n".encode()
            targets.append(Target(f"connector ({loop})", port, "/sockets/bench", tls, auth))
        kubectl = _real_kubectl()
        if kubectl is not None:
            port = self.start_kubectl_proxy(kubectl, upstream_port, ca)
            targets.append(Target(f"kubectl proxy ({kubectl.name})", port, "", None, b""))
        results = []
        for target in targets:
            row: dict[str, float] = {}
            for concurrency in (1, 32):
                figures = await measure_gets(target, concurrency, self.seconds)
                row.update({f"{k}@{concurrency}": v for k, v in figures.items()})
            row["exec_MBps"] = await measure_exec(target, self.exec_bytes)
            results.append((target.name, row))
        return results


def _table(results: list[tuple[str, dict[str, float]]]) -> str:
    header = ("| path | req/s @1 | p50 ms @1 | p99 ms @1 | req/s @32 | p50 ms @32 | p99 ms @32 | exec MB/s |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    rows = [
        f"| {name} | {r['rps@1']:.0f} | {r['p50_ms@1']:.2f} | {r['p99_ms@1']:.2f} | {r['rps@32']:.0f} "
        f"| {r['p50_ms@32']:.2f} | {r['p99_ms@32']:.2f} | {r['exec_MBps']:.0f} |"
        for name, r in results
    ]
    return "\n".join([header, *rows])


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        import uvloop

        cert, key, port_file, exec_bytes = argv[1:5]
        uvloop.run(_serve_upstream(cert, key, port_file, int(exec_bytes)))
        return 0
    if argv[:1] == ["connector"]:
        config, port_file, loop = argv[1:4]
        if loop == "uvloop":
            import uvloop

            uvloop.run(_serve_connector(config, port_file))
        else:
            asyncio.run(_serve_connector(config, port_file))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure (default 3)")
    parser.add_argument("--exec-mb", type=int, default=100, help="exec stdout volume in MB (default 100)")
    args = parser.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args.seconds, args.exec_mb)
        try:
            results = uvloop.run(bench.run())
        finally:
            bench.close()
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.machine()}; {args.seconds:g} s per figure; 50-pod list = {len(pod_list())} bytes")  # fmt: skip
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
