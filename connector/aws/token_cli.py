"""`python -m connector token`: print an EKS bearer token as a kubeconfig `ExecCredential`.

A drop-in for `aws eks get-token` in a kubeconfig `exec` section:

    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: python
      args: [-m, connector, token, --cluster-name, prod, --region, eu-west-1]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from connector.aws.credentials import AwsCredentials, make_session
from connector.aws.names import aws_region, eks_cluster_name
from connector.aws.token_format import EksTokenError
from connector.aws.token_sign import EksToken, EksTokenSigner

EXIT_FAILED = 1
EXIT_USAGE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-name", required=True, help="the EKS cluster's name")
    parser.add_argument("--region", required=True, help="the cluster's region (its STS endpoint signs the token)")
    parser.add_argument("--role-arn", help="assume this IAM role first")
    parser.add_argument("--external-id", help="external id for --role-arn")
    parser.add_argument("--session-name", help="role session name for --role-arn")
    parser.add_argument("--profile", help="use this profile of the shared AWS config instead of the default chain")


def exec_credential(token: EksToken) -> dict[str, Any]:
    """The `client.authentication.k8s.io/v1beta1` ExecCredential kubectl reads from an exec plugin."""
    return {
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {
            "expirationTimestamp": token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "token": token.token,
        },
    }


def run(args: argparse.Namespace) -> int:
    try:
        eks_cluster_name(args.cluster_name)
        aws_region(args.region)
        credentials = AwsCredentials(
            profile=args.profile, role_arn=args.role_arn, external_id=args.external_id, session_name=args.session_name
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = "".join(f"--{part}: ".replace("_", "-") for part in error["loc"][:1])
            print(f"token: {where}{error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        signer = EksTokenSigner(make_session(credentials, region=args.region), args.region)
        token = signer.sign(args.cluster_name)
    except EksTokenError as exc:
        print(f"token: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # botocore's errors (no profile, AssumeRole refused, ...) are all the user's to see
        print(f"token: cannot sign a token with {credentials.describe()}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(exec_credential(token)))
    return 0
