"""Browser sessions of the console: a random id in the cookie, everything else on the server.

The store is in memory, one per connector: with `serve --workers N` it lives in the supervisor and the
workers reach it over their link (`BrowserSessions`), since the kernel spreads a browser's
connections over every worker. A session signed in on one replica is unknown to the others, so a
console behind several replicas needs sticky sessions until a shared store exists. A restart signs
everyone out, which is the safe direction. Sign-ins in progress (the PKCE verifier, the nonce and the
`state` of an authorization request) are kept here too, for a few minutes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from connector.identity import Identity

COOKIE = "connector_console"
# The sign-in cookie ties an authorization request to the browser that started it (login CSRF).
SIGNIN_COOKIE = "connector_console_signin"
SIGNIN_SECONDS = 600
# Enough for a few hundred reviewers; past it the oldest sessions go first.
MAX_SESSIONS = 10_000
MAX_PENDING_SIGNINS = 10_000


@dataclass
class BrowserSession:
    identity: Identity
    csrf_token: str
    created: float
    last_seen: float


@dataclass(frozen=True)
class PendingSignIn:
    state: str
    browser_key: str
    code_verifier: str
    nonce: str
    created: float


@dataclass
class BrowserSessionStore:
    """Sessions with an idle and an absolute timeout; ids are 256 random bits."""

    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, BrowserSession] = field(default_factory=dict)
    _pending: dict[str, PendingSignIn] = field(default_factory=dict)

    def begin_signin(self) -> PendingSignIn:
        now = self.clock()
        self._expire_pending(now)
        pending = PendingSignIn(
            state=secrets.token_urlsafe(32),
            browser_key=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(48),
            nonce=secrets.token_urlsafe(24),
            created=now,
        )
        self._pending[pending.state] = pending
        return pending

    def finish_signin(self, state: str, browser_key: str) -> PendingSignIn | None:
        """The pending sign-in for this `state`, once, if this browser started it and it is recent."""
        pending = self._pending.pop(state, None)
        if pending is None or self.clock() - pending.created > SIGNIN_SECONDS:
            return None
        if not secrets.compare_digest(pending.browser_key, browser_key):
            return None
        return pending

    def create(self, identity: Identity) -> str:
        now = self.clock()
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = BrowserSession(identity, secrets.token_urlsafe(32), now, now)
        return session_id

    def get(self, session_id: str, idle_seconds: float, absolute_seconds: float) -> BrowserSession | None:
        """The live session with this id (its idle time restarts), or None once either timeout passed."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > idle_seconds or now - session.created > absolute_seconds:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire_pending(self, now: float) -> None:
        for state in [s for s, p in self._pending.items() if now - p.created > SIGNIN_SECONDS]:
            del self._pending[state]
        while len(self._pending) >= MAX_PENDING_SIGNINS:
            del self._pending[next(iter(self._pending))]


# The store's operations a worker may ask the supervisor for.
OPERATIONS = frozenset({"begin_signin", "finish_signin", "create", "get", "drop"})
Remote = Callable[[str, tuple[Any, ...]], Awaitable[Any]]


class BrowserSessions:
    """What the console asks of the connector's one session store: the store itself in one process, or
    the supervisor's, through `remote(operation, args)`, in a worker."""

    def __init__(self, store: BrowserSessionStore | None = None, remote: Remote | None = None):
        self.store = store if store is not None or remote is not None else BrowserSessionStore()
        self._remote = remote

    async def _run(self, operation: str, *args: Any) -> Any:
        if self._remote is not None:
            return await self._remote(operation, args)
        assert self.store is not None
        return getattr(self.store, operation)(*args)

    async def begin_signin(self) -> PendingSignIn:
        return await self._run("begin_signin")

    async def finish_signin(self, state: str, browser_key: str) -> PendingSignIn | None:
        return await self._run("finish_signin", state, browser_key)

    async def create(self, identity: Identity) -> str:
        return await self._run("create", identity)

    async def get(self, session_id: str, *, idle_seconds: float, absolute_seconds: float) -> BrowserSession | None:
        return await self._run("get", session_id, idle_seconds, absolute_seconds)

    async def drop(self, session_id: str) -> None:
        await self._run("drop", session_id)
