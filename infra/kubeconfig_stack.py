"""The program for clusters reached by kubeconfig (any Kubernetes, on-premises or not): no AWS at all.

`clusters: [{kubeconfig: PATH, context: NAME}]` and `connector.homeCluster` likewise, trust
`none`. Nothing is looked up in AWS and no AWS resource or provider is declared, so the stack
deploys with the Kubernetes provider alone. What each target gets:

- the home cluster (where the connector runs, when it is also a target): the ClusterRole bound to
  the connector's ServiceAccount, which is how the in-cluster connector authenticates there;
- any other target: the ClusterRole bound to `rbac.kubernetesGroup`, for credentials of yours whose
  identity carries that group (a client certificate with that organisation, an OIDC group).

Every kubeconfig file and context is read at preview time with the connector's own kubeconfig
reader, so a missing file, a YAML error (file:line) or an unknown context fails the preview
with its key, before anything is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from connector.upstream.kubeconfig import KubeconfigError, read_kubeconfig, select_context
from infra import manifests, rbac
from infra.cluster_access import declare_rbac
from infra.config import KubeconfigClusterRef, StackConfig, StackConfigError
from infra.program import HomeCluster, connector_config_text, declare_connector, export


@dataclass(frozen=True)
class KubeconfigCluster:
    """A kubeconfig entry of the stack config, resolved: the file exists and has the context."""

    key: str  # as the user wrote it (outputs name clusters by it)
    kubeconfig: str  # absolute path, which the Kubernetes provider reads
    context: str  # the given context, or the file's current-context
    server: str

    @property
    def resource_name(self) -> str:
        return f"kubeconfig-{self.context}"


@dataclass(frozen=True)
class KubeconfigPlan:
    targets: list[KubeconfigCluster]
    home: KubeconfigCluster | None
    config_text: str


def resolve(ref: KubeconfigClusterRef, where: str) -> KubeconfigCluster:
    """Read the file and pick the context; KubeconfigError names `where` (the stack config key)."""
    path = Path(ref.kubeconfig).expanduser().absolute()
    try:
        config = read_kubeconfig(path)
        if config is None:
            raise KubeconfigError(f"{path}: file not found")
        selected = select_context(config, ref.context)
    except KubeconfigError as exc:
        raise KubeconfigError(f"{where}: {exc}") from None
    context = ref.context or config.current_context
    return KubeconfigCluster(ref.key, str(path), context, selected.cluster.server)


def plan(cfg: StackConfig, source: str) -> KubeconfigPlan:
    """Resolve every kubeconfig entry and build the connector config; StackConfigError lists every problem."""
    problems: list[str] = []
    targets: list[KubeconfigCluster] = []
    for index, ref in enumerate(cfg.kubeconfig_clusters):
        try:
            targets.append(resolve(ref, f"{source}: clusters[{index}]"))
        except KubeconfigError as exc:
            problems.append(str(exc))
    home: KubeconfigCluster | None = None
    if cfg.connector.deploy:
        assert isinstance(cfg.connector.home_cluster, KubeconfigClusterRef)  # StackConfig's kubeconfig rules
        try:
            home = resolve(cfg.connector.home_cluster, f"{source}: connector.homeCluster")
        except KubeconfigError as exc:
            problems.append(str(exc))
    config_text = connector_config_text(cfg, None, source, problems, stack_manages_iam=False)
    names = [t.resource_name for t in targets]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(
            f"{source}: clusters: two entries use the context name {name.removeprefix('kubeconfig-')!r}; "
            "rename one of the contexts"
        )
    if problems:
        raise StackConfigError(problems)
    return KubeconfigPlan(targets, home, config_text)


def _same_cluster(a: KubeconfigCluster, b: KubeconfigCluster | None) -> bool:
    return b is not None and (a.kubeconfig, a.context) == (b.kubeconfig, b.context)


def deploy(cfg: StackConfig, source: str = "stack config") -> dict[str, Any]:
    """Declare the RBAC on every target and the connector in its home cluster; returns the stack outputs."""
    decided = plan(cfg, source)
    rules = cfg.rbac.policy_rules if cfg.rbac.mode == "create" else None
    granted: dict[str, Any] = {}
    for cluster in decided.targets:
        in_home = _same_cluster(cluster, decided.home)
        if in_home:
            subject = rbac.service_account_subject(manifests.APP_NAME, cfg.connector.namespace)
            granted[cluster.key] = {
                "method": "service-account",
                "serviceAccount": f"{subject['namespace']}/{subject['name']}",
            }
        else:
            subject = rbac.group_subject(cfg.rbac.group)
            granted[cluster.key] = {"method": "group", "group": cfg.rbac.group}
        if rules:
            name = rbac.IN_CLUSTER_NAME if in_home else rbac.GROUP_ACCESS_NAME
            KubeconfigClusterAccess(cluster, rbac.rbac_manifests(rules, subject, name, rbac.MANAGED_BY_PULUMI))
    outputs: dict[str, Any] = {"clusters": granted}
    if decided.home is not None:
        home = HomeCluster(decided.home.context, "", decided.home.kubeconfig, context=decided.home.context)
        outputs.update(declare_connector(cfg, decided.config_text, home, role_arn=None))
    return export(outputs)


class KubeconfigClusterAccess(pulumi.ComponentResource):
    """The connector's RBAC on one cluster reached by kubeconfig (groups its provider, role and binding)."""

    def __init__(
        self, cluster: KubeconfigCluster, role_and_binding: list[dict], opts: pulumi.ResourceOptions | None = None
    ):
        name = cluster.resource_name
        super().__init__("eks-access-connector:index:KubeconfigClusterAccess", name, None, opts)
        declare_rbac(self, name, role_and_binding, cluster.kubeconfig, cluster.context)
        self.register_outputs({"server": cluster.server})
