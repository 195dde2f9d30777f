"""Embedded AWS for the sandbox and the tests: moto's server on 127.0.0.1 (a free port), with EKS
clusters whose DescribeCluster points at the sandbox's emulated API servers.

moto keeps its state in process-wide globals, which is what makes the extras here possible: after
creating a cluster through the EKS API, its endpoint and CA are set on moto's in-memory cluster (moto
invents random ones), and token verification reads the secrets of moto's IAM access keys and STS
assumed-role credentials directly. It also means one EmbeddedAws per process at a time.

moto does not check request signatures and does not implement EKS access entries; the emulated API
servers do both of those jobs (verify_eks_token, aws-auth).
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar

import boto3
import requests
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.eks.models import Cluster as EksClusterModel
from moto.server import ThreadedMotoServer

from connector.aws.credentials import AwsCredentials
from connector.aws.token import AwsPrincipal
from connector.pki import generate_ca

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
# moto accepts any key; these are what clients that need no particular identity sign with.
ANONYMOUS_KEY_ID = "AKIASANDBOXANONYMOUS"
ANONYMOUS_SECRET = "sandbox-anonymous-secret"
EKS_SERVICE_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster-service-role"


class EmbeddedAws:
    """moto's server in a thread. Use as a context manager, or `start()` / `stop()`."""

    _active: ClassVar[EmbeddedAws | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self._endpoint_url: str | None = None
        # Making a boto3 client costs tens of milliseconds (it loads botocore's endpoint data).
        self._clients: dict[tuple[str, str, str], Any] = {}

    def __enter__(self) -> EmbeddedAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """`http://127.0.0.1:PORT`: AWS_ENDPOINT_URL for every client, and the STS origin of tokens."""
        if self._endpoint_url is None:
            raise RuntimeError("EmbeddedAws is not started")
        return self._endpoint_url

    def start(self) -> None:
        with EmbeddedAws._active_lock:
            if EmbeddedAws._active is not None:
                raise RuntimeError("another EmbeddedAws is running in this process (moto's state is global)")
            EmbeddedAws._active = self
        # werkzeug logs every request to stderr unless told otherwise; the sandbox has its own logs.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            self._server = server
            self._endpoint_url = f"http://{host}:{port}"
            # Start from nothing, whatever an earlier server or mock in this process left behind.
            requests.post(f"{self._endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._endpoint_url = None
        self._clients.clear()
        with EmbeddedAws._active_lock:
            if EmbeddedAws._active is self:
                EmbeddedAws._active = None

    def env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment for a process that should talk to this AWS (the connector, a CLI under test)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ANONYMOUS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": ANONYMOUS_SECRET,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str, region: str = "us-east-1", credentials: AwsCredentials | None = None) -> Any:
        """A boto3 client for this AWS, signing with `credentials`' static keys or anonymous ones."""
        key_id, secret = ANONYMOUS_KEY_ID, ANONYMOUS_SECRET
        if credentials is not None and credentials.access_key_id and credentials.secret_access_key:
            key_id, secret = credentials.access_key_id, credentials.secret_access_key.get_secret_value()
        key = (service, region, key_id)
        if key not in self._clients:
            self._clients[key] = boto3.session.Session().client(
                service,
                region_name=region,
                endpoint_url=self.endpoint_url,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        return self._clients[key]

    def create_user_credentials(self, user_name: str) -> AwsCredentials:
        """An IAM user with an access key: static credentials that credentials_lookup knows."""
        iam = self.client("iam")
        iam.create_user(UserName=user_name)
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
        return AwsCredentials(access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])

    def create_role(self, role_name: str) -> str:
        """An IAM role anyone in the account may assume; returns its ARN."""
        trust = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
            f'"Principal":{{"AWS":"arn:aws:iam::{ACCOUNT_ID}:root"}},"Action":"sts:AssumeRole"}}]}}'
        )
        role = self.client("iam").create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)
        return str(role["Role"]["Arn"])

    def create_eks_cluster(
        self,
        name: str,
        region: str,
        *,
        tags: dict[str, str] | None = None,
        endpoint: str | None = None,
        ca_pem: bytes | None = None,
        version: str = "1.31",
        authentication_mode: str = "API_AND_CONFIG_MAP",
        status: str = "ACTIVE",
        vpc_id: str | None = None,
    ) -> str:
        """Create a cluster through the EKS API, then make DescribeCluster report `endpoint`, `ca_pem`
        (a random CA when None), `authentication_mode`, `status` and `vpc_id`. Returns its ARN."""
        answer = self.client("eks", region).create_cluster(
            name=name,
            version=version,
            roleArn=EKS_SERVICE_ROLE,
            resourcesVpcConfig={"subnetIds": [f"subnet-{secrets.token_hex(8)}"]},
            tags=tags or {},
        )
        shape_moto_cluster(
            name,
            region,
            endpoint=endpoint,
            ca_pem=ca_pem,
            authentication_mode=authentication_mode,
            status=status,
            vpc_id=vpc_id,
        )
        return str(answer["cluster"]["arn"])

    def set_cluster_status(self, name: str, region: str, status: str) -> None:
        """Move a cluster between states (CREATING -> ACTIVE, ACTIVE -> DELETING) as EKS would."""
        _moto_cluster(name, region).status = status

    def credentials_lookup(self, access_key_id: str) -> AwsPrincipal | None:
        """See `moto_credentials_lookup`; a method so the sandbox can hand `aws.credentials_lookup` around."""
        return moto_credentials_lookup(access_key_id)


def _moto_cluster(name: str, region: str) -> Any:
    return get_backend("eks")[ACCOUNT_ID][region].clusters[name]


def add_moto_cluster(name: str, region: str, *, tags: dict[str, str] | None = None, version: str = "1.31") -> str:
    """Put a cluster straight into moto's EKS backend, as CreateCluster would, and return its ARN.

    For bulk set-ups (benchmarks, pagination tests): moto's CreateCluster validates the role ARN by
    loading botocore's endpoint data on every call, ~65 ms a cluster. Describe it with
    shape_moto_cluster afterwards."""
    backend = get_backend("eks")[ACCOUNT_ID][region]
    if name in backend.clusters:
        raise ValueError(f"EKS cluster {name} already exists in {region}")
    cluster = EksClusterModel(
        name=name,
        role_arn=EKS_SERVICE_ROLE,
        resources_vpc_config={"subnetIds": [f"subnet-{secrets.token_hex(8)}"]},
        account_id=ACCOUNT_ID,
        region_name=region,
        aws_partition=backend.partition,
        version=version,
        tags=dict(tags or {}),
    )
    backend.clusters[name] = cluster
    backend.cluster_count += 1
    return str(cluster.arn)


def shape_moto_cluster(
    name: str,
    region: str,
    *,
    endpoint: str | None = None,
    ca_pem: bytes | None = None,
    authentication_mode: str = "API_AND_CONFIG_MAP",
    status: str = "ACTIVE",
    vpc_id: str | None = None,
) -> None:
    """Make moto's cluster `name` describe itself as given (moto invents its endpoint and a random,
    non-PEM CA, and knows no access config). Works for moto's server and its in-process mock alike."""
    cluster = _moto_cluster(name, region)
    pem = ca_pem if ca_pem is not None else generate_ca("kubernetes").cert_pem  # the CN EKS gives its CAs
    cluster.certificate_authority = {"data": base64.b64encode(pem).decode("ascii")}
    if endpoint is not None:
        cluster.endpoint = endpoint
    cluster.access_config = {"authenticationMode": authentication_mode}
    cluster.status = status
    cluster.resources_vpc_config = {
        **(cluster.resources_vpc_config or {}),
        "vpcId": vpc_id or f"vpc-{secrets.token_hex(8)}",
    }


def moto_credentials_lookup(access_key_id: str) -> AwsPrincipal | None:
    """The secret and owner of an access key moto issued: an STS assumed-role key (with its session
    token, until it expires) or an active IAM user key. None for any other key. Reads moto's state,
    so it serves moto's server and its in-process mock alike."""
    now = datetime.now(UTC)
    for per_account in list(get_backend("sts").values()):
        for backend in list(per_account.values()):
            role = backend.get_assumed_role_from_access_key(access_key_id)
            if role is not None:
                if role.expiration.replace(tzinfo=UTC) <= now:
                    return None
                return AwsPrincipal(role.secret_access_key, role.arn, role.session_token)
    for per_account in list(get_backend("iam").values()):
        for backend in list(per_account.values()):
            user = backend.get_user_from_access_key_id(access_key_id)
            if user is not None:
                key = user.get_access_key_by_id(access_key_id)
                return AwsPrincipal(key.secret_access_key, user.arn) if key.status == "Active" else None
    return None
