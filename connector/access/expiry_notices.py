"""The `expired` webhook event: sent when an approved request reaches its `expires_at`.

Expiry is no write anywhere (a request is expired from `expires_at` on, see
connector.policy.access), so nothing performs it; this task observes it. It reads the store at the
earliest coming expiry (and every POLL_SECONDS, for requests approved by another process) and
queues one `expired` event per request that expired while it ran. Requests already expired when it
starts were this or another process's to announce earlier, so it stays silent about them. Every
replica observes the same expiry; the event id (`<request id>:expired`) is the same on each, so a
receiver keeps one (see connector.access.webhook).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connector.access.webhook import transition_event
from connector.policy import access
from connector.policy.access import AccessRequest

if TYPE_CHECKING:
    from connector.proxy.app import ProxyContext

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0


def newly_expired(requests: Sequence[AccessRequest], seen: set[str], now: dt.datetime) -> list[AccessRequest]:
    """The approved requests expired by `now` and not in `seen` (which they are added to)."""
    found = [r for r in requests if r.state_at(now) == access.EXPIRED and r.id not in seen]
    seen.update(r.id for r in found)
    return found


def next_expiry(requests: Sequence[AccessRequest], now: dt.datetime) -> dt.datetime | None:
    return min((r.expires_at for r in requests if r.active_at(now) and r.expires_at is not None), default=None)


async def announce_expiries(ctx: ProxyContext) -> None:
    """Run until cancelled: queue an `expired` event on `ctx.access_webhook` for each request as it expires."""
    seen: set[str] | None = None
    while True:
        wait = POLL_SECONDS
        store, notifier = ctx.access_store, ctx.access_webhook
        if store is not None and ctx.access_requests and notifier is not None:
            try:
                requests = await asyncio.to_thread(store.list)
            except Exception:
                log.exception("access requests webhook: the access store could not be read; trying again shortly")
            else:
                now = dt.datetime.now(dt.UTC)
                if seen is None:  # expired before we started: not ours to announce
                    seen = set()
                    newly_expired(requests, seen, now)
                for request in newly_expired(requests, seen, now):
                    notifier.notify(transition_event(access.EXPIRED, request, request.expires_at or now, "", ""))
                expiry = next_expiry(requests, now)
                if expiry is not None:
                    wait = min(wait, max(0.0, (expiry - dt.datetime.now(dt.UTC)).total_seconds()))
        await asyncio.sleep(wait)
