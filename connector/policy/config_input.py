"""What the `policy` commands read from the command line and a config file, shared by `policy check`
(connector.policy.cli) and `policy replay`/`suggest` (connector.policy.replay_cli), so that neither
imports the other."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from connector.configfile import load_model, parse_yaml, read_config_text
from connector.model import StrictModel
from connector.policy.access_model import AccessRequestList, check_grants
from connector.policy.model import PolicyList


class PolicyFile(StrictModel):
    """The `policies` and `access_requests` keys of a connector config, checked against each other as
    the connector checks them; the other keys are not these commands' business."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    policies: PolicyList = Field(default_factory=list)
    access_requests: AccessRequestList = Field(default_factory=list)

    @model_validator(mode="after")
    def _grants_resolve(self) -> PolicyFile:
        check_grants(self.policies, self.access_requests)
        return self


class UsageError(Exception):
    """Bad input on the command line: printed on stderr, exit code 2."""


def load_policy_file(config: str, command: str) -> tuple[PolicyFile, dict[str, dict[str, str]]]:
    """The policies and access-request definitions of a config file (a warning on stderr when it has no
    policies: nothing is allowed) and the `tags` of each socket it declares (sockets found by discovery
    have none here); read once."""
    text = read_config_text(config)
    data = parse_yaml(text, config)
    if not isinstance(data, dict) or "policies" not in data:
        print(f"policy {command}: warning: {config} has no `policies` key, so nothing is allowed", file=sys.stderr)
    return load_model(PolicyFile, text, config), _socket_tags(data)


def _socket_tags(data: Any) -> dict[str, dict[str, str]]:
    sockets = data.get("sockets") if isinstance(data, dict) else None
    if not isinstance(sockets, dict):
        return {}
    return {
        str(name): {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
        for name, body in sockets.items()
        if isinstance(body, dict) and isinstance(body.get("tags") or {}, dict)
    }


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with a timezone, or UsageError naming `option`."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-05-04T09:30:00Z)") from None
    if at.tzinfo is None:
        raise UsageError(f"{option} {text!r} has no timezone: add Z or an offset such as +02:00")
    return at
