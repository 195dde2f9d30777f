"""EKS discovery as a running service: every source rescanned on its interval, the result kept as an
observable set of sockets.

Subscribers are told what was added, changed and removed after each scan, so the proxy can add and
retire upstreams without a restart. A cluster the last scan could not confirm (its region or its
DescribeCluster failed) is kept from the scan before, marked stale with the error: an AWS hiccup
must not cut users off a cluster that is still there.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from connector.aws.discovery_config import DiscoveryConfig
from connector.aws.discovery_scan import (
    ALL_REGIONS,
    EksCluster,
    ScanOptions,
    ScanResult,
    SourceScanner,
    combine_results,
    index_by_socket_name,
)
from connector.metrics import DISCOVERED_SOCKETS

log = logging.getLogger("connector.aws.discovery")

Subscriber = Callable[[list[EksCluster], list[EksCluster], list[EksCluster]], Awaitable[None] | None]


def keep_stale(result: ScanResult, previous: Mapping[str, EksCluster]) -> dict[str, EksCluster]:
    """This scan's clusters plus, marked stale, the previous ones this scan could not confirm.

    A previous cluster is kept when its region failed (or the region list could not be had) or its
    DescribeCluster failed, unless a confirmed cluster holds its socket name now. A cluster that is
    simply gone from an answering region, no longer ACTIVE, or filtered out is dropped.
    """
    clusters = dict(result.clusters)
    for name, old in previous.items():
        error = (
            result.region_errors.get(old.region)
            or result.region_errors.get(ALL_REGIONS)
            or result.cluster_errors.get((old.region, old.cluster_name))
        )
        if error is not None and name not in clusters:
            clusters[name] = replace(old, stale=True, error=error)
    return clusters


def diff(
    before: Mapping[str, EksCluster], after: Mapping[str, EksCluster]
) -> tuple[list[EksCluster], list[EksCluster], list[EksCluster]]:
    """(added, changed, removed), each sorted by socket name. Any field counts as a change, staleness too."""
    added = [after[n] for n in sorted(after.keys() - before.keys())]
    changed = [after[n] for n in sorted(after.keys() & before.keys()) if after[n] != before[n]]
    removed = [before[n] for n in sorted(before.keys() - after.keys())]
    return added, changed, removed


class DiscoveryService:
    """Runs discovery for the `discovery:` config. `sleep` is the tests' hook on the scan interval."""

    def __init__(
        self,
        cfg: DiscoveryConfig,
        *,
        options: ScanOptions | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._scanners = [SourceScanner(source, options) for source in cfg.aws_eks]
        self._by_source: list[dict[str, EksCluster]] = [{} for _ in self._scanners]
        self._current: dict[str, EksCluster] = {}
        self._subscribers: list[Subscriber] = []
        self._sleep = sleep
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(added, changed, removed)` (plain or async) after every scan that changed the
        set. Returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def current(self) -> dict[str, EksCluster]:
        """The sockets known now, by socket name (stale ones included)."""
        return dict(self._current)

    async def start(self) -> None:
        """Scan every source once (so the sockets exist before the proxy serves), then keep rescanning."""
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._rescan_forever(i), name=f"eks-discovery-{i}") for i in range(len(self._scanners))
        ]

    async def stop(self) -> None:
        """Stop rescanning and release the scanners' threads. A stopped service cannot be restarted."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for scanner in self._scanners:
            scanner.close()

    async def refresh(self) -> ScanResult:
        """Scan every source now and publish the changes. Returns the combined result of this scan."""
        results = await asyncio.gather(*(self._scan_source(i) for i in range(len(self._scanners))))
        return combine_results(results)

    async def _scan_source(self, index: int) -> ScanResult:
        result = await self._scanners[index].scan()
        self._by_source[index] = keep_stale(result, self._by_source[index])
        await self._publish()
        return result

    async def _rescan_forever(self, index: int) -> None:
        interval = self._scanners[index].source.scan_interval_minutes * 60
        while True:
            await self._sleep(interval)
            try:
                await self._scan_source(index)
            except Exception:
                log.exception("EKS discovery scan crashed; trying again in %d minutes", interval // 60)

    async def _publish(self) -> None:
        async with self._publish_lock:
            merged, collisions = index_by_socket_name([list(c.values()) for c in self._by_source])
            for problem in collisions:
                log.error("%s", problem)
            added, changed, removed = diff(self._current, merged)
            self._current = merged
            DISCOVERED_SOCKETS.set(len(merged))
            if not (added or changed or removed):
                return
            log.info("EKS discovery: %d added, %d changed, %d removed", len(added), len(changed), len(removed))
            for callback in list(self._subscribers):
                try:
                    outcome = callback(added, changed, removed)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    log.exception("an EKS discovery subscriber failed")
