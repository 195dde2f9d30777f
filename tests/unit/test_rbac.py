"""RBAC PolicyRule matching, with the semantics of kube-apiserver's RBAC authorizer."""

from __future__ import annotations

import pytest

from connector.kube.rbac import (
    PolicyRule,
    api_group_matches,
    non_resource_url_matches,
    resource_matches,
    resource_name_matches,
    rule_allows,
    rules_allow,
    verb_matches,
)


@pytest.mark.parametrize(
    ("verbs", "verb", "expected"),
    [
        (("get",), "get", True),
        (("get", "list"), "list", True),
        (("get",), "list", False),
        (("*",), "impersonate", True),  # RBAC's * is every verb (the policy engine is stricter)
        (("*",), "", True),
        ((), "get", False),
        (("Get",), "get", False),  # verbs are case-sensitive
        (("ge*",), "get", False),  # no globs in RBAC verbs
    ],
)
def test_verb_matches(verbs, verb, expected):
    assert verb_matches(PolicyRule(verbs=verbs), verb) is expected


@pytest.mark.parametrize(
    ("groups", "group", "expected"),
    [
        (("",), "", True),
        (("",), "apps", False),
        (("apps",), "", False),
        (("*",), "", True),
        (("*",), "rbac.authorization.k8s.io", True),
        (("apps", "batch"), "batch", True),
        (("*.k8s.io",), "rbac.authorization.k8s.io", False),
        ((), "", False),
    ],
)
def test_api_group_matches(groups, group, expected):
    assert api_group_matches(PolicyRule(api_groups=groups), group) is expected


@pytest.mark.parametrize(
    ("resources", "combined", "subresource", "expected"),
    [
        (("pods",), "pods", "", True),
        (("pods",), "pods/exec", "exec", False),  # a resource does not grant its subresources
        (("pods/exec",), "pods/exec", "exec", True),
        (("pods/exec",), "pods", "", False),
        (("*",), "pods/exec", "exec", True),
        (("*/exec",), "pods/exec", "exec", True),
        (("*/exec",), "pods", "", False),
        (("*/exec",), "pods/execute", "execute", False),
        (("*/log",), "pods/exec", "exec", False),
        (("pods/*",), "pods/exec", "exec", False),  # RBAC has no resource/* form
        (("pod*",), "pods", "", False),  # nor prefixes
        ((), "pods", "", False),
        (("PODS",), "pods", "", False),
    ],
)
def test_resource_matches(resources, combined, subresource, expected):
    assert resource_matches(PolicyRule(resources=resources), combined, subresource) is expected


@pytest.mark.parametrize(
    ("names", "name", "expected"),
    [
        ((), "anything", True),
        ((), "", True),
        (("web",), "web", True),
        (("web",), "web-1", False),
        (("web",), "", False),  # a named rule never covers list or create
        (("*",), "x", False),  # no wildcard in resourceNames
        (("a", "b"), "b", True),
    ],
)
def test_resource_name_matches(names, name, expected):
    assert resource_name_matches(PolicyRule(resource_names=names), name) is expected


@pytest.mark.parametrize(
    ("urls", "path", "expected"),
    [
        (("/healthz",), "/healthz", True),
        (("/healthz",), "/healthz/etcd", False),
        (("/healthz*",), "/healthz/etcd", True),
        (("/healthz/*",), "/healthz", False),
        (("/healthz/*",), "/healthz/", True),
        (("*",), "/anything", True),
        (("/logs**",), "/logsx", True),  # Go trims every trailing *
        (("/api",), "/apis", False),
        ((), "/healthz", False),
    ],
)
def test_non_resource_url_matches(urls, path, expected):
    assert non_resource_url_matches(PolicyRule(non_resource_urls=urls), path) is expected


READ_PODS = PolicyRule(verbs=("get", "list", "watch"), api_groups=("",), resources=("pods", "pods/log"))
EXEC_WEB = PolicyRule(verbs=("create",), api_groups=("",), resources=("pods/exec",), resource_names=("web",))
HEALTH = PolicyRule(verbs=("get",), non_resource_urls=("/healthz", "/livez*"))


@pytest.mark.parametrize(
    ("rule", "req", "expected"),
    [
        (READ_PODS, {"verb": "get", "resource": "pods", "name": "a"}, True),
        (READ_PODS, {"verb": "list", "resource": "pods"}, True),
        (READ_PODS, {"verb": "get", "resource": "pods", "subresource": "log", "name": "a"}, True),
        (READ_PODS, {"verb": "get", "resource": "pods", "subresource": "exec", "name": "a"}, False),
        (READ_PODS, {"verb": "delete", "resource": "pods", "name": "a"}, False),
        (READ_PODS, {"verb": "get", "api_group": "apps", "resource": "pods"}, False),
        (EXEC_WEB, {"verb": "create", "resource": "pods", "subresource": "exec", "name": "web"}, True),
        (EXEC_WEB, {"verb": "create", "resource": "pods", "subresource": "exec", "name": "db"}, False),
        (EXEC_WEB, {"verb": "get", "resource": "pods", "subresource": "exec", "name": "web"}, False),
        (HEALTH, {"verb": "get", "is_resource_request": False, "path": "/healthz"}, True),
        (HEALTH, {"verb": "get", "is_resource_request": False, "path": "/livez/ping"}, True),
        (HEALTH, {"verb": "post", "is_resource_request": False, "path": "/healthz"}, False),
        (HEALTH, {"verb": "get", "resource": "pods"}, False),  # a non-resource rule grants no resource
        (READ_PODS, {"verb": "get", "is_resource_request": False, "path": "/healthz"}, False),
    ],
)
def test_rule_allows(rule, req, expected):
    req = {"is_resource_request": True, **req}
    assert rule_allows(rule, **req) is expected


def test_rules_allow_is_any_of_the_rules():
    request = {"is_resource_request": True, "verb": "create", "resource": "pods", "subresource": "exec", "name": "web"}
    assert rules_allow([READ_PODS, EXEC_WEB], **request)
    assert not rules_allow([READ_PODS], **request)
    assert not rules_allow([], **request)
