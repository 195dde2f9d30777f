"""`/v1/access-requests` over real HTTPS on 127.0.0.1: filing, approving (N distinct approvers, never
oneself), denying and revoking, hostile bodies refused with one line, and grants taking effect on the
next proxied request, with every step in the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy_harness import ProxyHarness

POLICIES: list[dict[str, Any]] = [
    {
        "name": "dev",
        "subjects": {"groups": ["dev"]},
        "sockets": ["prod"],
        "kubernetes": {"rules": [{"verbs": ["get", "list"], "resources": ["pods"], "namespaces": ["default"]}]},
    },
    {
        "name": "prod-delete",
        "subjects": {"groups": ["dev", "ops"]},
        "sockets": ["prod"],
        "grant_only": True,
        "kubernetes": {"rules": [{"verbs": ["delete"], "resources": ["pods"], "namespaces": ["default"]}]},
    },
]
ACCESS_REQUESTS = [
    {
        "name": "prod-break-glass",
        "requesters": {"groups": ["dev"]},
        "approvers": {"users": ["bob", "carol"]},
        "approvals_required": 2,
        "grants": ["prod-delete"],
        "max_duration": "4h",
    },
    {
        "name": "ops-delete",
        "requesters": {"groups": ["ops"]},
        "approvers": {"groups": ["ops"]},
        "grants": ["prod-delete"],
    },
]
API = "/v1/access-requests"
DELETE_POD = "/sockets/prod/api/v1/namespaces/default/pods/web"


@pytest.fixture
async def h(tmp_path: Path):
    config = {"access_requests": ACCESS_REQUESTS, "access_store": {"file": str(tmp_path / "access-requests.json")}}
    async with ProxyHarness(tmp_path, policies=POLICIES, config=config) as harness:
        yield harness


async def call(h: ProxyHarness, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, _, raw = await h.request(method, path, user=user, data=data, headers={"Content-Type": "application/json"})
    return status, json.loads(raw)


async def file_request(h: ProxyHarness, user: str = "alice", name: str = "prod-break-glass") -> dict[str, Any]:
    status, body = await call(h, "POST", API, user, {"name": name, "reason": "INC-42 stuck pod", "duration": "1h"})
    assert status == 201, body
    assert body["state"] == "pending" and body["requester"] == user
    return body


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"[1]", 400, "must be a JSON object"),
        ({"name": "nope", "reason": "x", "duration": "1h"}, 400, 'unknown access request "nope"'),
        ({"name": "prod-break-glass", "reason": "x", "duration": "5h"}, 400, "at most 4h"),
        ({"name": "prod-break-glass", "reason": "x", "duration": "soon"}, 400, "bad duration"),
        ({"name": "prod-break-glass", "duration": "1h"}, 400, "needs a reason"),
        ({"name": "prod-break-glass", "reason": "x"}, 400, '"duration" is missing'),
        ({"name": "prod-break-glass", "reason": 3, "duration": "1h"}, 400, '"reason" must be a string'),
        ({"name": "prod-break-glass", "reason": "x", "duration": "1h", "as": "bob"}, 400, "unknown field(s) as"),
    ],
)
async def test_hostile_bodies_are_refused_with_one_line(h: ProxyHarness, body: Any, status: int, words: str) -> None:
    got, answer = await call(h, "POST", API, "alice", body)
    assert got == status
    assert words in answer["message"] and "\n" not in answer["message"], answer
    assert h.audit_events()[-1]["code"] == status
    assert (await call(h, "GET", API, "alice"))[1] == {"requests": []}


async def test_unauthenticated_and_unentitled_callers(h: ProxyHarness) -> None:
    status, _ = await call(h, "GET", API, None)  # type: ignore[arg-type]
    assert status == 401
    status, body = await call(h, "POST", API, "carol", {"name": "prod-break-glass", "reason": "x", "duration": "1h"})
    assert status == 403 and "carol may not request" in body["message"]


async def test_self_approval_is_refused(h: ProxyHarness) -> None:
    filed = await file_request(h, user="bob", name="ops-delete")
    status, body = await call(h, "POST", f"{API}/{filed['id']}/approve", "bob", {"reason": "me"})
    assert status == 403 and "may not decide on their own" in body["message"]
    assert (await call(h, "GET", f"{API}/{filed['id']}", "bob"))[1]["state"] == "pending"


async def test_two_approvals_grant_then_revoke_takes_it_back(h: ProxyHarness) -> None:
    assert (await h.request("DELETE", DELETE_POD))[0] == 403
    filed = await file_request(h)
    rid = filed["id"]
    # Not an approver: alice sees her own request but may not approve it; carol and bob see it pending.
    assert (await call(h, "POST", f"{API}/{rid}/approve", "alice", {}))[0] == 403
    assert [r["id"] for r in (await call(h, "GET", f"{API}?pending=1", "carol"))[1]["requests"]] == [rid]
    assert (await call(h, "GET", f"{API}?mine=1", "carol"))[1] == {"requests": []}

    status, body = await call(h, "POST", f"{API}/{rid}/approve", "bob", {"reason": "ok"})
    assert status == 200 and body["state"] == "pending" and [a["user"] for a in body["approvals"]] == ["bob"]
    status, body = await call(h, "POST", f"{API}/{rid}/approve", "bob", {"reason": "again"})
    assert status == 409 and "already approved" in body["message"]
    assert (await h.request("DELETE", DELETE_POD))[0] == 403, "one approval of two grants nothing"

    status, body = await call(h, "POST", f"{API}/{rid}/approve", "carol", {"reason": "seen INC-42"})
    assert status == 200 and body["state"] == "approved" and body["expires_at"]
    status, _, _ = await h.request("DELETE", DELETE_POD)
    allowed = h.audit_events()[-1]
    assert allowed["decision"] == "allow" and allowed["access_request"] == rid and allowed["policy"] == "prod-delete"
    assert allowed["upstream_status"] == status, "forwarded to the cluster (the test upstream has no pod web)"
    assert h.upstream.requests[-1].method == "DELETE"

    approval = next(e for e in h.audit_events() if (e.get("access_change") or {}).get("state") == "approved")
    assert approval["user"] == "carol" and approval["access_request"] == rid
    assert approval["access_change"]["approvers"] == ["bob", "carol"]
    assert approval["access_change"]["reason"] == "seen INC-42"
    assert approval["access_change"]["expires_at"] == body["expires_at"]

    status, body = await call(h, "POST", f"{API}/{rid}/revoke", "alice", {})
    assert status == 200 and body["state"] == "revoked"
    assert (await h.request("DELETE", DELETE_POD))[0] == 403
    assert (await call(h, "POST", f"{API}/{rid}/revoke", "alice", {}))[0] == 409


async def test_deny_needs_a_reason_and_ends_the_request(h: ProxyHarness) -> None:
    rid = (await file_request(h))["id"]
    status, body = await call(h, "POST", f"{API}/{rid}/deny", "bob", {})
    assert status == 400 and "needs a reason" in body["message"]
    status, body = await call(h, "POST", f"{API}/{rid}/deny", "bob", {"reason": "use the runbook"})
    assert status == 200 and body["state"] == "denied" and body["decided"]["user"] == "bob"
    assert (await call(h, "POST", f"{API}/{rid}/approve", "carol", {}))[0] == 409


async def test_unknown_and_invisible_ids_are_404(h: ProxyHarness) -> None:
    rid = (await file_request(h, user="bob", name="ops-delete"))["id"]
    assert (await call(h, "GET", f"{API}/ar-000000000000", "alice"))[0] == 404
    assert (await call(h, "GET", f"{API}/{rid}", "alice"))[0] == 404, "alice neither filed nor approves it"
    assert (await call(h, "POST", f"{API}/{rid}/revoke", "alice", {}))[0] == 404
