"""The `kube-system/aws-auth` ConfigMap: how EKS turns an IAM identity into a Kubernetes user.

This follows aws-iam-authenticator's EKS ConfigMap mapper (pkg/mapper/configmap, pkg/server):

- `mapRoles` and `mapUsers` are YAML lists; keys are matched case-insensitively (Go's JSON
  decoding), a `rolearn`/`userarn` is compared case-insensitively with the caller's canonical ARN
  (an assumed-role session becomes `arn:aws:iam::<acct>:role/<role>`), roles first, then users;
- an entry without `rolearn`/`userarn`, or of the wrong shape, is ignored (and logged), and a value
  that is not YAML at all loses only that key; the rest still applies;
- `mapAccounts` lists account IDs whose every identity maps to its canonical ARN, with no groups;
- username and group templates: `{{AccountID}}`, `{{SessionName}}` (with `@` replaced by `-`),
  `{{SessionNameRaw}}`, `{{AccessKeyID}}` and `{{EC2PrivateDNSName}}` (for a session named after an
  EC2 instance ID, resolved by a lookup the caller provides).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from connector.aws.token import EksIdentity

log = logging.getLogger(__name__)

_INSTANCE_ID = re.compile(r"^i-(\w{8}|\w{17})$", re.ASCII)


@dataclass(frozen=True)
class IdentityMapping:
    """One usable `mapRoles`/`mapUsers` entry."""

    arn: str
    username: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class AwsAuthConfig:
    roles: tuple[IdentityMapping, ...] = ()
    users: tuple[IdentityMapping, ...] = ()
    accounts: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()


class MappingError(Exception):
    """The identity is mapped but its templates cannot be rendered (EKS refuses the token)."""


def _skippable(text: str) -> bool:
    return text.strip() in ("", "``", '""', "''")


def _entries(data: Mapping[str, Any], key: str, arn_key: str, problems: list[str]) -> tuple[IdentityMapping, ...]:
    raw = data.get(key)
    if not isinstance(raw, str) or _skippable(raw):
        return ()
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problems.append(f"{key}: not YAML: {exc}")
        return ()
    if not isinstance(parsed, list):
        problems.append(f"{key}: expected a list of mappings, got {type(parsed).__name__}")
        return ()
    found = []
    for i, entry in enumerate(parsed):
        if not isinstance(entry, dict):
            problems.append(f"{key}[{i}]: expected a mapping, got {type(entry).__name__}")
            continue
        fields = {str(k).lower(): v for k, v in entry.items()}
        arn, username, groups = fields.get(arn_key), fields.get("username", ""), fields.get("groups") or []
        if not isinstance(arn, str) or not arn:
            problems.append(f"{key}[{i}]: value for {arn_key} must be supplied")
            continue
        if not isinstance(username, str) or not isinstance(groups, list) or \
                not all(isinstance(g, str) for g in groups):
            problems.append(f"{key}[{i}]: username must be a string and groups a list of strings")
            continue
        found.append(IdentityMapping(arn, username, tuple(groups)))
    return tuple(found)


def parse_aws_auth(data: Mapping[str, Any] | None) -> AwsAuthConfig:
    """Read the ConfigMap's `data`; what cannot be used is listed in `problems` and skipped."""
    data = data or {}
    problems: list[str] = []
    roles = _entries(data, "mapRoles", "rolearn", problems)
    users = _entries(data, "mapUsers", "userarn", problems)
    accounts: frozenset[str] = frozenset()
    raw_accounts = data.get("mapAccounts")
    if isinstance(raw_accounts, str) and not _skippable(raw_accounts):
        try:
            parsed = yaml.safe_load(raw_accounts)
        except yaml.YAMLError as exc:
            problems.append(f"mapAccounts: not YAML: {exc}")
            parsed = []
        if isinstance(parsed, list):
            accounts = frozenset(str(a) for a in parsed if isinstance(a, str | int))
        else:
            problems.append(f"mapAccounts: expected a list of account IDs, got {type(parsed).__name__}")
    for problem in problems:
        log.warning("aws-auth: ignoring %s", problem)
    return AwsAuthConfig(roles, users, accounts, tuple(problems))


@dataclass(frozen=True)
class MappedUser:
    username: str
    groups: tuple[str, ...]


def map_identity(
    config: AwsAuthConfig,
    identity: EksIdentity,
    *,
    ec2_private_dns_name: Callable[[str], str | None] | None = None,
) -> MappedUser | None:
    """The Kubernetes user for `identity`, or None if aws-auth does not map it.

    Raises `MappingError` when a matching entry's templates cannot be rendered.
    """
    canonical = identity.canonical_arn.lower()
    # Entries are keyed by lowercased ARN, so of two entries for one ARN the later one wins.
    entry = next((m for m in reversed(config.roles) if m.arn.lower() == canonical), None) \
        or next((m for m in reversed(config.users) if m.arn.lower() == canonical), None)
    if entry is None:
        if identity.account_id in config.accounts:
            return MappedUser(identity.canonical_arn, ())
        return None
    username = render(entry.username, identity, ec2_private_dns_name)
    groups = tuple(render(g, identity, ec2_private_dns_name) for g in entry.groups)
    return MappedUser(username, groups)


def render(template: str, identity: EksIdentity, ec2_private_dns_name: Callable[[str], str | None] | None) -> str:
    if "{{EC2PrivateDNSName}}" in template:
        if not _INSTANCE_ID.match(identity.session_name):
            raise MappingError(f"error rendering template {template!r}: SessionName did not contain an instance id")
        dns_name = ec2_private_dns_name(identity.session_name) if ec2_private_dns_name else None
        if not dns_name:
            raise MappingError(f"error rendering template {template!r}: no private DNS name for instance "
                               f"{identity.session_name}")
        template = template.replace("{{EC2PrivateDNSName}}", dns_name)
    return (
        template.replace("{{AccountID}}", identity.account_id)
        .replace("{{SessionName}}", identity.session_name.replace("@", "-"))
        .replace("{{SessionNameRaw}}", identity.session_name)
        .replace("{{AccessKeyID}}", identity.access_key_id)
    )
