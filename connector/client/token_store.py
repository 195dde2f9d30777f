"""Where `client login` keeps a user's tokens: one JSON file per (connector, profile) in the user's cache
directory, mode 0600, replaced atomically so a crash never leaves half a file.

Only what the exec plugin needs is kept: the id_token (short-lived) and the refresh token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import platformdirs

from connector.client.files import replace_file

APP_NAME = "eks-access-connector"


class StoredTokens(NamedTuple):
    connector: str
    issuer: str
    client_id: str
    id_token: str
    refresh_token: str | None
    token_endpoint: str

    def id_token_expiry(self) -> dt.datetime:
        return id_token_expiry(self.id_token)


def id_token_expiry(id_token: str) -> dt.datetime:
    """The `exp` of a JWT, read without verifying it: the client only needs to know when to refresh;
    the connector verifies every token it receives."""
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the identity provider returned an id_token that is not a JWT with exp: {exc}") from None


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "tokens"


class TokenStore:
    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir or default_cache_dir()

    def path(self, connector: str, profile: str) -> Path:
        key = hashlib.sha256(f"{connector.rstrip('/')}\n{profile}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.json"

    def load(self, connector: str, profile: str) -> StoredTokens | None:
        path = self.path(connector, profile)
        try:
            data = json.loads(path.read_text())
            return StoredTokens(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return None  # a corrupt cache is the same as no login: the user is told to log in

    def save(self, tokens: StoredTokens, profile: str) -> Path:
        path = self.path(tokens.connector, profile)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(path, json.dumps(tokens._asdict()), mode=0o600)
        return path

    def ca_path(self, connector: str, profile: str) -> Path:
        """Where the login's connector CA is kept (given once to `client login --ca-file`)."""
        return self.path(connector, profile).with_suffix(".ca.pem")

    def save_ca(self, connector: str, profile: str, pem: bytes) -> Path:
        path = self.ca_path(connector, profile)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(path, pem.decode("ascii", "replace"), mode=0o600)
        return path

    def delete(self, connector: str, profile: str) -> None:
        self.path(connector, profile).unlink(missing_ok=True)
        self.ca_path(connector, profile).unlink(missing_ok=True)
