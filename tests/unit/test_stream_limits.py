"""Counting open streams per user and in total (connector.proxy.stream_limits)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.proxy.config import LimitsConfig
from connector.proxy.stream_limits import StreamLimitExceeded, StreamSlots


def test_config_defaults_and_bounds() -> None:
    limits = LimitsConfig()
    assert (limits.max_streams_per_user, limits.max_streams) == (64, 2048)
    assert LimitsConfig(max_streams_per_user=1, max_streams=2).max_streams == 2
    for bad in ({"max_streams_per_user": 0}, {"max_streams": 0}, {"max_streams": "many"}):
        with pytest.raises(ValidationError):
            LimitsConfig(**bad)


def test_per_user_limit_names_the_user_and_the_config_key() -> None:
    slots = StreamSlots()
    slots.acquire("alice", per_user=2, total=10)
    slots.acquire("alice", per_user=2, total=10)
    with pytest.raises(StreamLimitExceeded, match=r"alice has reached the limit of 2 .*max_streams_per_user"):
        slots.acquire("alice", per_user=2, total=10)
    slots.acquire("bob", per_user=2, total=10)  # other users are not affected
    assert (slots.open_for("alice"), slots.open_for("bob"), slots.total) == (2, 1, 3)


def test_total_limit_applies_across_users() -> None:
    slots = StreamSlots()
    slots.acquire("alice", per_user=5, total=2)
    slots.acquire("bob", per_user=5, total=2)
    with pytest.raises(StreamLimitExceeded, match=r"limit of 2 open streams \(server.limits.max_streams\)"):
        slots.acquire("carol", per_user=5, total=2)
    assert slots.open_for("carol") == 0 and slots.total == 2  # a refused acquire counts nothing


def test_release_frees_the_slot_and_forgets_idle_users() -> None:
    slots = StreamSlots()
    slots.acquire("alice", per_user=1, total=1)
    slots.release("alice")
    assert slots.total == 0 and slots._by_user == {}
    slots.acquire("alice", per_user=1, total=1)  # usable again


def test_releasing_what_was_never_acquired_is_a_bug_not_a_negative_count() -> None:
    with pytest.raises(RuntimeError, match="holds none"):
        StreamSlots().release("alice")


@given(st.lists(st.tuples(st.sampled_from(["alice", "bob", "carol"]), st.booleans()), max_size=60))
def test_counts_never_exceed_the_limits_and_match_what_is_held(ops: list[tuple[str, bool]]) -> None:
    slots, held = StreamSlots(), {"alice": 0, "bob": 0, "carol": 0}
    for user, acquire in ops:
        if acquire:
            try:
                slots.acquire(user, per_user=3, total=5)
                held[user] += 1
            except StreamLimitExceeded:
                assert held[user] == 3 or sum(held.values()) == 5
        elif held[user]:
            slots.release(user)
            held[user] -= 1
        assert slots.total == sum(held.values()) <= 5
        assert all(slots.open_for(u) == n <= 3 for u, n in held.items())
