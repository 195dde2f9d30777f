"""Authentication against real local servers: the sandbox's OIDC issuer, a TLS server for client
certificates, and service-token files on disk."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector.authn.authenticator import Authenticator, login_config
from connector.authn.config import AuthenticationConfig
from connector.authn.errors import AuthenticationError
from connector.authn.service_tokens import ServiceTokenStore, hash_token, new_token
from connector.configfile import ConfigError
from connector.identity import Identity
from connector.pki import generate_ca, issue_certificate
from tests.support.oidc import running_issuer


def _app(authenticator: Authenticator) -> web.Application:
    async def whoami(request: web.Request) -> web.Response:
        try:
            ident = await authenticator.authenticate(request)
        except AuthenticationError as exc:
            return web.json_response({"error": exc.public_message, "detail": exc.detail}, status=401)
        return web.json_response({"user": ident.user, "groups": list(ident.groups), "method": ident.method})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    return app


async def _whoami(authenticator: Authenticator, headers: dict[str, str]) -> tuple[int, dict]:
    # Headers as large as the connector accepts (long id_tokens with many groups exist in the wild).
    server = TestServer(_app(authenticator))
    await server.start_server(max_field_size=32768)
    async with TestClient(server) as client:
        resp = await client.get("/whoami", headers=headers)
        return resp.status, await resp.json()


def _oidc_config(issuer_url: str, **extra: object) -> AuthenticationConfig:
    return AuthenticationConfig.model_validate(
        {"oidc": [{"issuer": issuer_url, "client_id": "eks-access-connector", **extra}]}
    )


async def test_oidc_token_maps_email_and_groups():
    async with running_issuer() as issuer:
        auth = Authenticator.from_config(_oidc_config(issuer.url, groups_prefix="sso:"))
        status, body = await _whoami(auth, {"Authorization": f"Bearer {issuer.issue_id_token('alice')}"})
        await auth.close()
    assert status == 200
    assert body == {"user": "alice@example.com", "groups": ["sso:platform-admins"], "method": "oidc"}


@pytest.mark.parametrize(
    ("make_token", "detail_part"),
    [
        (lambda i: i.issue_id_token("bob", lifetime=-120), "expired"),
        (lambda i: i.issue_id_token("bob", client_id="someone-else"), "audience"),
        (lambda i: i.issue_id_token("bob", extra_claims={"iss": "https://evil.example.com"}), "untrusted issuer"),
        (lambda i: i.issue_id_token("bob", extra_claims={"email_verified": False}), "not verified"),
        (lambda i: i.issue_id_token("bob", extra_claims={"email": ""}), "missing or empty"),
        (lambda i: i.issue_id_token("bob", extra_claims={"groups": {"a": 1}}), "not a list of strings"),
        (lambda i: i.issue_id_token("bob", extra_claims={"iat": int(time.time()) + 3600}), "iat"),
        (
            lambda i: jwt.encode(
                {"iss": i.url, "aud": "eks-access-connector", "email": "x@y", "exp": 2**40, "iat": 0},
                "a-32-byte-long-hmac-key-for-test",
                algorithm="HS256",
            ),
            "algorithm 'HS256' is not allowed",
        ),
        (
            lambda i: jwt.encode(
                {"iss": i.url, "aud": "eks-access-connector", "email": "x@y", "exp": 2**40, "iat": 0},
                None,
                algorithm="none",
            ),
            "algorithm 'none' is not allowed",
        ),
    ],
    ids=[
        "expired",
        "wrong-aud",
        "wrong-iss",
        "unverified-email",
        "empty-user",
        "bad-groups",
        "future-iat",
        "hs256",
        "none",
    ],
)
async def test_bad_oidc_tokens_are_refused_without_detail_to_the_client(make_token, detail_part):
    async with running_issuer() as issuer:
        auth = Authenticator.from_config(_oidc_config(issuer.url))
        status, body = await _whoami(auth, {"Authorization": f"Bearer {make_token(issuer)}"})
        await auth.close()
    assert status == 401
    assert body["error"] == "invalid bearer token"
    assert detail_part.lower() in body["detail"].lower()


async def test_tampered_signature_is_refused():
    async with running_issuer() as issuer:
        auth = Authenticator.from_config(_oidc_config(issuer.url))
        header, payload, sig = issuer.issue_id_token("bob").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["groups"] = ["platform-admins"]
        forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        status, body = await _whoami(auth, {"Authorization": f"Bearer {header}.{forged_payload}.{sig}"})
        await auth.close()
    assert status == 401
    assert "Signature" in body["detail"] or "signature" in body["detail"]


async def test_key_rotation_is_picked_up_but_refreshes_are_rate_limited():
    async with running_issuer() as issuer:
        now = [1000.0]
        auth = Authenticator.from_config(_oidc_config(issuer.url, jwks_min_refresh_seconds=60))
        verifier = next(iter(auth._oidc.values()))
        verifier._clock = lambda: now[0]
        assert (await _whoami(auth, {"Authorization": f"Bearer {issuer.issue_id_token('bob')}"}))[0] == 200
        issuer.rotate_key()
        new_token_ = issuer.issue_id_token("bob")
        now[0] += 10  # within the rate limit: the new kid is unknown and no refresh happens
        status, body = await _whoami(auth, {"Authorization": f"Bearer {new_token_}"})
        assert status == 401 and "no key with kid" in body["detail"]
        now[0] += 60  # past the limit: the unknown kid triggers one refresh
        assert (await _whoami(auth, {"Authorization": f"Bearer {new_token_}"}))[0] == 200
        await auth.close()


async def test_unreachable_issuer_is_a_clean_401():
    auth = Authenticator.from_config(_oidc_config("http://127.0.0.1:9"))

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    # The header names an allowed algorithm, so the verifier needs the issuer's keys and cannot fetch them.
    token = f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part({'iss': 'http://127.0.0.1:9'})}.c2ln"
    status, body = await _whoami(auth, {"Authorization": f"Bearer {token}"})
    await auth.close()
    assert status == 401
    assert body["error"] == "the identity provider's keys could not be fetched"


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "authentication required"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "invalid bearer token"),
        ({"Authorization": "Bearer "}, "invalid bearer token"),
        ({"Authorization": "Bearer a b"}, "invalid bearer token"),
        ({"Authorization": "Bearer " + "x" * 20000}, "invalid bearer token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid bearer token"),
        ({"Authorization": "Bearer opaque-unknown"}, "invalid bearer token"),
    ],
)
async def test_malformed_credentials(headers, error, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: []\n")
    async with running_issuer() as issuer:
        cfg = AuthenticationConfig.model_validate(
            {
                "oidc": [{"issuer": issuer.url, "client_id": "eks-access-connector"}],
                "service_tokens": {"file": str(tokens)},
            }
        )
        auth = Authenticator.from_config(cfg)
        status, body = await _whoami(auth, headers)
        await auth.close()
    assert status == 401
    assert body["error"].startswith(error)


async def test_two_authorization_headers_are_refused():
    auth = Authenticator([], None, None)
    async with TestClient(TestServer(_app(auth))) as client:
        resp = await client.get("/whoami", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
        assert resp.status == 401
        assert "more than one" in (await resp.json())["detail"]


async def test_websocket_bearer_subprotocol(tmp_path):
    secret = new_token()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - sha256: {hash_token(secret)}\n    user: ci-bot\n    groups: [ci]\n")
    auth = Authenticator([], ServiceTokenStore(str(tokens)), None)
    encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    status, body = await _whoami(
        auth, {"Sec-WebSocket-Protocol": f"v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.{encoded}"}
    )
    assert status == 200
    assert body == {"user": "ci-bot", "groups": ["ci"], "method": "service-token"}


def test_service_tokens_reload_expire_and_survive_a_bad_edit(tmp_path: Path):
    path = tmp_path / "tokens.yaml"
    first, second = new_token(), new_token()
    path.write_text(f"tokens:\n  - sha256: {hash_token(first)}\n    user: deployer\n")
    clock = [0.0]
    store = ServiceTokenStore(str(path), clock=lambda: clock[0])
    assert store.authenticate(first) == Identity("deployer", (), "service-token")
    with pytest.raises(AuthenticationError):
        store.authenticate(second)

    path.write_text(
        f"tokens:\n  - sha256: {hash_token(second)}\n    user: new-bot\n    groups: [ci, deploy]\n"
        f"  - sha256: {hash_token(first)}\n    user: deployer\n    not_after: 2020-01-01T00:00:00Z\n"
    )
    clock[0] += 5
    assert store.authenticate(second) == Identity("new-bot", ("ci", "deploy"), "service-token")
    with pytest.raises(AuthenticationError) as exc:
        store.authenticate(first)
    assert "expired" in exc.value.detail

    path.write_text("tokens:\n  - sha256: nothex\n    user: x\n")
    clock[0] += 5
    assert store.authenticate(second).user == "new-bot"  # the bad edit is refused, the old set stays


def test_service_token_file_errors_name_the_key(tmp_path: Path):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - sha256: abc\n    user: x\n    group: [a]\n")
    with pytest.raises(ConfigError) as exc:
        ServiceTokenStore(str(path))
    assert f"{path}:2: tokens[0].sha256: must be the 64 lower-case hex digits" in str(exc.value)
    assert f"{path}:4: tokens[0].group: unknown key" in str(exc.value)


async def test_client_certificate_identity(tmp_path: Path):
    client_ca = generate_ca("clients")
    server_ca = generate_ca("server")
    server = issue_certificate(server_ca, "localhost", hosts=("127.0.0.1",))
    good = issue_certificate(client_ca, "dana", organizations=("sre", "oncall"), client=True)
    rogue = issue_certificate(generate_ca("rogue"), "mallory", organizations=("system:masters",), client=True)
    for name, blob in {
        "client-ca.pem": client_ca.cert_pem,
        "srv.pem": server.cert_pem,
        "srv.key": server.key_pem,
        "good.pem": good.cert_pem,
        "good.key": good.key_pem,
        "rogue.pem": rogue.cert_pem,
        "rogue.key": rogue.key_pem,
        "server-ca.pem": server_ca.cert_pem,
    }.items():
        (tmp_path / name).write_bytes(blob)

    auth = Authenticator.from_config(
        AuthenticationConfig.model_validate(
            {"client_certificates": {"client_ca_file": str(tmp_path / "client-ca.pem")}}
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    server_ctx.load_verify_locations(auth.client_ca_file)
    runner = web.AppRunner(_app(auth))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def call(cert: str | None) -> tuple[int, dict]:
        ctx = ssl.create_default_context(cafile=tmp_path / "server-ca.pem")
        if cert:
            ctx.load_cert_chain(tmp_path / f"{cert}.pem", tmp_path / f"{cert}.key")
        async with aiohttp.ClientSession() as s:
            try:
                async with s.get(f"https://127.0.0.1:{port}/whoami", ssl=ctx) as r:
                    return r.status, await r.json()
            except aiohttp.ClientError as exc:
                return -1, {"error": str(exc)}

    try:
        assert await call("good") == (200, {"user": "dana", "groups": ["sre", "oncall"], "method": "client-cert"})
        status, _ = await call(None)
        assert status == 401
        status, _ = await call("rogue")
        assert status == -1  # the TLS handshake itself refuses a certificate from another CA
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        ({"oidc": [{"issuer": "http://sso.example.com", "client_id": "x"}]}, "plain http is allowed only on loopback"),
        ({"oidc": [{"issuer": "ftp://sso", "client_id": "x"}]}, "must be an https:// URL"),
        ({"oidc": [{"issuer": "https://sso", "client_id": " "}]}, "must not be empty"),
        ({"oidc": [{"issuer": "https://sso", "client_id": "x", "algorithms": ["HS256"]}]}, "unsupported algorithm"),
        ({"oidc": [{"issuer": "https://sso", "client_id": "x"}], "login_issuer": "https://other"}, "not one of"),
    ],
)
def test_authentication_config_errors(cfg, error):
    with pytest.raises(ValueError, match=error):
        AuthenticationConfig.model_validate(cfg)


def test_login_config_picks_the_login_issuer():
    cfg = AuthenticationConfig.model_validate(
        {
            "oidc": [{"issuer": "https://a", "client_id": "ca"}, {"issuer": "https://b", "client_id": "cb"}],
            "login_issuer": "https://b",
        }
    )
    assert login_config(cfg) == {"issuer": "https://b", "client_id": "cb"}
    assert login_config(AuthenticationConfig()) is None


def test_service_token_expiry_uses_the_given_time(tmp_path: Path):
    token = new_token()
    path = tmp_path / "t.yaml"
    path.write_text(f"tokens:\n  - sha256: {hash_token(token)}\n    user: u\n    not_after: 2030-01-01T00:00:00Z\n")
    store = ServiceTokenStore(str(path))
    assert store.authenticate(token, now=dt.datetime(2029, 12, 31, tzinfo=dt.UTC)).user == "u"
    with pytest.raises(AuthenticationError):
        store.authenticate(token, now=dt.datetime(2030, 1, 2, tzinfo=dt.UTC))
