"""aiohttp's own 400 for a malformed request head, without the bytes that made it malformed.

aiohttp's parser quotes the offending header line in its 400 body and in the traceback it logs; that
line can be `Authorization: Bearer <token>` (an obs-folded or control-character-bearing credential).
The connector never writes or echoes a credential, so the parser's refusal says only what kind of
error it was (the first line of aiohttp's message, e.g. "Invalid header value char") and is logged
as one line without the quote.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


def parse_error_kind(message: str | None) -> str:
    """The first line of an aiohttp parser message ("Invalid header value char:" → without the colon)."""
    return (message or "").split("\n", 1)[0].strip().rstrip(":") or "malformed request"


class QuotelessRequestHandler(RequestHandler):
    """A request handler whose parser refusals name the kind of error, never the bytes (see the module)."""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        kind = parse_error_kind(message)
        log.info("malformed request head from %s: %s", request.remote, kind)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}\n\n{kind}\n")
        response.force_close()
        return response
