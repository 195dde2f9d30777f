"""The console's access-requests page on a real connector: a request filed through `/v1/access-requests`
is approved, denied or revoked in the page with the API's rules (approvers, no self-approval, states,
a denial's reason), its webhook notice and an audit event naming the console user; sign-in and
sign-out are audited too."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

from connector.console.access_requests_page import ENDED_PAGE
from connector.identity import Identity
from connector.policy import access
from connector.policy.access_model import AccessRequestDefinition
from tests.integration.test_access_request_api import POLICIES as API_POLICIES
from tests.integration.test_access_webhook import SECRET, Receiver, receiving
from tests.integration.test_console import console_connector
from tests.support.console import browser, sign_in
from tests.support.proxy_harness import DEFAULT_POLICIES

APPROVERS: list[dict[str, Any]] = [
    {
        "name": "request-approvers",
        "subjects": {"users": ["alice@example.com"]},
        "console": {"access_requests": "approve", "audit": "read"},
    },
    {"name": "request-readers", "subjects": {"users": ["bob@example.com"]}, "console": {"access_requests": "read"}},
    next(p for p in API_POLICIES if p["name"] == "prod-delete"),  # delete pods in default, granted only
]
ACCESS_REQUESTS = [
    {
        "name": "prod-delete",
        "requesters": {"groups": ["dev"]},
        "approvers": {"users": ["alice@example.com"]},
        "grants": ["prod-delete"],
        "max_duration": "4h",
    }
]
DELETE_POD = "/sockets/prod/api/v1/namespaces/default/pods/web"
PAGE = "/console/access-requests"


def access_config(tmp: Path, webhook_url: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "access_requests": ACCESS_REQUESTS,
        "access_store": {"file": str(tmp / "access-requests.json")},
    }
    if webhook_url is not None:
        (tmp / "webhook-secret").write_text(SECRET + "\n")
        config["access_requests_webhook"] = {"url": webhook_url, "secret": f"file:{tmp / 'webhook-secret'}"}
    return config


async def file_request(h: Any, user: str = "alice", reason: str = "INC-7: web is stuck") -> str:
    filing = {"name": "prod-delete", "reason": reason, "duration": "1h"}
    headers = {"Content-Type": "application/json"}
    status, _, body = await h.request(
        "POST", "/v1/access-requests", user=user, data=json.dumps(filing), headers=headers
    )
    assert status == 201, body
    return json.loads(body)["id"]


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def section(page: str, name: str) -> str:
    """The table of one section of the page (pending, approved, ended)."""
    match = re.search(rf'<table class="access-requests {name}">(.*?)</table>', page, re.S)
    assert match, page
    return match.group(1)


def error_line(page: str) -> str:
    match = re.search(r'<p class="error">([^<]*)</p>', page)
    return unescape(match.group(1)) if match else ""


async def test_approve_deny_and_revoke_in_the_page_follow_the_apis_rules(tmp_path):
    async with (
        receiving(Receiver()) as receiver,
        console_connector(
            tmp_path, policies=[*DEFAULT_POLICIES, *APPROVERS], config=access_config(tmp_path, receiver.url)
        ) as h,
    ):
        approved, denied = await file_request(h), await file_request(h)
        assert (await h.request("DELETE", DELETE_POD, user="alice"))[0] == 403
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + PAGE) as resp:
                page = await resp.text()
                assert resp.status == 200, page
            pending = section(page, "pending")
            assert approved in pending and denied in pending and "INC-7: web is stuck" in pending
            assert f'action="{PAGE}/{approved}/approve"' in pending
            token = csrf(page)

            async with session.post(f"{h.url}{PAGE}/{approved}/approve", data={"csrf_token": "forged"}) as resp:
                assert resp.status == 403  # the guard's CSRF check, before any rule
            async with session.post(
                f"{h.url}{PAGE}/{approved}/approve", data={"csrf_token": token, "reason": "ok"}, allow_redirects=False
            ) as resp:
                assert resp.status == 303, await resp.text()
                location = resp.headers["Location"]
            async with session.get(h.url + location) as resp:
                page = await resp.text()
            assert f"Approval recorded: access request {approved} (prod-delete for alice) is now approved." in page
            assert approved in section(page, "approved") and approved not in section(page, "pending")
            assert (await h.request("DELETE", DELETE_POD, user="alice"))[0] == 404  # forwarded: the upstream's 404

            async with session.post(f"{h.url}{PAGE}/{approved}/approve", data={"csrf_token": token}) as resp:
                assert resp.status == 409
                assert error_line(await resp.text()) == f"access request {approved} is approved, not pending"
            async with session.post(f"{h.url}{PAGE}/{denied}/deny", data={"csrf_token": token}) as resp:
                assert resp.status == 400
                assert error_line(await resp.text()).startswith("a denial needs a reason")
            async with session.post(
                f"{h.url}{PAGE}/{denied}/deny", data={"csrf_token": token, "reason": "use the runbook"}
            ) as resp:
                page = await resp.text()
                assert resp.status == 200, page
            assert f"Denied: access request {denied} (prod-delete for alice) is now denied." in page
            assert "alice@example.com: use the runbook" in section(page, "ended")
            async with session.post(
                f"{h.url}{PAGE}/{approved}/revoke", data={"csrf_token": token, "reason": "fixed"}
            ) as resp:
                page = await resp.text()
            assert approved in section(page, "ended") and "revoked" in section(page, "ended")
            assert (await h.request("DELETE", DELETE_POD, user="alice"))[0] == 403
            async with session.post(f"{h.url}{PAGE}/ar-000000000000/approve", data={"csrf_token": token}) as resp:
                assert resp.status == 404
            async with session.post(h.url + "/console/logout", data={"csrf_token": token}) as resp:
                assert resp.status == 200
        await receiver.wait_for(lambda: len(receiver.posts) == 5)
    assert sorted(b["event"] for _, b in receiver.posts) == [
        "access_request.approved", "access_request.denied", "access_request.requested", "access_request.requested",
        "access_request.revoked",
    ]  # fmt: skip
    assert {b["actor"] for _, b in receiver.posts if b["event"] != "access_request.requested"} == {"alice@example.com"}

    console_events = [e for e in h.audit_events() if e["path"].startswith("/console/")]
    assert [(e["path"].rsplit("/", 1)[-1], e["decision"], e["code"]) for e in console_events] == [
        ("callback", "allow", 200),
        ("approve", "allow", 303),
        ("approve", "rejected", 409),
        ("deny", "rejected", 400),
        ("deny", "allow", 303),
        ("revoke", "allow", 303),
        ("approve", "rejected", 404),
        ("logout", "allow", 200),
    ]
    assert all(e["user"] == "alice@example.com" and e["query"] == "" for e in console_events)
    assert console_events[0]["reason"] == "console sign-in of alice@example.com"
    approve = console_events[1]
    assert approve["access_request"] == approved and approve["access_change"]["action"] == "approve"
    assert approve["access_change"]["approvers"] == ["alice@example.com"] and approve["source_ip"] == "127.0.0.1"


async def test_readers_see_no_forms_may_not_act_and_nobody_approves_their_own(tmp_path):
    async with console_connector(
        tmp_path, policies=[*DEFAULT_POLICIES, *APPROVERS], config=access_config(tmp_path)
    ) as h:
        filed = await file_request(h)
        assert h.connector is not None and h.connector.ctx is not None
        store = h.connector.ctx.access_store
        definitions = [AccessRequestDefinition.model_validate({**ACCESS_REQUESTS[0], "requesters": {"users": ["*"]}})]
        own = access.create(
            definitions,
            Identity(user="alice@example.com", groups=()),
            "prod-delete",
            "me",
            "1h",
            dt.datetime.now(dt.UTC),
        )
        store.create(own)
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "bob")
            async with session.get(h.url + PAGE) as resp:
                page = await resp.text()
                assert resp.status == 200, page
            assert filed in section(page, "pending") and "/approve" not in page
            async with session.post(f"{h.url}{PAGE}/{filed}/approve", data={"csrf_token": csrf(page)}) as resp:
                assert resp.status == 403
                assert error_line(await resp.text()) == "bob@example.com may only read access requests in the console"
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + PAGE) as resp:
                token = csrf(await resp.text())
            async with session.post(f"{h.url}{PAGE}/{own.id}/approve", data={"csrf_token": token}) as resp:
                assert resp.status == 403
                assert error_line(await resp.text()) == "alice@example.com may not decide on their own access request"
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "carol")
            async with session.get(h.url + PAGE) as resp:
                assert resp.status == 403
    refused = [e for e in h.audit_events() if e["path"].endswith("/approve")]
    assert [(e["user"], e["decision"], e["code"]) for e in refused] == [
        ("bob@example.com", "deny", 403),
        ("alice@example.com", "deny", 403),
    ]


async def test_a_failed_sign_in_is_audited_without_its_query(tmp_path):
    async with console_connector(tmp_path) as h:
        async with browser(h.ssl_context()) as session:
            async with session.get(h.url + "/console/callback?state=made-up&code=secret-code") as resp:
                assert resp.status == 400
    [event] = [e for e in h.audit_events() if e["path"] == "/console/callback"]
    assert event["decision"] == "unauthenticated" and event["code"] == 400 and "user" not in event
    assert event["reason"].startswith("console sign-in failed: this sign-in link is unknown")
    assert "secret-code" not in h.audit_path.read_text()


async def test_ended_requests_are_paged_newest_first(tmp_path):
    async with console_connector(
        tmp_path, policies=[*DEFAULT_POLICIES, *APPROVERS], config=access_config(tmp_path)
    ) as h:
        assert h.connector is not None and h.connector.ctx is not None
        store = h.connector.ctx.access_store
        start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        total = ENDED_PAGE + 5
        for i in range(total):  # ar-000000000000 is the oldest
            filed = start + dt.timedelta(minutes=i)
            store.create(
                access.AccessRequest(
                    id=f"ar-{i:012x}", name="prod-delete", requester="bob@example.com", reason=f"ticket {i}",
                    duration=dt.timedelta(hours=1), created_at=filed, state=access.DENIED,
                    decided=access.Signoff("alice@example.com", filed, "no"),
                )
            )  # fmt: skip
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + PAGE) as resp:
                first = await resp.text()
                assert resp.status == 200, first
            rows = re.findall(r'<tr id="request-(ar-[0-9a-f]+)"', section(first, "ended"))
            assert rows == [f"ar-{i:012x}" for i in reversed(range(5, total))]
            assert f"1 to {ENDED_PAGE} of {total}" in first and 'rel="prev"' not in first
            older = re.search(r'<a rel="next" href="([^"]+)">Older</a>', first)
            assert older and unescape(older.group(1)) == f"{PAGE}?ended_from={ENDED_PAGE}"

            async with session.get(h.url + unescape(older.group(1))) as resp:
                second = await resp.text()
                assert resp.status == 200, second
            rows = re.findall(r'<tr id="request-(ar-[0-9a-f]+)"', section(second, "ended"))
            assert rows == [f"ar-{i:012x}" for i in reversed(range(5))]
            assert f"{ENDED_PAGE + 1} to {total} of {total}" in second and 'rel="next"' not in second
            assert f'<a rel="prev" href="{PAGE}">Newer</a>' in second

            for bad in ("-1", "x", "1e3", "9999999999"):
                async with session.get(h.url + PAGE, params={"ended_from": bad}) as resp:
                    page = await resp.text()
                    assert resp.status == 400, page
                assert error_line(page).startswith("ended_from must be a whole number from 0"), error_line(page)
                assert len(re.findall(r'<tr id="request-', section(page, "ended"))) == ENDED_PAGE  # the first page
