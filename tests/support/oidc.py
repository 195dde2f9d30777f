"""A running sandbox OIDC issuer with the demo users, for tests of authentication and login."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sandbox.oidc import DemoUser, OidcIssuer

T = TypeVar("T")

DEMO_USERS = {
    "alice": DemoUser("alice", "alice@example.com", ("platform-admins",)),
    "bob": DemoUser("bob", "bob@example.com", ("developers",)),
    "carol": DemoUser("carol", "carol@example.com", ()),
}


@asynccontextmanager
async def running_issuer(**kwargs: object) -> AsyncIterator[OidcIssuer]:
    issuer = OidcIssuer(users=dict(DEMO_USERS), **kwargs)  # type: ignore[arg-type]
    await issuer.start()
    try:
        yield issuer
    finally:
        await issuer.stop()


class LoopThread:
    """An asyncio loop in a background thread, for servers that synchronous code (a CLI run in-process,
    `requests`) talks to without deadlocking the test's own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
