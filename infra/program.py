"""The Pulumi program: from a validated StackConfig to the role, the cluster access and the connector.

Order of work: look every cluster up first (so a missing cluster or an impossible access mode fails
the preview with all problems listed), then build the connector config and check it, then
declare the resources. Everything the connector config depends on is known at preview time (the
bucket name is derived from the account id), so the Secret's content is validated before any
change is made.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks

from connector.configfile import ConfigError
from connector.kube.rbac import PolicyRule
from infra import iam_documents, manifests, rbac
from infra.aws_auth import role_arn_without_path
from infra.cluster_access import CLUSTER_ADMIN_POLICY, USERNAME, ClusterAccess, ClusterAccessArgs
from infra.config import ClusterRef, StackConfig, StackConfigError
from infra.connector_config import ConnectorConfigConflict, RecordingsTarget, config_yaml, in_cluster_config
from infra.deployment import ConnectorDeployment, ConnectorDeploymentArgs, PodIdentityArgs
from infra.iam import ConnectorRole, ConnectorRoleArgs
from infra.kubeconfig import eks_kubeconfig
from infra.recordings import RecordingsBucket, RecordingsBucketArgs

ACCESS_ENTRY_MODES = ("API", "API_AND_CONFIG_MAP")
NAME = "eks-access-connector"


@dataclass(frozen=True)
class Environment:
    """Facts about where the stack runs, read once from Pulumi and AWS."""

    project: str
    stack: str
    region: str
    account_id: str
    partition: str
    aws_profile: str | None = None


@dataclass(frozen=True)
class ExistingCluster:
    """An EKS cluster as eks:DescribeCluster reports it."""

    name: str
    region: str
    endpoint: str
    ca_data: str
    authentication_mode: str
    oidc_issuer: str

    @property
    def key(self) -> str:
        return f"{self.region}/{self.name}"


def read_stack_config_values(project: str) -> dict[str, Any]:
    """Every key set in the project's config namespace (so that a misspelt key is reported, not ignored).

    Pulumi hands structured values over as JSON text and plain values as strings.
    """
    prefix = f"{project}:"
    raw = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if not key.startswith(prefix):
            continue
        try:
            values[key[len(prefix) :]] = json.loads(text)
        except (TypeError, ValueError):
            values[key[len(prefix) :]] = text
    return values


def read_environment() -> Environment:
    """The project, stack, region, account and partition this program deploys to."""
    identity = aws.get_caller_identity()
    return Environment(
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        region=aws.get_region().region,
        account_id=identity.account_id,
        partition=aws.get_partition().partition,
        aws_profile=pulumi.Config("aws").get("profile"),
    )


def recordings_bucket_name(project: str, stack: str, account_id: str) -> str:
    """A bucket name that is unique per account and stack, and known before anything is created."""
    suffix = f"-recordings-{account_id}"
    base = re.sub(r"[^a-z0-9-]+", "-", f"{project}-{stack}".lower()).strip("-")
    return iam_documents.check_bucket_name(base[: 63 - len(suffix)].rstrip("-") + suffix)


def _describe(name: str, region: str) -> ExistingCluster:
    info = aws.eks.get_cluster(name=name, region=region)
    access = info.access_configs[0].authentication_mode if info.access_configs else "CONFIG_MAP"
    oidcs = info.identities[0].oidcs if info.identities else []
    return ExistingCluster(
        name=name,
        region=region,
        endpoint=info.endpoint,
        ca_data=info.certificate_authorities[0].data,
        authentication_mode=access or "CONFIG_MAP",
        oidc_issuer=oidcs[0].issuer if oidcs else "",
    )


def _targets(cfg: StackConfig, env: Environment) -> list[ExistingCluster]:
    if cfg.clusters == "*":
        found = []
        for region in cfg.regions or [env.region]:
            found += [_describe(name, region) for name in sorted(aws.eks.get_clusters(region=region).names)]
        return found
    return [_describe(ref.name, ref.region or env.region) for ref in cfg.eks_clusters]


def access_method(access_mode: str, cluster: ExistingCluster) -> str:
    """aws-auth or access-entry for one cluster; ValueError when the cluster cannot honour the choice."""
    mode = cluster.authentication_mode
    if access_mode == "auto":
        return "access-entry" if mode in ACCESS_ENTRY_MODES else "aws-auth"
    if access_mode == "access-entry" and mode not in ACCESS_ENTRY_MODES:
        raise ValueError(
            f"cluster {cluster.key}: authentication mode {mode} has no access entries; "
            "set accessMode aws-auth (or auto), or switch the cluster to API_AND_CONFIG_MAP"
        )
    if access_mode == "aws-auth" and mode == "API":
        raise ValueError(
            f"cluster {cluster.key}: authentication mode API ignores aws-auth; set accessMode access-entry (or auto)"
        )
    return access_mode


def _kubeconfig(cluster: ExistingCluster, env: Environment) -> str:
    return json.dumps(
        eks_kubeconfig(cluster.name, cluster.region, cluster.endpoint, cluster.ca_data, profile=env.aws_profile)
    )


@dataclass(frozen=True)
class Plan:
    """Everything decided before a resource is declared: a plan exists only if the config is coherent."""

    targets: list[ExistingCluster]
    methods: dict[str, str]  # cluster key -> aws-auth | access-entry
    home: ExistingCluster | None  # None: the connector is not deployed, or goes into the new cluster
    recordings: RecordingsTarget | None
    trust_policy: dict[str, Any]
    config_text: str  # the connector config as deployed ("" when not deployed)


def _trust_policy(cfg: StackConfig, env: Environment, home: ExistingCluster | None) -> dict[str, Any]:
    mode = cfg.trust_mode
    if mode == "irsa":
        assert home is not None  # StackConfig refuses irsa without an existing home cluster
        if not home.oidc_issuer:
            raise ValueError(f"connector.homeCluster: cluster {home.key} has no OIDC issuer for IRSA")
        provider = aws.iam.get_open_id_connect_provider(url=home.oidc_issuer)
        return iam_documents.irsa_trust_policy(
            provider.arn, home.oidc_issuer, cfg.connector.namespace, manifests.APP_NAME
        )
    if mode == "podIdentity":
        return iam_documents.pod_identity_trust_policy()
    if mode == "ec2":
        return iam_documents.ec2_trust_policy(env.partition)
    return iam_documents.principals_trust_policy(cfg.trust_principals)


def plan(cfg: StackConfig, env: Environment, source: str) -> Plan:
    """Look every cluster up and build the connector config; StackConfigError lists every problem."""
    problems: list[str] = []
    targets = _targets(cfg, env)
    methods: dict[str, str] = {}
    for cluster in targets:
        try:
            methods[cluster.key] = access_method(cfg.access_mode, cluster)
        except ValueError as exc:
            problems.append(str(exc))
    home: ExistingCluster | None = None
    if cfg.connector.deploy and cfg.connector.home_cluster is not None:
        ref = cfg.connector.home_cluster
        assert isinstance(ref, ClusterRef)  # StackConfig keeps kubeconfig clusters out of an EKS stack
        key = f"{ref.region or env.region}/{ref.name}"
        home = next((c for c in targets if c.key == key), None) or _describe(ref.name, ref.region or env.region)
    recordings: RecordingsTarget | None = None
    if cfg.recordings.enabled:
        bucket = (
            recordings_bucket_name(env.project, env.stack, env.account_id)
            if cfg.recordings.bucket == "create"
            else cfg.recordings.bucket
        )
        recordings = RecordingsTarget(bucket, cfg.recordings.prefix, cfg.recordings.region or env.region)
    trust_policy: dict[str, Any] = {}
    try:
        trust_policy = _trust_policy(cfg, env, home)
    except ValueError as exc:
        problems.append(f"{source}: {exc}")
    config_text = connector_config_text(cfg, recordings, source, problems, stack_manages_iam=True)
    if problems:
        raise StackConfigError(problems)
    return Plan(targets, methods, home, recordings, trust_policy, config_text)


def connector_config_text(
    cfg: StackConfig, recordings: RecordingsTarget | None, source: str, problems: list[str], *, stack_manages_iam: bool
) -> str:
    """The connector config as deployed ("" when not deployed); its problems are appended to `problems`."""
    if not cfg.connector.deploy:
        return ""
    try:
        config = in_cluster_config(
            cfg.connector.raw_config,
            tls_from_secret=cfg.connector.tls is not None and cfg.connector.tls.secret_name is not None,
            recordings=recordings,
            stack_manages_iam=stack_manages_iam,
            source=source,
            key_prefix="connector.config.",
        )
        return config_yaml(config, f"{source}: connector.config (as deployed)")
    except ConnectorConfigConflict as exc:
        problems += exc.problems
    except ConfigError as exc:
        problems += exc.errors
    return ""


def warn_about_system_masters(cfg: StackConfig) -> None:
    if cfg.rbac.mode == "systemMasters":
        pulumi.log.warn(
            "rbac: systemMasters maps the connector to system:masters (cluster-admin) on every target cluster; "
            "prefer rbac: create, so the cluster's RBAC bounds what the connector can do"
        )


def _new_cluster(cfg: StackConfig, env: Environment, role_arn: pulumi.Output[str]) -> tuple[eks.Cluster, str]:
    """The pulumi-eks cluster, with the connector's access declared in the cluster's own arguments."""
    spec = cfg.create_cluster
    assert spec is not None
    method = "aws-auth" if cfg.access_mode == "aws-auth" else "access-entry"
    group = cfg.rbac.group
    mapping: dict[str, Any] = {}
    if method == "access-entry":
        entry = eks.AccessEntryArgs(
            principal_arn=role_arn,
            type=eks.AccessEntryType.STANDARD,
            username=USERNAME,
            kubernetes_groups=None if group == rbac.SYSTEM_MASTERS else [group],
            access_policies=(
                {
                    "cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=CLUSTER_ADMIN_POLICY.format(partition=env.partition),
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )
                }
                if group == rbac.SYSTEM_MASTERS
                else None
            ),
        )
        mapping = {"authentication_mode": eks.AuthenticationMode.API, "access_entries": {"connector": entry}}
    else:
        mapping = {
            "role_mappings": [
                eks.RoleMappingArgs(role_arn=role_arn.apply(role_arn_without_path), username=USERNAME, groups=[group])
            ]
        }
    cluster = eks.Cluster(
        spec.name,
        name=spec.name,
        version=spec.version,
        instance_type=spec.instance_type,
        desired_capacity=spec.desired_capacity,
        min_size=spec.min_size,
        max_size=spec.max_size,
        **mapping,
    )
    return cluster, method


def deploy(cfg: StackConfig, env: Environment, source: str = "stack config") -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs (also exported).

    `source` names the configuration in error messages.
    """
    decided = plan(cfg, env, source)
    warn_about_system_masters(cfg)
    recordings = decided.recordings
    if recordings is not None and cfg.recordings.bucket == "create":
        RecordingsBucket(
            "recordings",
            RecordingsBucketArgs(recordings.bucket, recordings.prefix, cfg.recordings.retention_days, env.partition),
        )
    statement = (
        iam_documents.recordings_statement(recordings.bucket, recordings.prefix, partition=env.partition)
        if recordings is not None
        else None
    )
    role = ConnectorRole(
        NAME,
        ConnectorRoleArgs(
            trust_policy=json.dumps(decided.trust_policy),
            policy=json.dumps(iam_documents.connector_policy(statement)),
            instance_profile=cfg.trust_mode == "ec2",
            tags={"app.kubernetes.io/name": NAME, "pulumi-stack": f"{env.project}/{env.stack}"},
        ),
    )
    rules = cfg.rbac.policy_rules if cfg.rbac.mode == "create" else None
    granted: dict[str, Any] = {}
    for cluster in decided.targets:
        method = decided.methods[cluster.key]
        ClusterAccess(
            f"{cluster.region}-{cluster.name}",
            ClusterAccessArgs(
                cluster_name=cluster.name,
                region=cluster.region,
                method=method,  # type: ignore[arg-type]
                role_arn=role.arn,
                group=cfg.rbac.group,
                rbac_rules=rules,
                kubeconfig=_kubeconfig(cluster, env) if (method == "aws-auth" or rules) else None,
                partition=env.partition,
            ),
        )
        granted[cluster.key] = {"method": method, "group": cfg.rbac.group}

    home: HomeCluster | None = None
    if decided.home is not None:
        home = HomeCluster(decided.home.name, decided.home.region, _kubeconfig(decided.home, env))
    if cfg.create_cluster is not None:
        new_home, method = _declare_new_cluster(cfg, env, role.arn, rules)
        granted[f"{env.region}/{cfg.create_cluster.name}"] = {
            "method": f"{method} (pulumi-eks)",
            "group": cfg.rbac.group,
        }
        home = home or new_home

    outputs: dict[str, Any] = {"roleArn": role.arn, "clusters": granted}
    if role.instance_profile_name is not None:
        outputs["instanceProfileName"] = role.instance_profile_name
    if recordings is not None:
        outputs["recordings"] = f"s3://{recordings.bucket}/{recordings.prefix}"
    if cfg.connector.deploy:
        assert home is not None  # StackConfig requires a home cluster or createCluster to deploy
        outputs.update(declare_connector(cfg, decided.config_text, home, role.arn))
    return export(outputs)


def export(outputs: dict[str, Any]) -> dict[str, Any]:
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


@dataclass(frozen=True)
class HomeCluster:
    """Where the connector runs; values are Outputs for a cluster this stack creates."""

    name: pulumi.Input[str]
    region: str
    kubeconfig: pulumi.Input[str]  # JSON, or (for a kubeconfig cluster) the file's path
    wait_for: tuple[pulumi.Resource, ...] = ()  # what must exist before the pods start
    context: str | None = None  # the kubeconfig's context; None: its current one


def _declare_new_cluster(
    cfg: StackConfig, env: Environment, role_arn: pulumi.Output[str], rules: tuple[PolicyRule, ...] | None
) -> tuple[HomeCluster, str]:
    """The new cluster, its RBAC objects, and (with Pod Identity) its agent add-on."""
    spec = cfg.create_cluster
    assert spec is not None
    cluster, method = _new_cluster(cfg, env, role_arn)
    described = aws.eks.get_cluster_output(
        name=spec.name, region=env.region, opts=pulumi.InvokeOutputOptions(depends_on=[cluster])
    )
    # certificate_authorities items are dicts (or dict subclasses), so index them by key.
    kubeconfig = pulumi.Output.all(described.endpoint, described.certificate_authorities).apply(
        lambda v: json.dumps(eks_kubeconfig(spec.name, env.region, v[0], v[1][0]["data"], profile=env.aws_profile))
    )
    if rules:
        ClusterAccess(
            f"{env.region}-{spec.name}",
            ClusterAccessArgs(
                cluster_name=described.name,
                region=env.region,
                method=method,  # type: ignore[arg-type]
                role_arn=role_arn,
                group=cfg.rbac.group,
                rbac_rules=rules,
                kubeconfig=kubeconfig,
                partition=env.partition,
                mapping_in_cluster=True,
            ),
        )
    wait_for: tuple[pulumi.Resource, ...] = ()
    if cfg.connector.deploy and cfg.connector.home_cluster is None and cfg.trust_mode == "podIdentity":
        # Pods get Pod Identity credentials from this agent; an existing cluster must run it already.
        agent = aws.eks.Addon(
            "eks-pod-identity-agent",
            cluster_name=described.name,
            addon_name="eks-pod-identity-agent",
            region=env.region,
            opts=pulumi.ResourceOptions(depends_on=[cluster]),
        )
        wait_for = (agent,)
    return HomeCluster(described.name, env.region, kubeconfig, wait_for), method


def declare_connector(
    cfg: StackConfig, config_text: str, home: HomeCluster, role_arn: pulumi.Output[str] | None
) -> dict[str, pulumi.Output[str]]:
    """The connector in its home cluster; returns the stack outputs that tell users where it is.

    `role_arn` is None in a stack without an IAM role (trust none)."""
    connector = cfg.connector
    settings = manifests.ConnectorManifestSettings(
        namespace=connector.namespace,
        image=connector.image or "",
        config_yaml=config_text,
        replicas=connector.replicas,
        service_type=connector.service.type,
        internal_load_balancer=connector.service.scheme == "internal",
        source_ranges=tuple(connector.service.source_ranges),
        tls_secret_name=connector.tls.secret_name if connector.tls else None,
        certificate_arn=connector.tls.certificate_arn if connector.tls else None,
        service_account_annotations=(
            {manifests.IRSA_ANNOTATION: role_arn} if role_arn is not None and cfg.trust_mode == "irsa" else {}
        ),
    )
    pod_identity = (
        PodIdentityArgs(cluster_name=home.name, region=home.region, role_arn=role_arn)
        if role_arn is not None and cfg.trust_mode == "podIdentity"
        else None
    )
    deployment = ConnectorDeployment(
        NAME,
        ConnectorDeploymentArgs(
            kubeconfig=home.kubeconfig,
            settings=settings,
            pod_identity=pod_identity,
            wait_for=home.wait_for,
            context=home.context,
        ),
    )
    url = connector_url(cfg, deployment.load_balancer_hostname)
    command = url.apply(lambda u: f"python -m connector client kubeconfig set --connector {u}" if u else "")
    return {"connectorUrl": url, "kubeconfigCommand": command}


def connector_url(cfg: StackConfig, hostname: pulumi.Output[str]) -> pulumi.Output[str]:
    """What users point their client at: the configured public URL, else the NLB, else the in-cluster name."""
    public = cfg.connector.config.server.public_url
    if public:
        return pulumi.Output.from_input(public)
    if cfg.connector.service.type == "ClusterIP":
        return pulumi.Output.from_input(f"https://{manifests.APP_NAME}.{cfg.connector.namespace}.svc")
    return hostname.apply(lambda h: f"https://{h}" if h else "")
