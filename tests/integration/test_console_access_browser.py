"""The Access page in a real browser (headless Chromium driven by Playwright, as
test_console_browser.py): alice opens it from the navigation, sees the matrix, explains bob's delete
and reads the denial, with no Content-Security-Policy violation; a screenshot is saved."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_console import console_connector
from tests.integration.test_console_access import BOB_DELETES, POLICIES
from tests.integration.test_console_browser import playwright_api
from tests.support.console import CHROMIUM, screenshot_dir, signed_in_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `make chromium`")


async def test_alice_explains_bobs_delete_on_the_access_page(tmp_path):
    shots = screenshot_dir(tmp_path)
    async with console_connector(tmp_path, policies=POLICIES) as h, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            refused: list[str] = []
            page = await signed_in_page(browser, h.url, "alice", refused)
            await page.get_by_text("Signed in as").wait_for()
            await page.get_by_role("link", name="Access", exact=True).first.click()
            await page.get_by_role("heading", name="Who may use which socket").wait_for()
            for field, value in BOB_DELETES.items():
                await page.get_by_label(field.capitalize(), exact=True).fill(value)
            await page.get_by_role("button", name="Explain").click()
            explained = page.locator("pre.explained")
            await explained.wait_for()
            decision = json.loads(await explained.inner_text())
            assert decision["allowed"] is False and "dev-read" in decision["reason"]
            assert "group dev" in await page.locator("table.matrix").inner_text()
            await page.screenshot(path=shots / "console-access.png", full_page=True)
            assert refused == [], refused
        finally:
            await browser.close()
    assert (shots / "console-access.png").stat().st_size > 0
