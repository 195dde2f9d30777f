"""The login cache: tokens and the connector CA kept with a login, 0600, forgotten together."""

from __future__ import annotations

import stat
from pathlib import Path

from connector.client.token_store import StoredTokens, TokenStore

TOKENS = StoredTokens("https://c:8443", "https://idp", "cli", "a.b.c", "r", "https://idp/token")


def test_the_ca_is_kept_with_its_login_and_forgotten_with_it(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "cache")
    store.save(TOKENS, "default")
    kept = store.save_ca(TOKENS.connector, "default", b"-----BEGIN CERTIFICATE-----\n")
    assert kept == store.ca_path(TOKENS.connector, "default") and kept.read_bytes().startswith(b"-----BEGIN")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert store.ca_path(TOKENS.connector, "other") != kept  # each profile's login has its own
    store.delete(TOKENS.connector, "default")
    assert not kept.exists() and store.load(TOKENS.connector, "default") is None
