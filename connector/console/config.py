"""The `console:` section of the connector config."""

from __future__ import annotations

from pydantic import Field

from connector.model import StrictModel


class ConsoleConfig(StrictModel):
    """The web console under `/console/`. It signs people in with an OIDC issuer of `authentication.oidc`
    (authorization code + PKCE), as a public client, or as a confidential one when `client_secret` is set."""

    enabled: bool = False
    issuer: str | None = Field(default=None, description="the OIDC issuer to sign in with (default: the login issuer)")
    client_secret: str | None = Field(
        default=None, description="secret of a confidential client: the value, env:NAME or file:/path"
    )
    idle_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)
    absolute_timeout_hours: int = Field(default=8, ge=1, le=7 * 24)
    sessions_per_page: int = Field(default=50, ge=1, le=1000)
