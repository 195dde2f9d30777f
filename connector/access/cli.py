"""`python -m connector access ...`: file and decide just-in-time access requests from a terminal.

    access request NAME --reason TEXT --for 1h [--wait]   file one (the 403 names this exact command)
    access list [--mine | --pending]                       yours, and those you may approve
    access show ID
    access approve ID [--reason TEXT]
    access deny ID --reason TEXT
    access revoke ID [--reason TEXT]

Each talks to the connector's `/v1/access-requests` with the login of `client login` (same
--connector, --profile and token cache). Refusals are the connector's one-line message; a bad ask
(HTTP 400) exits 2, any other refusal 1. `request --wait` polls until the request is decided and
exits 0 only if it was approved: 1 when denied, revoked or expired first, 130 when interrupted
(the request stays pending), so a script can chain `access request --wait && kubectl exec ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from connector.client import session as api
from connector.client.cli import EXIT_FAIL, EXIT_USAGE, add_connector_options, verify_for
from connector.client.errors import SsoError
from connector.client.token_store import TokenStore
from connector.durations import parse_duration

PREFIX = "/v1/access-requests"
WAIT_POLL_SECONDS = 2.0
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


def _duration(value: str) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary)
        add_connector_options(p)
        p.add_argument("--output", choices=("table", "json"), default="table")
        return p

    request = command("request", "ask for access (granted once approved, for --for)")
    request.add_argument("name", help="the access request's name in the connector's config")
    request.add_argument("--reason", default="", help="why (the approvers see it, the audit log keeps it)")
    request.add_argument("--for", dest="duration", required=True, type=_duration, help="how long, e.g. 1h or 30m")
    request.add_argument("--wait", action="store_true", help="wait until decided: exit 0 if approved, 1 if not")

    listing = command("list", "the requests you filed and those you may approve")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--mine", action="store_true", help="only the ones you filed")
    which.add_argument("--pending", action="store_true", help="only the ones waiting for a decision")

    command("show", "one request").add_argument("id")
    for name, summary, reason_required in (
        ("approve", "approve a pending request", False),
        ("deny", "deny a pending request", True),
        ("revoke", "end a request now (yours, or one you approve)", False),
    ):
        p = command(name, summary)
        p.add_argument("id")
        p.add_argument("--reason", required=reason_required, default="", help="recorded in the audit log")


def _table(requests: list[dict[str, Any]]) -> str:
    rows = [("ID", "NAME", "REQUESTER", "STATE", "APPROVED BY", "EXPIRES", "REASON")]
    for r in requests:
        approvers = ",".join(a["user"] for a in r.get("approvals") or []) or "-"
        rows.append(
            (r["id"], r["name"], r["requester"], r["state"], approvers, r.get("expires_at") or "-", r.get("reason", ""))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows)


def outcome(request: dict[str, Any]) -> str:
    """One line saying how a waited-for request was decided, for the terminal that waited."""
    state = request["state"]
    if state == "approved":
        by = ", ".join(a["user"] for a in request.get("approvals") or [])
        return f"Access request {request['id']} approved by {by}; it grants access until {request['expires_at']}."
    decided = request.get("decided") or {}
    by = f" by {decided['user']}" if decided.get("user") else ""
    why = f": {decided['reason']}" if decided.get("reason") else ""
    return f"Access request {request['id']} {state}{by}{why}."


def _wait(call: Callable[..., Any], filed: dict[str, Any]) -> dict[str, Any]:
    """Poll the request until it is no longer pending; its last state."""
    while filed["state"] == "pending":
        time.sleep(WAIT_POLL_SECONDS)
        filed = call("GET", f"{PREFIX}/{quote(filed['id'], safe='')}")
    return filed


def _print(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    if args.output == "json":
        print(json.dumps(payload, indent=2))
    else:
        print(_table(payload["requests"] if "requests" in payload else [payload]))


def run(args: argparse.Namespace) -> int:
    verify = verify_for(args)
    try:
        token = api.fresh_tokens(TokenStore(args.cache_dir), args.connector, args.profile, verify=verify).id_token

        def call(method: str, path: str, body: Any = None) -> Any:
            return api.call_api(args.connector, method, path, token, body=body, verify=verify)

        if args.action == "request":
            filed = call("POST", PREFIX, {"name": args.name, "reason": args.reason, "duration": args.duration})
            waiting = "; waiting for the approvals" if args.wait else ": it grants nothing until approved"
            print(f"Filed access request {filed['id']}{waiting}.", file=sys.stderr)
            if not args.wait:
                _print(args, filed)
                return 0
            try:
                filed = _wait(call, filed)
            except KeyboardInterrupt:
                print(f"Stopped waiting; access request {filed['id']} is still pending.", file=sys.stderr)
                return EXIT_INTERRUPTED
            print(outcome(filed), file=sys.stderr)
            _print(args, filed)
            return 0 if filed["state"] == "approved" else EXIT_FAIL
        if args.action == "list":
            query = "?mine=1" if args.mine else "?pending=1" if args.pending else ""
            _print(args, call("GET", PREFIX + query))
            return 0
        path = f"{PREFIX}/{quote(args.id, safe='')}"
        if args.action == "show":
            _print(args, call("GET", path))
        else:
            _print(args, call("POST", f"{path}/{args.action}", {"reason": args.reason}))
        return 0
    except BrokenPipeError:
        raise
    except api.ApiRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.status == 400 else EXIT_FAIL
    except (api.NotLoggedIn, SsoError, ConnectionError, PermissionError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
