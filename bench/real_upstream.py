"""A real kube-apiserver for bench.proxy: 1.33 on its own etcd, holding N pods in `default`.

The control plane is the sandbox's (sandbox.controlplane: the binaries `make control-plane` builds,
TLS with the cluster's own CA, RBAC); the bench reaches it as kubernetes-admin by client certificate
(`pki/admin.crt`), directly and through each proxy, so the list it measures is the apiserver's own
serialization of real objects.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

from sandbox.controlplane import binaries
from sandbox.controlplane.cluster import Etcd, RealCluster
from sandbox.controlplane.seeding import api_client, create_objects, default_service_accounts

MINOR = "1.33"


def _pods(count: int) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"web-{i:04d}", "namespace": "default", "labels": {"app": "web", "shard": str(i % 10)}},
         "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1.2.3",
                                  "ports": [{"containerPort": 8080}],
                                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}
        for i in range(count)
    ]  # fmt: skip


class RealUpstream:
    def __init__(self, scratch: Path, *, pods: int) -> None:
        self.scratch = scratch
        self.pods = pods
        self.etcd: Etcd | None = None
        self.cluster: RealCluster | None = None

    @property
    def url(self) -> str:
        assert self.cluster is not None
        return self.cluster.url

    @property
    def port(self) -> int:
        assert self.cluster is not None
        return self.cluster.port

    @property
    def pki(self) -> Path:
        return self.scratch / "bench" / "pki"

    async def __aenter__(self) -> RealUpstream:
        found = binaries.find(MINOR)
        if found is None or found.etcd is None:
            raise RuntimeError(f"kube-apiserver {MINOR} and etcd are not built: run `make control-plane` first")
        self.etcd = Etcd(found.etcd, self.scratch / "etcd")
        etcd_url = await self.etcd.start()
        self.cluster = RealCluster("bench", binaries=found, etcd_url=etcd_url, scratch_dir=self.scratch / "bench",
                                   credentials_lookup=lambda _access_key: None)  # fmt: skip
        await self.cluster.start()
        api = api_client(self.cluster.admin_kubeconfig())
        await asyncio.to_thread(create_objects, api, [*default_service_accounts(["default"]), *_pods(self.pods)])
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:  # fmt: skip
        if self.cluster is not None:
            await self.cluster.stop()
        if self.etcd is not None:
            await self.etcd.stop()
