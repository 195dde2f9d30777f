"""The ClusterRole and ClusterRoleBinding that give the connector's Kubernetes group its permissions.

Border0's option (c): a dedicated group bound to a dedicated ClusterRole. The rules are either
`full` (Border0's recommended `*`/`*`/`*`: the connector's own policies then decide what each user
may do), `read-only`, or a custom list. Pure manifest builders (plain dicts, no Pulumi), shared by
the Pulumi program, `python -m infra render` and the sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.kube.rbac import PolicyRule

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
# Two different grants, so two different names: applying one must never replace the other (it did:
# the rendered binding replaced the mapped group's subject and cut every user off).
GROUP_ACCESS_NAME = "eks-access-connector-cluster-access"  # the group the connector's IAM role is mapped to
IN_CLUSTER_NAME = "eks-access-connector-in-cluster"  # the service account of a connector in its own cluster
SYSTEM_MASTERS = "system:masters"  # Border0's option (a): cluster-admin, no RBAC objects of ours
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_PULUMI = "pulumi"
MANAGED_BY_RENDER = "infra-render"  # `python -m infra render`, applied with kubectl
LABELS = {"app.kubernetes.io/name": "eks-access-connector", "app.kubernetes.io/component": "cluster-access"}

# nonResourceURLs too, so `kubectl get --raw /healthz` (or any non-resource path) through a socket
# reaches the cluster whenever the user's policy allows it.
FULL_ACCESS: tuple[PolicyRule, ...] = (
    PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)),
    PolicyRule(verbs=("*",), non_resource_urls=("*",)),
)
READ_ONLY: tuple[PolicyRule, ...] = (PolicyRule(verbs=("get", "list", "watch"), api_groups=("*",), resources=("*",)),)
PRESETS = {"full": FULL_ACCESS, "read-only": READ_ONLY}


def check_rule(rule: PolicyRule) -> None:
    """The API server's own validation of a ClusterRole rule, so a bad rule fails at preview time."""
    if not rule.verbs:
        raise ValueError("an RBAC rule needs at least one verb")
    if rule.non_resource_urls and (rule.resources or rule.api_groups or rule.resource_names):
        raise ValueError("an RBAC rule with nonResourceURLs cannot also have apiGroups, resources or resourceNames")
    if not rule.non_resource_urls and not rule.resources:
        raise ValueError("an RBAC rule needs resources (with apiGroups) or nonResourceURLs")
    if rule.resources and not rule.api_groups:
        raise ValueError('an RBAC rule with resources needs apiGroups (use "" for the core group, "*" for all)')
    for url in rule.non_resource_urls:
        if not url.startswith("/") and url != "*":
            raise ValueError(f"nonResourceURL {url!r} must start with '/' (or be '*')")


def rule_manifest(rule: PolicyRule) -> dict[str, Any]:
    """A PolicyRule as it appears in a ClusterRole: only the lists that are set."""
    check_rule(rule)
    out: dict[str, Any] = {}
    if rule.api_groups:
        out["apiGroups"] = list(rule.api_groups)
    if rule.resources:
        out["resources"] = list(rule.resources)
    if rule.resource_names:
        out["resourceNames"] = list(rule.resource_names)
    if rule.non_resource_urls:
        out["nonResourceURLs"] = list(rule.non_resource_urls)
    out["verbs"] = list(rule.verbs)
    return out


def group_subject(group: str) -> dict[str, str]:
    """The subject for a group that an IAM role is mapped to (aws-auth or an EKS access entry)."""
    if not group or group.startswith("system:"):
        raise ValueError(f"group {group!r}: bind a non-empty group outside the reserved system: prefix")
    return {"kind": "Group", "name": group, "apiGroup": RBAC_GROUP}


def service_account_subject(name: str, namespace: str) -> dict[str, str]:
    """The subject for a connector that reaches its own cluster with its service account."""
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def _metadata(name: str, managed_by: str) -> dict[str, Any]:
    return {"name": name, "labels": {**LABELS, MANAGED_BY: managed_by}}


def cluster_role(rules: Sequence[PolicyRule], name: str, managed_by: str) -> dict[str, Any]:
    if not rules:
        raise ValueError("the connector's ClusterRole needs at least one rule")
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": _metadata(name, managed_by),
        "rules": [rule_manifest(rule) for rule in rules],
    }


def cluster_role_binding(subject: dict[str, str], name: str, managed_by: str) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name, managed_by),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [subject],
    }


def rbac_manifests(rules: Sequence[PolicyRule], subject: dict[str, str], name: str, managed_by: str) -> list[dict]:
    """ClusterRole + ClusterRoleBinding, in the order they must be applied."""
    return [cluster_role(rules, name, managed_by), cluster_role_binding(subject, name, managed_by)]


def group_access_manifests(rules: Sequence[PolicyRule], group: str, managed_by: str = MANAGED_BY_PULUMI) -> list[dict]:
    """The grant of the group the connector's IAM role is mapped to (aws-auth or an access entry)."""
    return rbac_manifests(rules, group_subject(group), GROUP_ACCESS_NAME, managed_by)


def in_cluster_manifests(rules: Sequence[PolicyRule], service_account: str, namespace: str) -> list[dict]:
    """The grant of a connector's service account in the cluster it runs in (`python -m infra render`)."""
    subject = service_account_subject(service_account, namespace)
    return rbac_manifests(rules, subject, IN_CLUSTER_NAME, MANAGED_BY_RENDER)
