"""The errors the emulated API server answers with, worded as kube-apiserver words them.

Clients branch on `reason` and `code` (client-go's `IsNotFound`, `IsConflict`, kubectl's retry on
conflict) and print `message`, so both follow `k8s.io/apimachinery/pkg/api/errors` exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connector.kube.status import status_body


def qualified(resource: str, group: str) -> str:
    """`pods`, `deployments.apps`: how kube-apiserver names a resource in its messages."""
    return f"{resource}.{group}" if group else resource


@dataclass
class ApiError(Exception):
    """A failed request: raised anywhere below the server and turned into a `Status` response."""

    code: int
    message: str
    reason: str | None = None
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    list_meta: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        body = status_body(self.code, self.message, reason=self.reason, details=self.details)
        if self.list_meta:
            body["metadata"] = dict(self.list_meta)
        return body

    def json(self) -> bytes:
        return json.dumps(self.body(), separators=(",", ":")).encode()


def _details(resource: str, group: str, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    details.update(extra)
    return details


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, f'{qualified(resource, group)} "{name}" not found', details=_details(resource, group, name))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'{qualified(resource, group)} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(resource, group, name),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        reason="Conflict",
        details=_details(resource, group, name),
    )


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource", details={})


def unsupported_media_type(supported: list[str]) -> ApiError:
    return ApiError(
        415, f"the body of the request was in an unknown format - accepted media types include: {', '.join(supported)}"
    )


def not_acceptable(supported: list[str]) -> ApiError:
    return ApiError(406, f"only the following media types are accepted: {', '.join(supported)}")


def forbidden(resource: str, group: str, name: str, why: str) -> ApiError:
    """`errors.NewForbidden`: `why` is the authorizer's sentence, e.g. `User "bob" cannot list ...`."""
    if not resource:
        message = f"forbidden: {why}"
    elif name:
        message = f'{qualified(resource, group)} "{name}" is forbidden: {why}'
    else:
        message = f"{qualified(resource, group)} is forbidden: {why}"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    return ApiError(403, message, details=details)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def expired(message: str) -> ApiError:
    return ApiError(410, message, reason="Expired")


@dataclass(frozen=True)
class FieldError:
    """One `field.Error`: `kind` is its type (`FieldValueRequired`, `FieldValueInvalid`, ...)."""

    kind: str
    path: str
    detail: str = ""
    value: Any = None

    def body(self) -> str:
        if self.kind == "FieldValueRequired":
            text = "Required value"
        elif self.kind == "FieldValueForbidden":
            text = "Forbidden"
        elif self.kind == "FieldValueDuplicate":
            text = f"Duplicate value: {_go_value(self.value)}"
        elif self.kind == "FieldValueNotSupported":
            text = f"Unsupported value: {_go_value(self.value)}"
        else:
            text = f"Invalid value: {_go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        # Go's %#v of a map[string]string, keys sorted
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}"
                                                for k, v in sorted(value.items())) + "}"
    return json.dumps(value, separators=(",", ":"))


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """`errors.NewInvalid`: 422 naming the kind (`Deployment.apps "web" is invalid: ...`)."""
    texts = [f"{e.path}: {e.body()}" for e in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": e.kind, "message": e.body(), "field": e.path} for e in errors]
    return ApiError(422, f'{qualified_kind} "{name}" is invalid: {summary}', details=details)
