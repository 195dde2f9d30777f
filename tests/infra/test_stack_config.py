"""Stack configuration validation: every problem is reported with its key, before anything is declared."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from connector.config import ConfigError
from infra import manifests
from infra.config import StackConfigError, parse_stack_config
from infra.connector_config import (
    ConnectorConfigConflict,
    RecordingsTarget,
    config_yaml,
    in_cluster_config,
)

IMAGE = "ghcr.example/eks-access-connector:0.1.0"
HOME = {
    "homeCluster": "prod",
    "image": IMAGE,
    "tls": {"certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"},
}


def errors(values: dict[str, Any]) -> list[str]:
    with pytest.raises(StackConfigError) as err:
        parse_stack_config(values, "config eks-access-connector")
    return err.value.errors


def test_a_minimal_stack_and_its_defaults() -> None:
    cfg = parse_stack_config({"clusters": ["prod"], "connector": HOME})
    assert cfg.access_mode == "auto"
    assert cfg.rbac.mode == "create" and cfg.rbac.group == "eks-access-connector"
    assert cfg.rbac.policy_rules[0].verbs == ("*",)
    assert cfg.trust_mode == "irsa"
    assert cfg.connector.namespace == "eks-access-connector" and cfg.connector.replicas == 2
    assert cfg.connector.service.type == "LoadBalancer"
    assert not cfg.recordings.enabled


def test_shorthands() -> None:
    cfg = parse_stack_config(
        {
            "clusters": ["prod", {"name": "staging", "region": "us-west-2"}],
            "rbac": "systemMasters",
            "trust": "podIdentity",
            "recordings": "create",
            "connector": {**HOME, "service": "ClusterIP", "tls": None, "replicas": 1},
        }
    )
    assert [(c.name, c.region) for c in cfg.clusters] == [("prod", None), ("staging", "us-west-2")]
    assert cfg.rbac.group == "system:masters"
    assert cfg.trust_mode == "podIdentity"
    assert cfg.recordings.bucket == "create"
    assert cfg.connector.service.type == "ClusterIP"


def test_the_connector_config_is_kept_as_written() -> None:
    raw = {"policies": [], "server": {"public_url": "https://connector.example.com"}}
    cfg = parse_stack_config({"clusters": ["prod"], "connector": {**HOME, "config": raw}})
    assert cfg.connector.raw_config == raw
    assert cfg.connector.config.server.public_url == "https://connector.example.com"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"clusters": ["prod"], "acessMode": "auto", "connector": HOME}, "acessMode: unknown key"),
        ({"clusters": ["prod"], "accessMode": "manual", "connector": HOME}, "accessMode: "),
        ({"clusters": ["bad name"], "connector": HOME}, "clusters[0].name: 'bad name' is not an EKS cluster name"),
        ({"clusters": [{"name": "a", "region": "mars-1"}], "connector": HOME}, "clusters[0].region: 'mars-1'"),
        ({"clusters": ["a", "a"], "connector": HOME}, "cluster 'a' is listed twice"),
        ({"clusters": [], "connector": HOME}, "nothing to grant access to"),
        ({"clusters": ["a"], "regions": ["us-east-1"], "connector": HOME}, "regions is only used with clusters: '*'"),
        ({"clusters": ["a"], "connector": {**HOME, "image": "repo/connector:latest"}}, "connector.image: image"),
        ({"clusters": ["a"], "connector": {**HOME, "image": "repo/connector"}}, "has no tag"),
        ({"clusters": ["a"], "connector": {**HOME, "image": None}}, "image is required"),
        ({"clusters": ["a"], "connector": {**HOME, "namespace": "Prod"}}, "connector.namespace: namespace 'Prod'"),
        ({"clusters": ["a"], "connector": {**HOME, "replicas": 0}}, "connector.replicas: "),
        ({"clusters": ["a"], "connector": {**HOME, "tls": None}}, "a LoadBalancer needs a certificate"),
        (
            {
                "clusters": ["a"],
                "connector": {**HOME, "tls": None, "config": {"server": {"public_url": "https://c.example"}}},
            },
            "with 2 replicas set tls",
        ),
        ({"clusters": ["a"], "connector": {**HOME, "tls": {}}}, "set exactly one of secretName"),
        (
            {"clusters": ["a"], "connector": {**HOME, "tls": {"certificateArn": "arn:nope"}}},
            "not an ACM certificate ARN",
        ),
        (
            {"clusters": ["a"], "connector": {**HOME, "service": {"type": "ClusterIP", "scheme": "internal"}}},
            "only apply",
        ),
        ({"clusters": ["a"], "connector": {**HOME, "service": {"sourceRanges": ["10.0.0.1/8"]}}}, "not a CIDR block"),
        ({"clusters": ["a"], "connector": {**HOME, "config": {"policies": 3}}}, "connector.config.policies: "),
        ({"clusters": ["a"], "connector": {**HOME, "config": {"nope": 1}}}, "connector.config.nope: unknown key"),
        ({"clusters": ["a"], "connector": {**HOME, "homeCluster": None}}, "connector.homeCluster is required"),
        ({"clusters": ["a"], "rbac": "existingGroup", "connector": HOME}, "existingGroup needs kubernetesGroup"),
        ({"clusters": ["a"], "rbac": {"kubernetesGroup": "system:nodes"}, "connector": HOME}, "reserved"),
        (
            {"clusters": ["a"], "rbac": {"mode": "systemMasters", "rules": "full"}, "connector": HOME},
            "rules only apply",
        ),
        ({"clusters": ["a"], "rbac": {"rules": []}, "connector": HOME}, "at least one rule"),
        ({"clusters": ["a"], "rbac": {"rules": [{"verbs": ["get"]}]}, "connector": HOME}, "needs resources"),
        (
            {"clusters": ["a"], "rbac": {"rules": [{"verbs": ["get"], "resources": ["pods"]}]}, "connector": HOME},
            "needs apiGroups",
        ),
        ({"clusters": ["a"], "trust": "ec2", "connector": HOME}, "trust ec2 does not give the role to pods"),
        ({"clusters": ["a"], "trust": "irsa", "connector": {"deploy": False}}, "connector.deploy is false"),
        ({"clusters": ["a"], "connector": {"deploy": False}}, "trust is required when connector.deploy is false"),
        (
            {"clusters": ["a"], "trust": {"mode": "principals"}, "connector": {"deploy": False}},
            "at least one principal",
        ),
        (
            {"clusters": ["a"], "trust": {"mode": "ec2", "principals": ["x"]}, "connector": {"deploy": False}},
            "only apply",
        ),
        (
            {"createCluster": {"name": "new"}, "trust": "irsa", "connector": {**HOME, "homeCluster": None}},
            "podIdentity",
        ),
        ({"createCluster": {"name": "new", "minSize": 3, "desiredCapacity": 2}, "connector": HOME}, "minSize <="),
        ({"createCluster": {"name": "new", "version": "1.31.2"}, "connector": HOME}, "Kubernetes minor version"),
        ({"clusters": ["a"], "recordings": {"bucket": "Bad_Bucket"}, "connector": HOME}, "not a valid S3 bucket"),
        ({"clusters": ["a"], "recordings": {"bucket": "b-1", "retentionDays": 3}, "connector": HOME}, "retentionDays"),
        ({"clusters": ["a"], "recordings": {"bucket": "create", "region": "us-east-1"}, "connector": HOME}, "region"),
    ],
)
def test_errors_name_the_key(values: dict[str, Any], expected: str) -> None:
    found = errors(values)
    assert any(expected in line for line in found), found
    assert all(line.startswith("config eks-access-connector: ") for line in found)


def test_several_problems_are_reported_at_once() -> None:
    found = errors({"clusters": ["a"], "accessMode": "x", "connector": {**HOME, "image": "r:latest"}, "typo": 1})
    assert len(found) == 3


# --- the connector config as deployed ------------------------------------------------------------


def test_in_cluster_config_fills_the_deployment_settings() -> None:
    config = in_cluster_config(
        {"policies": [], "server": {"public_url": "https://c.example"}},
        tls_from_secret=True,
        recordings=RecordingsTarget("rec-bucket", "recordings/", "eu-west-1"),
        stack_manages_iam=True,
        source="s",
    )
    assert config["server"] == {
        "public_url": "https://c.example",
        "metrics_listen": "0.0.0.0:8442",  # the pod network, for Prometheus; the Service does not expose it
        "state_dir": manifests.STATE_DIR,
        "tls": {"cert_file": "/etc/connector-tls/tls.crt", "key_file": "/etc/connector-tls/tls.key"},
    }
    assert config["recordings"] == {
        "dir": "/var/lib/connector/recordings",
        "s3": {"bucket": "rec-bucket", "prefix": "recordings/", "region": "eu-west-1"},
    }
    text = config_yaml(config)
    assert yaml.safe_load(text) == config


@pytest.mark.parametrize(
    ("user", "kwargs", "expected"),
    [
        (
            {"server": {"listen": "0.0.0.0:9443"}},
            {},
            "s: connector.config.server.listen: the Deployment serves on port 8443",
        ),
        (
            {"server": {"metrics_listen": "0.0.0.0:9100"}},
            {},
            "s: connector.config.server.metrics_listen: the Deployment declares the metrics port 8442; "
            "remove metrics_listen, or set it to off",
        ),
        ({"server": {"state_dir": "/data"}}, {}, "server.state_dir: /data is on the read-only root filesystem"),
        ({"server": {"tls": {"cert_file": "/a", "key_file": "/b"}}}, {"tls_from_secret": True}, "server.tls"),
        ({"audit": {"file": "/var/log/audit.log"}}, {}, "audit.file: /var/log/audit.log"),
        ({"recordings": {"dir": "/rec", "s3": {"bucket": "mine"}}}, {}, "recordings.s3: the connector role may only"),
        (
            {"recordings": {"dir": "/var/lib/connector/r", "s3": {"bucket": "x-1"}}},
            {"recordings": RecordingsTarget("b-1", "r/", "us-east-1")},
            "recordings.s3: the stack sets it",
        ),
        ({"recordings": {"dir": "/recordings"}}, {}, "recordings.dir: /recordings is on the read-only"),
    ],
)
def test_in_cluster_config_conflicts(user: dict, kwargs: dict, expected: str) -> None:
    options = {"tls_from_secret": False, "recordings": None, "stack_manages_iam": True, **kwargs}
    with pytest.raises(ConnectorConfigConflict) as err:
        in_cluster_config(user, source="s", key_prefix="connector.config.", **options)
    assert any(expected in problem for problem in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("given", "kept"),
    [("127.0.0.1:8442", "127.0.0.1:8442"), ("off", "off"), (False, False), (None, None)],
)  # fmt: skip
def test_a_metrics_listen_on_the_declared_port_or_off_is_kept(given: object, kept: object) -> None:
    config = in_cluster_config(
        {"server": {"metrics_listen": given}}, tls_from_secret=False, recordings=None, stack_manages_iam=False,
        source="s",
    )  # fmt: skip
    assert config["server"]["metrics_listen"] == kept
    config_yaml(config)


def test_paths_under_the_writable_volumes_are_accepted() -> None:
    config = in_cluster_config(
        {"audit": {"file": "/var/lib/connector/audit.log"}, "recordings": {"dir": "/tmp/rec"}},
        tls_from_secret=False,
        recordings=None,
        stack_manages_iam=False,
        source="s",
    )
    assert config["audit"]["file"] == "/var/lib/connector/audit.log"


def test_config_yaml_is_checked_with_the_connectors_loader() -> None:
    with pytest.raises(ConfigError) as err:
        config_yaml({"server": {"listen": "nope"}}, "rendered")
    assert err.value.errors[0].startswith("rendered:")
