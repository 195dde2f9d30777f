"""Which open streams end when the access request that allowed them expires, is revoked or leaves the
config, and which run on (re-bound to the grant, or the standing policy, that allows them now)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from connector.kube.requestinfo import parse_request_info
from connector.policy import access
from connector.proxy.granted_streams import GrantedStream, ended_streams, next_expiry
from connector.proxy.registry import ActiveStream
from tests.unit.test_access_requests import ALICE, BOB, DEFS, ENGINE, EXEC, T0, approved

WATCH = parse_request_info("GET", "/api/v1/namespaces/web/pods", "watch=true")
REQUEST = approved()  # ar-1, approved at T0 for 1h by alice: grants dev-read (exec) and prod-exec
LONGER = dataclasses.replace(approved(duration="2h"), id="ar-2")


def stream(info=EXEC, access_request: str = "ar-1") -> GrantedStream:
    return GrantedStream(ActiveStream("prod", "exec"), access_request, BOB, "prod", {}, info, "10.0.0.1")


@pytest.mark.parametrize(
    ("requests", "definitions", "at", "ended_because", "bound_to"),
    [
        ([REQUEST], DEFS, T0 + timedelta(minutes=59, seconds=59), None, "ar-1"),
        ([REQUEST], DEFS, T0 + timedelta(hours=1), "access request ar-1 expired at 2026-03-04T11:00:00+00:00", None),
        (
            [access.revoke(REQUEST, DEFS, ALICE, T0 + timedelta(minutes=5))],
            DEFS,
            T0 + timedelta(minutes=5),
            "access request ar-1 was revoked by alice",
            None,
        ),
        (
            [REQUEST],
            [d for d in DEFS if d.name != "prod-break-glass"],
            T0,
            "access request ar-1 no longer grants it: ",
            None,
        ),
        ([], DEFS, T0, "access request ar-1 is no longer in the access store", None),
        # Another approved request grants the same policy: the stream runs on, now bound to it.
        ([REQUEST, LONGER], DEFS, T0 + timedelta(hours=1), None, "ar-2"),
    ],
    ids=["before-expiry", "at-expiry", "revoked", "definition-removed", "gone-from-store", "another-grant"],
)
def test_exec_allowed_by_a_grant(requests, definitions, at, ended_because, bound_to) -> None:
    tracked = stream()
    ended = ended_streams([tracked], requests, definitions, ENGINE, at)
    if ended_because is None:
        assert ended == []
        assert tracked.access_request == bound_to
    else:
        assert [(s, why.startswith(ended_because)) for s, why in ended] == [(tracked, True)], ended


def test_a_stream_a_standing_policy_allows_runs_on_unbound() -> None:
    # dev-read allows watch without approval: the stream no longer depends on any request.
    tracked = stream(WATCH)
    assert ended_streams([tracked], [], DEFS, ENGINE, T0 + timedelta(hours=3)) == []
    assert tracked.access_request == ""


def test_next_expiry_is_the_earliest_of_the_requests_streams_depend_on() -> None:
    assert next_expiry([stream(), stream(access_request="ar-2")], [REQUEST, LONGER]) == T0 + timedelta(hours=1)
    assert next_expiry([stream(access_request="ar-2")], [REQUEST, LONGER]) == T0 + timedelta(hours=2)
    assert next_expiry([stream(access_request="")], [REQUEST]) is None
