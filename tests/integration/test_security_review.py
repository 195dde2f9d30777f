"""Regression tests from a hostile review of the request path, against the real connector on 127.0.0.1.

Each test states what an attacker tries and what must hold: the cluster is asked exactly what the
policy decided, client identity never reaches it, upgrades open only when the cluster switched
protocols, and an unauthenticated client cannot make the connector hold large amounts of memory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import pytest
from aiohttp import web

from connector.authn.authenticator import Authenticator
from connector.authn.config import AuthenticationConfig, OidcIssuerConfig
from connector.authn.errors import AuthenticationError
from connector.authn.oidc import OidcVerifier
from tests.support.oidc import running_issuer
from tests.support.proxy_harness import ProxyHarness
from tests.support.raw_upstream import RawUpstream

PODS = "/sockets/prod/api/v1/namespaces/default/pods"
WEBSOCKET_HEAD = (
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
SPDY_HEAD = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"


def rule(verbs: list[str], resources: list[str], **extra: object) -> dict[str, object]:
    return {"verbs": verbs, "resources": resources, **extra}


def policies(alice_rules: list[dict[str, object]]) -> list[dict[str, object]]:
    """alice (group dev) gets exactly `alice_rules` on socket prod; bob (group ops) gets everything."""
    return [
        {"name": "dev", "subjects": {"groups": ["dev"]}, "sockets": ["prod"], "kubernetes": {"rules": alice_rules}},
        {"name": "ops-all", "subjects": {"groups": ["ops"]}, "sockets": ["*"], "kubernetes": {}},
    ]


def head(method: str, target: str, token: str, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"{method} {target} {version}\r\nHost: x\r\n{extra}Authorization: Bearer {token}\r\n\r\n".encode()


def status_message(data: bytes) -> str:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["message"]


async def open_raw(h: ProxyHarness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(h.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port, ssl=h.ssl_context())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length body: (status, head + body), without waiting for the close."""
    response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", response_head, re.IGNORECASE)
    assert length is not None, response_head
    body = await asyncio.wait_for(reader.readexactly(int(length[1])), 10)
    return int(response_head.split(b" ", 2)[1]), response_head + body


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the connector closes the connection (the test fails if it never does)."""
    return await asyncio.wait_for(reader.read(), 10)


# --- the cluster is asked exactly what the policy decided -------------------------------------------------


async def test_a_fragment_cannot_cut_the_query_the_policy_decided_on(tmp_path: Path) -> None:
    """`?x#&fieldSelector=metadata.name%3Dweb`: we read a list of "web" (allowed by resource_names), the
    upstream client would cut at `#` and list every pod."""
    named = policies([rule(["list"], ["pods"], namespaces=["default"], resource_names=["web"])])
    async with ProxyHarness(tmp_path, policies=named) as h:
        status, _ = await h.raw(head("GET", f"{PODS}?fieldSelector=metadata.name%3Dweb", h.tokens["alice"],
                                     "Connection: close\r\n"))  # fmt: skip
        assert status == 200
        assert h.upstream.requests[-1].path == "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb"
        for query in ("x#&fieldSelector=metadata.name%3Dweb", "fieldSelector=metadata.name%3Dweb#"):
            status, data = await h.raw(head("GET", f"{PODS}?{query}", h.tokens["alice"], "Connection: close\r\n"))
            assert status == 400 and "'#'" in status_message(data)
        assert len(h.upstream.requests) == 1


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # absolute-form: the route matches the path, but the raw target is not /sockets/...
        (lambda t: head("GET", f"https://evil.example/{PODS.lstrip('/')}", t, "Connection: close\r\n"), 400),
        # request smuggling: both framings at once
        (lambda t: head("POST", PODS, t, "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n") + b"0\r\n\r\n", 400),
        # a dot segment after the socket name would name another path at the cluster
        (lambda t: head("GET", "/sockets/prod/../prod/api/v1/namespaces/default/pods", t, "Connection: close\r\n"),
         400),
    ],
    ids=["absolute-form", "te-and-cl", "dot-after-socket"],
)  # fmt: skip
async def test_request_shapes_the_cluster_could_read_differently_never_reach_it(
    tmp_path: Path, request_head, status: int
) -> None:
    async with ProxyHarness(tmp_path) as h:
        got, data = await h.raw(request_head(h.tokens["bob"]))
        assert got == status, data[:300]
        assert h.upstream.requests == []


@pytest.mark.parametrize("socket", ["PROD", "pr%6fd", "prod%2F", "prod.", "..", "%2e%2e"])
async def test_the_socket_name_is_used_exactly_as_sent(tmp_path: Path, socket: str) -> None:
    """No case folding, decoding or normalising: a name that is not exactly a served socket is not one."""
    async with ProxyHarness(tmp_path) as h:
        status, _ = await h.raw(head("GET", f"/sockets/{socket}/api/v1/pods", h.tokens["bob"], "Connection: close\r\n"))
        assert status == 404
        assert h.upstream.requests == []


async def test_http_1_0_requests_are_served(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path) as h:
        status, data = await h.raw(head("GET", PODS, h.tokens["alice"], version="HTTP/1.0"))
        assert status == 200 and b'"PodList"' in data
        assert h.upstream.requests[-1].path == "/api/v1/namespaces/default/pods"


# --- client identity never reaches the cluster ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Impersonate_User", "IMPERSONATE_GROUP", "impersonate_extra_scopes"])
async def test_impersonation_under_another_spelling_is_refused(tmp_path: Path, name: str) -> None:
    """Servers that map headers to CGI variables read `Impersonate_User` as `Impersonate-User`."""
    async with ProxyHarness(tmp_path) as h:
        status, _, body = await h.request("GET", PODS, user="bob", headers={name: "system:admin"})
        assert status == 403 and name in body.decode()
        assert h.upstream.requests == []


async def test_identity_headers_under_another_spelling_are_dropped(tmp_path: Path) -> None:
    spoofed = {
        "X_Remote_User": "system:admin",
        "X_Remote_Group": "system:masters",
        "X_Forwarded_For": "6.6.6.6",
        "Proxy_Authorization": "Bearer stolen",
        "Sec-WebSocket-Protocol": "Base64URL.Bearer.Authorization.K8s.Io.c2VjcmV0, v4.channel.k8s.io",
    }
    async with ProxyHarness(tmp_path) as h:
        status, _, _ = await h.request("GET", PODS, headers=spoofed)
        assert status == 200
        seen = h.upstream.requests[-1].headers
        names = {n.lower().replace("_", "-") for n in seen}
        assert not names & {"x-remote-user", "x-remote-group", "proxy-authorization"}
        assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
        assert seen["Sec-WebSocket-Protocol"] == "v4.channel.k8s.io"  # the token, in any case, is gone


async def test_the_clusters_audit_id_is_the_connectors_request_id(tmp_path: Path) -> None:
    """The cluster's audit log names the connector for every request; its Audit-ID is the only link to the
    connector's audit event that names the person, so a client must not choose it."""
    async with ProxyHarness(tmp_path) as h:
        status, headers, _ = await h.request("GET", PODS, headers={"Audit-ID": "someone-elses-request"})
        assert status == 200
        request_id = headers["X-Connector-Request-Id"]
        assert h.upstream.requests[-1].headers.getall("Audit-ID") == [request_id]
        assert h.audit_events()[-1]["request_id"] == request_id


async def test_cluster_cookies_and_auth_challenges_are_not_relayed(tmp_path: Path) -> None:
    answer = (
        b'HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Basic realm="cluster"\r\n'
        b"Set-Cookie: session=abc; Path=/\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    async with RawUpstream(answer, then="close") as upstream, ProxyHarness(tmp_path, cluster=upstream.cluster) as h:
        # Through a proxy subresource the 401 is relayed (it may be the application's own answer)...
        status, headers, body = await h.request("GET", f"{PODS}/web/proxy/login", user="bob")
        assert (status, body) == (401, b"{}")
        assert "WWW-Authenticate" not in headers and "Set-Cookie" not in headers
        assert upstream.received[0].startswith(b"GET /api/v1/namespaces/default/pods/web/proxy/login HTTP/1.1\r\n")
        # ...anywhere else it is the cluster refusing the connector's credentials: a 502 saying so
        status, headers, body = await h.request("GET", PODS, user="bob")
        assert status == 502 and b"refused the connector's credentials" in body
        assert "WWW-Authenticate" not in headers and "Set-Cookie" not in headers


# --- upgrades ---------------------------------------------------------------------------------------------

PROXY_TARGETS = [
    "/sockets/prod/api/v1/nodes/node-1/proxy/exec/default/web/app?command=id&output=1",
    "/sockets/prod/api/v1/namespaces/default/pods/web/proxy/socket",
    "/sockets/prod/api/v1/namespaces/default/services/web:80/proxy/socket",
]


@pytest.mark.parametrize("target", PROXY_TARGETS, ids=["nodes", "pods", "services"])
async def test_a_stream_through_a_proxy_subresource_needs_create(tmp_path: Path, target: str) -> None:
    """`get nodes/proxy` is what monitoring agents get to read kubelet metrics; over a websocket GET it would
    reach the kubelet's /exec and run commands in any pod on the node."""
    readers = policies([rule(["get"], ["nodes/proxy", "pods/proxy", "services/proxy"])])
    async with ProxyHarness(tmp_path, policies=readers) as h:
        status, _, _ = await h.request("GET", target)  # a plain proxied GET keeps the apiserver's verb
        assert status == 404 and len(h.upstream.requests) == 1  # the test cluster has nothing there

        status, data = await h.raw(head("GET", target, h.tokens["alice"], WEBSOCKET_HEAD))
        assert status == 403 and "no rule allows create" in status_message(data)
        assert len(h.upstream.requests) == 1

        status, data = await h.raw(head("GET", target, h.tokens["bob"], WEBSOCKET_HEAD))
        assert status == 404  # bob may create: the upgrade went to the cluster, which refused it
        assert h.upstream.requests[-1].headers["Upgrade"] == "websocket"


@pytest.mark.parametrize("subresource", ["exec", "attach", "portforward"])
@pytest.mark.parametrize("shape", ["GET", "POST", "websocket GET", "SPDY POST"])
async def test_streams_into_pods_need_create_whatever_the_method(tmp_path: Path, subresource: str, shape: str) -> None:
    getters = policies([rule(["get", "list", "watch"], ["pods/exec", "pods/attach", "pods/portforward"])])
    method = shape.split()[-1]
    extra = {"GET": "", "POST": "Content-Length: 0\r\n", "websocket GET": WEBSOCKET_HEAD, "SPDY POST": SPDY_HEAD}
    async with ProxyHarness(tmp_path, policies=getters) as h:
        target = f"{PODS}/web/{subresource}?command=id&stdout=true"
        status, data = await h.raw(head(method, target, h.tokens["alice"], extra[shape] + "Connection: close\r\n"))
        assert status == 403 and f"create pods/{subresource}" in status_message(data)
        assert h.upstream.requests == []


async def test_an_upgrade_the_cluster_did_not_switch_is_no_tunnel(tmp_path: Path) -> None:
    """CVE-2018-1002105: the cluster answers 200 (with Upgrade headers, even); the client must not get a 101,
    and bytes it sent after its request must not reach the cluster, neither tunnelled nor as a request."""
    answer = b"HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 2\r\n\r\n{}"
    async with RawUpstream(answer) as upstream, ProxyHarness(tmp_path, cluster=upstream.cluster) as h:
        reader, writer = await open_raw(h)
        smuggled = b"GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(head("POST", f"{PODS}/web/exec?command=id", h.tokens["bob"], SPDY_HEAD) + smuggled)
        data = await read_to_eof(reader)  # the connector closes the connection after the plain answer
        writer.close()
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"{}") and b" 101 " not in data
        await asyncio.wait_for(upstream.closed.wait(), 10)
        assert len(upstream.received) == 1 and b"secrets" not in upstream.received[0]


async def test_a_switch_to_another_protocol_is_a_502(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    async with RawUpstream(answer) as upstream, ProxyHarness(tmp_path, cluster=upstream.cluster) as h:
        status, data = await h.raw(head("GET", f"{PODS}/web/exec?command=id", h.tokens["bob"], WEBSOCKET_HEAD))
        assert status == 502 and b" 101 " not in data


async def test_the_cluster_hanging_up_ends_the_clients_session(tmp_path: Path) -> None:
    """After the 101, the cluster closes at once: the client's connection is closed too, so it cannot keep
    a half-open tunnel; what it sends afterwards goes nowhere."""
    answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
    async with RawUpstream(answer, then="close") as upstream, ProxyHarness(tmp_path, cluster=upstream.cluster) as h:
        reader, writer = await open_raw(h)
        writer.write(head("POST", f"{PODS}/web/exec?command=id", h.tokens["bob"], SPDY_HEAD))
        response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert response_head.startswith(b"HTTP/1.1 101 ")
        assert await read_to_eof(reader) == b""
        writer.write(b"\x80\x03\x00\x01 more bytes after the end")
        writer.close()
        complete = [e for e in await h.settled_audit() if e["stage"] == "ResponseComplete"]
        assert complete[-1]["code"] == 101 and complete[-1]["bytes_in"] == 0


# --- resource exhaustion ----------------------------------------------------------------------------------


async def test_a_header_line_longer_than_any_client_needs_is_refused_by_the_parser(tmp_path: Path) -> None:
    """aiohttp holds a whole request head before any handler runs and limits each line, not the sum: lines as
    long as the 1 MiB total made a gigabyte possible per request. 20 KiB lines still work."""
    async with ProxyHarness(tmp_path) as h:
        # (a Cookie, because the connector drops it: the test cluster itself takes no long lines)
        status, _, _ = await h.request("GET", PODS, headers={"Cookie": "v" * 20_000})
        assert status == 200
        status, _, _ = await h.request("GET", PODS, headers={"Cookie": "v" * 40_000})
        assert status == 400
        assert len(h.upstream.requests) == 1


async def test_a_body_that_stops_arriving_is_a_408(tmp_path: Path) -> None:
    config = {"server": {"upstream": {"response_seconds": 0.5}}}
    async with ProxyHarness(tmp_path, config=config) as h:
        reader, writer = await open_raw(h)
        target = "/sockets/prod/api/v1/namespaces/default/configmaps"
        chunked = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        writer.write(head("POST", target, h.tokens["bob"], chunked) + b'5\r\n{"a":\r\n')  # and nothing more
        status, data = await read_response(reader)
        writer.close()
        assert status == 408 and "did not arrive" in status_message(data)
        assert b"\r\nConnection: close\r\n" in data
        assert h.upstream.requests == []


async def test_readyz_names_what_failed_but_not_why(tmp_path: Path) -> None:
    """/readyz answers anyone; the reasons (paths, endpoints, AWS errors) belong in the log."""
    missing = tmp_path / "secret-location" / "kubeconfig"
    config = {"sockets": {"broken": {"service_type": "standard", "kubeconfig_path": str(missing)}}}
    async with ProxyHarness(tmp_path, config=config) as h:
        status, _, body = await h.request("GET", "/readyz", user=None)
        assert status == 503 and b"[-]sockets failed: broken:" in body
        assert b"secret-location" not in body


class _Issuer:
    """An OIDC discovery document and a JWKS endpoint that can be made to fail; counts JWKS fetches."""

    def __init__(self) -> None:
        self.failing = False
        self.fetches = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _discovery(self, _: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/jwks"})

    async def _jwks(self, _: web.Request) -> web.Response:
        self.fetches += 1
        return web.Response(status=500) if self.failing else web.json_response({"keys": []})

    async def __aenter__(self) -> _Issuer:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def _forged(issuer: str, kid: str) -> tuple[str, dict[str, str]]:
    def part(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = {"alg": "RS256", "kid": kid}
    return f"{part(header)}.{part({'iss': issuer})}.c2ln", header


async def _refusals(verifier: OidcVerifier, issuer: str, count: int) -> set[str]:
    reasons = set()
    for i in range(count):
        token, header = _forged(issuer, f"kid-{i}")
        with pytest.raises(AuthenticationError) as exc:
            await verifier.verify(token, header)
        reasons.add(exc.value.reason)
    return reasons


async def test_failing_key_fetches_are_rate_limited_like_successful_ones() -> None:
    """While the issuer fails, forged tokens with new kids must not each cost a fetch (and each wait for it)."""
    async with _Issuer() as issuer:
        now = [1000.0]
        config = OidcIssuerConfig(issuer=issuer.url, client_id="c", jwks_min_refresh_seconds=30)
        verifier = OidcVerifier(config, clock=lambda: now[0])
        try:
            issuer.failing = True  # down from the start: the first fetch fails, the next ones wait
            assert await _refusals(verifier, issuer.url, 20) == {"jwks_unavailable"}
            assert issuer.fetches == 1
            now[0] += 30
            issuer.failing = False
            assert await _refusals(verifier, issuer.url, 20) == {"invalid"}  # fetched; no such kid
            assert issuer.fetches == 2
            now[0] += 30
            issuer.failing = True  # fails later: unknown kids try once per interval
            assert await _refusals(verifier, issuer.url, 20) == {"jwks_unavailable", "invalid"}
            assert issuer.fetches == 3
        finally:
            await verifier.close()


@pytest.mark.parametrize("claims", [{"email": "bob@example.com\r\nX-Injected: 1"}, {"groups": ["dev\n"]}])
async def test_names_with_control_characters_are_refused_at_authentication(claims: dict[str, object]) -> None:
    """User and group names become Impersonate-* headers: a line break would otherwise be found by the HTTP
    client only after the request was authorized (a 500 with no audit event, or a 502 for an exec)."""
    async with running_issuer() as issuer:
        config = {"oidc": [{"issuer": issuer.url, "client_id": "eks-access-connector"}]}
        auth = Authenticator.from_config(AuthenticationConfig.model_validate(config))
        try:
            assert (await auth.authenticate_token(issuer.issue_id_token("bob"))).user == "bob@example.com"
            with pytest.raises(AuthenticationError, match="control character"):
                await auth.authenticate_token(issuer.issue_id_token("bob", extra_claims=claims))
        finally:
            await auth.close()


async def test_a_token_that_nests_too_deep_is_a_401_with_its_audit_event(tmp_path: Path) -> None:
    """A JWT-shaped token whose header is `[[[[...`: the JSON decoder's RecursionError escaped as a 500,
    unaudited, for anyone who could reach the connector."""
    oidc = {"authentication": {"oidc": [{"issuer": "https://sso.example.com", "client_id": "eks-access-connector"}]}}
    async with ProxyHarness(tmp_path, config=oidc) as h:
        nested = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=").decode()
        status, _, _ = await h.request("GET", PODS, user=None, headers={"Authorization": f"Bearer {nested}.e30.c2ln"})
        assert status == 401
        assert h.audit_events()[-1]["decision"] == "unauthenticated"
        assert h.upstream.requests == []
