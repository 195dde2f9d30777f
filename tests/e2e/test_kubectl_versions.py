"""Every kubectl our users run, 1.27 through 1.33, through the connector as it is: no environment
variables, no flags. 1.27-1.29 exec over SPDY/3.1, 1.30+ over websocket (v5.channel.k8s.io); the
audit log records which protocol each session used, so the test sees both paths really ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.world import CLUSTERS
from tests.e2e.conftest import KUBECTL_VERSIONS
from tests.support.sandbox_process import AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
BOB = "bob@example.com"


@pytest.mark.every_kubectl
@pytest.mark.parametrize("version", sorted(KUBECTL_VERSIONS, key=lambda v: KUBECTL_VERSIONS[v]))
def test_every_kubectl_lists_applies_and_execs(
    kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path, version: str,
    execs_over_websocket: Callable[[str, dict[str, str]], bool],
) -> None:
    k, bob, alice = kubectl(version), f"bob@{PROD}", f"alice@{PROD}"

    listed = k.run("get", "pods", "-n", "dev", context=bob)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "api-0" in listed.stdout

    name = f"versions-{version.replace('.', '-')}"
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: '{version}'\n")
    applied = k.run("apply", "-n", "default", "-f", str(manifest), context=alice)
    assert (applied.returncode, applied.stdout.strip()) == (0, f"configmap/{name} created"), applied.stderr

    since = audit.mark()
    executed = k.run("exec", "-n", "dev", "api-0", "--", "sh", "-c", f"echo kubectl {version}; exit 4", context=bob)
    assert executed.returncode == 4, executed.stderr
    assert executed.stdout == f"kubectl {version}\n"
    ended = audit.wait(since, user=BOB, socket=PROD, subresource="exec", stage="ResponseComplete", code=101)
    websocket = execs_over_websocket(version, {})
    assert ended["code"] == 101
    assert ended["session_protocol"] == ("v5.channel.k8s.io" if websocket else "v4.channel.k8s.io"), ended
