"""The connector's IAM role: the trust policy of the chosen mode and an inline least-privilege policy.

The documents come from `infra.iam_documents` (shared with the sandbox); this component only
declares them. No managed policy is ever attached: the inline policy is the role's whole power.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws


@dataclass
class ConnectorRoleArgs:
    trust_policy: pulumi.Input[str]  # JSON, from infra.iam_documents (may wait on the cluster's OIDC provider)
    policy: pulumi.Input[str]  # JSON, infra.iam_documents.connector_policy(...)
    instance_profile: bool = False  # trust ec2: a profile to launch the connector's instance with
    tags: dict[str, str] = field(default_factory=dict)


class ConnectorRole(pulumi.ComponentResource):
    """The role every connector replica runs as."""

    arn: pulumi.Output[str]
    name: pulumi.Output[str]
    instance_profile_name: pulumi.Output[str] | None

    def __init__(self, name: str, args: ConnectorRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("eks-access-connector:index:ConnectorRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            name,
            description="EKS Access Connector: discovers EKS clusters and reaches them as its mapped Kubernetes group",
            assume_role_policy=args.trust_policy,
            max_session_duration=3600,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(f"{name}-access", role=role.id, policy=args.policy, opts=child)
        self.arn = role.arn
        self.name = role.name
        self.instance_profile_name = None
        if args.instance_profile:
            profile = aws.iam.InstanceProfile(name, role=role.name, tags=args.tags, opts=child)
            self.instance_profile_name = profile.name
        self.register_outputs({"arn": self.arn, "instanceProfileName": self.instance_profile_name})
