"""The aiohttp application: routes, the shared proxy context, and the server settings it runs with.

Routes: `/sockets/{socket}/...` (the Kubernetes APIs, see handler.py), `/healthz` (the process is
alive), `/readyz` (config loaded, sockets resolved, audit sink writable, not shutting down),
`/v1/sockets` (the sockets the caller may use, for `client kubeconfig set`),
`/v1/whoami` (who the connector takes the caller for, for `client whoami`),
`/v1/access-requests` (just-in-time access, see access_api.py), `/v1/login-config` (the SSO issuer
and client id, for `client login`; no authentication) and, with `console.enabled`, the web console under
`/console/` (connector.console).
Anything else is refused with where a cluster's API is (`not_found`). The connector's Prometheus
metrics are on a listener of their own (connector.proxy.metrics_listener).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from connector.access.store import AccessStore
from connector.access.webhook import WebhookNotifier
from connector.audit.recording import SessionMeta
from connector.audit.sessions_cli import Sources
from connector.audit.sinks import AuditLog
from connector.authn.oidc import OidcVerifier
from connector.console import routes as console_routes
from connector.console.browser_sessions import BrowserSessions
from connector.console.config import ConsoleConfig
from connector.console.session_index import SessionIndex
from connector.identity import Identity
from connector.kube.status import status_json
from connector.policy.access_model import AccessRequestDefinition
from connector.policy.engine import PolicyEngine
from connector.proxy import access_api
from connector.proxy.config import ServerConfig
from connector.proxy.granted_streams import GrantedStreams
from connector.proxy.handler import (
    CONTEXT,
    Call,
    Refusal,
    api_call,
    authenticate,
    caller_grants,
    handle_socket_request,
    status_response,
    usable_entries,
)
from connector.proxy.registry import SocketRegistry
from connector.proxy.status_form import unknown_socket_status, wants_plain_text
from connector.proxy.stream_limits import StreamSlots
from connector.proxy.upgrade import SessionTap


class AuthenticatorLike(Protocol):
    """What the proxy needs from connector.authn's Authenticator."""

    client_ca_file: str | None

    async def authenticate(self, request: web.BaseRequest) -> Identity: ...
    def oidc_verifier(self, issuer: str) -> OidcVerifier | None: ...
    async def close(self) -> None: ...


TapFactory = Callable[[SessionMeta], SessionTap | None]


@dataclass(eq=False)
class ProxyContext:
    """Everything a request needs. The runtime swaps fields on reload; a request reads each field once,
    so it runs entirely under the policies (and authenticator) that were current when it arrived."""

    server: ServerConfig
    public_url: str
    registry: SocketRegistry
    audit: AuditLog
    policy: PolicyEngine
    authenticator: AuthenticatorLike
    login_config: dict[str, str] | None = None
    tap_factory: TapFactory | None = None
    # What callers may request (the config's access_requests), to name the next step in a 403.
    access_requests: tuple[AccessRequestDefinition, ...] = ()
    # Where access requests are kept (the config's access_store); None: requests cannot be filed.
    access_store: AccessStore | None = None
    # Told of every access request transition (the config's access_requests_webhook); None: no webhook.
    access_webhook: WebhookNotifier | None = None
    shutting_down: bool = False
    # Open streams per user: connector-wide, so it is never swapped on reload.
    streams: StreamSlots = field(default_factory=StreamSlots)
    # Open streams that an access request allowed, ended when it expires or is revoked; never swapped.
    granted_streams: GrantedStreams = field(default_factory=GrantedStreams)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    # Where the console finds recorded sessions (the config's audit.file and recordings.dir).
    session_sources: Sources | None = None
    # The console's index of those sessions (None with the console off).
    session_index: SessionIndex | None = None
    # Signed-in console browsers: process-wide, never swapped on reload.
    browser_sessions: BrowserSessions = field(default_factory=BrowserSessions)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    return _text(200, "ok\n")


def readiness(ctx: ProxyContext) -> list[tuple[str, str | None]]:
    """Each readiness check with None when it passes, else what fails (kube-apiserver's /readyz style).

    /readyz answers anyone who can reach the connector, so it names what failed but not why: the reasons
    (file paths, cluster endpoints, AWS errors) are in the connector's log, as kube-apiserver withholds them.
    """
    problems = ctx.registry.problems
    return [
        ("shutdown", "the connector is shutting down" if ctx.shutting_down else None),
        ("config", None),
        ("sockets", "; ".join(f"{n}: not resolved (reason in the log)" for n in sorted(problems)) or None),
        ("audit", None if ctx.audit.healthy else "the audit log cannot be written (reason in the log)"),
        ("access-store", None if ctx.access_store is None or ctx.access_store.ready
         else "the access requests have not been read yet (reason in the log)"),
    ]


async def readyz(request: web.Request) -> web.Response:
    checks = readiness(request.app[CONTEXT])
    lines = [f"[+]{name} ok" if problem is None else f"[-]{name} failed: {problem}" for name, problem in checks]
    ok = all(problem is None for _, problem in checks)
    lines.append("readyz check passed" if ok else "readyz check failed")
    return _text(200 if ok else 503, "\n".join(lines) + "\n")


async def _authenticated_json(
    request: web.Request, answer: Callable[[Call, Identity], Awaitable[tuple[str, Any]]]
) -> web.StreamResponse:
    """A `/v1` GET: authenticate the caller, `answer` gives (audit reason, JSON body), audit and count it."""
    call = api_call(request)
    try:
        identity = await authenticate(call)
    except Refusal as refusal:
        return await call.refuse(refusal)
    call.reason, body = await answer(call, identity)
    call.decision = "allow"
    await call.audit("ResponseComplete", 200)
    call.count(200)
    return web.json_response(body, headers={"X-Connector-Request-Id": call.request_id})


async def list_sockets(request: web.Request) -> web.StreamResponse:
    """The sockets the caller may use now, with the kubeconfig server URL of each."""

    async def answer(call: Call, identity: Identity) -> tuple[str, Any]:
        ctx, now = call.ctx, dt.datetime.now(dt.UTC)
        grants = await caller_grants(ctx, identity, now)
        sockets = [
            {
                "name": entry.name,
                "type": entry.upstream.service_type,
                "region": entry.region,
                "tags": dict(entry.upstream.tags),
                "server": f"{ctx.public_url}/sockets/{entry.name}",
                "source": entry.source,
            }
            for entry in usable_entries(ctx, identity, call.source_ip, now, grants)
        ]
        return f"{len(sockets)} socket(s) listed", {"sockets": sockets}

    return await _authenticated_json(request, answer)


async def whoami(request: web.Request) -> web.StreamResponse:
    """Who the connector takes the caller for: `client whoami` and `client login` print it."""

    async def answer(call: Call, identity: Identity) -> tuple[str, Any]:
        body = {"user": identity.user, "groups": list(identity.groups), "auth_method": identity.method}
        return "identity shown to its owner", body

    return await _authenticated_json(request, answer)


async def login_config_handler(request: web.Request) -> web.Response:
    config = request.app[CONTEXT].login_config
    if config is None:
        return web.Response(
            status=404,
            body=status_json(404, "this connector has no OIDC issuer configured"),
            content_type="application/json",
        )
    return web.json_response(config)


# How much of an unknown path the refusal repeats.
MAX_ECHOED_PATH = 200


def not_found_message(path: str) -> str:
    """What a request for a path the connector does not serve is told: where a cluster's API is.

    `kubectl get --raw /metrics` lands here: client-go sends a raw path to the root of the kubeconfig's
    server, not under its `/sockets/NAME`, and a user reading the connector's answers as the cluster's is
    what this message prevents.
    """
    shown = path if len(path) <= MAX_ECHOED_PATH else path[:MAX_ECHOED_PATH] + "..."
    return (
        f"this is the EKS access connector, not a cluster: a cluster's API is under /sockets/SOCKET/, so a "
        f"kubeconfig's server ends in /sockets/SOCKET and `kubectl get --raw` takes the whole path "
        f"(/sockets/SOCKET{shown}); GET /v1/sockets lists the sockets you may use"
    )


async def not_found(request: web.Request) -> web.Response:
    """A 404 Status, or a 403 in plain text where client-go would print only its own 404 text (status_form)."""
    plain_text = wants_plain_text(request.path, request.headers.get("Accept", ""))
    status = unknown_socket_status(plain_text)
    return status_response(status, not_found_message(request.path), None, plain_text=plain_text)


def create_app(ctx: ProxyContext) -> web.Application:
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/sockets", list_sockets)
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_get("/v1/login-config", login_config_handler)
    access_api.add_routes(app)
    if ctx.console.enabled:
        console_routes.add_routes(app)
    app.router.add_route("*", "/sockets/{tail:.*}", handle_socket_request)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


# The longest single header line aiohttp accepts. aiohttp limits each line and the number of headers but
# not their sum, and holds a whole request head in memory before any handler runs: with each line allowed
# to be as long as our total (2 x 1 MiB), one unauthenticated request could make it hold 512 x 2 MiB.
# Capped here, a head costs at most max_header_count x 2 x MAX_HEADER_LINE. No Kubernetes client needs a
# longer line: the longest credential the connector accepts is a 16 KiB token, 22 KiB as a websocket
# subprotocol.
MAX_HEADER_LINE = 32 * 1024


def runner_options(server: ServerConfig) -> dict[str, Any]:
    """aiohttp server settings: our own limits and a handler cancelled when its client disconnects.

    aiohttp's header limits are set at twice ours, so that a request over our limits reaches the
    handler and gets a 413 Status; only one past twice the limits, or with a header line longer than
    MAX_HEADER_LINE, is refused by aiohttp itself (400). The request target is capped at our own limit
    in the parser (aiohttp's max_line_size applies to the target while it is still being read): a
    longer one is refused (400) before any handler splits its query.
    """
    limits = server.limits
    return {
        "handler_cancellation": True,
        "access_log": None,
        "max_line_size": limits.max_request_line_bytes,
        "max_field_size": min(limits.max_header_bytes * 2, MAX_HEADER_LINE),
        "max_headers": limits.max_header_count * 2,
        "shutdown_timeout": server.shutdown_grace_seconds,
    }
