"""The `policy replay` and `policy suggest` commands: options, output and exit codes.

replay exits 0 when nothing changes, 1 when something does, 2 on bad input: a CI gate for a
policy repository. The logic is in connector.policy.replay and connector.policy.suggest.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from connector.policy.config_input import load_policy_file, parse_time
from connector.policy.engine import PolicyEngine
from connector.policy.replay import Decider, Filters, ReadStats, read_requests, render_table, replay, summary
from connector.policy.replay_grants import GrantLedger
from connector.policy.suggest import suggest_policy

EXIT_SAME, EXIT_CHANGED = 0, 1


def configure(commands: Any) -> None:
    rp = commands.add_parser(
        "replay",
        help="decide the audit log again with other policies and show what changes",
        description="Re-decide every audited request with the policies of --config (at its own time and "
        "source IP) and compare with the logged decision, or with --baseline's. Exit 0: no change, 1: "
        "changes, 2: bad input.",
    )
    rp.add_argument("--audit", nargs="+", required=True, metavar="FILE", help="audit log files (.gz ok, - = stdin)")
    rp.add_argument("--config", required=True, metavar="NEW.yaml", help="config with the policies to try")
    rp.add_argument("--baseline", metavar="OLD.yaml", help="compare with this config's decisions, not the log's")
    _filters(rp)
    rp.add_argument("--output", choices=("table", "json"), default="table")
    sg = commands.add_parser(
        "suggest",
        help="the smallest policy that allows what a user or group did",
        description="Print a policy (YAML) whose rules allow every allowed request of the subject in the audit log.",
    )
    sg.add_argument("--audit", nargs="+", required=True, metavar="FILE", help="audit log files (.gz ok, - = stdin)")
    _filters(sg, subject_required=True)


def _filters(parser: argparse.ArgumentParser, subject_required: bool = False) -> None:
    parser.add_argument("--since", metavar="ISO8601", help="only requests at or after this time")
    parser.add_argument("--until", metavar="ISO8601", help="only requests before this time")
    parser.add_argument("--socket", metavar="S", help="only requests on this socket")
    subject = parser.add_mutually_exclusive_group(required=subject_required)
    subject.add_argument("--user", metavar="U", help="only requests of this user")
    subject.add_argument("--group", metavar="G", help="only requests of members of this group")


def _read_filters(args: argparse.Namespace) -> Filters:
    return Filters(
        since=parse_time(args.since, "--since") if args.since else None,
        until=parse_time(args.until, "--until") if args.until else None,
        socket=args.socket,
        user=args.user,
        group=args.group,
    )


def _decider(config: str, ledger: GrantLedger) -> Decider:
    loaded, tags = load_policy_file(config, "replay")
    return Decider(PolicyEngine(loaded.policies), tags, loaded.access_requests, ledger)


def _report_malformed(stats: ReadStats, command: str) -> None:
    for line in stats.malformed:
        print(f"policy {command}: malformed line {line}", file=sys.stderr)
    more = stats.malformed_count - len(stats.malformed)
    if more > 0:
        print(f"policy {command}: and {more} more malformed lines", file=sys.stderr)


def _report_unknown_grants(stats: ReadStats) -> None:
    if stats.unknown_grants:
        print(
            f"policy replay: {stats.unknown_grants} logged allows depended on access requests whose approval is "
            "not in the files read, so no grant is replayed for them: give the older files too (oldest first)",
            file=sys.stderr,
        )


def replay_command(args: argparse.Namespace) -> int:
    filters = _read_filters(args)
    ledger = GrantLedger()
    new = _decider(args.config, ledger)
    baseline = _decider(args.baseline, ledger) if args.baseline else None
    stats = ReadStats()
    requests = read_requests(args.audit, stats, filters, ledger)
    if args.output == "json":
        result = replay(requests, stats, new, baseline, lambda r: print(json.dumps(r)))
        _report_malformed(stats, "replay")
        _report_unknown_grants(stats)
        print(json.dumps(summary(result)), file=sys.stderr)
    else:
        result = replay(requests, stats, new, baseline)
        _report_malformed(stats, "replay")
        _report_unknown_grants(stats)
        if result.groups:
            print(render_table(result))
        s = summary(result)
        print(
            f"{s['decided']} requests replayed ({s['events']} events, {s['skipped']} skipped, "
            f"{s['malformed']} malformed): {s['newly_allowed']} newly allowed, {s['newly_denied']} newly denied"
        )
    return EXIT_CHANGED if result.changed else EXIT_SAME


def suggest_command(args: argparse.Namespace) -> int:
    stats = ReadStats()
    requests = read_requests(args.audit, stats, _read_filters(args))
    who = args.user or args.group
    subject = {"users": [args.user]} if args.user else {"groups": [args.group]}
    name = "suggested-" + "".join(c if c.isalnum() else "-" for c in who.lower()).strip("-")
    text = suggest_policy(requests, name[:63], subject)
    _report_malformed(stats, "suggest")
    print(text, end="")
    return 0
