"""Forward one plain (non-upgrade) request to a socket's cluster and stream the answer back.

Bodies are streamed both ways with aiohttp: every chunk the cluster sends is written to the client
as it arrives, so watch events and `logs -f` lines are flushed at once and no list is ever held in
memory. Redirects are never followed (a redirect is the cluster's answer to the client), and bytes
are relayed undecoded (`Content-Encoding` stays the cluster's). One exception: the small JSON `/api`
answer is read whole and rewritten without `serverAddressByClientCIDRs` (see core_discovery_response).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from connector.proxy.config import UpstreamTimeoutsConfig
from connector.proxy.headers import client_response_headers
from connector.proxy.registry import ActiveStream, SocketEntry

log = logging.getLogger(__name__)


class UpstreamFailure(Exception):
    """The cluster could not be reached or did not answer: `status` (502/503/504) and a message for the client.

    `detail` (for the log and the audit event) may name addresses and TLS errors; `public` does not.
    """

    def __init__(self, status: int, public: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.public = public
        self.detail = detail


class ConnectTimeout(TimeoutError):
    """Connecting (TCP + TLS) to the cluster took longer than `connect_seconds`."""


def upstream_url(entry: SocketEntry, raw_path: str, raw_query: str) -> URL:
    """The cluster URL for a request, path and query byte-identical to what the client sent.

    Raises ValueError when the URL would not carry them byte for byte (a `#` starts a fragment and
    cuts the query): the policy decided on these bytes, so the cluster must be asked exactly them.
    """
    base = entry.upstream.base_url
    url = URL(base + raw_path + (f"?{raw_query}" if raw_query else ""), encoded=True)
    expected_path = URL(base).raw_path.rstrip("/") + raw_path
    if url.raw_path != expected_path or url.raw_query_string != raw_query or url.raw_fragment:
        raise ValueError(f"the request target {raw_path!r}?{raw_query!r} cannot be forwarded byte for byte")
    return url


def classify_failure(
    socket: str, exc: BaseException, timeouts: UpstreamTimeoutsConfig, *, connecting: bool = False
) -> UpstreamFailure:
    """Map a client-side exception to what the caller gets: 504 timeout, 502 TLS or bad answer, 503 unreachable.

    `connecting` says that a plain OSError happened while connecting (aiohttp's errors say it themselves).
    """
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return UpstreamFailure(502, f"socket {socket}: the TLS handshake with the cluster failed", detail)
    if isinstance(exc, aiohttp.ConnectionTimeoutError | ConnectTimeout):
        return UpstreamFailure(
            504, f"socket {socket}: could not connect to the cluster within {timeouts.connect_seconds:g} s", detail
        )
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(
            504, f"socket {socket}: the cluster did not answer within {timeouts.response_seconds:g} s", detail
        )
    if isinstance(exc, aiohttp.ClientConnectorError) or (
        connecting and isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError)
    ):
        return UpstreamFailure(503, f"socket {socket}: the cluster is unreachable", detail)
    return UpstreamFailure(502, f"socket {socket}: the cluster closed the connection without a valid answer", detail)


@dataclass
class Counters:
    """Body bytes relayed for one request (request body in, response body out)."""

    bytes_in: int = 0
    bytes_out: int = 0


async def counted(body: AsyncIterator[bytes], counters: Counters) -> AsyncIterator[bytes]:
    async for chunk in body:
        counters.bytes_in += len(chunk)
        yield chunk


async def open_upstream(
    entry: SocketEntry,
    method: str,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes | AsyncIterator[bytes] | None,
    timeouts: UpstreamTimeoutsConfig,
) -> aiohttp.ClientResponse:
    """Send the request and wait (bounded) for the response headers; raises UpstreamFailure."""
    upstream = entry.upstream
    try:
        async with asyncio.timeout(timeouts.response_seconds):
            return await entry.session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                ssl=upstream.ssl_context if upstream.ssl_context is not None else True,
                server_hostname=upstream.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect_seconds),
                compress=None,
                chunked=None,
                expect100=False,
                raise_for_status=False,
            )
    except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
        raise classify_failure(entry.name, exc, timeouts) from exc


class _CoalescedResponse(web.StreamResponse):
    """A response whose headers leave with its first body bytes: one TLS record and one send instead of
    two (aiohttp's own `web.Response` works this way). Not for streams: a watch's headers must reach the
    client before its first event, which may be minutes away."""

    _send_headers_immediately = False


def client_response(upstream: aiohttp.ClientResponse, request_id: str, *, stream: bool) -> web.StreamResponse:
    """The client's response for the cluster's: same status and headers (hygiene applied), body to follow."""
    headers = client_response_headers(upstream.headers)
    headers["X-Connector-Request-Id"] = request_id
    cls = web.StreamResponse if stream else _CoalescedResponse
    return cls(status=upstream.status, reason=upstream.reason, headers=headers)


CORE_DISCOVERY_PATHS = frozenset({"/api", "/api/"})
MAX_CORE_DISCOVERY_BYTES = 1 << 20  # the real answer is a few hundred bytes


def is_core_discovery(method: str, k8s_path: str, upstream: aiohttp.ClientResponse) -> bool:
    """The JSON `/api` answer (APIVersions), whose `serverAddressByClientCIDRs` names the cluster's own
    endpoint: socket users reach the cluster only through the connector and must not learn it."""
    return (
        method == "GET" and k8s_path in CORE_DISCOVERY_PATHS and upstream.status == 200
        and upstream.content_type == "application/json"
        and upstream.headers.get("Content-Encoding", "identity").lower() in ("identity", "gzip")
    )  # fmt: skip


async def core_discovery_response(
    upstream: aiohttp.ClientResponse, request_id: str, counters: Counters
) -> web.StreamResponse:
    """The `/api` answer read whole and without `serverAddressByClientCIDRs`; relayed as it is when it is
    larger than expected or not a JSON object (nothing to strip that a client could read). The answer
    comes from the socket's own cluster, so reading it whole bounds nothing a user controls."""
    raw = await upstream.read()
    counters.bytes_out += len(raw)
    headers = client_response_headers(upstream.headers)
    headers["X-Connector-Request-Id"] = request_id
    if len(raw) <= MAX_CORE_DISCOVERY_BYTES:
        try:
            doc = json.loads(gzip.decompress(raw) if "Content-Encoding" in headers else raw)
        except (ValueError, OSError, EOFError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            doc.pop("serverAddressByClientCIDRs", None)
            raw = json.dumps(doc, separators=(",", ":")).encode()
            headers.popall("Content-Encoding", None)
    headers.popall("Content-Length", None)
    return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=raw)


async def _copy(upstream: aiohttp.ClientResponse, response: web.StreamResponse, counters: Counters) -> None:
    async for chunk in upstream.content.iter_any():
        counters.bytes_out += len(chunk)
        await response.write(chunk)


async def relay_body(
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    counters: Counters,
    stream: ActiveStream | None = None,
) -> bool:
    """Copy the body to the client and finish the response; True when ended early by `stream.stop()`.

    A stopped stream (socket retired, connector shutting down) ends like a cluster-side end of a
    watch or log: a complete chunked response, which clients treat as "reconnect", not as an error.
    Errors (cluster or client connection lost) propagate; the caller then closes the client connection.
    """
    if stream is None:
        await _copy(upstream, response, counters)
        await response.write_eof()
        return False
    pump = asyncio.ensure_future(_copy(upstream, response, counters))
    stopped = asyncio.ensure_future(stream.stopped.wait())
    try:
        await asyncio.wait({pump, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if pump.done():
            pump.result()
            await response.write_eof()
            return False
        pump.cancel()
        await asyncio.wait({pump})
        upstream.close()
        await response.write_eof()
        return True
    finally:
        stopped.cancel()
        if not pump.done():
            pump.cancel()
        # Retrieve the pump's outcome so that an error after the stop is not reported as "never retrieved".
        pump.add_done_callback(lambda t: t.cancelled() or t.exception())
