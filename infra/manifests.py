"""The connector's in-cluster manifests: Namespace, ServiceAccount, config Secret, Deployment, Service, PDB.

Pure builders returning plain dicts: the Pulumi component creates exactly these objects and
`python -m infra render` prints them, so there is one source of truth for what runs in a cluster.
The Deployment is hardened the way the restricted Pod Security Standard asks (non-root, read-only
root filesystem, every capability dropped, seccomp `RuntimeDefault`, no privilege escalation),
pins its image, and carries a checksum of its config so that a config change rolls the pods.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from connector import __version__
from connector.access import crd
from connector.proxy.config import DEFAULT_METRICS_LISTEN, parse_listen
from infra.rbac import RBAC_API_VERSION, RBAC_GROUP, rule_manifest

APP_NAME = "eks-access-connector"
PORT = 8443
# Prometheus metrics, plain HTTP on the pod network only: the Service never exposes this port.
METRICS_PORT = parse_listen(DEFAULT_METRICS_LISTEN).port
# The conventional annotations Prometheus' Kubernetes pod discovery is commonly configured to follow.
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
SERVICE_PORT = 443
CONFIG_DIR = "/etc/connector"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
TLS_DIR = "/etc/connector-tls"
STATE_DIR = "/var/lib/connector"
RUN_AS = 10001
CONFIG_CHECKSUM_ANNOTATION = "checksum/config"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-"

SELECTOR = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": "connector"}
LABELS = {**SELECTOR, "app.kubernetes.io/part-of": APP_NAME}

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_image(image: str) -> str:
    """Accept only an image pinned by digest or by an explicit tag other than `latest`.

    A moving tag makes two replicas of the "same" Deployment run different code, and a rollback
    restore nothing: the issue Border0's sample manifest has.
    """
    if not image or image != image.strip() or any(c.isspace() for c in image):
        raise ValueError(f"image {image!r} must be an image reference without spaces")
    if _DIGEST.search(image):
        return image
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError(f"image {image!r} has no tag: pin a version (repo:1.2.3) or a digest (repo@sha256:...)")
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        raise ValueError(f"image {image!r}: the tag 'latest' is refused; pin a version tag or a digest")
    if not _TAG.match(tag):
        raise ValueError(f"image {image!r}: {tag!r} is not a valid image tag")
    return image


def check_namespace(namespace: str) -> str:
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace {namespace!r} must be a DNS label (lowercase letters, digits and '-', max 63)")
    return namespace


DEFAULT_IMAGE = f"{APP_NAME}:{__version__}"


@dataclass(frozen=True)
class ConnectorManifestSettings:
    """Everything that differs between two installations of the connector in a cluster."""

    namespace: str
    image: str
    config_yaml: str
    replicas: int = 2
    service_type: str = "LoadBalancer"  # or "ClusterIP"
    internal_load_balancer: bool = False
    source_ranges: tuple[str, ...] = ()
    tls_secret_name: str | None = None  # a kubernetes.io/tls Secret the connector serves with
    certificate_arn: str | None = None  # an ACM certificate the NLB terminates TLS with
    # Values may be Pulumi Outputs (the role ARN), which Pulumi resolves inside the manifests.
    service_account_annotations: Mapping[str, Any] = field(default_factory=dict)
    # Only a connector that reaches its own cluster with its service account needs the token.
    automount_service_account_token: bool = False
    name: str = APP_NAME

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        check_image(self.image)
        if not 1 <= self.replicas <= 50:
            raise ValueError(f"replicas must be between 1 and 50, got {self.replicas}")
        if self.service_type not in ("LoadBalancer", "ClusterIP"):
            raise ValueError(f"service type must be LoadBalancer or ClusterIP, got {self.service_type!r}")


def config_checksum(settings: ConnectorManifestSettings) -> str:
    """What the pods' config is made of: a change here must roll them."""
    digest = hashlib.sha256(settings.config_yaml.encode())
    digest.update(f"\0tls={settings.tls_secret_name or ''}".encode())
    return digest.hexdigest()


def _metadata(settings: ConnectorManifestSettings, **extra: Any) -> dict[str, Any]:
    return {"name": settings.name, "namespace": settings.namespace, "labels": dict(LABELS), **extra}


def namespace(settings: ConnectorManifestSettings) -> dict[str, Any]:
    # The pod meets the restricted Pod Security Standard, so the namespace can enforce it.
    labels = {**LABELS, "pod-security.kubernetes.io/enforce": "restricted"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": settings.namespace, "labels": labels}}


def service_account(settings: ConnectorManifestSettings) -> dict[str, Any]:
    metadata = _metadata(settings)
    if settings.service_account_annotations:
        metadata["annotations"] = dict(settings.service_account_annotations)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        "automountServiceAccountToken": settings.automount_service_account_token,
    }


def access_request_manifests(settings: ConnectorManifestSettings) -> list[dict[str, Any]]:
    """The AccessRequest CRD (where access requests live when `access_store.kubernetes` is set) and a
    Role with its RoleBinding that let the connector's service account use them in its namespace."""
    name = f"{settings.name}-access-requests"
    rules = [rule_manifest(rule) for rule in crd.STORE_RULES]
    role = {"apiVersion": RBAC_API_VERSION, "kind": "Role", "metadata": _metadata(settings, name=name), "rules": rules}
    binding = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": _metadata(settings, name=name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": settings.name, "namespace": settings.namespace}],
    }
    return [crd.custom_resource_definition(), role, binding]


def config_secret(settings: ConnectorManifestSettings) -> dict[str, Any]:
    """The connector config lives in a Secret, not a ConfigMap: it may hold tokens and client secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(settings),
        "type": "Opaque",
        "stringData": {CONFIG_KEY: settings.config_yaml},
    }


def _probe(path: str, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "https", "scheme": "HTTPS"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }


def deployment(settings: ConnectorManifestSettings) -> dict[str, Any]:
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir: the root filesystem is read-only
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "secret": {"secretName": settings.name, "defaultMode": 0o440}},
        {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if settings.tls_secret_name:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": settings.tls_secret_name, "defaultMode": 0o440}})
    container = {
        "name": "connector",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve", "--config", CONFIG_PATH],
        "ports": [
            {"name": "https", "containerPort": PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "livenessProbe": _probe("/healthz", 10),
        "readinessProbe": _probe("/readyz", 5),
        "volumeMounts": mounts,
    }

    def spread(topology_key: str) -> dict[str, Any]:
        return {
            "maxSkew": 1,
            "topologyKey": topology_key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(SELECTOR)},
        }

    pod_spec = {
        "serviceAccountName": settings.name,
        "automountServiceAccountToken": settings.automount_service_account_token,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [spread("topology.kubernetes.io/zone"), spread("kubernetes.io/hostname")],
        "containers": [container],
        "volumes": volumes,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings),
        "spec": {
            "replicas": settings.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": dict(SELECTOR)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": dict(LABELS),
                    "annotations": {CONFIG_CHECKSUM_ANNOTATION: config_checksum(settings), **SCRAPE_ANNOTATIONS},
                },
                "spec": pod_spec,
            },
        },
    }


def service(settings: ConnectorManifestSettings) -> dict[str, Any]:
    """HTTPS on 443. As a LoadBalancer: an NLB through the AWS cloud provider every EKS cluster runs."""
    spec: dict[str, Any] = {
        "type": settings.service_type,
        "selector": dict(SELECTOR),
        "ports": [{"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}],
    }
    metadata = _metadata(settings)
    if settings.service_type == "LoadBalancer":
        annotations = {f"{LB_ANNOTATION}type": "nlb"}
        if settings.internal_load_balancer:
            annotations[f"{LB_ANNOTATION}internal"] = "true"
        if settings.certificate_arn:
            # The NLB terminates TLS with the ACM certificate and re-encrypts to the pods.
            annotations[f"{LB_ANNOTATION}ssl-cert"] = settings.certificate_arn
            annotations[f"{LB_ANNOTATION}ssl-ports"] = str(SERVICE_PORT)
            annotations[f"{LB_ANNOTATION}backend-protocol"] = "ssl"
        metadata["annotations"] = annotations
        spec["externalTrafficPolicy"] = "Local"
        if settings.source_ranges:
            spec["loadBalancerSourceRanges"] = list(settings.source_ranges)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def pod_disruption_budget(settings: ConnectorManifestSettings) -> dict[str, Any]:
    # maxUnavailable rather than minAvailable: with one replica, minAvailable 1 would block node drains.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(settings),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
    }


def connector_manifests(settings: ConnectorManifestSettings) -> list[dict[str, Any]]:
    """Every in-cluster object of the connector, in the order `kubectl apply` should create them."""
    return [
        namespace(settings),
        service_account(settings),
        *access_request_manifests(settings),
        config_secret(settings),
        deployment(settings),
        service(settings),
        pod_disruption_budget(settings),
    ]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config file in the Secret) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(c in value for c in "\r\t") and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, as `kubectl apply -f` reads it."""
    return "".join("---\n" + yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, width=1 << 16) for doc in documents)
