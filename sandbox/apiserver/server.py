"""`EmulatedApiServer`: one emulated EKS cluster's Kubernetes API server, over HTTPS on loopback.

Each request goes through the steps kube-apiserver takes, in its order: fault injection (tests),
authentication (`authn`), impersonation (`impersonation`), request parsing
(`connector.kube.requestinfo`, the same parser the connector uses), authorization (`authz`), then
the handlers: discovery and OpenAPI for non-resource paths, REST (`handlers`) for resources, and
`streaming` for exec/attach/port-forward, which are authorized as `create` whatever the method.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import ssl
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from connector.aws.token import AwsPrincipal
from connector.kube.requestinfo import RequestInfo, parse_request_info
from connector.pki import generate_ca, issue_certificate
from sandbox.apiserver import bootstrap, catalog, discovery, openapi, openapi_proto, schemas
from sandbox.apiserver.authn import Authenticator, UserInfo
from sandbox.apiserver.authz import Attributes, Authorizer, forbidden_error
from sandbox.apiserver.errors import ApiError, path_not_found
from sandbox.apiserver.faults import Faults
from sandbox.apiserver.handlers import MAX_BODY_BYTES, Call, ResourceHandlers
from sandbox.apiserver.impersonation import impersonate, read_headers
from sandbox.apiserver.negotiation import negotiate
from sandbox.apiserver.responses import error_response, respond
from sandbox.apiserver.runtime import PodRuntime
from sandbox.apiserver.store import Store

log = logging.getLogger(__name__)

_STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
_HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


class SeenRequest(NamedTuple):
    """A request as the server received it: method, raw path (no query), and the user it ran as
    (`""` when authentication failed)."""

    method: str
    path: str
    user: str


class _DroppedConnection(asyncio.Protocol):
    """Stands in for the HTTP handler of a connection that fault injection drops."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


def _major_minor(version: str) -> tuple[int, int]:
    core = version.lstrip("v").split("-")[0].split("+")[0].split(".")
    try:
        return int(core[0]), int(core[1])
    except (IndexError, ValueError):
        raise ValueError(f"version must look like v1.31.4, got {version!r}") from None


class EmulatedApiServer:
    """The API server of one emulated EKS cluster. See the package docstring for the public API."""

    def __init__(
        self,
        cluster_name: str,
        *,
        scratch_dir: Path,
        version: str = "v1.31.4",
        credentials_lookup: Callable[[str], AwsPrincipal | None] | None = None,
        extra_sts_endpoints: Collection[str] = (),
        bootstrap_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ec2_private_dns_name: Callable[[str], str | None] | None = None,
        log_interval: float = 0.5,
        bookmark_interval: float = 60.0,
        history: int = 5000,
    ) -> None:
        if not cluster_name:
            raise ValueError("cluster_name must not be empty: EKS tokens are checked against it")
        self.cluster_name = cluster_name
        self.version = version
        self._schemas = schemas.load(*_major_minor(version))
        self.host = host
        self._port = port
        self.scratch_dir = Path(scratch_dir)
        self.bootstrap_token = bootstrap_token or secrets.token_urlsafe(32)
        self.store = Store(history=history)
        for obj in bootstrap.initial_objects(version):
            self.store.apply(obj)
        ca = generate_ca(f"{cluster_name}-ca")
        self.ca_pem: bytes = ca.cert_pem
        self._serving = issue_certificate(
            ca, "kube-apiserver",
            hosts=(host, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"),
        )
        self.faults = Faults(restart_server=self.restart)
        self.requests_seen: list[SeenRequest] = []
        self.runtime = PodRuntime(self.scratch_dir / "pods")
        self._authenticator = Authenticator(
            cluster_name=cluster_name, store=self.store, bootstrap_token=self.bootstrap_token,
            credentials_lookup=credentials_lookup, extra_sts_endpoints=extra_sts_endpoints,
            ec2_private_dns_name=ec2_private_dns_name,
        )
        self._authorizer = Authorizer(self.store)
        self._resources = ResourceHandlers(
            store=self.store, schemas=self._schemas, authenticator=self._authenticator,
            authorizer=self._authorizer, runtime=self.runtime, log_interval=log_interval,
            bookmark_interval=bookmark_interval,
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        # Every open connection's handler, including those a SPDY upgrade took over (aiohttp forgets
        # them), so that stop() and restart() can cut them all.
        self._connections: set[RequestHandler] = set()

    # ----- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self._port}"

    @property
    def ca_path(self) -> Path:
        """The CA certificate as a file (what `--certificate-authority` and kubeconfigs point at)."""
        return self.scratch_dir / "ca.crt"

    def _ssl_context(self) -> ssl.SSLContext:
        tls_dir = self.scratch_dir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        cert, key = tls_dir / "apiserver.crt", tls_dir / "apiserver.key"
        cert.write_bytes(self._serving.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self._serving.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def start(self) -> None:
        """Listen on `host:port` (a free port when 0); `url` is valid once this returns."""
        if self._runner is not None:
            raise RuntimeError("the API server is already running")
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path.write_bytes(self.ca_pem)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()
        log.info("emulated API server for cluster %s listening on %s", self.cluster_name, self.url)

    async def _listen(self) -> None:
        assert self._runner is not None
        server = self._runner.server
        assert server is not None

        def connection() -> asyncio.BaseProtocol:
            if self.faults.take_drop():
                return _DroppedConnection()
            handler = server()
            # RequestHandler has no weakref slot: forget the handlers of closed connections here.
            self._connections = {h for h in self._connections if h.transport is not None}
            self._connections.add(handler)
            return handler

        try:
            self._listener = await asyncio.get_running_loop().create_server(
                connection, self.host, self._port, ssl=self._ssl_context(), reuse_address=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self._port} for the emulated API server of "
                                     f"{self.cluster_name}: {exc.strerror}") from None
        self._port = self._listener.sockets[0].getsockname()[1]

    async def _disconnect(self) -> None:
        """Stop listening and cut every connection and watch (streams included)."""
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        self.store.close_watchers()
        for handler in list(self._connections):
            transport = handler.transport
            if transport is not None:
                transport.abort()
        self._connections = set()
        await asyncio.sleep(0)

    async def restart(self, down_for: float = 0.0) -> None:
        """Drop everything and listen again on the same port, keeping the stored objects."""
        if self._runner is None:
            raise RuntimeError("the API server is not running")
        await self._disconnect()
        if down_for > 0:
            await asyncio.sleep(down_for)
        await self._listen()

    async def stop(self) -> None:
        if self._runner is None:
            return
        await self._disconnect()
        await self._runner.cleanup()
        self._runner = None
        await self.runtime.close()

    # ----- the request pipeline ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        failure = self.faults.take_failure()
        if failure is not None:
            return error_response(failure)
        path, _, query = request.raw_path.partition("?")
        try:
            try:
                user = self._authenticator.authenticate(request.headers.get("Authorization"))
            except ApiError:
                self.requests_seen.append(SeenRequest(request.method, path, ""))
                raise
            impersonation = read_headers(request.headers.items())
            if impersonation.requested:
                try:
                    user = impersonate(user, impersonation, self._authorizer, request.raw_path)
                except ApiError:
                    self.requests_seen.append(SeenRequest(request.method, path, user.name))
                    raise
            self.requests_seen.append(SeenRequest(request.method, path, user.name))
            info = parse_request_info(request.method, path, query)
            attrs = self._attributes(info, user)
            decision = self._authorizer.authorize(attrs)
            if not decision.allowed:
                raise forbidden_error(attrs, decision.reason)
            if info.is_resource_request:
                return await self._resources.handle(Call(request, info, user))
            return self._non_resource(request, path)
        except ApiError as error:
            return error_response(error)

    @staticmethod
    def _attributes(info: RequestInfo, user: UserInfo) -> Attributes:
        verb = info.verb
        if info.is_resource_request and info.resource == "pods" and info.subresource in _STREAM_SUBRESOURCES:
            verb = "create"  # a websocket GET to pods/exec is still a create
        return Attributes(
            user, verb, info.is_resource_request, namespace=info.namespace, api_group=info.api_group,
            api_version=info.api_version, resource=info.resource, subresource=info.subresource, name=info.name,
            path=info.path,
        )

    # ----- non-resource paths --------------------------------------------------------------------

    def _non_resource(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        trimmed = path.rstrip("/") or "/"
        accept = request.headers.get("Accept")
        if trimmed in _HEALTH_PATHS:
            return web.Response(text="ok", content_type="text/plain")
        if trimmed == "/version":
            return respond(discovery.version_info(self.version))
        if trimmed in ("/api", "/apis"):
            negotiated = negotiate(accept, discovery=True)
            legacy = trimmed == "/api"
            if negotiated.as_kind == "APIGroupDiscoveryList":
                return respond(discovery.aggregated(negotiated.group_version, legacy=legacy), negotiated=negotiated)
            negotiated = negotiate(accept)
            if legacy:
                return respond(discovery.api_versions(f"{self.host}:{self._port}"), negotiated=negotiated)
            return respond(discovery.api_group_list(), negotiated=negotiated)
        segments = trimmed.strip("/").split("/")
        if trimmed == "/openapi/v3" or trimmed.startswith("/openapi/v3/"):
            return self._openapi_v3(segments[2:])
        if trimmed == "/openapi/v2":
            return self._openapi_v2(accept)
        body: dict[str, Any] | None = None
        if segments[0] == "api" and len(segments) == 2:
            body = discovery.api_resource_list("", segments[1])
        elif segments[0] == "apis" and len(segments) == 2:
            group = catalog.group_info(segments[1])
            body = discovery.api_group_document(group) if group else None
        elif segments[0] == "apis" and len(segments) == 3 and catalog.group_info(segments[1]):
            body = discovery.api_resource_list(segments[1], segments[2])
        if body is None:
            raise path_not_found()
        return respond(body, negotiated=negotiate(accept))

    def _openapi_v3(self, rest: list[str]) -> web.StreamResponse:
        if not rest:
            paths = {}
            for group, version in openapi.served_group_versions():
                document = _v3_document(self._schemas, group, version)
                if document is not None:
                    gv = openapi.gv_path(group, version)
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={openapi.document_hash(document)}"}
            return respond({"paths": paths})
        if rest[0] == "api" and len(rest) == 2:
            document = _v3_document(self._schemas, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            document = _v3_document(self._schemas, rest[1], rest[2])
        else:
            document = None
        if document is None:
            raise path_not_found()
        response = respond(document)
        response.headers["Cache-Control"] = "public, immutable"
        return response

    def _openapi_v2(self, accept: str | None) -> web.StreamResponse:
        if openapi_proto.MEDIA_TYPE in (accept or ""):
            return web.Response(body=_v2_protobuf(self._schemas), content_type=openapi_proto.RESPONSE_TYPE)
        return respond(_v2_document(self._schemas), negotiated=negotiate(accept))


# The documents only depend on the (cached, shared) schemas of a version: build each once per process.
@functools.cache
def _v3_document(schemas_: schemas.Schemas, group: str, version: str) -> dict[str, Any] | None:
    return openapi.v3_document(schemas_, group, version)


@functools.cache
def _v2_document(schemas_: schemas.Schemas) -> dict[str, Any]:
    return openapi.v2_document(schemas_)


@functools.cache
def _v2_protobuf(schemas_: schemas.Schemas) -> bytes:
    return openapi_proto.encode_document(_v2_document(schemas_))
