"""The three PATCH formats kube-apiserver applies: JSON merge patch, JSON patch, strategic merge patch.

- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes, anything
  else replaces (lists included). What `kubectl scale` and `kubectl patch --type=merge` send.
- JSON patch (RFC 6902, `application/json-patch+json`): a list of add/remove/replace/move/copy/test
  operations on JSON pointers.
- Strategic merge patch (`application/strategic-merge-patch+json`, what `kubectl apply`, `edit`,
  `label` and `annotate` send): a merge patch that knows, from the type's schema, which lists merge
  by a key (containers by `name`, ports by `containerPort`, ...) and understands the directives
  `$patch: replace|delete|merge`, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
  `$setElementOrder/<field>`.

Errors raise `PatchError` with a message saying what in the patch was wrong.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.apiserver.schemas import Schemas


class PatchError(ValueError):
    """The patch cannot be applied to the object."""


# ----- JSON merge patch ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# ----- JSON patch ---------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"path must be a string, got {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must start with "/": "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token.startswith("0") and token != "0"):
        raise PatchError(f'invalid array index "{token}" in "{path}"')
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f'array index {index} out of bounds in "{path}"')
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f'doc is missing path: "{path}": missing value')
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, for_add=False)]
        else:
            raise PatchError(f'doc is missing path: "{path}": missing value')
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'doc is missing path: "{path}": missing value')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, for_add=False)]
    raise PatchError(f'doc is missing path: "{path}": missing value')


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, for_add=True), value)
    else:
        raise PatchError(f'doc is missing path: "{path}": missing value')
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'Unable to remove nonexistent key: {last}: missing value')
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path, for_add=False)]
    else:
        raise PatchError(f'doc is missing path: "{path}": missing value')
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch; the target is not modified."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"operation {i} has no \"op\"")
        kind, path = op["op"], op.get("path")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f'operation {i} ("{kind}") has no "value"')
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                if isinstance(path, str) and isinstance(source, str) and path.startswith(source + "/"):
                    raise PatchError(f'cannot move "{source}" into its own child "{path}"')
                doc = _remove(doc, source)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f'testing value {path} failed: test failed')
        else:
            raise PatchError(f'Unexpected kind: {kind}')
    return doc


# ----- strategic merge patch ----------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"


def strategic_merge_patch(original: dict[str, Any], patch: Any, schemas: Schemas,
                          schema: dict[str, Any] | None) -> dict[str, Any]:
    """Apply a strategic merge patch to `original` (not modified) for the type described by `schema`."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    result = _merge_map(copy.deepcopy(original), patch, schemas, schema)
    if result is None:
        raise PatchError("a strategic merge patch cannot delete the whole object")
    return result


def _merge_map(original: Any, patch: dict[str, Any], schemas: Schemas,
               schema: dict[str, Any] | None) -> dict[str, Any] | None:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive not in (None, "merge"):
        raise PatchError(f'Unknown patch type: "{directive}" in map: {patch}')
    result: dict[str, Any] = copy.deepcopy(original) if isinstance(original, dict) else {}
    retain = patch.get(_RETAIN_KEYS)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_SET_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            orders[key[len(_SET_ORDER):]] = value
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child_schema = schemas.property(schema, key)
        if isinstance(value, dict):
            merged = _merge_map(result.get(key), value, schemas, child_schema)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            meta = schemas.list_meta(schema, key)
            result[key] = _merge_list(result.get(key), value, meta.strategy, meta.merge_key, schemas,
                                      schemas.items(child_schema))
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(result[field], order, schemas.list_meta(schema, field).merge_key)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"{_RETAIN_KEYS} must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip_directives(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_directives(v) for k, v in node.items()
                if k not in (_DIRECTIVE, _RETAIN_KEYS) and not k.startswith((_SET_ORDER, _DELETE_PRIMITIVE))}
    if isinstance(node, list):
        return [_strip_directives(x) for x in node]
    return node


def _merge_list(original: Any, patch: list[Any], strategy: frozenset[str], merge_key: str | None,
                schemas: Schemas, item_schema: dict[str, Any] | None) -> list[Any]:
    if any(isinstance(x, dict) and x.get(_DIRECTIVE) == "replace" for x in patch):
        return [_strip_directives(x) for x in patch
                if not (isinstance(x, dict) and x.get(_DIRECTIVE) == "replace")]
    if "merge" not in strategy:
        return [_strip_directives(x) for x in patch]
    current = list(original) if isinstance(original, list) else []
    if merge_key is None:
        # A set of primitives: union, keeping the original order first.
        for item in patch:
            if item not in current:
                current.append(copy.deepcopy(item))
        return current
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list item {item!r} is not an object but the list merges by key {merge_key}")
        if merge_key not in item:
            raise PatchError(f'map: {item} does not contain declared merge key: {merge_key}')
        position = next((i for i, x in enumerate(current)
                         if isinstance(x, dict) and x.get(merge_key) == item[merge_key]), None)
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                del current[position]
            continue
        if position is None:
            current.append(_strip_directives(item))
        else:
            merged = _merge_map(current[position], item, schemas, item_schema)
            if merged is not None:
                current[position] = merged
    return current


def _apply_order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Put the items named in `$setElementOrder` in that order; the others keep their relative order."""

    def ident(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    return ranked + rest
