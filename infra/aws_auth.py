"""Edit the `mapRoles` text of `kube-system/aws-auth` without ever disturbing anyone else's entry.

`aws-auth` holds the mappings that let a cluster's nodes join it: a careless rewrite (re-serialising
the whole list, or a patch that replaces the string) is how clusters lose their nodes. So these
helpers edit the YAML *text*: every entry that is not the connector's keeps its exact bytes (its
quoting, key order, comments, unknown keys), whether the list is written in block style (what
eksctl, Terraform and `kubectl edit` produce) or in flow/JSON style (`jsonencode`). Only the
connector's own entry is written, replaced or removed. The result is re-parsed and compared with
the expected list before it is returned, so an edit that would change any other entry fails
instead of being written.

Entries are matched the way EKS matches them: on the role ARN, case-insensitively; and since EKS
requires mapRoles ARNs without an IAM path, the connector's ARN is written with the path stripped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

# arn:PARTITION:iam::ACCOUNT:role/OPTIONAL/PATH/NAME. IAM paths are printable ASCII between slashes.
_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws(?:-[a-z]+)*):iam::(?P<account>\d{12}):role/"
    r"(?P<path>(?:[\x21-\x2e\x30-\x7e]+/)*)(?P<name>[\w+=,.@-]{1,64})$"
)
_BLOCK_STARTS = (yaml.BlockSequenceStartToken, yaml.BlockMappingStartToken)
_FLOW_STARTS = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)
_FLOW_ENDS = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)
_FRAMING = (yaml.StreamStartToken, yaml.StreamEndToken, yaml.DocumentStartToken, yaml.DocumentEndToken)


class AwsAuthError(ValueError):
    """The existing mapRoles cannot be edited safely; the message says why. Nothing must be written."""


def role_arn_without_path(arn: str) -> str:
    """`arn:aws:iam::123456789012:role/some/path/Name` -> `arn:aws:iam::123456789012:role/Name`.

    EKS (aws-iam-authenticator) compares mapRoles with the caller's canonical ARN, which has no
    path, so an entry that keeps the path never matches.
    """
    match = _ROLE_ARN.match(arn.strip())
    if not match:
        raise ValueError(f"{arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return f"arn:{match['partition']}:iam::{match['account']}:role/{match['name']}"


def check_username_and_groups(username: str, groups: Sequence[str]) -> None:
    """The Kubernetes identity of a mapping: one-line, non-empty names."""
    if not username or any(c in username for c in "\r\n\t") or username != username.strip():
        raise ValueError(f"username {username!r} must be non-empty, one line, without surrounding spaces")
    for group in groups:
        if not isinstance(group, str) or not group.strip() or any(c in group for c in "\r\n\t"):
            raise ValueError(f"group {group!r} must be a non-empty, one-line string")


@dataclass(frozen=True)
class RoleMapping:
    """One mapRoles entry. The role ARN is stored without its path, as EKS needs it."""

    rolearn: str
    username: str
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rolearn", role_arn_without_path(self.rolearn))
        object.__setattr__(self, "groups", tuple(self.groups))
        check_username_and_groups(self.username, self.groups)

    def as_dict(self) -> dict[str, Any]:
        return {"rolearn": self.rolearn, "username": self.username, "groups": list(self.groups)}


@dataclass(frozen=True)
class _Item:
    text: str
    value: Any


@dataclass(frozen=True)
class _Layout:
    """The mapRoles text cut into pieces: `prefix + item0 + sep0 + item1 + ... + suffix == text`."""

    style: str  # "block", "flow" or "empty"
    prefix: str
    items: tuple[_Item, ...]
    separators: tuple[str, ...]
    suffix: str
    indent: str = ""  # block lists: what precedes each `- `
    close_in_suffix: int = 0  # flow lists: where the closing `]` is in `suffix`


def _arn_key(value: Any) -> str | None:
    """The identity EKS matches an entry on: its role ARN, lower-cased, path stripped."""
    if not isinstance(value, dict) or not isinstance(value.get("rolearn"), str):
        return None
    arn = value["rolearn"].strip()
    try:
        return role_arn_without_path(arn).lower()
    except ValueError:
        return arn.lower()


def _parse_error(exc: yaml.YAMLError) -> AwsAuthError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return AwsAuthError(
        f"the existing aws-auth mapRoles is not valid YAML ({problem}{where}); refusing to write so that "
        "no node or user mapping is lost: fix it with `kubectl edit configmap aws-auth -n kube-system`"
    )


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The end of the line holding the character before `index`, newline included."""
    if index == 0 or text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _layout(text: str) -> _Layout:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        tokens = list(yaml.scan(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise _parse_error(exc) from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        if root is not None:
            text = text[: root.start_mark.index] + text[root.end_mark.index :]
        return _Layout("empty", text, (), (), "")
    if not isinstance(root, yaml.SequenceNode):
        kind = "a mapping" if isinstance(root, yaml.MappingNode) else "a single value"
        raise AwsAuthError(f"the existing aws-auth mapRoles must be a YAML list of role mappings, found {kind}")
    try:
        values = [_construct(node) for node in root.value]
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader does not know
        raise _parse_error(exc) from None
    if root.flow_style:
        return _flow_layout(text, root, values)
    return _block_layout(text, tokens, values)


def _block_layout(text: str, tokens: list[yaml.Token], values: list[Any]) -> _Layout:
    # The root's own `- ` entries sit at depth 1; each item spans from its dash's line to the end of
    # the line of its last token. Comments and blank lines between items stay in the separators.
    spans: list[list[int]] = []
    depth = 0
    for token in tokens:
        if isinstance(token, _FRAMING):
            continue
        if isinstance(token, yaml.BlockEndToken):
            depth -= 1
            continue
        if depth == 1 and isinstance(token, yaml.BlockEntryToken):
            spans.append([token.start_mark.index, token.end_mark.index])
        elif depth >= 1 and spans:
            spans[-1][1] = max(spans[-1][1], token.end_mark.index)
        if isinstance(token, _BLOCK_STARTS + _FLOW_STARTS):
            depth += 1
        elif isinstance(token, _FLOW_ENDS):
            depth -= 1
    if len(spans) != len(values):
        raise AwsAuthError("cannot locate the entries of the existing aws-auth mapRoles; refusing to write")
    bounds = []
    for dash, last in spans:
        start = _line_start(text, dash)
        if text[start:dash].strip():
            raise AwsAuthError(
                f"unusual layout at line {text.count(chr(10), 0, dash) + 1} of the existing aws-auth mapRoles "
                "(a list entry that does not start its line); refusing to edit it in place"
            )
        bounds.append((start, _line_end(text, last)))
    items = tuple(_Item(text[s:e], v) for (s, e), v in zip(bounds, values, strict=True))
    separators = tuple(text[bounds[i][1] : bounds[i + 1][0]] for i in range(len(bounds) - 1))
    first_dash = spans[0][0]
    return _Layout(
        "block",
        prefix=text[: bounds[0][0]],
        items=items,
        separators=separators,
        suffix=text[bounds[-1][1] :],
        indent=text[_line_start(text, first_dash) : first_dash],
    )


def _flow_layout(text: str, root: yaml.SequenceNode, values: list[Any]) -> _Layout:
    open_end = root.start_mark.index + 1
    close_start = root.end_mark.index - 1
    if text[close_start] != "]":
        raise AwsAuthError("cannot locate the end of the existing aws-auth mapRoles list; refusing to write")
    if not root.value:
        return _Layout("flow", text[:open_end], (), (), text[open_end:])
    bounds = [(node.start_mark.index, node.end_mark.index) for node in root.value]
    items = tuple(_Item(text[s:e], v) for (s, e), v in zip(bounds, values, strict=True))
    separators = tuple(text[bounds[i][1] : bounds[i + 1][0]] for i in range(len(bounds) - 1))
    last_end = bounds[-1][1]
    return _Layout(
        "flow", text[: bounds[0][0]], items, separators, text[last_end:], close_in_suffix=close_start - last_end
    )


def _entry_text(entry: RoleMapping, layout: _Layout) -> str:
    if layout.style == "flow":
        return json.dumps(entry.as_dict())
    body = yaml.safe_dump(entry.as_dict(), default_flow_style=False, sort_keys=False, width=1 << 16)
    lines = body.splitlines()
    indent = layout.indent
    return f"{indent}- {lines[0]}\n" + "".join(f"{indent}  {line}\n" for line in lines[1:])


def _edit(layout: _Layout, *, replace: int | None, remove: set[int], append: str | None, entry: str | None) -> str:
    """Replace item `replace` with `entry`, drop the items in `remove`, or append `append`.

    Block lists keep every separator (comments stay where they were); flow lists drop the comma
    that went with a removed item.
    """
    if layout.style == "block":
        out = [layout.prefix]
        last = len(layout.items) - 1
        for i, item in enumerate(layout.items):
            if i == replace:
                out.append(entry or "")
            elif i not in remove:
                out.append(item.text)
            if i < last:
                out.append(layout.separators[i])
        body = "".join(out)
        if append is not None:
            body += ("" if not body or body.endswith("\n") else "\n") + append
        return body + layout.suffix
    pieces = [
        [item.text, layout.separators[i] if i < len(layout.separators) else None] for i, item in enumerate(layout.items)
    ]
    if replace is not None:
        pieces[replace][0] = entry or ""
    for i in sorted(remove, reverse=True):
        del pieces[i]
        if i == len(pieces) and pieces:
            pieces[-1][1] = None
    if append is not None:
        if pieces:
            pieces[-1][1] = layout.separators[0] if layout.separators else ", "
        pieces.append([append, None])
    if not pieces and layout.items:
        return layout.prefix.rstrip(" \t\r\n") + layout.suffix[layout.close_in_suffix :]
    return layout.prefix + "".join(text + (sep or "") for text, sep in pieces) + layout.suffix


def _check(result: str, expected: list[Any]) -> str:
    """Never hand back a text whose entries are not exactly the expected ones."""
    try:
        got = [item.value for item in _layout(result).items]
    except AwsAuthError as exc:
        raise AwsAuthError(f"the edited mapRoles would not parse ({exc}); refusing to write") from None
    if got != expected:
        raise AwsAuthError("the edited mapRoles would change other entries; refusing to write")
    return result


def merge_map_roles(existing_yaml: str | None, entry: RoleMapping) -> str:
    """Return mapRoles with `entry` present exactly once and every other entry byte-for-byte intact.

    Idempotent: when the existing text already holds exactly this entry (whatever its formatting)
    and no duplicate of its role, the text is returned unchanged. Entries for the same role (any
    case, with or without a path) are replaced by one entry at the position of the first.
    Raises AwsAuthError when the existing text is not a YAML list.
    """
    text = existing_yaml or ""
    layout = _layout(text)
    ours = entry.rolearn.lower()
    matches = [i for i, item in enumerate(layout.items) if _arn_key(item.value) == ours]
    if len(matches) == 1 and layout.items[matches[0]].value == entry.as_dict():
        return text
    new_entry = _entry_text(entry, layout)
    if layout.style == "empty":
        separator = "\n" if layout.prefix and not layout.prefix.endswith("\n") else ""
        return _check(layout.prefix + separator + new_entry, [entry.as_dict()])
    expected = [item.value for i, item in enumerate(layout.items) if i not in matches[1:]]
    if matches:
        expected[matches[0]] = entry.as_dict()
        result = _edit(layout, replace=matches[0], remove=set(matches[1:]), append=None, entry=new_entry)
    else:
        expected.append(entry.as_dict())
        result = _edit(layout, replace=None, remove=set(), append=new_entry, entry=None)
    return _check(result, expected)


def remove_map_role(existing_yaml: str | None, rolearn: str) -> str:
    """Return mapRoles without any entry for `rolearn` (any case, with or without a path).

    Every other entry keeps its bytes; the text is unchanged when there is no such entry.
    Raises AwsAuthError when the existing text is not a YAML list.
    """
    text = existing_yaml or ""
    ours = role_arn_without_path(rolearn).lower()
    layout = _layout(text)
    keep = [i for i, item in enumerate(layout.items) if _arn_key(item.value) != ours]
    if len(keep) == len(layout.items):
        return text
    result = _edit(layout, replace=None, remove=set(range(len(layout.items))) - set(keep), append=None, entry=None)
    return _check(result, [layout.items[i].value for i in keep])


def find_map_role(existing_yaml: str | None, rolearn: str) -> dict[str, Any] | None:
    """The first entry for `rolearn` as EKS would match it, or None."""
    ours = role_arn_without_path(rolearn).lower()
    for item in _layout(existing_yaml or "").items:
        if _arn_key(item.value) == ours:
            return item.value
    return None
