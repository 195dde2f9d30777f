"""verify_eks_token: accepts what EKS accepts (our tokens, `aws eks get-token`'s), refuses each tampered
variant for the reason aws-iam-authenticator (or STS) would."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import boto3
import botocore.auth
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.aws import sigv4
from connector.aws.arn import canonicalize_arn
from connector.aws.token import AwsPrincipal, EksIdentity, EksTokenError, EksTokenSigner, verify_eks_token
from connector.aws.token_format import MAX_TOKEN_BYTES, encode_token
from tests.support.aws import isolate_aws_env

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
CLUSTER = "prod-eu"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TEMP_KEY_ID = "ASIAIOSFODNN7EXAMPLE"
TEMP_SECRET = "temporary/secret+key"
SESSION_TOKEN = "FwoGZXIvYXdzE/session+token=="
USER_ARN = "arn:aws:iam::111122223333:user/deployer"
ROLE_SESSION_ARN = "arn:aws:sts::111122223333:assumed-role/connector/eks-access-connector"
PRINCIPALS = {
    KEY_ID: AwsPrincipal(SECRET, USER_ARN),
    TEMP_KEY_ID: AwsPrincipal(TEMP_SECRET, ROLE_SESSION_ARN, SESSION_TOKEN),
}
lookup = PRINCIPALS.get
EU = "https://sts.eu-west-1.amazonaws.com"
OPERATION = [("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]


@pytest.fixture(autouse=True)
def _no_machine_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_env(monkeypatch, tmp_path)


def make_token(
    *,
    endpoint: str = EU,
    params: list[tuple[str, str]] = OPERATION,
    headers: dict[str, str] | None = None,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    session_token: str | None = None,
    region: str = "eu-west-1",
    when: datetime = NOW,
    expires: int = 60,
) -> str:
    """A correctly signed token, whatever it says: so each refusal below is for the reason tested."""
    url = sigv4.presign_get(
        endpoint,
        params=params,
        headers={"x-k8s-aws-id": CLUSTER} if headers is None else headers,
        access_key=key_id,
        secret_key=secret,
        session_token=session_token,
        region=region,
        service="sts",
        when=when,
        expires=expires,
    )
    return encode_token(url)


def url_of(token: str) -> str:
    body = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def rewrite(token: str, old: str, new: str) -> str:
    url = url_of(token)
    assert old in url
    return encode_token(url.replace(old, new, 1))


def refused(token: str, *, cluster: str = CLUSTER, now: datetime = NOW, **kwargs: object) -> str:
    with pytest.raises(EksTokenError) as caught:
        verify_eks_token(token, cluster, now, lookup, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def awscli_token(session: boto3.Session, region: str, cluster: str) -> str:
    """A token made the way `aws eks get-token` makes it: botocore's presigner, with the cluster
    header injected before signing (awscli's customizations/eks/get_token.py)."""
    client = session.client("sts", region_name=region)

    def retrieve_cluster(params: dict, context: dict, **_: object) -> None:
        if "x-k8s-aws-id" in params:
            context["x-k8s-aws-id"] = params.pop("x-k8s-aws-id")

    def inject_header(request: object, **_: object) -> None:
        if "x-k8s-aws-id" in request.context:  # type: ignore[attr-defined]
            request.headers["x-k8s-aws-id"] = request.context["x-k8s-aws-id"]  # type: ignore[attr-defined]

    client.meta.events.register("provide-client-params.sts.GetCallerIdentity", retrieve_cluster)
    client.meta.events.register("before-sign.sts.GetCallerIdentity", inject_header)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        url = client.generate_presigned_url(
            "get_caller_identity", Params={"x-k8s-aws-id": cluster}, ExpiresIn=60, HttpMethod="GET"
        )
    return encode_token(url)


# --- accepted ---------------------------------------------------------------------------------------


def test_accepts_a_long_term_key_token() -> None:
    identity = verify_eks_token(make_token(), CLUSTER, NOW, lookup)
    assert identity == EksIdentity(
        arn=USER_ARN, canonical_arn=USER_ARN, account_id="111122223333", session_name="", access_key_id=KEY_ID
    )


def test_accepts_an_assumed_role_token_and_canonicalises_the_role() -> None:
    token = make_token(key_id=TEMP_KEY_ID, secret=TEMP_SECRET, session_token=SESSION_TOKEN)
    identity = verify_eks_token(token, CLUSTER, NOW, lookup)
    assert identity.arn == ROLE_SESSION_ARN
    assert identity.canonical_arn == "arn:aws:iam::111122223333:role/connector"
    assert identity.session_name == "eks-access-connector"


@pytest.mark.parametrize(
    ("region", "env", "partition"),
    [
        ("eu-west-1", {}, "aws"),
        ("us-east-1", {}, "aws"),
        ("eu-west-1", {"AWS_STS_REGIONAL_ENDPOINTS": "legacy"}, "aws"),  # global host, us-east-1 scope
        ("us-west-2", {"AWS_USE_FIPS_ENDPOINT": "true"}, "aws"),
        ("eu-west-1", {"AWS_USE_DUALSTACK_ENDPOINT": "true"}, "aws"),
        ("cn-north-1", {}, "aws-cn"),
        ("us-gov-west-1", {}, "aws-us-gov"),
    ],
)
def test_accepts_aws_eks_get_token_tokens_and_ours_alike(
    monkeypatch: pytest.MonkeyPatch, region: str, env: dict[str, str], partition: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for session_token in (None, SESSION_TOKEN):
        key_id, secret = (KEY_ID, SECRET) if session_token is None else (TEMP_KEY_ID, TEMP_SECRET)
        session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=session_token)
        theirs = awscli_token(session, region, CLUSTER)
        ours = EksTokenSigner(session, region).sign(CLUSTER, NOW).token
        assert ours == theirs
        identity = verify_eks_token(theirs, CLUSTER, NOW, lookup, partition=partition)
        assert identity.access_key_id == key_id


def test_accepts_a_trusted_extra_endpoint() -> None:
    token = make_token(endpoint="http://127.0.0.1:4566")
    assert verify_eks_token(token, CLUSTER, NOW, lookup, extra_sts_endpoints=["http://127.0.0.1:4566"])
    assert "unexpected scheme" in refused(token)
    assert "unexpected scheme" in refused(token, extra_sts_endpoints=["http://127.0.0.1:4567"])


@pytest.mark.parametrize("age", [timedelta(0), timedelta(minutes=14, seconds=59), timedelta(minutes=15)])
def test_accepts_up_to_fifteen_minutes_after_x_amz_date(age: timedelta) -> None:
    verify_eks_token(make_token(), CLUSTER, NOW + age, lookup)


# --- refused ----------------------------------------------------------------------------------------


def test_refuses_a_token_for_another_cluster() -> None:
    assert "signature does not match" in refused(make_token(), cluster="other-cluster")


def test_refuses_an_expired_token() -> None:
    assert "expired" in refused(make_token(), now=NOW + timedelta(minutes=15, seconds=1))


def test_refuses_a_token_from_the_future() -> None:
    assert "not yet valid" in refused(make_token(when=NOW + timedelta(minutes=16)))


@pytest.mark.parametrize(
    ("endpoint", "region", "why"),
    [
        ("https://evil.example.com", "eu-west-1", "unexpected hostname"),
        ("https://sts.eu-west-1.amazonaws.com.evil.example.com", "eu-west-1", "unexpected hostname"),
        ("https://sts.eu-west-1.amazonaws.com:443", "eu-west-1", "unexpected hostname"),
        ("https://sts.cn-north-1.amazonaws.com.cn", "cn-north-1", "unexpected hostname"),  # other partition
        ("https://sts.us-gov-west-1.amazonaws.com", "us-gov-west-1", "unexpected hostname"),
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-1", "unexpected hostname"),
        ("https://STS.eu-west-1.amazonaws.com", "eu-west-1", "unexpected hostname"),
        ("http://sts.eu-west-1.amazonaws.com", "eu-west-1", "unexpected scheme"),
        ("https://sts.eu-west-1.amazonaws.com/path", "eu-west-1", "unexpected path"),
        ("https://sts.amazonaws.com", "eu-west-1", "scoped to eu-west-1 but the STS endpoint signs for us-east-1"),
        ("https://sts.eu-west-1.amazonaws.com", "eu-west-2", "scoped to eu-west-2"),
    ],
)
def test_refuses_urls_not_aimed_at_sts_of_the_partition(endpoint: str, region: str, why: str) -> None:
    assert why in refused(make_token(endpoint=endpoint, region=region))


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ([*OPERATION, ("Extra", "1")], "non-whitelisted query parameter 'Extra'"),
        ([*OPERATION, ("Action", "GetCallerIdentity")], "duplicate query parameter 'Action'"),
        ([*OPERATION, ("action", "GetCallerIdentity")], "duplicate query parameter 'action'"),
        ([("Action", "AssumeRole"), ("Version", "2011-06-15")], "unexpected Action"),
        ([("Action", "GetCallerIdentity")], "unexpected Version"),
    ],
)
def test_refuses_parameters_outside_the_whitelist_or_repeated(params: list[tuple[str, str]], why: str) -> None:
    assert why in refused(make_token(params=params))


def test_refuses_a_duplicate_amz_parameter_added_after_signing() -> None:
    token = make_token()
    assert "duplicate query parameter 'X-Amz-Date'" in refused(
        rewrite(token, "&X-Amz-Signature=", "&X-Amz-Date=20250301T120000Z&X-Amz-Signature=")
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "did not sign the x-k8s-aws-id header"),
        ({"x-k8s-aws-id": CLUSTER, "x-extra": "1"}, "only 'host;x-k8s-aws-id' can be checked"),
    ],
)
def test_refuses_signed_headers_other_than_host_and_cluster_id(headers: dict[str, str], why: str) -> None:
    assert why in refused(make_token(headers=headers))


@pytest.mark.parametrize("expires", [901, 3600])
def test_refuses_x_amz_expires_over_900(expires: int) -> None:
    assert "invalid X-Amz-Expires" in refused(make_token(expires=expires))


@pytest.mark.parametrize("value", ["-1", "abc", "", "6 0"])
def test_refuses_malformed_x_amz_expires(value: str) -> None:
    token = rewrite(make_token(), "X-Amz-Expires=60", f"X-Amz-Expires={value.replace(' ', '+')}")
    assert "invalid X-Amz-Expires" in refused(token)


def test_accepts_x_amz_expires_zero_and_900() -> None:
    verify_eks_token(make_token(expires=0), CLUSTER, NOW, lookup)
    verify_eks_token(make_token(expires=900), CLUSTER, NOW, lookup)


def test_refuses_a_bad_signature() -> None:
    token = make_token()
    signature = url_of(token).rsplit("X-Amz-Signature=", 1)[1]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert "signature does not match" in refused(rewrite(token, signature, flipped))
    assert "64 lowercase hex" in refused(rewrite(token, signature, signature.upper()))


def test_refuses_a_token_signed_with_another_secret() -> None:
    assert "signature does not match" in refused(make_token(secret="not-the-secret"))


def test_refuses_an_unknown_access_key() -> None:
    assert "unknown access key id AKIANOTKNOWN" in refused(make_token(key_id="AKIANOTKNOWN"))


def test_refuses_temporary_credentials_without_or_with_a_wrong_session_token() -> None:
    assert "without their X-Amz-Security-Token" in refused(make_token(key_id=TEMP_KEY_ID, secret=TEMP_SECRET))
    wrong = make_token(key_id=TEMP_KEY_ID, secret=TEMP_SECRET, session_token="other")
    assert "X-Amz-Security-Token does not match" in refused(wrong)
    assert "given for long-term credentials" in refused(make_token(session_token="stray"))


def test_refuses_a_token_whose_date_was_moved_to_extend_it() -> None:
    later = rewrite(make_token(), "X-Amz-Date=20250301T120000Z", "X-Amz-Date=20250301T121000Z")
    assert "signature does not match" in refused(later, now=NOW + timedelta(minutes=20))


def test_refuses_a_credential_scope_of_another_day_or_service() -> None:
    token = make_token()
    assert "date does not match" in refused(rewrite(token, "%2F20250301%2F", "%2F20250302%2F"))
    assert "not scoped to sts" in refused(rewrite(token, "%2Fsts%2F", "%2Fiam%2F"))


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda t: t + "=", "not unpadded base64url"),
        (lambda t: t + "==", "not unpadded base64url"),
        (lambda t: t[:-1] + "+", "not unpadded base64url"),
        (lambda t: t.replace("k8s-aws-v1.", "k8s-aws-v2."), "missing the 'k8s-aws-v1.' prefix"),
        (lambda t: t.removeprefix("k8s-aws-v1."), "missing the 'k8s-aws-v1.' prefix"),
        (lambda t: t + "A" * (MAX_TOKEN_BYTES - len(t) + 1), "too large"),
        (lambda t: "k8s-aws-v1.AAAAA", "impossible length"),
        (lambda t: "k8s-aws-v1.YWJjZA\n", "not unpadded base64url"),
    ],
)
def test_refuses_badly_encoded_tokens(mutate: object, why: str) -> None:
    assert why in refused(mutate(make_token()))  # type: ignore[operator]


def test_refuses_non_canonical_base64() -> None:
    assert encode_token("abcd") == "k8s-aws-v1.YWJjZA"  # 4 bytes: the last character carries 4 spare bits
    assert "not canonical" in refused("k8s-aws-v1.YWJjZB")


def test_an_oversized_token_is_refused_before_decoding() -> None:
    assert "too large" in refused("k8s-aws-v1." + "A" * MAX_TOKEN_BYTES)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"{EU}/", "no query parameters"),
        (f"{EU}/?Action=GetCallerIdentity&&Version=2011-06-15", "malformed query parameter"),
        (f"{EU}/?Action=GetCallerIdentity;Version=2011-06-15", "malformed query parameter"),
        (f"{EU}/?Action=Get%ZZ", "malformed query parameter"),
        (f"{EU}/?Action", "malformed query parameter"),
        (f"{EU}/?Action=%FF", "not UTF-8"),
        (f"{EU}/ ?Action=GetCallerIdentity", "whitespace"),
        (f"{EU}/?Action=GetCallerIdentity\n", "whitespace"),
        (f"{EU}/?Action=GetCallerIdentity#x", "unexpected fragment"),
        ("https://[::1/?Action=x", "cannot be parsed"),
    ],
)
def test_refuses_malformed_urls(url: str, why: str) -> None:
    assert why in refused(encode_token(url))


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_eks_token(make_token(), CLUSTER, NOW.replace(tzinfo=None), lookup)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_reason(text: str) -> None:
    for candidate in (text, "k8s-aws-v1." + text):
        with pytest.raises(EksTokenError):
            verify_eks_token(candidate, CLUSTER, NOW, lookup)


_VALID_URL = url_of(make_token())


@settings(max_examples=400)
@given(st.integers(min_value=0, max_value=len(_VALID_URL) - 1), st.characters(codec="ascii"))
def test_a_changed_character_never_yields_another_identity(position: int, char: str) -> None:
    """Changing one character of a valid URL is refused, or (an equivalent spelling, like %2f for %2F)
    proves the very same caller."""
    url = _VALID_URL[:position] + char + _VALID_URL[position + 1 :]
    try:
        identity = verify_eks_token(encode_token(url), CLUSTER, NOW, lookup)
    except EksTokenError:
        return
    assert identity.arn == USER_ARN


# --- ARN canonicalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "canonical", "session"),
    [
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice", ""),
        ("arn:aws:iam::123456789012:user/path/alice", "arn:aws:iam::123456789012:user/path/alice", ""),
        ("arn:aws:iam::123456789012:role/admin", "arn:aws:iam::123456789012:role/admin", ""),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root", ""),
        ("arn:aws:sts::123456789012:assumed-role/admin/alice", "arn:aws:iam::123456789012:role/admin", "alice"),
        ("arn:aws-cn:sts::123456789012:assumed-role/admin/i-0abc", "arn:aws-cn:iam::123456789012:role/admin", "i-0abc"),
        ("arn:aws:sts::123456789012:federated-user/bob", "arn:aws:sts::123456789012:federated-user/bob", ""),
    ],
)
def test_canonicalize_arn(arn: str, canonical: str, session: str) -> None:
    caller = canonicalize_arn(arn)
    assert (caller.canonical_arn, caller.session_name, caller.account_id) == (canonical, session, "123456789012")


@pytest.mark.parametrize(
    ("arn", "why"),
    [
        ("not-an-arn", "is not an ARN"),
        ("arn:aws:iam::123456789012", "is not an ARN"),
        ("arn:azure:iam::123456789012:user/alice", "recognised partition"),
        ("arn:aws:iam::12345:user/alice", "12-digit account"),
        ("arn:aws:sts::123456789012:assumed-role/admin", "does not name a role and a session"),
        ("arn:aws:iam::123456789012:group/devs", "is not an IAM user, role"),
        ("arn:aws:s3:::bucket", "12-digit account"),
    ],
)
def test_canonicalize_arn_refuses(arn: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        canonicalize_arn(arn)


def test_a_principal_with_an_unusable_arn_is_refused() -> None:
    token = make_token(key_id="AKIAODD")
    with pytest.raises(EksTokenError, match="is not an IAM user"):
        verify_eks_token(
            token, CLUSTER, NOW, {"AKIAODD": AwsPrincipal(SECRET, "arn:aws:iam::123456789012:group/x")}.get
        )
