"""The console's access-requests page: pending, approved (active) and ended requests, with approve,
deny and revoke forms for those who hold `access_requests: approve`.

An action runs connector.proxy.access_api.run_transition, the code behind
`POST /v1/access-requests/{id}/approve|deny|revoke`: the same rules (connector.policy.access: who
may approve, never one's own request, states), the same webhook notices and an audit event of the
same shape, with the console user as caller. After an action the browser is sent back to the list
(303), which says what happened; a refused action shows the list again with the refusal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from connector.console.audit_trail import console_call, record
from connector.console.guard import CONSOLE_PATH, Viewer, console_context, console_page
from connector.console.render import message_page, page
from connector.policy import access
from connector.policy.access import AccessRequest, AccessRequestError
from connector.policy.access_model import AccessRequestDefinition
from connector.proxy.access_api import MAX_BODY_BYTES, TRANSITIONS, run_transition, visible_to

log = logging.getLogger(__name__)

PAGE_PATH = CONSOLE_PATH + "access-requests"
# Ended requests are kept for the audit trail; the page shows them newest first, this many at a time,
# from `?ended_from=N` (how many newer ones to pass over).
ENDED_PAGE = 200
DONE = {"approve": "Approval recorded", "deny": "Denied", "revoke": "Revoked"}


@dataclass(frozen=True)
class RequestRow:
    """One request as the page shows it: its state now, the approvals its definition requires (None
    once the definition left the config), and whether this viewer gets its forms."""

    request: AccessRequest
    state: str
    required: int | None
    may_act: bool


def _row(
    request: AccessRequest, now: dt.datetime, viewer: Viewer, definitions: Sequence[AccessRequestDefinition]
) -> RequestRow:
    definition = next((d for d in definitions if d.name == request.name), None)
    return RequestRow(
        request=request,
        state=request.state_at(now),
        required=definition.approvals_required if definition is not None else None,
        # The forms only where the rules may let this viewer act; the rules themselves decide on a POST.
        may_act=viewer.rights.access_requests == "approve"
        and visible_to(request, definitions, viewer.session.identity),
    )


def _flash(query: Mapping[str, str], requests: list[AccessRequest], now: dt.datetime) -> str | None:
    """What the last action did, named by the redirect's query and stated from the store, not the URL."""
    action, request_id = query.get("done", ""), query.get("request", "")
    found = next((r for r in requests if r.id == request_id), None)
    if action not in DONE or found is None:
        return None
    return (
        f"{DONE[action]}: access request {found.id} ({found.name} for {found.requester}) is now {found.state_at(now)}."
    )


async def _list_page(request: web.Request, viewer: Viewer, status: int = 200, error: str | None = None) -> web.Response:
    ctx = console_context(request)
    if ctx.access_store is None or not ctx.access_requests:
        return message_page(
            503, "Access requests unavailable", "this connector takes no access requests (no access_requests or "
            "access_store in its config)", **viewer.template_values,
        )  # fmt: skip
    ended_from, bad_offset = _ended_from(request.query)
    if bad_offset is not None and error is None:
        status, error = 400, bad_offset
    now = dt.datetime.now(dt.UTC)
    requests = await asyncio.to_thread(ctx.access_store.list)
    rows = [_row(r, now, viewer, ctx.access_requests) for r in requests]
    newest_first = sorted(rows, key=lambda row: row.request.created_at, reverse=True)
    ended = [row for row in newest_first if row.state in access.FINAL_STATES]
    return page(
        "access_requests.html",
        status,
        error=error,
        flash=None if error else _flash(request.query, requests, now),
        pending=[row for row in newest_first if row.state == access.PENDING],
        approved=sorted((row for row in rows if row.state == access.APPROVED), key=lambda row: row.request.expires_at),
        ended=ended[ended_from : ended_from + ENDED_PAGE],
        ended_from=ended_from,
        ended_total=len(ended),
        ended_newer=max(ended_from - ENDED_PAGE, 0) if ended_from > 0 else None,
        ended_older=ended_from + ENDED_PAGE if ended_from + ENDED_PAGE < len(ended) else None,
        **viewer.template_values,
    )


def _ended_from(query: Mapping[str, str]) -> tuple[int, str | None]:
    """The `ended_from` offset of the query (0 when absent), or 0 and why it is not one."""
    text = query.get("ended_from", "0")
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return 0, f"ended_from must be a whole number from 0 (how many newer ended requests to skip), not {text[:40]!r}"
    return int(text), None


@console_page("access_requests")
async def access_requests_list(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    return await _list_page(request, viewer)


@console_page("access_requests")
async def access_request_action(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    action, request_id = request.match_info["action"], request.match_info["id"]
    if action not in TRANSITIONS:
        raise web.HTTPNotFound()
    identity = viewer.session.identity
    call = console_call(request, identity)
    call.access_request = request_id
    reason = str((await request.post()).get("reason", "")).strip()
    try:
        if viewer.rights.access_requests != "approve":
            raise AccessRequestError(403, f"{identity.user} may only read access requests in the console")
        if len(reason.encode()) > MAX_BODY_BYTES:
            raise AccessRequestError(400, f"the reason is longer than {MAX_BODY_BYTES // 1024} KiB")
        await run_transition(call, identity, request_id, action, reason, dt.datetime.now(dt.UTC))
    except AccessRequestError as exc:
        await record(call, "deny" if exc.status == 403 else "rejected", exc.status, str(exc))
        return await _list_page(request, viewer, exc.status, str(exc))
    except Exception as exc:
        log.error("console: %s of access request %s failed", action, request_id, exc_info=exc)
        call.error = f"internal error: {type(exc).__name__}: {exc}"
        message = f"internal error in the connector; report request id {call.request_id} to its operators"
        await record(call, "rejected", 500, message)
        return message_page(500, "Internal error", message, **viewer.template_values)
    await record(call, "allow", 303, call.reason)
    raise web.HTTPSeeOther(f"{PAGE_PATH}?{urlencode({'done': action, 'request': request_id})}")
