"""The connector role's IAM documents: its inline policy and its trust policy per trust mode.

Pure functions returning plain dicts (serialise with `json.dumps`), so that the Pulumi program and
the sandbox (which creates the same role in its embedded AWS) grant exactly the same thing. The
inline policy is least privilege by construction: `eks:ListClusters` + `eks:DescribeCluster` for
discovery, and `s3:PutObject` under the recordings prefix only when recordings go to S3.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

POLICY_VERSION = "2012-10-17"
DISCOVERY_ACTIONS = ("eks:ListClusters", "eks:DescribeCluster")
DEFAULT_RECORDINGS_PREFIX = "recordings/"
PODS_EKS_SERVICE = "pods.eks.amazonaws.com"
STS_AUDIENCE = "sts.amazonaws.com"

_PARTITION = re.compile(r"^aws(-[a-z]+)*$")
# S3's naming rules for general purpose buckets (no dots: they break virtual-host TLS).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")
_OIDC_PROVIDER_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:oidc-provider/(.+)$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Service principals of EC2 per partition; China regions use their own DNS suffix.
_EC2_SERVICE = {"aws-cn": "ec2.amazonaws.com.cn"}


def _check_partition(partition: str) -> str:
    if not _PARTITION.match(partition):
        raise ValueError(f"{partition!r} is not an AWS partition (aws, aws-cn, aws-us-gov, ...)")
    return partition


def discovery_statement() -> dict[str, Any]:
    """What EKS discovery needs: list clusters and read their endpoint and CA, in every region."""
    return {
        "Sid": "DiscoverEksClusters",
        "Effect": "Allow",
        "Action": list(DISCOVERY_ACTIONS),
        "Resource": "*",
    }


def check_bucket_name(bucket: str) -> str:
    if not _BUCKET.match(bucket) or bucket.startswith("xn--") or bucket.endswith("-s3alias"):
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits and '-')")
    return bucket


def check_recordings_prefix(prefix: str) -> str:
    """A key prefix that an IAM resource pattern can express exactly (no wildcards of its own)."""
    if prefix.startswith("/") or "*" in prefix or "?" in prefix or any(ord(c) < 0x20 for c in prefix):
        raise ValueError(f"recordings prefix {prefix!r} must not start with '/' nor contain '*', '?' or control codes")
    return prefix


def recordings_statement(bucket: str, prefix: str = DEFAULT_RECORDINGS_PREFIX, *, partition: str = "aws") -> dict:
    """`s3:PutObject` on `bucket/prefix*` only: the connector writes recordings and never reads them back."""
    check_bucket_name(bucket)
    check_recordings_prefix(prefix)
    return {
        "Sid": "WriteSessionRecordings",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": f"arn:{_check_partition(partition)}:s3:::{bucket}/{prefix}*",
    }


def connector_policy(recordings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The connector role's inline policy; `recordings` is a `recordings_statement(...)` or None."""
    statements = [discovery_statement()]
    if recordings is not None:
        statements.append(recordings)
    return {"Version": POLICY_VERSION, "Statement": statements}


def oidc_issuer_host_path(issuer_url: str) -> str:
    """`https://oidc.eks.eu-west-1.amazonaws.com/id/ABC` -> `oidc.eks.eu-west-1.amazonaws.com/id/ABC`.

    IAM condition keys for a web identity provider are named after the issuer without its scheme.
    """
    value = issuer_url.strip()
    if value.startswith("https://"):
        value = value[len("https://") :]
    value = value.rstrip("/")
    if not value or "://" in value or " " in value:
        raise ValueError(f"{issuer_url!r} is not an OIDC issuer URL (like https://oidc.eks.REGION.amazonaws.com/id/ID)")
    return value


def irsa_trust_policy(oidc_provider_arn: str, issuer_url: str, namespace: str, service_account: str) -> dict:
    """IRSA: only the connector's service account, through the home cluster's OIDC provider, for STS."""
    match = _OIDC_PROVIDER_ARN.match(oidc_provider_arn)
    if not match:
        raise ValueError(f"{oidc_provider_arn!r} is not an IAM OIDC provider ARN")
    issuer = oidc_issuer_host_path(issuer_url)
    if match.group(2) != issuer:
        raise ValueError(f"OIDC provider {oidc_provider_arn!r} is not the provider of issuer {issuer_url!r}")
    for what, value in (("namespace", namespace), ("service account", service_account)):
        if not _K8S_NAME.match(value):
            raise ValueError(f"{what} {value!r} is not a Kubernetes object name")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                        f"{issuer}:aud": STS_AUDIENCE,
                    }
                },
            }
        ],
    }


def pod_identity_trust_policy() -> dict[str, Any]:
    """EKS Pod Identity: the agent assumes the role and tags the session with the pod's attributes."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": PODS_EKS_SERVICE},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }


def ec2_trust_policy(partition: str = "aws") -> dict[str, Any]:
    """An instance profile, for a connector running on EC2 outside any cluster."""
    service = _EC2_SERVICE.get(_check_partition(partition), "ec2.amazonaws.com")
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def principals_trust_policy(principals: Sequence[str]) -> dict[str, Any]:
    """Named IAM principals (roles, users, accounts) that may assume the connector role."""
    if not principals:
        raise ValueError("trust mode principals needs at least one principal ARN")
    for arn in principals:
        if not _PRINCIPAL_ARN.match(arn):
            raise ValueError(f"{arn!r} is not an IAM principal ARN (arn:aws:iam::ACCOUNT:role/NAME, user/NAME or root)")
    unique = sorted(set(principals))
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": unique[0] if len(unique) == 1 else unique},
                "Action": "sts:AssumeRole",
            }
        ],
    }
