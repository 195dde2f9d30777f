"""The in-cluster manifests and `python -m infra render`, validated against the Kubernetes 1.31 schemas.

kubernetes-validate ships the JSON schemas in its package, so this runs offline; strict mode
refuses unknown fields, which is what catches a misspelt key in a builder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from connector.config import ConnectorConfig, load_model
from connector.kube.rbac import PolicyRule
from infra import manifests, rbac
from infra.render import render

K8S_VERSION = "1.31"
REPO = Path(__file__).resolve().parents[2]


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def settings(**overrides: Any) -> manifests.ConnectorManifestSettings:
    values: dict[str, Any] = {
        "namespace": "eks-access-connector",
        "image": "ghcr.example/eks-access-connector:0.1.0",
        "config_yaml": "server:\n  state_dir: /var/lib/connector\n",
    }
    return manifests.ConnectorManifestSettings(**{**values, **overrides})


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def test_the_validator_is_real() -> None:
    broken = manifests.deployment(settings())
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    unknown = manifests.service(settings())
    unknown["spec"]["loadBalancerSourceRange"] = ["10.0.0.0/8"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown)


def test_rendered_quick_start_validates_and_is_complete() -> None:
    docs = list(yaml.safe_load_all(render("eks-access-connector", manifests.DEFAULT_IMAGE, None)))
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Role",
        "RoleBinding",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    for doc in docs:
        validate(doc)
    kinds = by_kind(docs)
    # In-cluster: the connector's service account is what the ClusterRole is bound to.
    assert kinds["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "eks-access-connector", "namespace": "eks-access-connector"}
    ]
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is True
    config = load_model(ConnectorConfig, kinds["Secret"]["stringData"]["config.yaml"], "secret")
    assert "this-cluster" in config.sockets
    assert config.server.state_dir == manifests.STATE_DIR
    assert kinds["Service"]["spec"]["type"] == "ClusterIP"
    assert kinds["Deployment"]["spec"]["replicas"] == 1


def test_render_with_a_config_file_and_namespace(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("policies: []\nserver:\n  public_url: https://connector.example.com\n")
    docs = by_kind(list(yaml.safe_load_all(render("platform", "repo/connector@sha256:" + "a" * 64, config))))
    assert {
        d["metadata"].get("namespace")
        for k, d in docs.items()
        if k not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")
    } == {"platform"}
    assert docs["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "eks-access-connector",
                                               "namespace": "platform"}]  # fmt: skip
    assert docs["Namespace"]["metadata"]["name"] == "platform"
    text = docs["Secret"]["stringData"]["config.yaml"]
    assert "public_url: https://connector.example.com" in text and "state_dir: /var/lib/connector" in text


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", "render", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_render_cli(tmp_path: Path) -> None:
    ok = run_cli("--namespace", "conn", "--image", "repo/connector:1.2.3")
    assert ok.returncode == 0, ok.stderr
    docs = list(yaml.safe_load_all(ok.stdout))
    assert by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == "repo/connector:1.2.3"
    latest = run_cli("--image", "repo/connector:latest")
    assert latest.returncode == 2 and "'latest' is refused" in latest.stderr and not latest.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: []\nserver:\n  listen: nowhere\n")
    failed = run_cli("--config", str(bad))
    assert failed.returncode == 2
    assert f"{bad}:3: server.listen:" in failed.stderr
    conflict = tmp_path / "conflict.yaml"
    conflict.write_text("server:\n  listen: 0.0.0.0:9000\n")
    failed = run_cli("--config", str(conflict))
    assert failed.returncode == 2 and f"{conflict}: server.listen: the Deployment serves on port 8443" in failed.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"replicas": 3, "tls_secret_name": "connector-tls"},
        {"internal_load_balancer": True, "source_ranges": ("10.0.0.0/8", "192.0.2.0/24")},
        {"certificate_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"},
        {"service_type": "ClusterIP", "automount_service_account_token": True},
        {"service_account_annotations": {manifests.IRSA_ANNOTATION: "arn:aws:iam::123456789012:role/c"}},
    ],
    ids=["default", "tls-secret", "internal-lb", "acm", "clusterip", "irsa"],
)
def test_every_variant_validates(overrides: dict[str, Any]) -> None:
    for doc in manifests.connector_manifests(settings(**overrides)):
        validate(doc)


def test_deployment_hardening_meets_the_restricted_pod_security_standard() -> None:
    deployment = manifests.deployment(settings(tls_secret_name="connector-tls"))
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert container["args"] == ["serve", "--config", "/etc/connector/config.yaml"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/etc/connector",
        "/etc/connector-tls",
        "/var/lib/connector",
        "/tmp",
    }
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/"))
    assert manifests.namespace(settings())["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_metrics_port_is_declared_for_prometheus_and_never_on_the_service() -> None:
    deployment = manifests.deployment(settings())
    template = deployment["spec"]["template"]
    assert template["spec"]["containers"][0]["ports"] == [
        {"name": "https", "containerPort": 8443, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8442, "protocol": "TCP"},
    ]
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8442")
    assert annotations["prometheus.io/path"] == "/metrics"
    for service_type in ("LoadBalancer", "ClusterIP"):
        ports = manifests.service(settings(service_type=service_type))["spec"]["ports"]
        assert [p["targetPort"] for p in ports] == ["https"]


def test_load_balancer_annotations() -> None:
    arn = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    service = manifests.service(settings(certificate_arn=arn, internal_load_balancer=True))
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": arn,
        "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "443",
        "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "ssl",
    }
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert "annotations" not in manifests.service(settings(service_type="ClusterIP"))["metadata"]


def test_config_checksum_follows_the_config_and_the_tls_secret() -> None:
    base = manifests.config_checksum(settings())
    assert manifests.config_checksum(settings()) == base
    assert manifests.config_checksum(settings(config_yaml="policies: []\n")) != base
    assert manifests.config_checksum(settings(tls_secret_name="other")) != base
    assert manifests.config_checksum(settings(replicas=5)) == base


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("repo/connector:0.1.0", True),
        ("registry.example:5000/team/connector:v1.2", True),
        ("connector@sha256:" + "0" * 64, True),
        ("connector:latest@sha256:" + "0" * 64, True),
        ("connector:latest", False),
        ("connector", False),
        ("registry.example:5000/team/connector", False),
        ("connector:", False),
        ("connector: 1", False),
        ("", False),
    ],
)
def test_check_image(image: str, ok: bool) -> None:
    if ok:
        assert manifests.check_image(image) == image
    else:
        with pytest.raises(ValueError):
            manifests.check_image(image)


@pytest.mark.parametrize(
    "rules",
    [
        rbac.FULL_ACCESS,
        rbac.READ_ONLY,
        (
            PolicyRule(verbs=("get",), api_groups=("",), resources=("pods",), resource_names=("a",)),
            PolicyRule(verbs=("get",), non_resource_urls=("/healthz", "/metrics")),
        ),
    ],
)
def test_rbac_manifests_validate(rules: tuple[PolicyRule, ...]) -> None:
    for doc in rbac.group_access_manifests(rules, "eks-access-connector"):
        validate(doc)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (PolicyRule(api_groups=("*",), resources=("*",)), "at least one verb"),
        (PolicyRule(verbs=("get",)), "needs resources"),
        (PolicyRule(verbs=("get",), resources=("pods",)), "needs apiGroups"),
        (PolicyRule(verbs=("get",), resources=("pods",), api_groups=("",), non_resource_urls=("/x",)), "cannot also"),
        (PolicyRule(verbs=("get",), non_resource_urls=("healthz",)), "must start with '/'"),
    ],
)
def test_invalid_rbac_rules(rule: PolicyRule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rbac.group_access_manifests([rule], "eks-access-connector")


def test_group_subject_refuses_system_groups() -> None:
    with pytest.raises(ValueError, match="reserved"):
        rbac.group_subject("system:masters")


def test_foreign_objects_names_what_another_manager_owns() -> None:
    from infra.render import foreign_objects

    ours = rbac.in_cluster_manifests(rbac.FULL_ACCESS, "eks-access-connector", "eks-access-connector")
    pulumis = rbac.rbac_manifests(rbac.FULL_ACCESS, rbac.group_subject("g"), rbac.IN_CLUSTER_NAME, "pulumi")
    unlabelled = {"kind": "ClusterRole", "metadata": {"name": rbac.IN_CLUSTER_NAME}}
    assert foreign_objects(ours, ours) == []
    assert foreign_objects(ours, [unlabelled]) == []
    problems = foreign_objects(ours, pulumis)
    assert len(problems) == 2 and problems[0].startswith(f"ClusterRole {rbac.IN_CLUSTER_NAME} exists and is managed by")
    other_names = rbac.group_access_manifests(rbac.FULL_ACCESS, "g")
    assert foreign_objects(ours, other_names) == []
