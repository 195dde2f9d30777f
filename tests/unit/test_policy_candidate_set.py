"""`CandidateSet.allowing`, the indexed decision `policy replay` uses, against `PolicyEngine.decide`.

Differential: the bench's 500 policies plus policies of every other kind (all access, `rules: []`, no
`kubernetes`, `grant_only`, `requires_approval` rules, a validity period, a window across midnight,
URL rules), decided for a few thousand random requests, callers, source IPs and times (on and around
window edges); the allow or deny and the allowing policy and rule must be the engine's, every time.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from bench.policy import SOCKETS, make_callers, make_policies, make_requests
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from connector.policy.rules import request_shape

EVERYONE = {"groups": ["team-1", "team-2", "team-3", "team-4", "team-5"]}
EXTRA = [
    {"name": "all-access", "subjects": EVERYONE, "sockets": ["eks-1-*"], "kubernetes": {}},
    {"name": "nothing", "subjects": EVERYONE, "sockets": ["*"], "kubernetes": {"rules": []}},
    {"name": "console-only", "subjects": EVERYONE, "sockets": ["*"], "console": {"sessions": "read"}},
    {
        "name": "granted",
        "subjects": EVERYONE,
        "sockets": ["*"],
        "grant_only": True,
        "kubernetes": {"rules": [{"verbs": ["*"], "resources": ["*"], "namespaces": ["*"]}]},
    },
    {
        "name": "step-up",
        "subjects": EVERYONE,
        "sockets": ["*"],
        "kubernetes": {
            "rules": [
                {"verbs": ["delete"], "resources": ["pods"], "namespaces": ["*"], "requires_approval": True},
                {"verbs": ["get", "list"], "resources": ["pods", "pods/log"], "namespaces": ["web", "team-*"]},
                {"verbs": ["get"], "non_resource_urls": ["/healthz", "/livez/*"]},
            ]
        },
    },
    {
        "name": "this-week",
        "subjects": EVERYONE,
        "sockets": ["*"],
        "conditions": {"not_before": "2026-03-03T12:00:00Z", "not_after": "2026-03-05T12:00:00Z"},
        "kubernetes": {"rules": [{"verbs": ["*"], "api_groups": ["*"], "resources": ["*"], "namespaces": ["d*"]}]},
    },
    {
        "name": "night-shift",
        "subjects": EVERYONE,
        "sockets": ["*"],
        "conditions": {
            "time": {"days": ["mon", "wed"], "hours": "22:00-06:00", "timezone": "America/New_York"},
            "source_ips": ["10.0.0.0/8", "192.168.1.0/24"],
        },
        "kubernetes": {"rules": [{"verbs": ["create"], "resources": ["pods/exec"], "namespaces": ["*"]}]},
    },
]


def test_allowing_is_what_decide_reports_without_grants():
    rng = random.Random(2026)
    policies = make_policies(rng) + [Policy.model_validate(p) for p in EXTRA]
    engine = PolicyEngine(policies)
    requests = [
        ("GET", "/healthz", ""),
        ("GET", "/livez/ping", ""),
        ("OPTIONS", "/api/v1/namespaces/web/pods", ""),
        ("GET", "/api/v1/namespaces/team-x/pods/web-3/log", ""),
        ("DELETE", "/api/v1/namespaces/data/pods/api-0", ""),
        *make_requests(rng, 3000),
    ]
    callers = [
        # A quarter of the callers are also in a group the extra policies name.
        (Identity(who.user, (*who.groups, f"team-{rng.randrange(1, 6)}")) if i % 4 == 0 else who, *rest)
        for i, (who, *rest) in enumerate(make_callers(rng, 400))
    ]
    start = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
    edges = [timedelta(days=1, hours=12), timedelta(days=3, hours=12), timedelta(hours=27), timedelta(hours=11)]
    allowed = denied = 0
    allowing: set[str | None] = set()
    for i in range(6000):
        method, path, query = requests[i] if i < len(requests) else rng.choice(requests)
        identity, socket, tags, ip = rng.choice(callers)
        if rng.random() < 0.2:
            ip = rng.choice(["10.255.255.255", "11.0.0.0", "192.168.1.255", "192.168.2.0", "::ffff:10.1.1.1", "x"])
        if rng.random() < 0.3:
            when = start + rng.choice(edges) + timedelta(microseconds=rng.choice([-1, 0, 1]))
        else:
            when = start + timedelta(seconds=rng.randrange(7 * 86400), microseconds=rng.randrange(10**6))
        info = parse_request_info(method, path, query)
        expected = engine.decide(identity, socket, tags, info, ip, when)
        got = engine.candidate_set(identity, socket, tags).allowing(info, request_shape(info), ip, when)
        want = (expected.policy, expected.rule) if expected.allowed else None
        assert got == want, (identity, socket, method, path, query, ip, when.isoformat(), expected.reason)
        allowed += expected.allowed
        denied += not expected.allowed
        allowing.add(expected.policy)
    assert allowed > 500 and denied > 500, (allowed, denied)
    assert {"all-access", "step-up", "this-week", "night-shift"} <= allowing


def test_a_candidate_set_is_shared_by_callers_named_by_the_same_policies():
    policies = [Policy.model_validate(p) for p in EXTRA]
    engine = PolicyEngine(policies)
    one = engine.candidate_set(Identity("a", ("team-1",)), SOCKETS[0], {})
    assert engine.candidate_set(Identity("b", ("team-2",)), SOCKETS[0], {}) is one
    assert engine.candidate_set(Identity("c", ("team-9",)), SOCKETS[0], {}) is not one
