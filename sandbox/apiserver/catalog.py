"""The resources the emulated API server serves: what discovery advertises and what routing accepts.

The names, kinds, verbs, short names, categories and subresources are kube-apiserver 1.31's for the
resources the connector and its tests rely on. Only what is really served is listed: a client that
finds a resource in discovery must be able to use it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery lists it; `group`/`version` are set when its kind lives elsewhere
    (`deployments/scale` answers an `autoscaling/v1` Scale)."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = CRUD
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    # Field selector labels beyond metadata.name/metadata.namespace, mapped to the object path they
    # read (kube's per-type GetAttrs).
    field_labels: Mapping[str, str] = field(default_factory=dict)
    # metadata.generation counts spec changes (the apps types; core types leave it unset).
    generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)

    @property
    def storage_version_hash(self) -> str:
        """What kube-apiserver publishes so clients can tell storage version changes apart."""
        digest = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()


@dataclass(frozen=True)
class GroupInfo:
    """An API group with its served versions, preferred first."""

    name: str
    versions: tuple[str, ...]


_STATUS = ("get", "patch", "update")
_SCALE = Subresource("scale", "Scale", _STATUS, group="autoscaling", version="v1")

_POD_FIELDS = {
    "spec.nodeName": "spec.nodeName",
    "spec.restartPolicy": "spec.restartPolicy",
    "spec.schedulerName": "spec.schedulerName",
    "spec.serviceAccountName": "spec.serviceAccountName",
    "spec.hostNetwork": "spec.hostNetwork",
    "status.phase": "status.phase",
    "status.podIP": "status.podIP",
    "status.nominatedNodeName": "status.nominatedNodeName",
}
_EVENT_FIELDS = {
    "involvedObject.kind": "involvedObject.kind",
    "involvedObject.namespace": "involvedObject.namespace",
    "involvedObject.name": "involvedObject.name",
    "involvedObject.uid": "involvedObject.uid",
    "involvedObject.apiVersion": "involvedObject.apiVersion",
    "involvedObject.resourceVersion": "involvedObject.resourceVersion",
    "involvedObject.fieldPath": "involvedObject.fieldPath",
    "reason": "reason",
    "reportingComponent": "reportingComponent",
    "source": "source.component",
    "type": "type",
}

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, short_names=("cm",)),
    ResourceType("", "v1", "Event", "events", "event", True, short_names=("ev",), field_labels=_EVENT_FIELDS),
    ResourceType(
        "", "v1", "Namespace", "namespaces", "namespace", False,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        short_names=("ns",),
        subresources=(Subresource("status", "Namespace", _STATUS),),
        field_labels={"status.phase": "status.phase"},
    ),
    ResourceType(
        "", "v1", "Node", "nodes", "node", False, short_names=("no",),
        subresources=(Subresource("status", "Node", _STATUS),),
        field_labels={"spec.unschedulable": "spec.unschedulable"},
    ),
    ResourceType(
        "", "v1", "Pod", "pods", "pod", True, short_names=("po",), categories=("all",),
        subresources=(
            Subresource("attach", "PodAttachOptions", ("create", "get")),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("log", "Pod", ("get",)),
            Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
            Subresource("status", "Pod", _STATUS),
        ),
        field_labels=_POD_FIELDS,
    ),
    ResourceType("", "v1", "Secret", "secrets", "secret", True, field_labels={"type": "type"}),
    ResourceType(
        "", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, short_names=("sa",),
        subresources=(Subresource("token", "TokenRequest", CREATE_ONLY, group="authentication.k8s.io", version="v1"),),
    ),
    ResourceType(
        "", "v1", "Service", "services", "service", True, short_names=("svc",), categories=("all",),
        subresources=(Subresource("status", "Service", _STATUS),),
    ),
    ResourceType(
        "apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, short_names=("ds",), categories=("all",),
        subresources=(Subresource("status", "DaemonSet", _STATUS),), generation=True,
    ),
    ResourceType(
        "apps", "v1", "Deployment", "deployments", "deployment", True, short_names=("deploy",), categories=("all",),
        subresources=(_SCALE, Subresource("status", "Deployment", _STATUS)), generation=True,
    ),
    ResourceType(
        "apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, short_names=("rs",), categories=("all",),
        subresources=(_SCALE, Subresource("status", "ReplicaSet", _STATUS)), generation=True,
        field_labels={"status.replicas": "status.replicas"},
    ),
    ResourceType(
        "apps", "v1", "StatefulSet", "statefulsets", "statefulset", True, short_names=("sts",), categories=("all",),
        subresources=(_SCALE, Subresource("status", "StatefulSet", _STATUS)), generation=True,
    ),
    ResourceType("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview",
                 False, verbs=CREATE_ONLY),
    ResourceType("authentication.k8s.io", "v1beta1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview",
                 False, verbs=CREATE_ONLY),
    ResourceType("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
                 "selfsubjectaccessreview", False, verbs=CREATE_ONLY),
    ResourceType("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
                 "selfsubjectrulesreview", False, verbs=CREATE_ONLY),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding",
                 False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", True),
)

# kube-apiserver's group order (by group priority), preferred version first.
GROUPS: tuple[GroupInfo, ...] = (
    GroupInfo("apps", ("v1",)),
    GroupInfo("authentication.k8s.io", ("v1", "v1beta1")),
    GroupInfo("authorization.k8s.io", ("v1",)),
    GroupInfo("rbac.authorization.k8s.io", ("v1",)),
)

# Resources whose objects are stored (the reviews are computed per request).
REVIEW_KINDS = frozenset({"SelfSubjectReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview"})

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def resources_in(group: str, version: str) -> list[ResourceType]:
    return sorted((r for r in RESOURCES if r.group == group and r.version == version), key=lambda r: r.plural)


def group_info(name: str) -> GroupInfo | None:
    return next((g for g in GROUPS if g.name == name), None)


def is_stored(resource: ResourceType) -> bool:
    return resource.kind not in REVIEW_KINDS
