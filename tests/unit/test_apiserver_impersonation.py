"""Impersonate-* headers at the emulated API server: allowed only with the impersonate verb, as kube does."""

from __future__ import annotations

import pytest

from sandbox.apiserver.authn import UserInfo
from sandbox.apiserver.authz import Authorizer
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.impersonation import impersonate, read_headers
from sandbox.apiserver.store import Store
from tests.support.apiserver import RBAC, can, rbac_store


@pytest.fixture
def store() -> Store:
    return rbac_store()


def allow_impersonation(store: Store, rules: list[dict]) -> None:
    store.apply({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "impersonator"}, "rules": rules})
    store.apply({"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "impersonator"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
                 "subjects": [{"kind": "User", "name": "connector"}]})


CONNECTOR = UserInfo("connector", groups=("system:authenticated",))


def test_impersonation_needs_the_impersonate_verb_on_each_thing(store: Store) -> None:
    asked = read_headers([("Impersonate-User", "alice"), ("Impersonate-Group", "developers"),
                          ("Impersonate-Extra-Scopes", "read")])
    with pytest.raises(ApiError) as refused:
        impersonate(CONNECTOR, asked, Authorizer(store), "/api/v1/pods")
    assert (refused.value.code, refused.value.message) == (
        403, 'users "alice" is forbidden: User "connector" cannot impersonate resource "users" in API group "" at '
             "the cluster scope")
    allow_impersonation(store, [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}])
    with pytest.raises(ApiError) as groups_refused:
        impersonate(CONNECTOR, asked, Authorizer(store), "/api/v1/pods")
    assert groups_refused.value.message.startswith('groups "developers" is forbidden')
    allow_impersonation(store, [
        {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/scopes"], "verbs": ["impersonate"]},
    ])
    user = impersonate(CONNECTOR, asked, Authorizer(store), "/api/v1/pods")
    assert (user.name, user.groups, dict(user.extra)) == (
        "alice", ("developers", "system:authenticated"), {"scopes": ("read",)})


def test_impersonating_a_service_account(store: Store) -> None:
    allow_impersonation(store, [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}])
    user = impersonate(CONNECTOR, read_headers([("Impersonate-User", "system:serviceaccount:dev:ci")]),
                       Authorizer(store), "/api")
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:dev", "system:authenticated")


def test_groups_without_a_user_is_an_error(store: Store) -> None:
    with pytest.raises(ApiError) as error:
        impersonate(CONNECTOR, read_headers([("Impersonate-Group", "system:masters")]), Authorizer(store), "/api")
    assert error.value.code == 500
    assert "without impersonating a user" in error.value.message


def test_impersonated_users_are_authorized_as_themselves(store: Store) -> None:
    allow_impersonation(store, [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}])
    bob = impersonate(CONNECTOR, read_headers([("Impersonate-User", "bob"), ("Impersonate-Group", "developers")]),
                      Authorizer(store), "/api")
    assert can(store, bob, "create", "pods", "dev", sub="exec", name="web")
    assert not can(store, CONNECTOR, "create", "pods", "dev", sub="exec", name="web")
