"""`kubectl get --raw` through the connector, on the sandbox. client-go sends a raw path to the root of
the kubeconfig's server, not under its /sockets/NAME: a whole path (/sockets/NAME/metrics) reaches the
cluster's non-resource paths when the user's policy allows them (the `full` preset ClusterRole the
sandbox binds grants nonResourceURLs "*"), a path at the root is the connector's, which says where a
cluster's API is, and the connector's own metrics are only on its metrics listener."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from connector.proxy.app import not_found_message
from sandbox.world import CLUSTERS
from tests.support.sandbox_process import AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
ALICE, BOB = f"alice@{PROD}", f"bob@{PROD}"


def test_a_whole_path_reaches_the_clusters_non_resource_paths_when_the_policy_allows(
    kubectl: Callable[..., Kubectl], sandbox: dict[str, Any], audit: AuditLog
) -> None:
    k = kubectl("1.33")
    done = k.run("get", "--raw", f"/sockets/{PROD}/healthz", context=ALICE)
    assert (done.returncode, done.stdout) == (0, "ok"), done.stderr
    if sandbox["clusters"]["prod"]["kind"] == "real":
        # /metrics is not public on kube-apiserver: only the ClusterRole's nonResourceURLs let it through.
        done = k.run("get", "--raw", f"/sockets/{PROD}/metrics", context=ALICE)
        assert done.returncode == 0, done.stderr
        assert "apiserver_request_total" in done.stdout and "connector_requests_total" not in done.stdout
    since = audit.mark()
    done = k.run("get", "--raw", f"/sockets/{PROD}/metrics", context=BOB)  # developers: no non-resource rule
    assert done.returncode == 1 and "Error from server (Forbidden): " in done.stderr, done.stderr
    assert "get /metrics" in done.stderr, done.stderr
    event = audit.wait(since, user="bob@example.com", socket=PROD)
    assert (event["decision"], event["code"], event["path"]) == ("deny", 403, f"/sockets/{PROD}/metrics")


def test_the_root_is_the_connectors_and_its_metrics_are_on_their_own_listener(
    kubectl: Callable[..., Kubectl], sandbox: dict[str, Any]
) -> None:
    k = kubectl("1.33")
    assert k.run("get", "pods", "-n", "default", context=ALICE).returncode == 0
    done = k.run("get", "--raw", "/metrics", context=ALICE)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert f"Error from server (NotFound): {not_found_message('/metrics')}" in done.stderr, done.stderr
    url = sandbox["connector"]["metrics_url"]
    assert url.startswith("http://127.0.0.1:"), url
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert f'connector_requests_total{{code="200",decision="allow",socket="{PROD}",verb="list"}}' in text
