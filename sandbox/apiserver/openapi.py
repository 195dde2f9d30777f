"""The OpenAPI documents kube-apiserver publishes, for the resources this server serves.

- `/openapi/v3` lists one document per group version; kubectl 1.29+ reads them before `apply` and
  `create -f` (a PATCH operation of the kind must accept `fieldValidation`, or kubectl falls back
  to client-side validation) and for `explain`.
- `/openapi/v2` is one Swagger 2.0 document, which kubectl 1.27/1.28 download (as protobuf, see
  `openapi_proto`) for the same purposes.

Operations carry `x-kubernetes-action` and `x-kubernetes-group-version-kind` and the query
parameters kube-apiserver declares; schemas come from `schemas` for the claimed version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sandbox.apiserver import catalog
from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.schemas import V2_PREFIX, V3_PREFIX, Schemas

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_QUERY = {
    "dryRun": "When present, indicates that modifications should not be persisted.",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request containing "
                       "unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
    "force": "Force is going to \"force\" Apply requests.",
    "pretty": "If 'true', then the output is pretty printed.",
}
_PATH_PARAMS = {"name": "name of the {kind}", "namespace": "object name and auth scope, such as for teams and projects"}
_WRITE_QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")
PATCH = "patch"  # the body of a PATCH operation: a meta.v1.Patch in any of PATCH_TYPES


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    operation_id: str
    action: str
    gvk: dict[str, str]
    query: tuple[str, ...]
    response: str
    body: str | None = None
    path_params: tuple[str, ...] = ()


def gv_path(group: str, version: str) -> str:
    """`api/v1`, `apis/apps/v1`: a group version's key in `/openapi/v3`."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def served_group_versions() -> list[tuple[str, str]]:
    return [("", "v1")] + [(g.name, v) for g in catalog.GROUPS for v in g.versions]


def operations(schemas: Schemas, rt: ResourceType) -> list[Operation]:
    """kube-apiserver's operations for one resource (and its status and scale subresources)."""
    kind_name = schemas.name_for(rt.group, rt.version, rt.kind)
    if kind_name is None:
        return []
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    suffix = "".join(p.title() for p in (rt.group.split(".")[0] if rt.group else "core", rt.version)) + rt.kind
    prefix = "/" + gv_path(rt.group, rt.version)
    if rt.verbs == ("create",):
        return [Operation(f"{prefix}/{rt.plural}", "post", f"create{suffix}", "post", gvk, _WRITE_QUERY, kind_name,
                          body=kind_name)]
    scope = "/namespaces/{namespace}" if rt.namespaced else ""
    scoped = ("namespace",) if rt.namespaced else ()
    collection, item = f"{prefix}{scope}/{rt.plural}", f"{prefix}{scope}/{rt.plural}/{{name}}"
    list_name = schemas.name_for(rt.group, rt.version, rt.list_kind) or kind_name
    ops = [
        Operation(collection, "get", f"list{suffix}", "list", gvk, ("pretty",), list_name, path_params=scoped),
        Operation(collection, "post", f"create{suffix}", "post", gvk, _WRITE_QUERY, kind_name, kind_name, scoped),
    ]
    if "deletecollection" in rt.verbs:
        ops.append(Operation(collection, "delete", f"deletecollection{suffix}", "deletecollection", gvk,
                             ("dryRun", "pretty"), _META + "Status", _META + "DeleteOptions", scoped))
    ops += _item_operations(item, suffix, gvk, kind_name, ("name", *scoped), delete=True)
    if rt.namespaced:
        ops.append(Operation(f"{prefix}/{rt.plural}", "get", f"list{suffix}ForAllNamespaces", "list", gvk,
                             ("pretty",), list_name))
    for sub in rt.subresources:
        if sub.name not in ("status", "scale"):
            continue
        group = sub.group if sub.group is not None else rt.group
        version = sub.version or rt.version
        sub_name = schemas.name_for(group, version, sub.kind)
        if sub_name:
            ops += _item_operations(f"{item}/{sub.name}", suffix + sub.name.title(),
                                    {"group": group, "version": version, "kind": sub.kind}, sub_name,
                                    ("name", *scoped), delete=False)
    return ops


def _item_operations(path: str, suffix: str, gvk: dict[str, str], kind_name: str, params: tuple[str, ...], *,
                     delete: bool) -> list[Operation]:
    ops = [
        Operation(path, "get", f"read{suffix}", "get", gvk, ("pretty",), kind_name, path_params=params),
        Operation(path, "put", f"replace{suffix}", "put", gvk, _WRITE_QUERY, kind_name, kind_name, params),
        Operation(path, "patch", f"patch{suffix}", "patch", gvk, (*_WRITE_QUERY, "force"), kind_name, PATCH, params),
    ]
    if delete:
        ops.append(Operation(path, "delete", f"delete{suffix}", "delete", gvk, ("dryRun", "pretty"),
                             _META + "Status", _META + "DeleteOptions", params))
    return ops


def _roots(ops: list[Operation]) -> list[str]:
    names = {_META + "Patch", _META + "Status"}
    for op in ops:
        names.add(op.response)
        if op.body and op.body != PATCH:
            names.add(op.body)
    return sorted(names)


def _query_schema(name: str) -> dict[str, Any]:
    return {"type": "boolean"} if name == "force" else {"type": "string", "uniqueItems": True}


def _path_parameter(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "description": _PATH_PARAMS[name].format(kind=kind), "required": True}


# ----- v3 -----------------------------------------------------------------------------------------


def v3_document(schemas: Schemas, group: str, version: str) -> dict[str, Any] | None:
    types = catalog.resources_in(group, version)
    ops = [op for rt in types for op in operations(schemas, rt)]
    if not ops:
        return None
    paths: dict[str, Any] = {}
    for op in ops:
        entry = paths.setdefault(op.path, {})
        if op.path_params:
            entry["parameters"] = [{**_path_parameter(p, op.gvk["kind"]), "schema": {"type": "string",
                                                                                     "uniqueItems": True}}
                                   for p in op.path_params]
        rendered: dict[str, Any] = {
            "operationId": op.operation_id,
            "parameters": [{"name": q, "in": "query", "description": _QUERY[q], "schema": _query_schema(q)}
                           for q in op.query],
            "responses": {"200": {"description": "OK",
                                  "content": {"application/json": {"schema": {"$ref": V3_PREFIX + op.response}}}},
                          "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": op.action,
            "x-kubernetes-group-version-kind": op.gvk,
        }
        if op.body == PATCH:
            rendered["requestBody"] = {"content": {t: {"schema": {"$ref": V3_PREFIX + _META + "Patch"}}
                                                   for t in PATCH_TYPES}, "required": True}
        elif op.body:
            rendered["requestBody"] = {"content": {"application/json": {"schema": {"$ref": V3_PREFIX + op.body}}},
                                       "required": op.method != "delete"}
        entry[op.method] = rendered
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{schemas.version[0]}.{schemas.version[1]}.0"},
        "paths": paths,
        "components": {"schemas": {n: schemas.openapi_schema(n) for n in schemas.closure(_roots(ops))}},
    }


def document_hash(document: dict[str, Any]) -> str:
    """The `hash` kube-apiserver puts in each serverRelativeURL so that clients can cache documents."""
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:128].upper()


# ----- v2 -----------------------------------------------------------------------------------------


def v2_document(schemas: Schemas) -> dict[str, Any]:
    """The Swagger 2.0 document of every served resource, with every definition (as kube serves it)."""
    paths: dict[str, Any] = {}
    for group, version in served_group_versions():
        for rt in catalog.resources_in(group, version):
            for op in operations(schemas, rt):
                entry = paths.setdefault(op.path, {})
                if op.path_params:
                    entry["parameters"] = [{**_path_parameter(p, op.gvk["kind"]), "type": "string",
                                            "uniqueItems": True} for p in op.path_params]
                params: list[dict[str, Any]] = []
                if op.body:
                    ref = _META + "Patch" if op.body == PATCH else op.body
                    params.append({"name": "body", "in": "body", "required": op.method != "delete",
                                   "schema": {"$ref": V2_PREFIX + ref}})
                params += [{"name": q, "in": "query", "description": _QUERY[q], **_query_schema(q)}
                           for q in op.query]
                entry[op.method] = {
                    "description": f"{op.action} {op.gvk['kind']}",
                    "consumes": list(PATCH_TYPES) if op.body == PATCH else ["*/*"],
                    "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
                    "schemes": ["https"],
                    "operationId": op.operation_id,
                    "parameters": params,
                    "responses": {"200": {"description": "OK", "schema": {"$ref": V2_PREFIX + op.response}},
                                  "401": {"description": "Unauthorized"}},
                    "x-kubernetes-action": op.action,
                    "x-kubernetes-group-version-kind": op.gvk,
                }
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{schemas.version[0]}.{schemas.version[1]}.0"},
        "paths": paths,
        "definitions": {n: schemas.openapi_schema(n, v2=True) for n in sorted(schemas.definitions)},
    }
