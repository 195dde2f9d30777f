"""`python -m connector policy check`: what would the policies decide, without a cluster.

An admin answers "can alice exec into pods in prod?" with
`python -m connector policy check --config connector.yaml --user alice@example.com --socket prod
POST /api/v1/namespaces/default/pods/web-1/exec?command=sh`. The request is parsed and screened
exactly as the proxy does it, so the answer is the proxy's answer.
Exit codes: 0 allowed, 1 denied, 2 bad input (config, request, options; the reason on stderr).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

from connector.configfile import ConfigError
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info, reject_reason
from connector.policy import replay_cli
from connector.policy.config_input import UsageError, load_policy_file, parse_time
from connector.policy.engine import PolicyEngine

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2
_METHOD = re.compile(r"[A-Za-z]+")


def configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="policy_command", metavar="<command>", required=True)
    check = commands.add_parser(
        "check",
        help="decide one request as the connector would",
        description="Decide one Kubernetes API request against the policies of a config file. Prints a JSON "
        "object; exits 0 if allowed, 1 if denied, 2 on bad input.",
    )
    check.add_argument(
        "--config", required=True, metavar="FILE", help="connector config file (only `policies` is read)"
    )
    check.add_argument("--user", required=True, help="the caller's user name, as authentication reports it")
    check.add_argument("--group", action="append", default=[], metavar="G", help="a group of the caller (repeatable)")
    check.add_argument("--socket", required=True, metavar="S", help="socket name")
    check.add_argument(
        "--socket-tag", action="append", default=[], metavar="KEY=VALUE", help="a tag of the socket (repeatable)"
    )
    check.add_argument("--source-ip", default="", metavar="IP", help="the caller's IP address (for source_ips)")
    check.add_argument(
        "--at",
        metavar="ISO8601",
        help="decide at this time, with a timezone (e.g. 2026-05-04T09:30:00+02:00); default: now",
    )
    check.add_argument("method", metavar="METHOD", help="HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD, ...)")
    check.add_argument("target", metavar="PATH[?QUERY]", help="request path as sent, percent-encoded, with its query")
    replay_cli.configure(commands)


def run(args: argparse.Namespace) -> int:
    try:
        if args.policy_command == "replay":
            return replay_cli.replay_command(args)
        if args.policy_command == "suggest":
            return replay_cli.suggest_command(args)
        return _check(args)
    except (UsageError, OSError) as exc:
        print(f"policy {args.policy_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE


def _check(args: argparse.Namespace) -> int:
    tags = dict(_parse_tag(t) for t in args.socket_tag)
    now = parse_time(args.at, "--at") if args.at else datetime.now(UTC)
    policies = load_policy_file(args.config, "check")[0].policies
    result = check_request(
        PolicyEngine(policies),
        Identity(user=args.user, groups=tuple(args.group)),
        args.socket,
        tags,
        args.method,
        args.target,
        source_ip=args.source_ip,
        now=now,
    )
    print(json.dumps(result, indent=2))
    return EXIT_ALLOWED if result["allowed"] else EXIT_DENIED


def check_request(
    engine: PolicyEngine,
    identity: Identity,
    socket: str,
    socket_tags: dict[str, str],
    method: str,
    target: str,
    *,
    source_ip: str,
    now: datetime,
) -> dict[str, Any]:
    """The decision on one request as `policy check` prints it (also the console's explain form);
    UsageError for a request the proxy would refuse before any policy, or a bad source IP."""
    if not _METHOD.fullmatch(method):
        raise UsageError(f"{method!r} is not an HTTP method")
    method = method.upper()
    path, _, query = target.partition("?")
    refused = reject_reason(method, path, query)
    if refused is not None:
        raise UsageError(f"the connector refuses this request with 400 Bad Request: {refused}")
    if source_ip:
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise UsageError(f"--source-ip {source_ip!r} is not an IP address") from None
    info = parse_request_info(method, path, query)
    decision = engine.decide(identity, socket, socket_tags, info, source_ip, now)
    return {
        "allowed": decision.allowed,
        "policy": decision.policy,
        "rule": decision.rule,
        "reason": decision.reason,
        "request": info.to_dict(),
    }


def _parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--socket-tag {text!r}: write KEY=VALUE")
    return key, value
