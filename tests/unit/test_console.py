"""The console's pure parts: browser sessions and their timeouts, sign-ins in progress, console rights
from policies, and the config errors of the `console` section."""

from __future__ import annotations

import datetime as dt

from connector.console.browser_sessions import SIGNIN_SECONDS, BrowserSessionStore
from connector.identity import Identity
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from tests.unit.test_config_errors import errors_of

ALICE = Identity(user="alice", groups=("reviewers",), method="oidc")
NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)


class Clock:
    """A monotonic clock the test moves by hand."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_its_idle_time_even_before_its_absolute_time():
    clock = Clock()
    store = BrowserSessionStore(clock=clock)
    session_id = store.create(ALICE)
    clock.now += 50
    assert store.get(session_id, idle_seconds=60, absolute_seconds=1000) is not None
    clock.now += 59  # 109 s after creation, 59 s after the last use
    assert store.get(session_id, idle_seconds=60, absolute_seconds=1000) is not None
    clock.now += 61
    assert store.get(session_id, idle_seconds=60, absolute_seconds=1000) is None
    assert store.get(session_id, idle_seconds=10_000, absolute_seconds=10_000) is None  # gone for good


def test_a_session_in_use_still_ends_at_its_absolute_time():
    clock = Clock()
    store = BrowserSessionStore(clock=clock)
    session_id = store.create(ALICE)
    for _ in range(9):
        clock.now += 50
        assert store.get(session_id, idle_seconds=60, absolute_seconds=500) is not None
    clock.now += 51
    assert store.get(session_id, idle_seconds=60, absolute_seconds=500) is None


def test_sessions_have_distinct_ids_and_csrf_tokens_and_drop_ends_one():
    store = BrowserSessionStore()
    first, second = store.create(ALICE), store.create(ALICE)
    assert first != second and len(first) >= 43
    one = store.get(first, idle_seconds=60, absolute_seconds=60)
    two = store.get(second, idle_seconds=60, absolute_seconds=60)
    assert one is not None and two is not None and one.csrf_token != two.csrf_token
    store.drop(first)
    assert store.get(first, idle_seconds=60, absolute_seconds=60) is None
    assert store.get(second, idle_seconds=60, absolute_seconds=60) is not None


def test_a_signin_finishes_once_in_the_browser_that_started_it_and_only_while_recent():
    clock = Clock()
    store = BrowserSessionStore(clock=clock)
    pending = store.begin_signin()
    assert store.finish_signin(pending.state, "another browser") is None
    assert store.finish_signin(pending.state, pending.browser_key) is None  # a failed attempt used it up
    pending = store.begin_signin()
    assert store.finish_signin(pending.state, pending.browser_key) == pending
    assert store.finish_signin(pending.state, pending.browser_key) is None
    late = store.begin_signin()
    clock.now += SIGNIN_SECONDS + 1
    assert store.finish_signin(late.state, late.browser_key) is None


def _engine(*policies: dict) -> PolicyEngine:
    return PolicyEngine([Policy.model_validate(p) for p in policies])


def test_console_rights_add_up_over_the_callers_policies_and_follow_conditions():
    engine = _engine(
        {"name": "read", "subjects": {"groups": ["reviewers"]}, "console": {"sessions": "read"}},
        {"name": "approve", "subjects": {"users": ["alice"]}, "sockets": ["*"],
         "console": {"access_requests": "approve"}},
        {"name": "audit-office", "subjects": {"users": ["alice"]}, "console": {"audit": "read"},
         "conditions": {"source_ips": ["10.0.0.0/8"]}},
        {"name": "requests-read", "subjects": {"users": ["*"]}, "console": {"access_requests": "read"}},
    )  # fmt: skip
    rights = engine.console_rights(ALICE, "192.0.2.1", NOW)
    assert (rights.sessions, rights.audit, rights.access_requests) == ("read", None, "approve")
    assert engine.console_rights(ALICE, "10.1.2.3", NOW).audit == "read"
    carol = engine.console_rights(Identity(user="carol"), "10.1.2.3", NOW)
    assert (carol.sessions, carol.audit, carol.access_requests) == (None, None, "read")
    assert not engine.console_rights(Identity(user="dave"), "10.1.2.3", NOW).sessions


def test_a_policy_with_only_console_rights_needs_no_sockets_and_grants_no_cluster():
    engine = _engine({"name": "read", "subjects": {"users": ["alice"]}, "console": {"sessions": "read"}})
    assert not engine.may_use_socket(ALICE, "prod", {}, "127.0.0.1", NOW)


def test_console_config_errors_name_the_file_line_and_key(tmp_path):
    errors = errors_of(tmp_path, "policies:\n  - name: r\n    subjects: {users: [a]}\n    console: {sessions: write}\n")
    assert len(errors) == 1 and errors[0].startswith(":4:") and "sessions" in errors[0], errors
    errors = errors_of(tmp_path, "console:\n  enabled: true\n")
    assert "needs an OIDC issuer" in errors[0], errors
    errors = errors_of(tmp_path, "console:\n  idle_timeout_minutes: 0\n")
    assert errors[0].startswith(":2:") and "idle_timeout_minutes" in errors[0], errors
    errors = errors_of(
        tmp_path,
        "authentication:\n  oidc:\n    - {issuer: 'https://sso.example.com', client_id: c}\n"
        "console:\n  enabled: true\n  issuer: 'https://other.example.com'\n",
    )
    assert "is not one of authentication.oidc" in errors[0], errors
    errors = errors_of(
        tmp_path,
        "policies:\n  - name: r\n    subjects: {users: [a]}\n    grant_only: true\n    console: {audit: read}\n",
    )
    assert "cannot be grant_only" in errors[0], errors
