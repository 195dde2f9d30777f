"""EKS discovery and token figures quoted in the README.

- Discovery: one scan of 500 clusters across 10 regions against moto's server (the embedded AWS on
  127.0.0.1, in this process): wall time and AWS calls, at several concurrency bounds, as is and with
  a simulated network round trip per call (what the concurrency bound is for).
- Tokens: `EksTokenCache.get` per second with a warm cache (a valid token is handed out) and a cold
  one (every call signs a new token), the bare signer, and `verify_eks_token` (what the sandbox's
  emulated clusters run per request).

Run: `python -m bench.aws [--clusters N] [--regions N] [--rounds N] [--latency-ms N] [--tokens N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import boto3

from connector.aws.credentials import AwsCredentials, make_session
from connector.aws.discovery import DiscoveryConfig, EksDiscoveryConfig, ScanOptions, ScanResult, scan_once
from connector.aws.token import AwsPrincipal, EksTokenCache, EksTokenSigner, verify_eks_token
from sandbox.aws import EmbeddedAws, add_moto_cluster, shape_moto_cluster

REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1",
    "eu-west-2", "eu-central-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1",
]  # fmt: skip
KEY_ID = "AKIABENCHMARKEXAMPLE"
SECRET = "bench-secret-access-key"


def _isolate_environment(endpoint_url: str | None) -> None:
    """This process talks to the embedded AWS only (or to nothing), with fake keys and no shared
    config files."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    if endpoint_url is not None:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    os.environ.update(
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )


def _with_latency(seconds: float) -> Callable[[AwsCredentials | None], boto3.Session]:
    """Sessions whose calls wait `seconds` before they are sent, as a network round trip to AWS would
    (moto on loopback answers in about as long as it takes to compute the answer)."""

    def delay(**_: object) -> None:
        time.sleep(seconds)  # in the scanner's worker thread, as a blocking socket read would be

    def factory(credentials: AwsCredentials | None) -> boto3.Session:
        session = make_session(credentials)
        if seconds:
            session.events.register("before-send", delay)
        return session

    return factory


def bench_discovery(clusters: int, regions: int, rounds: int, latency: int) -> None:
    with EmbeddedAws() as aws:
        _isolate_environment(aws.endpoint_url)
        used = REGIONS[:regions]
        for i in range(clusters):
            region = used[i % len(used)]
            add_moto_cluster(f"cluster-{i:04d}", region, tags={"team": f"t{i % 7}"})
            shape_moto_cluster(f"cluster-{i:04d}", region, endpoint=f"https://10.{i // 250}.{i % 250}.1")
        cfg = DiscoveryConfig(aws_eks=[EksDiscoveryConfig(regions=used)])
        print(f"discovery: {clusters} clusters in {len(used)} regions, moto server at {aws.endpoint_url}")
        for latency_ms in (0, latency):
            for concurrency in (1, 10, 32):
                options = ScanOptions(concurrency=concurrency, session_factory=_with_latency(latency_ms / 1000))
                times: list[float] = []
                results: list[ScanResult] = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    results.append(asyncio.run(scan_once(cfg, options=options)))
                    times.append(time.perf_counter() - started)
                result = results[-1]
                print(
                    f"  +{latency_ms:>3} ms per call, concurrency {concurrency:>2}: {statistics.median(times):6.2f} s "
                    f"per scan (median of {rounds}), {result.api_calls} AWS calls, {len(result.clusters)} sockets, "
                    f"outcome {result.outcome}"
                )


async def _cache_rate(cache: EksTokenCache, n: int, *, cold: bool) -> float:
    started = time.perf_counter()
    for i in range(n):
        await cache.get(f"c{i}" if cold else "c", "eu-west-1", None)
    return n / (time.perf_counter() - started)


def bench_tokens(n: int) -> None:
    _isolate_environment(None)
    started = time.perf_counter()
    signer = EksTokenSigner(make_session(AwsCredentials(), region="eu-west-1"), "eu-west-1")
    setup_ms = (time.perf_counter() - started) * 1000
    print(f"tokens: signer set-up (endpoint resolution, once per credentials and region): {setup_ms:.0f} ms")

    started = time.perf_counter()
    tokens = [signer.sign(f"c{i}").token for i in range(n)]
    print(f"  EksTokenSigner.sign:           {n / (time.perf_counter() - started):>9,.0f} tokens/s")

    cache = EksTokenCache(signer_factory=lambda creds, region: signer)
    cold = asyncio.run(_cache_rate(cache, n, cold=True))
    warm = asyncio.run(_cache_rate(cache, n, cold=False))
    print(f"  EksTokenCache.get, cold cache: {cold:>9,.0f} tokens/s (each call signs)")
    print(f"  EksTokenCache.get, warm cache: {warm:>9,.0f} tokens/s (a cached token is handed out)")

    lookup = {KEY_ID: AwsPrincipal(SECRET, "arn:aws:iam::123456789012:user/bench")}.get
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i, token in enumerate(tokens):
        verify_eks_token(token, f"c{i}", now, lookup)
    print(f"  verify_eks_token:              {n / (time.perf_counter() - started):>9,.0f} tokens/s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aws", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--regions", type=int, default=10, choices=range(1, len(REGIONS) + 1))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=50, help="simulated round trip to AWS per call")
    parser.add_argument("--tokens", type=int, default=20_000)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    saved = dict(os.environ)
    try:
        bench_discovery(args.clusters, args.regions, args.rounds, args.latency_ms)
        bench_tokens(args.tokens)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
