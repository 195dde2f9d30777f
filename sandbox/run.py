"""`python -m sandbox`: the whole product on one machine, with no cloud account.

Order of events, each step done the way production does it:
1. moto on 127.0.0.1 is the AWS account. The connector's IAM role gets the very policy and trust
   documents the Pulumi program creates (infra.iam_documents); a "host" IAM user stands in for the
   machine the connector runs on and may assume the role.
2. One emulated EKS API server per demo cluster, registered in moto's EKS so DescribeCluster returns
   its endpoint and CA. Each is seeded, then the connector role is mapped in with infra's aws-auth
   merge and RBAC builders, as `pulumi up` would.
3. A local OIDC identity provider with the demo users.
4. The real connector (`python -m connector serve`) in its own process, discovering the clusters by tag.
5. The demo users log in through the real SSO flow; DIR/kubeconfig gets a context USER@SOCKET for
   each (user, exposed socket), authenticated by the `client token` exec plugin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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

from connector.client.kubeconfig_edit import apply_entries, connector_entries, render
from infra.aws_auth import RoleMapping, merge_map_roles
from infra.iam_documents import connector_policy, principals_trust_policy
from infra.rbac import FULL_ACCESS, group_subject, rbac_manifests
from sandbox.apiserver import EmulatedApiServer
from sandbox.aws import EmbeddedAws
from sandbox.logins import log_in_demo_user
from sandbox.oidc import OidcIssuer
from sandbox.world import (
    CLUSTERS,
    CONNECTOR_ROLE,
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


class SandboxError(Exception):
    """The sandbox could not start; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SandboxError(
                f"port {port} on 127.0.0.1 is in use (another sandbox?): stop it, or pick another with --port"
            ) from None


def _trust(ca_file: Path) -> ssl.SSLContext | None:
    """A context trusting the connector's CA, once the connector has written it."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file.exists() else None


@dataclass
class Sandbox:
    state_dir: Path
    port: int = 0
    aws: EmbeddedAws = field(default_factory=EmbeddedAws)
    servers: dict[str, EmulatedApiServer] = field(default_factory=dict)
    issuer: OidcIssuer | None = None
    connector: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        if self.port:
            check_port_free(self.port)
        else:
            self.port = free_port()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self.info

    async def _start(self) -> None:
        started = time.monotonic()
        self.aws.start()
        host_credentials = self.aws.create_user_credentials("connector-host")
        role_arn = self._create_connector_role()
        for cluster in CLUSTERS:
            await self._start_cluster(cluster, role_arn)
        self.issuer = OidcIssuer(users=dict(USERS), client_ids=(OIDC_CLIENT_ID,))
        await self.issuer.start()
        config_path = self._write_connector_config(role_arn)
        self._start_connector(config_path, host_credentials)
        ca_file = self.state_dir / "connector-state" / "ca.crt"
        connector_url = f"https://127.0.0.1:{self.port}"
        await self._wait_until_serving(connector_url, ca_file)
        kubeconfig = await asyncio.to_thread(self._log_in_and_write_kubeconfig, connector_url, ca_file)
        exposed = [c for c in CLUSTERS if c.exposed]
        self.info = {
            "connector": {"url": connector_url, "ca_file": str(ca_file), "config": str(config_path),
                          "pid": self.connector.pid if self.connector else None},
            "aws": {"endpoint_url": self.aws.endpoint_url, "connector_role_arn": role_arn},
            "oidc": {"issuer": self.issuer.url, "client_id": OIDC_CLIENT_ID},
            "clusters": {
                c.name: {"region": c.region, "socket": c.socket, "exposed": c.exposed, "tags": c.tags,
                         "endpoint": self.servers[c.name].url, "version": c.version}
                for c in CLUSTERS
            },
            "sockets": [c.socket for c in exposed],
            "users": {u.name: {"email": u.email, "groups": list(u.groups)} for u in USERS.values()},
            "kubeconfig": str(kubeconfig),
            "token_cache": str(self.state_dir / "tokens"),
            "audit_log": str(self.state_dir / "audit.log"),
            "recordings": str(self.state_dir / "recordings"),
            "started_in_seconds": round(time.monotonic() - started, 2),
        }
        (self.state_dir / "sandbox.json").write_text(json.dumps(self.info, indent=2) + "\n")

    async def stop(self) -> None:
        if self.connector is not None and self.connector.poll() is None:
            self.connector.terminate()
            try:
                await asyncio.to_thread(self.connector.wait, 30)
            except subprocess.TimeoutExpired:
                self.connector.kill()
        self.connector = None
        if self.issuer is not None:
            await self.issuer.stop()
            self.issuer = None
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()
        self.aws.stop()

    # --- the steps -------------------------------------------------------------------------------

    def _create_connector_role(self) -> str:
        iam = self.aws.client("iam")
        host_arn = iam.get_user(UserName="connector-host")["User"]["Arn"]
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
            scratch_dir=self.state_dir / "pods" / cluster.name,
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
        # What `pulumi up` does per cluster in aws-auth mode: merge the role into mapRoles, keeping the
        # node role entry byte for byte, then create the ClusterRole/Binding for the mapped group.
        aws_auth = server.store.get("", "v1", "configmaps", "kube-system", "aws-auth")
        mapping = RoleMapping(role_arn, "eks-access-connector:{{SessionName}}", (KUBERNETES_GROUP,))
        aws_auth["data"]["mapRoles"] = merge_map_roles(aws_auth["data"].get("mapRoles"), mapping)
        server.store.apply(aws_auth)
        for manifest in rbac_manifests(FULL_ACCESS, group_subject(KUBERNETES_GROUP)):
            server.store.apply(manifest)

    def _write_connector_config(self, role_arn: str) -> Path:
        assert self.issuer is not None
        config = {
            "server": {
                "listen": f"127.0.0.1:{self.port}",
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
            "policies": POLICIES,
        }
        path = self.state_dir / "connector.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_connector(self, config_path: Path, host_credentials: Any) -> None:
        env = {
            **os.environ,
            **self.aws.env(),
            "AWS_ACCESS_KEY_ID": host_credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": host_credentials.secret_access_key.get_secret_value(),
        }
        env.pop("AWS_PROFILE", None)
        log_file = (self.state_dir / "connector.log").open("wb")
        self.connector = subprocess.Popen(
            [sys.executable, "-m", "connector", "serve", "--config", str(config_path)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )
        log_file.close()

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
                        async with http.get(
                            f"{url}/v1/sockets", ssl=ctx, headers={"Authorization": f"Bearer {admin}"}
                        ) as r:
                            listed = (await r.json()).get("sockets", []) if r.status == 200 else []
                        found = {s["name"] for s in listed}
                        if wanted <= found:
                            return
                        last = f"sockets found so far: {sorted(found)}"
                    except (aiohttp.ClientError, OSError, ValueError) as exc:
                        last = str(exc)
                await asyncio.sleep(0.2)
        raise SandboxError(f"the connector was not ready after {READY_TIMEOUT_SECONDS:.0f} s ({last}); "
                           f"see {self.state_dir / 'connector.log'}")

    def _log_in_and_write_kubeconfig(self, connector_url: str, ca_file: Path) -> Path:
        assert self.issuer is not None
        cache = self.state_dir / "tokens"
        sockets = [c.socket for c in CLUSTERS if c.exposed]
        config: dict[str, Any] = {}
        for user in USERS:
            log_in_demo_user(connector_url, self.issuer.url, OIDC_CLIENT_ID, user, cache)
            entries = connector_entries(
                connector_url, sockets, ca_file=ca_file, profile=user, cache_dir=cache,
                context_template="{profile}@{socket}",
            )
            apply_entries(config, entries, set_current=None)
        config["current-context"] = f"alice@{sockets[0]}"
        path = self.state_dir / "kubeconfig"
        path.write_text(render(config))
        path.chmod(0o600)
        return path


def tour(info: dict[str, Any]) -> str:
    first = info["sockets"][0]
    prod = first
    return "\n".join(
        [
            f"The sandbox is up in {info['started_in_seconds']} s. Connector: {info['connector']['url']}",
            f"  sockets: {', '.join(info['sockets'])} (the scratch cluster is not exposed: tag expose=false)",
            "  users: alice (platform-admins: everything), bob (developers: read default+dev, exec in dev), "
            "carol (no policy)",
            "",
            "Try:",
            f"  export KUBECONFIG={info['kubeconfig']}",
            f"  kubectl --context alice@{prod} get pods -A",
            f"  kubectl --context bob@{prod} -n dev exec api-0 -- sh -c 'echo hello from $HOSTNAME'",
            f"  kubectl --context bob@{prod} delete pod -n default --all      # Forbidden, with the policy's reason",
            "",
            f"Audit log: {info['audit_log']}   Recordings: {info['recordings']}",
            f"  python -m connector sessions list --audit-log {info['audit_log']}",
            "Ctrl-C stops everything.",
        ]
    )
