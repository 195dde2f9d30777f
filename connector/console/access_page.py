"""The console's Access page: who may use what, and why one request would be allowed or denied.

The matrix crosses the subjects the policies name (users and groups) with the sockets the connector
serves now (configured and discovered), listing in each cell the policies that name the subject and
select the socket, from the live `PolicyEngine`. A user's row shows only the policies naming that
user (and `*`): their groups' rows add to it. The explain form is a GET (it changes nothing) and
answers with what `python -m connector policy check` prints, computed by the same function.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from aiohttp import web

from connector.console.guard import Viewer, console_context, console_page
from connector.console.render import page
from connector.identity import Identity
from connector.policy.cli import check_request
from connector.policy.config_input import UsageError
from connector.policy.engine import PolicyAtSocket, PolicyEngine

EXPLAIN_FIELDS = ("user", "groups", "socket", "method", "path")
# Form values longer than this are not a user, a group list or a request path anyone means.
MAX_FIELD_CHARS = 4096


@dataclass(frozen=True)
class SubjectRow:
    kind: str  # "user" or "group"
    name: str
    cells: list[list[PolicyAtSocket]]


def access_matrix(engine: PolicyEngine, sockets: list[tuple[str, dict[str, str]]]) -> list[SubjectRow]:
    """One row per named user, then per named group; one cell per socket, in the order given."""
    users, groups = engine.named_subjects()
    subjects = [("user", Identity(user=u)) for u in users] + [("group", Identity(user="", groups=(g,))) for g in groups]
    return [
        SubjectRow(kind, identity.user or identity.groups[0], [engine.policies_at(identity, n, t) for n, t in sockets])
        for kind, identity in subjects
    ]


def _explain(engine: PolicyEngine, form: dict[str, str], tags: dict[str, str], now: dt.datetime) -> str:
    """The decision as `policy check` prints it, or raises UsageError saying what is missing or wrong."""
    for name in ("user", "socket", "method", "path"):
        if not form[name]:
            raise UsageError(f"{name} is required")
    too_long = [name for name in EXPLAIN_FIELDS if len(form[name]) > MAX_FIELD_CHARS]
    if too_long:
        raise UsageError(f"{too_long[0]} is longer than {MAX_FIELD_CHARS} characters")
    if not form["path"].startswith("/"):
        raise UsageError("path must start with / (e.g. /api/v1/namespaces/default/pods)")
    groups = tuple(g.strip() for g in form["groups"].split(",") if g.strip())
    result = check_request(
        engine, Identity(user=form["user"], groups=groups), form["socket"], tags, form["method"], form["path"],
        source_ip="", now=now,
    )  # fmt: skip
    return json.dumps(result, indent=2)


@console_page("access")
async def access(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = console_context(request)
    engine = ctx.policy  # read once: a reload mid-request does not mix two policy sets
    sockets = [(entry.name, dict(entry.upstream.tags)) for entry in ctx.registry.entries()]
    form = {name: request.query.get(name, "").strip() for name in EXPLAIN_FIELDS}
    explained = error = None
    if any(form.values()):
        form["method"] = form["method"] or "GET"
        try:
            explained = _explain(engine, form, dict(sockets).get(form["socket"], {}), dt.datetime.now(dt.UTC))
        except UsageError as exc:
            error = str(exc)
    return page(
        "access.html",
        status=400 if error else 200,
        sockets=[name for name, _ in sockets],
        rows=access_matrix(engine, sockets),
        form=form,
        explained=explained,
        error=error,
        **viewer.template_values,
    )
