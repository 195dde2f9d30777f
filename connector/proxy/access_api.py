"""`/v1/access-requests`: file, list, approve, deny and revoke just-in-time access requests.

    POST /v1/access-requests                 {"name", "reason", "duration"}   -> 201, the request
    GET  /v1/access-requests[?mine=1][&pending=1]                             -> {"requests": [...]}
    GET  /v1/access-requests/{id}
    POST /v1/access-requests/{id}/approve    {"reason"}  (optional)
    POST /v1/access-requests/{id}/deny       {"reason"}  (required)
    POST /v1/access-requests/{id}/revoke     {"reason"}  (optional)

Callers authenticate exactly as for `/v1/sockets`. The rules are connector.policy.access's; this
module only reads the body, runs one transition through the store and audits it: every call, allowed
or refused, is one audit event naming the request, and a change carries who, what, the reason, the
approvers and the expiry. A caller sees the requests they filed and those they may approve.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from connector.access.store import AccessStore
from connector.access.webhook import transition_event
from connector.identity import Identity
from connector.policy import access
from connector.policy.access import AccessRequest, AccessRequestError
from connector.policy.access_model import AccessRequestDefinition
from connector.proxy.handler import Call, Refusal, api_call, authenticate, read_body

MAX_BODY_BYTES = 16 * 1024
PREFIX = "/v1/access-requests"
_TRUE = frozenset({"1", "true", "yes"})

# access.approve, deny and revoke: (request, definitions, actor, now, reason) -> the changed request.
Transition = Callable[[AccessRequest, Sequence[AccessRequestDefinition], Identity, dt.datetime, str], AccessRequest]
TRANSITIONS: dict[str, Transition] = {"approve": access.approve, "deny": access.deny, "revoke": access.revoke}


def _store(call: Call) -> AccessStore:
    store = call.ctx.access_store
    if store is None or not call.ctx.access_requests:
        raise AccessRequestError(503, "this connector takes no access requests (no access_requests or access_store)")
    return store


async def _body(call: Call, allowed: tuple[str, ...]) -> dict[str, str]:
    """The JSON object body, its fields strings among `allowed`; AccessRequestError (400) naming the fault."""
    raw = await read_body(call.request, MAX_BODY_BYTES, call.ctx.server.upstream.response_seconds)
    call.counters.bytes_in = len(raw)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AccessRequestError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AccessRequestError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise AccessRequestError(400, f"unknown field(s) {', '.join(unknown)} (expected {', '.join(allowed)})")
    for key, value in data.items():
        if not isinstance(value, str):
            raise AccessRequestError(400, f'"{key}" must be a string')
    return data


def visible_to(request: AccessRequest, definitions: Sequence[AccessRequestDefinition], identity: Identity) -> bool:
    """The requester sees their own requests; an approver sees the requests they may decide on."""
    if request.requester == identity.user:
        return True
    definition = next((d for d in definitions if d.name == request.name), None)
    return definition is not None and definition.approvers.includes(identity.user, identity.groups)


def _change_record(action: str, request: AccessRequest, now: dt.datetime, reason: str) -> dict[str, Any]:
    return {
        "action": action,
        "name": request.name,
        "requester": request.requester,
        "state": request.state_at(now),
        "reason": reason,
        "approvers": [a.user for a in request.approvals],
        "expires_at": None if request.expires_at is None else request.expires_at.isoformat(),
    }


def _notify(call: Call, event: str, request: AccessRequest, now: dt.datetime, actor: Identity, reason: str) -> None:
    """Queue the transition for the webhook, if one is configured; never waits for it."""
    if call.ctx.access_webhook is not None:
        call.ctx.access_webhook.notify(transition_event(event, request, now, actor.user, reason))


async def _answer(call: Call, status: int, payload: Any) -> web.Response:
    call.decision = "allow"
    response = web.json_response(payload, status=status, headers={"X-Connector-Request-Id": call.request_id})
    call.counters.bytes_out = len(response.body or b"")  # type: ignore[arg-type]
    await call.audit("ResponseComplete", status)
    call.count(status)
    return response


async def _run(request: web.Request, work: Callable[[Call, Identity, dt.datetime], Any]) -> web.StreamResponse:
    """Authenticate, run `work`, answer; an AccessRequestError becomes its status with a one-line message."""
    call = api_call(request)
    try:
        identity = await authenticate(call)
        return await work(call, identity, dt.datetime.now(dt.UTC))
    except AccessRequestError as exc:
        decision = "deny" if exc.status == 403 else "rejected"
        return await call.refuse(Refusal(exc.status, str(exc), decision))
    except Refusal as refusal:
        return await call.refuse(refusal)
    except Exception as exc:
        return await call.fail(exc)


async def create_request(request: web.Request) -> web.StreamResponse:
    async def work(call: Call, identity: Identity, now: dt.datetime) -> web.Response:
        store = _store(call)
        body = await _body(call, ("name", "reason", "duration"))
        for key in ("name", "duration"):
            if not body.get(key, "").strip():
                raise AccessRequestError(400, f'"{key}" is missing')
        filed = access.create(
            call.ctx.access_requests, identity, body["name"], body.get("reason", ""), body["duration"], now
        )
        filed = await asyncio.to_thread(store.create, filed)
        _notify(call, "requested", filed, now, identity, filed.reason)
        call.access_request, call.access_change = filed.id, _change_record("create", filed, now, filed.reason)
        call.reason = f'access request {filed.id} for "{filed.name}" filed'
        return await _answer(call, 201, filed.view(now))

    return await _run(request, work)


async def list_requests(request: web.Request) -> web.StreamResponse:
    async def work(call: Call, identity: Identity, now: dt.datetime) -> web.Response:
        store = _store(call)
        mine = request.query.get("mine", "").lower() in _TRUE
        pending = request.query.get("pending", "").lower() in _TRUE
        found = [
            r.view(now)
            for r in await asyncio.to_thread(store.list)
            if visible_to(r, call.ctx.access_requests, identity)
            and (not mine or r.requester == identity.user)
            and (not pending or r.state_at(now) == access.PENDING)
        ]
        call.reason = f"{len(found)} access request(s) listed"
        return await _answer(call, 200, {"requests": found})

    return await _run(request, work)


async def get_request(request: web.Request) -> web.StreamResponse:
    async def work(call: Call, identity: Identity, now: dt.datetime) -> web.Response:
        request_id = request.match_info["id"]
        call.access_request = request_id
        found = await asyncio.to_thread(_store(call).get, request_id)
        if not visible_to(found, call.ctx.access_requests, identity):
            raise AccessRequestError(404, f"no access request {request_id}")
        call.reason = f"access request {request_id} read"
        return await _answer(call, 200, found.view(now))

    return await _run(request, work)


async def run_transition(
    call: Call, identity: Identity, request_id: str, action: str, reason: str, now: dt.datetime
) -> AccessRequest:
    """Approve, deny or revoke one request, as this API and the console both do: the caller must see
    it, connector.policy.access decides, the webhook hears of a change of state, a revoke ends the
    streams the request allowed, and `call` carries the change for its audit event. A refusal is
    AccessRequestError."""
    apply = TRANSITIONS[action]
    call.access_request = request_id
    store, definitions = _store(call), call.ctx.access_requests
    before: list[str] = []

    def change(current: AccessRequest) -> AccessRequest:
        if not visible_to(current, definitions, identity):
            raise AccessRequestError(404, f"no access request {request_id}")
        before[:] = [current.state_at(now)]  # the store may call this again on a conflict
        return apply(current, definitions, identity, now, reason)

    changed = await asyncio.to_thread(store.update, request_id, change)
    if changed.state_at(now) not in before:  # one approval of several required changes no state
        _notify(call, changed.state_at(now), changed, now, identity, reason)
    call.ctx.granted_streams.changed()  # a revoke ends the streams it allowed now
    call.access_change = _change_record(action, changed, now, reason)
    call.reason = f"access request {request_id}: {action} by {identity.user}, now {changed.state_at(now)}"
    return changed


def _transition(action: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        async def work(call: Call, identity: Identity, now: dt.datetime) -> web.Response:
            reason = (await _body(call, ("reason",))).get("reason", "").strip()
            changed = await run_transition(call, identity, request.match_info["id"], action, reason, now)
            return await _answer(call, 200, changed.view(now))

        return await _run(request, work)

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX, create_request)
    app.router.add_get(PREFIX, list_requests)
    app.router.add_get(PREFIX + "/{id}", get_request)
    for action in TRANSITIONS:
        app.router.add_post(f"{PREFIX}/{{id}}/{action}", _transition(action))
