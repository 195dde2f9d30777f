"""Just-in-time access: config validation, the request state machine, and decisions under grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.config import ConfigError, ConnectorConfig, load_model
from connector.durations import parse_duration
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info
from connector.policy import access
from connector.policy.access import APPROVED, DENIED, EXPIRED, PENDING, REVOKED, AccessRequest, AccessRequestError
from connector.policy.engine import PolicyEngine

CONFIG = """
policies:
  - name: dev-read
    subjects: {groups: [developers]}
    sockets: [prod]
    kubernetes:
      rules:
        - verbs: [get, list, watch]
        - verbs: [create]
          resources: [pods/exec, pods/attach, pods/portforward]
          requires_approval: true
  - name: prod-exec
    subjects: {groups: [developers]}
    sockets: [prod]
    grant_only: true
    kubernetes:
      rules:
        - verbs: [delete]
          resources: [pods]
access_requests:
  - name: prod-break-glass
    requesters: {groups: [developers]}
    approvers: {groups: [platform-admins]}
    grants: [prod-exec, dev-read]
    max_duration: 4h
  - name: two-person
    requesters: {users: [bob]}
    approvers: {groups: [platform-admins]}
    approvals_required: 2
    grants: [prod-exec]
    max_duration: 30m
    require_reason: false
  - name: self-service
    requesters: {users: [bob]}
    approvers: {users: [bob]}
    allow_self_approval: true
    grants: [prod-exec]
"""

CFG = load_model(ConnectorConfig, CONFIG, "connector.yaml")
DEFS = CFG.access_requests
ENGINE = PolicyEngine(CFG.policies)
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
BOB = Identity("bob", ("developers",))
ALICE = Identity("alice", ("platform-admins",))
ZED = Identity("zed", ("platform-admins",))
EVE = Identity("eve", ("developers",))


def approved(name: str = "prod-break-glass", duration: str = "1h") -> AccessRequest:
    request = access.create(DEFS, BOB, name, "incident 42", duration, T0, request_id="ar-1")
    return access.approve(request, DEFS, ALICE, T0)


# --- config -------------------------------------------------------------------------------------


NO_APPROVAL_RULE = CONFIG.replace("          requires_approval: true\n", "")
# (config, the error line expected); each config breaks one thing in CONFIG.
BAD_CONFIGS = {
    "unknown-granted-policy": (
        CONFIG.replace("grants: [prod-exec, dev-read]", "grants: [prod-exec, nope]"),
        'connector.yaml:24: access_requests[0].grants[1]: no policy is named "nope"',
    ),
    "grant-of-ordinary-policy": (
        NO_APPROVAL_RULE,
        'connector.yaml:23: access_requests[0].grants[1]: policy "dev-read" already applies without a request',
    ),
    "grant-only-never-granted": (
        CONFIG.split("access_requests:")[0],
        'connector.yaml:15: policies[1].grant_only: policy "prod-exec" is grant_only but no access_requests',
    ),
    "bad-duration": (
        CONFIG.replace("max_duration: 4h", "max_duration: 4 hours"),
        "connector.yaml:25: access_requests[0].max_duration: bad duration '4 hours'",
    ),
    "zero-approvals": (
        CONFIG.replace("approvals_required: 2", "approvals_required: 0"),
        "connector.yaml:29: access_requests[1].approvals_required: input should be greater than or equal to 1",
    ),
    "duplicate-name": (
        CONFIG.replace("  - name: two-person", "  - name: prod-break-glass"),
        'access_requests: access request name "prod-break-glass" is used by access_requests[0] and',
    ),
    "empty-grants": (
        CONFIG.replace("    grants: [prod-exec]\n    max_duration: 30m", "    grants: []\n    max_duration: 30m"),
        "connector.yaml:26: access_requests[1]: grants lists no policy",
    ),
    "empty-store-file": (
        CONFIG + 'access_store:\n  file: ""\n',
        "connector.yaml:39: access_store.file: string should have at least 1 character",
    ),
    "unknown-store": (CONFIG + "access_store:\n  crd: {}\n", "connector.yaml:39: access_store.crd: unknown key"),
    "no-store-kind": (
        CONFIG + "access_store: {}\n", "connector.yaml:38: access_store: give exactly one of file or kubernetes"
    ),
    "two-store-kinds": (
        CONFIG + "access_store:\n  file: a.json\n  kubernetes: {namespace: connector}\n",
        "connector.yaml:38: access_store: give exactly one of file or kubernetes",
    ),
    "store-namespace-missing": (
        CONFIG + "access_store:\n  kubernetes: {kubeconfig: null}\n",
        "connector.yaml:39: access_store.kubernetes.namespace: required key is missing",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_config_errors_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(ConnectorConfig, text, "connector.yaml")
    assert any(expected in line for line in caught.value.errors), caught.value.errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4h", timedelta(hours=4)), ("1h30m", timedelta(minutes=90)), ("90s", timedelta(seconds=90))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0s", "4d", "h", "1m2h", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# --- the state machine --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "name", "reason", "duration", "status", "message"),
    [
        (BOB, "nope", "x", "1h", 400, 'unknown access request "nope"'),
        (ALICE, "prod-break-glass", "x", "1h", 403, 'alice may not request "prod-break-glass"'),
        (BOB, "prod-break-glass", "x", "4h1s", 400, "at most 4h"),
        (BOB, "prod-break-glass", "  ", "1h", 400, "needs a reason"),
        (BOB, "prod-break-glass", "x", "soon", 400, "bad duration 'soon'"),
    ],
)
def test_create_refusals(who: Identity, name: str, reason: str, duration: str, status: int, message: str) -> None:
    with pytest.raises(AccessRequestError, match=message) as caught:
        access.create(DEFS, who, name, reason, duration, T0)
    assert caught.value.status == status


def test_create_at_max_duration_without_reason_when_not_required() -> None:
    request = access.create(DEFS, BOB, "two-person", "", "30m", T0)
    assert request.state == PENDING and request.duration == timedelta(minutes=30)
    assert request.id.startswith("ar-") and len(request.id) == 15


def test_one_approval_approves_from_the_approval_time() -> None:
    request = access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0)
    later = T0 + timedelta(minutes=10)
    done = access.approve(request, DEFS, ALICE, later, reason="ok")
    assert done.state == APPROVED
    assert done.expires_at == later + timedelta(hours=1)
    assert done.grants == ("prod-exec", "dev-read")
    assert [(a.user, a.reason) for a in done.approvals] == [("alice", "ok")]


def test_n_distinct_approvals() -> None:
    request = access.create(DEFS, BOB, "two-person", "", "30m", T0)
    once = access.approve(request, DEFS, ALICE, T0)
    assert once.state == PENDING
    with pytest.raises(AccessRequestError, match="already approved") as caught:
        access.approve(once, DEFS, ALICE, T0)
    assert caught.value.status == 409
    twice = access.approve(once, DEFS, ZED, T0)
    assert twice.state == APPROVED and [a.user for a in twice.approvals] == ["alice", "zed"]


@pytest.mark.parametrize(
    ("name", "approver", "status", "message"),
    [
        ("prod-break-glass", BOB, 403, "bob may not approve"),  # not an approver at all
        ("prod-break-glass", EVE, 403, "eve may not approve"),
        ("self-service", BOB, None, None),  # allow_self_approval
    ],
)
def test_who_may_approve(name: str, approver: Identity, status: int | None, message: str | None) -> None:
    request = access.create(DEFS, BOB, name, "x", "1h", T0)
    if status is None:
        assert access.approve(request, DEFS, approver, T0).state == APPROVED
    else:
        with pytest.raises(AccessRequestError, match=message) as caught:
            access.approve(request, DEFS, approver, T0)
        assert caught.value.status == status


def test_self_approval_refused_even_for_an_approver() -> None:
    admin_defs = load_model(
        ConnectorConfig, CONFIG.replace("requesters: {groups: [developers]}", "requesters: {users: [alice]}"), "c"
    ).access_requests
    request = access.create(admin_defs, ALICE, "prod-break-glass", "x", "1h", T0)
    with pytest.raises(AccessRequestError, match="their own access request") as caught:
        access.approve(request, admin_defs, ALICE, T0)
    assert caught.value.status == 403


def test_approvers_are_checked_against_the_current_config() -> None:
    request = access.create(DEFS, BOB, "prod-break-glass", "x", "1h", T0)
    reloaded = load_model(
        ConnectorConfig,
        CONFIG.replace(
            "approvers: {groups: [platform-admins]}\n    grants: [prod-exec, dev",
            "approvers: {users: [zed]}\n    grants: [prod-exec, dev",
        ),
        "c",
    ).access_requests
    with pytest.raises(AccessRequestError, match="alice may not approve"):
        access.approve(request, reloaded, ALICE, T0)
    assert access.approve(request, reloaded, ZED, T0).state == APPROVED
    gone = [d for d in DEFS if d.name != "prod-break-glass"]
    with pytest.raises(AccessRequestError, match="no longer configured") as caught:
        access.approve(request, gone, ZED, T0)
    assert caught.value.status == 409


def test_deny_needs_a_reason_and_is_final() -> None:
    request = access.create(DEFS, BOB, "prod-break-glass", "x", "1h", T0)
    with pytest.raises(AccessRequestError, match="needs a reason"):
        access.deny(request, DEFS, ALICE, T0, "")
    denied = access.deny(request, DEFS, ALICE, T0, "not now")
    assert denied.state == DENIED and denied.decided is not None and denied.decided.user == "alice"
    with pytest.raises(AccessRequestError, match="is denied, not pending"):
        access.approve(denied, DEFS, ZED, T0)


def test_expiry_at_the_boundary() -> None:
    request = approved()
    end = T0 + timedelta(hours=1)
    assert request.state_at(end - timedelta(microseconds=1)) == APPROVED
    assert request.state_at(end) == EXPIRED
    assert access.grants_for([request], DEFS, BOB, end - timedelta(microseconds=1)) == {
        "prod-exec": "ar-1",
        "dev-read": "ar-1",
    }
    assert access.grants_for([request], DEFS, BOB, end) == {}
    with pytest.raises(AccessRequestError, match="is expired: nothing to revoke"):
        access.revoke(request, DEFS, BOB, end)


@pytest.mark.parametrize(("actor", "allowed"), [(BOB, True), (ALICE, True), (EVE, False)])
def test_revoke(actor: Identity, allowed: bool) -> None:
    request = approved()
    if allowed:
        revoked = access.revoke(request, DEFS, actor, T0 + timedelta(minutes=1))
        assert revoked.state == REVOKED
        assert access.grants_for([revoked], DEFS, BOB, T0 + timedelta(minutes=1)) == {}
    else:
        with pytest.raises(AccessRequestError, match="eve may not revoke") as caught:
            access.revoke(request, DEFS, actor, T0)
        assert caught.value.status == 403


def test_grants_only_the_requester_and_only_while_the_definition_exists() -> None:
    request = approved()
    assert access.grants_for([request], DEFS, EVE, T0) == {}
    gone = [d for d in DEFS if d.name != "prod-break-glass"]
    assert access.grants_for([request], gone, BOB, T0) == {}


def test_json_round_trip() -> None:
    request = access.revoke(approved(), DEFS, ALICE, T0, "done")
    assert AccessRequest.from_json(request.to_json()) == request
    assert approved().view(T0 + timedelta(hours=2))["state"] == EXPIRED


# --- decisions under grants ---------------------------------------------------------------------

EXEC = parse_request_info("POST", "/api/v1/namespaces/web/pods/web-1/exec", "command=sh")
DELETE = parse_request_info("DELETE", "/api/v1/namespaces/web/pods/web-1")
GET = parse_request_info("GET", "/api/v1/namespaces/web/pods/web-1")


@pytest.mark.parametrize(
    ("request_info", "grants", "allowed", "policy", "access_request", "needs"),
    [
        pytest.param(GET, {}, True, "dev-read", None, (), id="read-needs-nothing"),
        pytest.param(EXEC, {}, False, None, None, ("dev-read",), id="exec-needs-approval"),
        pytest.param(EXEC, {"dev-read": "ar-1"}, True, "dev-read", "ar-1", (), id="exec-under-grant"),
        pytest.param(GET, {"dev-read": "ar-1"}, True, "dev-read", None, (), id="read-under-grant-is-not-the-grants"),
        pytest.param(DELETE, {}, False, None, None, ("prod-exec",), id="grant-only-absent"),
        pytest.param(DELETE, {"prod-exec": "ar-2"}, True, "prod-exec", "ar-2", (), id="grant-only-granted"),
        pytest.param(DELETE, {"dev-read": "ar-1"}, False, None, None, ("prod-exec",), id="other-grant-no-help"),
    ],
)
def test_decisions_under_grants(request_info, grants, allowed, policy, access_request, needs) -> None:
    decision = ENGINE.decide(BOB, "prod", {}, request_info, "10.0.0.1", T0, grants=grants)
    assert (decision.allowed, decision.policy, decision.access_request, decision.needs_grant) == (
        allowed,
        policy,
        access_request,
        needs,
    ), decision.reason


def test_denial_reason_says_approval_is_needed() -> None:
    decision = ENGINE.decide(BOB, "prod", {}, EXEC, "10.0.0.1", T0)
    assert "rule 1 needs an approved access request" in decision.reason


def test_grant_only_policy_is_invisible_to_socket_use_and_rules_review() -> None:
    only_grant = PolicyEngine([p for p in CFG.policies if p.name == "prod-exec"])
    assert not only_grant.may_use_socket(BOB, "prod", {}, "10.0.0.1", T0)
    assert only_grant.may_use_socket(BOB, "prod", {}, "10.0.0.1", T0, grants={"prod-exec": "ar-1"})
    review = ENGINE.rules_for(BOB, "prod", {}, "web", "10.0.0.1", T0)
    assert all("pods/exec" not in r.get("resources", ()) for r in review.resource_rules)
    granted = ENGINE.rules_for(BOB, "prod", {}, "web", "10.0.0.1", T0, grants={"dev-read": "ar-1"})
    assert any("pods/exec" in r.get("resources", ()) for r in granted.resource_rules)


def test_next_step_names_a_requestable_definition() -> None:
    decision = ENGINE.decide(BOB, "prod", {}, EXEC, "10.0.0.1", T0)
    found = access.requestable_for(DEFS, BOB, decision.needs_grant)
    assert [d.name for d in found] == ["prod-break-glass"]
    assert access.next_step(found[0], "https://c.example") == (
        "python -m connector access request --connector https://c.example prod-break-glass --reason ... --for 1h"
    )
    assert access.requestable_for(DEFS, EVE, ("prod-exec",))[0].name == "prod-break-glass"
    assert access.requestable_for(DEFS, ALICE, ("prod-exec",)) == []
