"""The Pulumi program under the real Pulumi engine, against a real kube-apiserver (kubeconfig mode).

The `pulumi` CLI and `pulumi-resource-kubernetes` are the ones `make pulumi-engine` builds
(sandbox.pulumi_engine); the program runs as an Automation API inline program, which runs the
repository's `__main__.py` (the file `pulumi up` runs) in this process. The state lives in a temp
directory (`pulumi login --local` there), nothing is downloaded, and the cluster is the module's
real kube-apiserver 1.33 (tests.support.real_control_plane).

That control plane runs no controllers (no kube-controller-manager): a Deployment never rolls out
and a Namespace is never finalized. A stack transformation therefore gives every Kubernetes object
`pulumi.com/skipAwait` (do not wait for a rollout) and a background deletion policy; these two
annotations are the only difference from what users deploy. A deleted Namespace stays
Terminating (its finalizer is the namespace controller's job), which the destroy check accepts.

Skips, saying why, when the engine is not built or the control plane binaries are missing.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi import automation as auto

from infra import manifests
from infra.aws_auth_resource import AwsAuthRoleMapping, AwsAuthRoleMappingArgs
from sandbox.controlplane.cluster import RealCluster
from sandbox.pulumi_engine import binaries as engine_binaries
from tests.infra.test_program import IMAGE
from tests.support import real_control_plane

real_cluster = real_control_plane.real_cluster  # the module's fixture

REPO = Path(__file__).resolve().parents[2]
PROJECT = "eks-access-connector"
NAMESPACE = "engine-check"
SKIP_AWAIT = {"pulumi.com/skipAwait": "true", "pulumi.com/deletionPropagationPolicy": "background"}
POLICY = {"name": "admins", "subjects": {"groups": ["platform"]}, "sockets": ["*"], "kubernetes": {}}

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def built() -> engine_binaries.Engine:
    found = engine_binaries.find()
    if found is None:
        pytest.skip("the Pulumi engine is not built: run `make pulumi-engine` (a cold build takes many minutes)")
    return found


def _skip_await(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Do not wait for controllers the test control plane does not run (see the module docstring)."""
    metadata = args.props.get("metadata")
    if not args.type_.startswith("kubernetes:") or not isinstance(metadata, dict):
        return None
    annotations = {**(metadata.get("annotations") or {}), **SKIP_AWAIT}
    return pulumi.ResourceTransformationResult({**args.props, "metadata": {**metadata, "annotations": annotations}},
                                               args.opts)  # fmt: skip


def program() -> None:
    """What `pulumi up` runs: the repository's __main__.py."""
    pulumi.runtime.register_stack_transformation(_skip_await)
    runpy.run_path(str(REPO / "__main__.py"), run_name="__pulumi__")


@dataclass
class Kube:
    kubeconfig: Path
    env: dict[str, str]

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                              env=self.env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    def get(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("get", *args, "-o", "json")

    def object(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        where = ["-n", namespace] if namespace else []
        done = self.get(kind, name, *where)
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        return json.loads(done.stdout)


@dataclass
class Engine:
    """Stacks of this test's project under the real engine, with a local backend in a temp directory."""

    options: auto.LocalWorkspaceOptions
    kube: Kube
    created: list[auto.Stack]

    def stack(self, name: str, program: auto.PulumiFn) -> auto.Stack:
        created = auto.create_stack(name, project_name=PROJECT, program=program, opts=self.options)
        self.created.append(created)
        return created


@pytest.fixture
def engine(built: engine_binaries.Engine, real_cluster: RealCluster, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:  # fmt: skip
    monkeypatch.delenv("PULUMI_IGNORE_AMBIENT_PLUGINS", raising=False)  # the built plugins are "ambient" ones
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(real_cluster.admin_kubeconfig()))
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{built.bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "engine-check",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_PYTHON_CMD": sys.executable,  # the dynamic provider launcher's Python
        "PYTHONPATH": str(REPO),
    }
    (tmp_path / "state").mkdir()
    backend = auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"])
    options = auto.LocalWorkspaceOptions(
        work_dir=str(tmp_path),
        env_vars=env,
        pulumi_home=env["PULUMI_HOME"],
        project_settings=auto.ProjectSettings(name=PROJECT, runtime="python", backend=backend),
        pulumi_command=auto.PulumiCommand(root=str(built.root), skip_version_check=True),
    )
    harness = Engine(options, Kube(kubeconfig, {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}), [])
    try:
        yield harness
    finally:
        for leftover in harness.created:  # a failed test must not leave objects for the next one
            try:
                leftover.destroy()
            except auto.CommandError:
                pass


def configure(stack: auto.Stack, kubeconfig: Path, **connector: Any) -> None:
    cluster = {"kubeconfig": str(kubeconfig), "context": "prod"}
    values = {
        "clusters": [cluster],
        "connector": {
            "homeCluster": cluster,
            "namespace": NAMESPACE,
            "image": IMAGE,
            "service": "ClusterIP",
            "replicas": 1,
            "config": {"policies": [POLICY]},
            **connector,
        },
    }
    stack.set_all_config({f"{PROJECT}:{k}": auto.ConfigValue(json.dumps(v)) for k, v in values.items()})


def created_objects(stack: auto.Stack) -> list[tuple[str, str | None, str]]:
    """(kind, namespace, name) of every Kubernetes object in the stack's state."""
    found = []
    for resource in stack.export_stack().deployment.get("resources", []):
        if resource["type"].startswith("kubernetes:") and not resource["type"].startswith("pulumi:providers"):
            metadata = resource["outputs"]["metadata"]
            found.append((resource["outputs"]["kind"], metadata.get("namespace"), metadata["name"]))
    return found


def changed(events: list[auto.EngineEvent]) -> dict[str, str]:
    """type -> op of every step that is not `same`."""
    steps = {}
    for event in events:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op != auto.OpType.SAME:
            steps[pre.metadata.type] = pre.metadata.op.value
    return steps


def test_preview_up_no_change_up_one_change_and_destroy_under_the_real_engine(engine: Engine) -> None:
    workspace_stack, kube = engine.stack("kubeconfig-mode", program), engine.kube
    # 1. A config error fails the preview with the key named, and nothing is created.
    configure(workspace_stack, kube.kubeconfig, image=f"{IMAGE.split(':')[0]}:latest")
    with pytest.raises(auto.CommandError) as err:
        workspace_stack.preview()
    assert f"config {PROJECT}: connector.image" in str(err.value) and "'latest' is refused" in str(err.value)
    assert kube.object("namespace", NAMESPACE, None) is None

    # 2. up: every object of the stack exists in the real apiserver.
    configure(workspace_stack, kube.kubeconfig)
    workspace_stack.up()
    objects = created_objects(workspace_stack)
    assert sorted({kind for kind, _, _ in objects}) == [
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Namespace",
        "PodDisruptionBudget", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount",
    ]  # fmt: skip
    for kind, namespace, name in objects:
        assert kube.object(kind, name, namespace) is not None, (kind, namespace, name)
    binding = kube.object("clusterrolebinding", "eks-access-connector-in-cluster", None)
    assert binding is not None and binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "eks-access-connector", "namespace": NAMESPACE}
    ]
    deployment = kube.object("deployment", "eks-access-connector", NAMESPACE)
    assert deployment is not None
    checksum = deployment["spec"]["template"]["metadata"]["annotations"][manifests.CONFIG_CHECKSUM_ANNOTATION]

    # 3. The diff settles: a second up changes nothing.
    workspace_stack.up(expect_no_changes=True)

    # 4. One policy changed: the config Secret and the Deployment (its config checksum) change, nothing else.
    configure(workspace_stack, kube.kubeconfig, config={"policies": [{**POLICY, "subjects": {"groups": ["sre"]}}]})
    events: list[auto.EngineEvent] = []
    workspace_stack.up(on_event=events.append)
    assert changed(events) == {"kubernetes:core/v1:Secret": "update", "kubernetes:apps/v1:Deployment": "update"}
    deployment = kube.object("deployment", "eks-access-connector", NAMESPACE)
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][manifests.CONFIG_CHECKSUM_ANNOTATION] != checksum

    # 5. destroy: everything the stack created is gone (the Namespace at least Terminating, see above).
    workspace_stack.destroy()
    for kind, namespace, name in objects:
        left = kube.object(kind, name, namespace)
        if kind == "Namespace" and left is not None:
            assert left["metadata"].get("deletionTimestamp"), left
        else:
            assert left is None, (kind, namespace, name)
    assert created_objects(workspace_stack) == []


# Another team's entries, written the way people write them (a comment, odd indentation, flow lists).
FOREIGN_MAP_ROLES = """# nodes: managed by the platform team
- rolearn: arn:aws:iam::111122223333:role/nodes
  username: system:node:{{EC2PrivateDNSName}}
  groups:
      - system:bootstrappers
      - system:nodes
- {rolearn: "arn:aws:iam::111122223333:role/ops", username: ops, groups: [ops]}
"""
FOREIGN_MAP_USERS = "- userarn: arn:aws:iam::111122223333:user/alice\n  username: alice\n"
ROLE_ARN = "arn:aws:iam::123456789012:role/team/eks-access-connector-1a2b3c"


def test_the_aws_auth_applier_runs_as_a_dynamic_provider_inside_the_real_engine(engine: Engine) -> None:
    """The pickled applier in the engine's provider process: merge, a settled diff, and a destroy that
    gives `aws-auth` back byte for byte."""
    kube = engine.kube
    literals = [f"--from-literal=mapRoles={FOREIGN_MAP_ROLES}", f"--from-literal=mapUsers={FOREIGN_MAP_USERS}"]
    made = kube.kubectl("create", "configmap", "aws-auth", "-n", "kube-system", *literals)
    assert made.returncode == 0, made.stderr
    kubeconfig = json.dumps(yaml.safe_load(kube.kubeconfig.read_text()))

    def mapping() -> None:
        AwsAuthRoleMapping(
            "prod",
            AwsAuthRoleMappingArgs(
                cluster="local/prod",
                kubeconfig=kubeconfig,
                rolearn=ROLE_ARN,
                username="eks-access-connector",
                groups=["eks-access-connector"],
            ),
        )

    def aws_auth() -> dict[str, str]:
        found = kube.object("configmap", "aws-auth", "kube-system")
        assert found is not None
        return found["data"]

    try:
        workspace_stack = engine.stack("aws-auth", mapping)
        workspace_stack.up()
        data = aws_auth()
        assert data["mapUsers"] == FOREIGN_MAP_USERS
        assert data["mapRoles"].startswith(FOREIGN_MAP_ROLES)  # every other entry kept byte for byte
        added = yaml.safe_load(data["mapRoles"])[-1]
        assert added == {
            "rolearn": "arn:aws:iam::123456789012:role/eks-access-connector-1a2b3c",  # the path stripped
            "username": "eks-access-connector",
            "groups": ["eks-access-connector"],
        }
        workspace_stack.up(expect_no_changes=True)
        workspace_stack.destroy()
        assert aws_auth() == {"mapRoles": FOREIGN_MAP_ROLES, "mapUsers": FOREIGN_MAP_USERS}
    finally:
        kube.kubectl("delete", "configmap", "aws-auth", "-n", "kube-system", "--ignore-not-found")
