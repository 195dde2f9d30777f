"""Real control planes on 127.0.0.1: one etcd, and per cluster a kube-apiserver, its token webhook
and one node (`sandbox.controlplane.kubelet`).

`Etcd` is one process every cluster of a sandbox shares, each cluster under its own key prefix
(`--etcd-prefix`), which costs one etcd's start-up and memory instead of one per cluster.

`RealCluster` starts a kube-apiserver the way an EKS control plane is configured where it matters
to the connector: TLS with the cluster's own CA, RBAC authorization, EKS tokens authenticated by a
token webhook (`token_webhook`), service-account tokens signed by the apiserver, the kubelet
reached at the node's InternalIP with a client certificate. The harness itself is `kubernetes-admin`
in `system:masters` by client certificate (the cluster creator), which is how it seeds the cluster.

Every process is started with ports chosen free and stopped by PID (SIGTERM, then SIGKILL), with
its output in the cluster's scratch directory; a process that dies while starting fails the start
with the last lines of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector.aws.token import AwsPrincipal
from connector.pki import KeyPair, generate_ca, issue_certificate
from sandbox.controlplane.binaries import Binaries
from sandbox.controlplane.kubelet import Node
from sandbox.controlplane.loopback import free_port
from sandbox.controlplane.token_webhook import TokenWebhook

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0
ADMIN_USER = "kubernetes-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
WEBHOOK_CACHE_TTL = "10s"


class ControlPlaneError(Exception):
    """A control-plane process could not start; the message has the reason and its log's last lines."""


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """A child process with its output in `log`, stopped by PID."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def check_running(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ControlPlaneError(f"{self.name} exited with code {self.popen.returncode} while starting; "
                                    f"the end of {self.log}:\n{_log_tail(self.log)}")

    async def stop(self) -> None:
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(popen.wait, STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            await asyncio.to_thread(popen.wait)


async def _wait_healthy(process: _Process, url: str, ssl_context: ssl.SSLContext | bool, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            process.check_running()
            try:
                async with http.get(url, ssl=ssl_context) as response:
                    if response.status == 200:
                        return
                    last = f"{response.status}: {(await response.text())[:300]}"
            except (aiohttp.ClientError, OSError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.2)
    raise ControlPlaneError(f"{what} was not healthy after {START_TIMEOUT_SECONDS:.0f} s ({last}); "
                            f"the end of {process.log}:\n{_log_tail(process.log)}")


class Etcd:
    """One etcd on 127.0.0.1 (client and peer ports chosen free), its data under `data_dir`."""

    def __init__(self, binary: Path, data_dir: Path) -> None:
        self.binary, self.data_dir = binary, data_dir
        self.url = ""
        self._process: _Process | None = None

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        self._process = _Process("etcd", [
            str(self.binary), "--name=sandbox", f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=sandbox=http://127.0.0.1:{peer}", "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648", "--log-level=warn",
        ], self.data_dir / "etcd.log")
        self._process.start()
        await _wait_healthy(self._process, f"{self.url}/health", False, "etcd")
        return self.url

    async def stop(self) -> None:
        if self._process is not None:
            await self._process.stop()
            self._process = None


def _ec_key_pems() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class RealCluster:
    """One cluster: kube-apiserver (from `binaries`) on etcd at `etcd_url`, a token webhook, a node."""

    def __init__(
        self,
        name: str,
        *,
        binaries: Binaries,
        etcd_url: str,
        scratch_dir: Path,
        credentials_lookup: Callable[[str], AwsPrincipal | None],
        extra_sts_endpoints: Collection[str] = (),
    ) -> None:
        self.name = name
        self.binaries = binaries
        self.etcd_url = etcd_url
        self.dir = scratch_dir
        self.webhook_ssl: ssl.SSLContext | None = None
        self._credentials_lookup = credentials_lookup
        self._extra_sts_endpoints = tuple(extra_sts_endpoints)
        self.ca = generate_ca(f"{name}-ca")
        self.port = 0
        self.version = ""
        self._apiserver: _Process | None = None
        self.webhook: TokenWebhook | None = None
        self.node: Node | None = None

    # --- what callers use ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_path(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    def admin_ssl(self) -> ssl.SSLContext:
        """A client context trusting the cluster and presenting kubernetes-admin's certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(str(self.dir / "pki" / "admin.crt"), str(self.dir / "pki" / "admin.key"))
        return context

    def admin_kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig (as a dict) for kubernetes-admin, with the credentials inline."""
        pki = self.dir / "pki"
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": self.name,
            "clusters": [{"name": self.name,
                          "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": ADMIN_USER, "user": {"client-certificate": str(pki / "admin.crt"),
                                                    "client-key": str(pki / "admin.key")}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": ADMIN_USER}}],
        }

    # --- lifecycle -------------------------------------------------------------------------------

    def _write_pki(self) -> Path:
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)

        def write(name: str, pair: KeyPair) -> None:
            (pki / f"{name}.crt").write_bytes(pair.cert_pem)
            key = pki / f"{name}.key"
            key.write_bytes(pair.key_pem)
            key.chmod(0o600)

        self.ca_path.write_bytes(self.ca.cert_pem)
        write("apiserver", issue_certificate(self.ca, "kube-apiserver", hosts=(
            "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.0.0.1")))
        write("admin", issue_certificate(self.ca, ADMIN_USER, organizations=("system:masters",), client=True))
        write("kubelet-client", issue_certificate(self.ca, "kube-apiserver-kubelet-client",
                                                  organizations=("system:masters",), client=True))
        write("kubelet", issue_certificate(self.ca, f"{self.name}-node-1", hosts=("127.0.0.1",)))
        write("webhook", issue_certificate(self.ca, "aws-iam-authenticator", hosts=("127.0.0.1",)))
        sa_private, sa_public = _ec_key_pems()
        (pki / "sa.key").write_bytes(sa_private)
        (pki / "sa.pub").write_bytes(sa_public)
        return pki

    def _serving(self, name: str, *, client_ca: bool = False) -> ssl.SSLContext:
        pki = self.dir / "pki"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pki / f"{name}.crt"), str(pki / f"{name}.key"))
        if client_ca:
            context.load_verify_locations(cafile=str(self.ca_path))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        pki = self._write_pki()
        self.webhook = TokenWebhook(self.name, serving_ssl=self._serving("webhook"),
                                    credentials_lookup=self._credentials_lookup,
                                    extra_sts_endpoints=self._extra_sts_endpoints)
        webhook_url = await self.webhook.start()
        webhook_config = self.dir / "token-webhook.kubeconfig"
        webhook_config.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "webhook",
            "clusters": [{"name": "aws-iam-authenticator",
                          "cluster": {"server": webhook_url, "certificate-authority": str(self.ca_path)}}],
            "users": [{"name": "apiserver", "user": {}}],
            "contexts": [{"name": "webhook", "context": {"cluster": "aws-iam-authenticator", "user": "apiserver"}}],
        }))
        self.port = free_port()
        self._apiserver = _Process(f"kube-apiserver {self.binaries.minor} ({self.name})", [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}", f"--etcd-prefix=/registry-{self.name}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={self.ca_path}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}", f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}", "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC", "--anonymous-auth=true",
            f"--authentication-token-webhook-config-file={webhook_config}",
            f"--authentication-token-webhook-cache-ttl={WEBHOOK_CACHE_TTL}",
            "--authentication-token-webhook-version=v1",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}", f"--kubelet-certificate-authority={self.ca_path}",
            "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true",
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=1",
        ], self.dir / "kube-apiserver.log")
        self._apiserver.start()
        admin = self.admin_ssl()
        await _wait_healthy(self._apiserver, f"{self.url}/readyz", admin, self._apiserver.name)
        self.webhook.read_aws_auth_from(self.url, admin)
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/version", ssl=admin) as response:
            self.version = str((await response.json())["gitVersion"])
        self.node = Node(f"{self.name}-node-1", api_url=self.url, api_ssl=admin,
                         serving_ssl=self._serving("kubelet", client_ca=True), kubelet_version=self.version,
                         scratch_dir=self.dir / "pods")
        await self.node.start()

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
            self.node = None
        if self._apiserver is not None:
            await self._apiserver.stop()
            self._apiserver = None
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None
