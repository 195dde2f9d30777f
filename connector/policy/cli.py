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

from pydantic import ConfigDict, Field

from connector.configfile import ConfigError, load_model, parse_yaml, read_config_text
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info, reject_reason
from connector.model import StrictModel
from connector.policy import replay_cli
from connector.policy.engine import PolicyEngine
from connector.policy.model import PolicyList

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2
_METHOD = re.compile(r"[A-Za-z]+")


class PolicyFile(StrictModel):
    """The `policies` key of a connector config; the other keys are not this command's business."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    policies: PolicyList = Field(default_factory=list)


class UsageError(Exception):
    """Bad input on the command line: printed on stderr, exit code 2."""


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
    method = args.method.upper()
    if not _METHOD.fullmatch(method):
        raise UsageError(f"{args.method!r} is not an HTTP method")
    path, _, query = args.target.partition("?")
    refused = reject_reason(method, path, query)
    if refused is not None:
        raise UsageError(f"the connector refuses this request with 400 Bad Request: {refused}")
    tags = dict(_parse_tag(t) for t in args.socket_tag)
    if args.source_ip:
        try:
            ipaddress.ip_address(args.source_ip)
        except ValueError:
            raise UsageError(f"--source-ip {args.source_ip!r} is not an IP address") from None
    now = _parse_time(args.at) if args.at else datetime.now(UTC)

    policies = load_policies(args.config, "check")

    info = parse_request_info(method, path, query)
    identity = Identity(user=args.user, groups=tuple(args.group))
    decision = PolicyEngine(policies).decide(identity, args.socket, tags, info, args.source_ip, now)
    print(
        json.dumps(
            {
                "allowed": decision.allowed,
                "policy": decision.policy,
                "rule": decision.rule,
                "reason": decision.reason,
                "request": info.to_dict(),
            },
            indent=2,
        )
    )
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED


def load_policies(config: str, command: str) -> PolicyList:
    """The policies of a config file (a warning on stderr when it has none: nothing is allowed)."""
    text = read_config_text(config)
    data = parse_yaml(text, config)
    if not isinstance(data, dict) or "policies" not in data:
        print(f"policy {command}: warning: {config} has no `policies` key, so nothing is allowed", file=sys.stderr)
    return load_model(PolicyFile, text, config).policies


def socket_tags(config: str) -> dict[str, dict[str, str]]:
    """The `tags` of each socket the config file declares (sockets found by discovery have none here)."""
    data = parse_yaml(read_config_text(config), config)
    sockets = data.get("sockets") if isinstance(data, dict) else None
    if not isinstance(sockets, dict):
        return {}
    return {
        str(name): {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
        for name, body in sockets.items()
        if isinstance(body, dict) and isinstance(body.get("tags") or {}, dict)
    }


def _parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--socket-tag {text!r}: write KEY=VALUE")
    return key, value


def _parse_time(text: str, option: str = "--at") -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-05-04T09:30:00Z)") from None
    if at.tzinfo is None:
        raise UsageError(f"{option} {text!r} has no timezone: add Z or an offset such as +02:00")
    return at
