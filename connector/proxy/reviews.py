"""Self-reviews answered by the connector: `kubectl auth can-i`, `auth can-i --list`, `auth whoami`.

Forwarded, a SelfSubjectAccessReview, SelfSubjectRulesReview or SelfSubjectReview would describe the
connector's own service account on the cluster, not the caller. So the connector answers them from
its policies for the caller (and with the caller's identity), as the cluster would from RBAC.

Like kube-apiserver's `system:basic-user` role, anyone who may use a socket may create them; no
policy rule is needed. kubectl >= 1.30 sends these bodies as Kubernetes protobuf (the `k8s\\0`
envelope), older clients as JSON; both are read here (only the few fields these kinds have), and the
answer is JSON, which every client accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.identity import Identity
from connector.kube import protobuf
from connector.kube.requestinfo import RequestInfo
from connector.policy.engine import Decision, RulesForNamespace

ACCESS_REVIEW = "SelfSubjectAccessReview"
RULES_REVIEW = "SelfSubjectRulesReview"
SELF_REVIEW = "SelfSubjectReview"

# (API group, resource) -> kind. Versions are not checked here: the cluster's discovery tells clients
# which versions exist, and the shape of these kinds is the same in all of them.
_LOCAL_REVIEWS: dict[tuple[str, str], str] = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"): ACCESS_REVIEW,
    ("authorization.k8s.io", "selfsubjectrulesreviews"): RULES_REVIEW,
    ("authentication.k8s.io", "selfsubjectreviews"): SELF_REVIEW,
}
_RESOURCE_ATTRIBUTES = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
_NON_RESOURCE_ATTRIBUTES = ("path", "verb")
_ACCESS_ATTRIBUTES = (("resourceAttributes", _RESOURCE_ATTRIBUTES), ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES))

# The largest self-review body read. A real one is a few hundred bytes (names are at most 253 characters,
# selectors a few more); the general 3 MiB body limit would let one body hold 1.5 million tiny protobuf
# fields, seconds of pure-Python decoding on the event loop before the answer. 64 KiB bounds that to
# milliseconds while leaving room for any review a client sends.
MAX_REVIEW_BODY_BYTES = 64 * 1024


class ReviewError(Exception):
    """The review request is malformed; `status` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def review_kind(info: RequestInfo) -> str | None:
    """The review kind when this request creates a self-review (answered locally), else None."""
    if not info.is_resource_request or info.verb != "create" or info.subresource or info.name or info.namespace:
        return None
    return _LOCAL_REVIEWS.get((info.api_group, info.resource))


@dataclass(frozen=True)
class ReviewRequest:
    """A decoded self-review: its kind, apiVersion and spec in the JSON field names."""

    kind: str
    api_version: str
    spec: dict[str, Any]


def parse_review(kind: str, info: RequestInfo, content_type: str, body: bytes) -> ReviewRequest:
    """Decode the request body (JSON or Kubernetes protobuf) into a ReviewRequest; raises ReviewError."""
    api_version = f"{info.api_group}/{info.api_version}"
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == protobuf.MEDIA_TYPE:
        spec, body_kind, body_version = _parse_protobuf(kind, body)
    elif media_type in ("application/json", ""):
        spec, body_kind, body_version = _parse_json(kind, body)
    else:
        raise ReviewError(415, f"{kind} must be sent as application/json or {protobuf.MEDIA_TYPE}")
    if body_kind and body_kind != kind:
        raise ReviewError(400, f"the body is a {body_kind}, but this URL creates {kind}")
    if body_version and body_version != api_version:
        raise ReviewError(400, f"the body has apiVersion {body_version}, but this URL is {api_version}")
    if kind == ACCESS_REVIEW:
        has_resource = spec.get("resourceAttributes") is not None
        has_non_resource = spec.get("nonResourceAttributes") is not None
        if has_resource == has_non_resource:
            raise ReviewError(
                422,
                f"{kind}.authorization.k8s.io is invalid: spec: exactly one of nonResourceAttributes or "
                "resourceAttributes must be specified",
            )
    return ReviewRequest(kind, api_version, spec)


def _parse_json(kind: str, body: bytes) -> tuple[dict[str, Any], str, str]:
    try:
        obj = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReviewError(400, f"the {kind} body is not valid JSON: {exc}") from None
    except RecursionError:  # a few kilobytes of `[[[[...` exhaust the decoder's nesting limit
        raise ReviewError(400, f"the {kind} body is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ReviewError(400, f"the {kind} body must be a JSON object")
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise ReviewError(400, f"{kind} spec must be an object")
    clean: dict[str, Any] = {}
    if kind == ACCESS_REVIEW:
        for key, fields in _ACCESS_ATTRIBUTES:
            attrs = spec.get(key)
            if attrs is None:
                continue
            if not isinstance(attrs, dict):
                raise ReviewError(400, f"{kind} spec.{key} must be an object")
            clean[key] = {}
            for name in fields:
                value = attrs.get(name, "")
                if not isinstance(value, str):
                    raise ReviewError(400, f"{kind} spec.{key}.{name} must be a string")
                if value:
                    clean[key][name] = value
    elif kind == RULES_REVIEW:
        namespace = spec.get("namespace", "")
        if not isinstance(namespace, str):
            raise ReviewError(400, f"{kind} spec.namespace must be a string")
        clean["namespace"] = namespace
    body_kind, body_version = obj.get("kind", ""), obj.get("apiVersion", "")
    if not isinstance(body_kind, str) or not isinstance(body_version, str):
        raise ReviewError(400, f"the {kind} body's kind and apiVersion must be strings")
    return clean, body_kind, body_version


def _parse_protobuf(kind: str, body: bytes) -> tuple[dict[str, Any], str, str]:
    """Read the `runtime.Unknown` envelope and the review's spec fields (k8s.io/api generated.proto numbers)."""
    try:
        envelope = protobuf.parse_envelope(body)
        if envelope.content_encoding:
            raise ReviewError(415, f"the {kind} protobuf body uses a content encoding the connector does not read")
        obj = protobuf.Fields(envelope.raw)
        spec_fields = obj.message(2) if kind != SELF_REVIEW else protobuf.Fields(b"")
        spec: dict[str, Any] = {}
        if kind == ACCESS_REVIEW:
            for number, (key, names) in enumerate(_ACCESS_ATTRIBUTES, start=1):
                if number in spec_fields:
                    attrs = spec_fields.message(number)
                    spec[key] = {n: v for i, n in enumerate(names, start=1) if (v := attrs.string(i))}
        elif kind == RULES_REVIEW:
            spec["namespace"] = spec_fields.string(1)
    except ValueError as exc:
        raise ReviewError(400, f"the {kind} protobuf body is malformed: {exc}") from None
    return spec, envelope.kind, envelope.api_version


def access_review_request_info(spec: dict[str, Any]) -> RequestInfo:
    """The request an access review asks about, in the form the policy engine decides on."""
    attrs = spec.get("resourceAttributes")
    if attrs is not None:
        parts = tuple(p for p in (attrs.get("resource", ""), attrs.get("name", ""), attrs.get("subresource", "")) if p)
        return RequestInfo(
            is_resource_request=True,
            path="",
            verb=attrs.get("verb", ""),
            api_prefix="api" if not attrs.get("group") else "apis",
            api_group=attrs.get("group", ""),
            api_version=attrs.get("version", ""),
            namespace=attrs.get("namespace", ""),
            resource=attrs.get("resource", ""),
            subresource=attrs.get("subresource", ""),
            name=attrs.get("name", ""),
            parts=parts,
        )
    attrs = spec["nonResourceAttributes"]
    return RequestInfo(is_resource_request=False, path=attrs.get("path", ""), verb=attrs.get("verb", ""))


def answer_review(
    review: ReviewRequest,
    identity: Identity,
    *,
    decide: Callable[[RequestInfo], Decision],
    rules_for: Callable[[str], RulesForNamespace],
) -> dict[str, Any]:
    """The created review object, status filled in, as the cluster would return it (HTTP 201)."""
    status: dict[str, Any]
    if review.kind == ACCESS_REVIEW:
        decision = decide(access_review_request_info(review.spec))
        status = {"allowed": decision.allowed}
        if decision.allowed and decision.policy is not None:
            status["reason"] = f"allowed by policy {decision.policy}" + (
                f" rule {decision.rule}" if decision.rule is not None else ""
            )
        elif not decision.allowed and decision.reason:
            status["reason"] = decision.reason
    elif review.kind == RULES_REVIEW:
        rules = rules_for(review.spec.get("namespace", ""))
        status = {
            "resourceRules": list(rules.resource_rules),
            "nonResourceRules": list(rules.non_resource_rules),
            "incomplete": False,
        }
    else:
        status = {"userInfo": {"username": identity.user, "groups": list(identity.groups)}}
    out: dict[str, Any] = {
        "kind": review.kind,
        "apiVersion": review.api_version,
        "metadata": {"creationTimestamp": None},
    }
    if review.kind != SELF_REVIEW:
        out["spec"] = review.spec
    out["status"] = status
    return out
