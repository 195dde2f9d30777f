"""The computed "create-only" resources: self-subject reviews and service-account TokenRequests.

- `SelfSubjectReview` (authentication.k8s.io v1, v1beta1): who the caller is (`kubectl auth whoami`).
- `SelfSubjectAccessReview`: may the caller do X (`kubectl auth can-i`), answered by the authorizer.
- `SelfSubjectRulesReview`: what the caller may do in a namespace (`kubectl auth can-i --list`).
- `serviceaccounts/{name}/token`: a TokenRequest, answered with a signed, expiring token.
"""

from __future__ import annotations

from typing import Any

from sandbox.apiserver.authn import API_AUDIENCES, Authenticator, UserInfo
from sandbox.apiserver.authz import Attributes, Authorizer
from sandbox.apiserver.errors import FieldError, bad_request, invalid
from sandbox.apiserver.times import rfc3339

_MIN_EXPIRATION = 600
_MAX_EXPIRATION = 2**32
_DEFAULT_EXPIRATION = 3600


def _spec(body: dict[str, Any]) -> dict[str, Any]:
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise bad_request("spec: expected an object")
    return spec


def self_subject_review(api_version: str, user: UserInfo) -> dict[str, Any]:
    return {"kind": "SelfSubjectReview", "apiVersion": api_version, "metadata": {"creationTimestamp": None},
            "status": {"userInfo": user.review_body()}}


def self_subject_access_review(body: dict[str, Any], user: UserInfo, authorizer: Authorizer) -> dict[str, Any]:
    spec = _spec(body)
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        raise invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", [FieldError(
            "FieldValueInvalid", "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified", spec)])
    if resource is not None:
        if not isinstance(resource, dict):
            raise bad_request("spec.resourceAttributes: expected an object")
        attrs = Attributes(
            user, str(resource.get("verb", "")), True,
            namespace=str(resource.get("namespace", "")), api_group=str(resource.get("group", "")),
            api_version=str(resource.get("version", "")), resource=str(resource.get("resource", "")),
            subresource=str(resource.get("subresource", "")), name=str(resource.get("name", "")),
        )
    else:
        if not isinstance(non_resource, dict):
            raise bad_request("spec.nonResourceAttributes: expected an object")
        attrs = Attributes(user, str(non_resource.get("verb", "")), False, path=str(non_resource.get("path", "")))
    decision = authorizer.authorize(attrs)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def self_subject_rules_review(body: dict[str, Any], user: UserInfo, authorizer: Authorizer) -> dict[str, Any]:
    spec = _spec(body)
    namespace = str(spec.get("namespace", ""))
    resource_rules, non_resource_rules, error = authorizer.rules_for(user, namespace)
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                              "incomplete": False}
    if error:
        status["evaluationError"] = error
    return {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def token_request(body: dict[str, Any], service_account: dict[str, Any], authenticator: Authenticator
                  ) -> dict[str, Any]:
    spec = _spec(body)
    expiration = spec.get("expirationSeconds", _DEFAULT_EXPIRATION)
    audiences = spec.get("audiences") or list(API_AUDIENCES)
    name = service_account["metadata"]["name"]
    errors = []
    if not isinstance(expiration, int) or expiration < _MIN_EXPIRATION:
        errors.append(FieldError("FieldValueInvalid", "spec.expirationSeconds",
                                 "may not specify a duration less than 10 minutes", expiration))
    elif expiration > _MAX_EXPIRATION:
        errors.append(FieldError("FieldValueTooLong", "spec.expirationSeconds",
                                 "may not specify a duration larger than 2^32 seconds", expiration))
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        errors.append(FieldError("FieldValueInvalid", "spec.audiences", "must be a list of non-empty strings",
                                 audiences))
    if errors:
        raise invalid("TokenRequest", "authentication.k8s.io", name, errors)
    issued = authenticator.issue_service_account_token(
        service_account, expiration_seconds=expiration, audiences=tuple(audiences))
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": service_account["metadata"]["namespace"],
                     "creationTimestamp": None},
        "spec": {**spec, "audiences": audiences, "expirationSeconds": expiration},
        "status": {"token": issued.token, "expirationTimestamp": rfc3339(issued.expires_at)},
    }
