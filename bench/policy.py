"""Policy engine and request parsing speed: the figures quoted in the README.

A synthetic but realistic load: 500 policies x 5 rules (group and user subjects, exact, glob and tag
socket selectors, a share with source-IP and time conditions), decided against 10,000 parsed
requests from 2,000 callers on 60 sockets (lists, gets, watches, exec, logs, discovery, non-resource
paths). Run: `python -m bench.policy [--requests N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from datetime import UTC, datetime

from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo, parse_request_info, reject_reason
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy

POLICIES = 500
RULES_PER_POLICY = 5
SOCKETS = [f"eks-{team}-{env}" for team in range(20) for env in ("dev", "staging", "prod")]
GROUPS = [f"team-{i}" for i in range(100)]
NAMESPACES = ["default", "kube-system", "web", "api", "team-a", "team-b", "dev", "ci", "monitoring", "data"]
RESOURCES = [
    ("", "pods"), ("", "pods/log"), ("", "pods/exec"), ("", "services"), ("", "configmaps"), ("", "secrets"),
    ("apps", "deployments"), ("apps", "statefulsets"), ("batch", "jobs"), ("", "nodes"), ("", "namespaces"),
]  # fmt: skip
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def make_policies(rng: random.Random) -> list[Policy]:
    policies = []
    for i in range(POLICIES):
        kind = i % 4
        if kind == 0:
            sockets: dict = {"sockets": rng.sample(SOCKETS, 3)}
        elif kind == 1:
            sockets = {"sockets": [f"eks-{rng.randrange(20)}-*", "eks-*-dev"]}
        elif kind == 2:
            tags = {"env": [rng.choice(["dev", "staging", "prod"])], "team": [str(rng.randrange(20))]}
            sockets = {"socket_tags": tags}
        else:
            sockets = {"sockets": [rng.choice(SOCKETS)]}
        conditions: dict = {}
        if i % 5 == 0:
            conditions["source_ips"] = ["10.0.0.0/8", "2001:db8::/32"]
        if i % 10 == 3:
            conditions["time"] = {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "07:00-20:00",
                                  "timezone": "Europe/Berlin"}  # fmt: skip
        rules = []
        for _ in range(RULES_PER_POLICY):
            picked = rng.sample(RESOURCES, 3)
            rule: dict = {
                "api_groups": sorted({g for g, _ in picked}),
                "namespaces": rng.sample(NAMESPACES, 2) + (["team-*"] if rng.random() < 0.3 else []),
                "verbs": rng.sample(VERBS, 3),
                "resources": [r for _, r in picked],
            }
            if rng.random() < 0.2:
                rule["resource_names"] = ["web-*", "api-0"]
            rules.append(rule)
        policies.append(
            Policy.model_validate(
                {
                    "name": f"policy-{i}",
                    "subjects": {"groups": rng.sample(GROUPS, 2), "users": [f"user{rng.randrange(2000)}@example.com"]},
                    **sockets,
                    "conditions": conditions,
                    "kubernetes": {"rules": rules},
                }
            )
        )
    return policies


def make_requests(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    requests = []
    for _ in range(count):
        group, resource = rng.choice(RESOURCES)
        ns = rng.choice(NAMESPACES)
        base = f"/api/v1/namespaces/{ns}" if not group else f"/apis/{group}/v1/namespaces/{ns}"
        name = f"web-{rng.randrange(50)}"
        roll = rng.random()
        if roll < 0.05:
            requests.append(("GET", rng.choice(["/api", "/apis", "/version", "/openapi/v3/apis/apps/v1"]), ""))
        elif roll < 0.08:
            requests.append(("GET", rng.choice(["/healthz", "/metrics", "/livez/ping"]), ""))
        elif "/" in resource:
            plural, sub = resource.split("/")
            method = "GET" if sub == "log" else rng.choice(["GET", "POST"])
            query = "follow=true" if sub == "log" else "command=sh&stdin=true&tty=true"
            requests.append((method, f"{base}/{plural}/{name}/{sub}", query))
        elif resource in ("nodes", "namespaces"):
            requests.append(("GET", f"/api/v1/{resource}", "limit=500"))
        elif roll < 0.45:
            requests.append(("GET", f"{base}/{resource}", rng.choice(["", "watch=1&resourceVersion=10", "limit=500"])))
        elif roll < 0.55:
            requests.append(("GET", f"/api/v1/{resource}" if not group else f"/apis/{group}/v1/{resource}", ""))
        else:
            requests.append((rng.choice(["GET", "PUT", "PATCH", "DELETE"]), f"{base}/{resource}/{name}", ""))
    return requests


def make_callers(rng: random.Random, count: int) -> list[tuple[Identity, str, dict[str, str], str]]:
    callers = []
    for _ in range(count):
        socket = rng.choice(SOCKETS)
        _, team, env = socket.split("-")
        identity = Identity(f"user{rng.randrange(2000)}@example.com", tuple(rng.sample(GROUPS, 3)))
        ip = rng.choice(["10.1.2.3", "192.168.1.10", "2001:db8::7"])
        callers.append((identity, socket, {"env": env, "team": team}, ip))
    return callers


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the requests (best is reported)")
    args = parser.parse_args(argv)

    rng = random.Random(42)
    start = time.perf_counter()
    policies = make_policies(rng)
    engine = PolicyEngine(policies)
    setup = time.perf_counter() - start
    raw = make_requests(rng, args.requests)
    callers = make_callers(rng, 2_000)
    now = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

    parse_best = reject_best = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for method, path, query in raw:
            parse_request_info(method, path, query)
        parse_best = min(parse_best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for method, path, query in raw:
            reject_reason(method, path, query)
        reject_best = min(reject_best, time.perf_counter() - t0)

    parsed: list[RequestInfo] = [parse_request_info(m, p, q) for m, p, q in raw]
    work = [(callers[i % len(callers)], info) for i, info in enumerate(parsed)]
    decide = engine.decide
    clock = time.perf_counter_ns
    latencies: list[int] = []
    total_best = float("inf")
    allowed = 0
    for round_ in range(args.rounds):
        round_latencies = []
        t0 = time.perf_counter()
        for (identity, socket, tags, ip), info in work:
            s = clock()
            decision = decide(identity, socket, tags, info, ip, now)
            round_latencies.append(clock() - s)
            if round_ == 0 and decision.allowed:
                allowed += 1
        elapsed = time.perf_counter() - t0
        if elapsed < total_best:
            total_best, latencies = elapsed, round_latencies

    latencies.sort()
    p50 = statistics.median(latencies) / 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] / 1000
    rows = [
        ("policy set", f"{POLICIES} policies x {RULES_PER_POLICY} rules (compiled in {setup * 1000:.0f} ms)"),
        (
            "request mix",
            f"{len(parsed):,} requests, {len(callers):,} callers, {len(SOCKETS)} sockets, "
            f"{allowed / len(parsed):.0%} allowed",
        ),
        ("PolicyEngine.decide", _rate(len(parsed), total_best)),
        ("decide latency p50 / p99", f"{p50:.1f} µs / {p99:.1f} µs"),
        ("parse_request_info", _rate(len(raw), parse_best)),
        ("reject_reason", _rate(len(raw), reject_best)),
        ("machine", f"Python {platform.python_version()}, {platform.machine()}, one core"),
    ]
    print_table(rows)
    return 0


def print_table(rows: list[tuple[str, str]]) -> None:
    """The figures as the Markdown table the README quotes."""
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    raise SystemExit(main())
