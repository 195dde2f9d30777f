"""Test helpers for everything AWS: an environment that can never reach real AWS, moto clusters,
and botocore-level fault injection (throttling, failing regions) for discovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from connector.aws.credentials import AwsCredentials, make_session
from sandbox.aws import add_moto_cluster, shape_moto_cluster

TEST_KEY_ID = "AKIATESTTESTTESTTEST"
TEST_SECRET = "test-secret-access-key"


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS setting of the machine running the tests applies; static fake keys; no instance metadata."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """moto's in-process mock, in an isolated environment."""
    isolate_aws_env(monkeypatch, tmp_path)
    with mock_aws():
        yield


def create_mock_cluster(
    name: str,
    region: str,
    *,
    tags: dict[str, str] | None = None,
    status: str = "ACTIVE",
    endpoint: str | None = None,
    authentication_mode: str = "API_AND_CONFIG_MAP",
    version: str = "1.31",
) -> str:
    """A cluster in moto's in-process mock, described as EKS would describe it. Returns its ARN."""
    arn = add_moto_cluster(name, region, tags=tags, version=version)
    shape_moto_cluster(
        name,
        region,
        endpoint=endpoint or f"https://{name.lower()}.{region}.eks.example.test",
        authentication_mode=authentication_mode,
        status=status,
        vpc_id=f"vpc-{region}",
    )
    return arn


def client_error(code: str, operation: str, status: int = 400, message: str = "injected") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@dataclass
class FaultInjector:
    """Makes chosen AWS calls fail at the botocore layer, before they are sent.

    `fail(operation, region, *errors, cluster=None)` raises the errors one per matching call; the last
    one repeats for ever unless `then_succeed`. `calls` records every (operation, region, cluster) seen.
    """

    rules: dict[tuple[str, str, str | None], tuple[list[Exception], bool]] = field(default_factory=dict)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    def fail(
        self, operation: str, region: str, *errors: Exception, cluster: str | None = None, then_succeed: bool = False
    ) -> None:
        self.rules[(operation, region, cluster)] = (list(errors), then_succeed)

    def session_factory(self) -> Callable[[AwsCredentials | None], boto3.Session]:
        def factory(credentials: AwsCredentials | None) -> boto3.Session:
            session = make_session(credentials)
            session.events.register("before-parameter-build", self._before_call)
            return session

        return factory

    def _before_call(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        region = context.get("client_region", "")
        cluster = params.get("name") if model.name == "DescribeCluster" else None
        self.calls.append((model.name, region, cluster))
        for key in ((model.name, region, cluster), (model.name, region, None)):
            if key in self.rules:
                errors, then_succeed = self.rules[key]
                if not errors:
                    return
                raise errors.pop(0) if len(errors) > 1 or then_succeed else errors[0]
