"""The sandbox's identity provider speaks the flows `client login` relies on, and refuses misuse."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt

from tests.support.oidc import running_issuer

CLIENT = "eks-access-connector"
REDIRECT = "http://127.0.0.1:18000/callback"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def _code(http: aiohttp.ClientSession, issuer_url: str, challenge: str, user: str = "bob") -> str:
    params = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": "openid email groups",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    async with http.get(f"{issuer_url}/authorize", params=params) as page:
        assert page.status == 200
        assert 'value="bob"' in await page.text()
    async with http.post(f"{issuer_url}/authorize", data={**params, "user": user}, allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
    query = parse_qs(location.query)
    assert query["state"] == ["s1"]
    return query["code"][0]


async def test_authorization_code_with_pkce_refresh_and_revocation():
    async with running_issuer() as issuer, aiohttp.ClientSession() as http:
        verifier, challenge = _pkce()
        code = await _code(http, issuer.url, challenge)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": CLIENT}
        async with http.post(f"{issuer.url}/token", data={**form, "code_verifier": "wrong"}) as bad:
            assert bad.status == 400 and (await bad.json())["error"] == "invalid_grant"
        code = await _code(http, issuer.url, challenge)  # a failed exchange consumed the code
        async with http.post(f"{issuer.url}/token", data={**form, "code": code, "code_verifier": verifier}) as ok:
            tokens = await ok.json()
        async with http.get(f"{issuer.url}/jwks") as r:
            key = jwt.PyJWKSet.from_dict(await r.json())[jwt.get_unverified_header(tokens["id_token"])["kid"]]
        claims = jwt.decode(tokens["id_token"], key, algorithms=["RS256"], audience=CLIENT, issuer=issuer.url)
        assert claims["email"] == "bob@example.com" and claims["groups"] == ["developers"]

        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLIENT}
        async with http.post(f"{issuer.url}/token", data=refresh) as r:
            rotated = await r.json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        async with http.post(f"{issuer.url}/token", data=refresh) as reused:
            assert reused.status == 400  # a refresh token works once
        assert issuer.revoke_refresh_tokens("bob") == 1
        async with http.post(f"{issuer.url}/token", data={**refresh, "refresh_token": rotated["refresh_token"]}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"


async def test_authorize_refuses_non_loopback_redirects_and_missing_pkce():
    async with running_issuer() as issuer, aiohttp.ClientSession() as http:
        base = {
            "response_type": "code",
            "client_id": CLIENT,
            "scope": "openid",
            "code_challenge_method": "S256",
            "code_challenge": "abc",
        }
        async with http.get(f"{issuer.url}/authorize", params={**base, "redirect_uri": "https://evil.example/cb"}) as r:
            assert r.status == 400 and "loopback" in await r.text()
        params = {**base, "redirect_uri": REDIRECT, "code_challenge": ""}
        async with http.get(f"{issuer.url}/authorize", params=params) as r:
            assert r.status == 400 and "PKCE" in await r.text()


async def test_device_flow():
    clock = [1000.0]
    async with running_issuer(clock=lambda: clock[0]) as issuer, aiohttp.ClientSession() as http:
        async with http.post(f"{issuer.url}/device/code", data={"client_id": CLIENT, "scope": "openid"}) as r:
            grant = await r.json()
        poll = {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": grant["device_code"],
            "client_id": CLIENT,
        }
        async with http.post(f"{issuer.url}/token", data=poll) as r:
            assert (await r.json())["error"] == "authorization_pending"
        async with http.post(f"{issuer.url}/token", data=poll) as r:
            assert (await r.json())["error"] == "slow_down"
        async with http.post(f"{issuer.url}/device", data={"user_code": grant["user_code"], "user": "alice"}) as r:
            assert r.status == 200
        clock[0] += 5
        async with http.post(f"{issuer.url}/token", data=poll) as r:
            tokens = await r.json()
        assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["email"] == "alice@example.com"
        async with http.post(f"{issuer.url}/token", data=poll) as r:
            assert (await r.json())["error"] == "invalid_grant"  # used up
