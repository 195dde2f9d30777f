"""EKS discovery against moto (in-process mock): several regions, tag filters, clusters not ACTIVE,
pagination, failing regions and clusters, throttling with backoff, name collisions, `regions: all`,
an assumed role, and the DiscoveryService's stale handling and change notifications."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.backends import get_backend

from connector.aws.backoff import Backoff, is_retryable
from connector.aws.credentials import AwsCredentials
from connector.aws.discovery import (
    DiscoveryConfig,
    DiscoveryService,
    EksCluster,
    EksDiscoveryConfig,
    ScanOptions,
    scan_once,
)
from connector.metrics import DISCOVERED_SOCKETS, DISCOVERY_SCANS
from tests.support.aws import FaultInjector, client_error, create_mock_cluster, mocked_aws

REGIONS = ["eu-west-1", "us-east-1", "ap-southeast-2"]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    with mocked_aws(monkeypatch, tmp_path):
        yield


class Sleeps:
    """Backoff's sleep: records the pauses, waits for none of them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def faults() -> FaultInjector:
    return FaultInjector()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def options(faults: FaultInjector, sleeps: Sleeps) -> ScanOptions:
    return ScanOptions(
        concurrency=4,
        backoff=Backoff(attempts=4, base=0.25, cap=1.0, sleep=sleeps, random=lambda: 0.5),
        session_factory=faults.session_factory(),
    )


def source(**kwargs: object) -> DiscoveryConfig:
    kwargs.setdefault("regions", REGIONS)
    return DiscoveryConfig(aws_eks=[EksDiscoveryConfig.model_validate(kwargs)])


def scans(outcome: str) -> float:
    return DISCOVERY_SCANS.labels(outcome=outcome)._value.get()


async def test_finds_the_active_clusters_of_every_region_with_their_details(aws: None, options: ScanOptions) -> None:
    arn = create_mock_cluster("payments", "eu-west-1", tags={"team": "pay"}, authentication_mode="API")
    create_mock_cluster("search", "eu-west-1")
    create_mock_cluster("ledger", "us-east-1")
    create_mock_cluster("Big_Data", "ap-southeast-2")
    create_mock_cluster("building", "us-east-1", status="CREATING")
    create_mock_cluster("elsewhere", "sa-east-1")
    ok_before = scans("ok")

    result = await scan_once(source(), options=options)

    assert sorted(result.clusters) == [
        "eks-ap-southeast-2-big-data",
        "eks-eu-west-1-payments",
        "eks-eu-west-1-search",
        "eks-us-east-1-ledger",
    ]
    payments = result.clusters["eks-eu-west-1-payments"]
    assert payments.cluster_name == "payments"
    assert payments.region == "eu-west-1"
    assert payments.arn == arn
    assert payments.endpoint == "https://payments.eu-west-1.eks.example.test"
    assert base64.b64decode(payments.ca_data).startswith(b"-----BEGIN CERTIFICATE-----")
    assert payments.version == "1.31"
    assert payments.platform_version.startswith("eks.")
    assert payments.tags == {"team": "pay"}
    assert payments.authentication_mode == "API"
    assert payments.vpc_id == "vpc-eu-west-1"
    assert (payments.stale, payments.error) == (False, None)
    assert result.outcome == "ok"
    assert result.regions == tuple(sorted(REGIONS))
    assert result.api_calls == 3 + 5  # one ListClusters per region, one DescribeCluster per cluster
    assert scans("ok") == ok_before + 1


async def test_tag_filters_include_and_exclude(aws: None, options: ScanOptions) -> None:
    create_mock_cluster("a", "eu-west-1", tags={"expose": "yes"})
    create_mock_cluster("b", "eu-west-1", tags={"expose": "yes", "env": "sandbox"})
    create_mock_cluster("c", "us-east-1", tags={"team": "risk"})
    create_mock_cluster("d", "us-east-1", tags={"team": "ops"})
    create_mock_cluster("e", "ap-southeast-2")
    cfg = source(include_with_tags={"expose": [], "team": ["risk"]}, exclude_with_tags={"env": ["sandbox"]})

    result = await scan_once(cfg, options=options)

    assert sorted(c.cluster_name for c in result.clusters.values()) == ["a", "c"]


async def test_follows_list_clusters_pages(aws: None, options: ScanOptions, faults: FaultInjector) -> None:
    for i in range(105):
        create_mock_cluster(f"c{i:03d}", "eu-west-1")

    result = await scan_once(source(regions=["eu-west-1"]), options=options)

    assert len(result.clusters) == 105
    assert [c for c in faults.calls if c[0] == "ListClusters"] == [("ListClusters", "eu-west-1", None)] * 2


async def test_a_failing_region_keeps_the_others(aws: None, options: ScanOptions, faults: FaultInjector) -> None:
    create_mock_cluster("a", "eu-west-1")
    create_mock_cluster("b", "us-east-1")
    create_mock_cluster("c", "ap-southeast-2")
    faults.fail("ListClusters", "us-east-1", client_error("AccessDeniedException", "ListClusters", 403, "no"))
    partial_before = scans("partial")

    result = await scan_once(source(), options=options)

    assert sorted(c.cluster_name for c in result.clusters.values()) == ["a", "c"]
    assert result.region_errors == {
        "us-east-1": "cannot list EKS clusters in us-east-1: ListClusters failed: AccessDeniedException: no"
    }
    assert result.outcome == "partial"
    assert faults.calls.count(("ListClusters", "us-east-1", None)) == 1  # access denied is not retried
    assert scans("partial") == partial_before + 1


async def test_a_failing_describe_keeps_the_other_clusters(
    aws: None, options: ScanOptions, faults: FaultInjector
) -> None:
    create_mock_cluster("a", "eu-west-1")
    create_mock_cluster("b", "eu-west-1")
    faults.fail("DescribeCluster", "eu-west-1", client_error("ServerException", "DescribeCluster", 500), cluster="b")

    result = await scan_once(source(regions=["eu-west-1"]), options=options)

    assert [c.cluster_name for c in result.clusters.values()] == ["a"]
    assert list(result.cluster_errors) == [("eu-west-1", "b")]
    assert "ServerException" in result.cluster_errors[("eu-west-1", "b")]
    assert faults.calls.count(("DescribeCluster", "eu-west-1", "b")) == 4  # a 500 is retried, 4 attempts


async def test_throttling_is_retried_with_jittered_backoff(
    aws: None, options: ScanOptions, faults: FaultInjector, sleeps: Sleeps
) -> None:
    create_mock_cluster("a", "eu-west-1")
    throttled = client_error("ThrottlingException", "ListClusters", 400, "Rate exceeded")
    faults.fail("ListClusters", "eu-west-1", throttled, throttled, then_succeed=True)

    result = await scan_once(source(regions=["eu-west-1"]), options=options)

    assert [c.cluster_name for c in result.clusters.values()] == ["a"]
    assert result.outcome == "ok"
    assert sleeps.delays == [0.5 * 0.25, 0.5 * 0.5]  # random() * min(cap, base * 2**n)
    assert result.api_calls == 3 + 1


async def test_endless_throttling_gives_up_and_reports(
    aws: None, options: ScanOptions, faults: FaultInjector, sleeps: Sleeps
) -> None:
    create_mock_cluster("a", "eu-west-1")
    faults.fail("DescribeCluster", "eu-west-1", client_error("TooManyRequestsException", "DescribeCluster", 429))

    result = await scan_once(source(regions=["eu-west-1"]), options=options)

    assert result.clusters == {}
    assert "TooManyRequestsException" in result.cluster_errors[("eu-west-1", "a")]
    assert sleeps.delays == [0.125, 0.25, 0.5]  # capped at 1.0 * 0.5 from the fourth on; 4 attempts


def test_backoff_delays_are_jittered_within_the_cap() -> None:
    import random as stdlib_random

    rng = stdlib_random.Random(7)
    backoff = Backoff(base=0.25, cap=8.0, random=rng.random)
    for retry in range(12):
        delay = backoff.delay(retry)
        assert 0 <= delay <= min(8.0, 0.25 * 2**retry)
    assert len({round(backoff.delay(3), 6) for _ in range(20)}) > 1  # jitter: not one fixed value


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (client_error("ThrottlingException", "X"), True),
        (client_error("Throttling", "X"), True),
        (client_error("RequestLimitExceeded", "X"), True),
        (client_error("Whatever", "X", 429), True),
        (client_error("InternalFailure", "X", 503), True),
        (client_error("AccessDeniedException", "X", 403), False),
        (client_error("ResourceNotFoundException", "X", 404), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried(exc: Exception, retry: bool) -> None:
    assert is_retryable(exc) is retry


async def test_socket_name_collisions_expose_neither_cluster(aws: None, options: ScanOptions) -> None:
    arn_eu = create_mock_cluster("shared", "eu-west-1")
    arn_us = create_mock_cluster("shared", "us-east-1")
    create_mock_cluster("My_App", "ap-southeast-2")
    create_mock_cluster("my-app", "ap-southeast-2")
    create_mock_cluster("unique", "ap-southeast-2")

    result = await scan_once(source(socket_name_template="{cluster}"), options=options)

    assert list(result.clusters) == ["unique"]
    assert result.outcome == "partial"
    shared = next(p for p in result.problems if "'shared'" in p)
    assert arn_eu in shared and arn_us in shared
    assert "neither is exposed" in shared
    assert any("'my-app'" in p and "My_App" in p and "my-app in ap-southeast-2" in p for p in result.problems)


async def test_a_name_that_is_no_dns_label_is_reported(aws: None, options: ScanOptions) -> None:
    create_mock_cluster("x" * 70, "eu-west-1")
    create_mock_cluster("fine", "eu-west-1")

    result = await scan_once(source(regions=["eu-west-1"]), options=options)

    assert list(result.clusters) == ["eks-eu-west-1-fine"]
    assert len(result.problems) == 1 and "is not a DNS label" in result.problems[0]


async def test_all_regions_means_the_enabled_ones(aws: None, options: ScanOptions) -> None:
    enabled = [
        r["RegionName"]
        for r in boto3.client("ec2", region_name="us-east-1").describe_regions(AllRegions=True)["Regions"]
        if r["OptInStatus"] != "not-opted-in"
    ]
    create_mock_cluster("home", "eu-west-1")
    create_mock_cluster("opted-out", "ap-east-1")  # moto reports ap-east-1 as not opted in

    result = await scan_once(source(regions="all"), options=options)

    assert "ap-east-1" not in enabled
    assert sorted(result.regions) == sorted(enabled)
    assert [c.cluster_name for c in result.clusters.values()] == ["home"]


async def test_all_regions_when_the_region_list_fails(aws: None, options: ScanOptions, faults: FaultInjector) -> None:
    faults.fail("DescribeRegions", "us-east-1", client_error("UnauthorizedOperation", "DescribeRegions", 403))
    failed_before = scans("failed")

    result = await scan_once(source(regions="all"), options=options)

    assert result.outcome == "failed"
    assert "UnauthorizedOperation" in result.region_errors["*"]
    assert scans("failed") == failed_before + 1


async def test_scans_with_an_assumed_role(aws: None, options: ScanOptions) -> None:
    create_mock_cluster("a", "eu-west-1")
    role = "arn:aws:iam::123456789012:role/discovery"
    cfg = source(regions=["eu-west-1"], credentials={"role_arn": role, "session_name": "scan"})

    result = await scan_once(cfg, options=options)

    assert list(result.clusters) == ["eks-eu-west-1-a"]
    assert result.clusters["eks-eu-west-1-a"].credentials == AwsCredentials(role_arn=role, session_name="scan")
    assumed = get_backend("sts")["123456789012"]["aws"].assumed_roles
    assert [(r.role_arn, r.session_name) for r in assumed] == [(role, "scan")]


async def test_every_region_failing_is_a_failed_scan(aws: None, options: ScanOptions, faults: FaultInjector) -> None:
    for region in REGIONS:
        faults.fail("ListClusters", region, client_error("AccessDeniedException", "ListClusters", 403))
    result = await scan_once(source(), options=options)
    assert result.outcome == "failed"
    assert set(result.region_errors) == set(REGIONS)


# --- the service ------------------------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[list[str], list[str], list[str]]] = []

    def __call__(self, added: list[EksCluster], changed: list[EksCluster], removed: list[EksCluster]) -> None:
        self.seen.append(
            ([c.socket_name for c in added], [c.socket_name for c in changed], [c.socket_name for c in removed])
        )


async def test_the_service_publishes_changes_and_keeps_unconfirmed_clusters_stale(
    aws: None, options: ScanOptions, faults: FaultInjector
) -> None:
    create_mock_cluster("a", "eu-west-1")
    create_mock_cluster("b", "us-east-1")
    create_mock_cluster("c", "us-east-1")
    service = DiscoveryService(source(regions=["eu-west-1", "us-east-1"]), options=options)
    changes = Changes()
    service.subscribe(changes)
    await service.start()
    try:
        assert changes.seen == [(["eks-eu-west-1-a", "eks-us-east-1-b", "eks-us-east-1-c"], [], [])]
        assert DISCOVERED_SOCKETS._value.get() == 3

        # us-east-1 cannot be listed: its clusters stay, stale, with the error.
        faults.fail("ListClusters", "us-east-1", client_error("AccessDeniedException", "ListClusters", 403))
        await service.refresh()
        assert changes.seen[-1] == ([], ["eks-us-east-1-b", "eks-us-east-1-c"], [])
        b = service.current()["eks-us-east-1-b"]
        assert b.stale and b.error is not None and "AccessDeniedException" in b.error
        assert not service.current()["eks-eu-west-1-a"].stale

        # Nothing changed: no notification.
        await service.refresh()
        assert len(changes.seen) == 2

        # The region answers again: c was deleted meanwhile, d is new, b is fresh again.
        faults.rules.clear()
        boto3.client("eks", region_name="us-east-1").delete_cluster(name="c")
        create_mock_cluster("d", "us-east-1")
        await service.refresh()
        assert changes.seen[-1] == (["eks-us-east-1-d"], ["eks-us-east-1-b"], ["eks-us-east-1-c"])
        assert not service.current()["eks-us-east-1-b"].stale

        # One DescribeCluster fails: that cluster alone goes stale.
        faults.fail("DescribeCluster", "eu-west-1", client_error("AccessDeniedException", "DescribeCluster", 403))
        await service.refresh()
        assert changes.seen[-1] == ([], ["eks-eu-west-1-a"], [])
        assert service.current()["eks-eu-west-1-a"].stale

        # A cluster leaving ACTIVE or losing its tag match is removed (the region answered).
        faults.rules.clear()
        get_backend("eks")["123456789012"]["us-east-1"].clusters["d"].status = "DELETING"
        await service.refresh()
        assert changes.seen[-1] == ([], ["eks-eu-west-1-a"], ["eks-us-east-1-d"])
        assert DISCOVERED_SOCKETS._value.get() == 2
    finally:
        await service.stop()


async def test_the_service_rescans_on_its_interval_until_stopped(aws: None, options: ScanOptions) -> None:
    create_mock_cluster("a", "eu-west-1")
    ticks: asyncio.Queue[None] = asyncio.Queue()
    intervals: list[float] = []

    async def sleep(seconds: float) -> None:
        intervals.append(seconds)
        await ticks.get()

    service = DiscoveryService(source(regions=["eu-west-1"], scan_interval_minutes=7), options=options, sleep=sleep)
    changes = Changes()
    service.subscribe(changes)
    await service.start()
    create_mock_cluster("b", "eu-west-1")
    ticks.put_nowait(None)
    for _ in range(200):
        if len(changes.seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert changes.seen[-1] == (["eks-eu-west-1-b"], [], [])
    assert intervals[:2] == [7 * 60, 7 * 60]
    await service.stop()
    assert all(task.done() for task in asyncio.all_tasks() if task.get_name().startswith("eks-discovery"))


async def test_subscribers_may_be_async_and_one_failing_does_not_stop_the_others(
    aws: None, options: ScanOptions
) -> None:
    create_mock_cluster("a", "eu-west-1")
    service = DiscoveryService(source(regions=["eu-west-1"]), options=options)
    seen: list[str] = []

    def broken(*_: object) -> None:
        raise RuntimeError("subscriber bug")

    async def later(added: list[EksCluster], changed: list[EksCluster], removed: list[EksCluster]) -> None:
        await asyncio.sleep(0)
        seen.extend(c.socket_name for c in added)

    service.subscribe(broken)
    unsubscribe = service.subscribe(later)
    await service.refresh()
    assert seen == ["eks-eu-west-1-a"]
    unsubscribe()
    create_mock_cluster("b", "eu-west-1")
    await service.refresh()
    assert seen == ["eks-eu-west-1-a"]
    await service.stop()


async def test_two_sources_claiming_one_name_expose_neither(aws: None, options: ScanOptions) -> None:
    create_mock_cluster("a", "eu-west-1")
    cfg = DiscoveryConfig(
        aws_eks=[
            EksDiscoveryConfig(regions=["eu-west-1"], socket_name_template="{cluster}"),
            EksDiscoveryConfig(regions=["eu-west-1"], socket_name_template="{cluster}", include_with_tags={}),
        ]
    )
    result = await scan_once(cfg, options=options)
    assert result.clusters == {}
    assert any("'a' is claimed by" in p for p in result.problems)
    service = DiscoveryService(cfg, options=options)
    await service.refresh()
    assert service.current() == {}
    await service.stop()
