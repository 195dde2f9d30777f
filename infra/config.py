"""The stack configuration of the Pulumi program, validated into typed models.

Keys live in the project's namespace (`eks-access-connector:clusters`, ...). Every value is
checked before any resource is declared, so a typo fails the preview with a message that names
the key (`stack config: connector.image: the tag 'latest' is refused ...`) instead of failing
half-way through `pulumi up`. Pure: no Pulumi import, so the rules are unit-tested directly.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from connector.aws.names import aws_region, eks_cluster_name
from connector.config import ConnectorConfig
from connector.configfile import validation_errors
from connector.kube.rbac import PolicyRule
from connector.model import StrictModel
from infra import iam_documents, manifests, rbac

DEFAULT_GROUP = "eks-access-connector"
DEFAULT_NAMESPACE = "eks-access-connector"

_ACM_ARN = re.compile(r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_K8S_VERSION = re.compile(r"^1\.\d{2}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


class StackConfigError(Exception):
    """The stack config is invalid; `errors` has one line per problem, each naming its key."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid stack configuration:\n  " + "\n  ".join(errors))


def _shorthand(key: str) -> BeforeValidator:
    """Let `rbac: create` stand for `rbac: {mode: create}` (and the same for other keyed sections)."""

    def wrap(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    return BeforeValidator(wrap)


def _k8s_name(value: str) -> str:
    if not _K8S_NAME.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes object name (lowercase letters, digits, '-' and '.')")
    return value


def _group(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ValueError(f"group {value!r} must be non-empty without surrounding spaces")
    if value.startswith("system:"):
        raise ValueError(
            f"group {value!r}: the system: prefix is reserved by Kubernetes (EKS access entries refuse it); "
            "use rbac: systemMasters for system:masters"
        )
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block like 203.0.113.0/24 ({exc})") from None
    return value


def _kubernetes_version(value: str) -> str:
    if not _K8S_VERSION.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes minor version like 1.31")
    return value


def _instance_type(value: str) -> str:
    if not _INSTANCE_TYPE.match(value):
        raise ValueError(f"{value!r} is not an EC2 instance type like t3.medium")
    return value


Region = Annotated[str, AfterValidator(aws_region)]
EksName = Annotated[str, AfterValidator(eks_cluster_name)]


class ClusterRef(StrictModel):
    """An existing EKS cluster. Without `region`, the stack's `aws:region`."""

    name: EksName
    region: Region | None = None


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class KubeconfigClusterRef(StrictModel):
    """Any Kubernetes cluster, reached through a context of a kubeconfig file: no AWS involved.

    Without `context`, the file's current-context. A relative path is relative to the project
    directory (where `pulumi` runs the program).
    """

    kubeconfig: Annotated[str, AfterValidator(_non_empty)]
    context: Annotated[str, AfterValidator(_non_empty)] | None = None

    @property
    def key(self) -> str:
        """How the stack names this cluster in outputs and messages."""
        return f"{self.kubeconfig}#{self.context}" if self.context else self.kubeconfig


def _cluster_kind(value: Any) -> str:
    """`kubeconfig` for an entry with a kubeconfig key, else an EKS cluster (by name)."""
    if isinstance(value, dict):
        return "[kubeconfig]" if "kubeconfig" in value else "[eks]"
    return "[kubeconfig]" if isinstance(value, KubeconfigClusterRef) else "[eks]"


ClusterEntry = Annotated[
    Annotated[ClusterRef, Tag("[eks]")] | Annotated[KubeconfigClusterRef, Tag("[kubeconfig]")],
    Discriminator(_cluster_kind),
    _shorthand("name"),
]


class RbacRule(StrictModel):
    """A custom ClusterRole rule, with the Kubernetes field names."""

    api_groups: list[str] = Field(default_factory=list, alias="apiGroups")
    resources: list[str] = Field(default_factory=list)
    resource_names: list[str] = Field(default_factory=list, alias="resourceNames")
    non_resource_urls: list[str] = Field(default_factory=list, alias="nonResourceURLs")
    verbs: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid(self) -> RbacRule:
        rbac.check_rule(self.policy_rule)
        return self

    @property
    def policy_rule(self) -> PolicyRule:
        return PolicyRule(
            verbs=tuple(self.verbs),
            api_groups=tuple(self.api_groups),
            resources=tuple(self.resources),
            resource_names=tuple(self.resource_names),
            non_resource_urls=tuple(self.non_resource_urls),
        )


class RbacConfig(StrictModel):
    """Which Kubernetes group the connector's role maps to, and what that group may do.

    - `create` (Border0's option c): a ClusterRole with `rules` bound to `kubernetesGroup`.
    - `existingGroup` (option b): map to `kubernetesGroup`, which the cluster admin has bound already.
    - `systemMasters` (option a): cluster-admin; allowed, with a warning.
    """

    mode: Literal["create", "existingGroup", "systemMasters"] = "create"
    kubernetes_group: Annotated[str, AfterValidator(_group)] | None = Field(default=None, alias="kubernetesGroup")
    rules: Literal["full", "read-only"] | list[RbacRule] = "full"

    @model_validator(mode="after")
    def _fits_mode(self) -> RbacConfig:
        if self.mode == "existingGroup" and self.kubernetes_group is None:
            raise ValueError("rbac mode existingGroup needs kubernetesGroup: the group your cluster already binds")
        if self.mode != "create" and "rules" in self.model_fields_set:
            raise ValueError(f"rules only apply to rbac mode create (this stack uses {self.mode}, which creates none)")
        if self.mode == "systemMasters" and self.kubernetes_group is not None:
            raise ValueError("rbac mode systemMasters maps to system:masters; remove kubernetesGroup")
        if isinstance(self.rules, list) and not self.rules:
            raise ValueError("rules: give at least one rule, or full / read-only")
        return self

    @property
    def group(self) -> str:
        if self.mode == "systemMasters":
            return rbac.SYSTEM_MASTERS
        return self.kubernetes_group or DEFAULT_GROUP

    @property
    def policy_rules(self) -> tuple[PolicyRule, ...]:
        """The ClusterRole's rules (only meaningful in mode create)."""
        if isinstance(self.rules, str):
            return rbac.PRESETS[self.rules]
        return tuple(rule.policy_rule for rule in self.rules)


class TrustConfig(StrictModel):
    """Who may assume the connector's role.

    `irsa`: the connector's service account via the home cluster's OIDC provider; `podIdentity`:
    EKS Pod Identity (plus the association); `ec2`: an instance profile for a connector on EC2;
    `principals`: the listed IAM role/user ARNs; `none`: no IAM role at all (clusters reached by
    kubeconfig, where the connector uses its service account).
    """

    mode: Literal["irsa", "podIdentity", "ec2", "principals", "none"]
    principals: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _principals(self) -> TrustConfig:
        if self.mode == "principals":
            iam_documents.principals_trust_policy(self.principals)
        elif self.principals:
            raise ValueError(f"principals only apply to trust mode principals, not {self.mode}")
        return self


class ServiceConfig(StrictModel):
    """How users reach the connector: an NLB (`LoadBalancer`) or only inside the cluster (`ClusterIP`)."""

    type: Literal["LoadBalancer", "ClusterIP"] = "LoadBalancer"
    scheme: Literal["internet-facing", "internal"] = "internet-facing"
    source_ranges: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list, alias="sourceRanges")

    @model_validator(mode="after")
    def _load_balancer_only(self) -> ServiceConfig:
        if self.type == "ClusterIP" and ({"scheme", "source_ranges"} & self.model_fields_set):
            raise ValueError("scheme and sourceRanges only apply to service type LoadBalancer")
        return self


class ConnectorTlsConfig(StrictModel):
    """The certificate users see: a kubernetes.io/tls Secret (e.g. from cert-manager) or an ACM certificate."""

    secret_name: Annotated[str, AfterValidator(_k8s_name)] | None = Field(default=None, alias="secretName")
    certificate_arn: str | None = Field(default=None, alias="certificateArn")

    @model_validator(mode="after")
    def _exactly_one(self) -> ConnectorTlsConfig:
        if (self.secret_name is None) == (self.certificate_arn is None):
            raise ValueError("set exactly one of secretName (a kubernetes.io/tls Secret) or certificateArn (ACM)")
        if self.certificate_arn is not None and not _ACM_ARN.match(self.certificate_arn):
            raise ValueError(f"{self.certificate_arn!r} is not an ACM certificate ARN")
        return self


class ConnectorSection(StrictModel):
    """The connector itself, deployed into the home cluster."""

    deploy: bool = True
    home_cluster: ClusterEntry | None = Field(default=None, alias="homeCluster")
    namespace: Annotated[str, AfterValidator(manifests.check_namespace)] = DEFAULT_NAMESPACE
    image: Annotated[str, AfterValidator(manifests.check_image)] | None = None
    replicas: int = Field(default=2, ge=1, le=50)
    service: Annotated[ServiceConfig, _shorthand("type")] = Field(default_factory=ServiceConfig)
    tls: ConnectorTlsConfig | None = None
    config: ConnectorConfig = Field(default_factory=ConnectorConfig)
    _raw_config: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw_config(cls, data: Any, handler: Any) -> ConnectorSection:
        # The Secret gets the config as the user wrote it, not a re-serialisation of the model.
        section = handler(data)
        if isinstance(data, dict):
            section._raw_config = copy.deepcopy(data.get("config") or {})
        return section

    @model_validator(mode="after")
    def _deployable(self) -> ConnectorSection:
        if not self.deploy:
            return self
        if self.image is None:
            raise ValueError("image is required to deploy the connector (a pinned tag or digest, never latest)")
        if self.service.type == "LoadBalancer" and self.tls is None and self.config.server.public_url is None:
            raise ValueError(
                "a LoadBalancer needs a certificate clients can verify: set tls (certificateArn or secretName), "
                "or config.server.public_url to the DNS name you point at the load balancer (the connector then "
                "makes its own CA and a certificate for that name)"
            )
        if self.replicas > 1 and self.tls is None:
            raise ValueError(
                f"with {self.replicas} replicas set tls (secretName or certificateArn): without it every pod "
                "makes its own CA and clients would see a different certificate per pod; or set replicas: 1"
            )
        return self

    @property
    def raw_config(self) -> dict[str, Any]:
        return copy.deepcopy(self._raw_config)


class RecordingsConfig(StrictModel):
    """Where exec session recordings go: `create` a bucket, an existing bucket's name, or `none`."""

    bucket: str = "none"
    prefix: str = iam_documents.DEFAULT_RECORDINGS_PREFIX
    retention_days: int = Field(default=365, ge=1, le=3650, alias="retentionDays")
    region: Region | None = None

    @model_validator(mode="after")
    def _valid(self) -> RecordingsConfig:
        if self.bucket not in ("create", "none"):
            iam_documents.check_bucket_name(self.bucket)
        iam_documents.check_recordings_prefix(self.prefix)
        if "retention_days" in self.model_fields_set and self.bucket != "create":
            raise ValueError("retentionDays applies to a bucket the stack creates (bucket: create)")
        if self.region is not None and self.bucket in ("create", "none"):
            raise ValueError("region applies to an existing bucket (bucket: NAME); a created bucket is in aws:region")
        return self

    @property
    def enabled(self) -> bool:
        return self.bucket != "none"


class CreateClusterConfig(StrictModel):
    """A new EKS cluster (pulumi-eks) in the stack's region, the connector's access declared in it."""

    name: EksName
    version: Annotated[str, AfterValidator(_kubernetes_version)] | None = None
    instance_type: Annotated[str, AfterValidator(_instance_type)] = Field(default="t3.medium", alias="instanceType")
    desired_capacity: int = Field(default=2, ge=1, le=100, alias="desiredCapacity")
    min_size: int = Field(default=1, ge=1, le=100, alias="minSize")
    max_size: int = Field(default=3, ge=1, le=100, alias="maxSize")

    @model_validator(mode="after")
    def _sizes(self) -> CreateClusterConfig:
        if not self.min_size <= self.desired_capacity <= self.max_size:
            raise ValueError(
                f"node group sizes must satisfy minSize <= desiredCapacity <= maxSize "
                f"(got {self.min_size}, {self.desired_capacity}, {self.max_size})"
            )
        return self


class StackConfig(StrictModel):
    """The whole stack configuration (the keys under the project's namespace)."""

    clusters: Literal["*"] | list[ClusterEntry] = Field(default_factory=list)
    regions: list[Region] = Field(default_factory=list)
    access_mode: Literal["auto", "aws-auth", "access-entry"] = Field(default="auto", alias="accessMode")
    rbac: Annotated[RbacConfig, _shorthand("mode")] = Field(default_factory=RbacConfig)
    trust: Annotated[TrustConfig, _shorthand("mode")] | None = None
    connector: ConnectorSection = Field(default_factory=ConnectorSection)
    recordings: Annotated[RecordingsConfig, _shorthand("bucket")] = Field(default_factory=RecordingsConfig)
    create_cluster: CreateClusterConfig | None = Field(default=None, alias="createCluster")

    @model_validator(mode="after")
    def _coherent(self) -> StackConfig:
        if self.clusters == [] and self.create_cluster is None:
            raise ValueError("nothing to grant access to: set clusters (names, or '*') and/or createCluster")
        if self.regions and self.clusters != "*":
            raise ValueError("regions is only used with clusters: '*' (give each listed cluster its own region)")
        if self.kubeconfig_mode:
            return self._kubeconfig_coherent()
        if isinstance(self.clusters, list):
            seen: set[tuple[str, str | None]] = set()
            for ref in self.eks_clusters:
                if (ref.name, ref.region) in seen:
                    raise ValueError(f"cluster {ref.name!r} is listed twice")
                seen.add((ref.name, ref.region))
        into_new_cluster = self.create_cluster is not None and self.connector.home_cluster is None
        if self.connector.deploy and self.connector.home_cluster is None and self.create_cluster is None:
            raise ValueError("connector.homeCluster is required to deploy the connector (or set createCluster)")
        mode = self.trust_mode
        if mode == "none":
            raise ValueError(
                "trust none creates no IAM role, so EKS clusters could not map it: it is for clusters reached "
                "by kubeconfig ({kubeconfig: PATH, context: NAME})"
            )
        if self.connector.deploy and mode not in ("irsa", "podIdentity"):
            raise ValueError(
                f"trust {mode} does not give the role to pods: an in-cluster connector needs trust irsa or "
                "podIdentity (ec2 and principals are for a connector outside the cluster: connector.deploy: false)"
            )
        if not self.connector.deploy and mode in ("irsa", "podIdentity"):
            raise ValueError(f"trust {mode} gives the role to the connector's pods, but connector.deploy is false")
        if into_new_cluster and self.connector.deploy and mode == "irsa":
            raise ValueError(
                "trust irsa cannot be used for a connector in the cluster this stack creates (the role would "
                "need the new cluster's OIDC provider, and the cluster's access entries need the role): "
                "use trust podIdentity"
            )
        return self

    def _kubeconfig_coherent(self) -> StackConfig:
        """A stack of clusters reached by kubeconfig: Kubernetes objects only, no AWS resource at all."""
        if self.clusters == "*":
            raise ValueError("clusters: '*' lists EKS clusters; list each kubeconfig cluster instead")
        entries = [*self.clusters, *([self.connector.home_cluster] if self.connector.home_cluster else [])]
        if any(isinstance(entry, ClusterRef) for entry in entries):
            raise ValueError(
                "EKS clusters (by name) and clusters reached by kubeconfig cannot be mixed in one stack: "
                "an EKS cluster maps the stack's IAM role, which a kubeconfig stack does not create"
            )
        keys = [ref.key for ref in self.kubeconfig_clusters]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"cluster {key!r} is listed twice")
        not_applicable = {
            "create_cluster": "createCluster makes an EKS cluster",
            "access_mode": "accessMode chooses between aws-auth and EKS access entries",
        }
        for field, why in not_applicable.items():
            if field in self.model_fields_set:
                raise ValueError(f"{why}; remove it for clusters reached by kubeconfig")
        if self.recordings.enabled:
            raise ValueError(
                "recordings.bucket needs the IAM role a kubeconfig stack does not create; keep recordings: none "
                "(the connector's own recordings settings, connector.config.recordings, still apply)"
            )
        if self.rbac.mode == "systemMasters":
            raise ValueError(
                "rbac systemMasters maps an IAM role to system:masters; for clusters reached by kubeconfig use "
                "rbac create (rules: full grants everything) or existingGroup"
            )
        if self.trust_mode != "none":
            raise ValueError(
                f"trust {self.trust_mode} gives an IAM role to the connector; clusters reached by kubeconfig use "
                "trust none (the connector reaches its home cluster with its service account)"
            )
        if self.connector.deploy and self.connector.home_cluster is None:
            raise ValueError(
                "connector.homeCluster is required to deploy the connector: {kubeconfig: PATH, context: NAME}"
            )
        return self

    @property
    def kubeconfig_mode(self) -> bool:
        """True when the clusters are reached by kubeconfig (any Kubernetes) rather than found in EKS."""
        entries = [*(self.clusters if isinstance(self.clusters, list) else []), self.connector.home_cluster]
        return any(isinstance(entry, KubeconfigClusterRef) for entry in entries)

    @property
    def eks_clusters(self) -> list[ClusterRef]:
        """The listed EKS clusters (none with clusters: '*', which the program looks up)."""
        listed = self.clusters if isinstance(self.clusters, list) else []
        return [entry for entry in listed if isinstance(entry, ClusterRef)]

    @property
    def kubeconfig_clusters(self) -> list[KubeconfigClusterRef]:
        listed = self.clusters if isinstance(self.clusters, list) else []
        return [entry for entry in listed if isinstance(entry, KubeconfigClusterRef)]

    @property
    def trust_mode(self) -> str:
        """The trust mode, defaulting to none for kubeconfig clusters, Pod Identity in a new cluster and IRSA
        in an existing one."""
        if self.trust is not None:
            return self.trust.mode
        if self.kubeconfig_mode:
            return "none"
        if not self.connector.deploy:
            raise ValueError("trust is required when connector.deploy is false: ec2 or principals")
        return "podIdentity" if self.connector.home_cluster is None else "irsa"

    @property
    def trust_principals(self) -> list[str]:
        return list(self.trust.principals) if self.trust is not None else []


def parse_stack_config(values: dict[str, Any], source: str = "stack config") -> StackConfig:
    """Validate the raw stack config values; raise StackConfigError with every problem found."""
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise StackConfigError(validation_errors(exc, source)) from None
