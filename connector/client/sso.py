"""SSO for the command line: the OIDC authorization code flow with PKCE and a loopback redirect
(RFC 8252), the device authorization grant (RFC 8628) for machines without a browser, and refresh.

The protocol work is Authlib's OAuth2Session (a public client: no secret, PKCE S256); this module only
wires it to a loopback listener and the user's terminal.
"""

from __future__ import annotations

import http.server
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from connector.client.errors import SsoError

SCOPES = "openid email profile groups offline_access"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# A command line cannot keep a secret: it is a public client, and PKCE protects the code exchange.
PUBLIC_CLIENT = "none"


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    device_authorization_endpoint: str | None


@dataclass(frozen=True)
class TokenSet:
    id_token: str
    refresh_token: str | None


def discover(issuer: str, *, verify: bool | str = True, timeout: float = 10) -> ProviderMetadata:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        resp = requests.get(url, timeout=timeout, verify=verify, allow_redirects=False)
        resp.raise_for_status()
        doc = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoError(f"cannot read the identity provider's configuration at {url}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("issuer") != issuer:
        raise SsoError(f"{url} does not describe the issuer {issuer!r}")
    try:
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            device_authorization_endpoint=doc.get("device_authorization_endpoint"),
        )
    except KeyError as exc:
        raise SsoError(f"{url} lacks {exc.args[0]}") from None


def _token_set(token: dict[str, Any], previous_refresh: str | None = None) -> TokenSet:
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise SsoError("the identity provider answered without an id_token (is the `openid` scope allowed?)")
    return TokenSet(id_token=id_token, refresh_token=token.get("refresh_token") or previous_refresh)


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    result: dict[str, str]
    done: threading.Event

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self.server.result = {k: v[0] for k, v in query.items()}  # type: ignore[attr-defined]
        ok = "code" in query
        body = (
            b"Logged in. You can close this window and return to your terminal."
            if ok
            else b"Login failed: " + query.get("error_description", query.get("error", ["unknown error"]))[0].encode()
        )
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.done.set()  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        return


def login_with_browser(
    provider: ProviderMetadata,
    client_id: str,
    open_url: Callable[[str], None],
    *,
    verify: bool | str = True,
    timeout: float = 300,
) -> TokenSet:
    """Authorization code + PKCE. `open_url` shows the user the authorization URL (opens a browser or
    prints it); the identity provider then redirects the browser to our loopback listener."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _CallbackHandler)
    server.done = threading.Event()  # type: ignore[attr-defined]
    server.result = {}  # type: ignore[attr-defined]
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with OAuth2Session(
            client_id, scope=SCOPES, redirect_uri=redirect_uri, token_endpoint_auth_method=PUBLIC_CLIENT,
            code_challenge_method="S256",
        ) as session:
            session.verify = verify
            verifier = secrets.token_urlsafe(64)
            state = secrets.token_urlsafe(24)
            url, _ = session.create_authorization_url(
                provider.authorization_endpoint, state=state, code_verifier=verifier, nonce=secrets.token_urlsafe(16)
            )
            open_url(url)
            if not server.done.wait(timeout):  # type: ignore[attr-defined]
                raise SsoError(f"no answer from the browser within {timeout:.0f} s; run the login again")
            result: dict[str, str] = server.result  # type: ignore[attr-defined]
            if "error" in result:
                reason = result.get("error_description", result["error"])
                raise SsoError(f"the identity provider refused the login: {reason}")
            if result.get("state") != state:
                raise SsoError("the login answer does not match this login attempt (state mismatch); run it again")
            try:
                token = session.fetch_token(
                    provider.token_endpoint, code=result.get("code", ""), code_verifier=verifier, state=state
                )
            except (AuthlibBaseError, requests.RequestException) as exc:
                raise SsoError(f"exchanging the login code failed: {exc}") from None
            return _token_set(dict(token))
    finally:
        server.shutdown()
        server.server_close()


def login_with_device_code(
    provider: ProviderMetadata,
    client_id: str,
    show_code: Callable[[str, str, str | None], None],
    *,
    verify: bool | str = True,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenSet:
    """Device authorization grant: show the user a code and a URL to open anywhere, then poll."""
    if not provider.device_authorization_endpoint:
        raise SsoError("this identity provider does not offer the device flow; log in with the browser instead")
    with OAuth2Session(client_id, scope=SCOPES, token_endpoint_auth_method=PUBLIC_CLIENT) as session:
        session.verify = verify
        try:
            resp = session.post(
                provider.device_authorization_endpoint,
                data={"client_id": client_id, "scope": SCOPES},
                timeout=10,
                withhold_token=True,
            )
            grant = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise SsoError(f"starting the device login failed: {exc}") from None
        if resp.status_code != 200 or "device_code" not in grant:
            raise SsoError(f"starting the device login failed: {grant.get('error_description', resp.status_code)}")
        show_code(grant["user_code"], grant["verification_uri"], grant.get("verification_uri_complete"))
        interval = float(grant.get("interval", 5))
        deadline = time.monotonic() + float(grant.get("expires_in", 600))
        while time.monotonic() < deadline:
            sleep(interval)
            try:
                token = session.fetch_token(
                    provider.token_endpoint, grant_type=DEVICE_GRANT, device_code=grant["device_code"],
                    client_id=client_id,
                )
                return _token_set(dict(token))
            except AuthlibBaseError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                raise SsoError(f"device login failed: {exc.description or exc.error}") from None
            except requests.RequestException as exc:
                raise SsoError(f"device login failed: {exc}") from None
    raise SsoError("the device code expired before the login was approved; run the login again")


def refresh(token_endpoint: str, client_id: str, refresh_token: str, *, verify: bool | str = True) -> TokenSet:
    with OAuth2Session(client_id, token_endpoint_auth_method=PUBLIC_CLIENT) as session:
        session.verify = verify
        try:
            token = session.refresh_token(token_endpoint, refresh_token=refresh_token, client_id=client_id)
        except (AuthlibBaseError, requests.RequestException) as exc:
            raise SsoError(f"refreshing the login failed: {exc}") from None
    return _token_set(dict(token), previous_refresh=refresh_token)
