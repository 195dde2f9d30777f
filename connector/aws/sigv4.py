"""AWS Signature Version 4 for presigned (query-string) GET requests: the signing half of an EKS token
and the checking half of the sandbox's token verifier.

Pure functions over strings. The connector signs here rather than through botocore's request pipeline
so that the signing time is an argument (a frozen clock in tests, the cache's clock in production)
and a token costs tens of microseconds; tests check the result against botocore byte for byte.
Spec: "Create a signed AWS API request" / "Authenticating Requests: Using Query Parameters".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# A presigned GET has no body: its payload hash is the hash of the empty string.
EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()

_DEFAULT_PORTS = {"https": 443, "http": 80}


def uri_encode(value: str) -> str:
    """SigV4's percent-encoding: everything but RFC 3986 unreserved characters."""
    return quote(value, safe="-_.~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Encoded `key=value` pairs sorted by encoded key, then value (decoded params in, as servers do)."""
    return "&".join(f"{k}={v}" for k, v in sorted((uri_encode(k), uri_encode(v)) for k, v in params))


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """(canonical header block, signed-header list) for headers given as lowercase name -> value."""
    names = sorted(headers)
    block = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names)
    return block, ";".join(names)


def host_header(url: str) -> str:
    """The Host header an HTTP client sends for `url`: the default port is left out (as botocore does)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return host


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/{TERMINATOR}"


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def query_signature(
    *,
    secret_key: str,
    region: str,
    service: str,
    amz_date: str,
    path: str,
    params: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
) -> str:
    """Hex signature of a presigned GET. `path` is the URL's path as it appears in the URL (already
    encoded); `params` are the decoded query parameters without X-Amz-Signature; `headers` are the
    signed headers (lowercase names) with their values."""
    header_block, signed = canonical_headers(headers)
    canonical_request = "\n".join(
        ("GET", path or "/", canonical_query(params), header_block, signed, EMPTY_PAYLOAD_SHA256)
    )
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            amz_date,
            credential_scope(amz_date[:8], region, service),
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        )
    )
    key = signing_key(secret_key, amz_date[:8], region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def presign_get(
    endpoint: str,
    *,
    params: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    when: datetime,
    expires: int,
) -> str:
    """A presigned GET URL for `endpoint` (`scheme://host[:port][/path]`), laid out as botocore lays
    it out: operation parameters, then the X-Amz-* parameters, then X-Amz-Signature."""
    amz_date = when.strftime(AMZ_DATE_FORMAT)
    all_headers = {"host": host_header(endpoint), **{k.lower(): v for k, v in headers.items()}}
    _, signed = canonical_headers(all_headers)
    query = list(params)
    query += [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key}/{credential_scope(amz_date[:8], region, service)}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", signed),
    ]
    if session_token is not None:
        query.append(("X-Amz-Security-Token", session_token))
    parts = urlsplit(endpoint)
    signature = query_signature(
        secret_key=secret_key,
        region=region,
        service=service,
        amz_date=amz_date,
        path=parts.path,
        params=query,
        headers=all_headers,
    )
    encoded = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in query)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}?{encoded}&X-Amz-Signature={signature}"
