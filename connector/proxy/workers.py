"""`serve --workers N`: N serving processes on one port, and the supervisor that keeps them one connector.

Each worker (connector.proxy.worker) is `python -m connector serve --worker-link ...`, a fresh
interpreter running the same entry point: nothing is inherited but the config file path, so a
replaced worker starts exactly as the first did, and `ps` shows what each process is. Workers listen
with SO_REUSEPORT and the kernel spreads connections over them: no balancer of ours. Before any worker
starts, the supervisor binds (without listening) an SO_REUSEPORT socket on `server.listen`: port 0
is resolved once, and the port stays the connector's while a worker is replaced. The TLS material is
made once here too, so that workers never race to create the self-signed CA.

What must stay one per connector lives in the supervisor, which serves no request itself:
- the audit log: workers send whole lines, one writer writes them (so none is torn or interleaved,
  whether the sink is a file or a pipe) and answers after its fsync policy is met;
- the EKS discovery service: one scan, its changes told to every worker;
- the stream and connection counts: a worker asks for a slot and tells when it gives it back; what a
  worker held is freed when its link closes, however it died;
- the metrics listener: every worker writes its metrics to files in a private directory, the
  supervisor serves their sum with its own (connector.proxy.metrics_listener);
- reload: SIGHUP and the config-file watch are the supervisor's, which validates as one process does,
  then tells every worker to apply the file;
- shutdown: SIGTERM to the supervisor is passed to every worker, each shuts down gracefully, and the
  audit log is closed only after the last one has exited.
A worker that dies is logged and replaced (after a back-off when it dies young).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

from connector.aws.discovery import EksCluster
from connector.config import ConnectorConfig
from connector.console.browser_sessions import OPERATIONS
from connector.proxy.connection_bounds import ConnectionSlots
from connector.proxy.metrics_listener import MULTIPROCESS_DIR_ENV, MetricsBody, combined_metrics
from connector.proxy.runtime import Connector, public_host, public_url
from connector.proxy.server_tls import build_server_tls
from connector.proxy.stream_limits import StreamLimitExceeded, StreamSlots
from connector.proxy.worker import CONNECTIONS, STREAMS
from connector.proxy.worker_link import WorkerLink

log = logging.getLogger(__name__)

# A worker that exits sooner than this after its start is restarted after a growing pause.
YOUNG_WORKER_SECONDS = 10.0
MAX_RESTART_PAUSE_SECONDS = 30.0
# How long after the shutdown grace a worker that has not exited is killed.
SHUTDOWN_MARGIN_SECONDS = 10.0


class WorkerStartError(Exception):
    """A worker exited before it served; its own error is in the log above."""


class _Worker:
    """One worker slot: its current process, its link, and what it holds of the shared counts."""

    def __init__(self, index: int):
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.link: WorkerLink | None = None
        self.ready = asyncio.Event()
        self.held: collections.Counter[tuple[str, str]] = collections.Counter()


class Supervisor(Connector):
    """The connector as `workers` serving processes. Serves no request itself; see the module docstring."""

    def __init__(self, config_path: str | Path, *, workers: int, log_level: str = "info"):
        super().__init__(config_path)
        self._workers = [_Worker(i) for i in range(workers)]
        self._log_level = log_level
        self._link_dir = ""
        self._metrics_dir = ""  # where the workers write their metrics; empty while metrics are off
        self._link_server: asyncio.Server | None = None
        self._reserved: socket.socket | None = None
        self._port = 0
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping_workers = False
        self._streams = StreamSlots()
        self._connections: ConnectionSlots | None = None
        self._last_audit_health = True

    # --- listening: reserve the port, then start the workers -------------------------------------------

    async def _listen(self, cfg: ConnectorConfig) -> None:
        assert self.ctx is not None
        self.tls = build_server_tls(cfg.server, public_host(cfg), self.ctx.authenticator.client_ca_file)
        ctx = self.ctx
        self._connections = ConnectionSlots(lambda: ctx.server.limits)
        self._reserved = _reserve_port(cfg.server.listen_address.host, cfg.server.listen_address.port)
        self._port = self._reserved.getsockname()[1]
        self._link_dir = tempfile.mkdtemp(prefix="connector-workers-")  # 0700
        self._link_server = await asyncio.start_unix_server(self._serve_link, os.path.join(self._link_dir, "link"))
        try:
            for worker in self._workers:
                await self._spawn(worker)
            await asyncio.gather(*(self._until_ready(w) for w in self._workers))
        except BaseException:
            await self._stop_workers(grace=0)
            raise
        self._keepers = [asyncio.create_task(self._keep(w), name=f"worker-{w.index}") for w in self._workers]
        self.url = public_url(cfg, self._port)
        ctx.public_url = self.url
        listen = cfg.server.listen_address
        self._announce(
            f"serving on {self.url} with {len(self._workers)} workers (listening on {listen.host}:{self._port})"
        )

    def _metrics_body(self) -> MetricsBody:
        self._metrics_dir = tempfile.mkdtemp(prefix="connector-metrics-")  # 0700
        return combined_metrics(self._metrics_dir)

    async def _stop_metrics(self) -> None:
        await super()._stop_metrics()
        if self._metrics_dir:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = ""

    async def _spawn(self, worker: _Worker) -> None:
        worker.ready.clear()
        worker.started_at = time.monotonic()
        env = {**os.environ, MULTIPROCESS_DIR_ENV: self._metrics_dir} if self._metrics_dir else None
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connector", "serve",
            "--config", str(self.config_path),
            "--log-level", self._log_level,
            "--worker-link", os.path.join(self._link_dir, "link"),
            "--worker-index", str(worker.index),
            "--worker-port", str(self._port),
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )  # fmt: skip

    async def _until_ready(self, worker: _Worker) -> None:
        assert worker.process is not None
        ready = asyncio.ensure_future(worker.ready.wait())
        exited = asyncio.ensure_future(worker.process.wait())
        await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise WorkerStartError(f"worker {worker.index} exited with code {exited.result()} before serving")
        exited.cancel()

    async def _keep(self, worker: _Worker) -> None:
        """Replace the worker whenever it exits, until shutdown."""
        pause = 1.0
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._metrics_dir:
                # Its counters stay in the sum; its gauges (open connections, streams) leave it.
                multiprocess.mark_process_dead(worker.process.pid, self._metrics_dir)
            if self._stopping_workers:
                return
            young = time.monotonic() - worker.started_at < YOUNG_WORKER_SECONDS
            log.error(
                "worker %d (pid %d) exited with code %s; starting a new one%s",
                worker.index, worker.process.pid, code, f" in {pause:.0f} s" if young else "",
            )  # fmt: skip
            if young:
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RESTART_PAUSE_SECONDS)
            else:
                pause = 1.0
            await self._spawn(worker)
            try:
                await self._until_ready(worker)
            except WorkerStartError as exc:
                log.error("%s", exc)
                continue
            log.info("worker %d serving again (pid %d)", worker.index, worker.process.pid)

    # --- the link: what workers ask of the supervisor --------------------------------------------------

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder: list[_Worker] = []  # set by hello
        held: collections.Counter[tuple[str, str]] = collections.Counter()

        def hello(index: int) -> list[EksCluster]:
            worker = self._workers[index]
            worker.link, worker.held = link, held
            holder.append(worker)
            return list(self._discovery.current().values()) if self._discovery is not None else []

        def ready(pid: int) -> None:
            if holder:
                holder[0].ready.set()

        def acquire_stream(user: str, per_user: int, total: int) -> str | None:
            try:
                self._streams.acquire(user, per_user=per_user, total=total)
            except StreamLimitExceeded as exc:
                return str(exc)
            held[STREAMS, user] += 1
            return None

        def acquire_connection(ip: str) -> str | None:
            assert self._connections is not None
            refused = self._connections.acquire(ip)
            if refused is None:
                held[CONNECTIONS, ip] += 1
            return refused

        def release(pool: str, key: str) -> None:
            if held[pool, key] <= 0:
                return
            held[pool, key] -= 1
            self._release(pool, key)

        link = WorkerLink(
            reader,
            writer,
            {
                "hello": hello,
                "ready": ready,
                "audit": self._audit_line,
                "acquire_stream": acquire_stream,
                "acquire_connection": acquire_connection,
                "release": release,
                "browser_sessions": self._browser_session_operation,
            },
        )
        try:
            await link.serve()
        finally:
            # However the worker ended, what it held is the connector's again.
            for (pool, key), count in held.items():
                for _ in range(count):
                    self._release(pool, key)
            held.clear()
            if holder and holder[0].link is link:
                holder[0].link = None

    def _browser_session_operation(self, operation: str, args: tuple[Any, ...]) -> Any:
        """A worker's console session operation, on the connector's one store (the supervisor's)."""
        if operation not in OPERATIONS:
            raise ValueError(f"no browser session operation {operation!r}")
        assert self.ctx is not None
        store = self.ctx.browser_sessions.store
        assert store is not None
        return getattr(store, operation)(*args)

    def _release(self, pool: str, key: str) -> None:
        if pool == STREAMS:
            self._streams.release(key)
        elif self._connections is not None:
            self._connections.release(key)

    async def _audit_line(self, line: bytes) -> tuple[bool, bool]:
        assert self.ctx is not None
        audit = self.ctx.audit
        written = await audit.emit_line(line)
        if audit.healthy != self._last_audit_health:
            self._last_audit_health = audit.healthy
            self._broadcast("audit_health", audit.healthy)
        return written, audit.healthy

    def _links(self) -> list[tuple[_Worker, WorkerLink]]:
        return [(w, w.link) for w in self._workers if w.link is not None and not w.link.closed]

    def _broadcast(self, method: str, *args: object) -> None:
        for _, link in self._links():
            link.notify(method, *args)

    # --- discovery and reload: the supervisor's, told to every worker ----------------------------------

    def _discovered(self, added: list[EksCluster], changed: list[EksCluster], removed: list[EksCluster]) -> None:
        self._broadcast("discovered", added, changed, removed)

    async def _reload_discovery(self, cfg: ConnectorConfig) -> None:
        await super()._reload_discovery(cfg)
        self._broadcast("discovered_set", list(self._discovery.current().values()) if self._discovery else [])

    async def reload(self, reason: str) -> bool:
        applied = await super().reload(reason)
        if not applied:
            return False
        links = self._links()
        answers = await asyncio.gather(*(link.call("reload", reason) for _, link in links), return_exceptions=True)
        for (worker, _), answer in zip(links, answers, strict=True):
            if answer is not True:
                log.error("worker %d did not apply the reload (%s): see its log above", worker.index, answer)
        return applied

    # --- shutdown ------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        grace = self.cfg.server.shutdown_grace_seconds if self.cfg is not None else 0
        await self._stop_workers(grace + SHUTDOWN_MARGIN_SECONDS)
        await super().shutdown()

    async def _stop_workers(self, grace: float) -> None:
        """SIGTERM every worker, wait for them (killing those still there after `grace`), close the links."""
        self._stopping_workers = True
        processes = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), grace or None)
        except TimeoutError:
            for process in processes:
                if process.returncode is None:
                    log.error("worker pid %d did not exit in time; killing it", process.pid)
                    process.kill()
            await asyncio.gather(*(p.wait() for p in processes))
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        if self._link_server is not None:
            self._link_server.close()
            self._link_server = None
        if self._link_dir:
            shutil.rmtree(self._link_dir, ignore_errors=True)
            self._link_dir = ""
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket: it resolves port 0 and keeps the port, but takes no
    connection (the kernel gives connections only to listening members of the port's group)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    reserved = socket.socket(family, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            reserved.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        reserved.bind(address)
    except OSError:
        reserved.close()
        raise
    return reserved
