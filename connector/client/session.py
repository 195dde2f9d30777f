"""The user's side of talking to a connector: a valid id_token (refreshed when about to expire) and the
two connector endpoints the client uses, `/v1/login-config` and `/v1/sockets`.

requests and the SSO module are imported where they are used: `client token` with a cached, unexpired
token (every kubectl call) needs neither, and importing them would triple its start-up time.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from connector.cli import command_name
from connector.client.errors import SsoError
from connector.client.token_store import StoredTokens, TokenStore

if TYPE_CHECKING:
    import requests

REFRESH_AHEAD = dt.timedelta(seconds=60)


class NotLoggedIn(Exception):
    """No usable login: the message tells the user the exact command to run."""


def untrusted(url: str) -> str:
    """What to do when the connector's certificate is not trusted here (a self-made CA, usually)."""
    return (
        f"the connector at {url} presented a certificate this machine does not trust: pass the "
        "connector's CA with --ca-file FILE (client login keeps it with the login for later commands)"
    )


def login_hint(connector: str, profile: str) -> str:
    profile_arg = "" if profile == "default" else f" --profile {profile}"
    return f"run `{command_name()} client login --connector {connector}{profile_arg}`"


def fresh_tokens(
    store: TokenStore, connector: str, profile: str, *, verify: bool | str = True, now: dt.datetime | None = None
) -> StoredTokens:
    tokens = store.load(connector, profile)
    if tokens is None:
        raise NotLoggedIn(f"not logged in to {connector}: {login_hint(connector, profile)}")
    now = now or dt.datetime.now(dt.UTC)
    try:
        if tokens.id_token_expiry() - now > REFRESH_AHEAD:
            return tokens
    except ValueError:
        pass  # an unreadable token is refreshed like an expired one
    if not tokens.refresh_token:
        raise NotLoggedIn(f"your login to {connector} has expired: {login_hint(connector, profile)}")
    from connector.client.sso import refresh

    try:
        renewed = refresh(tokens.token_endpoint, tokens.client_id, tokens.refresh_token, verify=verify)
    except SsoError as exc:
        hint = login_hint(connector, profile)
        raise NotLoggedIn(f"your login to {connector} could not be renewed ({exc}): {hint}") from None
    updated = tokens._replace(id_token=renewed.id_token, refresh_token=renewed.refresh_token)
    store.save(updated, profile)
    return updated


def _get_json(url: str, *, verify: bool | str, token: str | None = None) -> Any:
    import requests

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = requests.get(url, headers=headers, verify=verify, timeout=15, allow_redirects=False)
    except requests.exceptions.SSLError:
        raise ConnectionError(untrusted(url)) from None
    except requests.RequestException as exc:
        raise ConnectionError(f"cannot reach the connector at {url}: {exc}") from None
    if resp.status_code in (401, 403):
        raise PermissionError(f"{url}: the connector refused the request ({resp.status_code}): {_message(resp)}")
    if resp.status_code != 200:
        raise ConnectionError(f"{url} answered HTTP {resp.status_code}: {_message(resp)}")
    try:
        return resp.json()
    except ValueError:
        raise ConnectionError(f"{url} did not answer JSON; is this a connector URL?") from None


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message", resp.text[:200]))
    except ValueError:
        return resp.text[:200]


def whoami(connector: str, id_token: str, *, verify: bool | str = True) -> dict[str, Any]:
    """Who the connector takes this token's holder for: {"user", "groups", "auth_method"}."""
    data = call_api(connector, "GET", "/v1/whoami", id_token, verify=verify)
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise ConnectionError(f"{connector}/v1/whoami did not answer who you are; is this a connector URL?")
    return data


def login_config(connector: str, *, verify: bool | str = True) -> dict[str, str]:
    data = _get_json(connector.rstrip("/") + "/v1/login-config", verify=verify)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("issuer", "client_id")):
        raise ConnectionError(f"{connector} has no SSO login configured; pass --issuer and --client-id")
    return {"issuer": data["issuer"], "client_id": data["client_id"]}


def list_sockets(connector: str, id_token: str, *, verify: bool | str = True) -> list[dict[str, Any]]:
    data = _get_json(connector.rstrip("/") + "/v1/sockets", verify=verify, token=id_token)
    sockets = data.get("sockets") if isinstance(data, dict) else []
    ok = isinstance(sockets, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in sockets)
    if not ok:
        raise ConnectionError(f"{connector}/v1/sockets did not answer a list of sockets")
    return sockets


class ApiRefused(Exception):
    """The connector answered a `/v1` call with an error; `status` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def call_api(
    connector: str, method: str, path: str, id_token: str, *, body: Any = None, verify: bool | str = True
) -> Any:
    """One authenticated JSON call to the connector's `/v1` API; ApiRefused with its one-line message."""
    import requests

    url = connector.rstrip("/") + path
    headers = {"Accept": "application/json", "Authorization": f"Bearer {id_token}"}
    try:
        resp = requests.request(
            method, url, headers=headers, json=body, verify=verify, timeout=15, allow_redirects=False
        )
    except requests.exceptions.SSLError:
        raise ConnectionError(untrusted(url)) from None
    except requests.RequestException as exc:
        raise ConnectionError(f"cannot reach the connector at {url}: {exc}") from None
    if resp.status_code >= 300:
        raise ApiRefused(resp.status_code, _message(resp))
    try:
        return resp.json()
    except ValueError:
        raise ConnectionError(f"{url} did not answer JSON; is this a connector URL?") from None
