"""The connector role's IAM documents: exact shapes, and refusal of malformed inputs."""

from __future__ import annotations

import pytest

from infra import iam_documents as docs

ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"
PROVIDER = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"


def test_inline_policy_is_exactly_discovery_without_recordings() -> None:
    assert docs.connector_policy() == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DiscoverEksClusters",
                "Effect": "Allow",
                "Action": ["eks:ListClusters", "eks:DescribeCluster"],
                "Resource": "*",
            }
        ],
    }


@pytest.mark.parametrize(
    ("partition", "prefix", "resource"),
    [
        ("aws", "recordings/", "arn:aws:s3:::rec-bucket/recordings/*"),
        ("aws-cn", "", "arn:aws-cn:s3:::rec-bucket/*"),
        ("aws-us-gov", "team-a/sessions/", "arn:aws-us-gov:s3:::rec-bucket/team-a/sessions/*"),
    ],
)
def test_recordings_statement_is_put_object_on_the_prefix_only(partition: str, prefix: str, resource: str) -> None:
    statement = docs.recordings_statement("rec-bucket", prefix, partition=partition)
    assert statement == {
        "Sid": "WriteSessionRecordings",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": resource,
    }
    assert docs.connector_policy(statement)["Statement"][1] is statement


@pytest.mark.parametrize(
    ("bucket", "prefix", "message"),
    [
        ("Bad_Bucket", "r/", "not a valid S3 bucket name"),
        ("ab", "r/", "not a valid S3 bucket name"),
        ("xn--bucket", "r/", "not a valid S3 bucket name"),
        ("good-bucket", "/r/", "must not start with '/'"),
        ("good-bucket", "r/*", "'*'"),
        ("good-bucket", "r?", "'?'"),
    ],
)
def test_recordings_statement_refuses_what_would_widen_the_grant(bucket: str, prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("?", r"\?")):
        docs.recordings_statement(bucket, prefix)


def test_irsa_trust_is_bound_to_the_service_account_and_sts() -> None:
    assert docs.irsa_trust_policy(PROVIDER, ISSUER, "connector-ns", "connector-sa") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": PROVIDER},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789:sub": (
                            "system:serviceaccount:connector-ns:connector-sa"
                        ),
                        "oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


@pytest.mark.parametrize(
    ("provider", "issuer", "namespace", "message"),
    [
        ("arn:aws:iam::123456789012:role/x", ISSUER, "ns", "not an IAM OIDC provider ARN"),
        (PROVIDER, "https://oidc.eks.us-east-1.amazonaws.com/id/OTHER", "ns", "is not the provider of issuer"),
        (PROVIDER, ISSUER, "Bad_NS", "not a Kubernetes object name"),
        (PROVIDER, "http://x y", "ns", "not an OIDC issuer URL"),
    ],
)
def test_irsa_trust_refuses_mismatches(provider: str, issuer: str, namespace: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        docs.irsa_trust_policy(provider, issuer, namespace, "sa")


def test_pod_identity_trust() -> None:
    assert docs.pod_identity_trust_policy()["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ]


@pytest.mark.parametrize(("partition", "service"), [("aws", "ec2.amazonaws.com"), ("aws-cn", "ec2.amazonaws.com.cn")])
def test_ec2_trust(partition: str, service: str) -> None:
    assert docs.ec2_trust_policy(partition)["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    ]


def test_principals_trust() -> None:
    one = docs.principals_trust_policy(["arn:aws:iam::123456789012:role/ci"])
    assert one["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/ci"}
    many = docs.principals_trust_policy(
        [
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam::123456789012:role/a/ci",
            "arn:aws:iam::123456789012:user/bob",
        ]
    )
    assert many["Statement"][0]["Principal"] == {
        "AWS": ["arn:aws:iam::123456789012:role/a/ci", "arn:aws:iam::123456789012:user/bob"]
    }
    assert many["Statement"][0]["Action"] == "sts:AssumeRole"


@pytest.mark.parametrize(
    "principals",
    [[], ["arn:aws:sts::123456789012:assumed-role/x/y"], ["*"], ["arn:aws:iam::1234:role/x"]],
)
def test_principals_trust_refuses_anything_but_iam_principals(principals: list[str]) -> None:
    with pytest.raises(ValueError):
        docs.principals_trust_policy(principals)
