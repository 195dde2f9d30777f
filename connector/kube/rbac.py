"""Kubernetes RBAC `PolicyRule` matching, with the exact semantics of kube-apiserver's RBAC authorizer.

This mirrors `RuleAllows` in `plugin/pkg/auth/authorizer/rbac` and the `VerbMatches`,
`APIGroupMatches`, `ResourceMatches`, `ResourceNameMatches` and `NonResourceURLMatches` helpers it
calls, so that a rule means here what it means in a cluster. It takes plain strings and tuples
(not connector types) because the emulated API server of the sandbox authorizes with it too.

Notable RBAC semantics, kept on purpose:
- `*` matches any verb, API group or resource, but resources match `resource/subresource`
  combined: `pods` does not grant `pods/exec`; `*/exec` grants the `exec` subresource of anything.
- An empty `resource_names` means every name; a non-empty one never matches a request without a
  name (a list, a create), because the empty name is not in the list.
- A non-resource URL ending in `*` is a prefix match (`/healthz*` matches `/healthz/etcd`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VERB_ALL = "*"
API_GROUP_ALL = "*"
RESOURCE_ALL = "*"
NON_RESOURCE_ALL = "*"


@dataclass(frozen=True)
class PolicyRule:
    """One `rbac.authorization.k8s.io/v1` PolicyRule: the lists a Role or ClusterRole holds."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()


def verb_matches(rule: PolicyRule, verb: str) -> bool:
    return any(v == VERB_ALL or v == verb for v in rule.verbs)


def api_group_matches(rule: PolicyRule, group: str) -> bool:
    return any(g == API_GROUP_ALL or g == group for g in rule.api_groups)


def resource_matches(rule: PolicyRule, resource: str, subresource: str) -> bool:
    """Match `resource` (already combined as `resource/subresource` when there is one).

    Callers pass the combined form as RBAC does; `subresource` alone is what `*/subresource`
    rules are compared with.
    """
    for r in rule.resources:
        if r == RESOURCE_ALL or r == resource:
            return True
        if subresource and r.startswith("*/") and r[2:] == subresource:
            return True
    return False


def resource_name_matches(rule: PolicyRule, name: str) -> bool:
    if not rule.resource_names:
        return True
    return name in rule.resource_names


def non_resource_url_matches(rule: PolicyRule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url == NON_RESOURCE_ALL or url == path:
            return True
        # Go's strings.TrimRight removes every trailing `*`, so `/a**` is the prefix `/a` too.
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(
    rule: PolicyRule,
    *,
    is_resource_request: bool,
    verb: str,
    api_group: str = "",
    resource: str = "",
    subresource: str = "",
    name: str = "",
    path: str = "",
) -> bool:
    """Whether `rule` allows the request, as RBAC's `RuleAllows` decides it."""
    if is_resource_request:
        combined = f"{resource}/{subresource}" if subresource else resource
        return (
            verb_matches(rule, verb)
            and api_group_matches(rule, api_group)
            and resource_matches(rule, combined, subresource)
            and resource_name_matches(rule, name)
        )
    return verb_matches(rule, verb) and non_resource_url_matches(rule, path)


def rules_allow(
    rules: Iterable[PolicyRule],
    *,
    is_resource_request: bool,
    verb: str,
    api_group: str = "",
    resource: str = "",
    subresource: str = "",
    name: str = "",
    path: str = "",
) -> bool:
    """Whether any of `rules` allows the request (RBAC's `RulesAllow`)."""
    return any(
        rule_allows(
            rule,
            is_resource_request=is_resource_request,
            verb=verb,
            api_group=api_group,
            resource=resource,
            subresource=subresource,
            name=name,
            path=path,
        )
        for rule in rules
    )
