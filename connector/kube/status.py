"""Kubernetes `Status` bodies, the error shape every Kubernetes client knows how to print.

kubectl prints `Error from server (<Reason>): <message>` for these, so the message is what a user
reads: say what was refused and why.
"""

from __future__ import annotations

import json
from typing import Any

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "Timeout",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(
    code: int, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if 200 <= code < 300 else "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, ""),
        "code": code,
    }
    if details is not None:  # kube-apiserver writes `"details": {}` on a path it does not serve
        body["details"] = details
    return body


def status_json(code: int, message: str, **kwargs: Any) -> bytes:
    return json.dumps(status_body(code, message, **kwargs), separators=(",", ":")).encode()
