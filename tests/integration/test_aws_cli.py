"""`python -m connector discover` and `python -m connector token`, run as commands against the
embedded AWS (moto's server on 127.0.0.1) through AWS_ENDPOINT_URL, as a user would run them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.aws.token import verify_eks_token
from connector.pki import generate_ca
from sandbox.aws import EmbeddedAws

ROOT = Path(__file__).resolve().parents[2]
CA = generate_ca("kubernetes").cert_pem


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws() as embedded:
        embedded.create_eks_cluster(
            "payments", "eu-west-1", tags={"expose": "yes", "team": "pay"}, endpoint="https://10.0.0.1:443", ca_pem=CA
        )
        embedded.create_eks_cluster("search", "us-east-1", tags={"expose": "yes"}, authentication_mode="CONFIG_MAP")
        embedded.create_eks_cluster("scratch", "ap-southeast-2", tags={"expose": "yes", "env": "sandbox"})
        embedded.create_eks_cluster("new", "us-east-1", tags={"expose": "yes"}, status="CREATING")
        embedded.create_eks_cluster("hidden", "eu-west-1")
        yield embedded


def connector(aws: EmbeddedAws, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(aws.env(), HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "config"), **env)
    clean["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "credentials")
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REGIONS = "eu-west-1,us-east-1,ap-southeast-2"


def test_discover_prints_json_sockets(aws: EmbeddedAws, tmp_path: Path) -> None:
    run = connector(
        aws,
        tmp_path,
        "discover",
        "--regions",
        REGIONS,
        "--include-tag",
        "expose",
        "--exclude-tag",
        "env=sandbox",
        "--output",
        "json",
    )
    assert run.returncode == 0, run.stderr
    sockets = json.loads(run.stdout)
    assert [s["socket_name"] for s in sockets] == ["eks-eu-west-1-payments", "eks-us-east-1-search"]
    payments = sockets[0]
    assert payments == {
        "socket_name": "eks-eu-west-1-payments",
        "cluster_name": "payments",
        "region": "eu-west-1",
        "arn": "arn:aws:eks:eu-west-1:123456789012:cluster/payments",
        "endpoint": "https://10.0.0.1:443",
        "version": "1.31",
        "platform_version": payments["platform_version"],
        "tags": {"expose": "yes", "team": "pay"},
        "authentication_mode": "API_AND_CONFIG_MAP",
        "vpc_id": payments["vpc_id"],
        "stale": False,
        "error": None,
    }
    assert payments["vpc_id"].startswith("vpc-")
    assert sockets[1]["authentication_mode"] == "CONFIG_MAP"


def test_discover_shows_the_ca_only_when_asked(aws: EmbeddedAws, tmp_path: Path) -> None:
    run = connector(aws, tmp_path, "discover", "--regions", "eu-west-1", "--output", "json", "--show-ca")
    assert run.returncode == 0, run.stderr
    (payments,) = [s for s in json.loads(run.stdout) if s["cluster_name"] == "payments"]
    assert base64.b64decode(payments["ca_data"]) == CA


def test_discover_prints_a_table(aws: EmbeddedAws, tmp_path: Path) -> None:
    run = connector(aws, tmp_path, "discover", "--regions", REGIONS)
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:4] == ["SOCKET", "CLUSTER", "REGION", "VERSION"]
    assert sorted(row.split()[0] for row in rows) == [
        "eks-ap-southeast-2-scratch",
        "eks-eu-west-1-hidden",
        "eks-eu-west-1-payments",
        "eks-us-east-1-search",
    ]


def test_discover_exits_1_when_clusters_cannot_be_exposed(aws: EmbeddedAws, tmp_path: Path) -> None:
    long_name = "c" * 60
    aws.create_eks_cluster(long_name, "eu-west-1")
    try:
        run = connector(aws, tmp_path, "discover", "--regions", "eu-west-1")
        assert run.returncode == 1
        assert "is not a DNS label" in run.stderr
        assert "eks-eu-west-1-payments" in run.stdout  # what could be exposed is still printed
    finally:
        aws.client("eks", "eu-west-1").delete_cluster(name=long_name)


def test_discover_rejects_bad_flags(aws: EmbeddedAws, tmp_path: Path) -> None:
    run = connector(aws, tmp_path, "discover", "--regions", "eu-west-1,mars")
    assert run.returncode == 2
    assert "'mars' is not an AWS region name" in run.stderr


def test_token_prints_an_exec_credential_that_eks_accepts(aws: EmbeddedAws, tmp_path: Path) -> None:
    user = aws.create_user_credentials("token-cli-user")
    assert user.access_key_id and user.secret_access_key
    run = connector(
        aws,
        tmp_path,
        "token",
        "--cluster-name",
        "payments",
        "--region",
        "eu-west-1",
        AWS_ACCESS_KEY_ID=user.access_key_id,
        AWS_SECRET_ACCESS_KEY=user.secret_access_key.get_secret_value(),
    )
    assert run.returncode == 0, run.stderr
    credential = json.loads(run.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert credential["kind"] == "ExecCredential"
    expires = datetime.strptime(credential["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=13) < expires - datetime.now(UTC) <= timedelta(minutes=14)
    identity = verify_eks_token(
        credential["status"]["token"],
        "payments",
        datetime.now(UTC),
        aws.credentials_lookup,
        extra_sts_endpoints=[aws.endpoint_url],
    )
    assert identity.arn == "arn:aws:iam::123456789012:user/token-cli-user"


def test_token_with_an_assumed_role(aws: EmbeddedAws, tmp_path: Path) -> None:
    role = aws.create_role("token-cli-role")
    run = connector(
        aws,
        tmp_path,
        "token",
        "--cluster-name",
        "search",
        "--region",
        "us-east-1",
        "--role-arn",
        role,
        "--session-name",
        "ops-alice",
    )
    assert run.returncode == 0, run.stderr
    token = json.loads(run.stdout)["status"]["token"]
    identity = verify_eks_token(
        token, "search", datetime.now(UTC), aws.credentials_lookup, extra_sts_endpoints=[aws.endpoint_url]
    )
    assert (identity.canonical_arn, identity.session_name) == (role, "ops-alice")


def test_token_rejects_bad_flags(aws: EmbeddedAws, tmp_path: Path) -> None:
    run = connector(aws, tmp_path, "token", "--cluster-name", "payments", "--region", "nowhere")
    assert run.returncode == 2
    assert "'nowhere' is not an AWS region name" in run.stderr


def test_discover_with_a_role_and_no_default_region_answers_without_a_traceback(aws: EmbeddedAws, tmp_path: Path):
    """Found as a 17-frame botocore NoRegionError: the role's STS client had no region."""
    role = aws.create_role("scanner")
    env = {k: v for k, v in aws.env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(env, HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "config"),
                 AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"))
    run = subprocess.run(
        [sys.executable, "-m", "connector", "discover", "--role-arn", role, "--regions", "us-east-1",
         "--output", "json"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False,
    )
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stderr
    assert "eks-us-east-1-search" in {s["socket_name"] for s in json.loads(run.stdout)}
