"""Streams allowed only through an access request, ended when that request stops granting them.

An exec, attach or port-forward session, a watch or a `logs -f` that a grant allowed (its policy
decision named an access request) must not outlive the grant: an approval is time-boxed, and a
revoke is how an approver takes access back *now*. Each such stream is tracked here with what was
decided for it, and `GrantedStreams.run` re-decides all of them, under the current policies and the
caller's current grants, whenever one of their requests may have ended:

- at the earliest `expires_at` among their requests (the exact instant, not the next poll),
- after every change made through `/v1/access-requests` and after every config reload (a
  definition removed from the config grants nothing any more),
- every POLL_SECONDS, for changes another process wrote into the store.

A stream still allowed runs on (bound to the grant that allows it now, or to none when a standing
policy does); the others are stopped with the reason (which request, why), which their
`ResponseComplete` audit event carries next to `access_request` and `stream`. The decision logic
(`ended_streams`) is pure and tested as a table; the loop only feeds it the store and the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo
from connector.policy import access
from connector.policy.access import AccessRequest
from connector.policy.access_model import AccessRequestDefinition
from connector.policy.engine import PolicyEngine
from connector.proxy.registry import ActiveStream

if TYPE_CHECKING:
    from connector.proxy.app import ProxyContext

log = logging.getLogger(__name__)

# How often the store is read again while granted streams are open, for changes made by another process.
POLL_SECONDS = 1.0


@dataclass(eq=False)
class GrantedStream:
    """An open stream whose allow depended on `access_request`, and what its decision was made from."""

    active: ActiveStream
    access_request: str
    identity: Identity
    socket: str
    socket_tags: Mapping[str, str]
    info: RequestInfo
    source_ip: str


def _why_ended(request: AccessRequest | None, request_id: str, now: dt.datetime, denial: str) -> str:
    if request is None:
        return f"access request {request_id} is no longer in the access store"
    state = request.state_at(now)
    if state == access.EXPIRED and request.expires_at is not None:
        return f"access request {request_id} expired at {request.expires_at.isoformat()}"
    if state == access.REVOKED:
        by = f" by {request.decided.user}" if request.decided is not None else ""
        return f"access request {request_id} was revoked{by}"
    return f"access request {request_id} no longer grants it: {denial}"


def ended_streams(
    streams: Iterable[GrantedStream],
    requests: Sequence[AccessRequest],
    definitions: Sequence[AccessRequestDefinition],
    policy: PolicyEngine,
    now: dt.datetime,
) -> list[tuple[GrantedStream, str]]:
    """The streams the current policies and grants no longer allow, each with why (naming its request).

    A stream still allowed is re-bound to the request that allows it now (or to none), so that it
    ends when that one does; the caller stops the ones returned.
    """
    by_id = {r.id: r for r in requests}
    ended: list[tuple[GrantedStream, str]] = []
    grants_by_user: dict[str, dict[str, str]] = {}
    for stream in streams:
        user = stream.identity.user
        if user not in grants_by_user:
            grants_by_user[user] = access.grants_for(requests, definitions, stream.identity, now)
        decision = policy.decide(
            stream.identity, stream.socket, stream.socket_tags, stream.info, stream.source_ip, now,
            grants=grants_by_user[user],
        )  # fmt: skip
        if decision.allowed:
            stream.access_request = decision.access_request or ""
        else:
            why = _why_ended(by_id.get(stream.access_request), stream.access_request, now, decision.reason)
            ended.append((stream, why))
    return ended


def next_expiry(streams: Iterable[GrantedStream], requests: Sequence[AccessRequest]) -> dt.datetime | None:
    """The earliest expiry among the requests the streams depend on, or None."""
    wanted = {s.access_request for s in streams if s.access_request}
    expiries = [r.expires_at for r in requests if r.id in wanted and r.expires_at is not None]
    return min(expiries, default=None)


class GrantedStreams:
    """The open streams that depend on a grant. Used from the event loop only."""

    def __init__(self) -> None:
        self._streams: set[GrantedStream] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._streams)

    @contextlib.contextmanager
    def track(self, stream: GrantedStream) -> Iterator[None]:
        """Track `stream` for the `with` block; it is checked at once (its grant may have just ended)."""
        self._streams.add(stream)
        self.changed()
        try:
            yield
        finally:
            self._streams.discard(stream)

    def changed(self) -> None:
        """A request, the config or the set of streams changed: check again now."""
        self._changed.set()

    async def check(self, ctx: ProxyContext) -> dt.datetime | None:
        """Stop the streams whose grant ended; the next expiry to check at, if any."""
        streams = [s for s in self._streams if s.access_request]
        if not streams:
            return None
        store = ctx.access_store
        requests = await asyncio.to_thread(store.list) if store is not None and ctx.access_requests else []
        now = dt.datetime.now(dt.UTC)
        for stream, why in ended_streams(streams, requests, ctx.access_requests, ctx.policy, now):
            log.info(
                "socket %s: ending the %s stream of %s: %s",
                stream.socket, stream.active.kind, stream.identity.user, why,
            )  # fmt: skip
            self._streams.discard(stream)
            stream.active.stop(why)
        return next_expiry([s for s in streams if s in self._streams], requests)

    async def run(self, ctx: ProxyContext) -> None:
        """Check at each change, at the next expiry, and every POLL_SECONDS while streams are open."""
        while True:
            self._changed.clear()
            try:
                expiry = await self.check(ctx)
            except Exception:  # an unreadable store: keep the streams, try again at the next poll
                log.exception("granted streams: the access store could not be read; checking again shortly")
                expiry = None
            timeout = POLL_SECONDS if any(s.access_request for s in self._streams) else None
            if expiry is not None:
                until = max(0.0, (expiry - dt.datetime.now(dt.UTC)).total_seconds())
                timeout = until if timeout is None else min(timeout, until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
