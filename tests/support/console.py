"""Sign in to a connector's web console through the sandbox IdP, as a browser would, with aiohttp."""

from __future__ import annotations

import re
import ssl
from html import unescape
from http.cookies import SimpleCookie

import aiohttp

from sandbox.oidc import OidcIssuer

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


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
