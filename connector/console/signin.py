"""Console sign-in: the OIDC authorization code flow with PKCE (S256), done by the connector.

`GET /console/login` sends the browser to the issuer with a fresh `state`, nonce and code challenge;
`GET /console/callback` exchanges the code (as a public client, or with the configured client secret),
verifies the id_token with the same verifier that checks `kubectl`'s tokens, checks its nonce, and
starts a browser session. Authlib builds the protocol messages; aiohttp carries them.

The callback answers with a page that moves on to `/console/` itself rather than with a redirect: the
browser arrives from the issuer's site, and a `SameSite=Strict` cookie set at the end of a cross-site
redirect chain is not sent on the next hop of that chain.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
from aiohttp import web
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from connector.authn.errors import AuthenticationError
from connector.authn.oidc import OidcVerifier
from connector.console.audit_trail import console_call, record
from connector.console.browser_sessions import COOKIE, SIGNIN_COOKIE, SIGNIN_SECONDS
from connector.console.guard import CONSOLE_PATH, console_context, set_cookie
from connector.console.render import message_page, page
from connector.identity import Identity
from connector.proxy.handler import Call
from connector.secrets import SecretError, resolve_secret

log = logging.getLogger(__name__)

SCOPES = "openid email profile groups"
CALLBACK_PATH = CONSOLE_PATH + "callback"
MAX_TOKEN_RESPONSE_BYTES = 1 << 20


class SignInError(Exception):
    """Sign-in failed: the message is shown to the person signing in (no secrets, no tokens)."""


def _verifier(request: web.Request) -> OidcVerifier:
    ctx = console_context(request)
    issuer = ctx.console.issuer or (ctx.login_config or {}).get("issuer")
    verifier = ctx.authenticator.oidc_verifier(issuer) if issuer else None
    if verifier is None:
        raise SignInError(f"the console's issuer {issuer!r} is not configured in authentication.oidc")
    return verifier


def redirect_uri(request: web.Request) -> str:
    """The redirect URI to register with the issuer: the connector's public URL + /console/callback."""
    return console_context(request).public_url + CALLBACK_PATH


async def _endpoints(verifier: OidcVerifier) -> dict[str, str]:
    try:
        doc = await verifier.provider_document()
    except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
        log.warning("console sign-in: the issuer's discovery document could not be read: %s", exc)
        raise SignInError("the identity provider could not be reached; try again later") from None
    endpoints = {k: doc.get(k) for k in ("authorization_endpoint", "token_endpoint")}
    if not all(isinstance(v, str) and v.startswith(("https://", "http://")) for v in endpoints.values()):
        raise SignInError("the identity provider's discovery document lacks its authorization or token endpoint")
    return endpoints  # type: ignore[return-value]


async def login(request: web.Request) -> web.StreamResponse:
    ctx = console_context(request)
    try:
        verifier = _verifier(request)
        endpoints = await _endpoints(verifier)
    except SignInError as exc:
        return message_page(502, "Sign-in is not available", str(exc))
    pending = await ctx.browser_sessions.begin_signin()
    url = prepare_grant_uri(
        endpoints["authorization_endpoint"],
        verifier.config.client_id,
        "code",
        redirect_uri(request),
        SCOPES,
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=create_s256_code_challenge(pending.code_verifier),
        code_challenge_method="S256",
    )
    response = web.Response(status=302, headers={"Location": url})
    # Lax, not Strict: it must come back with the top-level navigation from the issuer.
    set_cookie(
        response, SIGNIN_COOKIE, pending.browser_key, path=CALLBACK_PATH, max_age=SIGNIN_SECONDS, same_site="Lax"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _client_auth(verifier: OidcVerifier, secret_ref: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(token request fields, headers): a public client names itself, a confidential one uses HTTP Basic."""
    if secret_ref is None:
        return {"client_id": verifier.config.client_id}, {}
    try:
        secret = resolve_secret(secret_ref)
    except SecretError as exc:
        log.error("console sign-in: console.client_secret: %s", exc)
        raise SignInError("the console's client secret is not available (see the connector's log)") from None
    # RFC 6749 2.3.1: both are form-urlencoded before they go into the Basic credentials.
    return {}, {
        "Authorization": aiohttp.encode_basic_auth(quote(verifier.config.client_id, safe=""), quote(secret, safe=""))
    }


async def _exchange(request: web.Request, verifier: OidcVerifier, code: str, code_verifier: str) -> str:
    """The id_token the issuer gives for this code."""
    endpoints = await _endpoints(verifier)
    extra, auth_headers = _client_auth(verifier, console_context(request).console.client_secret)
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri(request), code_verifier=code_verifier, **extra
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **auth_headers}
    try:
        async with verifier.http().post(
            endpoints["token_endpoint"], data=body, headers=headers, allow_redirects=False
        ) as resp:
            raw = await resp.content.read(MAX_TOKEN_RESPONSE_BYTES + 1)
            status = resp.status
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:
        log.warning("console sign-in: the token request failed: %s", exc)
        raise SignInError("the identity provider could not be reached; try again later") from None
    try:
        answer: Any = json.loads(raw) if len(raw) <= MAX_TOKEN_RESPONSE_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SignInError(f"the identity provider's token endpoint answered HTTP {status} without a JSON object")
    if status != 200:
        error = str(answer.get("error_description") or answer.get("error") or f"HTTP {status}")
        raise SignInError(f"the identity provider refused the sign-in: {error}")
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise SignInError("the identity provider answered without an id_token (is the openid scope allowed?)")
    return id_token


async def _signed_in_identity(request: web.Request, call: Call) -> Identity:
    """Who the issuer says completed this sign-in; SignInError with what to tell them otherwise."""
    ctx = console_context(request)
    query = request.query
    if "error" in query:
        raise SignInError(f"the identity provider said: {query.get('error_description') or query['error']}")
    pending = await ctx.browser_sessions.finish_signin(query.get("state", ""), request.cookies.get(SIGNIN_COOKIE, ""))
    if pending is None:
        raise SignInError("this sign-in link is unknown, used, expired or from another browser: sign in again")
    code = query.get("code", "")
    if not code:
        raise SignInError("the identity provider sent no authorization code")
    try:
        verifier = _verifier(request)
        id_token = await _exchange(request, verifier, code, pending.code_verifier)
        identity = await verifier.verify(id_token, jwt.get_unverified_header(id_token))
        # Verified above; only the nonce is left to compare.
        if jwt.decode(id_token, options={"verify_signature": False}).get("nonce") != pending.nonce:
            raise SignInError("the id_token does not carry this sign-in's nonce")
    except AuthenticationError as exc:
        log.warning("console sign-in: id_token refused: %s", exc.detail)
        call.error = exc.detail
        raise SignInError(f"the id_token was refused: {exc.public_message}") from None
    except jwt.PyJWTError:
        raise SignInError("the identity provider sent an id_token that is not a JWT") from None
    return identity


async def callback(request: web.Request) -> web.StreamResponse:
    """Finish a sign-in; both outcomes are audited (connector.console.audit_trail)."""
    call = console_call(request)
    try:
        identity = await _signed_in_identity(request, call)
    except SignInError as exc:
        await record(call, "unauthenticated", 400, f"console sign-in failed: {exc}")
        return message_page(400, "Sign-in failed", str(exc))
    call.identity = identity
    session_id = await console_context(request).browser_sessions.create(identity)
    log.info("console: %s signed in", identity.user)
    await record(call, "allow", 200, f"console sign-in of {identity.user}")
    response = page("signed_in.html", user=None, signed_in_as=identity.user)
    set_cookie(response, COOKIE, session_id, path=CONSOLE_PATH)
    response.del_cookie(SIGNIN_COOKIE, path=CALLBACK_PATH)
    return response
