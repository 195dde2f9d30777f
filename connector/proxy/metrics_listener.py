"""The connector's Prometheus `/metrics`, on a listener of its own (`server.metrics_listen`).

Not on the main listener: that one is what users' kubeconfigs point at, and `kubectl get --raw /metrics`
goes to the root of the host, not under `/sockets/NAME/`, so the connector's own metrics answered as if
they were the cluster's, to anyone. The metrics listener is plain HTTP without authentication, on
loopback unless the config says otherwise (the Deployment opens it to the pod network for scraping).

With `serve --workers N` every worker has its own counters: each writes them to files in a private
directory its supervisor made (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`), and
the supervisor serves their sum together with its own registry (discovery scans, config reloads and
audit write errors happen in the supervisor). Counters of a worker that died stay counted; its gauges
(`multiprocess_mode="livesum"` in connector.metrics) go once the supervisor marks it dead. A single
process serves its own registry, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import prometheus_client
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from yarl import URL

from connector.proxy.config import ListenAddress

# Where a worker's prometheus_client keeps its values: set in a worker's environment by its supervisor.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

MetricsBody = Callable[[], bytes]


def own_metrics() -> bytes:
    """This process's metrics, in Prometheus' text format."""
    return prometheus_client.generate_latest(prometheus_client.REGISTRY)


def sum_families(*sources: Iterable[Metric]) -> list[Metric]:
    """One family per name, each sample the sum of the samples with its name and labels in `sources`.

    A sum is right for everything the connector exports: counters, histograms and `livesum` gauges. A
    counter's `_created` (when it started) is the earliest of its processes'.
    """
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            values = sums.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif sample.name.endswith("_created"):
                    values[key] = min(values[key], sample.value)
                else:
                    values[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in sums[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _WorkersAndSupervisor(Collector):
    def __init__(self, directory: str):
        self._workers = MultiProcessCollector(None, path=directory)

    def collect(self) -> Iterable[Metric]:
        return sum_families(prometheus_client.REGISTRY.collect(), self._workers.collect())


def combined_metrics(directory: str) -> MetricsBody:
    """The metrics of every worker that wrote to `directory`, summed, with this (the supervisor's) process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WorkersAndSupervisor(directory))
    return lambda: prometheus_client.generate_latest(registry)


class MetricsListener:
    """`GET /metrics` over plain HTTP; `start` gives the URL it serves on (port 0 resolved)."""

    def __init__(self, body: MetricsBody):
        self._body = body
        self._runner: web.AppRunner | None = None

    async def start(self, address: ListenAddress) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, address.host, address.port).start()
        except BaseException:
            await self.stop()
            raise
        host, port = self._runner.addresses[0][:2]
        return str(URL.build(scheme="http", host=host, port=port, path="/metrics"))

    async def _metrics(self, request: web.Request) -> web.Response:
        # Reading the workers' files (or rendering a big registry) must not hold up the event loop.
        body = await asyncio.to_thread(self._body)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
