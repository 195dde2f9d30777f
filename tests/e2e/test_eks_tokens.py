"""EKS tokens are bound to their cluster: a token signed for `prod` (by connector.aws.token, with the
connector role's credentials) opens `prod`'s emulated API server and is refused by `staging`'s, as an
EKS endpoint refuses a token whose `x-k8s-aws-id` names another cluster."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
import requests

from connector.aws.token import EksTokenSigner

pytestmark = pytest.mark.e2e


@pytest.fixture
def connector_role_session(sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    """The connector role's credentials, assumed from the embedded AWS as the connector assumes them."""
    endpoint = sandbox["aws"]["endpoint_url"]
    # Where botocore sends STS calls, and so the STS origin tokens are signed for: the embedded AWS,
    # which is the one origin besides AWS's own that the emulated API servers accept.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    sts = boto3.client(
        "sts", region_name="us-east-1", endpoint_url=endpoint,
        aws_access_key_id="AKIAE2ETOKENPROBE", aws_secret_access_key="e2e-token-probe",  # moto checks no signature
    )  # fmt: skip
    assumed = sts.assume_role(RoleArn=sandbox["aws"]["connector_role_arn"], RoleSessionName="e2e-token-probe")
    credentials = assumed["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def _list_namespaces(cluster: dict[str, Any], token: str) -> requests.Response:
    return requests.get(
        f"{cluster['endpoint']}/api/v1/namespaces",
        headers={"Authorization": f"Bearer {token}"},
        verify=cluster["ca_file"],
        timeout=20,
    )


def test_a_token_for_prod_is_refused_by_stagings_api_server(
    sandbox: dict[str, Any], connector_role_session: boto3.Session
) -> None:
    prod, staging = sandbox["clusters"]["prod"], sandbox["clusters"]["staging"]
    for_prod = EksTokenSigner(connector_role_session, prod["region"]).sign("prod").token

    accepted = _list_namespaces(prod, for_prod)
    assert accepted.status_code == 200, accepted.text
    assert {"default", "dev", "kube-system"} <= {ns["metadata"]["name"] for ns in accepted.json()["items"]}

    refused = _list_namespaces(staging, for_prod)
    assert refused.status_code == 401, refused.text
    assert (refused.json()["kind"], refused.json()["reason"]) == ("Status", "Unauthorized")

    # The same credentials with a token for staging do open staging: only the cluster name differed.
    for_staging = EksTokenSigner(connector_role_session, staging["region"]).sign("staging").token
    assert _list_namespaces(staging, for_staging).status_code == 200
