"""Caller ARNs as EKS maps them to Kubernetes identities.

STS reports an assumed role's caller as `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`; aws-auth and
access entries name the role as `arn:aws:iam::ACCOUNT:role/ROLE`. `canonicalize_arn` converts the
first into the second, with aws-iam-authenticator's rules (pkg/arn), and refuses what is no IAM
principal.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.aws.sts_hosts import partitions


@dataclass(frozen=True)
class CallerArn:
    arn: str
    canonical_arn: str
    account_id: str
    session_name: str  # "" unless an assumed role


def canonicalize_arn(arn: str) -> CallerArn:
    """Parse a caller ARN. Raises ValueError naming what is wrong with it."""
    fields = arn.split(":", 5)
    if len(fields) != 6 or fields[0] != "arn":
        raise ValueError(f"{arn!r} is not an ARN")
    _, partition, service, _region, account, resource = fields
    if partition not in partitions():
        raise ValueError(f"ARN {arn!r} does not have a recognised partition")
    if not (len(account) == 12 and account.isascii() and account.isdigit()):
        raise ValueError(f"ARN {arn!r} does not have a 12-digit account id")
    parts = resource.split("/")
    kind = parts[0]
    if service == "sts" and kind == "assumed-role":
        if len(parts) < 3 or not all(parts[1:]):
            raise ValueError(f"assumed-role ARN {arn!r} does not name a role and a session")
        role = "/".join(parts[1:-1])
        return CallerArn(arn, f"arn:{partition}:iam::{account}:role/{role}", account, parts[-1])
    if service == "sts" and kind == "federated-user":
        return CallerArn(arn, arn, account, "")
    if service == "iam" and kind in ("role", "user", "root"):
        return CallerArn(arn, arn, account, "")
    raise ValueError(f"ARN {arn!r} is not an IAM user, role, root, assumed role or federated user")
