"""RBAC of the emulated API server: bindings, roles, superusers, denial wording, rules reviews."""

from __future__ import annotations

import pytest

from sandbox.apiserver.authn import UserInfo
from sandbox.apiserver.authz import Attributes, Authorizer, forbidden_error
from sandbox.apiserver.store import Store
from tests.support.apiserver import BOB, RBAC, can, rbac_store


@pytest.fixture
def store() -> Store:
    return rbac_store()


def test_role_bindings_grant_only_in_their_namespace(store: Store) -> None:
    assert can(store, BOB, "create", "pods", "dev", sub="exec", name="web")
    assert not can(store, BOB, "create", "pods", "default", sub="exec", name="web")
    assert can(store, BOB, "list", "pods", "default")  # via the view ClusterRole bound in default
    assert not can(store, BOB, "delete", "pods", "default", name="web")
    assert not can(store, BOB, "list", "pods")  # cluster-wide list needs a ClusterRoleBinding
    assert can(store, BOB, "get", "configmaps", "dev", name="settings")
    assert not can(store, BOB, "get", "configmaps", "dev", name="other")
    assert not can(store, BOB, "list", "configmaps", "dev")  # resourceNames never match a list


def test_pods_do_not_grant_subresources(store: Store) -> None:
    assert can(store, BOB, "get", "pods", "dev", name="web")
    assert not can(store, BOB, "get", "pods", "dev", sub="log", name="web")


def test_masters_are_superusers_and_discovery_is_public(store: Store) -> None:
    admin = UserInfo("kubernetes-admin", groups=("system:masters", "system:authenticated"))
    assert can(store, admin, "delete", "nodes", name="anything")
    authorizer = Authorizer(store)
    discovery = Attributes(BOB, "get", False, path="/apis/apps/v1")
    assert authorizer.authorize(discovery).allowed
    anonymous = UserInfo("system:anonymous", groups=("system:unauthenticated",))
    assert authorizer.authorize(Attributes(anonymous, "get", False, path="/version")).allowed
    assert not authorizer.authorize(Attributes(anonymous, "get", False, path="/api")).allowed


def test_service_account_subjects(store: Store) -> None:
    store.apply({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "ci", "namespace": "dev"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                 "subjects": [{"kind": "ServiceAccount", "name": "ci"}]})  # namespace defaults to the binding's
    ci = UserInfo("system:serviceaccount:dev:ci", groups=("system:serviceaccounts", "system:authenticated"))
    other = UserInfo("system:serviceaccount:default:ci", groups=("system:serviceaccounts", "system:authenticated"))
    assert can(store, ci, "delete", "deployments", "dev", name="web", group="apps")
    assert not can(store, other, "delete", "deployments", "dev", name="web", group="apps")


def test_decisions_explain_themselves(store: Store) -> None:
    authorizer = Authorizer(store)
    allowed = authorizer.authorize(Attributes(BOB, "create", True, namespace="dev", resource="pods",
                                              subresource="exec", name="web"))
    assert allowed.reason == 'RBAC: allowed by RoleBinding "devs-exec/dev" of Role "exec" to Group "developers"'
    store.apply({"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "dangling"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                 "subjects": [{"kind": "User", "name": "bob"}]})
    denied = authorizer.authorize(Attributes(BOB, "delete", True, namespace="default", resource="pods", name="web"))
    assert not denied.allowed
    assert denied.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (Attributes(BOB, "delete", True, namespace="default", resource="pods", name="web"),
         'pods "web" is forbidden: User "bob" cannot delete resource "pods" in API group "" in the namespace '
         '"default"'),
        (Attributes(BOB, "list", True, api_group="apps", resource="deployments"),
         'deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" at the '
         "cluster scope"),
        (Attributes(BOB, "create", True, namespace="default", resource="pods", subresource="exec", name="web"),
         'pods "web" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" in the namespace '
         '"default"'),
        (Attributes(BOB, "get", False, path="/metrics"), 'forbidden: User "bob" cannot get path "/metrics"'),
    ],
)
def test_forbidden_messages(attrs: Attributes, message: str) -> None:
    error = forbidden_error(attrs, "")
    assert (error.code, error.message) == (403, message)
    assert error.body()["reason"] == "Forbidden"


def test_rules_review_lists_what_applies_in_the_namespace(store: Store) -> None:
    resource_rules, non_resource_rules, error = Authorizer(store).rules_for(BOB, "dev")
    assert {"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods", "pods/exec"]} in resource_rules
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": ["settings"]} in resource_rules
    assert any("/apis" in r["nonResourceURLs"] for r in non_resource_rules)
    assert error == ""
    in_default, _, _ = Authorizer(store).rules_for(BOB, "default")
    assert not any("pods/exec" in r["resources"] for r in in_default)
