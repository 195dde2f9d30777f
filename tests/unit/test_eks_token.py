"""EKS token signing (the exact URL), the 14-minute cache (frozen clock, shared refreshes, failures),
credentials (static, profile, assumed role against moto) and the `token` command."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.aws import token_cli
from connector.aws.credentials import AwsCredentials, make_session
from connector.aws.token import EksToken, EksTokenCache, EksTokenError, EksTokenSigner, verify_eks_token
from connector.metrics import TOKEN_REFRESHES
from connector.upstream.credentials import EksBearerToken
from sandbox.aws import moto_credentials_lookup
from tests.support.aws import TEST_KEY_ID, TEST_SECRET, isolate_aws_env, mocked_aws

T0 = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
STATIC = AwsCredentials(access_key_id="AKIAEXAMPLEEXAMPLE01", secret_access_key="secret-one")


@pytest.fixture(autouse=True)
def _no_machine_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_env(monkeypatch, tmp_path)


def decoded(token: str) -> str:
    body = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


# --- signing ----------------------------------------------------------------------------------------


def test_token_is_a_presigned_get_caller_identity_with_the_cluster_header_signed() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="s", aws_session_token="tok")
    token = EksTokenSigner(session, "eu-central-1").sign("payments", T0)

    assert token.token.startswith("k8s-aws-v1.")
    assert "=" not in token.token
    url = urlsplit(decoded(token.token))
    assert (url.scheme, url.netloc, url.path) == ("https", "sts.eu-central-1.amazonaws.com", "/")
    assert [k for k, _ in parse_qsl(url.query)] == [
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ]
    query = dict(parse_qsl(url.query))
    assert query["Action"] == "GetCallerIdentity"
    assert query["Version"] == "2011-06-15"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"] == "AKIDEXAMPLE/20250601/eu-central-1/sts/aws4_request"
    assert query["X-Amz-Date"] == "20250601T080000Z"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert query["X-Amz-Security-Token"] == "tok"
    assert len(query["X-Amz-Signature"]) == 64
    assert token.issued_at == T0
    assert token.expires_at == T0 + timedelta(minutes=14)


def test_no_session_token_parameter_for_long_term_keys() -> None:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="s")
    url = decoded(EksTokenSigner(session, "us-east-1").sign("c", T0).token)
    assert "X-Amz-Security-Token" not in url


@pytest.mark.parametrize(
    ("env", "region", "origin", "scope_region"),
    [
        ({}, "ap-south-1", "https://sts.ap-south-1.amazonaws.com", "ap-south-1"),
        ({"AWS_STS_REGIONAL_ENDPOINTS": "legacy"}, "eu-west-1", "https://sts.amazonaws.com", "us-east-1"),
        ({"AWS_STS_REGIONAL_ENDPOINTS": "regional"}, "eu-west-1", "https://sts.eu-west-1.amazonaws.com", "eu-west-1"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, "eu-west-1", "http://127.0.0.1:4566", "eu-west-1"),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_STS": "http://localhost:4567"},
            "us-west-2",
            "http://localhost:4567",
            "us-west-2",
        ),
        ({}, "cn-northwest-1", "https://sts.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
    ],
)
def test_sts_endpoint_comes_from_botocore_resolution(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], region: str, origin: str, scope_region: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = urlsplit(decoded(EksTokenSigner(boto3.Session(), region).sign("c", T0).token))
    assert f"{url.scheme}://{url.netloc}" == origin
    assert dict(parse_qsl(url.query))["X-Amz-Credential"].split("/")[2] == scope_region


def test_sign_without_credentials_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    signer = EksTokenSigner(boto3.Session(), "eu-west-1")
    with pytest.raises(EksTokenError, match="no AWS credentials found"):
        signer.sign("c")


def test_sign_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EksTokenSigner(boto3.Session(), "eu-west-1").sign("c", T0.replace(tzinfo=None))


def test_sign_truncates_to_whole_seconds_in_utc() -> None:
    local = (T0 + timedelta(microseconds=999_999)).astimezone(datetime.now().astimezone().tzinfo)
    token = EksTokenSigner(boto3.Session(), "eu-west-1").sign("c", local)
    assert token.issued_at == T0
    assert "X-Amz-Date=20250601T080000Z" in decoded(token.token)


# --- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"access_key_id": "AKIA1"}, "must be given together"),
        ({"secret_access_key": "s"}, "must be given together"),
        ({"session_token": "t"}, "session_token needs"),
        ({"profile": "p", "access_key_id": "AKIA1", "secret_access_key": "s"}, "either profile or"),
        ({"external_id": "abc"}, "only apply with role_arn"),
        ({"session_name": "abc"}, "only apply with role_arn"),
        ({"role_arn": "arn:aws:iam::123:role/x"}, "is not an IAM role ARN"),
        ({"role_arn": "arn:aws:iam::123456789012:user/x"}, "is not an IAM role ARN"),
        ({"role_arn": "arn:aws:iam::123456789012:role/x", "session_name": "a b"}, "role session name"),
        ({"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "x"}, "external_id must be"),
        ({"profile": ""}, "at least 1 character"),
        ({"region": "eu-west-1"}, "Extra inputs"),
    ],
)
def test_credentials_refuse_incoherent_combinations(fields: dict[str, str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        AwsCredentials.model_validate(fields)


def test_credentials_describe_their_source_without_secrets() -> None:
    assert AwsCredentials().describe() == "the default credential chain"
    assert STATIC.describe() == "static key AKIAEXAMPLEEXAMPLE01"
    assert "secret-one" not in STATIC.describe() + repr(STATIC)
    role = AwsCredentials(profile="ops", role_arn="arn:aws:iam::123456789012:role/c")
    assert role.describe() == "role arn:aws:iam::123456789012:role/c assumed with profile ops"
    from_env = AwsCredentials(access_key_id="env:KEY", secret_access_key="env:SECRET")
    assert from_env.describe() == "static key from env:KEY"


def test_static_keys_may_come_from_the_environment_and_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONNECTOR_KEY", "AKIAFROMENV")
    (tmp_path / "secret").write_text("secret-from-file\n")
    creds = AwsCredentials(access_key_id="env:CONNECTOR_KEY", secret_access_key=f"file:{tmp_path / 'secret'}")
    frozen = make_session(creds).get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("AKIAFROMENV", "secret-from-file", None)


def test_a_named_profile_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "aws-credentials").write_text("[ops]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = p\n")
    frozen = make_session(AwsCredentials(profile="ops")).get_credentials().get_frozen_credentials()
    assert frozen.access_key == "AKIAPROFILE"


def test_without_settings_the_default_chain_is_used() -> None:
    frozen = make_session(None).get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == (TEST_KEY_ID, TEST_SECRET)


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    with mocked_aws(monkeypatch, tmp_path):
        yield


def test_an_assumed_role_signs_tokens_that_verify_as_the_role(moto_env: None) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    role_arn = iam.create_role(RoleName="connector", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    creds = AwsCredentials(role_arn=role_arn, external_id="ext-id-1", session_name="connector-7")
    signer = EksTokenSigner(make_session(creds, region="eu-west-1"), "eu-west-1")
    assert not signer.credentials_fresh  # nothing assumed yet: the first sign will call STS
    token = signer.sign("prod", T0)
    assert signer.credentials_fresh
    assert "X-Amz-Security-Token=" in decoded(token.token)
    identity = verify_eks_token(token.token, "prod", T0, moto_credentials_lookup)
    assert identity.canonical_arn == role_arn
    assert identity.session_name == "connector-7"
    from moto.backends import get_backend

    assumed = get_backend("sts")["123456789012"]["aws"].assumed_roles
    assert [(r.role_arn, r.external_id, r.session_name) for r in assumed] == [(role_arn, "ext-id-1", "connector-7")]


def test_an_iam_user_key_verifies_as_the_user(moto_env: None) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    user = iam.create_user(UserName="deployer")["User"]
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    creds = AwsCredentials(access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])
    token = EksTokenSigner(make_session(creds), "us-east-2").sign("c", T0)
    assert verify_eks_token(token.token, "c", T0, moto_credentials_lookup).arn == user["Arn"]
    iam.update_access_key(UserName="deployer", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(EksTokenError, match="unknown access key"):
        verify_eks_token(token.token, "c", T0, moto_credentials_lookup)


# --- the cache --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class CountingSigner:
    """A real signer that counts its signatures, can be made to fail, and records its thread."""

    def __init__(self, credentials: AwsCredentials | None, region: str, *, fresh: bool = True):
        self.inner = EksTokenSigner(make_session(credentials or STATIC, region=region), region)
        self.signed: list[tuple[str, datetime]] = []
        self.fail_with: Exception | None = None
        self.fresh = fresh
        self.threads: list[str] = []

    @property
    def credentials_fresh(self) -> bool:
        return self.fresh

    def sign(self, cluster_name: str, now: datetime | None = None) -> EksToken:
        self.threads.append(threading.current_thread().name)
        if self.fail_with is not None:
            raise self.fail_with
        assert now is not None
        self.signed.append((cluster_name, now))
        return self.inner.sign(cluster_name, now)


class Signers:
    def __init__(self, **kwargs: bool):
        self.made: dict[tuple[AwsCredentials | None, str], CountingSigner] = {}
        self.kwargs = kwargs

    def __call__(self, credentials: AwsCredentials | None, region: str) -> CountingSigner:
        signer = CountingSigner(credentials, region, **self.kwargs)
        self.made[(credentials, region)] = signer
        return signer

    def only(self) -> CountingSigner:
        (signer,) = self.made.values()
        return signer


def age_of(token: str, now: datetime) -> timedelta:
    date = dict(parse_qsl(urlsplit(decoded(token)).query))["X-Amz-Date"]
    return now - datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


async def settle() -> None:
    """Let background refresh tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_token_is_reused_for_ten_minutes() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    first = await cache.get("prod", "eu-west-1", None)
    clock.advance(minutes=9, seconds=59)
    assert await cache.get("prod", "eu-west-1", None) == first
    assert len(signers.only().signed) == 1


async def test_from_ten_minutes_the_old_token_is_served_while_a_new_one_is_signed() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    first = await cache.get("prod", "eu-west-1", None)
    clock.advance(minutes=12)
    assert await cache.get("prod", "eu-west-1", None) == first  # no waiting
    await settle()
    second = await cache.get("prod", "eu-west-1", None)
    assert second != first
    assert age_of(second, clock.now) == timedelta(0)
    assert len(signers.only().signed) == 2


async def test_at_fourteen_minutes_callers_wait_for_a_new_token() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    first = await cache.get("prod", "eu-west-1", None)
    clock.advance(minutes=14)
    second = await cache.get("prod", "eu-west-1", None)
    assert second != first
    assert age_of(second, clock.now) == timedelta(0)


async def test_concurrent_callers_share_one_signing() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    tokens = await asyncio.gather(*(cache.get("prod", "eu-west-1", None) for _ in range(50)))
    assert len(set(tokens)) == 1
    assert len(signers.made) == 1
    assert len(signers.only().signed) == 1
    clock.advance(minutes=15)
    tokens = await asyncio.gather(*(cache.get("prod", "eu-west-1", None) for _ in range(50)))
    assert len(set(tokens)) == 1
    assert len(signers.only().signed) == 2


async def test_tokens_are_kept_per_credentials_region_and_cluster() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    other = AwsCredentials(access_key_id="AKIAEXAMPLEEXAMPLE02", secret_access_key="secret-two")
    tokens = {
        await cache.get("a", "eu-west-1", None),
        await cache.get("b", "eu-west-1", None),
        await cache.get("a", "us-east-1", None),
        await cache.get("a", "eu-west-1", other),
    }
    assert len(tokens) == 4
    assert set(signers.made) == {(None, "eu-west-1"), (None, "us-east-1"), (other, "eu-west-1")}
    assert verify_eks_token(
        await cache.get("a", "eu-west-1", other), "a", clock.now, {"AKIAEXAMPLEEXAMPLE02": _principal("two")}.get
    )


def _principal(suffix: str) -> object:
    from connector.aws.token import AwsPrincipal

    return AwsPrincipal(f"secret-{suffix}", "arn:aws:iam::123456789012:user/connector")


async def test_signing_runs_in_a_thread_when_credentials_need_refreshing() -> None:
    signers = Signers(fresh=False)
    cache = EksTokenCache(clock=Clock(), signer_factory=signers)
    await cache.get("prod", "eu-west-1", None)
    assert signers.only().threads != [threading.current_thread().name]


async def test_inline_signing_when_credentials_are_fresh() -> None:
    signers = Signers(fresh=True)
    cache = EksTokenCache(clock=Clock(), signer_factory=signers)
    await cache.get("prod", "eu-west-1", None)
    assert signers.only().threads == [threading.current_thread().name]


def _errors() -> float:
    return TOKEN_REFRESHES.labels(kind="eks", outcome="error")._value.get()


def _successes() -> float:
    return TOKEN_REFRESHES.labels(kind="eks", outcome="ok")._value.get()


async def test_a_failed_refresh_is_reported_counted_and_not_retried_at_once() -> None:
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    await cache.get("prod", "eu-west-1", None)
    signer = signers.only()
    signer.fail_with = RuntimeError("AccessDenied: sts:AssumeRole")
    errors_before, ok_before = _errors(), _successes()

    clock.advance(minutes=11)  # background refresh fails; the current token is still served
    current = await cache.get("prod", "eu-west-1", None)
    await settle()
    assert await cache.get("prod", "eu-west-1", None) == current
    assert _errors() == errors_before + 1

    clock.advance(minutes=3)  # 14 minutes: nothing usable left
    with pytest.raises(EksTokenError) as caught:
        await cache.get("prod", "eu-west-1", None)
    assert "cluster prod in eu-west-1" in caught.value.reason
    assert "AccessDenied: sts:AssumeRole" in caught.value.reason
    calls = len(signer.threads)
    with pytest.raises(EksTokenError):  # within 5 s of the failure: the same error, no new attempt
        await cache.get("prod", "eu-west-1", None)
    assert len(signer.threads) == calls

    signer.fail_with = None
    clock.advance(seconds=5)
    assert age_of(await cache.get("prod", "eu-west-1", None), clock.now) == timedelta(0)
    assert _successes() == ok_before + 1


async def test_a_signer_that_cannot_be_built_is_an_eks_token_error() -> None:
    def broken(credentials: AwsCredentials | None, region: str) -> EksTokenSigner:
        raise RuntimeError("The config profile (missing) could not be found")

    cache = EksTokenCache(clock=Clock(), signer_factory=broken)
    with pytest.raises(EksTokenError, match=r"profile \(missing\) could not be found"):
        await cache.get("prod", "eu-west-1", AwsCredentials(profile="missing"))


async def test_a_caller_giving_up_does_not_cancel_the_shared_refresh() -> None:
    clock, signers = Clock(), Signers(fresh=False)
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    impatient = asyncio.create_task(cache.get("prod", "eu-west-1", None))
    await asyncio.sleep(0)
    impatient.cancel()
    token = await cache.get("prod", "eu-west-1", None)
    assert token.startswith("k8s-aws-v1.")
    assert len(signers.only().signed) == 1


async def test_a_refused_token_is_dropped_and_signed_again_with_a_new_session() -> None:
    """After a 401 the next caller gets a token signed now, by a signer built anew (so that AWS keys
    rotated in the environment or a profile are read again), not the cached one for up to 14 minutes."""
    clock, signers = Clock(), Signers()
    cache = EksTokenCache(clock=clock, signer_factory=signers)
    first = await cache.get("prod", "eu-west-1", None)
    other = await cache.get("dev", "eu-west-1", None)
    old_signer = signers.only()
    clock.advance(minutes=3)
    source = EksBearerToken("prod", "eu-west-1", None, cache)
    source.invalidate()
    second = await cache.get("prod", "eu-west-1", None)
    assert second != first and age_of(second, clock.now) == timedelta(0)
    new_signer = signers.only()
    assert new_signer is not old_signer and [c for c, _ in new_signer.signed] == ["prod"]
    # the other cluster's token was not refused: it is kept
    assert await cache.get("dev", "eu-west-1", None) == other
    assert [c for c, _ in new_signer.signed] == ["prod"]


_SHARED_SIGNER = EksTokenSigner(make_session(STATIC, region="eu-west-1"), "eu-west-1")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20 * 60), min_size=1, max_size=25))
def test_no_token_older_than_fourteen_minutes_is_ever_handed_out(steps: list[int]) -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = EksTokenCache(clock=clock, signer_factory=lambda c, r: _SHARED_SIGNER)
        for seconds in steps:
            clock.advance(seconds=seconds)
            token = await cache.get("prod", "eu-west-1", None)
            assert age_of(token, clock.now) < timedelta(minutes=14)
            await asyncio.sleep(0)

    asyncio.run(scenario())


def test_refresh_after_must_leave_room_before_fourteen_minutes() -> None:
    with pytest.raises(ValueError, match="refresh_after"):
        EksTokenCache(refresh_after=timedelta(minutes=14))


# --- the `token` command ----------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    token_cli.configure(parser)
    return token_cli.run(parser.parse_args(argv))


def test_token_command_prints_an_exec_credential(capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert _run_cli(["--cluster-name", "prod", "--region", "eu-west-1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "ExecCredential"
    assert out["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert out["spec"] == {}
    expires = datetime.strptime(out["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + timedelta(minutes=14) <= expires <= datetime.now(UTC) + timedelta(minutes=14)
    lookup = {TEST_KEY_ID: _principal_for_test_key()}.get
    identity = verify_eks_token(out["status"]["token"], "prod", datetime.now(UTC), lookup)
    assert identity.access_key_id == TEST_KEY_ID


def _principal_for_test_key() -> object:
    from connector.aws.token import AwsPrincipal

    return AwsPrincipal(TEST_SECRET, "arn:aws:iam::123456789012:user/tester")


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--cluster-name", "bad name", "--region", "eu-west-1"], "is not an EKS cluster name"),
        (["--cluster-name", "prod", "--region", "europe"], "is not an AWS region name"),
        (["--cluster-name", "prod", "--region", "eu-west-1", "--role-arn", "nope"], "--role-arn: "),
        (["--cluster-name", "prod", "--region", "eu-west-1", "--external-id", "abcd"], "only apply with role_arn"),
    ],
)
def test_token_command_rejects_bad_input(capsys: pytest.CaptureFixture[str], argv: list[str], why: str) -> None:
    assert _run_cli(argv) == 2
    assert why in capsys.readouterr().err


def test_token_command_fails_cleanly_for_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["--cluster-name", "prod", "--region", "eu-west-1", "--profile", "nope"]) == 1
    err = capsys.readouterr().err
    assert "profile nope" in err
    assert "could not be found" in err
