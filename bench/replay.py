"""`policy replay` speed: audit events re-decided per second, reading included.

The policy set and request mix of bench.policy (500 policies x 5 rules, some with source-IP and
time conditions), written as an audit log of N events (the connector's own audit lines, about 800 bytes each: a
random caller of 2,000 and one of 10,000 requests, times spread over a week), then replayed from the
file exactly as `python -m connector policy replay` does it (table output, a grant ledger). Two
logs, the same requests in both:

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
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.policy import POLICIES, RULES_PER_POLICY, SOCKETS, make_callers, make_policies, make_requests, print_table
from connector.audit.events import AuditEvent, utc_timestamp
from connector.kube.requestinfo import parse_request_info
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from connector.policy.replay import Decider, Filters, ReadStats, parsed_request, read_requests, replay
from connector.policy.replay_grants import GrantLedger
from connector.proxy.handler import audit_attributes

TAGS = {s: {"env": s.split("-")[2], "team": s.split("-")[1]} for s in SOCKETS}
EDITED_POLICIES = 5


def write_log(path: Path, rng: random.Random, events: int, engine: PolicyEngine | None = None) -> None:
    """N audit events, written as the connector writes them (`AuditEvent.to_line`, every field a
    forwarded request has: parsed request, reason, user agent, upstream status, bytes, duration), so the
    replay reads lines of the real size. The decision is the `engine`'s, or random without one."""
    requests = make_requests(rng, 10_000)
    callers = make_callers(rng, 2_000)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    with path.open("wb") as out:
        for i in range(events):
            method, kube_path, query = requests[i % len(requests)]
            identity, socket, tags, ip = callers[rng.randrange(len(callers))]
            when = start + timedelta(seconds=rng.randrange(7 * 24 * 3600), microseconds=rng.randrange(10**6))
            info = parse_request_info(method, kube_path, query)
            policy, rule = None, None
            if engine is None:
                allowed = rng.random() < 0.5
                reason = "allowed" if allowed else "denied"
            else:
                decided = engine.decide(identity, socket, tags, info, ip, when)
                allowed, policy, rule, reason = decided.allowed, decided.policy, decided.rule, decided.reason
            event = AuditEvent(
                request_id=f"{i:032x}",
                stage="ResponseComplete",
                decision="allow" if allowed else "deny",
                code=200 if allowed else 403,
                method=method,
                path=f"/sockets/{socket}{kube_path}",
                source_ip=ip,
                time=utc_timestamp(when),
                query=query,
                user=identity.user,
                groups=identity.groups,
                auth_method="oidc",
                user_agent="kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0",
                socket=socket,
                request=audit_attributes(info),
                policy=policy,
                rule=rule,
                reason=reason,
                upstream_status=200 if allowed else None,
                upstream_audit_id=f"{rng.getrandbits(128):032x}" if allowed else None,
                bytes_out=rng.randrange(100, 100_000) if allowed else 0,
                duration_ms=rng.random() * 50,
            )
            out.write(event.to_line())


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
        parsed_request.cache_clear()  # every round parses its requests, as one run of the command does
        ledger = GrantLedger()
        decider = Decider(PolicyEngine(policies), TAGS, (), ledger)
        stats = ReadStats()
        w0, c0 = time.perf_counter(), time.process_time()
        result = replay(read_requests([str(log)], stats, Filters(), ledger), stats, decider, None)
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
