"""The console's pages: home, sign-out, the recorded sessions and one session with its audit events.

Sessions come from the connector's session index (connector.console.session_index), caught up with
the audit log, the recordings directory and the S3 bucket before each list page; recordings are read
with connector.audit.sessions_cli (the code `sessions play` runs). Both in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from connector.audit.recording_sinks import recording_id_for
from connector.audit.sessions_cli import NotFound, Sources, UsageError, open_recording, parse_since
from connector.console.audit_trail import console_call, record
from connector.console.browser_sessions import COOKIE
from connector.console.guard import CONSOLE_PATH, Viewer, console_context, console_page
from connector.console.render import PLAYER_SCRIPT, message_page, page
from connector.console.session_index import SessionIndex

MAX_AUDIT_EVENTS_SHOWN = 200
UNINDEXED = (
    "the connector cannot keep its sessions index (the reason is in its log): "
    "set server.state_dir to a writable directory"
)


@console_page("any")
async def home(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    return page("home.html", **viewer.template_values)


@console_page("signed_in")
async def logout(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    await console_context(request).browser_sessions.drop(request.cookies.get(COOKIE, ""))
    identity = viewer.session.identity
    await record(console_call(request, identity), "allow", 200, f"console sign-out of {identity.user}")
    response = message_page(200, "Signed out", "you are signed out of the console", signin_link=True)
    response.del_cookie(COOKIE, path=CONSOLE_PATH)
    return response


def _sources(request: web.Request) -> Sources:
    return console_context(request).session_sources or Sources(audit_log=None, directory=None, s3=None)


def _filters(query: Any, now: dt.datetime) -> tuple[dict[str, str], dt.datetime | None]:
    values = {key: query.get(key, "").strip() for key in ("user", "socket", "since")}
    since = parse_since(values["since"], now) if values["since"] else None
    return values, since


@console_page("sessions")
async def sessions_list(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = console_context(request)
    try:
        values, since = _filters(request.query, dt.datetime.now(dt.UTC))
        page_number = int(request.query.get("page", "1"))
        if page_number < 1:
            raise ValueError
    except UsageError as exc:
        return message_page(400, "Bad filter", str(exc).replace("--since", "since"), **viewer.template_values)
    except ValueError:
        return message_page(400, "Bad page", "page must be a positive whole number", **viewer.template_values)
    index = ctx.session_index
    if index is None:
        return message_page(503, "Sessions unavailable", UNINDEXED, **viewer.template_values)
    per_page = ctx.console.sessions_per_page
    found = await asyncio.to_thread(
        index.listing,
        user=values["user"],
        socket=values["socket"],
        since=since,
        offset=(page_number - 1) * per_page,
        limit=per_page,
    )
    return page(
        "sessions.html",
        rows=found.rows,
        total=found.total,
        page=page_number,
        pages=max(1, math.ceil(found.total / per_page)),
        filters=values,
        warnings=found.warnings,
        **viewer.template_values,
    )


def _audit_events(index: SessionIndex | None, session_id: str) -> list[dict[str, Any]]:
    """The audit events of one session, read where the index saw them in the log."""
    if index is None:
        return []
    events = []
    for line in index.audit_lines(session_id, MAX_AUDIT_EVENTS_SHOWN):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("request_id") == session_id:
            events.append(event)
    return events


def _read_cast(index: SessionIndex | None, sources: Sources, session_id: str) -> bytes:
    """The session's recording: where the index last saw it (S3 after an upload), else looked up by id."""
    where = index.recording(session_id) if index is not None else None
    if where is None or not (where.startswith("s3://") or Path(where).is_file()):
        where = session_id
    _, stream = open_recording(where, sources)
    with stream:
        return stream.read()


def _session_id(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    # Only what the recorder itself names files after: never a path or a URI from the address bar.
    if recording_id_for(session_id) != session_id:
        raise web.HTTPNotFound()
    return session_id


@console_page("sessions")
async def session_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    session_id = _session_id(request)
    index = console_context(request).session_index
    try:
        cast = await asyncio.to_thread(_read_cast, index, _sources(request), session_id)
    except (NotFound, UsageError):
        return message_page(404, "No such session", f"no recording of session {session_id}", **viewer.template_values)
    events = await asyncio.to_thread(_audit_events, index, session_id)
    header = cast.split(b"\n", 1)[0].decode("utf-8", "replace")
    return page(
        "session.html",
        session_id=session_id,
        header=header,
        events=[json.dumps(e, ensure_ascii=False, sort_keys=True) for e in events],
        cast_url=f"{CONSOLE_PATH}sessions/{session_id}.cast",
        player_ready=PLAYER_SCRIPT.is_file(),
        **viewer.template_values,
    )


@console_page("sessions")
async def session_cast(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    session_id = _session_id(request)
    try:
        index = console_context(request).session_index
        cast = await asyncio.to_thread(_read_cast, index, _sources(request), session_id)
    except (NotFound, UsageError):
        return message_page(404, "No such session", f"no recording of session {session_id}", **viewer.template_values)
    return web.Response(
        body=cast,
        content_type="application/x-asciicast",
        headers={
            "Content-Disposition": f'attachment; filename="{session_id}.cast"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
