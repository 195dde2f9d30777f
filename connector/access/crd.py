"""The AccessRequest custom resource: its one definition (CRD), its REST paths, and the mapping
between an `AccessRequest` (connector.policy.access) and the object stored in Kubernetes.

`spec` is what the requester filed and never changes; `status` is what the transitions decide
(state, approvals, who decided, expiry, the grants). The CRD enables the status subresource, so a
transition is a PUT on `.../status` that carries `metadata.resourceVersion`: the apiserver refuses
it with 409 when another replica wrote first (connector.access.kubernetes_store). `infra` installs
the CRD (`python -m infra render` and the Pulumi program use `custom_resource_definition()`), and
`STORE_RULES` are what the connector's service account needs on it in its namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.kube.rbac import PolicyRule
from connector.policy.access import AccessRequest

GROUP = "access.eks-connector.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AccessRequest"
PLURAL = "accessrequests"
SINGULAR = "accessrequest"

# The request's own fields (to_json keys) that live in spec; every other key is status.
SPEC_KEYS = ("name", "requester", "reason", "duration_seconds", "created_at")

# What the connector does with AccessRequests in its namespace: list + watch feed every replica's
# copy; create files a request; update/patch of status are the transitions.
STORE_RULES = (
    PolicyRule(verbs=("get", "list", "watch", "create", "update", "patch"), api_groups=(GROUP,),
               resources=(PLURAL, f"{PLURAL}/status")),
)  # fmt: skip


def collection_path(namespace: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}"


def object_path(namespace: str, name: str) -> str:
    return f"{collection_path(namespace)}/{name}"


def to_object(request: AccessRequest, namespace: str, resource_version: str | None = None) -> dict[str, Any]:
    """The object for `request`; with `resource_version`, a write that only succeeds on that version."""
    data = request.to_json()
    metadata: dict[str, Any] = {"name": request.id, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    del data["id"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {k: data.pop(k) for k in SPEC_KEYS},
        "status": data,
    }


def from_object(obj: Mapping[str, Any]) -> AccessRequest:
    """The request an object holds; a created object has no status yet: it is pending."""
    return AccessRequest.from_json({**(obj.get("status") or {}), **obj["spec"], "id": obj["metadata"]["name"]})


def _signoff() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["user", "at"],
        "properties": {"user": {"type": "string"}, "at": {"type": "string"}, "reason": {"type": "string"}},
    }


def custom_resource_definition() -> dict[str, Any]:
    """The CRD manifest (apiextensions.k8s.io/v1), with a schema the apiserver enforces."""
    string = {"type": "string"}
    spec = {
        "type": "object",
        "required": list(SPEC_KEYS),
        "properties": {
            "name": string, "requester": string, "reason": string,
            "duration_seconds": {"type": "integer", "minimum": 1}, "created_at": string,
        },
    }  # fmt: skip
    status = {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": ["pending", "approved", "denied", "revoked", "expired"]},
            "approvals": {"type": "array", "items": _signoff()},
            "decided": {**_signoff(), "nullable": True},
            "expires_at": {"type": "string", "nullable": True},
            "grants": {"type": "array", "items": string},
        },
    }
    columns = [
        {"name": "Definition", "type": "string", "jsonPath": ".spec.name"},
        {"name": "Requester", "type": "string", "jsonPath": ".spec.requester"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Expires", "type": "string", "jsonPath": ".status.expires_at"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "listKind": f"{KIND}List"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": spec, "status": status},
                }},
            }],
        },
    }  # fmt: skip
