"""A running sandbox OIDC issuer with the demo users, for tests of authentication and login."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sandbox.oidc import DemoUser, OidcIssuer

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
