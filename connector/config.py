"""The connector's config file: the root model that assembles every feature's section.

`load_config` either returns a complete, validated `ConnectorConfig` or raises `ConfigError` listing
every problem with its file, line and key path (see connector.configfile).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from connector.authn.config import AuthenticationConfig
from connector.configfile import ConfigError, load_model, read_config_text
from connector.model import StrictModel
from connector.policy.model import Policy

__all__ = ["ConfigError", "ConnectorConfig", "load_config", "load_model", "read_config_text"]

# Each section's model lives in the module that owns the feature; this root only assembles them.


class ConnectorConfig(StrictModel):
    policies: list[Policy] = Field(default_factory=list)
    # sections: other features add their top-level keys below this line
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)


def load_config(path: str | Path) -> ConnectorConfig:
    return load_model(ConnectorConfig, read_config_text(path), str(path))
