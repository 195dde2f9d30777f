"""`policy replay`: what a policy change would have changed, decided again over the audit log.

Each audited `allow`/`deny` request is re-decided with the new policies at its own time and source
IP, parsed exactly as the proxy parses it (split_socket_path, parse_request_info), and compared with
the logged decision or with a baseline config's. Refusals before policy (`rejected`,
`unauthenticated`) are counted and skipped, as are the connector's own endpoints (`/v1/sockets`) and
`ResponseStarted` events, whose request is
decided once more by its `ResponseComplete`. Lines are read one at a time, from plain or gzip files
or stdin, so memory does not grow with the log; a malformed line is counted with its file:line.
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo, parse_request_info
from connector.policy import access
from connector.policy.access_model import AccessRequestDefinition
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from connector.policy.replay_grants import GrantLedger
from connector.proxy.handler import SOCKETS_PREFIX, Refusal, split_socket_path
from connector.proxy.reviews import SELF_REVIEW, review_kind

DECIDED = frozenset({"allow", "deny"})
_MAX_REPORTED_MALFORMED = 20


@dataclass(frozen=True, slots=True)
class AuditedRequest:
    """The fields of one audit event that a decision depends on."""

    request_id: str
    user: str
    groups: tuple[str, ...]
    socket: str
    method: str
    path: str  # the Kubernetes path, without /sockets/NAME
    query: str
    source_ip: str
    time: datetime
    decision: str
    policy: str | None
    info: RequestInfo
    access_request: str | None = None  # the grant the logged allow depended on


@dataclass
class ReadStats:
    events: int = 0
    decided: int = 0
    skipped: int = 0  # refused before policy, or filtered out
    malformed: list[str] = field(default_factory=list)
    malformed_count: int = 0
    approvals: int = 0  # access requests approved in the log
    unknown_grants: int = 0  # allows that named an access request the log does not show approved

    def bad(self, where: str, why: str) -> None:
        self.malformed_count += 1
        if len(self.malformed) < _MAX_REPORTED_MALFORMED:
            self.malformed.append(f"{where}: {why}")


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    socket: str | None = None
    user: str | None = None
    group: str | None = None

    def keep(self, req: AuditedRequest) -> bool:
        return (
            (self.since is None or req.time >= self.since)
            and (self.until is None or req.time < self.until)
            and (self.socket is None or req.socket == self.socket)
            and (self.user is None or req.user == self.user)
            and (self.group is None or self.group in req.groups)
        )


def open_lines(name: str) -> Iterator[str]:
    """The lines of a file (gzip when it starts with the gzip magic), or of stdin for `-`."""
    if name == "-":
        yield from sys.stdin
        return
    with open(name, "rb") as probe:
        magic = probe.read(2)
    stream: TextIO
    if magic == b"\x1f\x8b":
        stream = gzip.open(name, "rt", encoding="utf-8", errors="replace")
    else:
        stream = open(name, encoding="utf-8", errors="replace")
    with stream:
        yield from stream


def read_requests(
    names: list[str], stats: ReadStats, filters: Filters, ledger: GrantLedger | None = None
) -> Iterator[AuditedRequest]:
    """The decided requests of the audit files, in order; everything else is counted in `stats`.

    With a `ledger`, the access-request changes of the log are handed to it as they are read, whatever
    the filters (a grant approved before `--since` or by another user still applies)."""
    for name in names:
        for number, line in enumerate(open_lines(name), 1):
            if not line.strip():
                continue
            stats.events += 1
            try:
                event = json.loads(line)
                if ledger is not None and isinstance(event, dict) and event.get("access_change") is not None:
                    stats.approvals += ledger.observe(event, _event_time(event))
                req = parse_event(event)
            except (ValueError, TypeError, KeyError, Refusal) as exc:
                stats.bad(f"{name}:{number}", _why(exc))
                continue
            if req is None or not filters.keep(req):
                stats.skipped += 1
                continue
            stats.decided += 1
            if ledger is not None and req.access_request is not None and not ledger.knows(req.access_request):
                stats.unknown_grants += 1
            yield req


def parse_event(event: Any) -> AuditedRequest | None:
    """One audit event as a request to decide again, or None when it was not decided by policy."""
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    decision = event["decision"]
    if decision not in DECIDED or event.get("stage") == "ResponseStarted":
        return None
    method, raw_path, query = event["method"], event["path"], event.get("query", "")
    if not all(isinstance(v, str) for v in (method, raw_path, query, event["user"], event["time"])):
        raise ValueError("method, path, query, user and time must be strings")
    if "socket" not in event and not raw_path.startswith(SOCKETS_PREFIX):
        return None  # a connector endpoint (`/v1/sockets`, the login API), not a Kubernetes request
    socket, path = split_socket_path(raw_path)
    when = _event_time(event)
    groups = event.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a list of strings")
    return AuditedRequest(
        request_id=str(event.get("request_id", "")),
        user=event["user"],
        groups=tuple(groups),
        socket=event.get("socket") or socket,
        method=method,
        path=path,
        query=query,
        source_ip=str(event.get("source_ip", "")),
        time=when,
        decision=decision,
        policy=event.get("policy"),
        info=_parsed(method, path, query),
        access_request=_access_request(event),
    )


def _access_request(event: Mapping[str, Any]) -> str | None:
    found = event.get("access_request")
    if found is not None and not isinstance(found, str):
        raise ValueError("access_request must be a string")
    return found


def _event_time(event: Mapping[str, Any]) -> datetime:
    when = datetime.fromisoformat(event["time"])
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


# A log repeats the same few thousand requests: parse each once. parse_request_info is pure.
_parsed = functools.lru_cache(maxsize=65536)(parse_request_info)


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    policy: str | None
    reason: str


class Decider:
    """An engine plus the socket tags and access-request definitions of its config: decides an audited
    request as the proxy would, with the grants the log's `ledger` holds for the caller at the request's
    time, as this config's definitions grant them.

    A decision depends on the time and the source IP only through policy conditions, so identical
    (identity, socket, method, path, query, grants) keys are decided once and cached (bounded), with
    the source IP in the key when some policy has `source_ips` and the event's exact time when some
    policy has a time condition (`time`, `not_before`, `not_after`)."""

    def __init__(
        self,
        engine: PolicyEngine,
        socket_tags: Mapping[str, Mapping[str, str]],
        policies: Sequence[Policy],
        definitions: Sequence[AccessRequestDefinition] = (),
        ledger: GrantLedger | None = None,
    ):
        self._engine = engine
        self._tags = socket_tags
        self._definitions = definitions
        self._ledger = ledger if definitions else None
        conditions = [p.conditions for p in policies]
        self._by_ip = any(c.source_ips is not None for c in conditions)
        self._by_time = any(c.time is not None or c.not_before or c.not_after for c in conditions)
        self._cache: dict[tuple[Any, ...], Outcome] = {}

    def grants(self, req: AuditedRequest, identity: Identity) -> dict[str, str]:
        """Policy name -> access request id, as `caller_grants` gives the proxy, from the log's grants."""
        if self._ledger is None:
            return {}
        held = self._ledger.requests_of(req.user)
        return access.grants_for(held, self._definitions, identity, req.time) if held else {}

    def decide(self, req: AuditedRequest) -> Outcome:
        identity = Identity(user=req.user, groups=req.groups)
        grants = self.grants(req, identity)
        key = (
            req.user,
            req.groups,
            req.socket,
            req.method,
            req.path,
            req.query,
            req.source_ip if self._by_ip else None,
            req.time if self._by_time else None,
            tuple(sorted(grants.items())) if grants else None,
        )
        found = self._cache.get(key)
        if found is not None:
            return found
        tags = self._tags.get(req.socket, {})
        kind = review_kind(req.info)
        if kind is not None:
            # A self-review is answered by the connector itself, whatever the rules say: whoami for
            # every authenticated caller, the access reviews for anyone who may use the socket
            # (connector/proxy/handler.py). Decide it the same way.
            usable = kind == SELF_REVIEW or self._engine.may_use_socket(
                identity, req.socket, tags, req.source_ip, req.time, grants=grants
            )
            reason = (
                "a self-review, answered by the connector"
                if usable
                else (f"no policy grants {req.user} access to socket {req.socket}")
            )
            outcome = Outcome(usable, None, reason)
        else:
            d = self._engine.decide(identity, req.socket, tags, req.info, req.source_ip, req.time, grants=grants)
            outcome = Outcome(d.allowed, d.policy, d.reason)
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[key] = outcome
        return outcome


def logged_outcome(req: AuditedRequest) -> Outcome:
    return Outcome(req.decision == "allow", req.policy, "")


@dataclass
class Group:
    user: str
    socket: str
    verb: str
    resource: str
    namespace: str
    after: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    example: str = ""


@dataclass
class ReplayResult:
    stats: ReadStats
    groups: dict[tuple[str, ...], Group] = field(default_factory=dict)
    newly_allowed: int = 0
    newly_denied: int = 0

    @property
    def changed(self) -> int:
        return self.newly_allowed + self.newly_denied


def change_record(req: AuditedRequest, before: Outcome, after: Outcome) -> dict[str, Any]:
    return {
        "request_id": req.request_id,
        "user": req.user,
        "groups": list(req.groups),
        "socket": req.socket,
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "before": "allow" if before.allowed else "deny",
        "after": "allow" if after.allowed else "deny",
        "before_policy": before.policy,
        "after_policy": after.policy,
        "after_reason": after.reason,
    }


def replay(
    requests: Iterator[AuditedRequest],
    stats: ReadStats,
    new: Decider,
    baseline: Decider | None,
    on_change: Any = None,
) -> ReplayResult:
    """Re-decide each request; group the changes, and hand each to `on_change(record)` if given."""
    result = ReplayResult(stats)
    for req in requests:
        before = baseline.decide(req) if baseline is not None else logged_outcome(req)
        after = new.decide(req)
        if before.allowed == after.allowed:
            continue
        if after.allowed:
            result.newly_allowed += 1
        else:
            result.newly_denied += 1
        verb = req.info.verb
        resource = req.info.resource + ("/" + req.info.subresource if req.info.subresource else "")
        if not req.info.is_resource_request:
            resource = req.path
        key = ("allow" if after.allowed else "deny", req.user, req.socket, verb, resource, req.info.namespace)
        group = result.groups.get(key)
        if group is None:
            group = result.groups[key] = Group(req.user, req.socket, verb, resource, req.info.namespace, key[0])
            group.first, group.example = req.time, req.request_id
        group.count += 1
        group.last = req.time
        if on_change is not None:
            on_change(change_record(req, before, after))
    return result


def render_table(result: ReplayResult) -> str:
    """Newly allowed first (they open access), then newly denied, most frequent first."""
    ordered = sorted(result.groups.values(), key=lambda g: (g.after != "allow", -g.count))
    header = ("change", "user", "socket", "verb", "resource", "namespace", "count", "first", "last", "example")
    rows = [header] + [
        (
            "newly allowed" if g.after == "allow" else "newly denied",
            g.user,
            g.socket,
            g.verb,
            g.resource,
            g.namespace or "-",
            str(g.count),
            _stamp(g.first),
            _stamp(g.last),
            g.example,
        )
        for g in ordered
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _stamp(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(result: ReplayResult) -> dict[str, Any]:
    s = result.stats
    return {
        "events": s.events,
        "decided": s.decided,
        "skipped": s.skipped,
        "malformed": s.malformed_count,
        "newly_allowed": result.newly_allowed,
        "newly_denied": result.newly_denied,
        "access_requests_approved": s.approvals,
        "allowed_under_unknown_access_requests": s.unknown_grants,
    }
