"""The Kubernetes API schemas, for strategic merge patch, field validation and the OpenAPI documents.

A real kube-apiserver knows every field of every type from its Go structs. The emulator takes the
same knowledge from the Kubernetes OpenAPI definitions shipped (as JSON Schema) by the
`kubernetes-validate` package, for the minor version it claims to be: patch strategies and merge
keys (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), which fields exist (so
unknown ones are dropped, warned about or refused per `fieldValidation`), and the OpenAPI v3
documents kubectl downloads before `apply` (it checks that PATCH accepts `fieldValidation`) and
for `explain`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_REF_PREFIX = "#/$defs/"
V3_PREFIX = "#/components/schemas/"
V2_PREFIX = "#/definitions/"
# The untyped holders: anything goes below them.
_OPAQUE = {"io.k8s.apimachinery.pkg.runtime.RawExtension", "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"}
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _schema_dirs() -> dict[tuple[int, int], Any]:
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    found = {}
    for entry in root.iterdir():
        match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local", entry.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = entry
    return found


@functools.cache
def load(major: int, minor: int) -> Schemas:
    """The definitions of `major.minor`, or of the nearest older (else newest) version available."""
    dirs = _schema_dirs()
    if not dirs:
        raise RuntimeError("the kubernetes-validate package has no schemas; reinstall requirements-dev.txt")
    older = [v for v in dirs if v <= (major, minor)]
    chosen = max(older) if older else min(dirs)
    data = json.loads(dirs[chosen].joinpath("_definitions.json").read_text())
    return Schemas(data["$defs"], chosen)


@dataclass(frozen=True)
class ListMeta:
    """How strategic merge patch treats a list field: `strategy` may contain `merge`, `retainKeys`."""

    strategy: frozenset[str]
    merge_key: str | None


class Schemas:
    def __init__(self, definitions: dict[str, Any], version: tuple[int, int]) -> None:
        self.definitions = definitions
        self.version = version
        self._by_gvk: dict[tuple[str, str, str], str] = {}
        for name, schema in definitions.items():
            for gvk in schema.get("x-kubernetes-group-version-kind") or []:
                self._by_gvk[(gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))] = name

    # ----- navigation ----------------------------------------------------------------------------

    def for_kind(self, group: str, version: str, kind: str) -> dict[str, Any] | None:
        name = self._by_gvk.get((group, version, kind))
        return self.definitions.get(name) if name else None

    def resolve(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """Follow `$ref`s; the result carries the referring schema's own keys too."""
        seen = 0
        while schema is not None and "$ref" in schema and seen < 32:
            target = self.definitions.get(schema["$ref"].removeprefix(_REF_PREFIX))
            if target is None:
                return None
            own = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **own}
            seen += 1
        return schema

    def ref_name(self, schema: dict[str, Any] | None) -> str | None:
        if schema and "$ref" in schema:
            return str(schema["$ref"]).removeprefix(_REF_PREFIX)
        return None

    def property(self, schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
        """The schema of `key` inside the object `schema` (a property, or the map's values)."""
        schema = self.resolve(schema)
        if not schema:
            return None
        props = schema.get("properties") or {}
        if key in props:
            return props[key]
        extra = schema.get("additionalProperties")
        return extra if isinstance(extra, dict) else None

    def items(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        schema = self.resolve(schema)
        return schema.get("items") if schema else None

    def list_meta(self, parent: dict[str, Any] | None, key: str) -> ListMeta:
        field_schema = (self.resolve(parent) or {}).get("properties", {}).get(key) or {}
        raw = str(field_schema.get("x-kubernetes-patch-strategy", ""))
        return ListMeta(frozenset(s for s in raw.split(",") if s),
                        field_schema.get("x-kubernetes-patch-merge-key"))

    # ----- field validation ----------------------------------------------------------------------

    def prune_unknown(self, schema: dict[str, Any] | None, obj: Any, path: str = "") -> list[str]:
        """Drop the fields the schema does not know from `obj` (in place); return their paths."""
        name = self.ref_name(schema)
        if name in _OPAQUE or name in (_INT_OR_STRING, _QUANTITY):
            return []
        resolved = self.resolve(schema)
        if not resolved or resolved.get("x-kubernetes-preserve-unknown-fields"):
            return []
        unknown: list[str] = []
        if isinstance(obj, dict):
            props = resolved.get("properties")
            extra = resolved.get("additionalProperties")
            if props is None and not isinstance(extra, dict):
                return []
            for key in list(obj):
                if props is not None and key in props:
                    unknown += self.prune_unknown(props[key], obj[key], f"{path}.{key}" if path else key)
                elif isinstance(extra, dict):
                    unknown += self.prune_unknown(extra, obj[key], f"{path}[{key}]")
                else:
                    unknown.append(f"{path}.{key}" if path else key)
                    del obj[key]
        elif isinstance(obj, list) and "items" in resolved:
            for i, item in enumerate(obj):
                unknown += self.prune_unknown(resolved["items"], item, f"{path}[{i}]")
        return unknown

    # ----- OpenAPI v3 ----------------------------------------------------------------------------

    def openapi_schema(self, name: str, *, v2: bool = False) -> dict[str, Any]:
        """One definition as kube-apiserver publishes it in OpenAPI v3 (or v2): JSON Schema's `null`
        unions removed, references into `#/components/schemas/` (or `#/definitions/`)."""
        description = self.definitions[name].get("description", "")
        if name == _INT_OR_STRING:
            return {"description": description, "type": "string", "format": "int-or-string"}
        if name == _QUANTITY:
            return {"description": description, "type": "string"}
        converted = _to_openapi(self.definitions[name], V2_PREFIX if v2 else V3_PREFIX, described_refs=v2)
        if "x-kubernetes-group-version-kind" in converted:
            # The JSON Schema conversion pinned apiVersion and kind with enums; the API does not.
            for key in ("apiVersion", "kind"):
                converted.get("properties", {}).get(key, {}).pop("enum", None)
        return converted

    def closure(self, roots: list[str]) -> list[str]:
        """Every definition reachable from `roots`."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            name = stack.pop()
            if name in seen or name not in self.definitions:
                continue
            seen.add(name)
            stack += [r.removeprefix(_REF_PREFIX) for r in _refs(self.definitions[name])]
        return sorted(seen)

    def name_for(self, group: str, version: str, kind: str) -> str | None:
        return self._by_gvk.get((group, version, kind))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for value in node.values():
            found += _refs(value)
        return found
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def _to_openapi(node: Any, prefix: str, *, described_refs: bool) -> Any:
    if isinstance(node, list):
        return [_to_openapi(x, prefix, described_refs=described_refs) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref":
            out["$ref"] = value.replace(_REF_PREFIX, prefix)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _to_openapi(v, prefix, described_refs=described_refs) for k, v in value.items()}
        else:
            out[key] = _to_openapi(value, prefix, described_refs=described_refs)
    if "$ref" in out and len(out) > 1 and not described_refs:
        # kube-openapi's v3 form: a described reference is an allOf of one.
        ref = out.pop("$ref")
        out = {"allOf": [{"$ref": ref}], **out}
    return out
