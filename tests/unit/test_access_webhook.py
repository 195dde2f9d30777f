"""The webhook's pure parts: signing and verifying, the backoff, the event body, which requests are
newly expired, and the config key."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest

from connector.access.expiry_notices import newly_expired, next_expiry
from connector.access.webhook import Retry, sign, transition_event, verify
from connector.access.webhook_config import AccessRequestsWebhookConfig
from connector.config import ConfigError, load_model
from connector.policy.access import AccessRequest, Signoff

SECRET = b"s3cret"
BODY = b'{"event":"access_request.approved"}'
T0 = dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    ("header", "body", "now", "ok"),
    [
        (sign(SECRET, 1000, BODY), BODY, 1000, True),
        (sign(SECRET, 1000, BODY), BODY, 1300, True),  # at the tolerance
        (sign(SECRET, 1000, BODY), BODY, 1301, False),  # replayed too late
        (sign(SECRET, 1000, BODY), BODY + b" ", 1000, False),  # body changed
        (sign(b"other", 1000, BODY), BODY, 1000, False),  # wrong key
        (sign(SECRET, 1000, BODY).replace("t=1000", "t=1001"), BODY, 1000, False),  # timestamp changed
        ("v1=abc", BODY, 1000, False),
        ("t=soon,v1=abc", BODY, 1000, False),
        ("", BODY, 1000, False),
    ],
)
def test_verify(header: str, body: bytes, now: float, ok: bool) -> None:
    assert verify(SECRET, header, body, now) is ok


def test_backoff_doubles_up_to_the_max() -> None:
    retry = Retry(attempts=8, first_backoff_seconds=1, max_backoff_seconds=10)
    assert [retry.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def request(
    state: str = "approved", expires_at: dt.datetime | None = T0, rid: str = "ar-000000000001"
) -> AccessRequest:
    return AccessRequest(
        id=rid, name="prod-break-glass", requester="bob", reason="INC-1", duration=dt.timedelta(hours=1),
        created_at=T0 - dt.timedelta(hours=1), state=state, expires_at=expires_at,
        approvals=(Signoff("alice", T0 - dt.timedelta(hours=1)),),
    )  # fmt: skip


def test_event_body_names_the_transition_and_carries_the_request() -> None:
    event = transition_event("approved", request(), T0 - dt.timedelta(hours=1), "alice", "ok")
    assert event["event"] == "access_request.approved"
    assert event["id"] == "ar-000000000001:approved"  # the same on every replica and retry
    assert event["actor"] == "alice" and event["reason"] == "ok"
    assert event["request"]["state"] == "approved" and event["request"]["requester"] == "bob"


def test_newly_expired_from_expires_at_on_and_only_once() -> None:
    seen: set[str] = set()
    requests = [request(), request("revoked", rid="ar-000000000002"), request(expires_at=None, rid="ar-3")]
    assert newly_expired(requests, seen, T0 - dt.timedelta(microseconds=1)) == []
    assert [r.id for r in newly_expired(requests, seen, T0)] == ["ar-000000000001"]  # the instant included
    assert newly_expired(requests, seen, T0 + dt.timedelta(hours=1)) == []


def test_next_expiry_is_the_earliest_active_one() -> None:
    later = request(expires_at=T0 + dt.timedelta(minutes=5), rid="ar-2")
    assert next_expiry([later, request()], T0 - dt.timedelta(minutes=1)) == T0
    assert next_expiry([later, request()], T0) == later.expires_at
    assert next_expiry([request("revoked")], T0 - dt.timedelta(minutes=1)) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("url: ftp://x\nsecret: s\n", "expected an http:// or https:// URL"),
        ("url: https://hooks.example.com/x\n", "secret"),
        ("url: https://hooks.example.com/x\nsecret: ''\n", "secret"),
        ("url: https://hooks.example.com/x\nsecret: s\nretries: 3\n", "retries"),
    ],
)
def test_config_errors_name_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(AccessRequestsWebhookConfig, text, "webhook.yaml")
    assert words in str(caught.value) and "webhook.yaml:" in str(caught.value)


def test_config_keeps_a_secret_reference_unresolved() -> None:
    cfg = load_model(AccessRequestsWebhookConfig, "url: https://h.example.com/x\nsecret: env:HOOK_SECRET\n", "w.yaml")
    assert cfg.secret.get_secret_value() == "env:HOOK_SECRET" and "HOOK" not in repr(cfg)
