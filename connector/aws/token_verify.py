"""Checking an EKS bearer token the way the cluster does, without calling STS.

EKS hands the token to aws-iam-authenticator, which checks its shape (pkg/token/token.go: size,
prefix, base64url, https, an STS host of the partition, path `/`, the query-parameter whitelist with
no duplicates, `Action=GetCallerIdentity`, `x-k8s-aws-id` among the signed headers, `0 <= X-Amz-Expires
<= 900`, `now <= X-Amz-Date + 15 min`) and then replays the URL to STS with `x-k8s-aws-id: <its own
cluster name>`. Here the last step is done locally: the SigV4 signature is recomputed with the secret
that `credentials_lookup` returns for the access key, which is what STS does. The sandbox's emulated
clusters authenticate with this, and the tests use it as the reference for what EKS accepts.

Where STS itself would refuse (credential scope for another region or service, a missing or wrong
session token, a date in the future), this refuses too.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus, urlsplit

from connector.aws import sigv4
from connector.aws.arn import canonicalize_arn
from connector.aws.names import is_region
from connector.aws.sts_hosts import sts_signing_region
from connector.aws.token_format import (
    CLUSTER_ID_HEADER,
    SERVER_VALIDITY,
    STS_ACTION,
    STS_VERSION,
    EksTokenError,
    decode_token,
)

_ALLOWED_PARAMETERS = frozenset(
    {
        "action",
        "version",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-signedheaders",
    }
)
_REQUIRED_PARAMETERS = ("x-amz-credential", "x-amz-date", "x-amz-expires", "x-amz-signedheaders", "x-amz-signature")
_SIGNED_HEADERS = f"host;{CLUSTER_ID_HEADER}"
_MAX_EXPIRES_SECONDS = 900
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")
_QUERY_PART = re.compile(r"^(?:[^%;]|%[0-9A-Fa-f]{2})*$")
_AMZ_DATE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class AwsPrincipal:
    """What the verifier needs to know about an access key: its secret and whose it is.

    `session_token`, when set, is the one temporary credentials were issued with; the token must
    carry exactly it (STS refuses temporary keys without their session token).
    """

    secret_access_key: str
    arn: str
    session_token: str | None = None


@dataclass(frozen=True)
class EksIdentity:
    """The AWS caller a valid token proves. `canonical_arn` is what aws-auth / access entries match."""

    arn: str
    canonical_arn: str
    account_id: str
    session_name: str
    access_key_id: str = ""


def verify_eks_token(
    token: str,
    cluster_name: str,
    now: datetime,
    credentials_lookup: Callable[[str], AwsPrincipal | None],
    *,
    extra_sts_endpoints: Collection[str] = (),
    partition: str = "aws",
) -> EksIdentity:
    """The caller `token` proves for `cluster_name` at `now`; raises EksTokenError(reason) otherwise.

    `extra_sts_endpoints` are `scheme://host:port` origins trusted besides the partition's real STS
    hosts (the sandbox's embedded AWS on http://127.0.0.1:PORT).
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    url = decode_token(token)
    if not _URL_CHARS.fullmatch(url):
        raise EksTokenError("pre-signed URL contains whitespace, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise EksTokenError(f"pre-signed URL cannot be parsed: {exc}") from None
    host_region = _check_origin(parts.scheme, parts.netloc, extra_sts_endpoints, partition)
    if parts.path != "/":
        raise EksTokenError(f"unexpected path {parts.path!r} in pre-signed URL (must be /)")
    if "#" in url:
        raise EksTokenError("unexpected fragment in pre-signed URL")
    params = _parse_query(parts.query)
    values = {key.lower(): value for key, value in params}

    if values.get("action") != STS_ACTION:
        raise EksTokenError(f"unexpected Action in pre-signed URL (must be {STS_ACTION})")
    if values.get("version") != STS_VERSION:
        raise EksTokenError(f"unexpected Version in pre-signed URL (must be {STS_VERSION})")
    for name in _REQUIRED_PARAMETERS:
        if name not in values:
            raise EksTokenError(f"{name} parameter must be present in pre-signed URL")
    if values.get("x-amz-algorithm") != sigv4.ALGORITHM:
        raise EksTokenError(f"unexpected X-Amz-Algorithm in pre-signed URL (must be {sigv4.ALGORITHM})")
    signed = values["x-amz-signedheaders"]
    if CLUSTER_ID_HEADER not in signed.lower().split(";"):
        raise EksTokenError(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
    if signed != _SIGNED_HEADERS:
        raise EksTokenError(f"pre-signed URL signs headers {signed!r}; only {_SIGNED_HEADERS!r} can be checked")
    expires = values["x-amz-expires"]
    if not (expires.isascii() and expires.isdigit() and int(expires) <= _MAX_EXPIRES_SECONDS):
        raise EksTokenError(f"invalid X-Amz-Expires parameter in pre-signed URL: {expires!r} (0 to 900)")
    amz_date = values["x-amz-date"]
    signed_at = _parse_amz_date(amz_date)
    if now > signed_at + SERVER_VALIDITY:
        raise EksTokenError(f"token expired: X-Amz-Date {amz_date} is more than 15 minutes ago")
    if signed_at > now + SERVER_VALIDITY:
        raise EksTokenError(f"token not yet valid: X-Amz-Date {amz_date} is more than 15 minutes ahead")

    access_key_id, scope_region = _check_credential_scope(values["x-amz-credential"], amz_date, host_region)
    principal = credentials_lookup(access_key_id)
    if principal is None:
        raise EksTokenError(f"unknown access key id {access_key_id}")
    _check_session_token(values.get("x-amz-security-token"), principal)
    signature = values["x-amz-signature"]
    if not _SIGNATURE.fullmatch(signature):
        raise EksTokenError("X-Amz-Signature is not 64 lowercase hex digits")
    expected = sigv4.query_signature(
        secret_key=principal.secret_access_key,
        region=scope_region,
        service="sts",
        amz_date=amz_date,
        path=parts.path,
        params=[(k, v) for k, v in params if k.lower() != "x-amz-signature"],
        headers={"host": sigv4.host_header(url), CLUSTER_ID_HEADER: cluster_name},
    )
    if not hmac.compare_digest(expected, signature):
        raise EksTokenError(
            f"signature does not match (wrong secret, altered URL, or a token for another cluster than {cluster_name})"
        )
    try:
        caller = canonicalize_arn(principal.arn)
    except ValueError as exc:
        raise EksTokenError(str(exc)) from None
    return EksIdentity(
        arn=caller.arn,
        canonical_arn=caller.canonical_arn,
        account_id=caller.account_id,
        session_name=caller.session_name,
        access_key_id=access_key_id,
    )


def _check_origin(scheme: str, netloc: str, extra: Collection[str], partition: str) -> str | None:
    """The region the host implies for the signature (None for a trusted extra endpoint: any)."""
    origin = f"{scheme}://{netloc}"
    if any(origin == e.rstrip("/").lower() for e in extra):
        return None
    if scheme != "https":
        raise EksTokenError(f"unexpected scheme {scheme!r} in pre-signed URL (must be https)")
    region = sts_signing_region(netloc, partition)
    if region is None:
        raise EksTokenError(f"unexpected hostname {netloc!r} in pre-signed URL (not an STS endpoint of {partition})")
    return region


def _parse_query(query: str) -> list[tuple[str, str]]:
    """Decoded (key, value) pairs, refusing what Go's url.ParseQuery refuses and every parameter that
    is not whitelisted or appears twice in any letter case (aws-iam-authenticator's rules)."""
    if not query:
        raise EksTokenError("pre-signed URL has no query parameters")
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    for piece in query.split("&"):
        key, sep, value = piece.partition("=")
        if not sep or not key or not _QUERY_PART.fullmatch(key) or not _QUERY_PART.fullmatch(value):
            raise EksTokenError("malformed query parameter in pre-signed URL")
        try:
            key, value = unquote_plus(key, errors="strict"), unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            raise EksTokenError("malformed query parameter in pre-signed URL (not UTF-8)") from None
        lower = key.lower()
        if lower in seen:
            raise EksTokenError(f"duplicate query parameter {key!r} in pre-signed URL")
        if lower not in _ALLOWED_PARAMETERS:
            raise EksTokenError(f"non-whitelisted query parameter {key!r} in pre-signed URL")
        seen.add(lower)
        params.append((key, value))
    return params


def _parse_amz_date(value: str) -> datetime:
    if not _AMZ_DATE.fullmatch(value):
        raise EksTokenError(f"X-Amz-Date {value!r} is not in the form YYYYMMDDTHHMMSSZ")
    try:  # slicing: strptime would cost more than the rest of the date checks together
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise EksTokenError(f"X-Amz-Date {value!r} is not a valid date and time") from None


def _check_credential_scope(credential: str, amz_date: str, host_region: str | None) -> tuple[str, str]:
    """(access key id, scope region) from `AKID/YYYYMMDD/REGION/sts/aws4_request`, checked as STS does."""
    fields = credential.split("/")
    if len(fields) != 5 or not fields[0]:
        raise EksTokenError("X-Amz-Credential is not ACCESS_KEY/DATE/REGION/sts/aws4_request")
    access_key_id, date, region, service, terminator = fields
    if date != amz_date[:8]:
        raise EksTokenError("X-Amz-Credential date does not match X-Amz-Date")
    if service != "sts" or terminator != sigv4.TERMINATOR:
        raise EksTokenError("X-Amz-Credential is not scoped to sts/aws4_request")
    if not is_region(region):
        raise EksTokenError(f"X-Amz-Credential region {region!r} is not a region")
    if host_region is not None and region != host_region:
        raise EksTokenError(f"X-Amz-Credential is scoped to {region} but the STS endpoint signs for {host_region}")
    return access_key_id, region


def _check_session_token(given: str | None, principal: AwsPrincipal) -> None:
    if principal.session_token is None:
        if given is not None:
            raise EksTokenError("X-Amz-Security-Token given for long-term credentials")
        return
    if given is None:
        raise EksTokenError("temporary credentials used without their X-Amz-Security-Token")
    if not hmac.compare_digest(given.encode(), principal.session_token.encode()):
        raise EksTokenError("X-Amz-Security-Token does not match the credentials")
