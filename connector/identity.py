"""Who is making a request, as established by authentication and used by policy and audit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    `method` says how the caller proved it (`oidc`, `service-token`, `client-cert`) so the audit log
    can tell a human's SSO session from a CI bot's token.
    """

    user: str
    groups: tuple[str, ...] = ()
    method: str = ""
