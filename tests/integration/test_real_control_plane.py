"""The real control plane's pieces against a real kube-apiserver 1.33 (sandbox.controlplane): the
kubelet API answers only clients with a certificate of the cluster's CA, the token webhook refuses
hostile and unknown reviews (and the apiserver then answers 401), and a socket with
`impersonation_enabled` has each request decided a second time by the real apiserver's RBAC.

Needs the kube-apiserver binaries (tests.support.real_control_plane says when they are built or
skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes import client

from infra import manifests, render
from sandbox.controlplane.cluster import RealCluster
from sandbox.controlplane.seeding import api_client, create_objects
from tests.support import real_control_plane
from tests.support.proxy_harness import Cluster, ProxyHarness

real_cluster = real_control_plane.real_cluster  # the module's fixture


def _trusting(cluster: RealCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.ca_path))


async def test_the_kubelet_api_answers_only_certificates_of_the_clusters_ca(real_cluster: RealCluster) -> None:
    assert real_cluster.node is not None
    url = f"https://127.0.0.1:{real_cluster.node.port}/healthz"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, ssl=real_cluster.admin_ssl()) as response:
            assert (response.status, await response.text()) == (200, "ok")
        with pytest.raises((aiohttp.ClientConnectionError, aiohttp.ClientSSLError)):
            async with http.get(url, ssl=_trusting(real_cluster)) as response:
                await response.read()


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        pytest.param(b"not json", 400, "the body is not a JSON TokenReview", id="not-json"),
        pytest.param(b'{"kind": "Pod", "spec": {"token": "x"}}', 400, "the body is not a TokenReview with spec.token",
                     id="wrong-kind"),
        pytest.param(b'{"kind": "TokenReview", "spec": {"token": 7}}', 400,
                     "the body is not a TokenReview with spec.token", id="token-not-a-string"),
        pytest.param(b'{"kind": "TokenReview", "spec": {"token": "' + b"a" * 70000 + b'"}}', 413, None, id="huge"),
    ],
)
async def test_the_token_webhook_refuses_hostile_reviews(
    real_cluster: RealCluster, body: bytes, status: int, answer: str | None
) -> None:
    assert real_cluster.webhook is not None
    async with aiohttp.ClientSession() as http, http.post(
        real_cluster.webhook.url, data=body, ssl=_trusting(real_cluster)
    ) as response:
        assert response.status == status
        if answer is not None:
            assert await response.text() == answer


@pytest.mark.parametrize("token", ["not-an-eks-token", "k8s-aws-v1.bm90IGEgcHJlc2lnbmVkIFVSTA"])
async def test_a_token_the_webhook_does_not_accept_is_a_401(real_cluster: RealCluster, token: str) -> None:
    assert real_cluster.webhook is not None
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    async with aiohttp.ClientSession() as http:
        async with http.post(real_cluster.webhook.url, json=review, ssl=_trusting(real_cluster)) as response:
            status = (await response.json())["status"]
        assert status["authenticated"] is False and status["error"], status
        async with http.get(f"{real_cluster.url}/api/v1/namespaces", ssl=_trusting(real_cluster),
                            headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 401


def _impersonator_token(cluster: RealCluster) -> str:
    """A service-account token allowed only to impersonate: what an impersonating socket is given."""
    with api_client(cluster.admin_kubeconfig()) as api:
        create_objects(api, [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "connector", "namespace": "kube-system"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "impersonator"},
             "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "connector-impersonates"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
             "subjects": [{"kind": "ServiceAccount", "name": "connector", "namespace": "kube-system"}]},
        ])
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        answer = client.CoreV1Api(api).create_namespaced_service_account_token("connector", "kube-system", request)
        return str(answer.status.token)


async def test_an_impersonating_socket_is_checked_by_the_clusters_rbac(
    real_cluster: RealCluster, tmp_path: Path
) -> None:
    token = _impersonator_token(real_cluster)
    cluster = Cluster(real_cluster.url, real_cluster.ca_pem, token)
    pods = "/sockets/prod/api/v1/namespaces/default/pods"
    async with ProxyHarness(tmp_path, socket={"impersonation_enabled": True}, cluster=cluster) as harness:
        # The connector's policy allows alice (group dev) to list pods in default; the cluster's RBAC,
        # seeing alice herself, has nothing that does: its 403 reaches her as it is.
        status, _, body = await harness.request("GET", pods, user="alice")
        assert status == 403, body
        message = json.loads(body)["message"]
        assert 'User "alice" cannot list resource "pods"' in message, message

        # (A Role of its own: the built-in `view` is aggregated by kube-controller-manager, which the
        # sandbox's control plane does not run.)
        with api_client(real_cluster.admin_kubeconfig()) as api:
            create_objects(api, [
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "pod-reader", "namespace": "default"},
                 "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "dev-reads-pods", "namespace": "default"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"}]},
            ])
        # The apiserver's RBAC sees a new binding through its informers: shortly, not at once.
        deadline = time.monotonic() + 10
        status, _, body = await harness.request("GET", pods, user="alice")
        while status == 403 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status, _, body = await harness.request("GET", pods, user="alice")
        assert status == 200, body
        assert json.loads(body)["kind"] == "PodList"
        # bob's policy (ops-all) allows everything; the cluster's RBAC still knows nothing of group ops.
        status, _, body = await harness.request("GET", "/sockets/prod/api/v1/namespaces/default/secrets", user="bob")
        assert status == 403 and 'User "bob" cannot list resource "secrets"' in json.loads(body)["message"], body


def test_every_manifest_of_infra_render_validates_in_the_real_apiserver(
    real_cluster: RealCluster, tmp_path: Path
) -> None:
    """`python -m infra render | kubectl apply --server-side --dry-run=server -f -`: the real apiserver
    runs its schema validation, defaulting and admission on each object without storing it. The
    namespace is created first for real, since a dry-run Namespace does not exist for the rest."""
    rendered = render.render("render-check", manifests.DEFAULT_IMAGE, None)
    expected = {f"{doc['kind'].lower()}/{doc['metadata']['name']}" for doc in yaml.safe_load_all(rendered)}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(real_cluster.admin_kubeconfig()))
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}

    def kubectl(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], input=stdin, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    created = kubectl("create", "namespace", "render-check")
    assert created.returncode == 0, created.stderr
    applied = kubectl("apply", "--server-side", "--dry-run=server", "-o", "name", "-f", "-", stdin=rendered)
    assert applied.returncode == 0, applied.stderr
    # kubectl names each object `kind.group/name` (`deployment.apps/x`, `secret/x` for the core group).
    names = {f"{kind.split('.')[0]}/{name}" for kind, name in (line.split("/", 1) for line in applied.stdout.split())}
    assert names == expected
    # A dry run stores nothing: the Deployment the apiserver just validated does not exist.
    missing = kubectl("get", "deployment", "-n", "render-check", "-o", "name")
    assert (missing.returncode, missing.stdout) == (0, "")
