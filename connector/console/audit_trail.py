"""Console actions in the audit log: sign-ins (and failed ones), sign-outs and access-request
decisions, written as events of the connector's one audit stream with the console user as caller.

An event is built by the same `Call` as a `/v1/...` request's, so it has the same fields (request
id, user, groups, source IP, user agent, decision, code, reason, and for a decision the access
request and its change); its path is the console's (`/console/callback`, `/console/logout`,
`/console/access-requests/ID/ACTION`). The query is never written: the callback's carries the
authorization code and state. Page views are not audited: reading is governed by the console rights
of policies, and the pages read the audit log and the recordings themselves.
"""

from __future__ import annotations

from aiohttp import web

from connector.audit.events import Decision
from connector.identity import Identity
from connector.proxy.handler import Call, api_call


def console_call(request: web.Request, identity: Identity | None = None) -> Call:
    """The bookkeeping of one console action, for its audit event."""
    call = api_call(request)
    call.raw_query = ""
    call.identity = identity
    return call


async def record(call: Call, decision: Decision, code: int, reason: str) -> None:
    """Write the action's one event (`ResponseComplete`, like every request's last)."""
    call.decision, call.reason = decision, reason
    await call.audit("ResponseComplete", code)
