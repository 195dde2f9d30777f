"""The console's audit page on a real connector: a denied delete made through the proxy is found by
its filters, a page ends with a link that resumes where it stopped, a session's event links to its
replay, and bad input is a page with one line, never a 500."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

from connector.console import audit_page
from tests.integration.test_console import console_connector
from tests.support.console import SESSION_ID, browser, sign_in
from tests.support.proxy_harness import DEFAULT_POLICIES

AUDITORS: dict[str, Any] = {
    "name": "auditors",
    "subjects": {"users": ["alice@example.com"]},
    "console": {"sessions": "read", "audit": "read"},
}
DELETE_POD = "/sockets/prod/api/v1/namespaces/default/pods/web"


def _next_link(page: str) -> str | None:
    match = re.search(r'<a href="([^"]+)">Next page</a>', page)
    return unescape(match.group(1)) if match else None


async def test_a_denied_delete_is_found_by_its_filters_and_links_only_sessions(tmp_path):
    async with console_connector(tmp_path, policies=[*DEFAULT_POLICIES, AUDITORS]) as h:
        status, _, _ = await h.request("DELETE", DELETE_POD, user="alice")  # dev-read: no delete
        assert status == 403
        assert (await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods", user="alice"))[0] == 200
        exec_event = {"request_id": SESSION_ID, "time": "2026-05-04T10:00:00Z", "user": "bob", "decision": "allow",
                      "code": 101, "socket": "prod", "request": {"verb": "create", "resource": "pods",
                      "subresource": "exec", "namespace": "default", "name": "web-0"}}  # fmt: skip
        with h.audit_path.open("a") as log:
            log.write(json.dumps(exec_event) + "\n")
            log.write('{"request": {"resource": 5, "subresource": ["x"]}, "groups": "x", "time": 7}\nnot json\n')
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + "/console/audit?verb=delete&decision=deny&user=alice") as resp:
                page = await resp.text()
                assert resp.status == 200, page
            assert "1 event(s) on this page" in page
            assert "delete pods -n default web" in page and "alice" in page and "dev-read" in page
            assert "End of the audit log" in page
            async with session.get(h.url + "/console/audit?resource=pods/exec") as resp:
                page = await resp.text()
            assert "1 event(s)" in page and f'<a href="/console/sessions/{SESSION_ID}">' in page
            async with session.get(h.url + "/console/audit?decision=allow&verb=list") as resp:
                page = await resp.text()
            assert "1 event(s)" in page and "/console/sessions/" not in page
            async with session.get(h.url + "/console/audit") as resp:
                page = await resp.text()
                assert resp.status == 200, page  # an event of odd shape is shown or skipped, never a 500
            assert "1 unreadable line(s) skipped" in page


async def test_pages_resume_from_their_position(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_page, "EVENTS_PER_PAGE", 2)
    async with console_connector(tmp_path, policies=[*DEFAULT_POLICIES, AUDITORS]) as h:
        for _ in range(5):
            await h.request("DELETE", DELETE_POD, user="alice")
        expected = [e["request_id"] for e in h.audit_events() if e.get("request", {}).get("verb") == "delete"]
        assert len(expected) == 5
        seen: list[str] = []
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            url: str | None = "?verb=delete"
            while url is not None:
                async with session.get(h.url + "/console/audit" + url) as resp:
                    page = await resp.text()
                    assert resp.status == 200, page
                seen += [i for i in expected if i in page]
                url = _next_link(page)
                assert url is None or "position=audit.log%3A" in url
        assert seen == expected


async def test_bad_input_is_a_one_line_error_and_rights_are_checked(tmp_path):
    async with console_connector(tmp_path, policies=[*DEFAULT_POLICIES, AUDITORS]) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            for query, message in (
                ("since=yesterday", "since &#39;yesterday&#39; is neither a duration"),
                ("decision=maybe", "decision &#39;maybe&#39; is not one of"),
                ("since=1h&until=2h", "until must be later than since"),
                ("position=..%2Fconnector.yaml%3A0", "names &#39;../connector.yaml&#39;, which is not a file"),
                ("position=audit.log%3Aend", "the page position &#39;audit.log:end&#39; is not FILE:OFFSET"),
            ):
                async with session.get(h.url + "/console/audit?" + query) as resp:
                    page = await resp.text()
                    assert resp.status == 400, (query, page)
                    error = re.search(r'<p class="error">([^<]*)</p>', page)
                    assert error and message in error.group(1), (query, page)
    async with console_connector(tmp_path) as h:  # alice may read sessions only
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + "/console/audit") as resp:
                assert resp.status == 403
                assert "may not use audit in the console" in await resp.text()
