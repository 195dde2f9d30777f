"""The just-in-time grants an audit log records, rebuilt while `policy replay` streams it.

Every successful call of `/v1/access-requests` is audited with an `access_change` (action, name,
requester, state, expires_at; see connector.proxy.access_api). An approval that completes a request
says `state: approved` with its `expires_at`; a revoke says `revoked`. Expiry writes nothing (a
request is expired from `expires_at` on), so it needs no event. From these the ledger keeps, per
requester, the requests approved so far as `AccessRequest` values, and a replayed request is
decided with `access.grants_for` over them at its own time: the proxy's own function, fed with the
*replayed* config's definitions, so a definition that NEW removes or narrows grants what NEW says.

The log is read in order, so files must be given oldest first (as `audit.log.2.gz audit.log.1.gz
audit.log`); a request allowed under an access request whose approval is not in the files read is
counted (`ReadStats.unknown_grants`), so that a replay of a partial log says why it reports such requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from connector.policy.access import APPROVED, AccessRequest


class GrantLedger:
    """The approved access requests seen so far in the log, by requester; ended ones are dropped."""

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, AccessRequest]] = {}
        self._seen: set[str] = set()  # ids of every approval read, for telling an unknown grant apart

    def observe(self, change: Mapping[str, Any], request_id: str | None, when: datetime) -> bool:
        """Take in the `access_change` and `access_request` of one audit event of `/v1/access-requests`;
        True when it approved a request.

        Raises ValueError (the line is then reported as malformed) when the change lacks what a
        grant needs."""
        if request_id is None:
            raise ValueError("an access_change needs its access_request")
        requester, name, state = change.get("requester"), change.get("name"), change.get("state")
        if not all(isinstance(v, str) for v in (requester, name, state)):
            raise ValueError("access_change needs requester, name and state as strings")
        held = self._by_user.setdefault(requester, {})
        if state != APPROVED:
            # Denied, revoked, expired, or pending (filed, or an approval short of the number required):
            # nothing of it grants from here on.
            held.pop(request_id, None)
            return False
        expires = change.get("expires_at")
        if not isinstance(expires, str):
            raise ValueError("an approved access_change needs expires_at")
        expires_at = datetime.fromisoformat(expires)
        # What is over by now can grant nothing to a later event: dropped, so memory follows the grants
        # alive at one time, not the length of the log.
        for old_id in [i for i, r in held.items() if r.expires_at is not None and r.expires_at <= when]:
            del held[old_id]
        held[request_id] = AccessRequest(
            id=request_id,
            name=name,
            requester=requester,
            reason="",
            duration=max(expires_at - when, timedelta(0)),
            created_at=when,
            state=APPROVED,
            expires_at=expires_at,
        )
        self._seen.add(request_id)
        return True

    def requests_of(self, user: str) -> tuple[AccessRequest, ...]:
        held = self._by_user.get(user)
        return tuple(held.values()) if held else ()

    def knows(self, request_id: str) -> bool:
        """Whether the log read so far approved this access request."""
        return request_id in self._seen
