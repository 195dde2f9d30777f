"""aiohttp's own 400 for a malformed request head, without the bytes that made it malformed.

aiohttp's parser quotes the offending header line in its 400 body and in the traceback it logs; that
line can be `Authorization: Bearer <token>` (an obs-folded or control-character-bearing credential).
The connector never writes or echoes a credential, so the parser's refusal says only what kind of
error it was (the first line of aiohttp's message, e.g. "Invalid header value char") and is logged
as one line without the quote.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


def parse_error_kind(message: str | None) -> str:
    """The first line of an aiohttp parser message ("Invalid header value char:" → without the colon)."""
    return (message or "").split("\n", 1)[0].strip().rstrip(":") or "malformed request"


class _QuotelessRequestHandler(RequestHandler):
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        kind = parse_error_kind(message)
        log.info("malformed request head from %s: %s", request.remote, kind)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = web.Response(status=status, text=f"{status} Bad Request\n\n{kind}\n")
        response.force_close()
        return response


class _QuotelessServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuotelessRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors without quoting the request."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no setting for the request handler class; the server is ours to specialise.
        server.__class__ = _QuotelessServer
        return server
