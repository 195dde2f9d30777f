"""The request path of `/sockets/{socket}/...`: check, authenticate, authorize, forward, audit.

In order, as the issue lists them: refuse what the cluster could read differently from us (400),
client `Impersonate-*` headers (403), requests over the limits (413) and unsupported upgrades (400);
authenticate (401); find the socket (404/503); answer self-reviews locally; ask the policy engine
(403 naming the socket and why); count a long-lived stream against the stream limits (429); then
forward, streaming, or relay an upgrade. Every refusal is audited before its response is sent;
forwarded requests are audited when they complete, streams when they start and when they end. An
unexpected exception becomes a 500 Status naming the request id, with its traceback in the log; a
request cancelled before its answer (client gone, shutdown) is still audited, with code 499.

A 401 from the cluster is about the connector's own credentials, never the user's (the user's went no
further than the connector), so it is answered 502 with what to check, rather than relayed: kubectl
would tell the user to log in again, which cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector import metrics
from connector.audit.events import AuditEvent, Decision, RequestAttributes, Stage
from connector.audit.recording import SessionMeta
from connector.authn.errors import AuthenticationError
from connector.identity import Identity
from connector.kube.requestinfo import RequestInfo, parse_query, parse_request_info, query_flag, reject_reason
from connector.kube.status import status_json
from connector.policy import access
from connector.policy.engine import Decision as PolicyDecision
from connector.policy.engine import PolicyEngine
from connector.policy.rules import describe_request, effective_verb, stream_request_info
from connector.proxy import forward, headers, reviews, upgrade
from connector.proxy.granted_streams import GrantedStream
from connector.proxy.registry import RETIRED, ActiveStream, SocketEntry
from connector.proxy.status_form import unknown_socket_status, wants_plain_text
from connector.proxy.stream_limits import StreamLimitExceeded

if TYPE_CHECKING:
    from connector.proxy.app import ProxyContext

log = logging.getLogger(__name__)

CONTEXT: web.AppKey[ProxyContext] = web.AppKey("connector_context")

SOCKETS_PREFIX = "/sockets/"
SESSION_KINDS = frozenset({"exec", "attach", "portforward"})
CLIENT_CLOSED = 499  # audit code of a request cancelled before any response (nginx's "client closed request")


class Refusal(Exception):
    """Stop the request here with a Status response (and its audit event)."""

    def __init__(self, status: int, message: str, decision: Decision, *, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.decision = decision
        self.detail = detail


def split_socket_path(raw_path: str) -> tuple[str, str]:
    """`/sockets/prod/api/v1/pods` -> ("prod", "/api/v1/pods"); raises Refusal for other shapes."""
    if not raw_path.startswith(SOCKETS_PREFIX):
        raise Refusal(400, "the path must start with /sockets/SOCKET/ (not percent-encoded)", "rejected")
    name, _, rest = raw_path[len(SOCKETS_PREFIX) :].partition("/")
    if not name:
        raise Refusal(404, "no socket named in the path: use /sockets/SOCKET/...", "rejected")
    return name, "/" + rest


def stream_kind(info: RequestInfo, raw_query: str, is_upgrade: bool) -> str | None:
    """The kind of long-lived stream this request opens (for metrics, audit and clean shutdown), or None."""
    if is_upgrade:
        return info.subresource if info.subresource in SESSION_KINDS else "upgrade"
    if info.verb == "watch":
        return "watch"
    if info.subresource == "log" and query_flag(parse_query(raw_query), "follow"):
        return "log"
    return None


def status_response(status: int, message: str, request_id: str | None, *, plain_text: bool = False) -> web.Response:
    """A Status JSON, or its message as text where the client can print only text (see status_form)."""
    headers = {"X-Connector-Request-Id": request_id} if request_id is not None else {}
    if plain_text:
        return web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)
    return web.Response(
        status=status, body=status_json(status, message), content_type="application/json", headers=headers
    )


def audit_attributes(info: RequestInfo) -> RequestAttributes:
    """The parsed request as the audit event records it (also what bench.replay writes)."""
    return RequestAttributes(
        # The verb policies decide on: exec, attach and port-forward are `create` whatever the method.
        verb=effective_verb(info),
        api_group=info.api_group,
        api_version=info.api_version,
        namespace=info.namespace,
        resource=info.resource,
        subresource=info.subresource,
        name=info.name,
        is_resource_request=info.is_resource_request,
    )


# The labelled children of the per-request metrics, looked up once per label set: prometheus_client's
# labels() validates and locks on every call, a few µs per metric per request. The label values are
# bounded (see count), and nothing removes these children, so a cached child is the registered one.
@functools.lru_cache(maxsize=4096)
def _requests_child(socket: str, verb: str, code: int, decision: str) -> Any:
    return metrics.REQUESTS.labels(socket, verb, str(code), decision)


def _denial_message(call: Call, identity: Identity, decision: PolicyDecision, info: RequestInfo) -> str:
    """The 403 text. When an access request the caller may file would allow this, it is the exact
    command to run; otherwise the engine's reason, prefixed with the socket."""
    found = access.requestable_for(call.ctx.access_requests, identity, decision.needs_grant)
    if found:
        step = access.next_step(found[0], call.ctx.public_url)
        return f'socket {call.socket}: {describe_request(info, effective_verb(info))} needs approval: run "{step}"'
    if f"socket {call.socket}" in decision.reason:
        return decision.reason
    return f"socket {call.socket}: {decision.reason}"


@functools.lru_cache(maxsize=4096)
def _duration_child(socket: str, verb: str) -> Any:
    return metrics.REQUEST_DURATION.labels(socket, verb)


@functools.lru_cache(maxsize=1024)
def _bytes_child(socket: str, direction: str) -> Any:
    return metrics.BYTES.labels(socket, direction)


@dataclass
class Call:
    """One request's state, from which its audit events and metrics are made."""

    ctx: ProxyContext
    request: web.Request
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)
    socket: str | None = None
    entry: SocketEntry | None = None
    identity: Identity | None = None
    info: RequestInfo | None = None
    policy: str | None = None
    rule: int | None = None
    reason: str = ""
    decision: Decision = "rejected"
    upstream_status: int | None = None
    upstream_audit_id: str | None = None
    counters: forward.Counters = field(default_factory=forward.Counters)
    stream: str | None = None
    session_protocol: str | None = None
    recording: str | None = None
    access_request: str | None = None  # the grant the allow depended on
    access_change: dict[str, Any] | None = None
    error: str | None = None
    raw_path: str = ""
    raw_query: str = ""
    k8s_path: str = ""  # the path after /sockets/SOCKET, once split
    # The response whose status line has been (or is being) sent; after that no error can be answered.
    response: web.StreamResponse | None = None
    completed: bool = False  # its ResponseComplete event is written

    @property
    def source_ip(self) -> str:
        return self.request.remote or ""

    def event(self, stage: Stage, code: int) -> AuditEvent:
        identity = self.identity
        return AuditEvent(
            request_id=self.request_id,
            stage=stage,
            decision=self.decision,
            code=code,
            method=self.request.method,
            path=self.raw_path,
            query=self.raw_query,
            source_ip=self.source_ip,
            user=identity.user if identity else None,
            groups=identity.groups if identity else (),
            auth_method=(identity.method or None) if identity else None,
            user_agent=self.request.headers.get("User-Agent", ""),
            socket=self.socket,
            request=audit_attributes(self.info) if self.info is not None else None,
            policy=self.policy,
            rule=self.rule,
            reason=self.reason,
            upstream_status=self.upstream_status,
            upstream_audit_id=self.upstream_audit_id,
            bytes_in=self.counters.bytes_in,
            bytes_out=self.counters.bytes_out,
            duration_ms=(time.monotonic() - self.started) * 1000,
            stream=self.stream,
            session_protocol=self.session_protocol,
            recording=self.recording,
            access_request=self.access_request,
            access_change=self.access_change,
            error=self.error,
        )

    async def audit(self, stage: Stage, code: int) -> bool:
        if stage == "ResponseComplete":
            self.completed = True
        return await self.ctx.audit.emit(self.event(stage, code))

    def count(self, code: int) -> None:
        """Metrics for a finished request. Socket label only for served sockets (bounded label values)."""
        socket = self.socket if self.entry is not None else ""
        verb = effective_verb(self.info) if self.info is not None else ""
        _requests_child(socket, verb, code, self.decision).inc()
        _duration_child(socket, verb).observe(time.monotonic() - self.started)
        if self.entry is not None and self.upstream_status is not None:  # bytes that went through a cluster
            if self.counters.bytes_in:
                _bytes_child(socket, "to_upstream").inc(self.counters.bytes_in)
            if self.counters.bytes_out:
                _bytes_child(socket, "to_client").inc(self.counters.bytes_out)

    def _error_response(self, status: int, message: str) -> web.Response:
        accept = self.request.headers.get("Accept", "")
        return status_response(status, message, self.request_id, plain_text=wants_plain_text(self.k8s_path, accept))

    async def refuse(self, refusal: Refusal) -> web.Response:
        self.decision = refusal.decision
        self.reason = refusal.message
        if refusal.detail:
            self.error = refusal.detail
        response = self._error_response(refusal.status, refusal.message)
        self.counters.bytes_out = len(response.body)  # type: ignore[arg-type]
        await self.audit("ResponseComplete", refusal.status)
        self.count(refusal.status)
        # An oversized or stalled request's unread body, or bytes a client sent after an upgrade request, must
        # not be read as the next request on this connection.
        if refusal.status in (408, 413) or headers.requested_upgrade(self.request.headers) is not None:
            response.force_close()
        return response

    async def fail(self, exc: Exception) -> web.StreamResponse:
        """An exception nothing foresaw: logged with its traceback, audited and counted as a 500.

        The client gets a Status naming the request id (the key to the log line and the audit event),
        never the exception, which may name hosts, files or credentials sources.
        """
        log.error(
            "request %s (%s %s) failed: internal error",
            self.request_id, self.request.method, self.raw_path, exc_info=exc,
        )  # fmt: skip
        self.error = f"internal error: {type(exc).__name__}: {exc}"
        if self.response is not None:
            # The status line is already sent, so no Status can follow; the stream's own bookkeeping has
            # audited and counted it. Cut the connection so the client sees an incomplete answer.
            _abort(self.request)
            return self.response
        message = f"internal error in the connector; report request id {self.request_id} to its operators"
        self.reason = message if self.socket is None else f"socket {self.socket}: {message}"
        response = self._error_response(500, self.reason)
        # Whatever failed may have left the request body half read.
        response.force_close()
        self.counters.bytes_out = len(response.body)  # type: ignore[arg-type]
        await self.audit("ResponseComplete", 500)
        self.count(500)
        return response

    async def cancelled(self) -> None:
        """Audit a request cancelled before its end was audited (streams audit their own end).

        A request may have reached the cluster (a delete, say) before its client hung up: it must not
        vanish from the audit log. No status was sent, so the event says 499, the access-log convention
        for "client closed request".
        """
        if self.completed:
            return
        self.error = self.error or "cancelled before the response: the client disconnected or the connector shut down"
        await self.audit("ResponseComplete", CLIENT_CLOSED)
        self.count(CLIENT_CLOSED)


def api_call(request: web.Request) -> Call:
    """A Call for one of the connector's own `/v1/...` endpoints (see `authenticate`)."""
    call = Call(request.app[CONTEXT], request)
    call.raw_path, _, call.raw_query = request.raw_path.partition("?")
    return call


async def authenticate(call: Call) -> Identity:
    """Authenticate the caller of a `/v1/...` endpoint, or Refusal (401)."""
    try:
        call.identity = await call.ctx.authenticator.authenticate(call.request)
    except AuthenticationError as exc:
        raise Refusal(401, exc.public_message, "unauthenticated", detail=exc.detail) from None
    return call.identity


async def handle_socket_request(request: web.Request) -> web.StreamResponse:
    """The aiohttp handler for every `/sockets/...` request."""
    call = Call(request.app[CONTEXT], request)
    raw_path, _, call.raw_query = request.raw_path.partition("?")
    call.raw_path = raw_path
    try:
        try:
            return await _handle(call)
        except Refusal as refusal:
            return await call.refuse(refusal)
    except asyncio.CancelledError:
        await call.cancelled()
        raise  # a disconnect or shutdown still cancels the handler
    except Exception as exc:
        return await call.fail(exc)


@dataclass(frozen=True)
class _Checked:
    """A request that passed the checks made before authentication."""

    info: RequestInfo
    protocol: str | None  # the upgrade asked for (websocket, SPDY/3.1), if any
    body_limit: int | None  # None: a proxy subresource, whose body is streamed unbounded


def _check(call: Call) -> _Checked:
    """Refuse what must never reach a cluster, before spending anything on authentication."""
    request, limits = call.request, call.ctx.server.limits
    call.socket, call.k8s_path = split_socket_path(call.raw_path)
    k8s_path = call.k8s_path
    reason = reject_reason(request.method, k8s_path, call.raw_query)
    if reason is not None:
        raise Refusal(400, f"socket {call.socket}: {reason}", "rejected")
    impersonation = headers.impersonation_headers(request.headers.keys())
    if impersonation:
        raise Refusal(
            403,
            f"socket {call.socket}: impersonation headers are not accepted ({', '.join(impersonation)}); "
            "the connector acts for you with its own credentials",
            "rejected",
        )
    if len(request.raw_headers) > limits.max_header_count:
        raise Refusal(413, f"the request has more than {limits.max_header_count} headers", "rejected")
    if headers.header_bytes(request.raw_headers) > limits.max_header_bytes:
        raise Refusal(413, f"the request headers are larger than {limits.max_header_bytes} bytes", "rejected")
    upgrade_value = headers.requested_upgrade(request.headers)
    protocol = headers.upgrade_protocol(upgrade_value) if upgrade_value is not None else None
    if upgrade_value is not None and protocol is None:
        raise Refusal(
            400, f"unsupported upgrade {upgrade_value!r}: the connector relays websocket and SPDY/3.1", "rejected"
        )
    if protocol is not None and request.body_exists:
        raise Refusal(400, "an upgrade request must not have a body", "rejected")
    info = parse_request_info(request.method, k8s_path, call.raw_query)
    if protocol is not None:
        info = stream_request_info(info)
    call.info = info
    # Proxy subresources carry whatever the application behind them takes; other bodies are API objects.
    body_limit = None if _is_proxy(info) else limits.max_body_bytes
    if body_limit is not None and (request.content_length or 0) > body_limit:
        raise Refusal(413, f"the request body is larger than {body_limit} bytes", "rejected")
    return _Checked(info, protocol, body_limit)


async def caller_grants(ctx: ProxyContext, identity: Identity, now: dt.datetime) -> dict[str, str]:
    """The caller's grants now (policy name -> access request id), read from the access store; none
    when no store or no access_requests are configured. The store reads from disk when the file changed,
    so it runs in a thread."""
    store, definitions = ctx.access_store, ctx.access_requests
    if store is None or not definitions:
        return {}
    requests = await asyncio.to_thread(store.list)
    return access.grants_for(requests, definitions, identity, now)


def _is_proxy(info: RequestInfo) -> bool:
    """A request to a `proxy` subresource (or the legacy /proxy/ prefix): what answers is an application."""
    return "proxy" in (info.verb, info.subresource)


async def _handle(call: Call) -> web.StreamResponse:
    ctx, request = call.ctx, call.request
    checked = _check(call)
    assert call.socket is not None
    # Each piece of the context is read once, so the whole request runs under one config even if a
    # reload happens meanwhile.
    authenticator, policy, audit = ctx.authenticator, ctx.policy, ctx.audit
    try:
        identity = call.identity = await authenticator.authenticate(request)
    except AuthenticationError as exc:
        metrics.AUTHN_FAILURES.labels(exc.reason).inc()
        log.info("authentication failed from %s: %s", call.source_ip, exc.detail)
        raise Refusal(401, exc.public_message, "unauthenticated", detail=exc.detail) from None
    if audit.fail_closed and not audit.healthy:
        raise Refusal(503, "the connector cannot write its audit log; requests are refused until it can", "rejected")

    now = dt.datetime.now(dt.UTC)
    entry = ctx.registry.get(call.socket)
    if entry is None:
        problem = ctx.registry.problem(call.socket)
        if problem is not None:
            raise Refusal(503, f"socket {call.socket} is not available now", "rejected", detail=problem)
        usable = usable_entries(ctx, identity, call.source_ip, now, await caller_grants(ctx, identity, now))
        plain_text = wants_plain_text(call.k8s_path, request.headers.get("Accept", ""))
        message = unknown_socket_message(call.socket, identity.user, [entry.name for entry in usable])
        raise Refusal(unknown_socket_status(plain_text), message, "rejected")
    call.entry = entry
    upstream = entry.upstream

    grants = await caller_grants(ctx, identity, now)

    kind = reviews.review_kind(checked.info)
    if kind is not None:
        # Like kube-apiserver's `system:basic-user`, whoami is open to every authenticated caller: it is
        # what a user runs first when something is wrong. The access reviews need the socket.
        may_use = policy.may_use_socket(identity, call.socket, upstream.tags, call.source_ip, now, grants=grants)
        if not may_use and kind != reviews.SELF_REVIEW:
            raise Refusal(403, f"no policy grants {identity.user} access to socket {call.socket}", "deny")
        return await _answer_review(call, kind, policy, now, grants)

    decision = policy.decide(identity, call.socket, upstream.tags, checked.info, call.source_ip, now, grants=grants)
    call.policy, call.rule, call.access_request = decision.policy, decision.rule, decision.access_request
    if not decision.allowed:
        raise Refusal(403, _denial_message(call, identity, decision, checked.info), "deny")
    call.decision = "allow"
    call.reason = decision.reason

    call.stream = stream_kind(checked.info, call.raw_query, checked.protocol is not None)
    if call.stream is None:
        return await _to_cluster(call, checked)
    limits = ctx.server.limits
    try:
        await ctx.streams.claim(identity.user, per_user=limits.max_streams_per_user, total=limits.max_streams)
    except StreamLimitExceeded as exc:
        raise Refusal(429, f"socket {call.socket}: {exc}", "rejected") from None
    try:
        return await _to_cluster(call, checked)
    finally:  # however the stream ends: by either side, an error, a refusal or cancellation
        ctx.streams.release(identity.user)


async def _to_cluster(call: Call, checked: _Checked) -> web.StreamResponse:
    """Forward the request, or relay the upgrade, with the connector's credentials for the cluster."""
    request, entry, identity = call.request, call.entry, call.identity
    assert entry is not None and identity is not None and call.socket is not None
    upstream = entry.upstream
    try:
        credentials = await upstream.auth_headers()
    except Exception as exc:  # SocketError, or a credential source failing in a way it did not foresee
        log.error("socket %s: no credentials for the cluster: %s", call.socket, exc)
        raise Refusal(503, f"socket {call.socket}: the connector has no credentials for the cluster now", "allow",
                      detail=str(exc)) from None  # fmt: skip
    upstream_headers = headers.upstream_request_headers(
        request.headers,
        credentials=credentials,
        client_ip=call.source_ip,
        impersonate_user=identity.user if upstream.impersonation_enabled else None,
        impersonate_groups=identity.groups if upstream.impersonation_enabled else (),
        upgrade=checked.protocol,
        audit_id=call.request_id,
    )
    if checked.protocol is not None:
        return await _relay_upgrade(call, call.k8s_path, upstream_headers, checked.protocol)
    return await _forward(call, call.k8s_path, upstream_headers, checked.body_limit)


def _credentials_refused(call: Call) -> Refusal:
    """The Refusal for a cluster's 401, which can only be about the connector's credentials.

    Not for proxy subresources: there the 401 may be the proxied application's own answer.
    """
    assert call.entry is not None and call.socket is not None
    if call.entry.upstream.service_type == "aws_eks":
        check = "check the connector's cluster access (aws-auth mapping or EKS access entry)"
    else:
        check = "check the credentials configured for this socket and what the cluster grants them"
    log.error(
        "socket %s: the cluster refused the connector's credentials (HTTP 401, request %s, cluster audit id %s)",
        call.socket, call.request_id, call.upstream_audit_id,
    )  # fmt: skip
    call.entry.upstream.invalidate_credentials()  # rate-limited: at most once per 10 s per socket
    return Refusal(
        502, f"socket {call.socket}: the cluster refused the connector's credentials (HTTP 401); {check}", "allow",
        detail="the cluster answered 401 Unauthorized to the connector's own credentials",
    )  # fmt: skip


async def _answer_review(
    call: Call, kind: str, policy: PolicyEngine, now: dt.datetime, grants: dict[str, str]
) -> web.Response:
    request, entry, identity = call.request, call.entry, call.identity
    assert entry is not None and identity is not None and call.info is not None and call.socket is not None
    socket, tags, source_ip = call.socket, entry.upstream.tags, call.source_ip
    body_limit = min(call.ctx.server.limits.max_body_bytes, reviews.MAX_REVIEW_BODY_BYTES)
    body = await read_body(request, body_limit, call.ctx.server.upstream.response_seconds)
    call.counters.bytes_in = len(body)
    try:
        review = reviews.parse_review(kind, call.info, request.headers.get("Content-Type", ""), body)
    except reviews.ReviewError as exc:
        raise Refusal(exc.status, exc.message, "rejected") from None
    answer = reviews.answer_review(
        review,
        identity,
        decide=lambda info: policy.decide(identity, socket, tags, info, source_ip, now, grants=grants),
        rules_for=lambda namespace: policy.rules_for(identity, socket, tags, namespace, source_ip, now, grants=grants),
    )
    call.decision = "allow"
    call.reason = f"{kind} answered by the connector"
    response = web.json_response(answer, status=201, headers={"X-Connector-Request-Id": call.request_id})
    call.counters.bytes_out = len(response.body or b"")  # type: ignore[arg-type]
    await call.audit("ResponseComplete", 201)
    call.count(201)
    return response


def usable_entries(
    ctx: ProxyContext, identity: Identity, source_ip: str, now: dt.datetime, grants: dict[str, str]
) -> list[SocketEntry]:
    """The sockets this caller may use now (what `/v1/sockets` lists)."""
    policy = ctx.policy
    return [
        entry
        for entry in ctx.registry.entries()
        if policy.may_use_socket(identity, entry.name, entry.upstream.tags, source_ip, now, grants=grants)
    ]


# The socket names an unknown-socket refusal lists: enough to spot a typo, not a whole fleet.
_NAMED_SOCKETS = 5


def unknown_socket_message(name: str, user: str, usable: list[str]) -> str:
    """`socket X not found`, with the names of the sockets the caller may use (only those: nothing
    the caller could not already read from `/v1/sockets`)."""
    if not usable:
        return f"socket {name} not found; no socket on this connector is open to {user}"
    names = sorted(usable)
    listed = ", ".join(names[:_NAMED_SOCKETS])
    more = f" and {len(names) - _NAMED_SOCKETS} more (see /v1/sockets)" if len(names) > _NAMED_SOCKETS else ""
    return f"socket {name} not found; sockets you may use: {listed}{more}"


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole body, refusing past `limit` bytes (413) or `seconds` (408) before anything is forwarded.

    The time limit is what the cluster gets to answer: without one, a client trickling a chunked body
    would hold its connection and a buffer of up to `limit` bytes for as long as it likes.
    """
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise Refusal(413, f"the request body is larger than {limit} bytes", "rejected")
    except TimeoutError:
        raise Refusal(408, f"the request body did not arrive within {seconds:g} s", "rejected") from None
    return bytes(body)


async def _forward(call: Call, k8s_path: str, upstream_headers: Any, body_limit: int | None) -> web.StreamResponse:
    ctx, request, entry = call.ctx, call.request, call.entry
    assert entry is not None and call.socket is not None
    try:
        url = forward.upstream_url(entry, k8s_path, call.raw_query)
    except ValueError as exc:
        raise Refusal(400, f"socket {call.socket}: the request target cannot be forwarded exactly", "rejected",
                      detail=str(exc)) from None  # fmt: skip
    body: Any = None
    if request.body_exists:
        if body_limit is not None and request.content_length is None:
            # A chunked API object: read it whole (bounded) so that an oversized one never reaches the cluster.
            body = await read_body(request, body_limit, ctx.server.upstream.response_seconds)
            call.counters.bytes_in = len(body)
            upstream_headers["Content-Length"] = str(len(body))
        else:
            body = forward.counted(request.content.iter_any(), call.counters)
    try:
        upstream_response = await forward.open_upstream(
            entry, request.method, url, upstream_headers, body, ctx.server.upstream
        )
    except forward.UpstreamFailure as failure:
        log.warning("socket %s: %s", call.socket, failure.detail)
        raise Refusal(failure.status, failure.public, "allow", detail=failure.detail) from None
    code = upstream_response.status
    call.upstream_status = code
    call.upstream_audit_id = upstream_response.headers.get("Audit-Id")
    if code == 401 and call.info is not None and not _is_proxy(call.info):
        upstream_response.release()
        raise _credentials_refused(call)
    if forward.is_core_discovery(request.method, k8s_path, upstream_response):
        response = await forward.core_discovery_response(upstream_response, call.request_id, call.counters)
    else:
        response = forward.client_response(upstream_response, call.request_id, stream=call.stream is not None)
    try:
        with _tracked(call) as active:
            await _send(call, upstream_response, response, active)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (or at the end of the shutdown grace).
        call.error = call.error or "cancelled: the client disconnected or the connector shut down"
        raise
    finally:
        upstream_response.release()
        await call.audit("ResponseComplete", code)
        call.count(code)
    return response


@contextlib.contextmanager
def _tracked(call: Call) -> Iterator[ActiveStream | None]:
    """Register a stream with its socket (so that it can be ended cleanly) and count it as open; one
    allowed through an access request is also tracked so that it ends when the grant does."""
    entry, kind = call.entry, call.stream
    assert entry is not None
    if kind is None:
        yield None
        return
    with entry.stream(kind) as active, _bound_to_grant(call, active):
        metrics.OPEN_STREAMS.labels(entry.name, kind).inc()
        try:
            yield active
        finally:
            metrics.OPEN_STREAMS.labels(entry.name, kind).dec()


def _bound_to_grant(call: Call, active: ActiveStream) -> contextlib.AbstractContextManager[None]:
    if call.access_request is None:
        return contextlib.nullcontext()
    assert call.identity is not None and call.entry is not None and call.info is not None and call.socket is not None
    return call.ctx.granted_streams.track(
        GrantedStream(
            active, call.access_request, call.identity, call.socket, call.entry.upstream.tags, call.info, call.source_ip
        )
    )


async def _send(call: Call, upstream_response: Any, response: web.StreamResponse, active: ActiveStream | None) -> None:
    """Send status, headers and body. On a broken connection (either side) the client's is closed, so
    that it sees a cut rather than a complete response."""
    try:
        call.response = response
        await response.prepare(call.request)
        if active is not None and not await call.audit("ResponseStarted", response.status):
            if call.ctx.audit.fail_closed:
                call.error = "the audit log failed at the start of the stream; stream closed"
                _abort(call.request)
                return
        if await forward.relay_body(upstream_response, response, call.counters, active):
            call.error = f"ended by the connector ({active.stop_reason})"
    except Exception as exc:
        transport = call.request.transport
        if transport is None or transport.is_closing():
            call.error = f"client connection lost: {type(exc).__name__}: {exc}"
        else:
            call.error = f"cluster connection lost mid-response: {type(exc).__name__}: {exc}"
            log.warning("socket %s: %s", call.socket, call.error)
        _abort(call.request)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


async def _relay_upgrade(call: Call, k8s_path: str, upstream_headers: Any, protocol: str) -> web.StreamResponse:
    ctx, request, entry, info = call.ctx, call.request, call.entry, call.info
    assert entry is not None and info is not None and call.socket is not None and call.stream is not None
    timeouts = ctx.server.upstream
    try:
        handshake = await upgrade.open_upgrade(
            entry, request.method, k8s_path, call.raw_query, upstream_headers, timeouts
        )
    except forward.UpstreamFailure as failure:
        log.warning("socket %s: %s", call.socket, failure.detail)
        raise Refusal(failure.status, failure.public, "allow", detail=failure.detail) from None
    call.upstream_status = handshake.status
    call.upstream_audit_id = handshake.headers.get("Audit-Id")
    switched_to = handshake.headers.get("Upgrade", "")
    if handshake.status == 401 and not _is_proxy(info):
        handshake.close()
        call.stream = None  # no stream was opened
        raise _credentials_refused(call)
    if handshake.status != 101 or headers.upgrade_protocol(switched_to) != protocol:
        return await _refused_upgrade(call, handshake, protocol)

    call.session_protocol = (
        (handshake.headers.get("Sec-WebSocket-Protocol") if protocol == "websocket" else None)
        or handshake.headers.get("X-Stream-Protocol-Version")
        or protocol
    )
    tap = None
    if ctx.tap_factory is not None and call.stream in SESSION_KINDS:
        try:
            tap = ctx.tap_factory(_session_meta(call, info))
        except Exception as exc:
            handshake.close()
            metrics.RECORDING_ERRORS.labels("open").inc()
            log.error("socket %s: session recording could not start, session refused: %s", call.socket, exc)
            raise Refusal(
                503, f"socket {call.socket}: session recording is unavailable, so the session was refused",
                "allow", detail=f"{type(exc).__name__}: {exc}",
            ) from None  # fmt: skip

    response_headers = headers.client_response_headers(handshake.headers, upgrade=switched_to)
    response_headers["X-Connector-Request-Id"] = call.request_id
    response = web.StreamResponse(
        status=101, reason=handshake.reason or "Switching Protocols", headers=response_headers
    )
    result: upgrade.RelayResult | None = None
    with _tracked(call) as active:
        assert active is not None
        if call.stream in SESSION_KINDS:
            metrics.SESSIONS.labels(call.socket, call.stream).inc()
        try:
            call.response = response
            await response.prepare(request)
            if not await call.audit("ResponseStarted", 101) and ctx.audit.fail_closed:
                call.error = "the audit log failed at the start of the session; session closed"
                _abort(request)
            else:
                result = await upgrade.relay(request, response, handshake, tap, active, call.socket)
                call.counters.bytes_in, call.counters.bytes_out = result.bytes_in, result.bytes_out
                call.error = f"ended by the connector ({active.stop_reason or RETIRED})" if (
                    result.ended_by == "connector") else None  # fmt: skip
                if result.tap_error:
                    call.error = f"recording failed mid-session: {result.tap_error}"
        except (ConnectionError, OSError) as exc:
            call.error = f"client connection lost before the relay: {exc}"
        finally:
            if result is None:
                handshake.close()  # the relay closes it when it ran
            if tap is not None:
                await _close_tap(call, tap)
            await call.audit("ResponseComplete", 101)
            call.count(101)
            if result is not None:
                upgrade.release_server_connection(result)
    return response


async def _refused_upgrade(call: Call, handshake: upgrade.UpstreamHandshake, protocol: str) -> web.Response:
    """The cluster did not switch protocols: relay its answer as a plain response and close the connection."""
    try:
        if handshake.status == 101:
            raise ValueError(f"the cluster switched to {handshake.headers.get('Upgrade')!r} instead of {protocol}")
        body = await upgrade.read_refusal_body(handshake, call.ctx.server.upstream)
    except (ValueError, OSError, TimeoutError, EOFError) as exc:
        raise Refusal(
            502, f"socket {call.socket}: the cluster answered the upgrade request incorrectly", "allow",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None  # fmt: skip
    finally:
        handshake.close()
    response_headers = headers.client_response_headers(handshake.headers)
    response_headers.popall("Content-Length", None)
    response_headers["X-Connector-Request-Id"] = call.request_id
    response = web.Response(
        status=handshake.status, reason=handshake.reason or None, body=body, headers=response_headers
    )
    response.force_close()
    call.counters.bytes_out = len(body)
    call.stream = None
    await call.audit("ResponseComplete", handshake.status)
    call.count(handshake.status)
    return response


def _session_meta(call: Call, info: RequestInfo) -> SessionMeta:
    params = parse_query(call.raw_query)
    identity = call.identity
    assert identity is not None and call.socket is not None and call.stream is not None
    return SessionMeta(
        session_id=call.request_id,
        user=identity.user,
        groups=identity.groups,
        source_ip=call.source_ip,
        socket=call.socket,
        namespace=info.namespace,
        pod=info.name,
        container=params.get("container", [""])[0],
        command=tuple(params.get("command", [])),
        tty=query_flag(params, "tty"),
        stdin=query_flag(params, "stdin"),
        protocol=call.session_protocol or "",
        subresource=call.stream,
    )


async def _close_tap(call: Call, tap: upgrade.SessionTap) -> None:
    """Finish the recording and put what became of it in the session's audit event: a recording
    that could not be written must not be named as if it existed."""
    try:
        summary = await tap.close()
        call.recording = getattr(summary, "recording", None)
        problems = [
            f"recording not written: {summary.write_error}" if getattr(summary, "write_error", None) else "",
            f"recording incomplete: {summary.decode_error}" if getattr(summary, "decode_error", None) else "",
        ]
        if any(problems):
            call.error = "; ".join(p for p in problems if p)
    except Exception as exc:
        metrics.RECORDING_ERRORS.labels("write").inc()
        log.error("socket %s: session recording could not be finished: %s", call.socket, exc)
        call.error = f"recording could not be finished: {type(exc).__name__}: {exc}"
