"""The sandbox's console, as its tour prints it: alice (platform-admins) signs in through the sandbox
IdP and sees the recorded sessions; carol, with no console rights, gets the 403 page. The connector
runs `serve` with its default workers, so the sign-in and the pages reach different workers."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from tests.support.console import browser, sign_in
from tests.support.sandbox_process import SandboxProcess

pytestmark = [pytest.mark.e2e]


async def test_the_tours_console_signs_alice_in_and_refuses_carol(
    sandbox_process: SandboxProcess, sandbox: dict[str, Any]
) -> None:
    url = sandbox["connector"]["url"]
    assert f"or in the browser: {url}/console/" in sandbox_process.output.read_text()
    trust = ssl.create_default_context(cafile=sandbox["connector"]["ca_file"])
    async with browser(trust) as session:
        status, page, _ = await sign_in(session, url, "alice")
        assert status == 200, page
        async with session.get(url + "/console/sessions") as resp:
            listing = await resp.text()
            assert resp.status == 200, listing
            assert "session(s)" in listing and "alice@example.com" in listing
    async with browser(trust) as session:
        status, page, _ = await sign_in(session, url, "carol")
        assert status == 200, page
        async with session.get(url + "/console/sessions") as resp:
            assert resp.status == 403, await resp.text()
