"""One serving process of `serve --workers N`: a Connector whose shared parts are its supervisor's.

The worker listens on the connector's port with SO_REUSEPORT and serves requests as a single-process
connector does, except for what must stay one per connector (see connector.proxy.workers): its audit
events are written by the supervisor, its stream and connection slots are counted there, the
discovered sockets come from the supervisor's one scanner, and it reloads when the supervisor says
so (never on its own SIGHUP or file watch), and its metrics are served by the supervisor (it writes
them where the supervisor reads them: connector.proxy.metrics_listener). When the link to the
supervisor closes, the worker shuts down gracefully: a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector import metrics
from connector.audit.config import AuditConfig
from connector.audit.sinks import AuditLog, report_lost_event
from connector.aws.discovery import EksCluster
from connector.config import ConnectorConfig
from connector.console.browser_sessions import BrowserSessions
from connector.proxy.config import LimitsConfig
from connector.proxy.connection_bounds import ConnectionSlots
from connector.proxy.runtime import Connector
from connector.proxy.stream_limits import StreamLimitExceeded, StreamSlots
from connector.proxy.worker_link import LinkClosed, WorkerLink

log = logging.getLogger(__name__)

STREAMS, CONNECTIONS = "streams", "connections"


class RemoteAuditLog(AuditLog):
    """The audit log of a worker: each line goes to the supervisor's one writer. Where an answer matters
    (`fail_closed`, or `fsync: always`) `emit` waits for it: written, and fsynced with `fsync: always`,
    so it means what it means in one process."""

    def __init__(self, config: AuditConfig, link: WorkerLink, healthy: bool = True):
        # No sink of its own: AuditLog's state is kept for `healthy`, `fail_closed` and `/readyz`.
        self.config = config
        self._link = link
        self._healthy = healthy
        self._last_error = None

    def start(self) -> None:
        pass

    async def emit_line(self, line: bytes) -> bool:
        if not self.config.fail_closed and self.config.fsync != "always":
            # Nothing waits on the answer: the line is sent in order and the supervisor writes it as it
            # would its own (a failed write is counted and the event kept in its error log, and the
            # sink's health reaches every worker), so the request does not wait for a round trip.
            try:
                self._link.notify("audit", line)
            except LinkClosed as exc:
                return self._unreachable(exc, line)
            return self._healthy
        try:
            written, self._healthy = await self._link.call("audit", line)
        except (LinkClosed, RuntimeError) as exc:
            return self._unreachable(exc, line)
        return bool(written)

    def _unreachable(self, exc: Exception, line: bytes) -> bool:
        self._healthy = False
        self._last_error = f"the supervisor's audit log cannot be reached: {exc}"
        report_lost_event(self._last_error, line)
        return False

    def set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy

    def reopen(self) -> None:
        pass  # the supervisor reopens its file

    async def close(self) -> None:
        pass  # the supervisor flushes and syncs


class RemoteStreamSlots(StreamSlots):
    """Open streams counted by the supervisor, so that the limits hold for the connector, not per worker."""

    def __init__(self, link: WorkerLink):
        super().__init__()
        self._link = link

    async def claim(self, user: str, *, per_user: int, total: int) -> None:
        refused = await self._link.call("acquire_stream", user, per_user, total)
        if refused is not None:
            raise StreamLimitExceeded(refused)

    def release(self, user: str) -> None:
        self._link.notify("release", STREAMS, user)


class RemoteConnectionSlots(ConnectionSlots):
    """Client connections counted by the supervisor (total and per IP, across workers)."""

    def __init__(self, limits: Callable[[], LimitsConfig], link: WorkerLink):
        super().__init__(limits)
        self._link = link

    async def claim(self, ip: str) -> str | None:
        try:
            return await self._link.call("acquire_connection", ip)
        except LinkClosed:
            return "max_connections"  # shutting down: the supervisor is gone

    def release(self, ip: str) -> None:
        self._link.notify("release", CONNECTIONS, ip)


class WorkerConnector(Connector):
    """A Connector serving as worker `index` of a supervisor reachable at the Unix socket `link_path`."""

    reuse_port = True
    watches_config = False
    reloads_on_sighup = False
    announces_expiries = False

    def __init__(self, config_path: str | Path, *, link_path: str, index: int, port: int):
        super().__init__(config_path)
        self.index = index
        self._link_path = link_path
        self._port = port
        self._link: WorkerLink | None = None
        self._link_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self._link_path)
        self._link = WorkerLink(
            reader,
            writer,
            {
                "discovered": self._discovered,
                "discovered_set": self._discovered_set,
                "reload": self.reload,
                "audit_health": self._audit_health,
            },
        )
        self._link_task = asyncio.create_task(self._serve_link(), name="supervisor-link")
        await super().start()
        metrics.WORKER.labels(str(self.index), str(os.getpid())).set(1)
        self._link.notify("ready", os.getpid())

    async def _serve_link(self) -> None:
        assert self._link is not None
        await self._link.serve()
        log.warning("worker %d: the supervisor closed its link; shutting down", self.index)
        self.stop()

    def _open_audit(self, cfg: ConnectorConfig) -> AuditLog:
        assert self._link is not None
        healthy = self.ctx.audit.healthy if self.ctx is not None else True
        return RemoteAuditLog(cfg.audit, self._link, healthy)

    def _stream_slots(self) -> StreamSlots:
        assert self._link is not None
        return RemoteStreamSlots(self._link)

    def _browser_sessions(self) -> BrowserSessions:
        link = self._link
        assert link is not None

        async def remote(operation: str, args: tuple[Any, ...]) -> Any:
            return await link.call("browser_sessions", operation, args)

        return BrowserSessions(remote=remote)

    def _connection_slots(self, limits: Callable[[], LimitsConfig]) -> ConnectionSlots:
        assert self._link is not None
        return RemoteConnectionSlots(limits, self._link)

    def _listen_port(self, cfg: ConnectorConfig) -> int:
        return self._port

    def _metrics_body(self) -> None:
        return None  # the supervisor serves every worker's metrics, summed

    def _announce(self, serving: str) -> None:
        log.debug("worker %d: %s", self.index, serving)  # the supervisor says it once, when every worker does

    async def _start_discovery(self, cfg: ConnectorConfig) -> None:
        """The supervisor's sockets as of now; its later changes arrive as notices, in order after this answer."""
        assert self._link is not None
        clusters: list[EksCluster] = await self._link.call("hello", self.index)
        self._discovered(clusters, [], [])

    async def _reload_discovery(self, cfg: ConnectorConfig) -> None:
        pass  # the supervisor rescans and sends the whole set (`discovered_set`)

    def _discovered_set(self, clusters: list[EksCluster]) -> None:
        assert self.ctx is not None
        self._discovered(clusters, [], [])
        self.ctx.registry.keep_discovered({c.socket_name for c in clusters})

    def _audit_health(self, healthy: bool) -> None:
        if self.ctx is not None and isinstance(self.ctx.audit, RemoteAuditLog):
            self.ctx.audit.set_healthy(healthy)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self._link is not None:
            await self._link.close()
        if self._link_task is not None:
            self._link_task.cancel()
