"""The sandbox's console, as its tour prints it: alice (platform-admins) signs in through the sandbox
IdP and sees the recorded sessions; carol, with no console rights, gets the 403 page; alice finds
bob's denied delete in the audit page and approves the request bob files with the tour's command,
in headless Chromium; alice plays her own exec session in the console's player.
The connector runs `serve` with its default workers, so the sign-in and the pages reach different
workers."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.world import PROD_SOCKET
from tests.e2e.test_recordings import WEB_POD
from tests.e2e.test_tour import _tour_commands
from tests.e2e.test_tour_access import BOB, run, with_id
from tests.support.console import CHROMIUM, browser, sign_in, signed_in_page
from tests.support.sandbox_process import AuditLog, Kubectl, SandboxProcess

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


async def test_alice_finds_bobs_denied_delete_and_approves_his_request_in_the_browser(
    sandbox_process: SandboxProcess, sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], tmp_path: Path
) -> None:
    """In headless Chromium (Playwright); screenshots of both pages in the test's tmp dir."""
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed: `make chromium` installs it")
    url = sandbox["connector"]["url"]
    request, _, _, revoke = _tour_commands(sandbox_process)["python"][2:]
    denied = kubectl("1.33").run("delete", "pod", "-n", "default", "--all", context=f"bob@{PROD_SOCKET}")
    assert denied.returncode == 1 and "Forbidden" in denied.stderr, denied.stderr
    filed = run([*(a for a in request if a != "--wait"), "--output", "json"])
    assert filed.returncode == 0, filed.stderr
    request_id = json.loads(filed.stdout)["id"]
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            try:
                refused: list[str] = []
                page = await signed_in_page(browser, url, "alice", refused, width=1400)
                await page.get_by_role("link", name="Audit").first.click()
                await page.get_by_label("User").fill(BOB)
                await page.get_by_label("Verb").fill("delete")
                await page.get_by_label("Decision").select_option("deny")
                await page.get_by_role("button", name="Search").click()
                await page.get_by_text("event(s) on this page").wait_for()
                rows = page.locator("table.audit tbody tr")
                assert await rows.count() > 0
                assert "delete pods -n default" in await rows.first.inner_text()
                await page.screenshot(path=tmp_path / "console-audit.png")

                await page.get_by_role("link", name="Access requests").first.click()
                pending = page.locator(f"table.pending #request-{request_id}")
                await pending.get_by_label("Approve reason").fill("ok")
                await pending.get_by_role("button", name="Approve").click()
                await page.get_by_text(f"Approval recorded: access request {request_id} (prod-break-glass").wait_for()
                assert f"{BOB}" in await page.locator(f"table.approved #request-{request_id}").inner_text()
                await page.screenshot(path=tmp_path / "console-access-request-approved.png")
                assert refused == [], refused
            finally:
                await browser.close()
    finally:
        # The other tests expect bob without a grant.
        revoked = run(with_id(revoke, request_id))
        assert revoked.returncode == 0, revoked.stderr


async def test_alice_replays_her_exec_session_in_the_sandbox_consoles_player(
    sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path
) -> None:
    """An exec through the sandbox's connector, then its session opened from the console's list and
    played in asciinema-player in headless Chromium, until the command's output appears."""
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed: `make chromium` installs it")
    url = sandbox["connector"]["url"]
    since = audit.mark()
    done = kubectl("1.33").run("exec", WEB_POD, "--", "echo", "replayed-in-the-console", context=f"alice@{PROD_SOCKET}")
    assert done.returncode == 0, done.stderr
    event = audit.wait(since, user="alice@example.com", socket=PROD_SOCKET, subresource="exec",
                       stage="ResponseComplete", recording=lambda path: bool(path))  # fmt: skip
    session_id = Path(event["recording"]).name.removesuffix(".cast")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            refused: list[str] = []
            page = await signed_in_page(browser, url, "alice", refused)
            await page.get_by_role("link", name="Sessions").first.click()
            await page.locator(f'a[href="/console/sessions/{session_id}"]').click()
            await page.locator("#player .ap-player").wait_for()
            await page.locator("#player").click()  # play
            await page.locator("#player").get_by_text("replayed-in-the-console").wait_for(timeout=15_000)
            await page.screenshot(path=tmp_path / "console-session.png", full_page=True)
            assert refused == [], refused
        finally:
            await browser.close()
