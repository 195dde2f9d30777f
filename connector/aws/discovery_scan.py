"""One EKS discovery scan: every region of a source listed and every cluster described, concurrently.

Faults stay local: a region whose ListClusters fails, or a cluster whose DescribeCluster fails, is
reported in the result and the rest is kept (the service then keeps the last good data for what failed,
marked stale). Throttled and transiently failed calls are retried with jittered backoff.

boto3 is synchronous, so AWS calls run in a thread pool owned by the scanner; its size is the
concurrency bound (the event loop's default pool is shared and sized for the CPU count, not for
waiting on AWS). A scan of a few hundred clusters is a few hundred small calls, for which threads
are as fast as an async client and keep boto3's credential chain and endpoint rules unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connector.aws.backoff import Backoff
from connector.aws.credentials import AwsCredentials, make_session
from connector.aws.discovery_config import DiscoveryConfig, EksDiscoveryConfig
from connector.metrics import DISCOVERY_SCANS

if TYPE_CHECKING:
    import boto3

log = logging.getLogger("connector.aws.discovery")

ACTIVE = "ACTIVE"
# Clusters created before access entries existed report no accessConfig; they use aws-auth only.
DEFAULT_AUTHENTICATION_MODE = "CONFIG_MAP"
LIST_PAGE_SIZE = 100  # ListClusters' maximum
ENABLED_OPT_IN_STATUSES = ("opt-in-not-required", "opted-in")
# The key of `region_errors` when the region list itself could not be had (`regions: all`).
ALL_REGIONS = "*"
# DescribeRegions is a global question; asked in this region when the session names none.
DEFAULT_HOME_REGION = "us-east-1"


@dataclass(frozen=True)
class EksCluster:
    """A discovered cluster as a socket. `ca_data` is base64 PEM, as EKS returns it. `stale` means the
    last scan could not confirm it (its region or its DescribeCluster failed; `error` says how) and the
    data is from the scan before. `credentials` are the discovery source's: tokens for it use them."""

    socket_name: str
    cluster_name: str
    region: str
    arn: str
    endpoint: str
    ca_data: str
    version: str
    platform_version: str
    tags: dict[str, str]
    authentication_mode: str
    vpc_id: str
    stale: bool = False
    error: str | None = None
    credentials: AwsCredentials | None = field(default=None, repr=False)

    def to_dict(self, *, include_ca: bool = True) -> dict[str, Any]:
        """JSON-ready fields (credentials never; the CA only when asked)."""
        data = asdict(self)
        del data["credentials"]
        if not include_ca:
            del data["ca_data"]
        return data


@dataclass(frozen=True)
class ScanResult:
    """What one scan found. `clusters` holds only what this scan confirmed, by socket name."""

    clusters: dict[str, EksCluster]
    regions: tuple[str, ...] = ()
    region_errors: dict[str, str] = field(default_factory=dict)
    cluster_errors: dict[tuple[str, str], str] = field(default_factory=dict)  # (region, cluster name)
    problems: tuple[str, ...] = ()  # clusters left out on purpose: bad or colliding socket names
    api_calls: int = 0
    duration_seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """`ok`, `partial` (something failed, something answered) or `failed` (no region answered)."""
        if ALL_REGIONS in self.region_errors or (self.regions and set(self.regions) <= set(self.region_errors)):
            return "failed"
        if self.region_errors or self.cluster_errors or self.problems:
            return "partial"
        return "ok"


@dataclass(frozen=True)
class ScanOptions:
    """How scans run. `session_factory` and `backoff` are also the tests' hooks (fault injection,
    no real sleeping)."""

    concurrency: int = 10
    backoff: Backoff = field(default_factory=Backoff)
    session_factory: Callable[[AwsCredentials | None], boto3.Session] = make_session


class SourceScanner:
    """Scans one discovery source. Keeps its session, clients and threads from scan to scan (credentials
    and connections are reused); `close` releases the threads."""

    def __init__(self, source: EksDiscoveryConfig, options: ScanOptions | None = None):
        self.source = source
        self._options = options or ScanOptions()
        self._executor = ThreadPoolExecutor(max_workers=self._options.concurrency, thread_name_prefix="eks-discovery")
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        # boto3 sessions are not thread-safe: clients are made one at a time.
        self._client_lock = threading.Lock()
        self._scan_lock = asyncio.Lock()
        self._calls = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def scan(self) -> ScanResult:
        """One full scan. Never raises for AWS trouble: failures are in the result."""
        async with self._scan_lock:
            self._calls = 0
            started = time.monotonic()
            result = await self._scan(started)
        _record(result)
        return result

    async def _scan(self, started: float) -> ScanResult:
        if self.source.regions == "all":
            try:
                regions = await self._enabled_regions()
            except Exception as exc:
                return ScanResult(
                    clusters={},
                    region_errors={ALL_REGIONS: f"cannot list the account's regions: {describe_error(exc)}"},
                    api_calls=self._calls,
                    duration_seconds=time.monotonic() - started,
                )
        else:
            regions = list(self.source.regions)
        per_region = await asyncio.gather(*(self._scan_region(r) for r in regions))
        found: list[EksCluster] = []
        region_errors: dict[str, str] = {}
        cluster_errors: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for region, (clusters, errors, region_error, region_problems) in zip(regions, per_region, strict=True):
            found += clusters
            cluster_errors.update({(region, name): error for name, error in errors.items()})
            problems += region_problems
            if region_error is not None:
                region_errors[region] = region_error
        by_name, collisions = index_by_socket_name([found])
        return ScanResult(
            clusters=by_name,
            regions=tuple(regions),
            region_errors=region_errors,
            cluster_errors=cluster_errors,
            problems=tuple(problems + collisions),
            api_calls=self._calls,
            duration_seconds=time.monotonic() - started,
        )

    async def _enabled_regions(self) -> list[str]:
        session = await self._run(self._get_session)
        ec2 = await self._client("ec2", session.region_name or DEFAULT_HOME_REGION)
        answer = await self._call(
            ec2.describe_regions, Filters=[{"Name": "opt-in-status", "Values": list(ENABLED_OPT_IN_STATUSES)}]
        )
        return sorted(
            r["RegionName"]
            for r in answer.get("Regions", [])
            if r.get("OptInStatus", ENABLED_OPT_IN_STATUSES[0]) in ENABLED_OPT_IN_STATUSES
        )

    async def _scan_region(self, region: str) -> tuple[list[EksCluster], dict[str, str], str | None, list[str]]:
        """(clusters kept, DescribeCluster errors by name, the region's error, naming problems)."""
        try:
            eks = await self._client("eks", region)
            names = await self._list_clusters(eks)
        except Exception as exc:
            return [], {}, f"cannot list EKS clusters in {region}: {describe_error(exc)}", []
        described = await asyncio.gather(
            *(self._call(eks.describe_cluster, name=n) for n in names), return_exceptions=True
        )
        clusters: list[EksCluster] = []
        errors: dict[str, str] = {}
        problems: list[str] = []
        for name, answer in zip(names, described, strict=True):
            if isinstance(answer, BaseException):
                if _error_code(answer) != "ResourceNotFoundException":  # deleted since it was listed
                    errors[name] = f"cannot describe EKS cluster {name} in {region}: {describe_error(answer)}"
                continue
            raw = answer.get("cluster", {})
            if raw.get("status") != ACTIVE or not self.source.selects(raw.get("tags") or {}):
                continue
            try:
                socket = self.source.socket_name(region, name)
            except ValueError as exc:
                problems.append(f"EKS cluster {name} in {region} is not exposed: {exc}")
                continue
            try:
                clusters.append(cluster_from_description(socket, region, raw, self.source.credentials))
            except ValueError as exc:
                errors[name] = f"EKS cluster {name} in {region}: {exc}"
        return clusters, errors, None, problems

    async def _list_clusters(self, eks: Any) -> list[str]:
        names: list[str] = []
        seen: set[str] = set()
        token: str | None = None
        while True:
            more = {"nextToken": token} if token else {}
            page = await self._call(eks.list_clusters, maxResults=LIST_PAGE_SIZE, **more)
            names += page.get("clusters", [])
            token = page.get("nextToken")
            if not token:
                return names
            if token in seen:
                raise RuntimeError("ListClusters returned the same nextToken twice")
            seen.add(token)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        """One AWS API call in the pool, retried by the backoff policy; every attempt is counted."""

        async def attempt() -> Any:
            self._calls += 1
            return await self._run(partial(method, **kwargs))

        return await self._options.backoff.run(attempt)

    async def _client(self, service: str, region: str) -> Any:
        client = self._clients.get((service, region))
        if client is None:
            client = await self._run(self._make_client, service, region)
        return client

    def _get_session(self) -> boto3.Session:
        with self._client_lock:
            if self._session is None:
                self._session = self._options.session_factory(self.source.credentials)
            return self._session

    def _make_client(self, service: str, region: str) -> Any:
        session = self._get_session()
        with self._client_lock:
            if (service, region) not in self._clients:
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": 1},  # Backoff retries, with jitter
                    max_pool_connections=self._options.concurrency,
                    connect_timeout=10,
                    read_timeout=30,
                )
                self._clients[(service, region)] = session.client(service, region_name=region, config=config)
            return self._clients[(service, region)]


def cluster_from_description(
    socket_name: str, region: str, raw: dict[str, Any], credentials: AwsCredentials | None
) -> EksCluster:
    """An EksCluster from DescribeCluster's `cluster`. Raises ValueError if it lacks what a socket needs."""
    endpoint = raw.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
        raise ValueError(f"DescribeCluster gave no https endpoint (got {endpoint!r})")
    ca_data = (raw.get("certificateAuthority") or {}).get("data")
    if not isinstance(ca_data, str) or not ca_data:
        raise ValueError("DescribeCluster gave no certificate authority data")
    return EksCluster(
        socket_name=socket_name,
        cluster_name=str(raw.get("name", "")),
        region=region,
        arn=str(raw.get("arn", "")),
        endpoint=endpoint.rstrip("/"),
        ca_data=ca_data,
        version=str(raw.get("version", "")),
        platform_version=str(raw.get("platformVersion", "")),
        tags=dict(raw.get("tags") or {}),
        authentication_mode=str((raw.get("accessConfig") or {}).get("authenticationMode", DEFAULT_AUTHENTICATION_MODE)),
        vpc_id=str((raw.get("resourcesVpcConfig") or {}).get("vpcId", "")),
        credentials=credentials,
    )


def index_by_socket_name(groups: Sequence[Sequence[EksCluster]]) -> tuple[dict[str, EksCluster], list[str]]:
    """Clusters by socket name, and one problem per name two clusters claim. Neither of two colliding
    clusters is exposed: a name that could mean either cluster must not silently pick one."""
    claims: dict[str, list[EksCluster]] = {}
    for group in groups:
        for cluster in group:
            claims.setdefault(cluster.socket_name, []).append(cluster)
    clusters: dict[str, EksCluster] = {}
    problems: list[str] = []
    for name, claimants in claims.items():
        if len(claimants) == 1:
            clusters[name] = claimants[0]
            continue
        who = " and ".join(f"EKS cluster {c.cluster_name} in {c.region} ({c.arn})" for c in claimants)
        problems.append(
            f"socket name {name!r} is claimed by {who}; neither is exposed: "
            "change socket_name_template or a cluster name"
        )
    return clusters, problems


def combine_results(results: Sequence[ScanResult]) -> ScanResult:
    """One result from the results of several sources (names must be unique across them too)."""
    clusters, collisions = index_by_socket_name([list(r.clusters.values()) for r in results])
    region_errors: dict[str, str] = {}
    cluster_errors: dict[tuple[str, str], str] = {}
    for r in results:
        for region, error in r.region_errors.items():
            region_errors[region] = f"{region_errors[region]}; {error}" if region in region_errors else error
        cluster_errors.update(r.cluster_errors)
    return ScanResult(
        clusters=clusters,
        regions=tuple(sorted({region for r in results for region in r.regions})),
        region_errors=region_errors,
        cluster_errors=cluster_errors,
        problems=tuple(p for r in results for p in r.problems) + tuple(collisions),
        api_calls=sum(r.api_calls for r in results),
        duration_seconds=max((r.duration_seconds for r in results), default=0.0),
    )


async def scan_once(cfg: DiscoveryConfig, *, options: ScanOptions | None = None) -> ScanResult:
    """Scan every source of `cfg` once (concurrently) and combine what they found."""
    scanners = [SourceScanner(source, options) for source in cfg.aws_eks]
    try:
        results = await asyncio.gather(*(s.scan() for s in scanners))
    finally:
        for scanner in scanners:
            scanner.close()
    return combine_results(results)


def describe_error(exc: BaseException) -> str:
    """A one-line account of an AWS failure for logs and `error` fields."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "call")
        return f"{operation} failed: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, BotoCoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def _record(result: ScanResult) -> None:
    DISCOVERY_SCANS.labels(outcome=result.outcome).inc()
    for error in result.region_errors.values():
        log.warning("%s", error)
    for error in result.cluster_errors.values():
        log.warning("%s", error)
    for problem in result.problems:
        log.error("%s", problem)
    log.info(
        "EKS discovery scan %s: %d clusters exposed, %d regions, %d AWS calls, %.2fs",
        result.outcome,
        len(result.clusters),
        len(result.regions),
        result.api_calls,
        result.duration_seconds,
    )
