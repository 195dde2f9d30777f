"""Log the demo users in through the real SSO flow, with the sandbox playing the user's browser.

The connector's own `client login` code runs unchanged (authorization code + PKCE, loopback redirect);
only the click on the identity provider's page is automated, over plain HTTP, exactly what a browser
would send. Tests use the same browser step to drive `python -m connector client login`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import requests

from connector.client.sso import discover, login_with_browser
from connector.client.token_store import StoredTokens, TokenStore


def complete_browser_login(authorize_url: str, user: str) -> None:
    """Load the IdP's sign-in page, pick `user`, and follow the redirect back to the loopback listener."""
    with requests.Session() as browser:
        page = browser.get(authorize_url, timeout=10)
        page.raise_for_status()
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
        form_action = urlsplit(authorize_url)._replace(query="").geturl()
        answer = browser.post(form_action, data={**fields, "user": user}, allow_redirects=False, timeout=10)
        if answer.status_code != 302:
            raise RuntimeError(f"the identity provider refused to sign in {user!r}: {answer.status_code} {answer.text}")
        landing = browser.get(answer.headers["Location"], timeout=10)
        landing.raise_for_status()


def log_in_demo_user(connector: str, issuer: str, client_id: str, user: str, cache_dir: Path) -> StoredTokens:
    """What `python -m connector client login --connector URL --profile USER` stores, without a browser."""
    provider = discover(issuer)
    tokens = login_with_browser(provider, client_id, lambda url: complete_browser_login(url, user))
    stored = StoredTokens(
        connector=connector,
        issuer=issuer,
        client_id=client_id,
        id_token=tokens.id_token,
        refresh_token=tokens.refresh_token,
        token_endpoint=provider.token_endpoint,
    )
    TokenStore(cache_dir).save(stored, user)
    return stored
