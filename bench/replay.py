"""`policy replay` speed: audit events re-decided per second, reading included.

The policy set and request mix of bench.policy (500 policies x 5 rules, some with source-IP and
time conditions), written as an audit log of N events (one JSON line each, with times spread over
a week), then replayed from the file exactly as `python -m connector policy replay` does it.
Run: `python -m bench.replay [--events N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.policy import POLICIES, RULES_PER_POLICY, SOCKETS, make_callers, make_policies, make_requests, print_table
from connector.policy.engine import PolicyEngine
from connector.policy.replay import Decider, Filters, ReadStats, read_requests, replay


def write_log(path: Path, rng: random.Random, events: int) -> None:
    requests = make_requests(rng, 10_000)
    callers = make_callers(rng, 2_000)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    with path.open("w") as out:
        for i in range(events):
            method, kube_path, query = requests[i % len(requests)]
            identity, socket, _, ip = callers[rng.randrange(len(callers))]
            when = start + timedelta(seconds=rng.randrange(7 * 24 * 3600))
            event = {
                "request_id": f"{i:032x}",
                "stage": "ResponseComplete",
                "decision": rng.choice(("allow", "deny")),
                "code": 200,
                "method": method,
                "path": f"/sockets/{socket}{kube_path}",
                "source_ip": ip,
                "time": when.isoformat().replace("+00:00", "Z"),
                "query": query,
                "user": identity.user,
                "groups": list(identity.groups),
                "socket": socket,
            }
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed replays of the log (best is reported)")
    args = parser.parse_args(argv)
    rng = random.Random(42)
    policies = make_policies(rng)
    tags = {s: {"env": s.split("-")[2], "team": s.split("-")[1]} for s in SOCKETS}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "audit.log"
        write_log(log, rng, args.events)
        best = float("inf")
        changed = 0
        for _ in range(args.rounds):
            decider = Decider(PolicyEngine(policies), tags)
            stats = ReadStats()
            t0 = time.perf_counter()
            result = replay(read_requests([str(log)], stats, Filters()), stats, decider, None)
            best = min(best, time.perf_counter() - t0)
            changed = result.changed
    rows = [
        ("policy set", f"{POLICIES} policies x {RULES_PER_POLICY} rules"),
        ("audit log", f"{args.events:,} events ({changed:,} change)"),
        ("replay, reading included", f"{args.events / best:,.0f} events/s"),
        ("machine", f"Python {platform.python_version()}, {platform.machine()}, one core"),
    ]
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
