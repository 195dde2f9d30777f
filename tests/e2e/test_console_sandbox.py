"""The sandbox's console, as its tour prints it: alice (platform-admins) signs in through the sandbox
IdP and sees the recorded sessions; carol, with no console rights, gets the 403 page; alice finds
bob's denied delete in the audit page and approves the request bob files with the tour's command.
The connector runs `serve` with its default workers, so the sign-in and the pages reach different
workers."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.world import PROD_SOCKET
from tests.e2e.test_tour import _tour_commands
from tests.e2e.test_tour_access import run, with_id
from tests.support.console import browser, sign_in
from tests.support.sandbox_process import Kubectl, SandboxProcess

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


async def test_alice_finds_bobs_denied_delete_and_approves_his_request_in_the_console(
    sandbox_process: SandboxProcess, sandbox: dict[str, Any], kubectl: Callable[..., Kubectl]
) -> None:
    url = sandbox["connector"]["url"]
    request, _, _, revoke = _tour_commands(sandbox_process)["python"][2:]
    denied = kubectl("1.33").run("delete", "pod", "-n", "default", "--all", context=f"bob@{PROD_SOCKET}")
    assert denied.returncode == 1 and "Forbidden" in denied.stderr, denied.stderr
    filed = run([*(a for a in request if a != "--wait"), "--output", "json"])
    assert filed.returncode == 0, filed.stderr
    request_id = json.loads(filed.stdout)["id"]
    trust = ssl.create_default_context(cafile=sandbox["connector"]["ca_file"])
    try:
        async with browser(trust) as session:
            status, page, _ = await sign_in(session, url, "alice")
            assert status == 200, page
            async with session.get(url + "/console/audit?user=bob@example.com&verb=delete&decision=deny") as resp:
                page = await resp.text()
                assert resp.status == 200, page
            found = re.search(r"(\d+) event\(s\) on this page", page)
            assert found and int(found.group(1)) > 0 and "delete pods -n default" in page, page
            async with session.get(url + "/console/access-requests") as resp:
                page = await resp.text()
                assert resp.status == 200, page
            assert f'action="/console/access-requests/{request_id}/approve"' in page
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            async with session.post(
                f"{url}/console/access-requests/{request_id}/approve", data={"csrf_token": token, "reason": "ok"}
            ) as resp:
                page = await resp.text()
                assert resp.status == 200, page
            assert f"Approval recorded: access request {request_id} (prod-break-glass for bob@example.com)" in page
            assert "is now approved" in page
    finally:
        # The other tests expect bob without a grant.
        revoked = run(with_id(revoke, request_id))
        assert revoked.returncode == 0, revoked.stderr
