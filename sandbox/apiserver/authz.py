"""Authorization: kube-apiserver's privileged-group authorizer followed by RBAC over the stored objects.

`system:masters` may do anything. Everyone else gets what the stored ClusterRoleBindings (and, in
the request's namespace, RoleBindings) grant through their roles, with RBAC's rule semantics from
`connector.kube.rbac`. A binding whose role is missing grants nothing and is reported in the
denial reason (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`), as RBAC does.
Denials are worded as kube-apiserver words them:
`pods "web" is forbidden: User "bob" cannot delete resource "pods" in API group "" in the namespace "default"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connector.kube.rbac import PolicyRule, rule_allows
from sandbox.apiserver import catalog
from sandbox.apiserver.authn import MASTERS, UserInfo
from sandbox.apiserver.errors import ApiError, forbidden
from sandbox.apiserver.store import Store

_RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Attributes:
    """`authorizer.Attributes`: who wants to do what."""

    user: UserInfo
    verb: str
    is_resource_request: bool
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class _Grant:
    """Rules reachable through one binding subject, and how RBAC describes where they came from."""

    source: str
    rules: tuple[PolicyRule, ...]
    resource_only: bool  # a RoleBinding never grants non-resource URLs


def policy_rule(rule: dict[str, Any]) -> PolicyRule:
    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(x) for x in rule.get(key) or ())

    return PolicyRule(
        verbs=strings("verbs"),
        api_groups=strings("apiGroups"),
        resources=strings("resources"),
        resource_names=strings("resourceNames"),
        non_resource_urls=strings("nonResourceURLs"),
    )


def _describe_subject(subject: dict[str, Any], namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("namespace") or namespace}/{subject.get("name")}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _applies_to(subject: dict[str, Any], user: UserInfo, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user.name == f"system:serviceaccount:{sa_namespace}:{name}"
    return False


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _type(self, plural: str) -> catalog.ResourceType:
        rt = catalog.lookup(_RBAC, "v1", plural)
        assert rt is not None
        return rt

    def _grants(self, user: UserInfo, namespace: str, errors: list[str]) -> Iterator[_Grant]:
        """The rules that apply to `user` in `namespace`, in RBAC's visiting order."""
        cluster_roles = self._type("clusterroles")
        for binding in self._store.list(self._type("clusterrolebindings")):
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if not _applies_to(subject, user, ""):
                    continue
                role = self._store.get(cluster_roles, "", str(ref.get("name", "")))
                if role is None:
                    errors.append(f'clusterrole.rbac.authorization.k8s.io "{ref.get("name")}" not found')
                    break
                yield _Grant(
                    f'ClusterRoleBinding "{binding["metadata"]["name"]}" of ClusterRole "{ref.get("name")}" to '
                    f"{_describe_subject(subject, '')}",
                    tuple(policy_rule(r) for r in role.get("rules") or [] if isinstance(r, dict)),
                    resource_only=False,
                )
                break
        if not namespace:
            return
        roles = self._type("roles")
        for binding in self._store.list(self._type("rolebindings"), namespace):
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if not _applies_to(subject, user, namespace):
                    continue
                kind, role_name = ref.get("kind"), str(ref.get("name", ""))
                role = (self._store.get(cluster_roles, "", role_name) if kind == "ClusterRole"
                        else self._store.get(roles, namespace, role_name))
                if role is None:
                    errors.append(f'{str(kind).lower()}.rbac.authorization.k8s.io "{role_name}" not found')
                    break
                yield _Grant(
                    f'RoleBinding "{binding["metadata"]["name"]}/{namespace}" of {kind} "{role_name}" to '
                    f"{_describe_subject(subject, namespace)}",
                    tuple(policy_rule(r) for r in role.get("rules") or [] if isinstance(r, dict)),
                    resource_only=True,
                )
                break

    def authorize(self, attrs: Attributes) -> Decision:
        if MASTERS in attrs.user.groups:
            return Decision(True)
        errors: list[str] = []
        for grant in self._grants(attrs.user, attrs.namespace, errors):
            if grant.resource_only and not attrs.is_resource_request:
                continue
            for rule in grant.rules:
                if rule_allows(
                    rule,
                    is_resource_request=attrs.is_resource_request,
                    verb=attrs.verb,
                    api_group=attrs.api_group,
                    resource=attrs.resource,
                    subresource=attrs.subresource,
                    name=attrs.name,
                    path=attrs.path,
                ):
                    return Decision(True, f"RBAC: allowed by {grant.source}")
        if not errors:
            return Decision(False)
        aggregate = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        return Decision(False, f"RBAC: {aggregate}")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        """(resourceRules, nonResourceRules, evaluationError) for a SelfSubjectRulesReview."""
        errors: list[str] = []
        resource_rules: list[dict[str, Any]] = []
        non_resource_rules: list[dict[str, Any]] = []
        for grant in self._grants(user, namespace, errors):
            for rule in grant.rules:
                if rule.non_resource_urls:
                    if not grant.resource_only:
                        non_resource_rules.append({"verbs": list(rule.verbs),
                                                   "nonResourceURLs": list(rule.non_resource_urls)})
                    continue
                entry: dict[str, Any] = {"verbs": list(rule.verbs), "apiGroups": list(rule.api_groups),
                                         "resources": list(rule.resources)}
                if rule.resource_names:
                    entry["resourceNames"] = list(rule.resource_names)
                resource_rules.append(entry)
        return resource_rules, non_resource_rules, "; ".join(errors)


def forbidden_message(attrs: Attributes) -> str:
    """kube-apiserver's `forbiddenMessage`: `User "bob" cannot list resource "pods" in API group ...`."""
    user = attrs.user.name
    if not attrs.is_resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if attrs.namespace:
        return (f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
                f'in the namespace "{attrs.namespace}"')
    return (f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
            "at the cluster scope")


def forbidden_error(attrs: Attributes, reason: str) -> ApiError:
    why = forbidden_message(attrs)
    if reason:
        why = f"{why}: {reason}"
    return forbidden(attrs.resource if attrs.is_resource_request else "", attrs.api_group, attrs.name, why)
