"""The policy file format: what it accepts, its defaults, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from connector.policy.model import DAYS, Policy, PolicyList, Rule, parse_hours

BASE = {"name": "p", "subjects": {"users": ["alice"]}, "sockets": ["prod"]}


def policy(**changes) -> Policy:
    return Policy.model_validate({**BASE, **changes})


def error_of(**changes) -> str:
    with pytest.raises(ValidationError) as info:
        policy(**changes)
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


def test_the_documented_example_loads():
    p = Policy.model_validate(
        {
            "name": "developers-read",
            "subjects": {"users": ["alice@example.com"], "groups": ["developers"]},
            "sockets": ["eks-*-staging", "prod"],
            "socket_tags": {"env": ["staging"]},
            "conditions": {
                "source_ips": ["10.0.0.0/8", "2001:db8::/32"],
                "time": {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "hours": "08:00-18:00",
                    "timezone": "Europe/Berlin",
                },
                "not_after": datetime(2027, 1, 1, tzinfo=UTC),
            },
            "kubernetes": {
                "rules": [
                    {
                        "api_groups": ["", "apps"],
                        "namespaces": ["default"],
                        "verbs": ["get", "list", "watch"],
                        "resources": ["pods", "pods/log", "deployments"],
                    },
                    {
                        "namespaces": ["dev"],
                        "verbs": ["create"],
                        "resources": ["pods/exec"],
                        "resource_names": ["api-*"],
                    },
                ]
            },
        }
    )
    assert p.subjects.groups == ("developers",)
    assert p.socket_tags == {"env": ("staging",)}
    assert p.conditions.source_ips == ("10.0.0.0/8", "2001:db8::/32")
    assert p.conditions.time is not None and p.conditions.time.timezone == "Europe/Berlin"
    rules = p.kubernetes.rules
    assert rules is not None and len(rules) == 2
    # omitted lists mean everything
    assert rules[1].api_groups == ("*",)
    assert rules[0].resource_names == ("*",)
    assert not rules[0].allow_privileged_verbs


def test_defaults():
    p = policy()
    assert p.kubernetes is None  # no Kubernetes access unless the key is there
    assert p.conditions.source_ips is None and p.conditions.time is None
    assert policy(kubernetes={}).kubernetes.rules is None  # everything
    assert policy(kubernetes={"rules": []}).kubernetes.rules == ()  # nothing
    rule = Rule()
    assert (rule.verbs, rule.namespaces, rule.resources, rule.api_groups) == (("*",), ("*",), ("*",), ("*",))
    assert policy(conditions={"time": {"hours": "09:00-17:00"}}).conditions.time.days == DAYS


@pytest.mark.parametrize(
    "rule",
    [
        {"verbs": ["*"], "allow_privileged_verbs": True},
        {"verbs": ["impersonate"], "resources": ["users", "groups", "serviceaccounts"]},
        {"resources": ["*/scale", "pods/*", "pod*", "deployments/sta*"]},
        {"api_groups": ["", "*"], "namespaces": ["team-*", "default"]},
        {"resource_names": ["web", "api-*"]},
        {"non_resource_urls": ["/healthz", "/metrics*", "*"], "verbs": ["get", "head", "post"]},
        {"verbs": ["use", "approve", "sign", "attest", "bind", "escalate", "deletecollection", "proxy"]},
    ],
)
def test_valid_rules(rule):
    assert policy(kubernetes={"rules": [rule]}).kubernetes.rules[0] == Rule.model_validate(rule)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "has space"}, "bad policy name"),
        ({"name": ""}, "bad policy name"),
        ({"subjects": {}}, "name at least one user or group"),
        ({"subjects": {"users": [""]}}, "bad subject"),
        ({"subjects": {"users": [" alice"]}}, "bad subject"),
        ({"subjects": {"people": ["x"]}}, "Extra inputs are not permitted"),
        ({"sockets": []}, "name the sockets this policy applies to"),
        ({"sockets": ["prod[0]"]}, 'bad glob "prod[0]"'),
        ({"sockets": ["prod?"]}, 'bad glob "prod?"'),
        ({"sockets": ["pr od"]}, "whitespace"),
        ({"sockets": [""]}, "empty name"),
        ({"socket_tags": {"env": []}}, 'socket tag "env" lists no value'),
        ({"kubernetes": None}, "kubernetes is empty"),
        ({"kubernetes": {"rules": None}}, "rules is empty"),
        ({"kubernetes": {"rules": [{"verbs": ["gett"]}]}}, 'unknown verb "gett"'),
        ({"kubernetes": {"rules": [{"verbs": ["post"]}]}}, 'verb "post" is an HTTP method'),
        ({"kubernetes": {"rules": [{"verbs": []}]}}, "an empty list matches no verb"),
        ({"kubernetes": {"rules": [{"namespaces": []}]}}, "an empty list matches no namespace"),
        ({"kubernetes": {"rules": [{"namespaces": ["d*v"]}]}}, 'bad glob "d*v"'),
        ({"kubernetes": {"rules": [{"namespaces": ["*dev"]}]}}, 'bad glob "*dev"'),
        ({"kubernetes": {"rules": [{"resources": ["a/b/c"]}]}}, 'bad resource "a/b/c"'),
        ({"kubernetes": {"rules": [{"resources": ["p*ds"]}]}}, 'bad glob "p*ds"'),
        ({"kubernetes": {"rules": [{"api_groups": ["*.k8s.io"]}]}}, 'bad glob "*.k8s.io"'),
        ({"kubernetes": {"rules": [{"resource_names": ["[abc]"]}]}}, 'bad glob "[abc]"'),
        ({"kubernetes": {"rules": [{"non_resource_urls": ["healthz"]}]}}, "must start with"),
        ({"kubernetes": {"rules": [{"non_resource_urls": ["/a*b"]}]}}, "only a trailing"),
        ({"kubernetes": {"rules": [{"non_resource_urls": ["/healthz"], "verbs": ["create"]}]}}, "is a Kubernetes verb"),
        (
            {"kubernetes": {"rules": [{"non_resource_urls": ["/healthz"], "resources": ["pods"]}]}},
            "cannot also set resources",
        ),
        ({"kubernetes": {"rules": [{"allow_privileged_verbs": "maybe"}]}}, "valid boolean"),
        ({"conditions": {"source_ips": []}}, "an empty list allows no address"),
        ({"conditions": {"source_ips": ["10.0.0.0/33"]}}, 'malformed CIDR "10.0.0.0/33"'),
        ({"conditions": {"source_ips": ["10.0.0.1/8"]}}, "has host bits set"),
        ({"conditions": {"source_ips": ["2001:db8::/200"]}}, 'malformed CIDR "2001:db8::/200"'),
        ({"conditions": {"time": {}}}, "needs days and/or hours"),
        ({"conditions": {"time": {"days": []}}}, "an empty list matches no day"),
        ({"conditions": {"time": {"days": ["Monday"]}}}, 'unknown day "Monday"'),
        ({"conditions": {"time": {"hours": "8-18"}}}, 'bad time window "8-18"'),
        ({"conditions": {"time": {"hours": "08:00-08:00"}}}, "must not be empty"),
        ({"conditions": {"time": {"hours": "00:00-24:00"}}}, "whole day"),
        ({"conditions": {"time": {"hours": "08:60-09:00"}}}, "hours go from"),
        ({"conditions": {"time": {"hours": "24:00-01:00"}}}, "hours go from"),
        (
            {"conditions": {"time": {"hours": "09:00-10:00", "timezone": "Mars/Olympus"}}},
            'unknown timezone "Mars/Olympus"',
        ),
        ({"conditions": {"time": {"hours": "09:00-10:00", "timezone": "../etc/passwd"}}}, "unknown timezone"),
        ({"conditions": {"not_after": "2027-01-01T00:00:00"}}, "has no timezone"),
        ({"conditions": {"not_before": "2027-01-01"}}, "has no timezone"),
        ({"conditions": {"not_before": "2027-01-02T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}}, "earlier"),
        ({"kubernetes": {"rules": [{"verbs": "get"}]}}, "valid tuple"),
    ],
)
def test_invalid(changes, expected):
    assert expected in error_of(**changes)


def test_the_error_points_at_the_list_item():
    message = error_of(kubernetes={"rules": [{"verbs": ["get"]}, {"verbs": ["list", "gett"]}]})
    assert message.startswith("kubernetes.rules.1.verbs.1: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("08:00-18:00", (480, 1080)), ("22:00-06:00", (1320, 360)), ("18:00-24:00", (1080, 0)), ("00:00-00:01", (0, 1))],
)
def test_parse_hours(text, expected):
    assert parse_hours(text) == expected


def test_datetimes_keep_their_offset():
    p = policy(conditions={"not_before": "2026-05-04T09:30:00+02:00"})
    assert p.conditions.not_before == datetime(2026, 5, 4, 9, 30, tzinfo=timezone(timedelta(hours=2)))


def test_policy_names_are_unique_in_a_list():
    adapter = TypeAdapter(PolicyList)
    assert len(adapter.validate_python([BASE, {**BASE, "name": "q"}])) == 2
    with pytest.raises(ValidationError, match=r'policy name "p" is used by policies\[0\] and policies\[2\]'):
        adapter.validate_python([BASE, {**BASE, "name": "q"}, BASE])


def test_models_are_frozen():
    p = policy()
    with pytest.raises(ValidationError):
        p.name = "other"  # type: ignore[misc]
