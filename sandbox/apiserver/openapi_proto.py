"""`/openapi/v2` as protobuf: gnostic's `openapi.v2.Document`, the only form kubectl asks for.

kubectl 1.27/1.28 (client-go's `OpenAPISchema`) download the Swagger document with
`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and parse it with gnostic, so
the document from `openapi.v2_document` is written here in that message layout (field numbers of
gnostic's OpenAPIv2.proto). Vendor extensions, defaults and enum values travel as YAML strings,
as gnostic carries them.
"""

from __future__ import annotations

from typing import Any

import yaml

from sandbox.apiserver import protowire as pw

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# What kube-apiserver answers with: `@` is not valid in a Content-Type (Go's mime parser refuses it).
RESPONSE_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _any(value: Any) -> bytes:
    return pw.string(2, yaml.safe_dump(value, default_flow_style=False, sort_keys=True))


def _named_any(field: int, name: str, value: Any) -> bytes:
    return pw.message(field, pw.string(1, name) + pw.message(2, _any(value)))


def _extensions(field: int, node: dict[str, Any]) -> bytes:
    return b"".join(_named_any(field, k, v) for k, v in node.items() if k.startswith("x-"))


def schema(node: dict[str, Any]) -> bytes:
    out = [pw.string(1, node.get("$ref", "")), pw.string(2, node.get("format", "")),
           pw.string(3, node.get("title", "")), pw.string(4, node.get("description", ""))]
    if "default" in node:
        out.append(pw.message(5, _any(node["default"])))
    out += [pw.string(19, r) for r in node.get("required") or []]
    out += [pw.message(20, _any(v)) for v in node.get("enum") or []]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(pw.message(21, pw.message(1, schema(extra))))
    elif isinstance(extra, bool):
        out.append(pw.message(21, pw.tag(2, pw.VARINT) + (b"\x01" if extra else b"\x00")))
    kind = node.get("type")
    if kind:
        kinds = kind if isinstance(kind, list) else [kind]
        out.append(pw.message(22, b"".join(pw.string(1, k) for k in kinds)))
    if isinstance(node.get("items"), dict):
        out.append(pw.message(23, pw.message(1, schema(node["items"]))))
    out += [pw.message(24, schema(s)) for s in node.get("allOf") or []]
    if isinstance(node.get("properties"), dict):
        props = b"".join(pw.message(1, pw.string(1, name) + pw.message(2, schema(sub)))
                         for name, sub in node["properties"].items())
        out.append(pw.message(25, props))
    out.append(pw.boolean(27, bool(node.get("readOnly"))))
    out.append(_extensions(31, node))
    return b"".join(out)


def _parameter(param: dict[str, Any]) -> bytes:
    where = param["in"]
    if where == "body":
        body = (pw.string(1, param.get("description", "")) + pw.string(2, param["name"]) + pw.string(3, "body")
                + pw.boolean(4, bool(param.get("required"))) + pw.message(5, schema(param["schema"])))
        inner = pw.message(1, body)
    elif where == "query":
        query = (pw.boolean(1, bool(param.get("required"))) + pw.string(2, "query")
                 + pw.string(3, param.get("description", "")) + pw.string(4, param["name"])
                 + pw.string(6, param.get("type", "")) + pw.boolean(20, bool(param.get("uniqueItems"))))
        inner = pw.message(2, pw.message(3, query))
    else:
        path = (pw.boolean(1, True) + pw.string(2, "path") + pw.string(3, param.get("description", ""))
                + pw.string(4, param["name"]) + pw.string(5, param.get("type", ""))
                + pw.boolean(19, bool(param.get("uniqueItems"))))
        inner = pw.message(2, pw.message(4, path))
    return pw.message(1, inner)  # ParametersItem.parameter


def _responses(responses: dict[str, Any]) -> bytes:
    out = []
    for code, response in responses.items():
        body = pw.string(1, response.get("description", ""))
        if "schema" in response:
            body += pw.message(2, pw.message(1, schema(response["schema"])))
        out.append(pw.message(1, pw.string(1, code) + pw.message(2, pw.message(1, body))))
    return b"".join(out)


def _operation(op: dict[str, Any]) -> bytes:
    out = [pw.string(1, t) for t in op.get("tags") or []]
    out += [pw.string(3, op.get("description", "")), pw.string(5, op.get("operationId", ""))]
    out += [pw.string(6, t) for t in op.get("produces") or []]
    out += [pw.string(7, t) for t in op.get("consumes") or []]
    out += [pw.message(8, _parameter(p)) for p in op.get("parameters") or []]
    out.append(pw.message(9, _responses(op.get("responses") or {})))
    out += [pw.string(10, s) for s in op.get("schemes") or []]
    out.append(_extensions(13, op))
    return b"".join(out)


_METHOD_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = [pw.message(_METHOD_FIELDS[m], _operation(op)) for m, op in item.items() if m in _METHOD_FIELDS]
    out += [pw.message(9, _parameter(p)) for p in item.get("parameters") or []]
    return b"".join(out)


def encode_document(document: dict[str, Any]) -> bytes:
    info = document.get("info") or {}
    paths = b"".join(pw.message(2, pw.string(1, path) + pw.message(2, _path_item(item)))
                     for path, item in (document.get("paths") or {}).items())
    definitions = b"".join(pw.message(1, pw.string(1, name) + pw.message(2, schema(node)))
                           for name, node in (document.get("definitions") or {}).items())
    return b"".join([
        pw.string(1, document.get("swagger", "2.0")),
        pw.message(2, pw.string(1, info.get("title", "")) + pw.string(2, info.get("version", ""))),
        pw.message(8, paths),
        pw.message(9, definitions),
    ])
