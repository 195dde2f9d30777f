"""The connector's config file: the root model that assembles every feature's section.

`load_config` either returns a complete, validated `ConnectorConfig` or raises `ConfigError` listing
every problem with its file, line and key path (see connector.configfile).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from connector.access.webhook_config import AccessRequestsWebhookConfig
from connector.audit.config import AuditConfig
from connector.audit.recording_config import RecordingConfig
from connector.authn.config import AuthenticationConfig
from connector.aws.discovery_config import DiscoveryConfig
from connector.configfile import ConfigError, load_model, read_config_text
from connector.console.config import ConsoleConfig
from connector.model import StrictModel
from connector.policy.access_model import AccessRequestList, AccessStoreConfig, check_grants
from connector.policy.model import PolicyList
from connector.proxy.config import ServerConfig
from connector.upstream.config import Sockets

__all__ = ["ConfigError", "ConnectorConfig", "load_config", "load_model", "read_config_text"]

# Each section's model lives in the module that owns the feature; this root only assembles them.


class ConnectorConfig(StrictModel):
    policies: PolicyList = Field(default_factory=list)
    # sections: other features add their top-level keys below this line
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    sockets: Sockets = Field(default_factory=dict)
    recordings: RecordingConfig = Field(default_factory=RecordingConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    access_requests: AccessRequestList = Field(default_factory=list)
    access_store: AccessStoreConfig | None = None
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    access_requests_webhook: AccessRequestsWebhookConfig | None = None

    @model_validator(mode="after")
    def _grants_resolve(self) -> ConnectorConfig:
        check_grants(self.policies, self.access_requests)
        return self

    @model_validator(mode="after")
    def _console_issuer_known(self) -> ConnectorConfig:
        if not self.console.enabled:
            return self
        issuers = [o.issuer for o in self.authentication.oidc]
        if not issuers:
            raise ValueError("console.enabled needs an OIDC issuer in authentication.oidc to sign people in with")
        if self.console.issuer is not None and self.console.issuer not in issuers:
            raise ValueError(f"console.issuer {self.console.issuer!r} is not one of authentication.oidc's issuers")
        return self


def load_config(path: str | Path) -> ConnectorConfig:
    return load_model(ConnectorConfig, read_config_text(path), str(path))
