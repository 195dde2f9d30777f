"""`bench.replay`'s logs are what it says: the connector's own audit lines, decided by the engine in
the realistic log (so a replay of the same policies changes nothing), a coin toss in the adversarial
one, and the replayed config is the policy set with the few edits it names."""

from __future__ import annotations

import random

from bench.policy import make_policies
from bench.replay import TAGS, edited, write_log
from connector.policy.engine import PolicyEngine
from connector.policy.replay import Decider, Filters, ReadStats, read_requests, replay
from connector.policy.replay_grants import GrantLedger


def _replay(log, policies):
    ledger, stats = GrantLedger(), ReadStats()
    decider = Decider(PolicyEngine(policies), TAGS, (), ledger)
    result = replay(read_requests([str(log)], stats, Filters(), ledger), stats, decider, None)
    return stats, result


def test_the_bench_logs_replay_as_described(tmp_path):
    rng = random.Random(42)
    policies = make_policies(rng)
    realistic, adversarial = tmp_path / "realistic.log", tmp_path / "adversarial.log"
    write_log(realistic, random.Random(1), 3000, PolicyEngine(policies))
    write_log(adversarial, random.Random(1), 3000)
    assert 700 < realistic.stat().st_size / 3000 < 900  # the connector's full lines, not a slim subset

    stats, same = _replay(realistic, policies)
    assert (stats.events, stats.decided, stats.malformed_count, same.changed) == (3000, 3000, 0, 0)
    assert "reason" in realistic.read_text().splitlines()[0]
    changed = edited(policies, random.Random(5))
    assert len(changed) == len(policies) - 1
    assert sum(p not in policies for p in changed) == 5  # one namespace fewer in one rule of each

    _, coin = _replay(adversarial, policies)
    assert 1200 < coin.changed < 1800
