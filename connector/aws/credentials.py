"""Which AWS identity the connector uses for a socket or a discovery source, and the boto3 session for it.

Every source AWS SDKs know works: the default chain (environment, shared profile, IRSA web identity,
EKS Pod Identity, instance role), a named profile, static keys, and on top of any of these an
assumed role (`role_arn`, optional `external_id` and `session_name`). Key material may be given as
`env:NAME` or `file:/path` (see connector.secrets) and is read when a session is made, so a rotated
file is picked up by the next session.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field, SecretStr, model_validator

from connector.aws.names import role_arn as _role_arn
from connector.model import StrictModel
from connector.secrets import describe_secret, resolve_secret

if TYPE_CHECKING:
    import boto3

DEFAULT_SESSION_NAME = "eks-access-connector"

# AWS's own rules for AssumeRole's RoleSessionName and ExternalId.
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")


def _session_name(value: str) -> str:
    if not _SESSION_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a role session name (2-64 letters, digits or +=,.@_-)")
    return value


def _external_id(value: str) -> str:
    if not _EXTERNAL_ID.fullmatch(value):
        raise ValueError("external_id must be 2-1224 letters, digits or +=,.@:/_- characters")
    return value


class AwsCredentials(StrictModel):
    """An AWS identity. Every field empty means the default credential chain."""

    profile: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="A named profile from the shared AWS config/credentials files."
    )
    access_key_id: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Static access key id (or env:NAME / file:/path)."
    )
    secret_access_key: Annotated[SecretStr, Field(min_length=1)] | None = Field(
        default=None, description="Static secret access key (or env:NAME / file:/path)."
    )
    session_token: Annotated[SecretStr, Field(min_length=1)] | None = Field(
        default=None, description="Session token of temporary static credentials (or env:NAME / file:/path)."
    )
    role_arn: Annotated[str, AfterValidator(_role_arn)] | None = Field(
        default=None, description="Assume this role with the credentials above (or the default chain)."
    )
    external_id: Annotated[str, AfterValidator(_external_id)] | None = None
    session_name: Annotated[str, AfterValidator(_session_name)] | None = None

    @model_validator(mode="after")
    def _check_combination(self) -> AwsCredentials:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile is not None and self.access_key_id is not None:
            raise ValueError("give either profile or access_key_id/secret_access_key, not both")
        if self.role_arn is None and (self.external_id is not None or self.session_name is not None):
            raise ValueError("external_id and session_name only apply with role_arn")
        return self

    def describe(self) -> str:
        """Where these credentials come from, for logs and error messages (never a secret)."""
        if self.access_key_id is not None:
            key = self.access_key_id
            base = f"static key {key}" if describe_secret(key) == "inline" else f"static key from {key}"
        elif self.profile is not None:
            base = f"profile {self.profile}"
        else:
            base = "the default credential chain"
        if self.role_arn is None:
            return base
        return f"role {self.role_arn} assumed with {base}"


STS_GLOBAL_REGION = "us-east-1"


def make_session(creds: AwsCredentials | None, *, region: str | None = None) -> boto3.Session:
    """A boto3 session for `creds` (None: the default chain). No network I/O happens here: credentials
    are resolved, and a role assumed, when a client first needs them (so call that from a thread).

    `region` is the session's default region; an assumed role's STS calls use it too, or, when neither
    it nor the environment names one, STS's global region (`discover --regions` without
    AWS_DEFAULT_REGION must not end in NoRegionError).
    """
    import boto3
    import botocore.session

    from connector.aws.assume_role import AssumeRoleProvider

    creds = creds or AwsCredentials()
    base = _base_session(creds, region)
    if creds.role_arn is None:
        return base
    core = botocore.session.Session(profile=creds.profile)
    provider = AssumeRoleProvider(
        base, creds.role_arn, session_name=creds.session_name or DEFAULT_SESSION_NAME, external_id=creds.external_id,
        sts_region=region or base.region_name or STS_GLOBAL_REGION,
    )
    # First in the chain: the role's credentials are the only ones this session may use.
    core.get_component("credential_provider").insert_before("env", provider)
    return boto3.Session(botocore_session=core, region_name=region)


def _base_session(creds: AwsCredentials, region: str | None) -> boto3.Session:
    import boto3

    if creds.access_key_id is not None and creds.secret_access_key is not None:
        token = creds.session_token
        return boto3.Session(
            aws_access_key_id=resolve_secret(creds.access_key_id),
            aws_secret_access_key=resolve_secret(creds.secret_access_key.get_secret_value()),
            aws_session_token=resolve_secret(token.get_secret_value()) if token is not None else None,
            region_name=region,
        )
    return boto3.Session(profile_name=creds.profile, region_name=region)
