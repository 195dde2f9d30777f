"""The shapes of AWS names the connector accepts from config and command lines: regions, EKS cluster
names, IAM role ARNs. Checked early so that a typo is reported where it was written, not as an
obscure AWS error minutes later."""

from __future__ import annotations

import re

# us-east-1, us-gov-west-1, cn-northwest-1, eusc-de-east-1, ap-southeast-7 ...
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$")
# EKS's own rule for cluster names.
_EKS_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
# arn:PARTITION:iam::ACCOUNT:role/PATH/NAME
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")


def is_region(value: str) -> bool:
    return bool(_REGION.fullmatch(value))


def aws_region(value: str) -> str:
    """Validator: a region name such as `eu-west-1`."""
    if not is_region(value):
        raise ValueError(f"{value!r} is not an AWS region name (like us-east-1)")
    return value


def eks_cluster_name(value: str) -> str:
    """Validator: an EKS cluster name (1-100 letters, digits, '-' or '_', starting with a letter or digit)."""
    if not _EKS_CLUSTER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an EKS cluster name (1-100 letters, digits, '-' or '_', starting with a letter or digit)"
        )
    return value


def role_arn(value: str) -> str:
    """Validator: an IAM role ARN such as `arn:aws:iam::123456789012:role/connector`."""
    if not _ROLE_ARN.fullmatch(value):
        raise ValueError(f"{value!r} is not an IAM role ARN (like arn:aws:iam::123456789012:role/NAME)")
    return value
