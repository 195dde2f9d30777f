"""What a new EKS cluster already holds before anyone applies anything.

The namespaces kube-apiserver creates (`default`, `kube-system`, `kube-public`, `kube-node-lease`),
one worker node, and the bootstrap RBAC policy that non-admin users depend on: `cluster-admin` for
`system:masters`, discovery and self-reviews for every authenticated user, public info for
everyone, and the user-facing `view`/`edit`/`admin` roles (written out for the resources this
server serves rather than aggregated).
"""

from __future__ import annotations

from typing import Any

from sandbox.apiserver.strategy import NODE_IP, NODE_NAME

_DEFAULTS_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_RBAC = "rbac.authorization.k8s.io/v1"

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_CORE_READ = ["configmaps", "events", "pods", "pods/log", "pods/status", "serviceaccounts", "services",
              "services/status", "namespaces/status"]
_APPS = ["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status",
         "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale",
         "statefulsets/status"]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": _RBAC, "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(_DEFAULTS_LABELS), "annotations": dict(_AUTOUPDATE)},
            "rules": rules}


def _binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {"apiVersion": _RBAC, "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(_DEFAULTS_LABELS), "annotations": dict(_AUTOUPDATE)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups]}


def _view_rules() -> list[dict[str, Any]]:
    return [
        {"apiGroups": [""], "resources": _CORE_READ, "verbs": _READ},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
        {"apiGroups": ["apps"], "resources": _APPS, "verbs": _READ},
    ]


def _edit_rules() -> list[dict[str, Any]]:
    return [
        *_view_rules(),
        {"apiGroups": [""], "resources": ["pods/attach", "pods/exec", "pods/portforward"],
         "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["configmaps", "events", "pods", "secrets", "serviceaccounts",
                                          "services"], "verbs": _WRITE},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/scale", "replicasets",
                                              "replicasets/scale", "statefulsets", "statefulsets/scale"],
         "verbs": _WRITE},
    ]


def _admin_rules() -> list[dict[str, Any]]:
    return [
        *_edit_rules(),
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"],
         "verbs": _READ + _WRITE},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
    ]


def initial_objects(kubelet_version: str) -> list[dict[str, Any]]:
    """The objects to store into an empty cluster, in creation order."""
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                  for n in ("default", "kube-node-lease", "kube-public", "kube-system")]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "m5.large", "eks.amazonaws.com/nodegroup": "default"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "nodeInfo": {"kubeletVersion": kubelet_version, "containerRuntimeVersion": "containerd://1.7.22",
                         "operatingSystem": "linux", "architecture": "amd64", "osImage": "Amazon Linux 2023",
                         "kernelVersion": "6.1.0", "kubeProxyVersion": kubelet_version, "bootID": "", "machineID": "",
                         "systemUUID": ""},
            "capacity": {"cpu": "2", "memory": "7926444Ki", "pods": "29"},
            "allocatable": {"cpu": "1930m", "memory": "7236268Ki", "pods": "29"},
        },
    }
    discovery_urls = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                      "/readyz", "/version", "/version/"]
    public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    roles = [
        _cluster_role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                        {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        _cluster_role("system:discovery", [{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": public_urls, "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
        ]),
        _cluster_role("view", _view_rules()),
        _cluster_role("edit", _edit_rules()),
        _cluster_role("admin", _admin_rules()),
    ]
    bindings = [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 ["system:authenticated", "system:unauthenticated"]),
    ]
    return [*namespaces, node, *roles, *bindings]
