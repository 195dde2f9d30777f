"""The console's routes on the connector's app, added only when `console.enabled` is true at start."""

from __future__ import annotations

from aiohttp import web

from connector.console import access_page, access_requests_page, audit_page, pages, signin
from connector.console.guard import CONSOLE_PATH
from connector.console.render import STATIC_DIR


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get(CONSOLE_PATH, pages.home)
    router.add_get(CONSOLE_PATH + "login", signin.login)
    router.add_get(signin.CALLBACK_PATH, signin.callback)
    router.add_post(CONSOLE_PATH + "logout", pages.logout)
    router.add_get(CONSOLE_PATH + "sessions", pages.sessions_list)
    router.add_get(CONSOLE_PATH + "sessions/{session_id}.cast", pages.session_cast)
    router.add_get(CONSOLE_PATH + "sessions/{session_id}", pages.session_page)
    router.add_get(CONSOLE_PATH + "audit", audit_page.audit_search)
    router.add_get(access_requests_page.PAGE_PATH, access_requests_page.access_requests_list)
    router.add_post(access_requests_page.PAGE_PATH + "/{id}/{action}", access_requests_page.access_request_action)
    router.add_get(CONSOLE_PATH + "access", access_page.access)
    router.add_static(CONSOLE_PATH + "static/", STATIC_DIR, follow_symlinks=False)
