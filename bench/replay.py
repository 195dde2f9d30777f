"""`policy replay` speed: audit events re-decided per second, reading included.

The policy set and request mix of bench.policy (500 policies x 5 rules, some with source-IP and
time conditions), written as an audit log of N events (one JSON line each: a random caller of 2,000
and one of 10,000 requests, times spread over a week), then replayed from the file exactly as
`python -m connector policy replay` does it (table output). Two logs, the same requests in both:

- adversarial: the logged decision is a coin toss, so half the events are changes (the worst case
  for the replay's bookkeeping of changes);
- realistic: the logged decision is the engine's under the policy set, and the replay is of a
  config that edits a few of its policies (one namespace fewer in 5 rules, one policy removed), so
  few events change, as in a CI job checking a policy edit.

Each figure is the best of --rounds replays, by wall clock and by CPU time of the process (the
steadier figure on a shared machine). Run: `python -m bench.replay [--events N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.policy import POLICIES, RULES_PER_POLICY, SOCKETS, make_callers, make_policies, make_requests, print_table
from connector.kube.requestinfo import parse_request_info
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from connector.policy.replay import Decider, Filters, ReadStats, read_requests, replay

TAGS = {s: {"env": s.split("-")[2], "team": s.split("-")[1]} for s in SOCKETS}
EDITED_POLICIES = 5


def write_log(path: Path, rng: random.Random, events: int, engine: PolicyEngine | None = None) -> None:
    """N audit events; the decision is the `engine`'s, or random without one."""
    requests = make_requests(rng, 10_000)
    callers = make_callers(rng, 2_000)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    with path.open("w") as out:
        for i in range(events):
            method, kube_path, query = requests[i % len(requests)]
            identity, socket, tags, ip = callers[rng.randrange(len(callers))]
            when = start + timedelta(seconds=rng.randrange(7 * 24 * 3600))
            policy = None
            if engine is None:
                decision = rng.choice(("allow", "deny"))
            else:
                decided = engine.decide(identity, socket, tags, parse_request_info(method, kube_path, query), ip, when)
                decision, policy = ("allow" if decided.allowed else "deny"), decided.policy
            event: dict[str, Any] = {
                "request_id": f"{i:032x}",
                "stage": "ResponseComplete",
                "decision": decision,
                "code": 200 if decision == "allow" else 403,
                "method": method,
                "path": f"/sockets/{socket}{kube_path}",
                "source_ip": ip,
                "time": when.isoformat().replace("+00:00", "Z"),
                "query": query,
                "user": identity.user,
                "groups": list(identity.groups),
                "socket": socket,
            }
            if policy is not None:
                event["policy"] = policy
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def edited(policies: list[Policy], rng: random.Random) -> list[Policy]:
    """The policy set with a few edits a reviewer would make: one namespace dropped from a rule of each
    of EDITED_POLICIES policies, and one more policy removed."""
    out = list(policies)
    picked = rng.sample(range(len(out)), EDITED_POLICIES + 1)
    for index in picked[:-1]:
        data = out[index].model_dump(mode="json", exclude_defaults=True)
        rule = data["kubernetes"]["rules"][0]
        rule["namespaces"] = rule["namespaces"][1:] or ["nowhere"]
        out[index] = Policy.model_validate(data)
    del out[picked[-1]]
    return out


def _measure(log: Path, policies: list[Policy], rounds: int) -> tuple[float, float, int]:
    """(best wall seconds, best CPU seconds, changed requests) of replaying `log` with `policies`."""
    wall = cpu = float("inf")
    changed = 0
    for _ in range(rounds):
        decider = Decider(PolicyEngine(policies), TAGS)
        stats = ReadStats()
        w0, c0 = time.perf_counter(), time.process_time()
        result = replay(read_requests([str(log)], stats, Filters()), stats, decider, None)
        cpu = min(cpu, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
        changed = result.changed
    return wall, cpu, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed replays of each log (best is reported)")
    args = parser.parse_args(argv)
    rng = random.Random(42)
    policies = make_policies(rng)
    rows = [("policy set", f"{POLICIES} policies x {RULES_PER_POLICY} rules")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        adversarial, realistic = Path(tmp) / "adversarial.log", Path(tmp) / "realistic.log"
        write_log(adversarial, random.Random(1), args.events)
        write_log(realistic, random.Random(1), args.events, PolicyEngine(policies))
        for label, log, replayed in (
            ("adversarial (random logged decisions)", adversarial, policies),
            (f"realistic ({EDITED_POLICIES + 1} policies edited)", realistic, edited(policies, rng)),
        ):
            wall, cpu, changed = _measure(log, replayed, args.rounds)
            rows.append(
                (
                    f"{label}",
                    f"{args.events / wall:,.0f} events/s wall, {args.events / cpu:,.0f} events/s CPU "
                    f"({args.events:,} events, {changed:,} change)",
                )
            )
    rows.append(
        (
            "load average (1 min) before / after",
            f"{load_before:.1f} / {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)",
        )
    )
    rows.append(("machine", f"Python {platform.python_version()}, {platform.machine()}, one core"))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
