"""Proxy overhead: the same upstream reached directly, through the connector, and through `kubectl proxy`.

Measured on one machine in one run, for each path:
- `GET` of a pod list at 1 and 32 concurrent keep-alive connections: requests per second, p50 and
  p99 latency, and the proxy's CPU microseconds per request (user + system time of its processes
  over the measuring window divided by the requests served: steadier than req/s on a busy machine);
- exec stdout throughput: a session (websocket, `v5.channel.k8s.io` framing) whose command writes
  100 MB, in MB/s;
- watch scale: N concurrent `?watch=1` streams (1,000, 5,000 and 10,000 by default) held through the
  proxy, its resident memory per open watch, and the p50/p99 delay of an event the upstream fans out
  to all of them.

Upstreams (`--upstream`):
- `static` (default): a minimal HTTPS server answering from memory (bench.static_upstream), in its
  own process, so that the proxies are what is measured; a 50-pod list (about 60 KB of JSON);
- `apiserver`: a real kube-apiserver 1.33 on etcd (sandbox.controlplane; the binaries must be built,
  `make control-plane`) holding 500 pods; the list is the real one (about 1.1 MB); no exec or watch
  figures there (the node is the sandbox's emulated kubelet, which would be what is measured).

The connector runs as it does in production (service-token authentication, a policy with rules, audit
events to a file), in its own process, on uvloop and on asyncio's default loop. `kubectl proxy` (Go's
reverse proxy; plain HTTP on loopback, TLS to the upstream) needs a real kubectl beside the `kubectl`
dispatcher; without it that row is skipped. kube-oidc-proxy is not a peer: its Go module is not
served by the module proxy this project builds from (see the README). The load generator is
bench.load, in this process, on uvloop.

    python -m bench.proxy [--seconds 3] [--exec-mb 100] [--watches 1000,5000,10000]
                          [--upstream static|apiserver] [--json]

Figures depend on the machine and on what else runs on it; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.load import PODS_PATH, Target, UpstreamControl, measure_exec, measure_gets, measure_watches
from bench.static_upstream import FRAME, pod_list
from connector.authn.service_tokens import hash_token
from connector.pki import generate_ca, issue_certificate

REAL_PODS = 500
FDS_PER_WATCH = 2  # in a one-process proxy: the client connection and the upstream one
# Every watch is the one bench user's, from 127.0.0.1: the per-user and per-IP defaults would refuse them.
CONNECTOR_LIMITS = {"max_streams_per_user": 100_000, "max_streams": 1_000_000,
                    "max_connections": 100_000, "max_connections_per_ip": 100_000}  # fmt: skip
Results = list[tuple[str, dict[str, float]]]


async def _serve_connector(config: str, port_file: str, workers: int) -> None:
    from connector.proxy.runtime import Connector
    from connector.proxy.workers import Supervisor

    connector = Connector(config) if workers == 1 else Supervisor(config, workers=workers)
    await connector.start()
    await asyncio.to_thread(Path(port_file).write_text, connector.url.rsplit(":", 1)[1])
    await asyncio.Event().wait()


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


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's (and so its children's) open-file limit toward `needed`; the limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    for new_hard in (max(hard, needed), hard):  # raising the hard limit needs privilege
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Bench:
    def __init__(self, tmp: Path, seconds: float, exec_mb: int, watches: list[int], workers: int = 1):
        self.tmp = tmp
        self.workers = workers
        self.seconds = seconds
        self.exec_bytes = exec_mb * 1_000_000
        self.watch_levels = watches
        self.processes: list[subprocess.Popen[bytes]] = []
        self.control_port = 0

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

    def start_static_upstream(self) -> tuple[int, Path]:
        ca = generate_ca("bench-upstream-ca")
        leaf = issue_certificate(ca, "bench-upstream", hosts=("127.0.0.1",))
        (self.tmp / "up.crt").write_bytes(leaf.cert_pem)
        (self.tmp / "up.key").write_bytes(leaf.key_pem)
        (self.tmp / "up-ca.crt").write_bytes(ca.cert_pem)
        port_file = self.tmp / "up.port"
        process = self.spawn("-m", "bench.proxy", "upstream", str(self.tmp / "up.crt"), str(self.tmp / "up.key"),
                             str(port_file), str(self.exec_bytes + FRAME))  # fmt: skip
        port, control = _wait_for_file(port_file, process, "the static upstream").split()
        self.control_port = int(control)
        return int(port), self.tmp / "up-ca.crt"

    def start_connector(self, loop: str, token: str, socket_config: dict[str, Any], workers: int = 1) -> Target:
        directory = self.tmp / f"connector-{loop}-{workers}"
        directory.mkdir()
        (directory / "tokens.yaml").write_text(
            yaml.safe_dump({"tokens": [{"sha256": hash_token(token), "user": "bench", "groups": ["dev"]}]})
        )
        config = {
            "server": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "state_dir": str(directory / "state"),
                       "limits": CONNECTOR_LIMITS},
            "audit": {"file": str(directory / "audit.log")},
            "authentication": {"service_tokens": {"file": str(directory / "tokens.yaml")}},
            "sockets": {"bench": {"service_type": "standard", **socket_config}},
            "policies": [{"name": "dev", "subjects": {"groups": ["dev"]}, "sockets": ["bench"], "kubernetes": {
                "rules": [{"verbs": ["get", "list", "watch"], "resources": ["pods", "pods/log"],
                           "namespaces": ["default", "web"]},
                          {"verbs": ["create"], "resources": ["pods/exec"], "namespaces": ["default"]}]}}],
        }  # fmt: skip
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        port_file = directory / "port"
        process = self.spawn(
            "-m", "bench.proxy", "connector", str(directory / "config.yaml"), str(port_file), loop, str(workers)
        )  # fmt: skip
        name = f"connector ({loop})" if workers == 1 else f"connector ({loop}, {workers} workers)"
        port = int(_wait_for_file(port_file, process, name))
        tls = ssl.create_default_context(cafile=str(directory / "state" / "ca.crt"))
        auth = f"Authorization: Bearer {token}\r\n".encode()
        return Target(name, port, "/sockets/bench", tls, auth, process.pid)

    def start_connectors(self, socket_config: dict[str, Any]) -> list[Target]:
        loops = ("uvloop", "asyncio")
        targets = [self.start_connector(loop, secrets.token_urlsafe(32), socket_config) for loop in loops]
        if self.workers > 1:  # its workers are `serve` processes, on uvloop
            targets.append(self.start_connector("uvloop", secrets.token_urlsafe(32), socket_config, self.workers))
        return targets

    def start_kubectl_proxy(self, kubectl: Path, server: str, ca: Path, user: dict[str, str]) -> Target:
        kubeconfig = self.tmp / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": "bench", "user": user}],
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
        return Target(f"kubectl proxy ({kubectl.name})", port, "", None, b"", process.pid)

    def static_targets(self) -> list[Target]:
        upstream_port, ca = self.start_static_upstream()
        server = f"https://127.0.0.1:{upstream_port}"
        upstream_tls = ssl.create_default_context(cafile=str(ca))
        targets = [Target("direct", upstream_port, "", upstream_tls, b"Authorization: Bearer upstream-token\r\n")]
        socket_config = {"server": server, "certificate_authority": str(ca), "token": "upstream-token"}
        targets += self.start_connectors(socket_config)
        kubectl = _real_kubectl()
        if kubectl is not None:
            targets.append(self.start_kubectl_proxy(kubectl, server, ca, {"token": "upstream-token"}))
        return targets

    async def run_static(self) -> Results:
        targets = self.static_targets()
        control = await UpstreamControl.connect(self.control_port)
        results = []
        try:
            for target in targets:
                row = await self._gets(target)
                row["exec_MBps"] = await measure_exec(target, self.exec_bytes)
                for count in self.watch_levels:
                    figures = await measure_watches(target, control, count)
                    row.update({f"{k}@{count}w": v for k, v in figures.items()})
                results.append((target.name, row))
        finally:
            control.close()
        return results

    async def _gets(self, target: Target) -> dict[str, float]:
        row: dict[str, float] = {}
        for concurrency in (1, 32):
            figures = await measure_gets(target, concurrency, self.seconds, PODS_PATH)
            row.update({f"{k}@{concurrency}": v for k, v in figures.items()})
        return row

    async def run_apiserver(self) -> Results:
        from bench.real_upstream import RealUpstream

        async with RealUpstream(self.tmp / "control-plane", pods=REAL_PODS) as real:
            pki = real.pki
            admin_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            admin_tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
            targets = [Target("direct", real.port, "", admin_tls, b"")]
            socket_config = {"server": real.url, "certificate_authority": str(pki / "ca.crt"),
                             "client_certificate": str(pki / "admin.crt"),
                             "client_key": str(pki / "admin.key")}  # fmt: skip
            targets += self.start_connectors(socket_config)
            kubectl = _real_kubectl()
            if kubectl is not None:
                user = {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}
                targets.append(self.start_kubectl_proxy(kubectl, real.url, pki / "ca.crt", user))
            return [(target.name, await self._gets(target)) for target in targets]


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: Results, watch_levels: list[int]) -> str:
    lines = [
        "| path | req/s @1 | p50 ms @1 | p99 ms @1 | CPU µs/req @1 | req/s @32 | p50 ms @32 | p99 ms @32 "
        "| CPU µs/req @32 | exec MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        lines.append(
            f"| {name} | {r['rps@1']:.0f} | {r['p50_ms@1']:.2f} | {r['p99_ms@1']:.2f} "
            f"| {_number(r.get('cpu_us_per_request@1'), 0)} | {r['rps@32']:.0f} | {r['p50_ms@32']:.2f} "
            f"| {r['p99_ms@32']:.2f} | {_number(r.get('cpu_us_per_request@32'), 0)} "
            f"| {_number(r.get('exec_MBps'), 0)} |"
        )
    if watch_levels and any(f"event_p99_ms@{watch_levels[0]}w" in r for _, r in results):
        heads = " | ".join(f"{n:,} watches: KB/watch, event p50 / p99 ms" for n in watch_levels)
        lines += ["", f"| path | {heads} |", "|---|" + "---:|" * len(watch_levels)]
        for name, r in results:
            cells = [
                f"{_number(r.get(f'rss_kb_per_watch@{n}w'), 1)}, "
                f"{r[f'event_p50_ms@{n}w']:.0f} / {r[f'event_p99_ms@{n}w']:.0f}"
                for n in watch_levels
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _watch_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--watches wants comma-separated counts, got {text!r}") from None
    if any(n < 1 or n > 100_000 for n in levels):
        raise argparse.ArgumentTypeError(f"--watches counts must be 1..100000, got {text!r}")
    return levels


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        import uvloop

        from bench.static_upstream import serve

        cert, key, port_file, exec_bytes = argv[1:5]
        uvloop.run(serve(cert, key, port_file, int(exec_bytes)))
        return 0
    if argv[:1] == ["connector"]:
        config, port_file, loop, workers = argv[1:5]
        if loop == "uvloop":
            import uvloop

            uvloop.run(_serve_connector(config, port_file, int(workers)))
        else:
            asyncio.run(_serve_connector(config, port_file, int(workers)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure (default 3)")
    parser.add_argument("--exec-mb", type=int, default=100, help="exec stdout volume in MB (default 100)")
    parser.add_argument("--watches", type=_watch_levels, default=[1000, 5000, 10000],
                        help="open-watch counts, comma-separated (default 1000,5000,10000; empty: none)")  # fmt: skip
    parser.add_argument("--upstream", choices=("static", "apiserver"), default="static",
                        help="what the proxies front (default static)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print every figure as JSON instead of tables")
    parser.add_argument("--workers", type=int, default=1, choices=range(1, 65), metavar="N",
                        help="also measure the connector as `serve --workers N` (default 1: not measured)")  # fmt: skip
    args = parser.parse_args(argv)
    import uvloop

    levels = args.watches if args.upstream == "static" else []
    needed = FDS_PER_WATCH * max(levels, default=0) + 1024
    limit = raise_open_file_limit(needed)
    if limit < needed:
        print(f"open-file limit {limit} (hard) is below the {needed} that {max(levels):,} watches need in one "
              "proxy process; use fewer --watches", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args.seconds, args.exec_mb, levels, args.workers)
        try:
            results = uvloop.run(bench.run_static() if args.upstream == "static" else bench.run_apiserver())
        except Exception as exc:  # one line for whatever stopped the run, never a traceback
            print(f"bench.proxy: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.close()
    load = os.getloadavg()
    machine = {"python": f"{platform.python_implementation()} {platform.python_version()}",
               "cpus": os.cpu_count(), "arch": platform.machine(), "load_average": [round(x, 2) for x in load],
               "seconds_per_figure": args.seconds, "upstream": args.upstream,
               "list_bytes": len(pod_list()) if args.upstream == "static" else None}  # fmt: skip
    if args.json:
        print(json.dumps({"machine": machine, "results": dict(results)}, indent=2))
        return 0
    body = "a 50-pod list" if args.upstream == "static" else f"a real list of {REAL_PODS} pods"
    print(f"{machine['python']}, {machine['cpus']} CPUs, {machine['arch']}, load {load[0]:.2f}; "
          f"{args.seconds:g} s per figure; {body}")  # fmt: skip
    print(table(results, levels))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
