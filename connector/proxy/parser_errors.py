"""The connector's answer to a request head it cannot read: named, never quoted, audited, with a request id.

aiohttp's parser quotes the offending header line in its 400 body and in the traceback it logs; that
line can be `Authorization: Bearer <token>` (an obs-folded or control-character-bearing credential).
The connector never writes or echoes a credential, so the parser's refusal says only what kind of
error it was (the first line of aiohttp's message, e.g. "Invalid header value char") and is logged
as one line without the quote.

Like every other refusal it carries a request id (`X-Connector-Request-Id` and the body) and is an
audit event (`rejected`, the kind of error as its reason). Nothing of the head is trusted, so the
event names no path and no user: only the source IP and, when the head starts with an HTTP method
token, that method. The body stays plain text, as kube-apiserver's own HTTP server answers an
unreadable head, because no `Accept` header can be believed.
"""

from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus

from aiohttp import web

from connector import metrics
from connector.audit.events import AuditEvent

log = logging.getLogger(__name__)

# An HTTP method token as it starts a request line; anything else is not named in the audit event.
_METHOD = re.compile(rb"([A-Z]{1,16}) ")


def parse_error_kind(message: str | None) -> str:
    """The first line of an aiohttp parser message ("Invalid header value char:" → without the colon)."""
    return (message or "").split("\n", 1)[0].strip().rstrip(":") or "malformed request"


def head_method(head_start: bytes) -> str:
    """The method a request head starts with, when it starts with one ("" otherwise)."""
    match = _METHOD.match(head_start)
    return match.group(1).decode() if match else ""


def refusal_response(status: int, kind: str, request_id: str) -> web.Response:
    """The plain-text refusal of an unreadable head; the connection closes after it."""
    response = web.Response(
        status=status,
        text=f"{status} {HTTPStatus(status).phrase}\n\n{kind}\nrequest id {request_id}\n",
        headers={"X-Connector-Request-Id": request_id},
    )
    response.force_close()
    return response


def refusal_event(status: int, kind: str, request_id: str, source_ip: str, method: str) -> AuditEvent:
    return AuditEvent(
        request_id=request_id,
        stage="ResponseComplete",
        decision="rejected",
        code=status,
        method=method,
        path="",
        source_ip=source_ip,
        reason=f"malformed request head: {kind}",
    )


def new_refusal(status: int, message: str | None, source_ip: str, method: str) -> tuple[web.Response, AuditEvent]:
    """The answer and the audit event for a head the parser refused, logged as one line without a quote."""
    kind = parse_error_kind(message)
    request_id = uuid.uuid4().hex
    log.info("malformed request head from %s: %s (request %s)", source_ip, kind, request_id)
    metrics.REQUESTS.labels("", "", str(status), "rejected").inc()
    return refusal_response(status, kind, request_id), refusal_event(status, kind, request_id, source_ip, method)
