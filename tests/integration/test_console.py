"""The web console on a real connector (TLS on 127.0.0.1) signing people in through the sandbox IdP:
authorization code + PKCE, the session cookie's rules, CSRF, console rights and the sessions pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.console import SESSION_ID, browser, register_console, sign_in, write_recording
from tests.support.oidc import running_issuer
from tests.support.proxy_harness import DEFAULT_POLICIES, ProxyHarness

REVIEWERS = {"name": "reviewers", "subjects": {"users": ["alice@example.com"]}, "console": {"sessions": "read"}}


def _console_config(issuer_url: str, tmp: Path, **console: Any) -> dict[str, Any]:
    return {
        "authentication": {"oidc": [{"issuer": issuer_url, "client_id": "eks-access-connector"}]},
        "console": {"enabled": True, **console},
        "recordings": {"dir": str(tmp / "recordings")},
    }


@asynccontextmanager
async def console_connector(
    tmp: Path,
    *,
    policies: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    recordings: dict[str, Any] | None = None,
    **console: Any,
) -> AsyncIterator[ProxyHarness]:
    """A connector with the console on, alice a reviewer (or all of these policies), its redirect URI
    registered with a running IdP; `config` adds config keys, `recordings` adds to its recordings config
    (e.g. an S3 bucket)."""
    async with running_issuer() as issuer:
        config = {**_console_config(issuer.url, tmp, **console), **(config or {})}
        config["recordings"].update(recordings or {})
        policies = [*DEFAULT_POLICIES, REVIEWERS] if policies is None else policies
        async with ProxyHarness(tmp, policies=policies, config=config) as h:
            register_console(issuer, h.url)
            yield h


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def test_sign_in_sets_a_strict_console_cookie_and_shows_the_pages(tmp_path):
    async with console_connector(tmp_path) as h:
        cast = write_recording(tmp_path / "recordings")
        async with browser(h.ssl_context()) as session:
            status, page, cookies = await sign_in(session, h.url, "alice")
            assert status == 200, page
            cookie = cookies["connector_console"]
            assert cookie["path"] == "/console/"
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
            assert 'http-equiv="refresh"' in page and "<script" not in page

            async with session.get(h.url + "/console/") as resp:
                home = await resp.text()
                assert resp.status == 200, home
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
                assert "alice@example.com" in home and "/console/sessions" in home

            async with session.get(h.url + "/console/sessions?user=bob@example.com") as resp:
                listing = await resp.text()
                assert resp.status == 200, listing
                assert "1 session(s)" in listing and "echo hello" in listing
                assert f"/console/sessions/{SESSION_ID}" in listing
            async with session.get(h.url + "/console/sessions?user=nobody") as resp:
                assert "0 session(s)" in await resp.text()
            async with session.get(h.url + "/console/sessions?since=yesterday") as resp:
                assert resp.status == 400
                assert "neither a duration" in await resp.text()

            async with session.get(h.url + f"/console/sessions/{SESSION_ID}") as resp:
                detail = await resp.text()
                assert resp.status == 200, detail
                assert f"/console/sessions/{SESSION_ID}.cast" in detail and "web-0" in detail
            async with session.get(h.url + f"/console/sessions/{SESSION_ID}.cast") as resp:
                assert resp.status == 200
                assert await resp.read() == cast
                assert "attachment" in resp.headers["Content-Disposition"]
            async with session.get(h.url + "/console/sessions/..%2Faudit.log") as resp:
                assert resp.status == 404


async def test_the_console_cookie_authenticates_nothing_outside_the_console(tmp_path):
    async with console_connector(tmp_path) as h:
        async with browser(h.ssl_context()) as session:
            status, _, cookies = await sign_in(session, h.url, "alice")
            assert status == 200
            cookie = {"Cookie": f"connector_console={cookies['connector_console'].value}"}
            async with session.get(h.url + "/console/", headers=cookie) as resp:
                assert resp.status == 200  # the cookie is live...
        for path in ("/sockets/prod/api/v1/namespaces/default/pods", "/v1/sockets", "/v1/access-requests"):
            status, _, body = await h.request("GET", path, user=None, headers=cookie)
            assert status == 401, (path, body)  # ...and worthless anywhere else
        assert not any("Cookie" in r.headers for r in h.upstream.requests)


async def test_forms_need_the_sessions_csrf_token_and_sign_out_ends_the_session(tmp_path):
    async with console_connector(tmp_path) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + "/console/") as resp:
                token = _csrf(await resp.text())
            async with session.post(h.url + "/console/logout", data={"csrf_token": "forged"}) as resp:
                assert resp.status == 403
            async with session.get(h.url + "/console/") as resp:
                assert resp.status == 200  # the forged form changed nothing
            async with session.post(h.url + "/console/logout", data={"csrf_token": token}) as resp:
                assert resp.status == 200
            async with session.get(h.url + "/console/", allow_redirects=False) as resp:
                assert resp.status == 401
                assert "/console/login" in await resp.text()


async def test_a_user_without_console_rights_gets_the_403_page(tmp_path):
    async with console_connector(tmp_path) as h:
        async with browser(h.ssl_context()) as session:
            status, _, _ = await sign_in(session, h.url, "carol")
            assert status == 200
            for path in ("/console/", "/console/sessions", f"/console/sessions/{SESSION_ID}.cast"):
                async with session.get(h.url + path) as resp:
                    page = await resp.text()
                    assert resp.status == 403, (path, page)
                    assert "carol@example.com may not use" in page and "console" in page


async def test_a_callback_from_another_browser_or_replayed_is_refused(tmp_path):
    async with console_connector(tmp_path) as h:
        async with browser(h.ssl_context()) as victim:
            async with victim.get(h.url + "/console/callback?state=made-up&code=x") as resp:
                assert resp.status == 400
                assert "sign in again" in await resp.text()
            async with victim.get(h.url + "/console/callback?error=access_denied") as resp:
                assert resp.status == 400
                assert "access_denied" in await resp.text()


async def test_a_confidential_client_signs_in_with_its_secret_and_a_wrong_one_fails(tmp_path, monkeypatch):
    async with running_issuer(client_secrets={"eks-access-connector": "s3cret"}) as issuer:
        monkeypatch.setenv("CONSOLE_SECRET", "s3cret")
        config = _console_config(issuer.url, tmp_path, client_secret="env:CONSOLE_SECRET")
        async with ProxyHarness(tmp_path, policies=[*DEFAULT_POLICIES, REVIEWERS], config=config) as h:
            register_console(issuer, h.url)
            async with browser(h.ssl_context()) as session:
                status, page, _ = await sign_in(session, h.url, "alice")
                assert status == 200, page
            monkeypatch.setenv("CONSOLE_SECRET", "wrong")
            async with browser(h.ssl_context()) as session:
                status, page, cookies = await sign_in(session, h.url, "alice")
                assert status == 400 and "connector_console" not in cookies
                assert "must authenticate with its secret" in page


async def test_an_unregistered_redirect_uri_is_refused_by_the_idp(tmp_path):
    async with running_issuer() as issuer:
        config = _console_config(issuer.url, tmp_path)
        async with ProxyHarness(tmp_path, policies=[*DEFAULT_POLICIES, REVIEWERS], config=config) as h:
            async with browser(h.ssl_context()) as session:
                with pytest.raises(AssertionError, match="registered redirect URI"):
                    await sign_in(session, h.url, "alice")


async def test_without_console_enabled_there_is_no_console(tmp_path):
    async with running_issuer() as issuer:
        config = _console_config(issuer.url, tmp_path)
        config["console"] = {"enabled": False}
        async with ProxyHarness(tmp_path, config=config) as h:
            for path in ("/console/", "/console/login"):
                status, _, body = await h.request("GET", path, user=None)
                assert status == 404 and b'"kind":"Status"' in body.replace(b" ", b"")


async def test_sign_in_is_unavailable_when_the_idp_is_down(tmp_path):
    async with running_issuer() as issuer:
        config = _console_config(issuer.url, tmp_path)
        async with ProxyHarness(tmp_path, policies=[*DEFAULT_POLICIES, REVIEWERS], config=config) as h:
            await issuer.stop()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=h.ssl_context())) as session:
                async with session.get(h.url + "/console/login", allow_redirects=False) as resp:
                    assert resp.status == 502
                    assert "could not be reached" in await resp.text()
