"""Writing responses: JSON (or YAML) bodies with the content type that was negotiated, and Status errors."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.negotiation import Negotiated


def encode(obj: Any, negotiated: Negotiated, *, pretty: bool = False) -> bytes:
    if negotiated.format == "yaml":
        return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).encode()
    if pretty:
        return json.dumps(obj, indent=2).encode() + b"\n"
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def respond(
    obj: Any,
    *,
    status: int = 200,
    negotiated: Negotiated | None = None,
    pretty: bool = False,
    warnings: list[str] | None = None,
) -> web.Response:
    negotiated = negotiated or Negotiated()
    response = web.Response(status=status, body=encode(obj, negotiated, pretty=pretty),
                            headers={"Content-Type": negotiated.content_type})
    for warning in warnings or ():
        # RFC 7234 warn-code 299, as kube-apiserver sends deprecation and unknown-field warnings.
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response


def error_response(error: ApiError) -> web.Response:
    response = web.Response(status=error.code, body=error.json() + b"\n",
                            headers={"Content-Type": "application/json"})
    for name, value in error.headers.items():
        response.headers[name] = value
    return response
