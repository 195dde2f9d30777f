"""A local OIDC identity provider: the sandbox's SSO and the test harness of authentication and login.

It implements what the connector and `python -m connector client login` use from a real IdP (Okta,
Entra ID, Google, Keycloak): discovery, a JWKS with RS256 keys (rotatable), the authorization code flow
with PKCE (S256) for loopback redirect URIs (RFC 8252), refresh tokens (rotated on use, revocable) and
the device authorization grant (RFC 8628). Web clients (the connector's console) register their https
redirect URIs in `redirect_uris` and, when confidential, their secret in `client_secrets`. The "browser
step" is an HTML form that picks a demo user; tests complete it over plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import html
import ipaddress
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class DemoUser:
    name: str
    email: str
    groups: tuple[str, ...] = ()


@dataclass
class _SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class _CodeGrant:
    user: DemoUser
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    expires_at: float


@dataclass
class _DeviceGrant:
    client_id: str
    user_code: str
    expires_at: float
    interval: int
    user: DemoUser | None = None
    denied: bool = False
    last_poll: float = 0.0


@dataclass
class _RefreshGrant:
    user: DemoUser
    client_id: str


def _is_loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.fragment:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


def _client_credentials(request: web.Request, form: Any) -> tuple[str, str | None]:
    """(client_id, secret) from HTTP Basic (client_secret_basic) or the form (client_secret_post, none)."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return "", None
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    secret = form.get("client_secret")
    return str(form.get("client_id", "")), str(secret) if secret is not None else None


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


@dataclass
class OidcIssuer:
    """Run with `await issuer.start()`; `issuer.url` is the issuer identifier (http on loopback)."""

    users: dict[str, DemoUser]
    client_ids: tuple[str, ...] = ("eks-access-connector",)
    id_token_lifetime: int = 3600
    host: str = "127.0.0.1"
    port: int = 0
    clock: Callable[[], float] = time.time
    # Redirect URIs of web clients, matched exactly (loopback http ones need no registration).
    redirect_uris: list[str] = field(default_factory=list)
    # client_id -> secret of confidential clients; they authenticate at /token (basic or post).
    client_secrets: dict[str, str] = field(default_factory=dict)
    _keys: list[_SigningKey] = field(default_factory=list)
    _codes: dict[str, _CodeGrant] = field(default_factory=dict)
    _devices: dict[str, _DeviceGrant] = field(default_factory=dict)
    _refresh: dict[str, _RefreshGrant] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    url: str = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._keys:
            self.rotate_key()
        app = web.Application()
        app.add_routes(
            [
                web.get("/.well-known/openid-configuration", self._discovery),
                web.get("/jwks", self._jwks),
                web.get("/authorize", self._authorize_form),
                web.post("/authorize", self._authorize_submit),
                web.post("/token", self._token),
                web.post("/device/code", self._device_code),
                web.get("/device", self._device_form),
                web.post("/device", self._device_submit),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- programmatic API (tests, sandbox) ---------------------------------------------------------

    def rotate_key(self) -> str:
        """Add a new signing key (the old ones stay published, as IdPs do during rotation)."""
        key = _SigningKey(kid=uuid.uuid4().hex[:16], private=rsa.generate_private_key(65537, 2048))
        self._keys.append(key)
        return key.kid

    def issue_id_token(
        self,
        user: str,
        *,
        client_id: str | None = None,
        lifetime: int | None = None,
        nonce: str | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        demo = self.users[user]
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": demo.name,
            "aud": client_id or self.client_ids[0],
            "iat": now,
            "exp": now + (self.id_token_lifetime if lifetime is None else lifetime),
            "email": demo.email,
            "email_verified": True,
            "name": demo.name,
            "groups": list(demo.groups),
        }
        if nonce:
            claims["nonce"] = nonce
        claims.update(extra_claims or {})
        key = self._keys[-1]
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    def revoke_refresh_tokens(self, user: str | None = None) -> int:
        doomed = [t for t, g in self._refresh.items() if user is None or g.user.name == user]
        for t in doomed:
            del self._refresh[t]
        return len(doomed)

    # --- endpoints -------------------------------------------------------------------------------

    async def _discovery(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "device_authorization_endpoint": f"{self.url}/device/code",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
                "claims_supported": ["sub", "email", "email_verified", "name", "groups"],
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [k.public_jwk() for k in self._keys]})

    def _user_choices(self) -> str:
        return "".join(
            f'<button name="user" value="{html.escape(u.name)}">{html.escape(u.name)} '
            f"({html.escape(', '.join(u.groups) or 'no groups')})</button> "
            for u in self.users.values()
        )

    async def _authorize_form(self, request: web.Request) -> web.Response:
        q = request.query
        problem = self._check_authorize_params(q)
        if problem:
            return web.Response(status=400, text=problem)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in q.items()
        )
        page = (
            "<!doctype html><title>Sandbox SSO</title><h1>Sandbox SSO: sign in as</h1>"
            f'<form method="post" action="/authorize">{hidden}{self._user_choices()}</form>'
        )
        return web.Response(text=page, content_type="text/html")

    def _check_authorize_params(self, q: Any) -> str | None:
        if q.get("response_type") != "code":
            return "response_type must be code"
        if q.get("client_id") not in self.client_ids:
            return "unknown client_id"
        redirect_uri = q.get("redirect_uri", "")
        if not _is_loopback_redirect(redirect_uri) and redirect_uri not in self.redirect_uris:
            return "redirect_uri must be an http loopback URI (RFC 8252) or a registered redirect URI"
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return "PKCE with code_challenge_method=S256 is required"
        if "openid" not in q.get("scope", "").split():
            return "scope must include openid"
        return None

    async def _authorize_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        problem = self._check_authorize_params(form)
        if problem:
            return web.Response(status=400, text=problem)
        user = self.users.get(str(form.get("user", "")))
        if user is None:
            return web.Response(status=400, text="unknown user")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _CodeGrant(
            user=user,
            client_id=str(form["client_id"]),
            redirect_uri=str(form["redirect_uri"]),
            code_challenge=str(form["code_challenge"]),
            nonce=str(form["nonce"]) if form.get("nonce") else None,
            expires_at=self.clock() + 120,
        )
        params = {"code": code}
        if form.get("state"):
            params["state"] = str(form["state"])
        raise web.HTTPFound(f"{form['redirect_uri']}?{urlencode(params)}")

    def _tokens(self, user: DemoUser, client_id: str, nonce: str | None = None) -> web.Response:
        refresh = secrets.token_urlsafe(32)
        self._refresh[refresh] = _RefreshGrant(user=user, client_id=client_id)
        id_token = self.issue_id_token(user.name, client_id=client_id, nonce=nonce)
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": self.id_token_lifetime,
                "id_token": id_token,
                "refresh_token": refresh,
                "scope": "openid email profile groups offline_access",
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        client_id, secret = _client_credentials(request, form)
        if client_id not in self.client_ids:
            return _oauth_error(401, "invalid_client", "unknown client_id")
        expected = self.client_secrets.get(client_id)
        if expected is not None and not secrets.compare_digest(secret or "", expected):
            return _oauth_error(401, "invalid_client", "this client must authenticate with its secret")
        if grant == "authorization_code":
            code = self._codes.pop(str(form.get("code", "")), None)
            if code is None or code.expires_at < self.clock() or code.client_id != client_id:
                return _oauth_error(400, "invalid_grant", "unknown, used or expired code")
            if str(form.get("redirect_uri", "")) != code.redirect_uri:
                return _oauth_error(400, "invalid_grant", "redirect_uri does not match")
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not verifier or not secrets.compare_digest(challenge, code.code_challenge):
                return _oauth_error(400, "invalid_grant", "PKCE verification failed")
            return self._tokens(code.user, client_id, code.nonce)
        if grant == "refresh_token":
            old = self._refresh.pop(str(form.get("refresh_token", "")), None)
            if old is None or old.client_id != client_id:
                return _oauth_error(400, "invalid_grant", "refresh token is invalid or revoked")
            return self._tokens(old.user, client_id)
        if grant == DEVICE_CODE_GRANT:
            return self._poll_device(str(form.get("device_code", "")), client_id)
        return _oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")

    async def _device_code(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        if client_id not in self.client_ids:
            return _oauth_error(401, "invalid_client", "unknown client_id")
        device_code = secrets.token_urlsafe(32)
        user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
        self._devices[device_code] = _DeviceGrant(
            client_id=client_id, user_code=user_code, expires_at=self.clock() + 600, interval=1
        )
        return web.json_response(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": f"{self.url}/device",
                "verification_uri_complete": f"{self.url}/device?{urlencode({'user_code': user_code})}",
                "expires_in": 600,
                "interval": 1,
            }
        )

    def _poll_device(self, device_code: str, client_id: str) -> web.Response:
        grant = self._devices.get(device_code)
        if grant is None or grant.client_id != client_id:
            return _oauth_error(400, "invalid_grant", "unknown device_code")
        now = self.clock()
        if grant.expires_at < now:
            del self._devices[device_code]
            return _oauth_error(400, "expired_token", "the device code expired; start again")
        if grant.denied:
            del self._devices[device_code]
            return _oauth_error(400, "access_denied", "the user denied the request")
        if grant.user is None:
            too_fast = now - grant.last_poll < grant.interval
            grant.last_poll = now
            if too_fast:
                return _oauth_error(400, "slow_down", "polling too fast")
            return _oauth_error(400, "authorization_pending", "waiting for the user")
        del self._devices[device_code]
        return self._tokens(grant.user, client_id)

    def _device_by_user_code(self, user_code: str) -> _DeviceGrant | None:
        return next((g for g in self._devices.values() if g.user_code == user_code.strip().upper()), None)

    async def _device_form(self, request: web.Request) -> web.Response:
        user_code = html.escape(request.query.get("user_code", ""))
        page = (
            "<!doctype html><title>Sandbox SSO</title><h1>Sandbox SSO: approve a device</h1>"
            f'<form method="post" action="/device"><input name="user_code" value="{user_code}">'
            f'{self._user_choices()}<button name="deny" value="1">deny</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _device_submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self._device_by_user_code(str(form.get("user_code", "")))
        if grant is None or grant.expires_at < self.clock():
            return web.Response(status=400, text="unknown or expired code")
        if form.get("deny"):
            grant.denied = True
            return web.Response(text="Denied. You can close this window.")
        user = self.users.get(str(form.get("user", "")))
        if user is None:
            return web.Response(status=400, text="unknown user")
        grant.user = user
        return web.Response(text="Approved. You can close this window and return to your terminal.")
