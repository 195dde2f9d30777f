"""Name patterns of policy files: their validation (for config errors) and compiled matchers (for speed).

Two pattern languages, both with `*` as the only wildcard so that nothing else in a name can be
misread as syntax:
- rule fields (namespaces, API groups, resources, resource names): `*` alone, an exact name, or
  `prefix*`. A rule names Kubernetes objects; prefixes are all real teams use, and anything richer
  makes an allow harder to review.
- socket names: `*` anywhere (`eks-*-staging`), because socket names are built from cluster names
  and regions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Characters that other glob dialects treat as syntax. Rejecting them keeps a user who expects
# fnmatch or shell behaviour from writing a pattern that silently means something else.
_FOREIGN_WILDCARDS = frozenset("?[]{}!")


def check_name_glob(value: str) -> str:
    """Validate a rule-field pattern (`*`, `exact` or `prefix*`); return it unchanged."""
    if value == "*":
        return value
    _check_common(value)
    if "*" in value[:-1]:
        raise ValueError(f'bad glob "{value}": use "*" alone or once at the end ("prefix*")')
    return value


def check_socket_glob(value: str) -> str:
    """Validate a socket-name pattern (`*` anywhere); return it unchanged."""
    if value == "*":
        return value
    _check_common(value)
    return value


def _check_common(value: str) -> None:
    if not value:
        raise ValueError("empty name: write a name or a pattern such as 'prefix*'")
    foreign = sorted(_FOREIGN_WILDCARDS.intersection(value))
    if foreign:
        raise ValueError(f'bad glob "{value}": {"".join(foreign)!r} is not allowed, only "*" is a wildcard')
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise ValueError(f'bad glob "{value}": whitespace and control characters are not allowed')


@dataclass(frozen=True, slots=True)
class NameMatcher:
    """A compiled list of rule-field patterns: any-of `*`, exact names, prefixes."""

    match_all: bool
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> NameMatcher:
        patterns = tuple(patterns)
        return cls(
            match_all="*" in patterns,
            exact=frozenset(p for p in patterns if not p.endswith("*")),
            prefixes=tuple(p[:-1] for p in patterns if p.endswith("*") and p != "*"),
        )

    def __call__(self, value: str) -> bool:
        return self.match_all or value in self.exact or value.startswith(self.prefixes)


@dataclass(frozen=True, slots=True)
class SocketMatcher:
    """A compiled list of socket-name patterns: exact names in a set, the rest as one regex."""

    exact: frozenset[str]
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, patterns: Iterable[str]) -> SocketMatcher:
        patterns = tuple(patterns)
        exact = frozenset(p for p in patterns if "*" not in p)
        globs = [p for p in patterns if "*" in p]
        regex = None
        if globs:
            alternatives = "|".join(".*".join(re.escape(part) for part in g.split("*")) for g in globs)
            regex = re.compile(f"(?s:{alternatives})")
        return cls(exact=exact, regex=regex)

    def __call__(self, name: str) -> bool:
        if name in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(name) is not None
