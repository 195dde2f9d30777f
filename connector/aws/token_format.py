"""The EKS bearer token format shared by the signer and the verifier.

A token is `k8s-aws-v1.` followed by the unpadded base64url encoding of a presigned STS
`GetCallerIdentity` URL (aws-iam-authenticator's format, which EKS accepts).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import timedelta

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - a format marker, not a secret
# aws-iam-authenticator refuses anything longer.
MAX_TOKEN_BYTES = 4096
CLUSTER_ID_HEADER = "x-k8s-aws-id"
STS_ACTION = "GetCallerIdentity"
STS_VERSION = "2011-06-15"
# The signer's X-Amz-Expires. STS ignores it: a presigned GetCallerIdentity is good for 15 minutes
# after X-Amz-Date whatever it says; 60 is what aws-iam-authenticator and `aws eks get-token` send.
PRESIGN_EXPIRES_SECONDS = 60
# How long the cluster accepts a token after its X-Amz-Date.
SERVER_VALIDITY = timedelta(minutes=15)
# How long the connector (and `aws eks get-token`) hands a token out: one minute of margin for clock
# skew and a request in flight.
CLIENT_VALIDITY = timedelta(minutes=14)

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class EksTokenError(Exception):
    """A token could not be made or was refused. `reason` says why, for logs and the caller."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def encode_token(presigned_url: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(presigned_url.encode()).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> str:
    """The presigned URL inside `token`, checked as aws-iam-authenticator checks it (size, prefix,
    unpadded base64url: padding or any other character is refused), and canonical encoding."""
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise EksTokenError(f"token is too large (more than {MAX_TOKEN_BYTES} bytes)")
    if not token.startswith(TOKEN_PREFIX):
        raise EksTokenError(f"token is missing the {TOKEN_PREFIX!r} prefix")
    body = token[len(TOKEN_PREFIX) :]
    if not _BASE64URL.fullmatch(body):
        raise EksTokenError("token is not unpadded base64url (found '=', '+', '/' or another character)")
    if len(body) % 4 == 1:
        raise EksTokenError("token is not valid base64url (impossible length)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise EksTokenError("token is not valid base64url") from None
    # Stricter than Go's RawURLEncoding on purpose: non-zero trailing bits would give one URL several
    # token spellings.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        raise EksTokenError("token is not canonical base64url (non-zero trailing bits)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EksTokenError("token does not decode to a URL (not UTF-8)") from None
