"""Just-in-time access requests: the pure state machine and what an approved request grants.

No I/O and no clock here: every function takes `now` and returns a new `AccessRequest`, so the
stores (file, Kubernetes CRD) only persist what these functions decide, and every rule (distinct
approvers, no self-approval, approvers checked against the *current* config, expiry at the exact
instant) is tested once as a table. A request is

    pending --approve x N--> approved --(expires_at)--> expired
       |                        |
       +--deny--> denied        +--revoke--> revoked   (pending can be revoked, i.e. withdrawn, too)

`grants_for` turns a caller's approved requests into the `grants` mapping that
`PolicyEngine.decide` takes; a request whose definition has left the config grants nothing, which
is how a config reload revokes it.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connector.durations import parse_duration
from connector.identity import Identity
from connector.policy.access_model import AccessRequestDefinition

PENDING, APPROVED, DENIED, REVOKED, EXPIRED = "pending", "approved", "denied", "revoked", "expired"
STATES = (PENDING, APPROVED, DENIED, REVOKED, EXPIRED)
# A state nothing leaves: the request is kept for the audit trail only.
FINAL_STATES = frozenset({DENIED, REVOKED, EXPIRED})


class AccessRequestError(ValueError):
    """A refused request or transition; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Signoff:
    """One approver's or denier's word on a request."""

    user: str
    at: datetime
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "at": self.at.isoformat(), "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signoff:
        return cls(user=str(data["user"]), at=datetime.fromisoformat(data["at"]), reason=str(data.get("reason", "")))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str
    name: str
    requester: str
    reason: str
    duration: timedelta
    created_at: datetime
    state: str = PENDING
    approvals: tuple[Signoff, ...] = ()
    decided: Signoff | None = None  # who denied or revoked
    expires_at: datetime | None = None
    # The policies granted, copied from the definition when approved (audit shows what was granted).
    grants: tuple[str, ...] = field(default=())

    def state_at(self, now: datetime) -> str:
        """The state at `now`: an approved request is expired from `expires_at` on (inclusive)."""
        if self.state == APPROVED and self.expires_at is not None and now >= self.expires_at:
            return EXPIRED
        return self.state

    def active_at(self, now: datetime) -> bool:
        return self.state_at(now) == APPROVED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "requester": self.requester,
            "reason": self.reason,
            "duration_seconds": int(self.duration.total_seconds()),
            "created_at": self.created_at.isoformat(),
            "state": self.state,
            "approvals": [a.to_json() for a in self.approvals],
            "decided": None if self.decided is None else self.decided.to_json(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "grants": list(self.grants),
        }

    def view(self, now: datetime) -> dict[str, Any]:
        """`to_json` with the state as of `now`, for API answers and `access list`."""
        return {**self.to_json(), "state": self.state_at(now)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessRequest:
        state = str(data.get("state", PENDING))
        if state not in STATES:
            raise ValueError(f"unknown access request state {state!r}")
        decided = data.get("decided")
        expires = data.get("expires_at")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            requester=str(data["requester"]),
            reason=str(data.get("reason", "")),
            duration=timedelta(seconds=int(data["duration_seconds"])),
            created_at=datetime.fromisoformat(data["created_at"]),
            state=state,
            approvals=tuple(Signoff.from_json(a) for a in data.get("approvals", ())),
            decided=None if decided is None else Signoff.from_json(decided),
            expires_at=None if expires is None else datetime.fromisoformat(expires),
            grants=tuple(str(g) for g in data.get("grants", ())),
        )


def new_request_id() -> str:
    """Short, unguessable, valid as a Kubernetes object name: `ar-` and 12 hex digits."""
    return "ar-" + secrets.token_hex(6)


def _definition(definitions: Sequence[AccessRequestDefinition], name: str) -> AccessRequestDefinition | None:
    return next((d for d in definitions if d.name == name), None)


def create(
    definitions: Sequence[AccessRequestDefinition],
    requester: Identity,
    name: str,
    reason: str,
    duration: str | timedelta,
    now: datetime,
    request_id: str | None = None,
) -> AccessRequest:
    """A new pending request, or AccessRequestError (400 for a bad ask, 403 for a caller not allowed)."""
    definition = _definition(definitions, name)
    if definition is None:
        known = ", ".join(d.name for d in definitions) or "none are configured"
        raise AccessRequestError(400, f'unknown access request "{name}" (known: {known})')
    if not definition.requesters.includes(requester.user, requester.groups):
        raise AccessRequestError(403, f'{requester.user} may not request "{name}"')
    if isinstance(duration, str):
        try:
            duration = parse_duration(duration)
        except ValueError as exc:
            raise AccessRequestError(400, str(exc)) from None
    if duration <= timedelta(0):
        raise AccessRequestError(400, "the duration must be longer than zero")
    if duration > definition.max_timedelta:
        raise AccessRequestError(400, f'"{name}" may be requested for at most {definition.max_duration}')
    reason = reason.strip()
    if definition.require_reason and not reason:
        raise AccessRequestError(400, f'"{name}" needs a reason: pass --reason TEXT')
    return AccessRequest(
        id=request_id or new_request_id(),
        name=name,
        requester=requester.user,
        reason=reason,
        duration=duration,
        created_at=now,
    )


def _decidable(
    request: AccessRequest, definitions: Sequence[AccessRequestDefinition], approver: Identity, now: datetime
) -> AccessRequestDefinition:
    """The current definition, if `approver` may decide on `request` now; else AccessRequestError."""
    state = request.state_at(now)
    if state != PENDING:
        raise AccessRequestError(409, f"access request {request.id} is {state}, not pending")
    definition = _definition(definitions, request.name)
    if definition is None:
        raise AccessRequestError(409, f'access request {request.id}: "{request.name}" is no longer configured')
    if not definition.approvers.includes(approver.user, approver.groups):
        raise AccessRequestError(403, f'{approver.user} may not approve or deny "{request.name}"')
    if approver.user == request.requester and not definition.allow_self_approval:
        raise AccessRequestError(403, f"{approver.user} may not decide on their own access request")
    return definition


def approve(
    request: AccessRequest,
    definitions: Sequence[AccessRequestDefinition],
    approver: Identity,
    now: datetime,
    reason: str = "",
) -> AccessRequest:
    """Count one distinct approval; the request is approved, from `now` for its duration, at the Nth."""
    definition = _decidable(request, definitions, approver, now)
    if any(a.user == approver.user for a in request.approvals):
        raise AccessRequestError(409, f"{approver.user} has already approved access request {request.id}")
    approvals = (*request.approvals, Signoff(approver.user, now, reason.strip()))
    if len(approvals) < definition.approvals_required:
        return dataclasses.replace(request, approvals=approvals)
    return dataclasses.replace(
        request, approvals=approvals, state=APPROVED, expires_at=now + request.duration, grants=definition.grants
    )


def deny(
    request: AccessRequest,
    definitions: Sequence[AccessRequestDefinition],
    approver: Identity,
    now: datetime,
    reason: str,
) -> AccessRequest:
    _decidable(request, definitions, approver, now)
    if not reason.strip():
        raise AccessRequestError(400, "a denial needs a reason: pass --reason TEXT")
    return dataclasses.replace(request, state=DENIED, decided=Signoff(approver.user, now, reason.strip()))


def revoke(
    request: AccessRequest,
    definitions: Sequence[AccessRequestDefinition],
    actor: Identity,
    now: datetime,
    reason: str = "",
) -> AccessRequest:
    """End a pending or approved request: the requester withdraws it, or an approver takes it back."""
    state = request.state_at(now)
    if state not in (PENDING, APPROVED):
        raise AccessRequestError(409, f"access request {request.id} is {state}: nothing to revoke")
    definition = _definition(definitions, request.name)
    approver = definition is not None and definition.approvers.includes(actor.user, actor.groups)
    if actor.user != request.requester and not approver:
        raise AccessRequestError(403, f"{actor.user} may not revoke access request {request.id}")
    return dataclasses.replace(request, state=REVOKED, decided=Signoff(actor.user, now, reason.strip()))


def grants_for(
    requests: Iterable[AccessRequest],
    definitions: Sequence[AccessRequestDefinition],
    identity: Identity,
    now: datetime,
) -> dict[str, str]:
    """Policy name -> id of the approved, unexpired request of `identity` granting it (the one that
    lasts longest when several do). Grants come from the current definition: one that was removed
    from the config grants nothing, one that changed grants what it grants now."""
    best: dict[str, AccessRequest] = {}
    current = {d.name: d for d in definitions}
    for request in requests:
        if request.requester != identity.user or not request.active_at(now):
            continue
        definition = current.get(request.name)
        if definition is None:
            continue
        for policy in definition.grants:
            held = best.get(policy)
            if held is None or (request.expires_at or now) > (held.expires_at or now):
                best[policy] = request
    return {policy: request.id for policy, request in best.items()}


def requestable_for(
    definitions: Sequence[AccessRequestDefinition], identity: Identity, needed_policies: Iterable[str]
) -> list[AccessRequestDefinition]:
    """The definitions `identity` may request that grant one of `needed_policies`, in config order."""
    needed = set(needed_policies)
    return [d for d in definitions if needed & set(d.grants) and d.requesters.includes(identity.user, identity.groups)]


def next_step(definition: AccessRequestDefinition, connector_url: str) -> str:
    """The exact command to paste, as the 403 message and the docs show it."""
    duration = "1h" if definition.max_timedelta >= timedelta(hours=1) else definition.max_duration
    return (
        f"python -m connector access request --connector {connector_url} {definition.name} "
        f"--reason ... --for {duration}"
    )
