"""PolicyEngine decisions: a table over every semantic rule, then rules_for and the edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.configfile import load_model
from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo, parse_request_info
from connector.policy.config_input import PolicyFile
from connector.policy.engine import PolicyEngine

POLICIES = """
policies:
  - name: dev-read
    subjects: {groups: [developers]}
    sockets: ["eks-*-staging", prod]
    kubernetes:
      rules:
        - api_groups: ["", apps]
          namespaces: [default, "team-*"]
          verbs: [get, list, watch]
          resources: [pods, pods/log, deployments]
        - namespaces: [dev]
          verbs: [create]
          resources: [pods/exec, pods/attach, pods/portforward]
          resource_names: ["api-*"]
        - api_groups: [""]
          verbs: [get, list]
          resources: [nodes, namespaces]
        - non_resource_urls: ["/healthz", "/metrics*"]
          verbs: [get]
  - name: admins
    subjects: {users: [root@example.com]}
    sockets: ["*"]
    kubernetes: {}
  - name: office-only
    subjects: {users: [carol]}
    sockets: [prod]
    conditions: {source_ips: [10.0.0.0/8, "2001:db8::/32"]}
    kubernetes: {}
  - name: business-hours
    subjects: {users: [dave]}
    sockets: [prod]
    conditions:
      time: {days: [mon, tue, wed, thu, fri], hours: "08:00-18:00", timezone: Europe/Berlin}
    kubernetes: {}
  - name: night-shift
    subjects: {users: [erin]}
    sockets: [prod]
    conditions:
      time: {days: [fri], hours: "22:00-06:00"}
    kubernetes: {}
  - name: temporary
    subjects: {users: [frank]}
    sockets: [prod]
    conditions: {not_before: 2026-01-01T00:00:00Z, not_after: 2026-02-01T00:00:00Z}
    kubernetes: {}
  - name: locked
    subjects: {users: [gina]}
    sockets: [prod]
    kubernetes: {rules: []}
  - name: no-k8s
    subjects: {users: [hank]}
    sockets: [prod]
  - name: by-tag
    subjects: {users: [ivan]}
    socket_tags: {env: [staging, qa], team: [web]}
    kubernetes: {}
  - name: star-verbs
    subjects: {users: [judy]}
    sockets: [prod]
    kubernetes:
      rules:
        - verbs: ["*"]
        - verbs: [impersonate]
          api_groups: [""]
          resources: [serviceaccounts]
  - name: privileged
    subjects: {users: [kim]}
    sockets: [prod]
    kubernetes:
      rules:
        - verbs: ["*"]
          allow_privileged_verbs: true
  - name: everyone
    subjects: {users: ["*"]}
    sockets: [public]
    kubernetes: {rules: []}
  - name: audit-a
    subjects: {groups: [auditors]}
    sockets: [prod]
    kubernetes:
      rules:
        - {verbs: [list], resources: [secrets], namespaces: [audit]}
  - name: audit-b
    subjects: {groups: [auditors]}
    sockets: [prod]
    conditions: {source_ips: [192.168.0.0/16]}
    kubernetes: {}
"""

ENGINE = PolicyEngine(load_model(PolicyFile, POLICIES, "policies.yaml").policies)
WEDNESDAY = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # 11:00 in Berlin
SATURDAY = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
FRIDAY = datetime(2026, 3, 6, tzinfo=UTC)

ALICE = ("alice@example.com", ("developers",))


def row(
    case: str,
    who: tuple[str, tuple[str, ...]],
    socket: str,
    request: str | RequestInfo,
    *,
    tags: dict[str, str] | None = None,
    ip: str = "10.0.0.1",
    at: datetime = WEDNESDAY,
    allowed: bool,
    policy: str | None = None,
    rule: int | None = None,
    reason: str | None = None,
):
    return pytest.param(who, socket, request, tags or {}, ip, at, allowed, policy, rule, reason, id=case)


def info(verb: str, resource: str, *, namespace: str = "", group: str = "", name: str = "") -> RequestInfo:
    return RequestInfo(True, "/synthetic", verb, "api", group, "v1", namespace, resource, "", name, (resource,))


ROWS = [
    # rule matching: verbs, groups, resources, subresources, namespaces (with prefix globs)
    row("list pods", ALICE, "prod", "GET /api/v1/namespaces/default/pods", allowed=True, policy="dev-read", rule=0),
    row("get log", ALICE, "prod", "GET /api/v1/namespaces/default/pods/web/log", allowed=True, policy="dev-read",
        rule=0),
    row("watch prefix ns", ALICE, "prod", "GET /apis/apps/v1/namespaces/team-a/deployments?watch=1",
        allowed=True, policy="dev-read", rule=0),
    row("prefix ns needs prefix", ALICE, "prod", "GET /apis/apps/v1/namespaces/teamx/deployments", allowed=False,
        reason="policy dev-read: no rule allows list deployments.apps in namespace teamx"),
    row("wrong group", ALICE, "prod", "GET /apis/extensions/v1beta1/namespaces/default/deployments", allowed=False,
        reason="no rule allows list deployments.extensions in namespace default"),
    row("verb not granted", ALICE, "prod", "DELETE /api/v1/namespaces/default/pods/web", allowed=False,
        reason='policy dev-read: no rule allows delete pods "web" in namespace default'),
    row("deletecollection not granted", ALICE, "prod", "DELETE /api/v1/namespaces/default/pods", allowed=False,
        reason="deletecollection pods in namespace default"),
    row("subresource not granted by resource", ALICE, "prod", "PUT /api/v1/namespaces/default/pods/web/status",
        allowed=False, reason='update pods/status "web" in namespace default'),
    # empty namespace matches only namespaces: [*]
    row("all-namespaces list", ALICE, "prod", "GET /api/v1/pods", allowed=False,
        reason="no rule allows list pods cluster-wide"),
    row("cluster-scoped with * namespaces", ALICE, "prod", "GET /api/v1/nodes", allowed=True, policy="dev-read",
        rule=2),
    row("namespace object is in its namespace", ALICE, "prod", "GET /api/v1/namespaces/kube-system",
        allowed=True, policy="dev-read", rule=2),
    # exec, attach, portforward are create whatever the method
    row("exec over websocket GET", ALICE, "prod", "GET /api/v1/namespaces/dev/pods/api-1/exec?command=sh",
        allowed=True, policy="dev-read", rule=1),
    row("exec over SPDY POST", ALICE, "prod", "POST /api/v1/namespaces/dev/pods/api-1/exec?command=sh",
        allowed=True, policy="dev-read", rule=1),
    row("portforward", ALICE, "prod", "POST /api/v1/namespaces/dev/pods/api-2/portforward",
        allowed=True, policy="dev-read", rule=1),
    row("attach", ALICE, "prod", "GET /api/v1/namespaces/dev/pods/api-3/attach", allowed=True, policy="dev-read",
        rule=1),
    row("exec other name", ALICE, "prod", "GET /api/v1/namespaces/dev/pods/web-1/exec", allowed=False,
        reason='policy dev-read: no rule allows create pods/exec "web-1" in namespace dev'),
    row("get on pods is not exec", ALICE, "prod", "GET /api/v1/namespaces/default/pods/web/exec", allowed=False,
        reason='create pods/exec "web" in namespace default'),
    row("named rule does not list", ALICE, "prod", "GET /api/v1/namespaces/dev/pods", allowed=False,
        reason="list pods in namespace dev"),
    # non-resource paths
    row("healthz", ALICE, "prod", "GET /healthz", allowed=True, policy="dev-read", rule=3),
    row("metrics prefix", ALICE, "prod", "GET /metrics/cadvisor", allowed=True, policy="dev-read", rule=3),
    row("non-resource verb", ALICE, "prod", "POST /healthz", allowed=False, reason="no rule allows post /healthz"),
    row("unlisted non-resource", ALICE, "prod", "GET /livez", allowed=False, reason="no rule allows get /livez"),
    # discovery is open to whoever may use the socket
    row("discovery /api", ALICE, "prod", "GET /api", allowed=True, policy="dev-read"),
    row("discovery group", ALICE, "prod", "GET /apis/apps/v1", allowed=True, policy="dev-read"),
    row("discovery openapi", ALICE, "prod", "GET /openapi/v3/apis/apps/v1", allowed=True, policy="dev-read"),
    row("discovery version", ALICE, "prod", "HEAD /version", allowed=True, policy="dev-read"),
    row("discovery is read-only", ALICE, "prod", "POST /apis", allowed=False, reason="no rule allows post /apis"),
    row("discovery with rules: []", ("gina", ()), "prod", "GET /api", allowed=True, policy="locked"),
    row("discovery needs kubernetes", ("hank", ()), "prod", "GET /api", allowed=False,
        reason="policy no-k8s: grants no Kubernetes access"),
    # which policies apply: sockets, globs, tags, subjects
    row("socket glob", ALICE, "eks-web-staging", "GET /api/v1/namespaces/default/pods", allowed=True,
        policy="dev-read", rule=0),
    row("socket glob is anchored", ALICE, "eks-web-staging-2", "GET /api", allowed=False,
        reason="no policy grants alice@example.com access to socket eks-web-staging-2"),
    row("no policy for socket", ALICE, "dev", "GET /api", allowed=False,
        reason="no policy grants alice@example.com access to socket dev"),
    row("no policy for user", ("alice@example.com", ()), "prod", "GET /api", allowed=False,
        reason="no policy grants alice@example.com access to socket prod"),
    row("star socket", ("root@example.com", ()), "anything", "DELETE /api/v1/nodes/n1", allowed=True,
        policy="admins"),
    row("tags match", ("ivan", ()), "x", "GET /api/v1/pods", tags={"env": "qa", "team": "web", "o": "1"},
        allowed=True, policy="by-tag"),
    row("tag value not listed", ("ivan", ()), "x", "GET /api/v1/pods", tags={"env": "prod", "team": "web"},
        allowed=False, reason="no policy grants ivan access to socket x"),
    row("every tag key needed", ("ivan", ()), "x", "GET /api/v1/pods", tags={"env": "qa"}, allowed=False,
        reason="no policy grants ivan"),
    row("star subject", ("zed", ()), "public", "GET /version", allowed=True, policy="everyone"),
    row("rules: [] denies", ("zed", ()), "public", "GET /api/v1/pods", allowed=False,
        reason="policy everyone: allows nothing (rules: [])"),
    row("no kubernetes key", ("hank", ()), "prod", "GET /api/v1/pods", allowed=False,
        reason="policy no-k8s: grants no Kubernetes access"),
    # OR across policies, first allowing policy in file order is reported
    row("or: first policy", ("root@example.com", ("developers",)), "prod", "GET /api/v1/namespaces/default/pods",
        allowed=True, policy="dev-read", rule=0),
    row("or: second policy", ("root@example.com", ("developers",)), "prod", "DELETE /api/v1/namespaces/default/pods",
        allowed=True, policy="admins"),
    # conditions: source IPs
    row("ip in range", ("carol", ()), "prod", "GET /api/v1/pods", ip="10.1.2.3", allowed=True, policy="office-only"),
    row("ip out of range", ("carol", ()), "prod", "GET /api/v1/pods", ip="1.2.3.4", allowed=False,
        reason="policy office-only: source IP 1.2.3.4 is not in 10.0.0.0/8, 2001:db8::/32"),
    row("ipv4-mapped ipv6", ("carol", ()), "prod", "GET /api/v1/pods", ip="::ffff:10.0.0.5", allowed=True,
        policy="office-only"),
    row("ipv6 in range", ("carol", ()), "prod", "GET /api/v1/pods", ip="2001:db8::1", allowed=True,
        policy="office-only"),
    row("ipv6 out of range", ("carol", ()), "prod", "GET /api/v1/pods", ip="2001:db9::1", allowed=False,
        reason="source IP 2001:db9::1 is not in"),
    row("no ip", ("carol", ()), "prod", "GET /api/v1/pods", ip="", allowed=False, reason="is not an IP address"),
    row("conditions gate discovery too", ("carol", ()), "prod", "GET /api", ip="8.8.8.8", allowed=False,
        reason="source IP 8.8.8.8 is not in"),
    # conditions: access hours (Europe/Berlin is UTC+1 in March)
    row("inside hours", ("dave", ()), "prod", "GET /api/v1/pods", allowed=True, policy="business-hours"),
    row("weekend", ("dave", ()), "prod", "GET /api/v1/pods", at=SATURDAY, allowed=False,
        reason="access is allowed on mon, tue, wed, thu, fri 08:00-18:00 (Europe/Berlin); it is sat 11:00 there"),
    row("start is inclusive", ("dave", ()), "prod", "GET /api/v1/pods", at=WEDNESDAY.replace(hour=7),
        allowed=True, policy="business-hours"),
    row("before start", ("dave", ()), "prod", "GET /api/v1/pods", at=WEDNESDAY.replace(hour=6, minute=59),
        allowed=False, reason="it is wed 07:59 there"),
    row("end is exclusive", ("dave", ()), "prod", "GET /api/v1/pods", at=WEDNESDAY.replace(hour=17),
        allowed=False, reason="it is wed 18:00 there"),
    row("wrap: friday night", ("erin", ()), "prod", "GET /api/v1/pods", at=FRIDAY.replace(hour=23),
        allowed=True, policy="night-shift"),
    row("wrap: saturday early belongs to friday", ("erin", ()), "prod", "GET /api/v1/pods",
        at=FRIDAY + timedelta(hours=27), allowed=True, policy="night-shift"),
    row("wrap: friday early belongs to thursday", ("erin", ()), "prod", "GET /api/v1/pods",
        at=FRIDAY.replace(hour=3), allowed=False, reason="it is fri 03:00 there"),
    row("wrap: saturday night", ("erin", ()), "prod", "GET /api/v1/pods", at=FRIDAY + timedelta(hours=47),
        allowed=False, reason="it is sat 23:00 there"),
    # conditions: validity period
    row("inside period", ("frank", ()), "prod", "GET /api/v1/pods", at=datetime(2026, 1, 15, tzinfo=UTC),
        allowed=True, policy="temporary"),
    row("before period", ("frank", ()), "prod", "GET /api/v1/pods", at=datetime(2025, 12, 31, 23, tzinfo=UTC),
        allowed=False, reason="policy temporary: not valid before 2026-01-01T00:00:00+00:00"),
    row("after period", ("frank", ()), "prod", "GET /api/v1/pods", at=datetime(2026, 2, 1, tzinfo=UTC),
        allowed=False, reason="policy temporary: expired at 2026-02-01T00:00:00+00:00"),
    # privileged verbs need to be named, or the rule must opt in
    row("star verb", ("judy", ()), "prod", "DELETE /api/v1/namespaces/x/pods", allowed=True, policy="star-verbs",
        rule=0),
    row("star verb: no impersonate", ("judy", ()), "prod", info("impersonate", "users"), allowed=False,
        reason="policy star-verbs: no rule allows impersonate users cluster-wide"),
    row("named impersonate", ("judy", ()), "prod", info("impersonate", "serviceaccounts", namespace="ci"),
        allowed=True, policy="star-verbs", rule=1),
    row("star verb: no escalate", ("judy", ()), "prod", info("escalate", "roles", group="rbac.authorization.k8s.io"),
        allowed=False, reason="escalate roles.rbac.authorization.k8s.io cluster-wide"),
    row("star verb: no bind", ("judy", ()), "prod", info("bind", "clusterroles"), allowed=False,
        reason="no rule allows bind"),
    row("opted-in star verb", ("kim", ()), "prod", info("impersonate", "users"), allowed=True, policy="privileged",
        rule=0),
    row("star verb never matches no verb", ("judy", ()), "prod", "OPTIONS /api/v1/pods", allowed=False,
        reason="no rule allows (no verb) pods cluster-wide"),
    # several applying policies: each is listed with its reason
    row("several denials", ("ann", ("auditors",)), "prod", "GET /api/v1/namespaces/x/pods", allowed=False,
        reason="no policy allows list pods in namespace x: audit-a: no matching rule; "
        "audit-b: source IP 10.0.0.1 is not in 192.168.0.0/16"),
    row("second policy allows", ("ann", ("auditors",)), "prod", "GET /api/v1/namespaces/x/pods", ip="192.168.1.1",
        allowed=True, policy="audit-b"),
    row("first policy allows", ("ann", ("auditors",)), "prod", "GET /api/v1/namespaces/audit/secrets",
        allowed=True, policy="audit-a", rule=0),
]  # fmt: skip


@pytest.mark.parametrize(("who", "socket", "request_", "tags", "ip", "at", "allowed", "policy", "rule", "reason"), ROWS)
def test_decide(who, socket, request_, tags, ip, at, allowed, policy, rule, reason):
    if isinstance(request_, str):
        method, _, target = request_.partition(" ")
        path, _, query = target.partition("?")
        request_ = parse_request_info(method, path, query)
    decision = ENGINE.decide(Identity(who[0], who[1]), socket, tags, request_, ip, at)
    assert decision.allowed is allowed, decision.reason
    if allowed:
        assert (decision.policy, decision.rule) == (policy, rule)
        assert decision.policy in decision.reason
    else:
        assert (decision.policy, decision.rule) == (None, None)
        assert reason in decision.reason


def test_may_use_socket():
    now = WEDNESDAY
    assert ENGINE.may_use_socket(Identity(*ALICE), "prod", {}, "1.1.1.1", now)
    assert ENGINE.may_use_socket(Identity("gina"), "prod", {}, "1.1.1.1", now)  # rules: [] still uses the socket
    assert not ENGINE.may_use_socket(Identity("hank"), "prod", {}, "1.1.1.1", now)
    assert not ENGINE.may_use_socket(Identity("carol"), "prod", {}, "1.1.1.1", now)
    assert ENGINE.may_use_socket(Identity("carol"), "prod", {}, "10.9.9.9", now)
    assert not ENGINE.may_use_socket(Identity(*ALICE), "other", {}, "10.9.9.9", now)


DISCOVERY_RULE = {
    "verbs": ["get", "head"],
    "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi/*", "/version"],
}


def test_rules_for_a_namespace():
    rules = ENGINE.rules_for(Identity(*ALICE), "prod", {}, "dev", "10.0.0.1", WEDNESDAY)
    assert rules.resource_rules == [
        {
            "verbs": ["create"],
            "apiGroups": ["*"],
            "resources": ["pods/exec", "pods/attach", "pods/portforward"],
            "resourceNames": ["api-*"],
        },
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["nodes", "namespaces"]},
    ]
    health = {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/metrics*"]}
    assert rules.non_resource_rules == [DISCOVERY_RULE, health]


def test_rules_for_cluster_wide_lists_only_rules_for_every_namespace():
    rules = ENGINE.rules_for(Identity(*ALICE), "prod", {}, "", "10.0.0.1", WEDNESDAY)
    assert rules.resource_rules == [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["nodes", "namespaces"]}]


def test_rules_for_spells_out_what_a_star_verb_grants():
    rules = ENGINE.rules_for(Identity("judy"), "prod", {}, "x", "10.0.0.1", WEDNESDAY)
    star, impersonate = rules.resource_rules
    assert "impersonate" not in star["verbs"] and "get" in star["verbs"] and "*" not in star["verbs"]
    assert impersonate["verbs"] == ["impersonate"]
    kim = ENGINE.rules_for(Identity("kim"), "prod", {}, "x", "10.0.0.1", WEDNESDAY)
    assert kim.resource_rules[0]["verbs"] == ["*"]


def test_rules_for_full_access_and_nothing():
    full = ENGINE.rules_for(Identity("root@example.com"), "any", {}, "x", "10.0.0.1", WEDNESDAY)
    assert full.resource_rules == [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
    assert full.non_resource_rules == [DISCOVERY_RULE, {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    locked = ENGINE.rules_for(Identity("gina"), "prod", {}, "x", "10.0.0.1", WEDNESDAY)
    assert (locked.resource_rules, locked.non_resource_rules) == ([], [DISCOVERY_RULE])
    outside = ENGINE.rules_for(Identity("carol"), "prod", {}, "x", "8.8.8.8", WEDNESDAY)
    assert (outside.resource_rules, outside.non_resource_rules) == ([], [])


def test_time_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        ENGINE.decide(Identity(*ALICE), "prod", {}, parse_request_info("GET", "/api"), "", datetime(2026, 1, 1))


def test_policy_names_must_be_unique():
    policies = load_model(PolicyFile, POLICIES, "p.yaml").policies
    with pytest.raises(ValueError, match="repeated: admins"):
        PolicyEngine([*policies, policies[1]])


def test_a_long_denial_lists_five_policies():
    text = "policies:\n" + "".join(
        f"  - {{name: p{i}, subjects: {{users: [u]}}, sockets: [s], kubernetes: {{rules: []}}}}\n" for i in range(8)
    )
    engine = PolicyEngine(load_model(PolicyFile, text, "p.yaml").policies)
    decision = engine.decide(Identity("u"), "s", {}, parse_request_info("GET", "/api/v1/pods"), "", WEDNESDAY)
    assert decision.reason == (
        "no policy allows list pods cluster-wide: p0: allows nothing (rules: []); p1: allows nothing (rules: []); "
        "p2: allows nothing (rules: []); p3: allows nothing (rules: []); p4: allows nothing (rules: []); and 3 more"
    )


def test_many_distinct_callers_are_decided_correctly():
    """The subject and socket caches are bounded; decisions stay right past the bound."""
    request = parse_request_info("GET", "/api/v1/namespaces/default/pods")
    for i in range(5000):
        decision = ENGINE.decide(Identity(f"user{i}", ("developers",)), f"eks-{i}-staging", {}, request, "", WEDNESDAY)
        assert decision.allowed and decision.policy == "dev-read"
    assert not ENGINE.decide(Identity("user1"), "eks-1-staging", {}, request, "", WEDNESDAY).allowed


def test_an_empty_policy_set_denies():
    engine = PolicyEngine([])
    decision = engine.decide(Identity("a"), "s", {}, parse_request_info("GET", "/api"), "", WEDNESDAY)
    assert decision == decision.__class__(False, None, None, "no policy grants a access to socket s")
