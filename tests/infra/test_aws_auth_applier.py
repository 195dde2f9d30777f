"""The aws-auth applier (read-merge-write with retries) against the sandbox's emulated EKS API server.

The applier is synchronous (it runs in Pulumi's provider process), so each call runs in a thread
while the emulated API server serves on the test's event loop. Every write goes through the real
HTTP API: a concurrent edit is a second client writing between our read and our write, and the
409 it causes is the API server's own optimistic-concurrency answer.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from infra.aws_auth import AwsAuthError, RoleMapping
from infra.aws_auth_resource import (
    MAX_ATTEMPTS,
    AwsAuthApiError,
    AwsAuthProvider,
    KubernetesConfigMapApi,
    apply_role_mapping,
    remove_role_mapping,
)
from infra.kubeconfig import eks_kubeconfig
from sandbox.apiserver import EmulatedApiServer

ROLE = "arn:aws:iam::123456789012:role/platform/eks-access-connector"
OURS = RoleMapping(ROLE, "eks-access-connector", ("eks-access-connector",))
NODES = """- groups:
  - system:bootstrappers
  - system:nodes
  rolearn: arn:aws:iam::123456789012:role/prod-node-role
  username: system:node:{{EC2PrivateDNSName}}
-   rolearn: "arn:aws:iam::123456789012:role/karpenter"   # karpenter nodes
    username: 'system:node:{{EC2PrivateDNSName}}'
    groups: [system:bootstrappers, system:nodes]
"""
MAP_USERS = "- userarn: arn:aws:iam::123456789012:user/alice\n  username: alice\n  groups: [system:masters]\n"
LATE_NODE = "- rolearn: arn:aws:iam::123456789012:role/late-node\n  username: late\n  groups: [system:nodes]\n"


def no_sleep(_: float) -> None:
    """Retries back off with time.sleep; the tests need no real delay."""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmulatedApiServer]:
    server = EmulatedApiServer("prod", scratch_dir=tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def token_kubeconfig(server: EmulatedApiServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "prod",
                "cluster": {
                    "server": server.url,
                    "certificate-authority-data": base64.b64encode(server.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": server.bootstrap_token}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "admin"}}],
        "current-context": "prod",
    }


def api_for(server: EmulatedApiServer) -> KubernetesConfigMapApi:
    return KubernetesConfigMapApi(token_kubeconfig(server), "prod")


def seed_aws_auth(server: EmulatedApiServer, map_roles: str) -> None:
    server.store.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aws-auth", "namespace": "kube-system"},
            "data": {"mapRoles": map_roles, "mapUsers": MAP_USERS},
        }
    )


async def read(server: EmulatedApiServer) -> dict[str, Any] | None:
    return await asyncio.to_thread(api_for(server).read)


async def test_create_when_the_cluster_has_no_aws_auth(cluster: EmulatedApiServer) -> None:
    assert await read(cluster) is None
    outcome = await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    assert outcome.action == "created"
    configmap = await read(cluster)
    assert configmap is not None
    assert configmap["data"] == {
        "mapRoles": (
            "- rolearn: arn:aws:iam::123456789012:role/eks-access-connector\n"
            "  username: eks-access-connector\n"
            "  groups:\n"
            "  - eks-access-connector\n"
        )
    }


async def test_update_keeps_node_roles_byte_for_byte_and_is_idempotent(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES)
    outcome = await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    assert outcome.action == "updated"
    configmap = await read(cluster)
    assert configmap is not None
    assert configmap["data"]["mapRoles"].startswith(NODES)
    assert "role/eks-access-connector" in configmap["data"]["mapRoles"]
    assert "platform/" not in configmap["data"]["mapRoles"]
    assert configmap["data"]["mapUsers"] == MAP_USERS
    version = configmap["metadata"]["resourceVersion"]
    again = await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    assert again.action == "unchanged"
    unchanged = await read(cluster)
    assert unchanged is not None and unchanged["metadata"]["resourceVersion"] == version


async def test_update_to_another_group_and_role(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES)
    await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    renamed = RoleMapping("arn:aws:iam::123456789012:role/eks-access-connector-v2", "eks-access-connector", ("ops",))
    outcome = await asyncio.to_thread(apply_role_mapping, api_for(cluster), renamed, replaces=ROLE, sleep=no_sleep)
    assert outcome.action == "updated"
    configmap = await read(cluster)
    assert configmap is not None
    text = configmap["data"]["mapRoles"]
    assert text.startswith(NODES)
    assert "role/eks-access-connector\n" not in text and "eks-access-connector-v2" in text and "- ops" in text


class RacingApi:
    """Lets another client write aws-auth between our read and our first write (a real 409 follows)."""

    def __init__(self, api: KubernetesConfigMapApi, rival: KubernetesConfigMapApi, races: int = 1):
        self.api, self.rival, self.races = api, rival, races
        self.replaces = 0

    def read(self) -> dict[str, Any] | None:
        return self.api.read()

    def create(self, body: dict[str, Any]) -> None:
        self.api.create(body)

    def replace(self, body: dict[str, Any]) -> None:
        self.replaces += 1
        if self.races > 0:
            self.races -= 1
            theirs = self.rival.read()
            assert theirs is not None
            theirs["data"]["mapRoles"] += LATE_NODE
            self.rival.replace(theirs)
        self.api.replace(body)


async def test_a_concurrent_edit_is_retried_and_kept(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES)
    racing = RacingApi(api_for(cluster), api_for(cluster))
    outcome = await asyncio.to_thread(apply_role_mapping, racing, OURS, sleep=no_sleep)
    assert outcome.action == "updated" and outcome.attempts == 2 and racing.replaces == 2
    configmap = await read(cluster)
    assert configmap is not None
    text = configmap["data"]["mapRoles"]
    assert text.startswith(NODES + LATE_NODE)  # the rival's entry survived our write
    assert "role/eks-access-connector" in text


async def test_gives_up_after_the_last_attempt(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES)
    racing = RacingApi(api_for(cluster), api_for(cluster), races=MAX_ATTEMPTS)
    with pytest.raises(AwsAuthApiError, match=f"changed under every one of {MAX_ATTEMPTS} attempts"):
        await asyncio.to_thread(apply_role_mapping, racing, OURS, sleep=no_sleep)
    configmap = await read(cluster)
    assert configmap is not None and "eks-access-connector" not in configmap["data"]["mapRoles"]


async def test_destroy_removes_only_our_entry(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES)
    await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    outcome = await asyncio.to_thread(remove_role_mapping, api_for(cluster), ROLE, sleep=no_sleep)
    assert outcome.action == "updated"
    configmap = await read(cluster)
    assert configmap is not None
    assert configmap["data"] == {"mapRoles": NODES, "mapUsers": MAP_USERS}
    again = await asyncio.to_thread(remove_role_mapping, api_for(cluster), ROLE, sleep=no_sleep)
    assert again.action == "absent"


async def test_destroy_without_aws_auth_is_done(cluster: EmulatedApiServer) -> None:
    outcome = await asyncio.to_thread(remove_role_mapping, api_for(cluster), ROLE, sleep=no_sleep)
    assert outcome.action == "absent"
    assert await read(cluster) is None


async def test_unparseable_aws_auth_is_never_written(cluster: EmulatedApiServer) -> None:
    seed_aws_auth(cluster, NODES + "- rolearn: [broken\n")
    before = await read(cluster)
    with pytest.raises(AwsAuthError, match="not valid YAML"):
        await asyncio.to_thread(apply_role_mapping, api_for(cluster), OURS, sleep=no_sleep)
    with pytest.raises(AwsAuthError, match="not valid YAML"):
        await asyncio.to_thread(remove_role_mapping, api_for(cluster), ROLE, sleep=no_sleep)
    assert await read(cluster) == before


async def test_api_errors_name_the_cluster_and_the_reason(cluster: EmulatedApiServer) -> None:
    config = token_kubeconfig(cluster)
    config["users"][0]["user"]["token"] = "not-a-valid-token"
    api = KubernetesConfigMapApi(config, "eu-west-1/prod")
    with pytest.raises(AwsAuthApiError, match=r"cluster eu-west-1/prod: read kube-system/aws-auth failed: HTTP 401"):
        await asyncio.to_thread(apply_role_mapping, api, OURS, sleep=no_sleep)


async def test_the_dynamic_provider_lifecycle(cluster: EmulatedApiServer) -> None:
    """What Pulumi calls: create, diff, update (group change), delete; all through an exec credential plugin."""
    seed_aws_auth(cluster, NODES)
    # An exec plugin, as in the stack's kubeconfig (there it is `python -m connector token`).
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": cluster.bootstrap_token},
    }
    config = token_kubeconfig(cluster)
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
            "interactiveMode": "Never",
        }
    }
    props = {
        "cluster": "eu-west-1/prod",
        "kubeconfig": json.dumps(config),
        "rolearn": "arn:aws:iam::123456789012:role/eks-access-connector",
        "username": "eks-access-connector",
        "groups": ["eks-access-connector"],
    }
    provider = AwsAuthProvider()
    created = await asyncio.to_thread(provider.create, props)
    assert created.id == "eu-west-1/prod/kube-system/aws-auth/arn:aws:iam::123456789012:role/eks-access-connector"
    assert provider.diff(created.id, props, copy.deepcopy(props)).changes is False
    news = {**props, "groups": ["ops"]}
    diff = provider.diff(created.id, props, news)
    assert diff.changes is True and not diff.replaces
    assert provider.diff(created.id, props, {**props, "cluster": "us-east-1/other"}).replaces == ["cluster"]
    await asyncio.to_thread(provider.update, created.id, props, news)
    configmap = await read(cluster)
    assert configmap is not None and configmap["data"]["mapRoles"].startswith(NODES)
    assert configmap["data"]["mapRoles"].endswith("  groups:\n  - ops\n")
    await asyncio.to_thread(provider.delete, created.id, news)
    configmap = await read(cluster)
    assert configmap is not None and configmap["data"]["mapRoles"] == NODES


class FlakyCreate:
    """Someone creates aws-auth between our 404 and our create: the create gets 409 and we merge instead."""

    def __init__(self, server_api: KubernetesConfigMapApi, rival: KubernetesConfigMapApi):
        self.api, self.rival = server_api, rival

    def read(self) -> dict[str, Any] | None:
        return self.api.read()

    def create(self, body: dict[str, Any]) -> None:
        self.rival.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "aws-auth", "namespace": "kube-system"},
                "data": {"mapRoles": NODES},
            }
        )
        self.api.create(body)

    def replace(self, body: dict[str, Any]) -> None:
        self.api.replace(body)


async def test_a_racing_create_becomes_a_merge(cluster: EmulatedApiServer) -> None:
    outcome = await asyncio.to_thread(apply_role_mapping, FlakyCreate(api_for(cluster), api_for(cluster)), OURS)
    assert outcome.action == "updated" and outcome.attempts == 2
    configmap = await read(cluster)
    assert configmap is not None and configmap["data"]["mapRoles"].startswith(NODES)


async def test_stack_kubeconfig_authenticates_with_connector_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubeconfig the stack builds: `python -m connector token` signs an EKS token the cluster accepts."""
    from sandbox.aws import EmbeddedAws

    region = "eu-west-1"
    with EmbeddedAws() as aws:
        deployer = aws.create_user_credentials("deployer")
        user_arn = f"arn:aws:iam::{aws.client('sts').get_caller_identity()['Account']}:user/deployer"
        server = EmulatedApiServer(
            "prod",
            scratch_dir=tmp_path,
            credentials_lookup=aws.credentials_lookup,
            extra_sts_endpoints=(aws.endpoint_url,),
        )
        await server.start()
        try:
            server.store.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "aws-auth", "namespace": "kube-system"},
                    "data": {
                        "mapRoles": NODES,
                        "mapUsers": f"- userarn: {user_arn}\n  username: deployer\n  groups: [system:masters]\n",
                    },
                }
            )
            for key, value in aws.env(region).items():
                monkeypatch.setenv(key, value)
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", deployer.access_key_id or "")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", deployer.secret_access_key.get_secret_value())
            config = eks_kubeconfig("prod", region, server.url, base64.b64encode(server.ca_pem).decode())
            api = KubernetesConfigMapApi(config, f"{region}/prod")
            outcome = await asyncio.to_thread(apply_role_mapping, api, OURS, sleep=no_sleep)
            assert outcome.action == "updated"
            configmap = await asyncio.to_thread(api.read)
            assert configmap is not None and configmap["data"]["mapRoles"].startswith(NODES)
            assert any(seen.user == "deployer" for seen in server.requests_seen)
        finally:
            await server.stop()
