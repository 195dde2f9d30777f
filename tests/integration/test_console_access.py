"""The console's Access page on a real connector: the subjects-by-sockets matrix from the live policies,
and the explain form answering exactly what `python -m connector policy check` prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

from tests.integration.test_console import REVIEWERS, console_connector
from tests.support.console import browser, sign_in
from tests.support.proxy_harness import DEFAULT_POLICIES

AUDITORS = {"name": "auditors", "subjects": {"groups": ["platform-admins"]}, "console": {"access": "read"}}
POLICIES = [*DEFAULT_POLICIES, REVIEWERS, AUDITORS]
BOB_DELETES = {
    "user": "bob@example.com", "groups": "dev", "socket": "prod", "method": "DELETE",
    "path": "/api/v1/namespaces/default/pods/web-0",
}  # fmt: skip


def _explained(page: str) -> dict:
    match = re.search(r'<pre class="explained">(.*?)</pre>', page, re.S)
    assert match, page
    return json.loads(unescape(match.group(1)))


def _policy_check(config: Path, form: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "connector", "policy", "check", "--config", str(config), "--user", form["user"]]
    for group in form["groups"].split(","):
        command += ["--group", group.strip()]
    command += ["--socket", form["socket"], form["method"], form["path"]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


async def test_the_matrix_lists_the_policies_per_subject_and_socket(tmp_path):
    async with console_connector(tmp_path, policies=POLICIES) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + "/console/access") as resp:
                page = await resp.text()
                assert resp.status == 200, page
            rows = {
                unescape(m.group(1)): m.group(2)
                for m in re.finditer(r"<tr>\s*<th>([^<]+)</th>(.*?)</tr>", page.split("<tbody>")[1], re.S)
            }
            assert set(rows) == {"user alice@example.com", "group dev", "group ops", "group platform-admins"}
            assert "dev-read" in rows["group dev"] and "ops-all" not in rows["group dev"]
            assert "ops-all" in rows["group ops"]
            assert "<td>-</td>" in rows["user alice@example.com"]  # reviewers: console rights, no socket
            assert "<th>prod</th>" in page
            assert 'href="/console/access"' in page  # in the nav, for who has the right


async def test_explain_answers_what_policy_check_prints(tmp_path):
    async with console_connector(tmp_path, policies=POLICIES) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            for form in (BOB_DELETES, {**BOB_DELETES, "method": "GET", "path": "/api/v1/namespaces/default/pods"}):
                async with session.get(h.url + "/console/access", params=form) as resp:
                    page = await resp.text()
                    assert resp.status == 200, page
                assert _explained(page) == _policy_check(h.config_path, form)
            assert _explained(page)["allowed"] is True  # the GET: dev-read allows it


async def test_explain_refuses_bad_input_with_one_line_and_never_reflects_markup(tmp_path):
    async with console_connector(tmp_path, policies=POLICIES) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            for form, said in (
                ({**BOB_DELETES, "path": "/api/v1/namespaces/default/pods/../secrets"}, "refuses this request"),
                ({**BOB_DELETES, "socket": ""}, "socket is required"),
                ({**BOB_DELETES, "method": "GE T"}, "is not an HTTP method"),
                ({**BOB_DELETES, "path": "api/v1/pods"}, "path must start with /"),
            ):
                async with session.get(h.url + "/console/access", params=form) as resp:
                    page = await resp.text()
                    assert resp.status == 400, page
                    assert said in re.search(r'<p class="error">([^<]*)</p>', page).group(1)
            markup = '"><script>alert(1)</script>'
            async with session.get(h.url + "/console/access", params={**BOB_DELETES, "user": markup}) as resp:
                page = await resp.text()
                assert resp.status == 200
                assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


async def test_the_access_page_needs_the_access_right(tmp_path):
    async with console_connector(tmp_path, policies=[*DEFAULT_POLICIES, REVIEWERS]) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")  # sessions: read only
            async with session.get(h.url + "/console/access") as resp:
                page = await resp.text()
                assert resp.status == 403 and "may not use access in the console" in page
