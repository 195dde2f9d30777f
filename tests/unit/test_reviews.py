"""Self-reviews answered by the connector (connector.proxy.reviews): detection, decoding, answers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.identity import Identity
from connector.kube.protobuf import length_delimited, message
from connector.kube.requestinfo import parse_request_info
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from connector.proxy.reviews import (
    ACCESS_REVIEW,
    RULES_REVIEW,
    SELF_REVIEW,
    ReviewError,
    answer_review,
    parse_review,
    review_kind,
)

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
SSR_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
PROTOBUF = "application/vnd.kubernetes.protobuf"
ALICE = Identity("alice", ("dev",), "oidc")
NOW = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)


# kubectl (gogo-protobuf) writes every string field, even an empty one: so do these bodies.
def _strings(*values: str) -> bytes:
    return b"".join(length_delimited(i, v.encode()) for i, v in enumerate(values, start=1))


def protobuf_body(api_version: str, kind: str, obj: bytes) -> bytes:
    # runtime.Unknown: typeMeta, raw, then the empty contentEncoding and contentType kubectl writes.
    unknown = message(1, _strings(api_version, kind)) + message(2, obj) + length_delimited(3, b"")
    return b"k8s\x00" + unknown + length_delimited(4, b"")


def ssar_protobuf(resource: tuple[str, ...] | None = None, non_resource: tuple[str, str] | None = None) -> bytes:
    spec = b""
    if resource is not None:
        spec += message(1, _strings(*resource))
    if non_resource is not None:
        spec += message(2, _strings(*non_resource))
    metadata = length_delimited(1, b"") + bytes([0x38, 0])  # empty name, generation 0: what kubectl writes
    return protobuf_body("authorization.k8s.io/v1", ACCESS_REVIEW, message(1, metadata) + message(2, spec))


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", SSAR_PATH, ACCESS_REVIEW),
        ("POST", SSRR_PATH, RULES_REVIEW),
        ("POST", SSR_PATH, SELF_REVIEW),
        ("POST", "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews", SELF_REVIEW),
        ("GET", SSAR_PATH, None),
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", None),
        ("POST", "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews", None),
        ("POST", "/apis/authorization.k8s.io/v1/namespaces/default/selfsubjectaccessreviews", None),
        ("POST", "/api/v1/namespaces/default/pods", None),
    ],
)
def test_review_kind(method: str, path: str, expected: str | None) -> None:
    assert review_kind(parse_request_info(method, path)) == expected


def info(path: str = SSAR_PATH):
    return parse_request_info("POST", path)


def test_json_and_protobuf_decode_to_the_same_spec() -> None:
    attrs = {"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec", "name": "web"}
    body = json.dumps(
        {"kind": ACCESS_REVIEW, "apiVersion": "authorization.k8s.io/v1", "spec": {"resourceAttributes": attrs}}
    )
    from_json = parse_review(ACCESS_REVIEW, info(), "application/json", body.encode())
    from_proto = parse_review(
        ACCESS_REVIEW, info(), PROTOBUF, ssar_protobuf(("default", "create", "", "", "pods", "exec", "web"))
    )
    assert from_json.spec == from_proto.spec == {"resourceAttributes": attrs}
    non_resource = parse_review(ACCESS_REVIEW, info(), PROTOBUF, ssar_protobuf(non_resource=("/healthz", "get")))
    assert non_resource.spec == {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}


def test_rules_and_self_review_decoding() -> None:
    body = protobuf_body("authorization.k8s.io/v1", RULES_REVIEW, message(1, b"") + message(2, _strings("team-a")))
    assert parse_review(RULES_REVIEW, info(SSRR_PATH), PROTOBUF, body).spec == {"namespace": "team-a"}
    json_body = b'{"kind":"SelfSubjectRulesReview","apiVersion":"authorization.k8s.io/v1","spec":{"namespace":"x"}}'
    assert parse_review(RULES_REVIEW, info(SSRR_PATH), "application/json", json_body).spec == {"namespace": "x"}
    ssr = b'{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null}}'
    review = parse_review(SELF_REVIEW, info(SSR_PATH), "application/json; charset=utf-8", ssr)
    assert review.api_version == "authentication.k8s.io/v1" and review.spec == {}


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        ("application/json", b"{not json", 400, "not valid JSON"),
        ("application/json", b"[]", 400, "JSON object"),
        ("application/json", b'{"spec": {}}', 422, "exactly one of"),
        ("application/json", b'{"spec": {"resourceAttributes": {}, "nonResourceAttributes": {}}}', 422, "exactly one"),
        ("application/json", b'{"spec": {"resourceAttributes": {"verb": 3}}}', 400, "must be a string"),
        ("application/json", b'{"kind": "Pod", "spec": {"resourceAttributes": {}}}', 400, "is a Pod"),
        ("application/json", b'{"apiVersion": "v1", "spec": {"resourceAttributes": {}}}', 400, "apiVersion v1"),
        ("application/yaml", b"", 415, "application/json"),
        (PROTOBUF, b"\x0a\x02", 400, "envelope"),
        (PROTOBUF, b"k8s\x00\x0a\x05ab", 400, "malformed"),
        (PROTOBUF, b"k8s\x00\x0f", 400, "malformed"),
    ],
)
def test_malformed_reviews(content_type: str, body: bytes, status: int, words: str) -> None:
    with pytest.raises(ReviewError) as exc:
        parse_review(ACCESS_REVIEW, info(), content_type, body)
    assert exc.value.status == status and words in exc.value.message


@given(st.binary(max_size=200))
def test_protobuf_reader_never_fails_unexpectedly(noise: bytes) -> None:
    for body in (noise, b"k8s\x00" + noise):
        try:
            parse_review(ACCESS_REVIEW, info(), PROTOBUF, body)
        except ReviewError as exc:
            assert exc.status in (400, 415, 422)


_segment = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(st.tuples(*[_segment] * 7))
def test_protobuf_resource_attributes_round_trip(values: tuple[str, ...]) -> None:
    review = parse_review(ACCESS_REVIEW, info(), PROTOBUF, ssar_protobuf(values))
    names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
    assert review.spec["resourceAttributes"] == {n: v for n, v in zip(names, values, strict=True) if v}


ENGINE = PolicyEngine(
    [
        Policy.model_validate(
            {
                "name": "dev-read",
                "subjects": {"groups": ["dev"]},
                "sockets": ["prod"],
                "kubernetes": {"rules": [{"verbs": ["get", "list"], "resources": ["pods"], "namespaces": ["default"]}]},
            }
        )
    ]
)


def answer(kind: str, spec: dict) -> dict:
    path = {ACCESS_REVIEW: SSAR_PATH, RULES_REVIEW: SSRR_PATH, SELF_REVIEW: SSR_PATH}[kind]
    body = json.dumps({"spec": spec}).encode()
    review = parse_review(kind, info(path), "application/json", body)
    return answer_review(
        review,
        ALICE,
        decide=lambda ri: ENGINE.decide(ALICE, "prod", {}, ri, "10.0.0.1", NOW),
        rules_for=lambda ns: ENGINE.rules_for(ALICE, "prod", {}, ns, "10.0.0.1", NOW),
    )


@pytest.mark.parametrize(
    ("attrs", "allowed", "reason"),
    [
        ({"namespace": "default", "verb": "list", "resource": "pods"}, True, "allowed by policy dev-read rule 0"),
        ({"namespace": "default", "verb": "get", "resource": "pods", "name": "x"}, True, "dev-read"),
        ({"namespace": "kube-system", "verb": "list", "resource": "pods"}, False, "namespace kube-system"),
        ({"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"}, False, "pods/exec"),
        ({"namespace": "default", "verb": "*", "resource": "pods"}, False, "dev-read"),
        ({"verb": "list", "resource": "pods"}, False, "dev-read"),
    ],
)
def test_access_review_answers(attrs: dict, allowed: bool, reason: str) -> None:
    out = answer(ACCESS_REVIEW, {"resourceAttributes": attrs})
    assert out["kind"] == ACCESS_REVIEW and out["apiVersion"] == "authorization.k8s.io/v1"
    assert out["spec"] == {"resourceAttributes": attrs}
    assert out["status"]["allowed"] is allowed
    assert reason in out["status"]["reason"]


def test_non_resource_access_review_discovery_is_open() -> None:
    out = answer(ACCESS_REVIEW, {"nonResourceAttributes": {"path": "/api", "verb": "get"}})
    assert out["status"]["allowed"] is True


def test_rules_review_and_self_review() -> None:
    out = answer(RULES_REVIEW, {"namespace": "default"})
    assert out["status"]["incomplete"] is False
    assert out["status"]["resourceRules"] == [{"verbs": ["get", "list"], "apiGroups": ["*"], "resources": ["pods"]}]
    assert {"/api", "/version"} <= set(out["status"]["nonResourceRules"][0]["nonResourceURLs"])
    assert answer(RULES_REVIEW, {"namespace": "other"})["status"]["resourceRules"] == []
    whoami = answer(SELF_REVIEW, {})
    assert whoami["status"] == {"userInfo": {"username": "alice", "groups": ["dev"]}}
    assert "spec" not in whoami
