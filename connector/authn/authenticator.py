"""Turn an incoming request into an `Identity`, or refuse it.

Order, as kube-apiserver's union authenticator: a verified client certificate first, then the bearer
token (a JWT goes to the OIDC issuer named in its `iss`, anything else is looked up as a service token).
The token may also arrive the way browsers send it on websockets, as the subprotocol
`base64url.bearer.authorization.k8s.io.<token>`; the proxy must strip that subprotocol before
forwarding, like `Authorization`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from aiohttp import web

from connector.authn.client_certs import identity_from_peer_certificate
from connector.authn.config import AuthenticationConfig
from connector.authn.errors import AuthenticationError
from connector.authn.oidc import OidcVerifier
from connector.authn.service_tokens import ServiceTokenStore
from connector.identity import Identity

MAX_TOKEN_LENGTH = 16 * 1024
WEBSOCKET_BEARER_PREFIX = "base64url.bearer.authorization.k8s.io."
MISSING = "authentication required: log in with `python -m connector client login`, or present a service token"
INVALID = "invalid bearer token"
# Schemes a log may name; anything else in the first word of `Authorization` may be the credential itself
# (`Authorization: <token>`, `Bearer:<token>`, `Bearer\t<token>`), so it is only fingerprinted.
KNOWN_SCHEMES = frozenset({"basic", "digest", "negotiate", "ntlm", "aws4-hmac-sha256", "dpop", "token", "hoba"})


def fingerprint(credential: str) -> str:
    """What a log or an audit event may say about a credential: the first 8 hex digits of its sha256."""
    return "sha256:" + hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def websocket_bearer_token(protocol_headers: list[str]) -> str | None:
    """The token of the `base64url.bearer.authorization.k8s.io.` subprotocol, over every
    `Sec-WebSocket-Protocol` header; more than one such subprotocol is refused, as kube-apiserver does
    ("multiple base64.bearer.authorization tokens specified"), rather than letting the first one win."""
    token: str | None = None
    for header in protocol_headers:
        for proto in header.split(","):
            proto = proto.strip()
            if not proto.startswith(WEBSOCKET_BEARER_PREFIX):
                continue
            if token is not None:
                raise AuthenticationError(INVALID, "multiple base64.bearer.authorization tokens specified")
            encoded = proto[len(WEBSOCKET_BEARER_PREFIX) :]
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise AuthenticationError(INVALID, "websocket bearer subprotocol is not base64url") from None
    return token


def bearer_token(request: web.BaseRequest) -> str | None:
    """The bearer token of the request, or None when it carries none. Malformed headers are errors, and
    so are ambiguous credentials (two tokens, or an `Authorization` header and a subprotocol token):
    the connector and the cluster must never disagree on who is asking."""
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        raise AuthenticationError(INVALID, "more than one Authorization header")
    protocol_token = websocket_bearer_token(request.headers.getall("Sec-WebSocket-Protocol", []))
    token: str | None = protocol_token
    if values:
        if protocol_token is not None:
            raise AuthenticationError(INVALID, "both an Authorization header and a websocket bearer subprotocol")
        scheme, _, value = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            kind = f"scheme {scheme}" if scheme.lower() in KNOWN_SCHEMES else "value without the scheme 'Bearer '"
            raise AuthenticationError(INVALID, f"unsupported Authorization {kind} ({fingerprint(values[0])})")
        token = value.strip()
    if token is None:
        return None
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise AuthenticationError(INVALID, "bearer token is empty, too long or has characters a token cannot have")
    return token


class Authenticator:
    def __init__(
        self,
        oidc: list[OidcVerifier],
        service_tokens: ServiceTokenStore | None,
        client_ca_file: str | None,
    ):
        self._oidc = {v.config.issuer: v for v in oidc}
        self._service_tokens = service_tokens
        self.client_ca_file = client_ca_file

    @classmethod
    def from_config(cls, cfg: AuthenticationConfig) -> Authenticator:
        """Raises ConfigError when the service token file does not validate."""
        store = ServiceTokenStore(cfg.service_tokens.file) if cfg.service_tokens else None
        ca = cfg.client_certificates.client_ca_file if cfg.client_certificates else None
        return cls([OidcVerifier(o) for o in cfg.oidc], store, ca)

    def oidc_verifier(self, issuer: str) -> OidcVerifier | None:
        """The verifier of a configured issuer (the console signs people in with it)."""
        return self._oidc.get(issuer)

    async def close(self) -> None:
        for verifier in self._oidc.values():
            await verifier.close()

    async def authenticate(self, request: web.BaseRequest) -> Identity:
        if self.client_ca_file is not None and request.transport is not None:
            identity = identity_from_peer_certificate(request.transport.get_extra_info("ssl_object"))
            if identity is not None:
                return identity
        token = bearer_token(request)
        if token is None:
            raise AuthenticationError(MISSING, "no credentials presented", reason="missing")
        return await self.authenticate_token(token)

    async def authenticate_token(self, token: str) -> Identity:
        parts = token.split(".")
        if len(parts) == 3 and self._oidc:
            return await self._authenticate_jwt(token, parts)
        if self._service_tokens is not None:
            return self._service_tokens.authenticate(token)
        raise AuthenticationError(INVALID, "token is not a JWT and no service tokens are configured")

    async def _authenticate_jwt(self, token: str, parts: list[str]) -> Identity:
        try:
            header = _b64url_json(parts[0])
            payload = _b64url_json(parts[1])
        # RecursionError: a few kilobytes of `[[[[...` exhaust the JSON decoder's nesting limit.
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            if self._service_tokens is not None:
                return self._service_tokens.authenticate(token)
            raise AuthenticationError(INVALID, "token is not a well-formed JWT") from None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise AuthenticationError(INVALID, "JWT header or payload is not an object")
        issuer = payload.get("iss")
        verifier = self._oidc.get(issuer) if isinstance(issuer, str) else None
        if verifier is None:
            raise AuthenticationError(INVALID, f"JWT from untrusted issuer {issuer!r}")
        return await verifier.verify(token, header)


def login_config(cfg: AuthenticationConfig) -> dict[str, str] | None:
    """What `client login` needs to start SSO with only the connector's URL: the issuer and client id."""
    if not cfg.oidc:
        return None
    chosen = next((o for o in cfg.oidc if o.issuer == cfg.login_issuer), cfg.oidc[0])
    return {"issuer": chosen.issuer, "client_id": chosen.client_id}
