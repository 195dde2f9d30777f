"""Summing the workers' metrics with the supervisor's (`serve --workers N`), by family, name and labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from connector.proxy.metrics_listener import sum_families


def families(build) -> list[Metric]:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    build(registry)
    return list(registry.collect())


def one_process(registry: CollectorRegistry) -> None:
    requests = Counter("requests", "Requests.", ["code"], registry=registry)
    requests.labels("200").inc(3)
    requests.labels("403").inc()
    Gauge("open", "Open now.", registry=registry).set(2)
    Histogram("seconds", "Duration.", buckets=(1, 5), registry=registry).observe(2)


def other_process(registry: CollectorRegistry) -> None:
    Counter("requests", "Requests.", ["code"], registry=registry).labels("200").inc(4)
    Gauge("open", "Open now.", registry=registry).set(1)
    Histogram("seconds", "Duration.", buckets=(1, 5), registry=registry).observe(0.5)
    Counter("scans", "Scans.", registry=registry).inc()


def samples(merged: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in merged
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_same_names_and_labels_add_up_and_the_rest_is_kept() -> None:
    merged = sum_families(families(one_process), families(other_process))
    values = samples(merged)
    assert values[("requests_total", (("code", "200"),))] == 7
    assert values[("requests_total", (("code", "403"),))] == 1
    assert values[("open", ())] == 3
    assert values[("seconds_bucket", (("le", "1.0"),))] == 1
    assert values[("seconds_bucket", (("le", "5.0"),))] == 2
    assert values[("seconds_count", ())] == 2 and values[("seconds_sum", ())] == 2.5
    assert values[("scans_total", ())] == 1
    assert [f.name for f in merged].count("requests") == 1
    assert {f.name: f.type for f in merged}["seconds"] == "histogram"


def test_the_sum_renders_as_prometheus_text() -> None:
    class Summed:
        def collect(self):  # type: ignore[no-untyped-def]
            return sum_families(families(one_process), families(other_process))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Summed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert '\nrequests_total{code="200"} 7.0\n' in text
    assert text.count("# TYPE requests_total counter") == 1


OK = {"code": "200"}


def test_a_counters_start_is_its_earliest_not_a_sum() -> None:
    first, second = families(one_process), families(other_process)

    def created(source: list[Metric]) -> list[float]:
        return [s.value for f in source for s in f.samples if (s.name, s.labels) == ("requests_created", OK)]

    [summed] = created(sum_families(first, second))
    assert summed == min(created(first) + created(second)) and len(created(first) + created(second)) == 2
