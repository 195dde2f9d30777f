"""Service tokens for bots (CI pipelines): long random strings the connector knows only by sha256.

A presented token is looked up by its digest in a dict: the work per request does not grow with the
file (a linear scan would let anyone with a bogus token spend the connector's CPU in proportion to the
number of bots). Timing leaks nothing useful: it depends on the sha256 of what the caller sent, and
learning how that digest compares with stored ones says nothing about the tokens behind them.

The file is the source of truth and is re-read when it changes, so revoking a bot is deleting its line.
A file that stops validating is refused (logged) and the previous set stays in force: a typo must not
lock every pipeline out, nor let anyone in.

File format (YAML):

    tokens:
      - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        user: ci-deployer
        groups: [ci]
        not_after: 2027-06-30T00:00:00Z     # optional
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, field_validator

from connector.authn.errors import AuthenticationError
from connector.configfile import ConfigError, load_model, read_config_text
from connector.identity import Identity
from connector.model import StrictModel

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
RECHECK_SECONDS = 1.0


class ServiceTokenEntry(StrictModel):
    sha256: str
    user: str
    groups: list[str] = Field(default_factory=list)
    not_after: dt.datetime | None = None
    description: str = ""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not _HEX64.fullmatch(value):
            raise ValueError("must be the 64 lower-case hex digits of the token's sha256")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("not_after")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a timezone, e.g. 2027-01-01T00:00:00Z")
        return value


class ServiceTokenFile(StrictModel):
    tokens: list[ServiceTokenEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class _Loaded:
    mtime_ns: int
    size: int
    entries: dict[bytes, ServiceTokenEntry]  # by the token's sha256 digest; the last entry of a digest wins


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh service token: 256 random bits, URL-safe, with a prefix that makes leaks easy to grep for."""
    return "eacst_" + secrets.token_urlsafe(32)


class ServiceTokenStore:
    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self._clock = clock
        self._checked_at = float("-inf")
        self._loaded = self._load()  # at start-up a bad file is a config error, raised to the caller

    def _load(self) -> _Loaded:
        st = os.stat(self.path)
        text = read_config_text(self.path)
        model = load_model(ServiceTokenFile, text, self.path)
        return _Loaded(st.st_mtime_ns, st.st_size, {bytes.fromhex(e.sha256): e for e in model.tokens})

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < RECHECK_SECONDS:
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
        except OSError as exc:
            log.error("service tokens: cannot stat %s (keeping the previous tokens): %s", self.path, exc)
            return
        if (st.st_mtime_ns, st.st_size) == (self._loaded.mtime_ns, self._loaded.size):
            return
        try:
            self._loaded = self._load()
            log.info("service tokens: reloaded %s (%d tokens)", self.path, len(self._loaded.entries))
        except (ConfigError, OSError) as exc:
            log.error("service tokens: %s is invalid, keeping the previous tokens: %s", self.path, exc)

    def authenticate(self, token: str, now: dt.datetime | None = None) -> Identity:
        self._maybe_reload()
        match = self._loaded.entries.get(hashlib.sha256(token.encode()).digest())
        if match is None:
            raise AuthenticationError("invalid bearer token", "service token: no entry with this hash")
        # The clock is read only for a token that expires: most do not, and this runs for every request.
        if match.not_after is not None and (now or dt.datetime.now(dt.UTC)) > match.not_after:
            raise AuthenticationError(
                "invalid bearer token", f"service token for {match.user} expired at {match.not_after.isoformat()}"
            )
        return Identity(user=match.user, groups=tuple(match.groups), method="service-token")
