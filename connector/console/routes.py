"""The console's routes on the connector's app, added only when `console.enabled` is true at start."""

from __future__ import annotations

from aiohttp import web

from connector.console import access_page, pages, signin
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
    router.add_get(CONSOLE_PATH + "access", access_page.access)
    router.add_static(CONSOLE_PATH + "static/", STATIC_DIR, follow_symlinks=False)
