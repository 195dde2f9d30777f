"""The console in a real browser: headless Chromium (Debian's package, never a downloaded one) driven
by Playwright against a real connector and the sandbox IdP on 127.0.0.1. Screenshots of each page are
saved in the test's tmp dir (`console-*.png`), or with CONSOLE_SCREENSHOTS=docs/console in the README's."""

from __future__ import annotations

import pytest

from connector.console.render import PLAYER_SCRIPT
from tests.integration.test_console import console_connector
from tests.support.console import CHROMIUM, SESSION_ID, SESSION_OUTPUT, screenshot_dir, signed_in_page, write_recording

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (requirements-dev.txt)"
)
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed: `make chromium` installs it",
    ),
    pytest.mark.skipif(
        not PLAYER_SCRIPT.is_file(), reason="the session player is not built: `make console-player` builds it"
    ),
]


async def test_alice_signs_in_lists_sessions_and_replays_one_and_carol_is_refused(tmp_path):
    shots = screenshot_dir(tmp_path)
    async with console_connector(tmp_path) as h, playwright_api.async_playwright() as pw:
        write_recording(tmp_path / "recordings")
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            refused: list[str] = []
            page = await signed_in_page(browser, h.url, "alice", refused)
            await page.get_by_text("Signed in as").wait_for()
            assert "alice@example.com" in await page.content()
            await page.screenshot(path=shots / "console-home.png")

            await page.get_by_role("link", name="Sessions").first.click()
            await page.get_by_text("1 session(s)").wait_for()
            await page.screenshot(path=shots / "console-sessions.png")

            await page.locator(f'a[href="/console/sessions/{SESSION_ID}"]').click()
            await page.locator("#player .ap-player").wait_for()
            await page.locator("#player").click()  # play
            await page.locator("#player").get_by_text(SESSION_OUTPUT).wait_for(timeout=15_000)
            await page.screenshot(path=shots / "console-session.png", full_page=True)
            assert refused == [], refused

            page = await signed_in_page(browser, h.url, "carol")
            await page.get_by_role("heading", name="Forbidden").wait_for()
            assert "carol@example.com may not use the console" in await page.content()
            await page.screenshot(path=shots / "console-forbidden.png")
        finally:
            await browser.close()
    names = ("console-forbidden.png", "console-home.png", "console-session.png", "console-sessions.png")
    assert all((shots / name).stat().st_size > 0 for name in names)
