"""The kubeconfig cluster mode under `pulumi.runtime.set_mocks`: any Kubernetes, no AWS at all.

The mocks answer no AWS call (an unexpected call fails the test), so a kubeconfig stack that looked
anything up in AWS, or declared an AWS resource, fails here. The config rules of the mode are in
the second half: each problem is reported with its key before anything is declared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import manifests, rbac
from infra.config import StackConfigError, parse_stack_config
from tests.infra.test_program import (
    IMAGE,
    Mocks,
    Run,
    Warnings,
    connector_config,
    event_loop_for_pulumi,  # noqa: F401 - the autouse fixture Pulumi's test runner needs
    pytestmark,  # noqa: F401 - the same warning filters (pulumi_eks and pulumi_aws are imported)
    run_main,
)

SOURCE = "config eks-access-connector"


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str | None = None) -> str:
    """A kubeconfig file with one token user and a context per (name -> server)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": n, "cluster": {"server": s, "insecure-skip-tls-verify": True}} for n, s in contexts.items()
        ],
        "users": [{"name": "admin", "user": {"token": "t0ken"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "admin"}} for n in contexts],
    }
    if current:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    return write_kubeconfig(
        tmp_path / "kubeconfig", {"home": "https://10.0.0.1:6443", "edge": "https://10.0.0.2:6443"}, current="home"
    )


def connector(kubeconfig: str, **extra: Any) -> dict[str, Any]:
    """A connector deployed into the `home` context, reachable inside the cluster only."""
    return {
        "homeCluster": {"kubeconfig": kubeconfig, "context": "home"},
        "image": IMAGE,
        "service": "ClusterIP",
        "replicas": 1,
        **extra,
    }


def run(config: dict[str, Any]) -> Run:
    """The kubeconfig program under mocks; no AWS lookup is answered."""
    from infra import kubeconfig_stack

    mocks = Mocks(clusters={})
    warnings = Warnings()
    pulumi.runtime.set_mocks(mocks, project="eks-access-connector", stack="dev", preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        outputs = kubeconfig_stack.deploy(parse_stack_config(config, SOURCE), SOURCE)
        keys = list(outputs)
        return pulumi.Output.all(*[outputs[k] for k in keys]).apply(
            lambda values: resolved.update(zip(keys, values, strict=True))
        )

    program()
    return Run(mocks, resolved, warnings.messages)


def test_a_kubeconfig_stack_declares_no_aws_and_binds_the_connectors_service_account_at_home(kubeconfig: str) -> None:
    result = run(
        {
            "clusters": [{"kubeconfig": kubeconfig, "context": "home"}, {"kubeconfig": kubeconfig, "context": "edge"}],
            "connector": connector(kubeconfig),
        }
    )
    assert result.mocks.calls == []
    assert not [d.typ for d in result.mocks.declared if d.typ.startswith(("aws:", "eks:"))]
    providers = {d.name: d.inputs for d in result.mocks.of_type("pulumi:providers:kubernetes")}
    assert providers == {
        "kubeconfig-home": {"kubeconfig": kubeconfig, "context": "home"},
        "kubeconfig-edge": {"kubeconfig": kubeconfig, "context": "edge"},
        "eks-access-connector": {"kubeconfig": kubeconfig, "context": "home", "enableSecretMutable": "true"},
    }
    bindings = {d.name: d for d in result.mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")}
    home, edge = bindings["kubeconfig-home-binding"], bindings["kubeconfig-edge-binding"]
    assert home.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": manifests.APP_NAME, "namespace": "eks-access-connector"}
    ]
    assert home.inputs["metadata"]["name"] == rbac.IN_CLUSTER_NAME
    assert home.provider.startswith("urn:") and "kubeconfig-home" in home.provider
    assert edge.inputs["subjects"] == [{"kind": "Group", "name": "eks-access-connector", "apiGroup": rbac.RBAC_GROUP}]
    assert edge.inputs["metadata"]["name"] == rbac.GROUP_ACCESS_NAME
    roles = result.mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert [r.inputs["rules"] for r in roles] == [[rbac.rule_manifest(r) for r in rbac.FULL_ACCESS]] * 2
    account = result.mocks.one("kubernetes:core/v1:ServiceAccount")
    assert "annotations" not in account.inputs["metadata"] or not account.inputs["metadata"]["annotations"]
    deployment = result.mocks.one("kubernetes:apps/v1:Deployment")
    assert "eks-access-connector" in deployment.provider
    assert result.outputs["clusters"] == {
        f"{kubeconfig}#home": {
            "method": "service-account",
            "serviceAccount": "eks-access-connector/eks-access-connector",
        },
        f"{kubeconfig}#edge": {"method": "group", "group": "eks-access-connector"},
    }
    assert result.outputs["connectorUrl"] == "https://eks-access-connector.eks-access-connector.svc"
    assert "roleArn" not in result.outputs
    assert "state_dir: /var/lib/connector" in connector_config(result)


def test_the_current_context_is_used_when_none_is_given_and_existing_group_creates_no_rbac(kubeconfig: str) -> None:
    result = run(
        {
            "clusters": [{"kubeconfig": kubeconfig}],
            "rbac": {"mode": "existingGroup", "kubernetesGroup": "ops"},
            "connector": connector(kubeconfig),
        }
    )
    assert result.mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding") == []
    assert result.outputs["clusters"] == {
        kubeconfig: {"method": "service-account", "serviceAccount": "eks-access-connector/eks-access-connector"}
    }


def test_main_runs_a_kubeconfig_stack_without_reading_the_aws_environment(kubeconfig: str) -> None:
    mocks = run_main(
        {
            "eks-access-connector:clusters": json.dumps([{"kubeconfig": kubeconfig, "context": "edge"}]),
            "eks-access-connector:connector": json.dumps(connector(kubeconfig)),
        }
    )
    assert mocks.calls == []
    assert mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["replicas"] == 1
    binding = mocks.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert binding.inputs["subjects"][0]["kind"] == "Group"  # edge is not the home cluster


def problems(config: dict[str, Any]) -> str:
    with pytest.raises(StackConfigError) as err:
        run(config)
    return "\n".join(err.value.errors)


def test_a_missing_file_an_unknown_context_and_bad_yaml_name_their_key_before_anything_is_declared(
    kubeconfig: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nclusters:\n  - name: a\n   bad: indent\n")
    found = problems(
        {
            "clusters": [
                {"kubeconfig": str(tmp_path / "absent"), "context": "x"},
                {"kubeconfig": kubeconfig, "context": "nope"},
                {"kubeconfig": str(broken)},
            ],
            "connector": connector(kubeconfig, config={"server": {"listen": "0.0.0.0:1"}}),
        }
    )
    assert f"{SOURCE}: clusters[0]: {tmp_path / 'absent'}: file not found" in found
    assert (
        f"{SOURCE}: clusters[1]: context 'nope' not found in kubeconfig {kubeconfig} (available: edge, home)" in found
    )
    assert f"{SOURCE}: clusters[2]: {broken}:4: not valid YAML" in found
    assert f"{SOURCE}: connector.config.server.listen" in found  # every problem at once


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"trust": "irsa"},
            "trust irsa gives an IAM role to the connector; clusters reached by kubeconfig use trust none",
        ),
        ({"accessMode": "aws-auth"}, "accessMode chooses between aws-auth and EKS access entries; remove it"),
        ({"recordings": "create"}, "recordings.bucket needs the IAM role a kubeconfig stack does not create"),
        ({"rbac": "systemMasters"}, "rbac systemMasters maps an IAM role to system:masters"),
        ({"createCluster": {"name": "new"}}, "createCluster makes an EKS cluster; remove it"),
    ],
)
def test_what_needs_aws_is_refused_in_a_kubeconfig_stack(kubeconfig: str, extra: dict, expected: str) -> None:
    values = {"clusters": [{"kubeconfig": kubeconfig}], "connector": connector(kubeconfig), **extra}
    with pytest.raises(StackConfigError) as err:
        parse_stack_config(values, SOURCE)
    assert expected in "\n".join(err.value.errors)


def test_eks_and_kubeconfig_clusters_do_not_mix_and_trust_none_needs_kubeconfig_clusters(kubeconfig: str) -> None:
    with pytest.raises(StackConfigError) as err:
        parse_stack_config({"clusters": ["prod", {"kubeconfig": kubeconfig}], "connector": connector(kubeconfig)})
    assert "EKS clusters (by name) and clusters reached by kubeconfig cannot be mixed" in str(err.value)
    with pytest.raises(StackConfigError) as err:
        parse_stack_config({"clusters": ["prod"], "trust": "none", "connector": {"deploy": False}})
    assert "trust none creates no IAM role" in str(err.value)
    with pytest.raises(StackConfigError) as err:
        parse_stack_config(
            {
                "clusters": [{"kubeconfig": kubeconfig}],
                "connector": {"image": IMAGE, "service": "ClusterIP", "replicas": 1},
            }
        )
    assert "connector.homeCluster is required" in str(err.value)
    with pytest.raises(StackConfigError) as err:
        parse_stack_config({"clusters": [{"kubeconfig": kubeconfig, "contxt": "home"}], "connector": {"deploy": False}})
    assert f"{SOURCE}: clusters[0].contxt: unknown key" in str(err.value).replace("stack config", SOURCE)
    with pytest.raises(StackConfigError) as err:
        parse_stack_config(
            {"clusters": [{"kubeconfig": kubeconfig}, {"kubeconfig": kubeconfig}], "connector": {"deploy": False}}
        )
    assert f"cluster {kubeconfig!r} is listed twice" in str(err.value)
