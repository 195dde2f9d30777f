"""The `real_cluster` fixture: one real kube-apiserver 1.33 with its etcd (sandbox.controlplane), per
test module that imports it.

Needs the kube-apiserver binaries: built when `go` is on PATH (a failed build fails the tests with
its last lines), skipped with the reason when there is no `go` and nothing cached.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.controlplane import binaries
from sandbox.controlplane.cluster import Etcd, RealCluster
from tests.support.oidc import LoopThread


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    try:
        found = binaries.ensure("1.33")
    except binaries.ControlPlaneUnavailable as exc:
        if binaries.can_build():
            pytest.fail(f"the real control plane could not be built: {exc}", pytrace=False)
        pytest.skip(str(exc))
    assert found.etcd is not None
    root = tmp_path_factory.mktemp("real-control-plane")
    loop = LoopThread()
    etcd = Etcd(found.etcd, root / "etcd")
    cluster = RealCluster("prod", binaries=found, etcd_url="", scratch_dir=root / "prod",
                          credentials_lookup=lambda _access_key: None)
    try:
        cluster.etcd_url = loop.run(etcd.start())
        loop.run(cluster.start())
        yield cluster
    finally:
        loop.run(cluster.stop())
        loop.run(etcd.stop())
        loop.close()
