"""Signing EKS bearer tokens, as `aws eks get-token` and aws-iam-authenticator make them.

The token is a presigned `GET /?Action=GetCallerIdentity&Version=2011-06-15` against the STS endpoint
of the cluster's region, with the header `x-k8s-aws-id: <cluster name>` signed, `X-Amz-Expires=60`,
and the session token when the credentials have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from connector.aws import sigv4
from connector.aws.token_format import (
    CLIENT_VALIDITY,
    CLUSTER_ID_HEADER,
    PRESIGN_EXPIRES_SECONDS,
    STS_ACTION,
    STS_VERSION,
    EksTokenError,
    encode_token,
)

if TYPE_CHECKING:
    import boto3


@dataclass(frozen=True)
class EksToken:
    """A bearer token. `issued_at` is its X-Amz-Date; `expires_at` is when to stop using it
    (14 minutes later; the cluster itself accepts it for 15)."""

    token: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class StsEndpoint:
    """Where tokens point: `url` (scheme://host[:port]/path) and the region their signature is scoped
    to (us-east-1 for the legacy global endpoint, whatever the cluster's region)."""

    url: str
    signing_region: str


def resolve_sts_endpoint(session: boto3.Session, region: str) -> StsEndpoint:
    """Ask botocore where `sts:GetCallerIdentity` goes from `region` for this session.

    botocore resolves it with everything the SDKs honour (AWS_STS_REGIONAL_ENDPOINTS,
    AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_STS, the profile's endpoint settings, FIPS/dual-stack
    switches). Presigning one request with placeholder keys is the public way to read the result,
    signing region included: no credentials are looked up and nothing is sent.
    """
    client = session.client(
        "sts",
        region_name=region,
        aws_access_key_id="ENDPOINTPROBE",
        aws_secret_access_key="endpoint-probe",  # noqa: S106 - a placeholder: the probe is never sent
    )
    probe = client.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    parts = urlsplit(probe)
    scope = dict(parse_qsl(parts.query)).get("X-Amz-Credential", "").split("/")
    if len(scope) != 5:
        raise EksTokenError(f"botocore produced an STS URL without a credential scope: {parts.netloc}")
    return StsEndpoint(url=urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")), signing_region=scope[2])


class EksTokenSigner:
    """Signs tokens with one session's credentials for clusters in one region.

    Construction resolves the endpoint and the credential source (botocore work: milliseconds, and the
    default chain may query instance metadata), so build signers off the event loop and keep them.
    `sign` is CPU-only while the credentials are fresh; when they need refreshing (an assumed role
    near expiry) it makes the STS call first. `credentials_fresh` tells which case applies.
    """

    def __init__(self, session: boto3.Session, region: str):
        self.region = region
        self.endpoint = resolve_sts_endpoint(session, region)
        self._credentials = session.get_credentials()

    @property
    def credentials_fresh(self) -> bool:
        """True when `sign` will not need network I/O to refresh the credentials."""
        if self._credentials is None:
            return True  # `sign` fails at once
        refresh_needed = getattr(self._credentials, "refresh_needed", None)
        return refresh_needed is None or not refresh_needed()

    def sign(self, cluster_name: str, now: datetime | None = None) -> EksToken:
        if self._credentials is None:
            raise EksTokenError(
                "no AWS credentials found (environment, profile, web identity, container or instance role)"
            )
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        frozen = self._credentials.get_frozen_credentials()
        when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        url = sigv4.presign_get(
            self.endpoint.url,
            params=[("Action", STS_ACTION), ("Version", STS_VERSION)],
            headers={CLUSTER_ID_HEADER: cluster_name},
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token or None,
            region=self.endpoint.signing_region,
            service="sts",
            when=when,
            expires=PRESIGN_EXPIRES_SECONDS,
        )
        return EksToken(token=encode_token(url), issued_at=when, expires_at=when + CLIENT_VALIDITY)
