"""Verify OIDC id_tokens against an issuer's published keys (JWKS), the way kube-apiserver's OIDC
authenticator does: signature with an allowed asymmetric algorithm, `iss`, `aud`, `exp`/`nbf`/`iat`
with a small leeway, then the username and groups claims.

Keys come from the issuer's discovery document and are cached; an unknown `kid` triggers a refresh
(key rotation). Fetches are attempted at most once per `jwks_min_refresh_seconds`, whether they
succeed or not, so a flood of forged tokens cannot turn the connector into a JWKS fetcher, even
while the issuer is down (when every token would otherwise wait for its own fetch to time out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from connector.authn.config import OidcIssuerConfig
from connector.authn.errors import AuthenticationError
from connector.identity import Identity

log = logging.getLogger(__name__)

INVALID = "invalid bearer token"
MAX_DOCUMENT_BYTES = 1 << 20
# User and group names become Impersonate-* header values and audit fields; an HTTP client refuses a line
# break in a header only when the request is already authorized and on its way to the cluster.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class OidcVerifier:
    """One trusted issuer. Thread-unsafe by design: used from the event loop only."""

    def __init__(self, config: OidcIssuerConfig, *, clock: Callable[[], float] = time.time):
        self.config = config
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._unnamed_keys: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def http(self) -> aiohttp.ClientSession:
        """The client session for this issuer (its CA), shared with the console's token exchange."""
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.config.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10),
                connector=aiohttp.TCPConnector(ssl=ssl_ctx),
            )
        return self._session

    async def _get_json(self, url: str) -> Any:
        async with self.http().get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise OSError(f"GET {url} answered HTTP {resp.status}")
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise OSError(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
            return json.loads(body)

    async def provider_document(self) -> dict[str, Any]:
        """The issuer's discovery document, checked to name this issuer. Raises OSError/ValueError."""
        discovery_url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(discovery_url)
        announced = doc.get("issuer") if isinstance(doc, dict) else None
        if announced != self.config.issuer:
            raise ValueError(
                f"{discovery_url}: the discovery document names issuer {announced!r}, expected {self.config.issuer!r}"
            )
        return doc

    async def refresh_keys(self) -> None:
        """Fetch the discovery document and the JWKS. Raises OSError/ValueError with what went wrong."""
        doc = await self.provider_document()
        discovery_url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError(f"{discovery_url}: missing or invalid jwks_uri")
        jwks = await self._get_json(jwks_uri)
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError(f"{jwks_uri}: not a JWK set")
        named: dict[str, jwt.PyJWK] = {}
        unnamed: list[jwt.PyJWK] = []
        for raw in jwks["keys"]:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                log.warning("issuer %s: ignoring an unusable key in the JWKS: %s", self.config.issuer, exc)
                continue
            if isinstance(raw.get("kid"), str):
                named[raw["kid"]] = key
            else:
                unnamed.append(key)
        self._keys, self._unnamed_keys = named, unnamed
        self._fetched_at = self._clock()

    async def _candidate_keys(self, kid: str | None) -> list[jwt.PyJWK]:
        async with self._lock:
            now = self._clock()
            never_fetched = self._fetched_at is None
            unknown_kid = kid is not None and kid not in self._keys
            attempted = self._attempted_at
            may_fetch = attempted is None or now - attempted >= self.config.jwks_min_refresh_seconds
            if (never_fetched or unknown_kid) and may_fetch:
                self._attempted_at = now
                try:
                    await self.refresh_keys()
                except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
                    raise AuthenticationError(
                        "the identity provider's keys could not be fetched",
                        f"issuer {self.config.issuer}: fetching keys failed: {exc}",
                        reason="jwks_unavailable",
                    ) from None
            elif never_fetched:
                assert attempted is not None
                raise AuthenticationError(
                    "the identity provider's keys could not be fetched",
                    f"issuer {self.config.issuer}: fetching keys failed {now - attempted:.0f} s ago; "
                    f"the next attempt is allowed {self.config.jwks_min_refresh_seconds} s after it",
                    reason="jwks_unavailable",
                )
        if kid is not None:
            key = self._keys.get(kid)
            return [key] if key is not None else []
        return [*self._keys.values(), *self._unnamed_keys]

    async def verify(self, token: str, header: dict[str, Any]) -> Identity:
        cfg = self.config
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: kid is not a string")
        keys = await self._candidate_keys(kid)
        if not keys:
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: no key with kid {kid!r}")
        claims: dict[str, Any] | None = None
        last_error: Exception | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=cfg.client_id,
                    issuer=cfg.issuer,
                    leeway=cfg.leeway_seconds,
                    options={"require": ["exp", "iat", "iss", "aud"]},
                )
                break
            except jwt.InvalidSignatureError as exc:
                last_error = exc
            except jwt.PyJWTError as exc:
                raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: {exc}") from None
        if claims is None:
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: {last_error}")
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        cfg = self.config
        user = claims.get(cfg.username_claim)
        if not isinstance(user, str) or not user:
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: claim {cfg.username_claim!r} missing or empty")
        if cfg.username_claim == "email" and claims.get("email_verified", True) is not True:
            # kube-apiserver refuses unverified emails: anyone could claim an address they do not own.
            raise AuthenticationError(INVALID, f"issuer {cfg.issuer}: email {user!r} is not verified")
        raw_groups = claims.get(cfg.groups_claim, [])
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
            detail = f"issuer {cfg.issuer}: claim {cfg.groups_claim!r} is not a list of strings"
            raise AuthenticationError(INVALID, detail)
        groups = tuple(cfg.groups_prefix + g for g in raw_groups)
        if _CONTROL.search(user) or any(_CONTROL.search(g) for g in groups):
            detail = f"issuer {cfg.issuer}: a user or group name contains a control character"
            raise AuthenticationError(INVALID, detail)
        return Identity(user=cfg.username_prefix + user, groups=groups, method="oidc")
