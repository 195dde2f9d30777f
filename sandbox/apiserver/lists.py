"""LIST semantics: selectors, `limit`/`continue` paging over a consistent snapshot, resourceVersion rules.

A `continue` token is kube-apiserver's (base64url JSON `{"v":"meta.k8s.io/v1","rv":N,"start":K}`):
the next page is read from the snapshot at N (rebuilt from the store's history), starting after
key K, so pages never mix states. Once the history no longer reaches N the token is `410 Expired`,
worded as after an etcd compaction. `remainingItemCount` is given only for unfiltered lists, as
kube-apiserver does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.errors import ApiError, bad_request, expired
from sandbox.apiserver.selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from sandbox.apiserver.store import Store, TooOldResourceVersion

_TOO_OLD_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of "
    "the results. Continuing with the provided token results in an inconsistent list - objects that were "
    "created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
)


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(frozen=True)
class ObjectFilter:
    """Which objects a request selects: label selector, field selector (on the resource's fields)."""

    rt: ResourceType
    labels: LabelSelector
    fields: FieldSelector

    @property
    def selective(self) -> bool:
        return not self.labels.empty or bool(self.fields.requirements)

    def fields_of(self, obj: dict[str, Any]) -> dict[str, str]:
        meta = obj.get("metadata") or {}
        values = {"metadata.name": str(meta.get("name", ""))}
        if self.rt.namespaced:
            values["metadata.namespace"] = str(meta.get("namespace", ""))
        for label, path in self.rt.field_labels.items():
            values[label] = _field_value(obj, path)
        return values

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        return self.labels.matches((obj.get("metadata") or {}).get("labels")) and \
            self.fields.matches(self.fields_of(obj))


def object_filter(rt: ResourceType, params: Mapping[str, str]) -> ObjectFilter:
    try:
        labels = parse_label_selector(params.get("labelSelector", ""))
        fields = parse_field_selector(params.get("fieldSelector", ""))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    known = {"metadata.name", *rt.field_labels}
    if rt.namespaced:
        known.add("metadata.namespace")
    for req in fields.requirements:
        if req.field not in known:
            raise bad_request(f'field label not supported: {req.field}')
    return ObjectFilter(rt, labels, fields)


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
        raise bad_request("continue key is not valid: incorrect encoded start resourceVersion (version "
                          "meta.k8s.io/v1)")
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or rv <= 0 or not isinstance(start, str) or not start:
        raise bad_request("continue key is not valid: incorrect encoded start resourceVersion (version "
                          "meta.k8s.io/v1)")
    return rv, start


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def _positive(params: Mapping[str, str], key: str) -> int:
    raw = params.get(key, "")
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f'invalid {key}: "{raw}": expected an integer') from None
    return max(value, 0)


@dataclass(frozen=True)
class ListResult:
    items: list[dict[str, Any]]
    resource_version: int
    continue_token: str = ""
    remaining: int | None = None

    def list_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.resource_version)}
        if self.continue_token:
            meta["continue"] = self.continue_token
        if self.remaining is not None:
            meta["remainingItemCount"] = self.remaining
        return meta


def list_objects(store: Store, rt: ResourceType, namespace: str | None, params: Mapping[str, str]) -> ListResult:
    selection = object_filter(rt, params)
    limit = _positive(params, "limit")
    token = params.get("continue", "")
    rv_param = params.get("resourceVersion", "")
    match = params.get("resourceVersionMatch", "")
    if match and match not in ("Exact", "NotOlderThan"):
        raise bad_request(f'resourceVersionMatch: Unsupported value: "{match}": supported values: "Exact", '
                          '"NotOlderThan"')
    if match and not rv_param:
        raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    start = ""
    if token:
        if rv_param:
            raise bad_request("specifying resource version is not allowed when using continue")
        at, start = decode_continue(token)
        try:
            objects = store.list_at(rt, namespace, at)
        except TooOldResourceVersion:
            fresh = encode_continue(store.resource_version, start)
            raise ApiError(410, _TOO_OLD_CONTINUE, reason="Expired", list_meta={"continue": fresh}) from None
    else:
        at = store.resource_version
        requested = _parse_rv(rv_param)
        if match == "Exact":
            if requested == 0:
                raise bad_request('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
            try:
                objects = store.list_at(rt, namespace, requested)
            except TooOldResourceVersion as exc:
                raise expired(str(exc)) from None
            at = requested
        else:
            if requested > store.resource_version:
                raise ApiError(504, f"Too large resource version: {requested}, current: {store.resource_version}",
                               reason="Timeout", details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                                      "message": "Too large resource version"}],
                                                          "retryAfterSeconds": 1})
            objects = store.list(rt, namespace)
    candidates = [o for o in objects if not start or _key(o) >= start]
    selected: list[dict[str, Any]] = []
    for index, obj in enumerate(candidates):
        if not selection.matches(obj):
            continue
        if limit and len(selected) == limit:
            rest = candidates[index:]
            remaining = None if selection.selective else len(rest)
            return ListResult(selected, at, encode_continue(at, _key(selected[-1]) + "\x00"), remaining)
        selected.append(obj)
    return ListResult(selected, at)


def _parse_rv(value: str) -> int:
    if value in ("", "0"):
        return 0
    try:
        rv = int(value)
    except ValueError:
        raise bad_request(f'resourceVersion: Invalid value: "{value}": must be a non-negative integer') from None
    if rv < 0:
        raise bad_request(f'resourceVersion: Invalid value: "{value}": must be a non-negative integer')
    return rv
