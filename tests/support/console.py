"""Sign in to a connector's web console through the sandbox IdP, as a browser would, with aiohttp."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
from html import unescape
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp

from sandbox.oidc import OidcIssuer

# Debian's package puts it on PATH; Playwright is pointed at it, so `playwright install` is never needed.
CHROMIUM = shutil.which("chromium")
REPO = Path(__file__).resolve().parents[2]
# Small enough for the README, big enough to read a page.
SCREENSHOT_VIEWPORT = {"width": 1000, "height": 650}
SESSION_ID = "c0ffee00-1111-2222-3333-444455556666"
SESSION_OUTPUT = "hello from the pod"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def screenshot_dir(tmp_path: Path) -> Path:
    """Where the browser tests save their screenshots: the test's tmp dir, or, with
    CONSOLE_SCREENSHOTS=docs/console (a path in the repo), the README's pictures."""
    wanted = os.environ.get("CONSOLE_SCREENSHOTS")
    directory = REPO / wanted if wanted else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def register_console(issuer: OidcIssuer, connector_url: str) -> str:
    """Register the console's redirect URI with the IdP (the connector's port is known only once it runs)."""
    uri = connector_url + "/console/callback"
    issuer.redirect_uris.append(uri)
    return uri


def browser(ssl_context: ssl.SSLContext) -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar ignores cookies of IP-address hosts otherwise.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context), cookie_jar=aiohttp.CookieJar(unsafe=True)
    )


async def sign_in(session: aiohttp.ClientSession, connector_url: str, user: str) -> tuple[int, str, SimpleCookie]:
    """Run the whole sign-in as `user`; (status, page, cookies set) of the console's callback."""
    async with session.get(connector_url + "/console/login", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        authorize = resp.headers["Location"]
    async with session.get(authorize) as resp:
        assert resp.status == 200, await resp.text()
        form = {name: unescape(value) for name, value in _HIDDEN.findall(await resp.text())}
    async with session.post(authorize.split("?")[0], data={**form, "user": user}, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        callback = resp.headers["Location"]
    async with session.get(callback, allow_redirects=False) as resp:
        cookies: SimpleCookie = SimpleCookie()
        for header in resp.headers.getall("Set-Cookie", []):
            cookies.load(header)
        return resp.status, await resp.text(), cookies


def write_recording(directory: Path) -> bytes:
    """A finished exec session of bob's in the recordings directory, as the recorder writes it; its bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    header = {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1_780_000_000,
        "connector": {
            "session_id": SESSION_ID,
            "user": "bob@example.com",
            "socket": "prod",
            "namespace": "default",
            "pod": "web-0",
            "container": "app",
            "subresource": "exec",
            "command": ["sh", "-c", "echo hello"],
        },
    }
    body = (json.dumps(header) + "\n" + json.dumps([0.1, "o", SESSION_OUTPUT + "\r\n"]) + "\n"
            + json.dumps([0.2, "m", "exit status 0"]) + "\n").encode()  # fmt: skip
    (directory / f"{SESSION_ID}.cast").write_bytes(body)
    return body


async def signed_in_page(
    browser: Any, url: str, user: str, refused: list[str] | None = None, width: int | None = None
) -> Any:
    """A page of a new context of a Playwright browser, signed in to the console as `user` through the
    sandbox IdP; the Content Security Policy violations it reports are added to `refused`."""
    # The connector's CA is made per run; the browser is told to accept it.
    viewport = SCREENSHOT_VIEWPORT if width is None else {"width": width, "height": 800}
    context = await browser.new_context(ignore_https_errors=True, viewport=viewport)
    page = await context.new_page()
    if refused is not None:
        page.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
    await page.goto(url + "/console/login")
    await page.get_by_role("button", name=user).click()
    await page.wait_for_url(url + "/console/")
    return page
