"""What every console request goes through: the console must be on, the browser session live, the
form's CSRF token right, and the caller's console rights (from policies, evaluated per request) enough.

The session cookie is `HttpOnly`, `Secure`, `SameSite=Strict` and scoped to `/console/`; nothing else
on the connector reads it (the Kubernetes and `/v1/` routes authenticate bearer tokens and client
certificates only), so a cross-site page can reach neither the console nor a cluster with it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from connector.console.browser_sessions import COOKIE, BrowserSession
from connector.console.render import message_page
from connector.policy.model import ConsoleRights
from connector.proxy.handler import CONTEXT

if TYPE_CHECKING:
    from connector.proxy.app import ProxyContext

CONSOLE_PATH = "/console/"
CSRF_FIELD = "csrf_token"
# "signed_in": any live session; "any": some console right; else that right.
Right = Literal["signed_in", "any", "sessions", "audit", "access_requests", "access"]


def console_context(request: web.Request) -> ProxyContext:
    return request.app[CONTEXT]


def set_cookie(
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    path: str,
    max_age: int | None = None,
    same_site: Literal["Strict", "Lax"] = "Strict",
) -> None:
    response.set_cookie(name, value, path=path, max_age=max_age, secure=True, httponly=True, samesite=same_site)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person of a console request and what the policies let them see now."""

    session: BrowserSession
    rights: ConsoleRights

    @property
    def template_values(self) -> dict[str, object]:
        return {"user": self.session.identity.user, "csrf_token": self.session.csrf_token, "rights": self.rights}


Page = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]


async def current_session(request: web.Request) -> BrowserSession | None:
    ctx = console_context(request)
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    return await ctx.browser_sessions.get(
        session_id,
        idle_seconds=ctx.console.idle_timeout_minutes * 60,
        absolute_seconds=ctx.console.absolute_timeout_hours * 3600,
    )


def _has(rights: ConsoleRights, right: Right) -> bool:
    if right == "signed_in":
        return True
    return rights.any if right == "any" else getattr(rights, right) is not None


def console_page(right: Right) -> Callable[[Page], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap a page handler: 404 when the console is off, sign-in when there is no session, 403 without
    the right, 403 for a POST without this session's CSRF token."""

    def wrap(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            ctx = console_context(request)
            if not ctx.console.enabled:
                return message_page(404, "Not found", "the console is not enabled on this connector")
            session = await current_session(request)
            if session is None:
                if request.method == "GET":
                    return message_page(401, "Sign in", "sign in to use the console", signin_link=True)
                return message_page(401, "Signed out", "your console session ended: sign in again", signin_link=True)
            if request.method == "POST":
                form = await request.post()
                if not secrets.compare_digest(str(form.get(CSRF_FIELD, "")), session.csrf_token):
                    return message_page(
                        403, "Refused", "this form is stale or did not come from the console: reload the page"
                    )
            rights = ctx.policy.console_rights(session.identity, request.remote or "", dt.datetime.now(dt.UTC))
            viewer = Viewer(session, rights)
            if not _has(rights, right):
                what = "the console" if right == "any" else f"{right.replace('_', ' ')} in the console"
                return message_page(
                    403,
                    "Forbidden",
                    f"{session.identity.user} may not use {what}: no policy gives you console rights for it. "
                    "Ask the connector's administrators for a policy with a `console` section.",
                    **viewer.template_values,
                )
            return await handler(request, viewer)

        return guarded

    return wrap
