"""The decision engine: may this identity make this Kubernetes request on this socket, now?

`PolicyEngine` compiles the policies once (globs to matchers, CIDRs to networks, zones loaded) and
indexes them by socket name and by subject, so that `decide()` does no I/O and touches only the
policies that name both the caller and the socket. Semantics (also in the README):

- no policy names the caller (user, one of their groups, or `*`) and the socket -> deny;
- a policy applies only while all its `conditions` hold;
- `kubernetes` with no `rules` allows everything on the socket, `rules: []` allows nothing, a
  policy without `kubernetes` grants no Kubernetes access;
- allows from all applying policies are OR'ed; the first allowing policy and rule, in file order,
  are reported;
- discovery (`/api`, `/apis`, `/version`, `/openapi/...`, read-only) is allowed to anyone who may
  use the socket, so that kubectl works at all;
- a `grant_only` policy applies only when `grants` (policy name -> access request id, computed by
  `connector.policy.access`) names it, and a rule with `requires_approval` allows only then; a
  denial that a grant would have turned into an allow lists those policies in `needs_grant`, so the
  caller can be told which access request to file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo
from connector.policy.conditions import CompiledConditions
from connector.policy.matchers import SocketMatcher
from connector.policy.model import ConsoleRights, Policy
from connector.policy.rules import CompiledRule, RuleSet, describe_request, effective_verb

DISCOVERY_PATHS = frozenset({"/api", "/apis", "/version"})
DISCOVERY_PREFIXES = ("/api/", "/apis/", "/openapi/")
DISCOVERY_VERBS = frozenset({"get", "head"})
# How many policies a denial lists by name before summarizing: the message ends up in a terminal.
_MAX_LISTED = 5
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str | None
    rule: int | None
    reason: str
    # The approved access request this allow depended on, for the audit event.
    access_request: str | None = None
    # Policies that would have allowed this denied request under an approved access request.
    needs_grant: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyAtSocket:
    """A policy naming a subject and selecting a socket (the console's access matrix shows these)."""

    name: str
    grant_only: bool
    conditional: bool
    kubernetes: bool


@dataclass(frozen=True)
class RulesForNamespace:
    """What a caller may do in one namespace, for SelfSubjectRulesReview (`kubectl auth can-i --list`)."""

    resource_rules: list[dict[str, Any]] = field(default_factory=list)
    non_resource_rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _CompiledPolicy:
    index: int
    name: str
    sockets: SocketMatcher
    socket_tags: tuple[tuple[str, frozenset[str]], ...]
    conditions: CompiledConditions | None  # None when there is nothing to check
    kubernetes: bool
    rules: RuleSet | None  # None = everything
    grant_only: bool
    console: ConsoleRights | None

    def selects(self, socket_name: str, tags: Mapping[str, str]) -> bool:
        if self.sockets(socket_name):
            return True
        return bool(self.socket_tags) and all(tags.get(key) in values for key, values in self.socket_tags)

    def failure(self, source_ip: str, now: datetime) -> str | None:
        return None if self.conditions is None else self.conditions.failure(source_ip, now)


def _compile(index: int, policy: Policy) -> _CompiledPolicy:
    conditions = CompiledConditions.compile(policy.conditions)
    access = policy.kubernetes
    return _CompiledPolicy(
        index=index,
        name=policy.name,
        sockets=SocketMatcher.compile(policy.sockets),
        socket_tags=tuple((k, frozenset(v)) for k, v in policy.socket_tags.items()),
        conditions=None if conditions.trivial else conditions,
        kubernetes=access is not None,
        rules=None if access is None or access.rules is None else RuleSet(access.rules),
        grant_only=policy.grant_only,
        console=policy.console,
    )


# One rule as `CandidateSet.allowing` checks it, flattened so that the check is inline, without a call:
# (rule index, namespaces: match_all, exact, prefixes, resource names: match_all, exact, prefixes).
_FlatRule = tuple[int, bool, frozenset[str], tuple[str, ...], bool, frozenset[str], tuple[str, ...]]
# Policy index -> the rules of that policy that may allow a request of one shape (None: any request).
_Allowers = dict[int, tuple[_FlatRule, ...] | None]


def _flat(rule: CompiledRule) -> _FlatRule:
    ns, names = rule.namespaces, rule.names
    return (rule.index, ns.match_all, ns.exact, ns.prefixes, names.match_all, names.exact, names.prefixes)


class _ShapeIndex:
    """For each request shape (`request_shape`: verb, API group, resource, or the path of a URL), the
    policies that could allow a request of that shape without grants, with the rules that could:
    worked out once per shape over all policies, since a log holds few shapes (bounded all the same:
    shapes of non-resource requests come from paths)."""

    def __init__(self, policies: Sequence[_CompiledPolicy]):
        # Without grants, grant_only policies never apply and policies without `kubernetes` allow nothing.
        self._policies = tuple(p for p in policies if p.kubernetes and not p.grant_only)
        self._by_shape: dict[tuple[str, ...], _Allowers] = {}

    def allowers(self, info: RequestInfo, shape: tuple[str, ...]) -> _Allowers:
        found = self._by_shape.get(shape)
        if found is None:
            verb, discovery = effective_verb(info), is_discovery(info)
            found = {}
            for policy in self._policies:
                if discovery or policy.rules is None:
                    found[policy.index] = None
                else:
                    rules = policy.rules.kind_matches(info, verb)
                    if rules:
                        found[policy.index] = tuple(_flat(r) for r in rules)
            if len(self._by_shape) >= _CACHE_LIMIT:
                self._by_shape.clear()
            self._by_shape[shape] = found
        return found


# What a CandidateSet checks of one candidate policy for requests of one shape:
# (policy name, its conditions or None, the rules that may allow the shape or None for any request).
_Entry = tuple[str, CompiledConditions | None, tuple[_FlatRule, ...] | None]


class CandidateSet:
    """The policies naming one caller and one socket, for deciding many requests of that caller fast
    (`policy replay` decides millions).

    `allowing` gives exactly what `PolicyEngine.decide` reports for an allow without grants, or None
    for a denial, but not the denial's reason: the candidates that could allow a request of its shape
    are looked up once per shape, so a decision checks only the namespace, name and conditions of
    those few, in file order. The namespace and name checks are `CompiledRule.matches_object` written
    out inline (tests/unit/test_policy_candidate_set.py holds the two to the same answers): a call per
    rule was a third of a replay's time."""

    __slots__ = ("_by_shape", "_index", "_members")

    def __init__(self, ids: frozenset[int], policies: tuple[_CompiledPolicy, ...], index: _ShapeIndex):
        # (index, name, conditions) of each candidate, in file order.
        self._members = tuple((i, policies[i].name, policies[i].conditions) for i in sorted(ids))
        self._index = index
        self._by_shape: dict[tuple[str, ...], tuple[_Entry, ...]] = {}

    def allowing(
        self, info: RequestInfo, shape: tuple[str, ...], source_ip: str, now: datetime
    ) -> tuple[str, int | None] | None:
        """(policy, rule) of the allow `decide` gives without grants, or None; `shape` is
        `request_shape(info)`, which callers deciding the same request often compute once."""
        entries = self._by_shape.get(shape)
        if entries is None:
            entries = self._entries(info, shape)
        if not info.is_resource_request:  # a URL: its shape is all there is to match
            for name, conditions, rules in entries:
                if conditions is None or conditions.failure(source_ip, now) is None:
                    return name, None if rules is None else rules[0][0]
            return None
        namespace, object_name = info.namespace, info.name
        for name, conditions, rules in entries:
            rule_index = None
            if rules is not None:
                # rule_index is what the loop leaves behind at its break.
                for rule_index, ns_all, ns_exact, ns_prefixes, names_all, names_exact, names_prefixes in rules:  # noqa: B007
                    # No namespace (cluster-scoped, or all namespaces) matches only a rule for every
                    # namespace; no name (list, create) only a rule for every name, as in RBAC.
                    if (ns_all or (namespace and (namespace in ns_exact or namespace.startswith(ns_prefixes)))) and (
                        names_all
                        or (object_name and (object_name in names_exact or object_name.startswith(names_prefixes)))
                    ):
                        break
                else:
                    continue
            if conditions is None or conditions.failure(source_ip, now) is None:
                return name, rule_index
        return None

    def _entries(self, info: RequestInfo, shape: tuple[str, ...]) -> tuple[_Entry, ...]:
        allowers = self._index.allowers(info, shape)
        # A list comprehension: a log of many callers makes many (caller, shape) pairs, each built once.
        entries = tuple([(name, conditions, allowers[i]) for i, name, conditions in self._members if i in allowers])
        if len(self._by_shape) >= _CACHE_LIMIT:
            self._by_shape.clear()
        self._by_shape[shape] = entries
        return entries


def is_discovery(info: RequestInfo) -> bool:
    return (
        not info.is_resource_request
        and info.verb in DISCOVERY_VERBS
        and (info.path in DISCOVERY_PATHS or info.path.startswith(DISCOVERY_PREFIXES))
    )


class PolicyEngine:
    """Decides requests against a fixed set of policies. Build a new one when the config changes."""

    def __init__(self, policies: Sequence[Policy]):
        names = [p.name for p in policies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"policy names must be unique, repeated: {', '.join(duplicates)}")
        self._policies = tuple(_compile(i, p) for i, p in enumerate(policies))
        self._by_user: dict[str, set[int]] = {}
        self._by_group: dict[str, set[int]] = {}
        everyone: set[int] = set()
        self._by_socket: dict[str, set[int]] = {}
        self._socket_patterns: list[_CompiledPolicy] = []
        for compiled, policy in zip(self._policies, policies, strict=True):
            subjects = policy.subjects
            if "*" in subjects.users or "*" in subjects.groups:
                everyone.add(compiled.index)
            for user in subjects.users:
                self._by_user.setdefault(user, set()).add(compiled.index)
            for group in subjects.groups:
                self._by_group.setdefault(group, set()).add(compiled.index)
            if policy.socket_tags or any("*" in s for s in policy.sockets):
                self._socket_patterns.append(compiled)
            else:
                for name in policy.sockets:
                    self._by_socket.setdefault(name, set()).add(compiled.index)
        self._everyone = frozenset(everyone)
        self._subject_cache: dict[tuple[str, tuple[str, ...]], frozenset[int]] = {}
        self._socket_cache: dict[tuple[str, frozenset[tuple[str, str]]], frozenset[int]] = {}
        self._candidate_sets: dict[frozenset[int], CandidateSet] = {}
        self._shape_index: _ShapeIndex | None = None  # made on first use: the proxy never needs it

    @property
    def policy_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self._policies)

    def decide(
        self,
        identity: Identity,
        socket_name: str,
        socket_tags: Mapping[str, str],
        request_info: RequestInfo,
        source_ip: str,
        now: datetime,
        grants: Mapping[str, str] | None = None,
    ) -> Decision:
        _require_aware(now)
        grants = grants or {}
        candidates = self._candidates(identity, socket_name, socket_tags)
        if not candidates:
            return Decision(False, None, None, f"no policy grants {identity.user} access to socket {socket_name}")
        verb = effective_verb(request_info)
        discovery = is_discovery(request_info)
        denials: list[tuple[str, str]] = []
        needs_grant: list[str] = []
        for policy in candidates:
            grant = grants.get(policy.name)
            if policy.grant_only and grant is None:
                # Not applying; but say so when an approved request would have let this through.
                if (
                    policy.failure(source_ip, now) is None
                    and policy.kubernetes
                    and (policy.rules is None or policy.rules.first_match(request_info, verb, approved=True))
                ):
                    needs_grant.append(policy.name)
                    denials.append((policy.name, "applies only with an approved access request"))
                continue
            failure = policy.failure(source_ip, now)
            if failure is not None:
                denials.append((policy.name, failure))
            elif not policy.kubernetes:
                denials.append((policy.name, "grants no Kubernetes access"))
            elif discovery:
                return Decision(
                    True,
                    policy.name,
                    None,
                    f"allowed by policy {policy.name}: discovery is open to users of the socket",
                )
            elif policy.rules is None:
                return Decision(
                    True, policy.name, None, f"allowed by policy {policy.name}: all Kubernetes access", grant
                )
            else:
                rule = policy.rules.first_match(request_info, verb, approved=grant is not None)
                if rule is not None:
                    used = grant if policy.grant_only or rule.rule.requires_approval else None
                    reason = f"allowed by policy {policy.name} rule {rule.index}"
                    if used is not None:
                        reason += f" under access request {used}"
                    return Decision(True, policy.name, rule.index, reason, used)
                gated = policy.rules.gated_match(request_info, verb) if grant is None else None
                if gated is not None:
                    needs_grant.append(policy.name)
                    denials.append((policy.name, f"rule {gated.index} needs an approved access request"))
                else:
                    denials.append((policy.name, "allows nothing (rules: [])" if not policy.rules else ""))
        return Decision(
            False,
            None,
            None,
            _denial_reason(denials, describe_request(request_info, verb)),
            needs_grant=tuple(needs_grant),
        )

    def may_use_socket(
        self,
        identity: Identity,
        socket_name: str,
        socket_tags: Mapping[str, str],
        source_ip: str,
        now: datetime,
        grants: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether any policy currently grants this caller Kubernetes access to the socket at all."""
        _require_aware(now)
        return any(
            p.kubernetes and p.failure(source_ip, now) is None
            for p in self._applying(identity, socket_name, socket_tags, grants or {})
        )

    def console_rights(self, identity: Identity, source_ip: str, now: datetime) -> ConsoleRights:
        """The web console rights of the policies naming this caller whose conditions hold now."""
        _require_aware(now)
        rights = ConsoleRights()
        for index in sorted(self._subject_ids(identity)):
            policy = self._policies[index]
            if policy.console is not None and policy.failure(source_ip, now) is None:
                rights = rights.union(policy.console)
        return rights

    def named_subjects(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The users and the groups the policies name (`*` left out: it names everyone), sorted."""
        return tuple(sorted(u for u in self._by_user if u != "*")), tuple(sorted(g for g in self._by_group if g != "*"))

    def policies_at(self, identity: Identity, socket_name: str, socket_tags: Mapping[str, str]) -> list[PolicyAtSocket]:
        """The policies naming this caller and selecting this socket, in file order, whatever their
        conditions and grants: what may apply, for a reviewer to read (`decide` says what applies now)."""
        return [
            PolicyAtSocket(p.name, p.grant_only, p.conditions is not None, p.kubernetes)
            for p in self._candidates(identity, socket_name, socket_tags)
        ]

    def rules_for(
        self,
        identity: Identity,
        socket_name: str,
        socket_tags: Mapping[str, str],
        namespace: str,
        source_ip: str,
        now: datetime,
        grants: Mapping[str, str] | None = None,
    ) -> RulesForNamespace:
        """The rules that apply to the caller in `namespace` ("" = cluster-wide), as SelfSubjectRulesReview
        lists them. Conditions are evaluated at `now`."""
        _require_aware(now)
        resource_rules: list[dict[str, Any]] = []
        non_resource_rules: list[dict[str, Any]] = []
        grants = grants or {}
        for policy in self._applying(identity, socket_name, socket_tags, grants):
            if not policy.kubernetes or policy.failure(source_ip, now) is not None:
                continue
            if not non_resource_rules:
                non_resource_rules.append(
                    {
                        "verbs": sorted(DISCOVERY_VERBS),
                        "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi/*", "/version"],
                    }
                )
            if policy.rules is None:
                resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
                non_resource_rules.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
                continue
            for rule in policy.rules.rules:
                if rule.rule.requires_approval and policy.name not in grants:
                    continue
                if rule.urls:
                    non_resource_rules.append(rule.review_form())
                elif rule.namespace_ok(namespace):
                    resource_rules.append(rule.review_form())
        return RulesForNamespace(resource_rules=resource_rules, non_resource_rules=non_resource_rules)

    def candidate_set(self, identity: Identity, socket_name: str, socket_tags: Mapping[str, str]) -> CandidateSet:
        """The caller's policies on this socket, for deciding many of their requests (see CandidateSet).
        Callers named by the same policies share one, and so what it has indexed."""
        ids = self._subject_ids(identity) & self._socket_ids(socket_name, socket_tags)
        found = self._candidate_sets.get(ids)
        if found is None:
            if self._shape_index is None:
                self._shape_index = _ShapeIndex(self._policies)
            if len(self._candidate_sets) >= _CACHE_LIMIT:
                self._candidate_sets.clear()
            found = self._candidate_sets[ids] = CandidateSet(ids, self._policies, self._shape_index)
        return found

    def _candidates(
        self, identity: Identity, socket_name: str, socket_tags: Mapping[str, str]
    ) -> list[_CompiledPolicy]:
        """The policies naming both the caller and the socket, in file order."""
        ids = self._subject_ids(identity) & self._socket_ids(socket_name, socket_tags)
        return [self._policies[i] for i in sorted(ids)]

    def _applying(
        self, identity: Identity, socket_name: str, socket_tags: Mapping[str, str], grants: Mapping[str, str]
    ) -> list[_CompiledPolicy]:
        """The candidates minus the `grant_only` policies the caller holds no grant for."""
        return [p for p in self._candidates(identity, socket_name, socket_tags) if not p.grant_only or p.name in grants]

    def _subject_ids(self, identity: Identity) -> frozenset[int]:
        key = (identity.user, identity.groups)
        found = self._subject_cache.get(key)
        if found is None:
            ids = set(self._everyone)
            ids.update(self._by_user.get(identity.user, ()))
            for group in identity.groups:
                ids.update(self._by_group.get(group, ()))
            found = frozenset(ids)
            _remember(self._subject_cache, key, found)
        return found

    def _socket_ids(self, socket_name: str, socket_tags: Mapping[str, str]) -> frozenset[int]:
        key = (socket_name, frozenset(socket_tags.items()))
        found = self._socket_cache.get(key)
        if found is None:
            ids = set(self._by_socket.get(socket_name, ()))
            ids.update(p.index for p in self._socket_patterns if p.selects(socket_name, socket_tags))
            found = frozenset(ids)
            _remember(self._socket_cache, key, found)
        return found


def _remember(cache: dict[Any, frozenset[int]], key: Any, value: frozenset[int]) -> None:
    # Bounded so that a caller inventing names (user names come from tokens) cannot grow memory.
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the decision time must be timezone-aware (e.g. datetime.now(UTC))")


def _denial_reason(denials: list[tuple[str, str]], request: str) -> str:
    """One policy: `policy p: why`. Several: `no policy allows REQUEST: a: why; b: no matching rule`."""
    if len(denials) == 1:
        name, why = denials[0]
        return f"policy {name}: {why or 'no rule allows ' + request}"
    listed = [f"{name}: {why or 'no matching rule'}" for name, why in denials[:_MAX_LISTED]]
    more = len(denials) - _MAX_LISTED
    if more > 0:
        listed.append(f"and {more} more")
    return f"no policy allows {request}: " + "; ".join(listed)
