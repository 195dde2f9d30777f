"""The console's pages: home, sign-out, the recorded sessions and one session with its audit events.

Sessions come from connector.audit.sessions_cli (the code `sessions list` runs): the audit log and
the recordings directory, merged per session id. They are read on each request in a worker thread.
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
from connector.audit.sessions_cli import (
    NotFound,
    SessionRow,
    Sources,
    UsageError,
    collect_sessions,
    open_recording,
    parse_since,
)
from connector.console.audit_trail import console_call, record
from connector.console.browser_sessions import COOKIE
from connector.console.guard import CONSOLE_PATH, Viewer, console_context, console_page
from connector.console.render import PLAYER_SCRIPT, message_page, page

MAX_AUDIT_EVENTS_SHOWN = 200


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


def _matches(row: SessionRow, values: dict[str, str], since: dt.datetime | None) -> bool:
    return (
        (not values["user"] or row.user == values["user"])
        and (not values["socket"] or row.socket == values["socket"])
        and (since is None or (row.started is not None and row.started >= since))
    )


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
    warnings: list[str] = []
    try:
        rows = await asyncio.to_thread(
            collect_sessions, _sources(request), include_s3=False, since=since, warnings=warnings
        )
    except (NotFound, UsageError) as exc:
        return message_page(503, "Sessions unavailable", str(exc), **viewer.template_values)
    rows = [r for r in reversed(rows) if _matches(r, values, since)]  # newest first
    per_page = ctx.console.sessions_per_page
    pages = max(1, math.ceil(len(rows) / per_page))
    shown = rows[(page_number - 1) * per_page : page_number * per_page]
    return page(
        "sessions.html",
        rows=shown,
        total=len(rows),
        page=page_number,
        pages=pages,
        filters=values,
        warnings=warnings,
        **viewer.template_values,
    )


def _audit_events(audit_log: Path | None, session_id: str) -> list[dict[str, Any]]:
    """The audit events of one session, streaming over the log (never holding all of it)."""
    if audit_log is None or not audit_log.is_file():
        return []
    found: list[dict[str, Any]] = []
    with audit_log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if session_id not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("request_id") == session_id:
                found.append(event)
                if len(found) >= MAX_AUDIT_EVENTS_SHOWN:
                    break
    return found


def _read_cast(sources: Sources, session_id: str) -> bytes:
    _, stream = open_recording(session_id, sources)
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
    sources = _sources(request)
    try:
        cast = await asyncio.to_thread(_read_cast, sources, session_id)
    except (NotFound, UsageError):
        return message_page(404, "No such session", f"no recording of session {session_id}", **viewer.template_values)
    events = await asyncio.to_thread(_audit_events, sources.audit_log, session_id)
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
        cast = await asyncio.to_thread(_read_cast, _sources(request), session_id)
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
