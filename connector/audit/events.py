"""The audit event: one JSON line per request that reached the connector's Kubernetes routes.

The fields are the ones ARCHITECTURE.md promises (time, request id, user, groups, source IP, socket,
the parsed request, the decision with its policy and rule, upstream status, bytes, duration, user
agent). Long-lived streams (watch, `logs -f`, exec, attach, port-forward) get two events with the
same request id: `ResponseStarted` when the upstream answered and `ResponseComplete` at the end,
named after the Kubernetes audit stages so that log tooling reads them naturally.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

Stage = Literal["ResponseStarted", "ResponseComplete"]
# allow: forwarded (or answered locally); deny: refused by policy; unauthenticated: no or bad
# credentials; rejected: refused before any policy check (bad input, limits, unknown socket).
Decision = Literal["allow", "deny", "unauthenticated", "rejected"]


def utc_timestamp(when: dt.datetime | None = None) -> str:
    """RFC 3339 with microseconds and a `Z`, the format Kubernetes audit logs use."""
    when = when or dt.datetime.now(dt.UTC)
    # isoformat (C) rather than strftime, which costs several times more and runs for every event:
    # the same text, with the `+00:00` of a UTC datetime written as `Z`.
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True)
class RequestAttributes:
    """What the request does, as parsed by connector.kube.requestinfo (empty strings when absent)."""

    verb: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    is_resource_request: bool = False


@dataclass(frozen=True)
class AuditEvent:
    """One audit record. `to_json` gives the line written to the sink."""

    request_id: str
    stage: Stage
    decision: Decision
    code: int
    method: str
    path: str
    source_ip: str
    time: str = field(default_factory=utc_timestamp)
    query: str = ""
    user: str | None = None
    groups: tuple[str, ...] = ()
    auth_method: str | None = None
    user_agent: str = ""
    socket: str | None = None
    request: RequestAttributes | None = None
    policy: str | None = None
    rule: int | None = None
    reason: str = ""
    upstream_status: int | None = None
    upstream_audit_id: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    stream: str | None = None
    session_protocol: str | None = None
    recording: str | None = None
    # The access request the allow depended on (a grant), or that an /v1/access-requests call changed.
    access_request: str | None = None
    # For a change of an access request: action, name, requester, state, reason, approvers, expires_at.
    access_change: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, whose deep copies cost more than the rest of a
        # request's bookkeeping together. Absent optional fields are left out.
        out = {name: getattr(self, name) for name in _FIELDS}
        out["groups"] = list(self.groups)
        out["duration_ms"] = round(self.duration_ms, 3)
        if self.request is not None:
            out["request"] = {name: getattr(self.request, name) for name in _REQUEST_FIELDS}
        return {k: v for k, v in out.items() if v is not None}

    def to_line(self) -> bytes:
        """The event as one line of JSON (UTF-8, newline-terminated), as the sinks write it.

        Header values are decoded by aiohttp with `surrogateescape`, so a client can put bytes that are
        not UTF-8 into, say, its User-Agent; encoded as they are, they made the line unwritable and the
        event was lost. Such bytes are written as U+FFFD, as kube-apiserver's audit (Go's JSON) does.
        orjson because encoding is a tenth of what the standard library's encoder costs per event.
        """
        out = self.to_dict()
        try:
            return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return orjson.dumps(_valid_utf8(out), option=orjson.OPT_APPEND_NEWLINE)


def _valid_utf8(value: Any) -> Any:
    """`value` with every string's undecodable bytes (surrogate escapes) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_valid_utf8(k): _valid_utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_utf8(v) for v in value]
    return value


_FIELDS = tuple(f.name for f in fields(AuditEvent))
_REQUEST_FIELDS = tuple(f.name for f in fields(RequestAttributes))
