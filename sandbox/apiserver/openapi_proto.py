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

from connector.kube import protobuf as pb

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# What kube-apiserver answers with: `@` is not valid in a Content-Type (Go's mime parser refuses it).
RESPONSE_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _any(value: Any) -> bytes:
    return pb.string(2, yaml.safe_dump(value, default_flow_style=False, sort_keys=True))


def _named_any(field: int, name: str, value: Any) -> bytes:
    return pb.message(field, pb.string(1, name) + pb.message(2, _any(value)))


def _extensions(field: int, node: dict[str, Any]) -> bytes:
    return b"".join(_named_any(field, k, v) for k, v in node.items() if k.startswith("x-"))


def schema(node: dict[str, Any]) -> bytes:
    out = [pb.string(1, node.get("$ref", "")), pb.string(2, node.get("format", "")),
           pb.string(3, node.get("title", "")), pb.string(4, node.get("description", ""))]
    if "default" in node:
        out.append(pb.message(5, _any(node["default"])))
    out += [pb.string(19, r) for r in node.get("required") or []]
    out += [pb.message(20, _any(v)) for v in node.get("enum") or []]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(pb.message(21, pb.message(1, schema(extra))))
    elif isinstance(extra, bool):
        out.append(pb.message(21, pb.tag(2, pb.VARINT) + (b"\x01" if extra else b"\x00")))
    kind = node.get("type")
    if kind:
        kinds = kind if isinstance(kind, list) else [kind]
        out.append(pb.message(22, b"".join(pb.string(1, k) for k in kinds)))
    if isinstance(node.get("items"), dict):
        out.append(pb.message(23, pb.message(1, schema(node["items"]))))
    out += [pb.message(24, schema(s)) for s in node.get("allOf") or []]
    if isinstance(node.get("properties"), dict):
        props = b"".join(pb.message(1, pb.string(1, name) + pb.message(2, schema(sub)))
                         for name, sub in node["properties"].items())
        out.append(pb.message(25, props))
    out.append(pb.boolean(27, bool(node.get("readOnly"))))
    out.append(_extensions(31, node))
    return b"".join(out)


def _parameter(param: dict[str, Any]) -> bytes:
    where = param["in"]
    if where == "body":
        body = (pb.string(1, param.get("description", "")) + pb.string(2, param["name"]) + pb.string(3, "body")
                + pb.boolean(4, bool(param.get("required"))) + pb.message(5, schema(param["schema"])))
        inner = pb.message(1, body)
    elif where == "query":
        query = (pb.boolean(1, bool(param.get("required"))) + pb.string(2, "query")
                 + pb.string(3, param.get("description", "")) + pb.string(4, param["name"])
                 + pb.string(6, param.get("type", "")) + pb.boolean(20, bool(param.get("uniqueItems"))))
        inner = pb.message(2, pb.message(3, query))
    else:
        path = (pb.boolean(1, True) + pb.string(2, "path") + pb.string(3, param.get("description", ""))
                + pb.string(4, param["name"]) + pb.string(5, param.get("type", ""))
                + pb.boolean(19, bool(param.get("uniqueItems"))))
        inner = pb.message(2, pb.message(4, path))
    return pb.message(1, inner)  # ParametersItem.parameter


def _responses(responses: dict[str, Any]) -> bytes:
    out = []
    for code, response in responses.items():
        body = pb.string(1, response.get("description", ""))
        if "schema" in response:
            body += pb.message(2, pb.message(1, schema(response["schema"])))
        out.append(pb.message(1, pb.string(1, code) + pb.message(2, pb.message(1, body))))
    return b"".join(out)


def _operation(op: dict[str, Any]) -> bytes:
    out = [pb.string(1, t) for t in op.get("tags") or []]
    out += [pb.string(3, op.get("description", "")), pb.string(5, op.get("operationId", ""))]
    out += [pb.string(6, t) for t in op.get("produces") or []]
    out += [pb.string(7, t) for t in op.get("consumes") or []]
    out += [pb.message(8, _parameter(p)) for p in op.get("parameters") or []]
    out.append(pb.message(9, _responses(op.get("responses") or {})))
    out += [pb.string(10, s) for s in op.get("schemes") or []]
    out.append(_extensions(13, op))
    return b"".join(out)


_METHOD_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = [pb.message(_METHOD_FIELDS[m], _operation(op)) for m, op in item.items() if m in _METHOD_FIELDS]
    out += [pb.message(9, _parameter(p)) for p in item.get("parameters") or []]
    return b"".join(out)


def encode_document(document: dict[str, Any]) -> bytes:
    info = document.get("info") or {}
    paths = b"".join(pb.message(2, pb.string(1, path) + pb.message(2, _path_item(item)))
                     for path, item in (document.get("paths") or {}).items())
    definitions = b"".join(pb.message(1, pb.string(1, name) + pb.message(2, schema(node)))
                           for name, node in (document.get("definitions") or {}).items())
    return b"".join([
        pb.string(1, document.get("swagger", "2.0")),
        pb.message(2, pb.string(1, info.get("title", "")) + pb.string(2, info.get("version", ""))),
        pb.message(8, paths),
        pb.message(9, definitions),
    ])
