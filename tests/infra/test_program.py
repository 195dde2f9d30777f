"""The Pulumi program under `pulumi.runtime.set_mocks`: one test per stack-config variant.

Each test runs `infra.program.deploy` against recorded mocks (no engine, no AWS) and asserts on
what was declared: the resource graph, the exact IAM documents, how each cluster is mapped, the
RBAC objects, the Deployment, and what `pulumi_eks.Cluster` receives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import manifests
from infra.config import StackConfigError, parse_stack_config

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"
OIDC_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"
IMAGE = "registry.example/eks-access-connector:0.1.0"
REPO = Path(__file__).resolve().parents[2]
AWS_AUTH_TYPE = "pulumi-python:dynamic/eks-access-connector:AwsAuthRoleMapping"

# pulumi_eks and pulumi_aws warn about their legacy classes on import; the program uses none of them.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_eks"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws"),
]


@pytest.fixture(autouse=True)
def event_loop_for_pulumi() -> Iterator[None]:
    """Pulumi's test runner drives its own loop through get_event_loop(); pytest-asyncio leaves none set."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str


@dataclass
class Mocks(pulumi.runtime.Mocks):
    """Answers the program's AWS lookups from `clusters` and records every declared resource."""

    clusters: dict[tuple[str, str], str] = field(default_factory=dict)  # (region, name) -> authentication mode
    declared: list[Declared] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.declared.append(Declared(args.typ, args.name, dict(args.inputs), args.provider or ""))
        outputs = dict(args.inputs)
        if args.typ == "aws:iam/role:Role":
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{args.name}-1a2b3c", name=f"{args.name}-1a2b3c")
        if args.typ == "aws:iam/instanceProfile:InstanceProfile":
            outputs["name"] = f"{args.name}-profile"
        if args.typ == "kubernetes:core/v1:Service" and args.inputs["spec"]["type"] == "LoadBalancer":
            outputs["status"] = {
                "loadBalancer": {"ingress": [{"hostname": "connector-0123.elb.eu-west-1.amazonaws.com"}]}
            }
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        token, inputs = args.token, dict(args.args)
        self.calls.append((token, inputs))
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
                "userId": "AIDA",
                "id": ACCOUNT,
            }
        if token == "aws:index/getRegion:getRegion":
            return {"region": REGION, "name": REGION, "id": REGION, "endpoint": "ec2.eu-west-1.amazonaws.com"}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:eks/getClusters:getClusters":
            region = inputs.get("region", REGION)
            return {"id": region, "names": [n for (r, n) in self.clusters if r == region]}
        if token == "aws:eks/getCluster:getCluster":
            region = inputs.get("region", REGION)
            mode = self.clusters.get((region, inputs["name"]), "API")
            return {
                "id": inputs["name"],
                "name": inputs["name"],
                "arn": f"arn:aws:eks:{region}:{ACCOUNT}:cluster/{inputs['name']}",
                "endpoint": f"https://{inputs['name']}.gr7.{region}.eks.amazonaws.com",
                "certificateAuthorities": [{"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t"}],
                "accessConfigs": [{"authenticationMode": mode}],
                "identities": [{"oidcs": [{"issuer": ISSUER}]}],
            }
        if token == "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider":
            assert inputs["url"] == ISSUER
            return {"arn": OIDC_ARN, "url": ISSUER.removeprefix("https://"), "id": OIDC_ARN}
        raise AssertionError(f"unexpected call {token}")

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.typ == typ]

    def one(self, typ: str) -> Declared:
        found = self.of_type(typ)
        assert len(found) == 1, f"{typ}: {[d.name for d in found]}"
        return found[0]

    def types(self) -> set[str]:
        return {d.typ for d in self.declared}


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Run:
    mocks: Mocks
    outputs: dict[str, Any]
    warnings: list[str]


def run(config: dict[str, Any], clusters: dict[tuple[str, str], str] | None = None) -> Run:
    """Validate `config` like `pulumi up` does, run the program under mocks, return what it declared."""
    from infra.program import deploy, read_environment

    mocks = Mocks(clusters=clusters if clusters is not None else {(REGION, "prod"): "API_AND_CONFIG_MAP"})
    warnings = Warnings()
    logger = logging.getLogger(f"pulumi-test-{id(mocks)}")
    logger.addHandler(warnings)
    pulumi.runtime.set_mocks(mocks, project="eks-access-connector", stack="dev", preview=False, logger=logger)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        outputs = deploy(parse_stack_config(config), read_environment())
        keys = list(outputs)
        return pulumi.Output.all(*[outputs[k] for k in keys]).apply(
            lambda values: resolved.update(zip(keys, values, strict=True))
        )

    program()
    return Run(mocks, resolved, warnings.messages)


def run_main(config: dict[str, str], clusters: dict[tuple[str, str], str] | None = None) -> Mocks:
    """Run the repository's `__main__.py` the way `pulumi up` does, with raw stack config strings."""
    mocks = Mocks(clusters=clusters or {(REGION, "prod"): "API"})
    pulumi.runtime.set_mocks(mocks, project="eks-access-connector", stack="dev", preview=False)
    pulumi.runtime.set_all_config(config)
    try:

        @pulumi.runtime.test
        def program() -> None:
            runpy.run_path(str(REPO / "__main__.py"), run_name="__pulumi__")

        program()
    finally:
        pulumi.runtime.set_all_config({})
    return mocks


def deployed(**connector: Any) -> dict[str, Any]:
    """A connector section that deploys into `prod` with a TLS secret."""
    return {"homeCluster": "prod", "image": IMAGE, "tls": {"secretName": "connector-tls"}, **connector}


def doc(declared: Declared, key: str) -> dict[str, Any]:
    return json.loads(declared.inputs[key])


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine marks a secret value on the wire


def secret_value(value: Any) -> Any:
    """Unwrap a value the SDK sent as a secret; fail if it was sent in the clear."""
    assert isinstance(value, dict) and SECRET_SIG in value, f"not sent as a secret: {value!r}"
    return value["value"]


def connector_config(result: Run) -> str:
    return secret_value(result.mocks.one("kubernetes:core/v1:Secret").inputs["stringData"])["config.yaml"]


# --- trust modes: the exact IAM documents --------------------------------------------------------

DISCOVERY = {
    "Sid": "DiscoverEksClusters",
    "Effect": "Allow",
    "Action": ["eks:ListClusters", "eks:DescribeCluster"],
    "Resource": "*",
}


def test_irsa_trust_policy_and_inline_policy_are_exact() -> None:
    result = run({"clusters": ["prod"], "connector": deployed()})
    role = result.mocks.one("aws:iam/role:Role")
    assert doc(role, "assumeRolePolicy") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": OIDC_ARN},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF:sub": (
                            "system:serviceaccount:eks-access-connector:eks-access-connector"
                        ),
                        "oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }
    policy = result.mocks.one("aws:iam/rolePolicy:RolePolicy")
    assert doc(policy, "policy") == {"Version": "2012-10-17", "Statement": [DISCOVERY]}
    # Nothing else grants the role anything.
    assert not {"aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/policy:Policy"} & result.mocks.types()
    account = result.mocks.one("kubernetes:core/v1:ServiceAccount")
    assert account.inputs["metadata"]["annotations"] == {manifests.IRSA_ANNOTATION: result.outputs["roleArn"]}
    assert "aws:eks/podIdentityAssociation:PodIdentityAssociation" not in result.mocks.types()


def test_pod_identity_trust_and_association() -> None:
    result = run({"clusters": ["prod"], "trust": "podIdentity", "connector": deployed()})
    role = result.mocks.one("aws:iam/role:Role")
    assert doc(role, "assumeRolePolicy") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
    association = result.mocks.one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert association.inputs == {
        "clusterName": "prod",
        "namespace": "eks-access-connector",
        "serviceAccount": "eks-access-connector",
        "roleArn": result.outputs["roleArn"],
        "region": REGION,
    }
    assert "annotations" not in result.mocks.one("kubernetes:core/v1:ServiceAccount").inputs["metadata"]


def test_ec2_trust_makes_an_instance_profile_and_deploys_nothing() -> None:
    result = run({"clusters": ["prod"], "trust": "ec2", "connector": {"deploy": False}})
    role = result.mocks.one("aws:iam/role:Role")
    assert doc(role, "assumeRolePolicy")["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    profile = result.mocks.one("aws:iam/instanceProfile:InstanceProfile")
    assert profile.inputs["role"] == "eks-access-connector-1a2b3c"
    assert result.outputs["instanceProfileName"] == "eks-access-connector-profile"
    assert not any(t.startswith("kubernetes:apps") for t in result.mocks.types())
    assert "connectorUrl" not in result.outputs


def test_principals_trust_lists_the_principals() -> None:
    principals = [f"arn:aws:iam::{ACCOUNT}:role/ci", f"arn:aws:iam::{ACCOUNT}:role/ops/bastion"]
    result = run(
        {
            "clusters": ["prod"],
            "trust": {"mode": "principals", "principals": principals},
            "connector": {"deploy": False},
        }
    )
    assert doc(result.mocks.one("aws:iam/role:Role"), "assumeRolePolicy")["Statement"] == [
        {"Effect": "Allow", "Principal": {"AWS": sorted(principals)}, "Action": "sts:AssumeRole"}
    ]
    assert "aws:iam/instanceProfile:InstanceProfile" not in result.mocks.types()


# --- access entries vs aws-auth ------------------------------------------------------------------


def test_auto_picks_access_entries_or_aws_auth_from_each_clusters_mode() -> None:
    clusters = {(REGION, "api"): "API", (REGION, "both"): "API_AND_CONFIG_MAP", (REGION, "legacy"): "CONFIG_MAP"}
    result = run(
        {"clusters": ["api", "both", "legacy"], "trust": "ec2", "connector": {"deploy": False}}, clusters=clusters
    )
    entries = result.mocks.of_type("aws:eks/accessEntry:AccessEntry")
    assert sorted(e.inputs["clusterName"] for e in entries) == ["api", "both"]
    for entry in entries:
        assert entry.inputs["principalArn"] == result.outputs["roleArn"]
        assert entry.inputs["kubernetesGroups"] == ["eks-access-connector"]
        assert entry.inputs["type"] == "STANDARD"
        assert entry.inputs["region"] == REGION
    mapping = result.mocks.one(AWS_AUTH_TYPE)
    assert mapping.inputs["cluster"] == f"{REGION}/legacy"
    assert mapping.inputs["rolearn"] == result.outputs["roleArn"]
    assert mapping.inputs["groups"] == ["eks-access-connector"]
    assert mapping.inputs["username"] == "eks-access-connector"
    assert result.outputs["clusters"] == {
        f"{REGION}/api": {"method": "access-entry", "group": "eks-access-connector"},
        f"{REGION}/both": {"method": "access-entry", "group": "eks-access-connector"},
        f"{REGION}/legacy": {"method": "aws-auth", "group": "eks-access-connector"},
    }


def test_aws_auth_mapping_authenticates_with_the_connector_token_command() -> None:
    result = run({"clusters": ["prod"], "accessMode": "aws-auth", "trust": "ec2", "connector": {"deploy": False}})
    assert "aws:eks/accessEntry:AccessEntry" not in result.mocks.types()
    kubeconfig = json.loads(result.mocks.one(AWS_AUTH_TYPE).inputs["kubeconfig"])
    user = kubeconfig["users"][0]["user"]["exec"]
    assert user["args"] == ["-m", "connector", "token", "--cluster-name", "prod", "--region", REGION]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://prod.gr7.{REGION}.eks.amazonaws.com"


def test_forced_modes_the_cluster_cannot_honour_are_reported_together() -> None:
    clusters = {(REGION, "api"): "API", (REGION, "legacy"): "CONFIG_MAP"}
    with pytest.raises(StackConfigError) as err:
        run(
            {"clusters": ["legacy"], "accessMode": "access-entry", "trust": "ec2", "connector": {"deploy": False}},
            clusters,
        )
    assert "legacy: authentication mode CONFIG_MAP has no access entries" in str(err.value)
    with pytest.raises(StackConfigError) as err:
        run({"clusters": ["api"], "accessMode": "aws-auth", "trust": "ec2", "connector": {"deploy": False}}, clusters)
    assert "api: authentication mode API ignores aws-auth" in str(err.value)


def test_star_looks_clusters_up_in_every_region() -> None:
    clusters = {("us-east-1", "a"): "API", ("us-east-1", "b"): "CONFIG_MAP", ("us-west-2", "c"): "API"}
    result = run(
        {"clusters": "*", "regions": ["us-east-1", "us-west-2"], "trust": "ec2", "connector": {"deploy": False}},
        clusters,
    )
    assert set(result.outputs["clusters"]) == {"us-east-1/a", "us-east-1/b", "us-west-2/c"}
    assert {e.inputs["region"] for e in result.mocks.of_type("aws:eks/accessEntry:AccessEntry")} == {
        "us-east-1",
        "us-west-2",
    }


# --- rbac ----------------------------------------------------------------------------------------


def test_rbac_create_full_binds_the_group_in_every_cluster() -> None:
    clusters = {(REGION, "prod"): "API", (REGION, "legacy"): "CONFIG_MAP"}
    result = run({"clusters": ["prod", "legacy"], "trust": "ec2", "connector": {"deploy": False}}, clusters)
    roles = result.mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    bindings = result.mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert len(roles) == len(bindings) == 2
    assert roles[0].inputs["rules"] == [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ]
    # Names and a manager label of their own: `python -m infra render` can neither replace nor be replaced.
    assert roles[0].inputs["metadata"]["name"] == "eks-access-connector-cluster-access"
    assert bindings[0].inputs["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pulumi"
    assert bindings[0].inputs["subjects"] == [
        {"kind": "Group", "name": "eks-access-connector", "apiGroup": "rbac.authorization.k8s.io"}
    ]
    assert bindings[0].inputs["roleRef"]["name"] == roles[0].inputs["metadata"]["name"]
    # Each cluster's objects go through that cluster's own provider, whose kubeconfig names the cluster.
    providers = result.mocks.of_type("pulumi:providers:kubernetes")
    assert len({r.provider for r in roles}) == 2 and all(r.provider for r in roles)
    servers = {json.loads(p.inputs["kubeconfig"])["clusters"][0]["cluster"]["server"] for p in providers}
    assert servers == {f"https://{n}.gr7.{REGION}.eks.amazonaws.com" for n in ("prod", "legacy")}


def test_rbac_read_only_and_custom_rules() -> None:
    result = run({"clusters": ["prod"], "rbac": {"rules": "read-only"}, "trust": "ec2", "connector": {"deploy": False}})
    role = result.mocks.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert role.inputs["rules"] == [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
    custom = [
        {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get", "create"]},
        {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
    ]
    result = run(
        {
            "clusters": ["prod"],
            "rbac": {"mode": "create", "kubernetesGroup": "platform-connector", "rules": custom},
            "trust": "ec2",
            "connector": {"deploy": False},
        }
    )
    assert result.mocks.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole").inputs["rules"] == custom
    assert result.mocks.one("aws:eks/accessEntry:AccessEntry").inputs["kubernetesGroups"] == ["platform-connector"]


def test_rbac_existing_group_creates_no_rbac_objects() -> None:
    result = run(
        {
            "clusters": ["prod"],
            "rbac": {"mode": "existingGroup", "kubernetesGroup": "ops-admins"},
            "trust": "ec2",
            "connector": {"deploy": False},
        }
    )
    assert result.mocks.one("aws:eks/accessEntry:AccessEntry").inputs["kubernetesGroups"] == ["ops-admins"]
    assert not any("rbac" in t for t in result.mocks.types())
    assert "pulumi:providers:kubernetes" not in result.mocks.types()


def test_rbac_system_masters_warns_and_uses_the_cluster_admin_policy_for_access_entries() -> None:
    clusters = {(REGION, "prod"): "API", (REGION, "legacy"): "CONFIG_MAP"}
    result = run(
        {"clusters": ["prod", "legacy"], "rbac": "systemMasters", "trust": "ec2", "connector": {"deploy": False}},
        clusters,
    )
    assert any("systemMasters" in w and "cluster-admin" in w for w in result.warnings)
    entry = result.mocks.one("aws:eks/accessEntry:AccessEntry")
    assert "kubernetesGroups" not in entry.inputs  # EKS refuses system: groups in access entries
    association = result.mocks.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert association.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    assert association.inputs["accessScope"] == {"type": "cluster"}
    assert result.mocks.one(AWS_AUTH_TYPE).inputs["groups"] == ["system:masters"]
    assert not any("rbac" in t for t in result.mocks.types())


# --- the connector deployment --------------------------------------------------------------------


def test_deployment_is_hardened_and_rolls_on_config_change() -> None:
    result = run({"clusters": ["prod"], "connector": deployed(replicas=3)})
    kinds = sorted(d.typ for d in result.mocks.declared if d.typ.startswith("kubernetes:") and "rbac" not in d.typ)
    assert kinds == sorted(
        [
            "kubernetes:core/v1:Namespace",
            "kubernetes:core/v1:ServiceAccount",
            "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
            "kubernetes:core/v1:Secret",
            "kubernetes:apps/v1:Deployment",
            "kubernetes:core/v1:Service",
            "kubernetes:policy/v1:PodDisruptionBudget",
        ]
    )
    spec = result.mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    checksum = spec["template"]["metadata"]["annotations"][manifests.CONFIG_CHECKSUM_ANNOTATION]
    config = connector_config(result)
    assert "cert_file: /etc/connector-tls/tls.crt" in config and "state_dir: /var/lib/connector" in config
    changed = run(
        {
            "clusters": ["prod"],
            "connector": deployed(replicas=3, config={"server": {"public_url": "https://k.example"}}),
        }
    )
    new_spec = changed.mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]
    assert new_spec["template"]["metadata"]["annotations"][manifests.CONFIG_CHECKSUM_ANNOTATION] != checksum
    assert changed.outputs["connectorUrl"] == "https://k.example"
    assert result.outputs["connectorUrl"] == "https://connector-0123.elb.eu-west-1.amazonaws.com"
    assert result.outputs["kubeconfigCommand"] == (
        "python -m connector client kubeconfig set --connector https://connector-0123.elb.eu-west-1.amazonaws.com"
    )
    pdb = result.mocks.one("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdb.inputs["spec"]["maxUnavailable"] == 1


def test_the_deployed_objects_are_the_rendered_manifests() -> None:
    result = run({"clusters": ["prod"], "connector": deployed(service="ClusterIP", replicas=2)})
    settings = manifests.ConnectorManifestSettings(
        namespace="eks-access-connector",
        image=IMAGE,
        config_yaml=connector_config(result),
        replicas=2,
        service_type="ClusterIP",
        tls_secret_name="connector-tls",
        service_account_annotations={manifests.IRSA_ANNOTATION: result.outputs["roleArn"]},
    )
    for built in manifests.connector_manifests(settings):
        declared = result.mocks.one(f"kubernetes:{_group_version(built['apiVersion'])}:{built['kind']}")
        if built["kind"] == "Secret":
            declared.inputs["stringData"] = secret_value(declared.inputs["stringData"])
        expected = {k: v for k, v in built.items() if k not in ("apiVersion", "kind")}
        assert _numbers_as_float(declared.inputs) == {
            **_numbers_as_float(expected),
            "apiVersion": built["apiVersion"],
            "kind": built["kind"],
        }


def test_latest_is_refused_before_anything_is_declared() -> None:
    with pytest.raises(StackConfigError) as err:
        run({"clusters": ["prod"], "connector": deployed(image="eks-access-connector:latest")})
    assert "connector.image" in str(err.value) and "'latest' is refused" in str(err.value)
    with pytest.raises(StackConfigError) as err:
        run({"clusters": ["prod"], "connector": deployed(image="eks-access-connector")})
    assert "has no tag" in str(err.value)


def test_connector_config_conflicts_name_the_key() -> None:
    with pytest.raises(StackConfigError) as err:
        run({"clusters": ["prod"], "connector": deployed(config={"server": {"listen": "0.0.0.0:9443"}})})
    assert "connector.config.server.listen" in str(err.value)


# --- recordings ----------------------------------------------------------------------------------


def test_recordings_bucket_is_private_encrypted_versioned_and_granted_by_prefix() -> None:
    result = run(
        {"clusters": ["prod"], "recordings": {"bucket": "create", "retentionDays": 90}, "connector": deployed()}
    )
    bucket_name = f"eks-access-connector-dev-recordings-{ACCOUNT}"
    assert result.mocks.one("aws:s3/bucket:Bucket").inputs["bucket"] == bucket_name
    block = result.mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    encryption = result.mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    versioning = result.mocks.one("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    lifecycle = result.mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lifecycle.inputs["rules"][0]["expiration"] == {"days": 90}
    assert lifecycle.inputs["rules"][0]["filter"] == {"prefix": "recordings/"}
    policy = doc(result.mocks.one("aws:iam/rolePolicy:RolePolicy"), "policy")
    assert policy["Statement"] == [
        DISCOVERY,
        {
            "Sid": "WriteSessionRecordings",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{bucket_name}/recordings/*",
        },
    ]
    config = connector_config(result)
    assert f"bucket: {bucket_name}" in config and "dir: /var/lib/connector/recordings" in config
    assert result.outputs["recordings"] == f"s3://{bucket_name}/recordings/"


def test_existing_recordings_bucket_is_granted_but_not_created() -> None:
    result = run({"clusters": ["prod"], "recordings": "my-recordings", "connector": deployed()})
    assert not any(t.startswith("aws:s3") for t in result.mocks.types())
    statement = doc(result.mocks.one("aws:iam/rolePolicy:RolePolicy"), "policy")["Statement"][1]
    assert statement["Resource"] == "arn:aws:s3:::my-recordings/recordings/*"


# --- createCluster -------------------------------------------------------------------------------


def test_create_cluster_declares_the_access_entry_in_pulumi_eks() -> None:
    result = run(
        {"createCluster": {"name": "connector-home", "version": "1.31"}, "connector": deployed(homeCluster=None)},
        clusters={},
    )
    cluster = result.mocks.one("eks:index:Cluster")
    assert cluster.inputs["name"] == "connector-home"
    assert cluster.inputs["authenticationMode"] == "API"
    assert cluster.inputs["accessEntries"] == {
        "connector": {
            "principalArn": result.outputs["roleArn"],
            "type": "STANDARD",
            "username": "eks-access-connector",
            "kubernetesGroups": ["eks-access-connector"],
        }
    }
    assert "roleMappings" not in cluster.inputs
    # No separate mapping that could fight pulumi-eks.
    assert "aws:eks/accessEntry:AccessEntry" not in result.mocks.types()
    assert AWS_AUTH_TYPE not in result.mocks.types()
    # The connector goes into the new cluster with Pod Identity (the default there).
    assert result.mocks.one("aws:eks/addon:Addon").inputs["addonName"] == "eks-pod-identity-agent"
    association = result.mocks.one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert association.inputs["clusterName"] == "connector-home"
    assert result.mocks.one("kubernetes:apps/v1:Deployment")
    assert result.mocks.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert result.outputs["clusters"] == {
        f"{REGION}/connector-home": {"method": "access-entry (pulumi-eks)", "group": "eks-access-connector"}
    }
    # The Kubernetes providers reach the new cluster once it exists, with the connector's token command.
    for provider in result.mocks.of_type("pulumi:providers:kubernetes"):
        kubeconfig = json.loads(provider.inputs["kubeconfig"])
        assert (
            kubeconfig["clusters"][0]["cluster"]["server"] == f"https://connector-home.gr7.{REGION}.eks.amazonaws.com"
        )
        assert kubeconfig["users"][0]["user"]["exec"]["args"][:3] == ["-m", "connector", "token"]


def test_create_cluster_with_aws_auth_passes_role_mappings() -> None:
    result = run(
        {
            "createCluster": {"name": "target"},
            "accessMode": "aws-auth",
            "rbac": {"mode": "existingGroup", "kubernetesGroup": "ops"},
            "trust": "ec2",
            "connector": {"deploy": False},
        },
        clusters={},
    )
    cluster = result.mocks.one("eks:index:Cluster")
    assert cluster.inputs["roleMappings"] == [
        {"roleArn": result.outputs["roleArn"], "username": "eks-access-connector", "groups": ["ops"]}
    ]
    assert "accessEntries" not in cluster.inputs and "authenticationMode" not in cluster.inputs
    assert AWS_AUTH_TYPE not in result.mocks.types()


def _group_version(api_version: str) -> str:
    return api_version if "/" in api_version else f"core/{api_version}"


def _numbers_as_float(value: Any) -> Any:
    """The mock monitor hands numbers back as floats (protobuf Struct)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, dict, list)):
        return value
    if isinstance(value, dict):
        return {k: _numbers_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_float(v) for v in value]
    return float(value)


# --- the program entry point ---------------------------------------------------------------------


def test_main_reads_the_projects_config_namespace() -> None:
    mocks = run_main(
        {
            "eks-access-connector:clusters": '["prod"]',
            "eks-access-connector:accessMode": "access-entry",
            "eks-access-connector:trust": "ec2",
            "eks-access-connector:connector": '{"deploy": false}',
            "aws:region": REGION,
        }
    )
    assert mocks.one("aws:eks/accessEntry:AccessEntry").inputs["clusterName"] == "prod"


def test_main_reports_every_problem_with_its_key_and_no_traceback() -> None:
    with pytest.raises(pulumi.RunError) as err:
        run_main(
            {
                "eks-access-connector:clusters": "prod",
                "eks-access-connector:acessMode": "auto",
                "eks-access-connector:connector": '{"image": "c:latest", "homeCluster": "prod"}',
            }
        )
    message = str(err.value)
    assert "config eks-access-connector: acessMode: unknown key" in message
    assert "config eks-access-connector: clusters: " in message
    assert "connector.image" in message


def test_the_documented_example_stack_deploys() -> None:
    """Pulumi.example.yaml (the README's example) through `__main__.py`, values encoded as Pulumi passes them."""
    example = yaml.safe_load((REPO / "Pulumi.example.yaml").read_text())["config"]
    config = {key: value if isinstance(value, str) else json.dumps(value) for key, value in example.items()}
    mocks = run_main(config, clusters={(REGION, "prod"): "API", ("us-west-2", "staging"): "CONFIG_MAP"})
    assert mocks.one("aws:eks/accessEntry:AccessEntry").inputs["clusterName"] == "prod"
    assert mocks.one(AWS_AUTH_TYPE).inputs["cluster"] == "us-west-2/staging"
    assert mocks.one("aws:s3/bucket:Bucket").inputs["bucket"] == f"eks-access-connector-dev-recordings-{ACCOUNT}"
    assert mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["replicas"] == 2
    service = mocks.one("kubernetes:core/v1:Service").inputs
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert "service.beta.kubernetes.io/aws-load-balancer-ssl-cert" in service["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("dev", f"eks-access-connector-dev-recordings-{ACCOUNT}"),
        ("Prod_Account.EU", f"eks-access-connector-prod-account-eu-recordings-{ACCOUNT}"),
        ("x" * 80, f"eks-access-connector-{'x' * 18}-recordings-{ACCOUNT}"),
    ],
)
def test_recordings_bucket_name_is_valid_and_stable(stack: str, expected: str) -> None:
    from infra.program import recordings_bucket_name

    assert recordings_bucket_name("eks-access-connector", stack, ACCOUNT) == expected
    assert len(expected) <= 63
