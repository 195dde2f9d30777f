"""Request bodies in `application/vnd.kubernetes.protobuf`, as kubectl 1.32+ sends for typed clients.

kubectl's typed clients (`auth whoami`, `auth can-i`, `create token`, `create namespace|configmap|
secret|serviceaccount|role|rolebinding|clusterrole|clusterrolebinding`) send protobuf and accept
JSON back. A body is the magic `k8s\\0` and a `runtime.Unknown` (typeMeta, raw); `raw` is the
object in the layout of k8s.io/api's generated.proto. The kinds below are decoded into the same
dicts a JSON body gives; any other kind is a 415 naming what is supported. Field numbers are those
of k8s.io/api and k8s.io/apimachinery.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from connector.kube import protobuf as pb

MEDIA_TYPE = pb.MEDIA_TYPE

# message -> field number -> (JSON name, kind, message type). Kinds: string, bool, int, time,
# message, strings (repeated string), messages (repeated message), map (string->string),
# bytesmap (string->bytes).
_M = dict[int, tuple[str, str, str | None]]
MESSAGES: dict[str, _M] = {
    "ObjectMeta": {
        1: ("name", "string", None), 2: ("generateName", "string", None), 3: ("namespace", "string", None),
        5: ("uid", "string", None), 6: ("resourceVersion", "string", None), 7: ("generation", "int", None),
        8: ("creationTimestamp", "time", None), 11: ("labels", "map", None), 12: ("annotations", "map", None),
        13: ("ownerReferences", "messages", "OwnerReference"), 14: ("finalizers", "strings", None),
    },
    "OwnerReference": {
        5: ("apiVersion", "string", None), 1: ("kind", "string", None), 3: ("name", "string", None),
        4: ("uid", "string", None), 6: ("controller", "bool", None), 7: ("blockOwnerDeletion", "bool", None),
    },
    "LabelSelector": {1: ("matchLabels", "map", None),
                      2: ("matchExpressions", "messages", "LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "string", None), 2: ("operator", "string", None),
                                 3: ("values", "strings", None)},
    "SelfSubjectReview": {1: ("metadata", "message", "ObjectMeta")},
    "SelfSubjectAccessReview": {1: ("metadata", "message", "ObjectMeta"),
                                2: ("spec", "message", "SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "message", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "message", "NonResourceAttributes")},
    "ResourceAttributes": {
        1: ("namespace", "string", None), 2: ("verb", "string", None), 3: ("group", "string", None),
        4: ("version", "string", None), 5: ("resource", "string", None), 6: ("subresource", "string", None),
        7: ("name", "string", None),
    },
    "NonResourceAttributes": {1: ("path", "string", None), 2: ("verb", "string", None)},
    "SelfSubjectRulesReview": {1: ("metadata", "message", "ObjectMeta"),
                               2: ("spec", "message", "SelfSubjectRulesReviewSpec")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "string", None)},
    "TokenRequest": {1: ("metadata", "message", "ObjectMeta"), 2: ("spec", "message", "TokenRequestSpec")},
    "TokenRequestSpec": {1: ("audiences", "strings", None), 4: ("expirationSeconds", "int", None),
                         3: ("boundObjectRef", "message", "BoundObjectReference")},
    "BoundObjectReference": {1: ("kind", "string", None), 2: ("apiVersion", "string", None),
                             3: ("name", "string", None), 4: ("uid", "string", None)},
    "Namespace": {1: ("metadata", "message", "ObjectMeta"), 2: ("spec", "message", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "strings", None)},
    "ConfigMap": {1: ("metadata", "message", "ObjectMeta"), 4: ("immutable", "bool", None),
                  2: ("data", "map", None), 3: ("binaryData", "bytesmap", None)},
    "Secret": {1: ("metadata", "message", "ObjectMeta"), 5: ("immutable", "bool", None),
               2: ("data", "bytesmap", None), 4: ("stringData", "map", None), 3: ("type", "string", None)},
    "ServiceAccount": {1: ("metadata", "message", "ObjectMeta"), 2: ("secrets", "messages", "ObjectReference"),
                       3: ("imagePullSecrets", "messages", "LocalObjectReference"),
                       4: ("automountServiceAccountToken", "bool", None)},
    "ObjectReference": {
        1: ("kind", "string", None), 2: ("namespace", "string", None), 3: ("name", "string", None),
        4: ("uid", "string", None), 5: ("apiVersion", "string", None), 6: ("resourceVersion", "string", None),
        7: ("fieldPath", "string", None),
    },
    "LocalObjectReference": {1: ("name", "string", None)},
    "Role": {1: ("metadata", "message", "ObjectMeta"), 2: ("rules", "messages", "PolicyRule")},
    "ClusterRole": {1: ("metadata", "message", "ObjectMeta"), 2: ("rules", "messages", "PolicyRule"),
                    3: ("aggregationRule", "message", "AggregationRule")},
    "AggregationRule": {1: ("clusterRoleSelectors", "messages", "LabelSelector")},
    "PolicyRule": {1: ("verbs", "strings", None), 2: ("apiGroups", "strings", None),
                   3: ("resources", "strings", None), 4: ("resourceNames", "strings", None),
                   5: ("nonResourceURLs", "strings", None)},
    "RoleBinding": {1: ("metadata", "message", "ObjectMeta"), 2: ("subjects", "messages", "Subject"),
                    3: ("roleRef", "message", "RoleRef")},
    "Subject": {1: ("kind", "string", None), 2: ("apiGroup", "string", None), 3: ("name", "string", None),
                4: ("namespace", "string", None)},
    "RoleRef": {1: ("apiGroup", "string", None), 2: ("kind", "string", None), 3: ("name", "string", None)},
}
MESSAGES["ClusterRoleBinding"] = MESSAGES["RoleBinding"]

# The top-level kinds a body may carry (apiVersion, kind).
DECODABLE = {
    ("authentication.k8s.io/v1", "SelfSubjectReview"), ("authentication.k8s.io/v1beta1", "SelfSubjectReview"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"), ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
    ("authentication.k8s.io/v1", "TokenRequest"), ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"),
    ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
}


class UnsupportedKind(ValueError):
    """A well-formed protobuf body of a kind this server does not decode."""


def _time(data: bytes) -> str:
    seconds = 0
    for field, _, value in pb.fields(data):
        if field == 1:
            seconds = pb.as_int64(value, field)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, raw = "", b""
    for field, _, value in pb.fields(data):
        if field == 1:
            key = pb.as_string(value, field)
        elif field == 2 and isinstance(value, bytes):
            raw = value
    return key, raw


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    layout = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, _, value in pb.fields(data):
        if number not in layout:
            continue  # a field this server does not know: dropped, as decoding into an older struct does
        key, kind, sub = layout[number]
        if kind == "string":
            out[key] = pb.as_string(value, number)
        elif kind == "bool":
            out[key] = bool(pb.as_int64(value, number))
        elif kind == "int":
            out[key] = pb.as_int64(value, number)
        elif kind == "time":
            out[key] = _time(value if isinstance(value, bytes) else b"")
        elif kind == "strings":
            out.setdefault(key, []).append(pb.as_string(value, number))
        elif kind in ("message", "messages"):
            assert sub is not None
            decoded = decode_message(sub, value if isinstance(value, bytes) else b"")
            if kind == "message":
                out[key] = decoded
            else:
                out.setdefault(key, []).append(decoded)
        else:
            entry_key, raw = _map_entry(value if isinstance(value, bytes) else b"")
            out.setdefault(key, {})[entry_key] = base64.b64encode(raw).decode() if kind == "bytesmap" \
                else raw.decode()
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The object in a protobuf request body, as the equivalent JSON would give it."""
    envelope = pb.parse_envelope(body)
    if (envelope.api_version, envelope.kind) not in DECODABLE:
        raise UnsupportedKind(f"{envelope.api_version}/{envelope.kind}")
    return {"apiVersion": envelope.api_version, "kind": envelope.kind, **decode_message(envelope.kind, envelope.raw)}
