"""`python -m sandbox`: the whole product on one machine, with no cloud account.

Order of events, each step done the way production does it:
1. moto on 127.0.0.1 is the AWS account. The connector's IAM role gets the very policy and trust
   documents the Pulumi program creates (infra.iam_documents); a "host" IAM user stands in for the
   machine the connector runs on and may assume the role.
2. One Kubernetes control plane per demo cluster, registered in moto's EKS so DescribeCluster
   returns its endpoint and CA: a real kube-apiserver (`sandbox.controlplane`: 1.33 for prod and
   scratch, 1.29 for staging, or the one minor `--kubernetes` names) when its binaries are cached,
   supplied or buildable with `go`, else (or with `--cluster emulated`) the emulated API server of
   `sandbox.apiserver`. Each is seeded, then the connector role is mapped in with infra's aws-auth
   read-merge-write and RBAC builders, as `pulumi up` would.
3. A local OIDC identity provider with the demo users.
4. The real connector (`python -m connector serve`) in its own process, discovering the clusters by tag.
5. The demo users log in through the real SSO flow (while the connector starts); DIR/kubeconfig gets a
   context USER@SOCKET for each (user, exposed socket), authenticated by the `client token` exec plugin.
6. DIR/sandbox.json says where everything is; it is written last, so its presence means "ready".

moto, the emulated API servers (or the token webhooks and nodes of the real ones) and the identity
provider run in this process (EKS tokens are verified against moto's in-memory credentials);
kube-apiserver, etcd and the connector run in child processes, as they would in production.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from connector.aws.credentials import AwsCredentials
from connector.client.kubeconfig_edit import apply_entries, connector_entries, render
from infra.aws_auth import RoleMapping
from infra.aws_auth_resource import Conflict, KubernetesConfigMapApi, apply_role_mapping
from infra.iam_documents import connector_policy, principals_trust_policy
from infra.manifests import ConnectorManifestSettings, access_request_manifests
from infra.rbac import FULL_ACCESS, group_access_manifests
from sandbox.apiserver import EmulatedApiServer
from sandbox.apiserver.catalog import lookup
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.store import Store
from sandbox.aws import EmbeddedAws
from sandbox.controlplane import binaries as controlplane_binaries
from sandbox.controlplane import seeding
from sandbox.controlplane.cluster import ControlPlaneError, Etcd, RealCluster
from sandbox.controlplane.loopback import free_port
from sandbox.logins import log_in_demo_user
from sandbox.oidc import OidcIssuer
from sandbox.world import (
    ACCESS_REQUESTS,
    CLUSTERS,
    CONNECTOR_ROLE,
    CONNECTOR_USERNAME,
    DISCOVERY_REGIONS,
    KUBERNETES_GROUP,
    OIDC_CLIENT_ID,
    POLICIES,
    USERS,
    DemoCluster,
    seed_objects,
)

log = logging.getLogger("sandbox")
READY_TIMEOUT_SECONDS = 60.0
CONNECTOR_STOP_SECONDS = 30.0
METRICS_LINE = re.compile(r"metrics on (http://\S+/metrics)")
# The cluster the connector "runs in": its etcd keeps the access requests (the AccessRequest CRD).
HOME_CLUSTER = "prod"
ACCESS_STORE_NAMESPACE = "eks-access-connector"
SANDBOX_IMAGE = "eks-access-connector:sandbox"  # named in the rendered objects; nothing pulls it
# The store's token outlives any sandbox session (the TokenRequest API bounds every token's life).
ACCESS_STORE_TOKEN_SECONDS = 30 * 24 * 3600
REPO_ROOT = Path(__file__).resolve().parents[1]
# Written into the state directory at start: only a directory holding it (or an empty one) is wiped.
STATE_MARKER = ".sandbox-state"
HOST_USER = "connector-host"
CLUSTER_KINDS = ("auto", "real", "emulated")


class SandboxError(Exception):
    """The sandbox could not start; the message says why and what to do."""


def check_port_free(port: int) -> None:
    if not 0 < port <= 65535:
        raise SandboxError(f"--port must be between 1 and 65535 (or 0 for any free port), got {port}")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SandboxError(
                f"port {port} on 127.0.0.1 is in use (another sandbox?): stop it, or pick another with --port"
            ) from None


def prepare_state_dir(path: Path) -> int:
    """Empty `path` for a new run and claim it; returns the open descriptor that holds the claim.

    Refuses to wipe a directory the sandbox did not create, or one a running sandbox holds: the claim
    is an flock on DIR/.sandbox-state (released by the kernel when its process ends, so a killed
    sandbox never leaves a stale claim), and the file names the holder's PID."""
    marker = path / STATE_MARKER
    if path.exists():
        if not path.is_dir():
            raise SandboxError(f"--dir {path} exists and is not a directory")
        if any(path.iterdir()) and not marker.exists():
            raise SandboxError(
                f"--dir {path} is not empty and holds no earlier sandbox state ({STATE_MARKER}); "
                "the sandbox wipes its directory at start, so give it a new or empty one"
            )
        refuse_if_running(path)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    marker.write_text("python -m sandbox state directory: wiped at every start\n")
    claim = _claim(marker)
    with marker.open("a") as f:
        f.write(f"pid {os.getpid()}\n")
    return claim


def refuse_if_running(path: Path) -> None:
    """Raise SandboxError naming the PID of the sandbox that runs on `path`, if one does."""
    marker = path / STATE_MARKER
    if marker.is_file():
        os.close(_claim(marker))


def _claim(marker: Path) -> int:
    fd = os.open(marker, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = next((line.split()[1] for line in marker.read_text().splitlines() if line.startswith("pid ")), "?")
        raise SandboxError(
            f"--dir {marker.parent} is in use by the sandbox running as PID {holder}: stop it first, "
            "or give this one another --dir"
        ) from None
    return fd


def _trust(ca_file: Path) -> ssl.SSLContext | None:
    """A context trusting the connector's CA, once the connector has written it."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file.exists() else None


class StoreConfigMaps:
    """infra's `ConfigMapApi` (kube-system/aws-auth) over an emulated cluster's store, so the sandbox
    runs the Pulumi program's own read-merge-write, conflict retries included."""

    def __init__(self, store: Store) -> None:
        configmaps = lookup("", "v1", "configmaps")
        assert configmaps is not None
        self._store, self._type = store, configmaps

    def read(self) -> dict[str, Any] | None:
        return self._store.get(self._type, "kube-system", "aws-auth")

    def create(self, body: dict[str, Any]) -> None:
        self._write(self._store.create, body)

    def replace(self, body: dict[str, Any]) -> None:
        self._write(self._store.update, body)

    def _write(self, write: Any, body: dict[str, Any]) -> None:
        try:
            write(self._type, body, namespace="kube-system")
        except ApiError as exc:
            if exc.code == 409:
                raise Conflict(exc.message) from None
            raise


@dataclass
class Sandbox:
    state_dir: Path
    port: int = 0
    cluster_kind: str = "auto"  # "real", "emulated", or "auto": real when the binaries can be had
    kubernetes_minor: str | None = None  # every real cluster on this minor, instead of each its own
    aws: EmbeddedAws = field(default_factory=EmbeddedAws)
    servers: dict[str, EmulatedApiServer | RealCluster] = field(default_factory=dict)
    etcd: Etcd | None = None
    notes: list[str] = field(default_factory=list)  # one line each, for the person who started it
    issuer: OidcIssuer | None = None
    connector: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _dir_claim: int | None = None  # the flock on DIR/.sandbox-state, held while this sandbox runs

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start everything; returns what DIR/sandbox.json holds. Raises SandboxError with what to do."""
        refuse_if_running(self.state_dir)  # first: a second sandbox on one --dir is told whose it is
        if self.port:
            check_port_free(self.port)
        else:
            self.port = free_port()
        self._dir_claim = prepare_state_dir(self.state_dir)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self.info

    async def _start(self) -> None:
        started = time.monotonic()
        self.aws.start()
        host_credentials = self.aws.create_user_credentials(HOST_USER)
        role_arn = self._create_connector_role()
        real = await asyncio.to_thread(self._real_binaries)
        if real is None:
            for cluster in CLUSTERS:
                await self._start_cluster(cluster, role_arn)
        else:
            await self._start_real_clusters(real, role_arn)
        # The console signs people in with the same issuer; its callback is a registered web redirect URI.
        self.issuer = OidcIssuer(
            users=dict(USERS),
            client_ids=(OIDC_CLIENT_ID,),
            redirect_uris=[f"https://127.0.0.1:{self.port}/console/callback"],
        )
        await self.issuer.start()
        config_path = self._write_connector_config(role_arn)
        self._start_connector(config_path, host_credentials)
        ca_file = self.state_dir / "connector-state" / "ca.crt"
        connector_url = f"https://127.0.0.1:{self.port}"
        # The logins need only the identity provider: run them while the connector starts. Both steps
        # end on their own (each is bounded), and the login thread cannot be cancelled anyway, so wait
        # for both before looking at either's outcome.
        logins = asyncio.ensure_future(asyncio.to_thread(self._log_in_users, connector_url))
        ready = asyncio.ensure_future(self._wait_until_serving(connector_url, ca_file))
        await asyncio.wait([ready, logins])
        login_error = logins.exception()
        ready.result()
        if login_error is not None:
            raise SandboxError(f"the demo users could not log in: {login_error}") from login_error
        kubeconfig = self._write_kubeconfig(connector_url, ca_file)
        self.info = {
            "dir": str(self.state_dir),
            "connector": {
                "url": connector_url,
                "port": self.port,
                "ca_file": str(ca_file),
                "config": str(config_path),
                "log": str(self.state_dir / "connector.log"),
                "metrics_url": self._metrics_url(),
                "pid": self.connector.pid if self.connector else None,
            },
            "aws": {"endpoint_url": self.aws.endpoint_url, "connector_role_arn": role_arn},
            "oidc": {"issuer": self.issuer.url, "client_id": OIDC_CLIENT_ID},
            "clusters": {
                c.name: {
                    "region": c.region,
                    "socket": c.socket,
                    "exposed": c.exposed,
                    "tags": c.tags,
                    "endpoint": self.servers[c.name].url,
                    "ca_file": str(self.servers[c.name].ca_path),
                    "version": self._version(c),
                    "kind": "real" if isinstance(self.servers[c.name], RealCluster) else "emulated",
                    **self._admin_access(c),
                }
                for c in CLUSTERS
            },
            "sockets": [c.socket for c in CLUSTERS if c.exposed],
            "users": {u.name: {"email": u.email, "groups": list(u.groups)} for u in USERS.values()},
            "kubeconfig": str(kubeconfig),
            "token_cache": str(self.token_cache),
            "audit_log": str(self.state_dir / "audit.log"),
            "recordings": str(self.state_dir / "recordings"),
            "started_in_seconds": round(time.monotonic() - started, 2),
        }
        (self.state_dir / "sandbox.json").write_text(json.dumps(self.info, indent=2) + "\n")

    async def stop(self) -> None:
        """Stop everything that was started (safe to call after a failed or partial start)."""
        if self.connector is not None and self.connector.poll() is None:
            self.connector.terminate()
            try:
                await asyncio.to_thread(self.connector.wait, CONNECTOR_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.connector.kill()
                await asyncio.to_thread(self.connector.wait)
        self.connector = None
        if self.issuer is not None:
            await self.issuer.stop()
            self.issuer = None
        await asyncio.gather(*(server.stop() for server in self.servers.values()))
        self.servers.clear()
        if self.etcd is not None:
            await self.etcd.stop()
            self.etcd = None
        self.aws.stop()
        if self._dir_claim is not None:
            os.close(self._dir_claim)
            self._dir_claim = None

    @property
    def token_cache(self) -> Path:
        return self.state_dir / "tokens"

    # --- the steps -------------------------------------------------------------------------------

    def _create_connector_role(self) -> str:
        iam = self.aws.client("iam")
        host_arn = iam.get_user(UserName=HOST_USER)["User"]["Arn"]
        role = iam.create_role(
            RoleName=CONNECTOR_ROLE,
            AssumeRolePolicyDocument=json.dumps(principals_trust_policy([host_arn])),
            Description="EKS Access Connector (sandbox)",
        )["Role"]
        iam.put_role_policy(
            RoleName=CONNECTOR_ROLE, PolicyName="eks-discovery", PolicyDocument=json.dumps(connector_policy())
        )
        return str(role["Arn"])

    async def _start_cluster(self, cluster: DemoCluster, role_arn: str) -> None:
        server = EmulatedApiServer(
            cluster.name,
            version=cluster.version,
            credentials_lookup=self.aws.credentials_lookup,
            extra_sts_endpoints=(self.aws.endpoint_url,),
            scratch_dir=self.state_dir / "clusters" / cluster.name,
        )
        await server.start()
        self.servers[cluster.name] = server
        self.aws.create_eks_cluster(
            cluster.name,
            cluster.region,
            tags=cluster.tags,
            endpoint=server.url,
            ca_pem=server.ca_pem,
            version=cluster.version.lstrip("v").rsplit(".", 1)[0],
        )
        for obj in seed_objects(cluster):
            server.store.apply(obj)
        # What `pulumi up` does per cluster in aws-auth mode: the same read-merge-write of aws-auth
        # (the node role's entry kept byte for byte, a 409 retried), then the connector's group RBAC.
        mapping = RoleMapping(role_arn, CONNECTOR_USERNAME, (KUBERNETES_GROUP,))
        apply_role_mapping(StoreConfigMaps(server.store), mapping)
        for manifest in group_access_manifests(FULL_ACCESS, KUBERNETES_GROUP):
            server.store.apply(manifest)

    def _minor(self, cluster: DemoCluster) -> str:
        return self.kubernetes_minor or cluster.real_minor

    def _real_binaries(self) -> dict[str, controlplane_binaries.Binaries] | None:
        """The binaries of every minor the real clusters need (building them if need be), or None
        to run emulated clusters: asked for, or (auto) because the binaries cannot be had."""
        if self.cluster_kind == "emulated":
            return None
        minors = {self._minor(c) for c in CLUSTERS} | {controlplane_binaries.ETCD_MINOR}
        try:
            found = {minor: controlplane_binaries.ensure(minor) for minor in sorted(minors)}
        except controlplane_binaries.ControlPlaneUnavailable as exc:
            if self.cluster_kind == "real":
                raise SandboxError(f"--cluster real: {exc}") from None
            self.notes.append(f"note: emulated clusters (no real kube-apiserver: {str(exc).splitlines()[0]})")
            return None
        if found[controlplane_binaries.ETCD_MINOR].etcd is None:
            raise SandboxError("no etcd beside kube-apiserver in KUBEBUILDER_ASSETS")
        return found

    async def _start_real_clusters(self, binaries: dict[str, controlplane_binaries.Binaries], role_arn: str) -> None:
        etcd_binary = binaries[controlplane_binaries.ETCD_MINOR].etcd
        assert etcd_binary is not None
        self.etcd = Etcd(etcd_binary, self.state_dir / "etcd")
        try:
            await self.etcd.start()
            for cluster in CLUSTERS:
                self.servers[cluster.name] = RealCluster(
                    cluster.name, binaries=binaries[self._minor(cluster)], etcd_url=self.etcd.url,
                    scratch_dir=self.state_dir / "clusters" / cluster.name,
                    credentials_lookup=self.aws.credentials_lookup, extra_sts_endpoints=(self.aws.endpoint_url,),
                )
            await asyncio.gather(*(server.start() for server in self.servers.values()))
        except ControlPlaneError as exc:
            raise SandboxError(str(exc)) from None
        for cluster in CLUSTERS:  # one at a time: boto3 clients are not to be created from several threads
            server = self.servers[cluster.name]
            self.aws.create_eks_cluster(cluster.name, cluster.region, tags=cluster.tags, endpoint=server.url,
                                        ca_pem=server.ca_pem, version=self._minor(cluster))
        await asyncio.gather(*(asyncio.to_thread(self._seed_real_cluster, cluster, role_arn) for cluster in CLUSTERS))

    def _seed_real_cluster(self, cluster: DemoCluster, role_arn: str) -> None:
        server = self.servers[cluster.name]
        assert isinstance(server, RealCluster)
        kubeconfig = server.admin_kubeconfig()
        (server.dir / "admin.kubeconfig").write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        objects = seed_objects(cluster)
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        try:
            with seeding.api_client(kubeconfig) as api:
                seeding.create_objects(api, namespaces)
                seeding.create_objects(api, seeding.default_service_accounts(n["metadata"]["name"] for n in namespaces))
                seeding.create_objects(api, [o for o in objects if o["kind"] != "Namespace"])
                # What `pulumi up` does per cluster in aws-auth mode, with the very applier it runs.
                mapping = RoleMapping(role_arn, CONNECTOR_USERNAME, (KUBERNETES_GROUP,))
                apply_role_mapping(KubernetesConfigMapApi(kubeconfig, cluster.name), mapping)
                seeding.create_objects(api, group_access_manifests(FULL_ACCESS, KUBERNETES_GROUP))
                seeding.wait_for_running_pods(api, [(o["metadata"]["namespace"], o["metadata"]["name"])
                                                    for o in objects if o["kind"] == "Pod"])
                if cluster.name == HOME_CLUSTER:
                    self._install_access_store(api, server)
        except seeding.SeedError as exc:
            raise SandboxError(f"cluster {cluster.name}: {exc}") from None

    def _install_access_store(self, api: Any, server: RealCluster) -> None:
        """On the home cluster: the AccessRequest CRD with the connector's Role, its service account and a
        kubeconfig with that account's token, exactly the access `python -m infra render` gives it."""
        settings = ConnectorManifestSettings(namespace=ACCESS_STORE_NAMESPACE, image=SANDBOX_IMAGE, config_yaml="")
        account = {"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": settings.name, "namespace": ACCESS_STORE_NAMESPACE}}  # fmt: skip
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ACCESS_STORE_NAMESPACE}}
        definition, *access = access_request_manifests(settings)
        seeding.create_objects(api, [namespace, account, definition])
        seeding.wait_for_established(api, definition["metadata"]["name"])
        seeding.create_objects(api, access)
        token = seeding.service_account_token(api, ACCESS_STORE_NAMESPACE, settings.name, ACCESS_STORE_TOKEN_SECONDS)
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "home",
            "clusters": [{"name": "home",
                          "cluster": {"server": server.url, "certificate-authority": str(server.ca_path)}}],
            "users": [{"name": settings.name, "user": {"token": token}}],
            "contexts": [{"name": "home", "context": {"cluster": "home", "user": settings.name}}],
        }  # fmt: skip
        path = self.state_dir / "access-store.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        path.chmod(0o600)

    def _access_store(self) -> dict[str, Any]:
        """The AccessRequest CRD on the home cluster when it is real; the emulator serves no CRDs: a file."""
        kubeconfig = self.state_dir / "access-store.kubeconfig"
        if kubeconfig.is_file():
            return {"kubernetes": {"namespace": ACCESS_STORE_NAMESPACE, "kubeconfig": str(kubeconfig)}}
        return {"file": str(self.state_dir / "access-requests.json")}

    def _version(self, cluster: DemoCluster) -> str:
        server = self.servers[cluster.name]
        return server.version if isinstance(server, RealCluster) else cluster.version

    def _admin_access(self, cluster: DemoCluster) -> dict[str, str]:
        """For a real cluster: the cluster creator's kubeconfig (kubectl straight to the apiserver)."""
        server = self.servers[cluster.name]
        return {"admin_kubeconfig": str(server.dir / "admin.kubeconfig")} if isinstance(server, RealCluster) else {}

    def _write_connector_config(self, role_arn: str) -> Path:
        assert self.issuer is not None
        config = {
            "server": {
                "listen": f"127.0.0.1:{self.port}",
                # Any free port: sandboxes (and the tests' connectors) run side by side; the log says which.
                "metrics_listen": "127.0.0.1:0",
                "public_url": f"https://127.0.0.1:{self.port}",
                "state_dir": str(self.state_dir / "connector-state"),
                "shutdown_grace_seconds": 5,
            },
            "authentication": {"oidc": [{"issuer": self.issuer.url, "client_id": OIDC_CLIENT_ID}]},
            "discovery": {
                "aws_eks": [
                    {
                        "regions": list(DISCOVERY_REGIONS),
                        "credentials": {"role_arn": role_arn, "session_name": "eks-access-connector"},
                        "scan_interval_minutes": 1,
                        "include_with_tags": {"expose": ["true"]},
                    }
                ]
            },
            "audit": {"file": str(self.state_dir / "audit.log")},
            "recordings": {"dir": str(self.state_dir / "recordings")},
            "console": {"enabled": True},
            "policies": POLICIES,
            "access_requests": ACCESS_REQUESTS,
            "access_store": self._access_store(),
        }
        path = self.state_dir / "connector.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_connector(self, config_path: Path, host_credentials: AwsCredentials) -> None:
        assert host_credentials.access_key_id is not None and host_credentials.secret_access_key is not None
        env = {
            **os.environ,
            **self.aws.env(),
            "AWS_ACCESS_KEY_ID": host_credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": host_credentials.secret_access_key.get_secret_value(),
        }
        for inherited in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(inherited, None)
        with (self.state_dir / "connector.log").open("wb") as log_file:
            self.connector = subprocess.Popen(
                [sys.executable, "-m", "connector", "serve", "--config", str(config_path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

    async def _wait_until_serving(self, url: str, ca_file: Path) -> None:
        """Until /readyz answers 200 and discovery has found every exposed cluster."""
        assert self.issuer is not None
        wanted = {c.socket for c in CLUSTERS if c.exposed}
        admin = self.issuer.issue_id_token("alice")
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last = "the connector did not answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while time.monotonic() < deadline:
                if self.connector is not None and self.connector.poll() is not None:
                    raise SandboxError(
                        f"the connector exited with code {self.connector.returncode}; "
                        f"see {self.state_dir / 'connector.log'}"
                    )
                ctx = _trust(ca_file)
                if ctx is not None:
                    try:
                        async with http.get(f"{url}/readyz", ssl=ctx) as r:
                            last = f"/readyz answered {r.status}: {(await r.text())[:300]}"
                            ready = r.status == 200
                        if ready:
                            async with http.get(
                                f"{url}/v1/sockets", ssl=ctx, headers={"Authorization": f"Bearer {admin}"}
                            ) as r:
                                listed = (await r.json()).get("sockets", []) if r.status == 200 else []
                            found = {s["name"] for s in listed}
                            if wanted <= found:
                                return
                            last = f"sockets found so far: {sorted(found)}"
                    except (aiohttp.ClientError, OSError, ValueError) as exc:
                        last = str(exc) or type(exc).__name__
                await asyncio.sleep(0.1)
        raise SandboxError(
            f"the connector was not ready after {READY_TIMEOUT_SECONDS:.0f} s ({last}); "
            f"see {self.state_dir / 'connector.log'}"
        )

    def _metrics_url(self) -> str | None:
        """Where the connector serves its Prometheus metrics, as its log said (before it served)."""
        said = METRICS_LINE.search((self.state_dir / "connector.log").read_text(errors="replace"))
        return said.group(1) if said else None

    def _log_in_users(self, connector_url: str) -> None:
        assert self.issuer is not None
        for user in USERS:
            log_in_demo_user(connector_url, self.issuer.url, OIDC_CLIENT_ID, user, self.token_cache)

    def _write_kubeconfig(self, connector_url: str, ca_file: Path) -> Path:
        sockets = [c.socket for c in CLUSTERS if c.exposed]
        config: dict[str, Any] = {}
        for user in USERS:
            entries = connector_entries(
                connector_url, sockets, ca_file=ca_file, profile=user, cache_dir=self.token_cache,
                context_template="{profile}@{socket}",
            )
            apply_entries(config, entries, set_current=None)
        config["current-context"] = f"alice@{sockets[0]}"
        path = self.state_dir / "kubeconfig"
        path.write_text(render(config))
        path.chmod(0o600)
        return path


def _shell_path(path: str) -> str:
    """`path` relative to the current directory when it is below it (shorter to copy from the tour)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def tour(info: dict[str, Any]) -> str:
    prod = info["sockets"][0]
    python = f"{_shell_path(sys.executable)} -m connector"
    config = info["connector"]["config"]

    def access(action: str, user: str) -> str:
        """`access ACTION` as `user`, with the sandbox's login cache and the connector's CA."""
        connector = info["connector"]
        return (
            f"{python} access {action} --connector {connector['url']} --ca-file {_shell_path(connector['ca_file'])} "
            f"--profile {user} --cache-dir {_shell_path(info['token_cache'])}"
        )

    return "\n".join(
        [
            f"The sandbox is up in {info['started_in_seconds']} s. Connector: {info['connector']['url']}",
            f"  sockets: {', '.join(info['sockets'])} (the scratch cluster is not exposed: tag expose=false)",
            "  clusters: " + ", ".join(f"{name} ({c['kind']} {c['version']})" for name, c in info["clusters"].items()),
            "  users: alice (platform-admins: everything), bob (developers: read default+dev, exec in dev, "
            "exec in default on prod once approved), "
            "carol (no policy)",
            "",
            "Try:",
            f"  export KUBECONFIG={info['kubeconfig']}",
            f"  kubectl --context alice@{prod} get pods -A",
            f"  kubectl --context bob@{prod} -n dev exec api-0 -- sh -c 'echo hello from $HOSTNAME'",
            f"  kubectl --context bob@{prod} delete pod -n default --all      # Forbidden, with the policy's reason",
            "",
            "Then replay the exec session the connector recorded:",
            f"  {python} sessions list --config {config}",
            f"  {python} sessions play SESSION_ID --config {config}",
            f"  or in the browser: {info['connector']['url']}/console/      # sign in as alice (carol gets 403)",
            "",
            "Just-in-time access: bob may exec in default on prod only under a request alice approved.",
            f"  kubectl --context bob@{prod} exec web-7d4b9c-x2k4q -- sh -c 'echo hello from $HOSTNAME'"
            "      # Forbidden: the message is the command to run",
            f"  {access('request', 'bob')} prod-break-glass --reason 'INC-1: web is slow' --for 10m --wait"
            "      # waits for alice: go on in another terminal",
            f"  {access('list', 'alice')} --pending",
            f"  {access('approve', 'alice')} REQUEST_ID --reason ok",
            f"  kubectl --context bob@{prod} exec web-7d4b9c-x2k4q -- sh -c 'echo hello from $HOSTNAME'"
            "      # works now, without logging in again",
            f"  {access('revoke', 'alice')} REQUEST_ID      # or let it expire: an open exec ends then too",
            "",
            f"Audit log: {info['audit_log']}   Recordings: {info['recordings']}",
            f"The connector's Prometheus metrics: curl {info['connector']['metrics_url']}",
            f"Everything else (ports, paths, users): {Path(info['dir']) / 'sandbox.json'}",
            "Ctrl-C stops everything.",
        ]
    )
