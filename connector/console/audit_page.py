"""The console's audit page: search the audit log (connector.audit.search) a page at a time.

The search runs in a worker thread over the configured `audit.file` and its rotated copies, oldest
first; a page stops after `EVENTS_PER_PAGE` matches or `BYTES_PER_PAGE` bytes of log, and its "next
page" link carries the file and byte offset to resume from, so no page reads the whole log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from connector.audit.log_files import log_files
from connector.audit.recording_sinks import recording_id_for
from connector.audit.search import DECISIONS, TEXT_FIELDS, AuditQuery, Position, resource_of, search
from connector.audit.sessions_cli import SESSION_SUBRESOURCES, UsageError
from connector.console.guard import CONSOLE_PATH, Viewer, console_context, console_page
from connector.console.render import message_page, page

EVENTS_PER_PAGE = 100
BYTES_PER_PAGE = 64 << 20
FORM_FIELDS = (*TEXT_FIELDS, "decision", "since", "until")


def session_link(event: dict[str, Any]) -> str | None:
    """The console page of the session this event belongs to, when it has a recording."""
    request = event.get("request")
    subresource = request.get("subresource") if isinstance(request, dict) else None
    session_id = event.get("request_id")
    if not isinstance(session_id, str) or recording_id_for(session_id) != session_id:
        return None
    if event.get("recording") or (subresource in SESSION_SUBRESOURCES and event.get("decision") == "allow"):
        return f"{CONSOLE_PATH}sessions/{session_id}"
    return None


@dataclass(frozen=True)
class AuditRow:
    """One event as the page shows it, every field text (an event of odd shape still renders)."""

    time: str
    user: str
    groups: str
    socket: str
    verb: str
    resource: str  # `pods/exec`; for the connector's own endpoints, the path
    namespace: str
    name: str
    decision: str
    code: str
    reason: str
    request_id: str
    session: str | None  # the session's console page, when it has one and the viewer may see it


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _row(event: dict[str, Any], link_sessions: bool) -> AuditRow:
    request = event.get("request") if isinstance(event.get("request"), dict) else None
    groups = event.get("groups")
    if request:
        verb, resource = _text(request.get("verb")), resource_of(request)
        namespace, name = _text(request.get("namespace")), _text(request.get("name"))
    else:  # the connector's own endpoints (`/v1/...`, the console): no Kubernetes request
        verb, resource, namespace, name = _text(event.get("method")), _text(event.get("path")), "", ""
    return AuditRow(
        time=_text(event.get("time")),
        user=_text(event.get("user")) or "-",
        groups=", ".join(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else "",
        socket=_text(event.get("socket")),
        verb=verb,
        resource=resource,
        namespace=namespace,
        name=name,
        decision=_text(event.get("decision")),
        code=_text(event.get("code")),
        reason=_text(event.get("reason")),
        request_id=_text(event.get("request_id")),
        session=session_link(event) if link_sessions else None,
    )


@console_page("audit")
async def audit_search(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = console_context(request)
    form = {name: request.query.get(name, "").strip() for name in FORM_FIELDS}
    audit_file = ctx.session_sources.audit_log if ctx.session_sources is not None else None
    values: dict[str, Any] = {"form": form, "decisions": DECISIONS, **viewer.template_values}
    if audit_file is None:
        return message_page(
            503, "Audit log unavailable", "this connector writes its audit log to stdout (no audit.file)",
            **viewer.template_values,
        )  # fmt: skip
    files = await asyncio.to_thread(log_files, audit_file)
    try:
        query = AuditQuery.from_form(form, dt.datetime.now(dt.UTC))
        position = request.query.get("position", "")
        start = Position.parse(position, files) if position else None
    except UsageError as exc:
        return page("audit.html", 400, error=str(exc), rows=[], found=None, **values)
    found = await asyncio.to_thread(search, files, query, start, limit=EVENTS_PER_PAGE, byte_budget=BYTES_PER_PAGE)
    filters = {name: value for name, value in form.items() if value}
    return page(
        "audit.html",
        error=None,
        rows=[_row(e, viewer.rights.sessions is not None) for e in found.events],
        found=found,
        next_url=None if found.next is None else "?" + urlencode({**filters, "position": found.next.token}),
        first_url="?" + urlencode(filters) if start is not None else None,
        **values,
    )
