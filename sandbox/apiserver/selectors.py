"""Label and field selectors, parsed and matched as `k8s.io/apimachinery/pkg/labels` and `fields` do.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a` (exists), `!a` (does not
exist), `a>1`, `a<1`, comma-separated (AND). `!=` and `notin` match objects without the label.
Field selectors: `f=v`, `f==v`, `f!=v` comma-separated, with backslash escapes in values; which
fields a resource supports is the catalog's business. Parse errors raise `ValueError` with kube's
wording, which the server returns as 400 BadRequest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.apiserver import names

_SPECIAL = ("!=", "==", "!", "(", ")", ",", "=", ">", "<")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, Any] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _lex(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        special = next((s for s in _SPECIAL if text.startswith(s, i)), None)
        if special:
            tokens.append(special)
            i += len(special)
            continue
        start = i
        while i < len(text) and not text[i].isspace() and not any(text.startswith(s, i) for s in _SPECIAL):
            i += 1
        tokens.append(text[start:i])
    return tokens


def _is_identifier(token: str | None) -> bool:
    return token is not None and token not in _SPECIAL


def _check_key(key: str) -> None:
    problems = names.qualified_name(key)
    if problems:
        raise ValueError(f'key: Invalid value: "{key}": {"; ".join(problems)}')


def _check_value(value: str) -> None:
    problems = names.label_value(value)
    if problems:
        raise ValueError(f'values[0][{value}]: Invalid value: "{value}": {"; ".join(problems)}')


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the `labelSelector` query parameter."""
    tokens = _lex(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def expect_identifier(what: str) -> str:
        nonlocal pos
        token = peek()
        if not _is_identifier(token):
            raise ValueError(f"unable to parse requirement: found '{token or ''}', expected: {what}")
        pos += 1
        assert token is not None
        return token

    requirements: list[LabelRequirement] = []
    while pos < len(tokens):
        if peek() == "!":
            pos += 1
            key = expect_identifier("identifier after '!'")
            _check_key(key)
            requirements.append(LabelRequirement(key, "!"))
        else:
            key = expect_identifier("identifier")
            _check_key(key)
            op = peek()
            if op is None or op == ",":
                requirements.append(LabelRequirement(key, "exists"))
            elif op in ("=", "==", "!="):
                pos += 1
                value = peek()
                if value is None or value == ",":
                    value = ""  # `a=` selects an empty value
                else:
                    value = expect_identifier("identifier")
                _check_value(value)
                requirements.append(LabelRequirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in (">", "<"):
                pos += 1
                value = expect_identifier("integer")
                try:
                    int(value)
                except ValueError:
                    raise ValueError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be "
                                     f"an integer: {value}") from None
                requirements.append(LabelRequirement(key, "gt" if op == ">" else "lt", (value,)))
            elif op in ("in", "notin"):
                pos += 1
                if peek() != "(":
                    raise ValueError(f"unable to parse requirement: found '{peek() or ''}', expected: '('")
                pos += 1
                values: list[str] = []
                current = ""
                while True:
                    token = peek()
                    if token is None:
                        raise ValueError("unable to parse requirement: found '', expected: ')'")
                    pos += 1
                    if token == ")":
                        values.append(current)
                        break
                    if token == ",":
                        values.append(current)
                        current = ""
                        continue
                    if not _is_identifier(token) or current:
                        raise ValueError(f"unable to parse requirement: found '{token}', expected: ',' or ')'")
                    _check_value(token)
                    current = token
                requirements.append(LabelRequirement(key, op, tuple(values)))
            else:
                raise ValueError(f"unable to parse requirement: found '{op}', expected: "
                                 "'=', '!=', '==', 'in', notin'")
        if pos < len(tokens):
            if peek() != ",":
                raise ValueError(f"found '{peek()}', expected: ',' or 'end of string'")
            pos += 1
            if pos == len(tokens):
                raise ValueError("found '', expected: identifier")
    return LabelSelector(tuple(requirements))


def label_selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A `metav1.LabelSelector` (matchLabels + matchExpressions), as LabelSelectorAsSelector reads it."""
    if not selector:
        return LabelSelector()
    requirements: list[LabelRequirement] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        requirements.append(LabelRequirement(str(key), "=", (str(value),)))
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(expr.get("operator"))
        if op is None:
            raise ValueError(f'"{expr.get("operator")}" is not a valid label selector operator')
        values = tuple(str(v) for v in expr.get("values") or ())
        if op in ("in", "notin") and not values:
            raise ValueError("for 'in', 'notin' operators, values set can't be empty")
        requirements.append(LabelRequirement(str(expr.get("key", "")), op, values))
    return LabelSelector(tuple(requirements))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as kube prints it (`app=web,tier in (a,b)`); `<none>` when it selects nothing."""
    try:
        requirements = label_selector_from_object(selector).requirements
    except ValueError:
        return "<error>"
    parts = []
    for r in requirements:
        if r.operator == "=":
            parts.append(f"{r.key}={r.values[0]}")
        elif r.operator == "exists":
            parts.append(r.key)
        elif r.operator == "!":
            parts.append(f"!{r.key}")
        else:
            parts.append(f"{r.key} {r.operator} ({','.join(sorted(r.values))})")
    return ",".join(parts) or "<none>"



@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        for req in self.requirements:
            equal = fields.get(req.field, "") == req.value
            if equal != (req.operator == "="):
                return False
        return True

    def value_of(self, field: str) -> str | None:
        """The value an `=` term pins `field` to (kube uses metadata.name to narrow a watch)."""
        return next((r.value for r in self.requirements if r.field == field and r.operator == "="), None)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str, whole: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise ValueError(f"invalid field selector: '{whole}': invalid escape sequence")
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str) -> FieldSelector:
    """Parse the `fieldSelector` query parameter (support for each field is checked by the caller)."""
    if not text.strip():
        return FieldSelector()
    requirements = []
    for term in _split_unescaped(text, ","):
        for op in ("!=", "==", "="):
            index = _find_unescaped(term, op)
            if index >= 0:
                field = term[:index].strip()
                value = _unescape(term[index + len(op):], text)
                requirements.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
                break
        else:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
    return FieldSelector(tuple(requirements))


def _find_unescaped(term: str, op: str) -> int:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        if term.startswith(op, i):
            return i
        i += 1
    return -1
