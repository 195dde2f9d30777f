"""The console's review pages in a real browser (headless Chromium through Playwright, as in
test_console_browser): alice searches the audit log for a developer's denied delete, then approves
that developer's access request in the page and finds it among the approved ones. Screenshots of
each page are saved in the test's tmp dir (`console-*.png`)."""

from __future__ import annotations

import pytest

from tests.integration.test_console import console_connector
from tests.integration.test_console_access_requests import APPROVERS, DELETE_POD, access_config, file_request
from tests.support.console import CHROMIUM, signed_in_page
from tests.support.proxy_harness import DEFAULT_POLICIES

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (requirements-dev.txt)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `make chromium` installs it"
)


async def test_alice_finds_a_denied_delete_and_approves_the_request_that_follows(tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with (
        console_connector(tmp_path, policies=[*DEFAULT_POLICIES, *APPROVERS], config=access_config(tmp_path)) as h,
        playwright_api.async_playwright() as pw,
    ):
        status, _, _ = await h.request("DELETE", DELETE_POD, user="alice")  # a developer: no delete
        assert status == 403
        filed = await file_request(h, reason="INC-7: delete the stuck pod web")
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            refused: list[str] = []
            page = await signed_in_page(browser, h.url, "alice", refused, width=1400)

            await page.get_by_role("link", name="Audit").first.click()
            await page.get_by_label("User").fill("alice")
            await page.get_by_label("Verb").fill("delete")
            await page.get_by_label("Decision").select_option("deny")
            await page.get_by_role("button", name="Search").click()
            await page.get_by_text("1 event(s) on this page").wait_for()
            row = page.locator("table.audit tbody tr")
            assert await row.count() == 1
            assert "delete pods -n default web" in await row.inner_text()
            await page.screenshot(path=shots / "console-audit.png")

            await page.get_by_role("link", name="Access requests").first.click()
            pending = page.locator(f"table.pending #request-{filed}")
            assert "INC-7: delete the stuck pod web" in await pending.inner_text()
            await page.screenshot(path=shots / "console-access-requests.png")
            await pending.get_by_label("Approve reason").fill("ok, for INC-7")
            await pending.get_by_role("button", name="Approve").click()
            await page.get_by_text(f"Approval recorded: access request {filed}").wait_for()
            approved = page.locator(f"table.approved #request-{filed}")
            assert "alice@example.com (ok, for INC-7)" in await approved.inner_text()
            assert await page.locator(f"table.pending #request-{filed}").count() == 0
            await page.screenshot(path=shots / "console-access-request-approved.png")
            assert refused == [], refused
        finally:
            await browser.close()
        assert (await h.request("DELETE", DELETE_POD, user="alice"))[0] == 404  # granted: forwarded upstream
    assert sorted(p.name for p in shots.iterdir()) == [
        "console-access-request-approved.png", "console-access-requests.png", "console-audit.png"
    ]  # fmt: skip
