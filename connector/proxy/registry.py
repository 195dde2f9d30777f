"""The live set of sockets the proxy serves, and the streams open on each.

Sockets come from the config (`sockets:`, resolved with connector.upstream.resolve_socket) and from
EKS discovery (added and removed while running). Each socket has one aiohttp ClientSession (pooled
keep-alive connections, TLS verified against the socket's CA). When a socket goes away or its target
changes, it is retired: its open streams (watches, logs -f, exec, port-forward) are told to end
cleanly, then its session is closed. Requests already forwarding keep the entry they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from connector.aws.token import EksTokenCache
from connector.upstream import SocketError, Upstream, resolve_socket
from connector.upstream.config import SocketConfig

log = logging.getLogger(__name__)

Source = Literal["config", "discovery"]
# How long a retired socket's streams get to end before its connections are closed under them.
RETIRE_GRACE_SECONDS = 10.0


# Why a stream is ended when nobody says otherwise: its socket went away, or the connector is stopping.
RETIRED = "socket retired or shutting down"


@dataclass(eq=False)
class ActiveStream:
    """A long-lived response in progress; `stop(reason)` asks its relay to end it cleanly."""

    socket: str
    kind: str
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = ""  # the first reason given: what the stream's audit event says ended it

    def stop(self, reason: str = RETIRED) -> None:
        if not self.stopped.is_set():
            self.stop_reason = reason
        self.stopped.set()


@dataclass(eq=False)
class SocketEntry:
    """One served socket: its upstream, its HTTP client session and its open streams."""

    name: str
    upstream: Upstream
    source: Source
    region: str | None
    # Equal fingerprints mean the same target: the entry (and its connections) is kept on refresh.
    fingerprint: Any
    session: aiohttp.ClientSession
    streams: set[ActiveStream] = field(default_factory=set)
    retired: bool = False

    @contextlib.contextmanager
    def stream(self, kind: str) -> Iterator[ActiveStream]:
        """Track a stream for the duration of the `with` block (stopped at once if already retired)."""
        active = ActiveStream(self.name, kind)
        if self.retired:
            active.stop()
        self.streams.add(active)
        try:
            yield active
        finally:
            self.streams.discard(active)
            active.finished.set()

    async def retire(self, grace: float = RETIRE_GRACE_SECONDS) -> None:
        """End the open streams cleanly, wait for them up to `grace` seconds, close the connections."""
        self.retired = True
        streams = list(self.streams)
        for active in streams:
            active.stop()
        if streams:
            waits = [asyncio.ensure_future(s.finished.wait()) for s in streams]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for w in pending:
                w.cancel()
            if pending:
                log.warning("socket %s: %d stream(s) did not end within %.0f s", self.name, len(pending), grace)
        await self.session.close()

    def describe(self) -> dict[str, Any]:
        return {**self.upstream.describe(), "source": self.source, "region": self.region}


def new_session() -> aiohttp.ClientSession:
    """A client session for one socket.

    No total timeout (streams last as long as they last; the proxy bounds the wait for response
    headers itself), no connection limit (each watch holds a connection), no decompression and no
    headers of aiohttp's own: the proxy relays the client's request and the cluster's bytes as they are.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class SocketRegistry:
    """Which sockets exist right now. Mutated only from the event loop; lookups are plain dict reads."""

    def __init__(self, token_cache: EksTokenCache):
        self.token_cache = token_cache
        self._static: dict[str, SocketEntry] = {}
        self._static_configs: dict[str, SocketConfig] = {}
        self._problems: dict[str, str] = {}
        self._discovered: dict[str, SocketEntry] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> SocketEntry | None:
        """The socket called `name`; a configured socket wins over a discovered one of the same name."""
        return self._static.get(name) or self._discovered.get(name)

    def problem(self, name: str) -> str | None:
        """Why a configured socket is not being served (it failed to resolve), or None."""
        return self._problems.get(name)

    @property
    def problems(self) -> Mapping[str, str]:
        return dict(self._problems)

    def entries(self) -> list[SocketEntry]:
        merged = {**self._discovered, **self._static}
        return [merged[name] for name in sorted(merged)]

    async def apply_static(self, sockets: Mapping[str, SocketConfig]) -> None:
        """Serve exactly these configured sockets; unchanged ones keep their entry and connections.

        A socket that fails to resolve is reported by `problem()` (and by /readyz) while the others
        are served; it is tried again by `retry_failed()` and on every reload.
        """
        for name in list(self._static):
            if name not in sockets or sockets[name] != self._static_configs.get(name):
                self._retire(self._static.pop(name))
        self._static_configs = dict(sockets)
        self._problems = {n: p for n, p in self._problems.items() if n in sockets}
        todo = [n for n in sockets if n not in self._static]
        await asyncio.gather(*(self._resolve(n, sockets[n]) for n in todo))

    async def retry_failed(self) -> None:
        await asyncio.gather(*(self._resolve(n, self._static_configs[n]) for n in list(self._problems)))

    async def _resolve(self, name: str, cfg: SocketConfig) -> None:
        try:
            upstream = await resolve_socket(name, cfg, token_cache=self.token_cache)
        except SocketError as exc:
            if self._problems.get(name) != exc.message:
                log.error("%s", exc)
            self._problems[name] = exc.message
            return
        if self._static_configs.get(name) is not cfg:
            return  # the config changed again while this socket was resolving
        self._problems.pop(name, None)
        if name in self._discovered:
            log.warning("socket %s: the configured socket hides a discovered cluster of the same name", name)
        region = getattr(cfg, "eks_cluster_region", None)
        self._static[name] = SocketEntry(name, upstream, "config", region, cfg, new_session())
        log.info("socket %s: serving %s", name, upstream.base_url)

    def put_discovered(self, name: str, upstream: Upstream, *, region: str | None, fingerprint: Any) -> None:
        """Add or refresh a discovered socket; a changed fingerprint retires the old entry's streams."""
        old = self._discovered.get(name)
        if old is not None and old.fingerprint == fingerprint:
            old.upstream = upstream
            old.region = region
            return
        if old is not None:
            self._retire(old)
        self._discovered[name] = SocketEntry(name, upstream, "discovery", region, fingerprint, new_session())
        if name in self._static_configs:
            log.warning("socket %s: discovered, but the configured socket of the same name is served instead", name)
        else:
            log.info("socket %s: discovered, serving %s", name, upstream.base_url)

    def remove_discovered(self, name: str) -> None:
        entry = self._discovered.pop(name, None)
        if entry is not None:
            log.info("socket %s: no longer discovered, its streams are being ended", name)
            self._retire(entry)

    def keep_discovered(self, names: set[str]) -> None:
        """Retire every discovered socket not in `names` (after discovery itself was replaced)."""
        for name in [n for n in self._discovered if n not in names]:
            self.remove_discovered(name)

    def _retire(self, entry: SocketEntry) -> None:
        task = asyncio.create_task(entry.retire(), name=f"retire-socket-{entry.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def stop_all_streams(self) -> None:
        """End every open stream cleanly, and any stream opened from now on at once (graceful shutdown)."""
        for entry in [*self._static.values(), *self._discovered.values()]:
            entry.retired = True
            for active in list(entry.streams):
                active.stop()

    async def close(self, grace: float = RETIRE_GRACE_SECONDS) -> None:
        """Retire every socket and wait for all retirements."""
        for entry in [*self._static.values(), *self._discovered.values()]:
            self._retire(entry)
        self._static.clear()
        self._discovered.clear()
        if self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)
