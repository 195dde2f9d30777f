"""`python -m infra render` output and the Pulumi program's group RBAC applied to one cluster keep
each other intact: found when the rendered binding replaced the mapped group's subject and every
user got `pods is forbidden: User "eks-access-connector" ...`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import rbac
from tests.support.apiserver import ADMIN_TOKEN, Kubectl, running_apiserver

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl on PATH")
REPO = Path(__file__).resolve().parents[2]
GROUP = "eks-access-connector"


def _kubeconfig(path: Path, server) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "home",
        "clusters": [{"name": "home", "cluster": {"server": server.url, "certificate-authority": str(server.ca_path)}}],
        "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
        "contexts": [{"name": "home", "context": {"cluster": "home", "user": "admin"}}],
    }))
    return path


async def _render(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "infra", "render", *args], cwd=REPO, capture_output=True, text=True,
        timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(kubeconfig.parent),
                         "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO)},
    )


async def test_render_and_the_pulumi_program_apply_to_one_cluster_without_replacing_each_other(tmp_path: Path):
    async with running_apiserver(tmp_path) as server:
        kubectl = Kubectl("kubectl", server, tmp_path)
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server)
        pulumi_objects = rbac.group_access_manifests(rbac.FULL_ACCESS, GROUP)
        await kubectl.ok("apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
                                                               "items": pulumi_objects}).encode())

        rendered = await _render(kubeconfig, "--check-context", "home")
        assert rendered.returncode == 0, rendered.stderr
        # The emulated apiserver serves no policy/v1 and no CRDs (a real one does, see
        # tests/integration/test_real_control_plane.py): everything else is applied.
        unserved = ("PodDisruptionBudget", "CustomResourceDefinition")
        documents = [d for d in yaml.safe_load_all(rendered.stdout) if d["kind"] not in unserved]
        await kubectl.ok("apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
                                                               "items": documents}).encode())

        bindings = json.loads(await kubectl.ok("get", "clusterrolebindings", "-l",
                                               "app.kubernetes.io/component=cluster-access", "-o", "json"))
        subjects = {b["metadata"]["name"]: b["subjects"] for b in bindings["items"]}
        assert subjects[rbac.GROUP_ACCESS_NAME] == [{"kind": "Group", "name": GROUP, "apiGroup": rbac.RBAC_GROUP}]
        assert subjects[rbac.IN_CLUSTER_NAME] == [
            {"kind": "ServiceAccount", "name": "eks-access-connector", "namespace": "eks-access-connector"}
        ]
        can = await kubectl.run("auth", "can-i", "list", "pods", "--all-namespaces", "--as", "eks-access-connector",
                                "--as-group", GROUP)
        assert can.stdout.strip() == "yes", can


async def test_render_refuses_to_replace_an_object_another_manager_owns(tmp_path: Path):
    async with running_apiserver(tmp_path) as server:
        kubectl = Kubectl("kubectl", server, tmp_path)
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server)
        taken = rbac.rbac_manifests(rbac.FULL_ACCESS, rbac.group_subject(GROUP), rbac.IN_CLUSTER_NAME,
                                    rbac.MANAGED_BY_PULUMI)
        await kubectl.ok("apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
                                                               "items": taken}).encode())
        refused = await _render(kubeconfig, "--check-context", "home")
        assert refused.returncode == 2 and refused.stdout == ""
        assert (f"ClusterRoleBinding {rbac.IN_CLUSTER_NAME} exists and is managed by pulumi" in refused.stderr)
        assert "Traceback" not in refused.stderr

        unknown = await _render(kubeconfig, "--check-context", "nowhere")
        assert unknown.returncode == 2 and "could not read the cluster of context 'nowhere'" in unknown.stderr
