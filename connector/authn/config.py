"""The `authentication:` section of the connector config: who may present which kind of credential."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from connector.hosts import is_loopback
from connector.model import StrictModel

# Asymmetric algorithms only: an HMAC "id_token" would be signed with a secret the client also knows.
SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")


class OidcIssuerConfig(StrictModel):
    """One trusted OIDC issuer (the company's SSO). Tokens are id_tokens whose `aud` is `client_id`."""

    issuer: str
    client_id: str
    username_claim: str = "email"
    groups_claim: str = "groups"
    username_prefix: str = ""
    groups_prefix: str = ""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    ca_file: str | None = None
    jwks_min_refresh_seconds: int = Field(default=30, ge=1, le=3600)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"issuer must be an https:// URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"issuer must use https (plain http is allowed only on loopback), got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"issuer must not have a query or fragment, got {value!r}")
        return value

    @field_validator("client_id", "username_claim", "groups_claim")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r}; use one of {', '.join(SUPPORTED_ALGORITHMS)}")
        return value


class ServiceTokensConfig(StrictModel):
    """Long random tokens for bots, stored as sha256 hashes in a file that is re-read when it changes."""

    file: str


class ClientCertificatesConfig(StrictModel):
    """Client certificates signed by this CA authenticate as CN = user, O = groups (as Kubernetes reads them)."""

    client_ca_file: str


class AuthenticationConfig(StrictModel):
    oidc: list[OidcIssuerConfig] = Field(default_factory=list)
    service_tokens: ServiceTokensConfig | None = None
    client_certificates: ClientCertificatesConfig | None = None
    login_issuer: str | None = Field(
        default=None, description="the issuer `client login` uses (default: the first OIDC issuer)"
    )

    @model_validator(mode="after")
    def _login_issuer_known(self) -> AuthenticationConfig:
        issuers = [o.issuer for o in self.oidc]
        if len(set(issuers)) != len(issuers):
            raise ValueError("oidc: each issuer may be listed once")
        if self.login_issuer is not None and self.login_issuer not in issuers:
            raise ValueError(f"login_issuer {self.login_issuer!r} is not one of the oidc issuers")
        return self
