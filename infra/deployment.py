"""The connector running in its home cluster: the objects of `infra.manifests`, plus its Pod Identity link.

The manifests are the very dicts `python -m infra render` prints; this component only declares
them, in dependency order, through a Kubernetes provider for the home cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import manifests
from infra.kube_resources import declare


@dataclass
class PodIdentityArgs:
    """EKS Pod Identity: the home cluster hands the role to the connector's service account."""

    cluster_name: pulumi.Input[str]
    region: str
    role_arn: pulumi.Input[str]


@dataclass
class ConnectorDeploymentArgs:
    kubeconfig: pulumi.Input[str]  # JSON kubeconfig of the home cluster
    settings: manifests.ConnectorManifestSettings
    pod_identity: PodIdentityArgs | None = None
    wait_for: Sequence[pulumi.Resource] = ()  # e.g. the Pod Identity agent add-on of a new cluster
    context: str | None = None  # the kubeconfig's context (a cluster reached by kubeconfig); None: the current one


class ConnectorDeployment(pulumi.ComponentResource):
    """Namespace, ServiceAccount, config Secret, Deployment, Service and PodDisruptionBudget."""

    load_balancer_hostname: pulumi.Output[str]

    def __init__(self, name: str, args: ConnectorDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("eks-access-connector:index:ConnectorDeployment", name, None, opts)
        settings = args.settings
        # The config Secret is updated in place when the config changes (the provider's default replaces a
        # Secret, deleting it first since its name is fixed); the Deployment rolls by its config checksum.
        provider = k8s.Provider(
            name,
            kubeconfig=args.kubeconfig,
            context=args.context,
            enable_secret_mutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

        def on_cluster(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(depends_on))

        namespace = declare(f"{name}-namespace", manifests.namespace(settings), on_cluster())
        account = declare(f"{name}-serviceaccount", manifests.service_account(settings), on_cluster(namespace))
        secret = declare(f"{name}-config", manifests.config_secret(settings), on_cluster(namespace))
        access = [declare(f"{name}-{m['kind'].lower()}", m, on_cluster(namespace))
                  for m in manifests.access_request_manifests(settings)]  # fmt: skip
        before_pods: list[pulumi.Resource] = [account, secret, *access, *args.wait_for]
        if args.pod_identity is not None:
            # The association must exist before the pods start, or they come up without credentials.
            before_pods.append(
                aws.eks.PodIdentityAssociation(
                    name,
                    cluster_name=args.pod_identity.cluster_name,
                    namespace=settings.namespace,
                    service_account=settings.name,
                    role_arn=args.pod_identity.role_arn,
                    region=args.pod_identity.region,
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        declare(f"{name}-deployment", manifests.deployment(settings), on_cluster(*before_pods))
        service = declare(f"{name}-service", manifests.service(settings), on_cluster(namespace))
        declare(f"{name}-pdb", manifests.pod_disruption_budget(settings), on_cluster(namespace))
        self.load_balancer_hostname = service.status.apply(_hostname)  # type: ignore[attr-defined]
        self.register_outputs({"loadBalancerHostname": self.load_balancer_hostname})


def _hostname(status: object) -> str:
    """The NLB's DNS name once the cloud provider has set it ('' for a ClusterIP service)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    for entry in ingress:
        address = getattr(entry, "hostname", None) or getattr(entry, "ip", None)
        if address:
            return address
    return ""
