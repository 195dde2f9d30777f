"""`policy replay`: what a policy change would have changed, decided again over the audit log.

Each audited `allow`/`deny` request is re-decided with the new policies at its own time and source
IP, parsed exactly as the proxy parses it (split_socket_path, parse_request_info), and compared with
the logged decision or with a baseline config's. Refusals before policy (`rejected`,
`unauthenticated`) are counted and skipped, as are the connector's own endpoints (`/v1/sockets`) and
`ResponseStarted` events, whose request is
decided once more by its `ResponseComplete`. Lines are read one at a time, from plain or gzip files
or stdin, so memory does not grow with the log; a malformed line is counted with its file:line.

Speed (a log has millions of lines; the goal is 100,000 events a second on one core): lines are
decoded by msgspec into `AuditLine`, only the fields a decision needs; each distinct (method, path,
query) is parsed once; requests without grants are decided through the engine's `CandidateSet`,
which gives `decide`'s allow or deny without its reason (the reason, which names every policy that
did not apply, is worked out only for the requests that change); and the cyclic garbage collector
is paused while the log streams (see `_cyclic_gc_paused`).
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from connector.audit.log_files import open_log_file
from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo, parse_request_info
from connector.policy import access
from connector.policy.access_model import AccessRequestDefinition
from connector.policy.engine import CandidateSet, PolicyEngine
from connector.policy.replay_grants import GrantLedger
from connector.policy.rules import request_shape
from connector.proxy.handler import SOCKETS_PREFIX, Refusal, split_socket_path
from connector.proxy.reviews import SELF_REVIEW, review_kind

DECIDED = frozenset({"allow", "deny"})
_MAX_REPORTED_MALFORMED = 20


class AuditedRequest(NamedTuple):
    """The fields of one audit event that a decision depends on (a tuple: one is made per event)."""

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
    shape: tuple[str, ...]  # request_shape(info)
    review: str | None  # review_kind(info): a self-review, answered by the connector
    what: tuple[str, str, str]  # (verb, resource, namespace) of the report's groups
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

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.since, self.until, self.socket, self.user, self.group))

    def keep(self, req: AuditedRequest) -> bool:
        return (
            (self.since is None or req.time >= self.since)
            and (self.until is None or req.time < self.until)
            and (self.socket is None or req.socket == self.socket)
            and (self.user is None or req.user == self.user)
            and (self.group is None or self.group in req.groups)
        )


def open_lines(name: str) -> AbstractContextManager[Iterable[bytes]]:
    """The lines of a file (gzip when it starts with the gzip magic), or of stdin for `-`, as bytes
    (the decoder checks the UTF-8 itself); stdin is left open."""
    if name == "-":
        return nullcontext(sys.stdin.buffer)
    return open_log_file(name)


class AuditLine(msgspec.Struct, gc=False):
    """The fields of an audit line that a replay reads, with their types. msgspec's decoder checks them
    as it reads and skips the others (reason, user agent, the logged parse, bytes...) without building
    them: a third of what decoding a connector's line into a dict and checking it field by field costs.
    Fields that only a decided request needs are optional here, and checked by `parse_line`: a refusal
    before policy may lack them."""

    decision: str
    method: str | None = None
    path: str | None = None
    query: str = ""
    user: str | None = None
    groups: tuple[str, ...] | None = None
    time: str | None = None
    request_id: str = ""
    stage: str | None = None
    source_ip: str = ""
    socket: str | None = None
    policy: str | None = None
    access_request: str | None = None
    access_change: dict[str, Any] | None = None


_decode_line = msgspec.json.Decoder(AuditLine).decode


def read_requests(
    names: list[str], stats: ReadStats, filters: Filters, ledger: GrantLedger | None = None
) -> Iterator[AuditedRequest]:
    """The decided requests of the audit files, in order; everything else is counted in `stats`.

    With a `ledger`, the access-request changes of the log are handed to it as they are read, whatever
    the filters (a grant approved before `--since` or by another user still applies)."""
    filtering = filters.active
    for name in names:
        with open_lines(name) as lines:
            for number, line in enumerate(lines, 1):
                try:
                    event = _decode_line(line)
                except msgspec.DecodeError as exc:  # not JSON, or a field of the wrong type
                    if line.strip():
                        stats.events += 1
                        stats.bad(f"{name}:{number}", _why(exc))
                    continue
                stats.events += 1
                try:
                    if ledger is not None and event.access_change is not None:
                        when = _event_time(event.time)
                        stats.approvals += ledger.observe(event.access_change, event.access_request, when)
                    req = parse_line(event)
                except (ValueError, Refusal) as exc:
                    stats.bad(f"{name}:{number}", _why(exc))
                    continue
                if req is None or (filtering and not filters.keep(req)):
                    stats.skipped += 1
                    continue
                stats.decided += 1
                if ledger is not None and req.access_request is not None and not ledger.knows(req.access_request):
                    stats.unknown_grants += 1
                yield req


def parse_line(event: AuditLine) -> AuditedRequest | None:
    """One audit event as a request to decide again, or None when it was not decided by policy."""
    decision = event.decision
    if decision not in DECIDED or event.stage == "ResponseStarted":
        return None
    raw_path, socket = event.path, event.socket
    if event.method is None or raw_path is None or event.user is None or event.time is None:
        raise ValueError("a decided request needs method, path, user and time")
    if socket is None and not raw_path.startswith(SOCKETS_PREFIX):
        return None  # a connector endpoint (`/v1/sockets`, the login API), not a Kubernetes request
    path_socket, path = split_socket_path(raw_path)
    info, shape, review, what = parsed_request(event.method, path, event.query)
    return AuditedRequest(
        event.request_id,
        event.user,
        event.groups or (),
        socket or path_socket,
        event.method,
        path,
        event.query,
        event.source_ip,
        _event_time(event.time),
        decision,
        event.policy,
        info,
        shape,
        review,
        what,
        event.access_request,
    )


def _event_time(text: str | None) -> datetime:
    if text is None:
        raise ValueError("an access change needs its time")
    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@functools.lru_cache(maxsize=65536)
def parsed_request(
    method: str, path: str, query: str
) -> tuple[RequestInfo, tuple[str, ...], str | None, tuple[str, str, str]]:
    """(request info, shape, review kind, what the report groups by) of one request, as the proxy
    parses it. A log repeats the same few thousand requests on many sockets: each is parsed once (all
    of it is pure)."""
    info = parse_request_info(method, path, query)
    if info.is_resource_request:
        resource = info.resource + ("/" + info.subresource if info.subresource else "")
    else:
        resource = path
    return info, request_shape(info), review_kind(info), (info.verb, resource, info.namespace)


def _why(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Outcome(NamedTuple):
    allowed: bool
    policy: str | None
    reason: str | None  # None: not worked out (see Decider.explain)


_DENIED = Outcome(False, None, None)


class Decider:
    """An engine plus the socket tags and access-request definitions of its config: decides an audited
    request as the proxy would, with the grants the log's `ledger` holds for the caller at the request's
    time, as this config's definitions grant them.

    Requests under no grant, the bulk of a log, are decided by the caller's `CandidateSet` (kept per
    user, groups and socket), which tells allow from deny and the allowing policy exactly as
    `PolicyEngine.decide` does but leaves out the reason; `explain` gives it, for the few requests whose
    decision changes. Self-reviews and requests under a grant go through the engine's own calls."""

    def __init__(
        self,
        engine: PolicyEngine,
        socket_tags: Mapping[str, Mapping[str, str]],
        definitions: Sequence[AccessRequestDefinition] = (),
        ledger: GrantLedger | None = None,
    ):
        self._engine = engine
        self._tags = socket_tags
        self._definitions = definitions
        self._ledger = ledger if definitions else None
        self._sets: dict[tuple[str, tuple[str, ...], str], CandidateSet] = {}
        self._allowed: dict[str, Outcome] = {}  # one Outcome per allowing policy, not one per request

    def grants(self, req: AuditedRequest) -> dict[str, str]:
        """Policy name -> access request id, as `caller_grants` gives the proxy, from the log's grants."""
        if self._ledger is None:
            return {}
        held = self._ledger.requests_of(req.user)
        if not held:
            return {}
        return access.grants_for(held, self._definitions, Identity(req.user, req.groups), req.time)

    def decide(self, req: AuditedRequest) -> Outcome:
        grants = self.grants(req) if self._ledger is not None else None
        if grants or req.review is not None:
            return self._decide_fully(req, grants or {})
        key = (req.user, req.groups, req.socket)
        candidates = self._sets.get(key)
        if candidates is None:
            if len(self._sets) >= 65536:  # callers come from the log: bounded
                self._sets.clear()
            identity = Identity(req.user, req.groups)
            candidates = self._sets[key] = self._engine.candidate_set(
                identity, req.socket, self._tags.get(req.socket, {})
            )
        allowed = candidates.allowing(req.info, req.shape, req.source_ip, req.time)
        if allowed is None:
            return _DENIED
        outcome = self._allowed.get(allowed[0])
        if outcome is None:
            outcome = self._allowed[allowed[0]] = Outcome(True, allowed[0], None)
        return outcome

    def explain(self, req: AuditedRequest) -> Outcome:
        """The decision with its reason, as the proxy would give it."""
        return self._decide_fully(req, self.grants(req))

    def _decide_fully(self, req: AuditedRequest, grants: dict[str, str]) -> Outcome:
        identity = Identity(req.user, req.groups)
        tags = self._tags.get(req.socket, {})
        if req.review is not None:
            # A self-review is answered by the connector itself, whatever the rules say: whoami for
            # every authenticated caller, the access reviews for anyone who may use the socket
            # (connector/proxy/handler.py). Decide it the same way.
            usable = req.review == SELF_REVIEW or self._engine.may_use_socket(
                identity, req.socket, tags, req.source_ip, req.time, grants=grants
            )
            reason = (
                "a self-review, answered by the connector"
                if usable
                else f"no policy grants {req.user} access to socket {req.socket}"
            )
            return Outcome(usable, None, reason)
        d = self._engine.decide(identity, req.socket, tags, req.info, req.source_ip, req.time, grants=grants)
        return Outcome(d.allowed, d.policy, d.reason)


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
    groups: dict[tuple[Any, ...], Group] = field(default_factory=dict)
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
    with _cyclic_gc_paused():
        _replay_into(result, requests, new, baseline, on_change)
    return result


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a replay streams (reference counting still frees
    everything). A replay makes no reference cycles per event (tests/unit/test_policy_replay.py checks
    it), yet the collector, triggered every few hundred allocations, kept walking the compiled
    policies and the report's groups: a fifth of a replay's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _replay_into(
    result: ReplayResult, requests: Iterator[AuditedRequest], new: Decider, baseline: Decider | None, on_change: Any
) -> None:
    groups = result.groups
    decide_new = new.decide
    decide_before = baseline.decide if baseline is not None else None
    for req in requests:
        after = decide_new(req)
        if decide_before is None:
            if (req.decision == "allow") == after.allowed:
                continue
            before = None
        else:
            before = decide_before(req)
            if before.allowed == after.allowed:
                continue
        if after.allowed:
            result.newly_allowed += 1
        else:
            result.newly_denied += 1
        key = (after.allowed, req.user, req.socket, req.what)
        group = groups.get(key)
        if group is None:
            verb, resource, namespace = req.what
            group = groups[key] = Group(
                req.user, req.socket, verb, resource, namespace, "allow" if after.allowed else "deny"
            )
            group.first, group.example = req.time, req.request_id
        group.count += 1
        group.last = req.time
        if on_change is not None:
            before = logged_outcome(req) if before is None else before
            on_change(change_record(req, before, after if after.reason is not None else new.explain(req)))


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
