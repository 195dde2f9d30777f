"""A policy's Kubernetes rules compiled into matchers, and their SelfSubjectRulesReview form.

Rule matching follows RBAC (`connector.kube.rbac` documents it) with the policy format's additions:
`prefix*` globs, a `namespaces` list (a request without a namespace matches only `*`), and the
privileged verbs (impersonate, escalate, bind) that a `*` verb grants only with
`allow_privileged_verbs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from connector.kube.requestinfo import RequestInfo
from connector.policy.matchers import NameMatcher
from connector.policy.model import NON_RESOURCE_VERBS, PRIVILEGED_VERBS, RESOURCE_VERBS, Rule

# Streams into a pod are `create` whatever the HTTP method, as the apiserver's websocket upgrade
# check does: kubectl >= 1.30 opens exec with a GET, which must not make `get` enough.
CREATE_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
_STAR_VERBS_UNPRIVILEGED = [v for v in RESOURCE_VERBS if v not in PRIVILEGED_VERBS]


def effective_verb(info: RequestInfo) -> str:
    if info.is_resource_request and info.subresource in CREATE_SUBRESOURCES:
        return "create"
    return info.verb


def stream_request_info(info: RequestInfo) -> RequestInfo:
    """The request as the policy decides it when it asks for a protocol upgrade (websocket, SPDY/3.1).

    A stream through a `proxy` subresource (or the legacy `proxy` path verb) is decided as `create`,
    like exec. The kubelet serves /exec, /attach, /run and /portForward to a websocket GET, and the
    API server authorizes that GET through `nodes/NAME/proxy` as `get`: a rule meant to let a
    monitoring agent read kubelet metrics would otherwise run commands in every pod on the node
    (the Kubernetes documentation's `nodes/proxy` warning). The same holds for a pod's or service's
    proxy, which reach whatever listens behind them. Plain proxied requests keep the apiserver's verb.
    """
    if info.is_resource_request and "proxy" in (info.verb, info.subresource):
        return dataclasses.replace(info, verb="create")
    return info


def _glob(pattern: str) -> Callable[[str], bool]:
    if pattern == "*":
        return lambda value: True
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda value: value.startswith(prefix)
    return lambda value: value == pattern


@dataclass(frozen=True, slots=True)
class _ResourceMatcher:
    """`resource` or `resource/subresource` patterns; `*` alone matches everything, as in RBAC."""

    match_all: bool
    exact: frozenset[str]  # combined `resource[/subresource]` strings without wildcards
    globs: tuple[tuple[Callable[[str], bool], Callable[[str], bool] | None], ...]

    @classmethod
    def compile(cls, patterns: tuple[str, ...]) -> _ResourceMatcher:
        globs = []
        for p in patterns:
            if "*" in p and p != "*":
                resource, _, sub = p.partition("/")
                globs.append((_glob(resource), _glob(sub) if sub else None))
        return cls(
            match_all="*" in patterns,
            exact=frozenset(p for p in patterns if "*" not in p),
            globs=tuple(globs),
        )

    def __call__(self, resource: str, subresource: str) -> bool:
        if self.match_all:
            return True
        if (f"{resource}/{subresource}" if subresource else resource) in self.exact:
            return True
        for resource_ok, sub_ok in self.globs:
            if subresource:
                if sub_ok is not None and resource_ok(resource) and sub_ok(subresource):
                    return True
            elif sub_ok is None and resource_ok(resource):
                return True
        return False


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    rule: Rule
    verbs: frozenset[str]
    star_verb: bool
    namespaces: NameMatcher
    api_groups: NameMatcher
    resources: _ResourceMatcher
    names: NameMatcher
    urls: tuple[str, ...]

    @classmethod
    def compile(cls, index: int, rule: Rule) -> CompiledRule:
        return cls(
            index=index,
            rule=rule,
            verbs=frozenset(rule.verbs) - {"*"},
            star_verb="*" in rule.verbs,
            namespaces=NameMatcher.compile(rule.namespaces),
            api_groups=NameMatcher.compile(rule.api_groups),
            resources=_ResourceMatcher.compile(rule.resources),
            names=NameMatcher.compile(rule.resource_names),
            urls=rule.non_resource_urls,
        )

    def verb_ok(self, verb: str) -> bool:
        if verb in self.verbs:
            return True
        if not self.star_verb or not verb:
            return False
        return verb not in PRIVILEGED_VERBS or self.rule.allow_privileged_verbs

    def namespace_ok(self, namespace: str) -> bool:
        # No namespace = cluster-scoped or across all namespaces: only a rule for every namespace covers it.
        return self.namespaces.match_all if not namespace else self.namespaces(namespace)

    def allows(self, info: RequestInfo, verb: str) -> bool:
        return self.verb_ok(verb) and self.matches(info)

    def matches(self, info: RequestInfo) -> bool:
        """Everything but the verb, which `RuleSet` has already sorted rules by."""
        return self.matches_kind(info) and self.matches_object(info)

    def matches_kind(self, info: RequestInfo) -> bool:
        """The part of `matches` that `request_shape` determines: the URL of a non-resource request, the
        API group and resource of a resource request."""
        if not info.is_resource_request:
            return bool(self.urls) and _url_ok(self.urls, info.path)
        return not self.urls and self.resources(info.resource, info.subresource) and self.api_groups(info.api_group)

    def matches_object(self, info: RequestInfo) -> bool:
        """The rest of `matches`: the namespace and name of a resource request (nothing for a URL)."""
        if not info.is_resource_request:
            return True
        # An empty name (list, create) matches only a rule for every name, as in RBAC.
        return self.namespace_ok(info.namespace) and (
            self.names.match_all or (info.name != "" and self.names(info.name))
        )

    def review_form(self) -> dict[str, Any]:
        """This rule as an authorization.k8s.io/v1 ResourceRule or NonResourceRule."""
        verbs = list(self.rule.verbs)
        if self.urls:
            return {"verbs": verbs, "nonResourceURLs": list(self.urls)}
        if self.star_verb and not self.rule.allow_privileged_verbs:
            # `*` here means every verb but the privileged ones; spell that out rather than mislead.
            verbs = _STAR_VERBS_UNPRIVILEGED + sorted(self.verbs & PRIVILEGED_VERBS)
        out: dict[str, Any] = {
            "verbs": verbs,
            "apiGroups": list(self.rule.api_groups),
            "resources": list(self.rule.resources),
        }
        if not self.names.match_all:
            out["resourceNames"] = list(self.rule.resource_names)
        return out


def _url_ok(urls: tuple[str, ...], path: str) -> bool:
    for url in urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def request_shape(info: RequestInfo) -> tuple[str, ...]:
    """What `CompiledRule.matches_kind` and the verb depend on: two requests of one shape are matched
    by the same rules up to their namespace and name. Discovery is a matter of verb and path too."""
    if not info.is_resource_request:
        return (info.verb, info.path)
    return (effective_verb(info), info.api_group, info.resource, info.subresource)


def describe_request(info: RequestInfo, verb: str) -> str:
    """`create pods/exec "web-1" in namespace dev`, as the denied user should read it."""
    if not info.is_resource_request:
        return f"{verb} {info.path}"
    what = info.resource + (f".{info.api_group}" if info.api_group else "")
    if info.subresource:
        what += f"/{info.subresource}"
    if info.name:
        what += f' "{info.name}"'
    where = f"in namespace {info.namespace}" if info.namespace else "cluster-wide"
    return f"{verb or info.verb or '(no verb)'} {what} {where}"


class RuleSet:
    """A policy's rules, pre-sorted by the verbs they grant so a decision only looks at candidates."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.rules = tuple(CompiledRule.compile(i, r) for i, r in enumerate(rules))
        verbs = {*RESOURCE_VERBS, *NON_RESOURCE_VERBS, ""}
        self._by_verb = {v: tuple(r for r in self.rules if r.verb_ok(v)) for v in verbs}

    def __len__(self) -> int:
        return len(self.rules)

    def first_match(self, info: RequestInfo, verb: str, approved: bool = False) -> CompiledRule | None:
        """The first rule, in file order, that allows the request. Without `approved`, rules with
        `requires_approval` are passed over (see `gated_match`)."""
        for rule in self._matching(info, verb):
            if approved or not rule.rule.requires_approval:
                return rule
        return None

    def gated_match(self, info: RequestInfo, verb: str) -> CompiledRule | None:
        """The first `requires_approval` rule that would allow the request once approved."""
        return next((r for r in self._matching(info, verb) if r.rule.requires_approval), None)

    def kind_matches(self, info: RequestInfo, verb: str) -> tuple[CompiledRule, ...]:
        """The rules, in file order and without `requires_approval` ones, that allow this verb on this
        request's kind (`CompiledRule.matches_kind`): the same for every request of one `request_shape`."""
        return tuple(r for r in self._for_verb(verb) if not r.rule.requires_approval and r.matches_kind(info))

    def _for_verb(self, verb: str) -> tuple[CompiledRule, ...]:
        candidates = self._by_verb.get(verb)
        if candidates is None:  # a verb no config names (an odd HTTP method): only `*` rules can match
            candidates = tuple(r for r in self.rules if r.verb_ok(verb))
        return candidates

    def _matching(self, info: RequestInfo, verb: str) -> Iterator[CompiledRule]:
        return (rule for rule in self._for_verb(verb) if rule.matches(info))
