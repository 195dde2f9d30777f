"""The sandbox's demo world, as data: the fake AWS account's clusters, the demo users, the policies
the connector enforces for them, and what each cluster holds. Tests assert against the same values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.oidc import DemoUser

ACCOUNT_ID = "123456789012"  # moto's default account
CONNECTOR_ROLE = "eks-access-connector"
# The Kubernetes user name infra maps the connector's role to (infra.cluster_access.USERNAME, which is
# not imported here: that module loads the Pulumi AWS and Kubernetes providers, seconds of start-up).
CONNECTOR_USERNAME = "eks-access-connector"
NODE_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/eks-node-group"
KUBERNETES_GROUP = "eks-access-connector"
OIDC_CLIENT_ID = "eks-access-connector"
DISCOVERY_REGIONS = ("us-east-1", "eu-west-1", "us-west-2")


@dataclass(frozen=True)
class DemoCluster:
    name: str
    region: str
    tags: dict[str, str]
    version: str  # what the emulated API server reports
    real_minor: str  # the kube-apiserver minor it runs as a real control plane

    @property
    def socket(self) -> str:
        return f"eks-{self.region}-{self.name}"

    @property
    def exposed(self) -> bool:
        return self.tags.get("expose") == "true"


CLUSTERS = (
    DemoCluster("prod", "us-east-1", {"env": "prod", "expose": "true"}, "v1.31.4", "1.33"),
    DemoCluster("staging", "eu-west-1", {"env": "staging", "expose": "true"}, "v1.33.1", "1.29"),
    DemoCluster("scratch", "us-west-2", {"env": "scratch", "expose": "false"}, "v1.29.9", "1.33"),
)

PROD_SOCKET = CLUSTERS[0].socket

USERS = {
    "alice": DemoUser("alice", "alice@example.com", ("platform-admins",)),
    "bob": DemoUser("bob", "bob@example.com", ("developers",)),
    "carol": DemoUser("carol", "carol@example.com", ()),
}

POLICIES: list[dict[str, Any]] = [
    {
        "name": "platform-admins",
        "subjects": {"groups": ["platform-admins"]},
        "sockets": ["*"],
        "kubernetes": {},  # no `rules` key: everything on these sockets
        "console": {"sessions": "read", "audit": "read", "access_requests": "approve", "access": "read"},
    },
    {
        "name": "developers",
        "subjects": {"groups": ["developers"]},
        "sockets": ["eks-*"],
        "kubernetes": {
            "rules": [
                {
                    "api_groups": ["", "apps"],
                    "namespaces": ["default", "dev"],
                    "verbs": ["get", "list", "watch"],
                    "resources": ["pods", "pods/log", "deployments", "replicasets", "services", "configmaps", "events"],
                },
                {
                    "namespaces": ["dev"],
                    "verbs": ["create"],
                    "resources": ["pods/exec", "pods/attach", "pods/portforward"],
                },
                {  # the step-up: deleting a pod in dev is fine, with an approval
                    "namespaces": ["dev"],
                    "verbs": ["delete"],
                    "resources": ["pods"],
                    "requires_approval": True,
                },
            ]
        },
    },
    {
        "name": "prod-exec",
        "subjects": {"groups": ["developers"]},
        "sockets": [PROD_SOCKET],
        "grant_only": True,  # applies only while an approved prod-break-glass request grants it
        "kubernetes": {
            "rules": [
                {"namespaces": ["default"], "verbs": ["create"], "resources": ["pods/exec", "pods/attach"]},
            ]
        },
    },
]

# Just-in-time access: bob asks, alice approves, bob may exec in prod's default namespace until it expires.
ACCESS_REQUESTS: list[dict[str, Any]] = [
    {
        "name": "prod-break-glass",
        "requesters": {"groups": ["developers"]},
        "approvers": {"groups": ["platform-admins"]},
        "grants": ["prod-exec", "developers"],
        "max_duration": "1h",
        "require_reason": True,
    }
]


def _pod(name: str, namespace: str, app: str, image: str, *, port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "containers": [{"name": app, "image": image, "ports": [{"containerPort": port}]}],
            "serviceAccountName": "default",
        },
    }


def seed_objects(cluster: DemoCluster) -> list[dict[str, Any]]:
    """What a fresh cluster holds before the connector is mapped in (aws-auth maps only the nodes)."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("default", "dev", "kube-system")
    ]
    objects += [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
                },
            },
        },
        _pod("web-7d4b9c-x2k4q", "default", "web", "nginx:1.27", port=80),
        _pod("web-7d4b9c-p9z7m", "default", "web", "nginx:1.27", port=80),
        _pod("api-0", "dev", "api", "ghcr.io/example/api:2.3.1"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": "default"},
            "data": {"LOG_LEVEL": "info", "CLUSTER": cluster.name},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-password", "namespace": "default"},
            "type": "Opaque",
            "data": {"password": "c2FuZGJveC1vbmx5"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aws-auth", "namespace": "kube-system"},
            "data": {
                "mapRoles": (
                    f"- rolearn: {NODE_ROLE_ARN}\n"
                    "  username: system:node:{{EC2PrivateDNSName}}\n"
                    "  groups:\n"
                    "    - system:bootstrappers\n"
                    "    - system:nodes\n"
                )
            },
        },
    ]
    return objects
