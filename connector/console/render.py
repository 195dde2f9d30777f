"""Server-rendered pages: the Jinja2 templates shipped in this package, and the headers every console
answer carries (a strict Content-Security-Policy: scripts and styles only from our static files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
# Copied there by `make console-player` from the npm lock of connector/console/player/.
PLAYER_SCRIPT = STATIC_DIR / "player" / "asciinema-player.min.js"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        # The player's terminal emulator is WebAssembly; 'wasm-unsafe-eval' allows compiling it, not JS eval.
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def page(template: str, status: int = 200, **values: Any) -> web.Response:
    """An HTML page from a template, with the console's security headers."""
    body = _templates.get_template(template).render(**values)
    return web.Response(status=status, text=body, content_type="text/html", headers=SECURITY_HEADERS)


def message_page(status: int, title: str, message: str, **values: Any) -> web.Response:
    """A plain page that says what happened (sign-in failures, 403, 404)."""
    values.setdefault("user", None)
    values.setdefault("csrf_token", "")
    return page("message.html", status, title=title, message=message, **values)
