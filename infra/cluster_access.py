"""One target cluster: map the connector role to its Kubernetes group, and give the group its RBAC.

The mapping is an EKS access entry, or the connector's entry in `aws-auth` mapRoles (merged,
never replacing anyone else's); the RBAC is the ClusterRole + ClusterRoleBinding of
`infra.rbac` when the stack creates them. `system:masters` cannot be an access entry group
(EKS refuses `system:` groups), so it becomes the AmazonEKSClusterAdminPolicy association,
which is the access-entry form of the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from connector.kube.rbac import PolicyRule
from infra import rbac
from infra.aws_auth_resource import AwsAuthRoleMapping, AwsAuthRoleMappingArgs
from infra.kube_resources import declare

USERNAME = "eks-access-connector"
CLUSTER_ADMIN_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

AccessMethod = Literal["aws-auth", "access-entry"]


@dataclass
class ClusterAccessArgs:
    cluster_name: pulumi.Input[str]
    region: str
    method: AccessMethod
    role_arn: pulumi.Input[str]
    group: str
    rbac_rules: tuple[PolicyRule, ...] | None  # None: the stack creates no ClusterRole (existingGroup, systemMasters)
    kubeconfig: pulumi.Input[str] | None  # JSON; needed for aws-auth and for the RBAC objects
    partition: str = "aws"
    # A cluster this stack creates declares the mapping in its own (pulumi-eks) arguments.
    mapping_in_cluster: bool = False

    def __post_init__(self) -> None:
        edits_aws_auth = self.method == "aws-auth" and not self.mapping_in_cluster
        if self.kubeconfig is None and (edits_aws_auth or self.rbac_rules):
            raise ValueError("a kubeconfig is needed to edit aws-auth or to create the RBAC objects")


class ClusterAccess(pulumi.ComponentResource):
    """The connector's access to one cluster. `method` says how it was granted."""

    method: str

    def __init__(self, name: str, args: ClusterAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("eks-access-connector:index:ClusterAccess", name, None, opts)
        if not args.mapping_in_cluster:
            self._map_role(name, args)
        if args.rbac_rules:
            assert args.kubeconfig is not None  # ClusterAccessArgs refuses RBAC rules without a kubeconfig
            declare_rbac(self, name, rbac.group_access_manifests(args.rbac_rules, args.group), args.kubeconfig)
        self.method = args.method
        self.register_outputs({"method": self.method, "group": args.group})

    def _map_role(self, name: str, args: ClusterAccessArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        if args.method == "aws-auth":
            AwsAuthRoleMapping(
                name,
                AwsAuthRoleMappingArgs(
                    cluster=pulumi.Output.concat(args.region, "/", args.cluster_name),
                    kubeconfig=args.kubeconfig,
                    rolearn=args.role_arn,
                    username=USERNAME,
                    groups=[args.group],
                ),
                opts=child,
            )
            return
        entry = aws.eks.AccessEntry(
            name,
            cluster_name=args.cluster_name,
            principal_arn=args.role_arn,  # access entries take the ARN as IAM has it, path included
            kubernetes_groups=None if args.group == rbac.SYSTEM_MASTERS else [args.group],
            type="STANDARD",
            user_name=USERNAME,
            region=args.region,
            opts=child,
        )
        if args.group == rbac.SYSTEM_MASTERS:
            aws.eks.AccessPolicyAssociation(
                name,
                cluster_name=args.cluster_name,
                principal_arn=args.role_arn,
                policy_arn=CLUSTER_ADMIN_POLICY.format(partition=args.partition),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                region=args.region,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )


def declare_rbac(
    parent: pulumi.Resource,
    name: str,
    role_and_binding: list[dict],
    kubeconfig: pulumi.Input[str],
    context: str | None = None,
) -> None:
    """A ClusterRole and its ClusterRoleBinding (`infra.rbac`), through a provider for one cluster."""
    provider = k8s.Provider(name, kubeconfig=kubeconfig, context=context, opts=pulumi.ResourceOptions(parent=parent))
    role, binding = role_and_binding
    created_role = declare(f"{name}-role", role, pulumi.ResourceOptions(parent=parent, provider=provider))
    declare(
        f"{name}-binding", binding, pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=[created_role])
    )
