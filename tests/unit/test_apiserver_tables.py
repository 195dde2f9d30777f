"""meta.k8s.io/v1 Tables: kube-apiserver's columns and cells, which `kubectl get` prints as they come."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.apiserver import catalog
from sandbox.apiserver.tables import human_duration, table

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PODS = catalog.lookup("", "v1", "pods")
DEPLOY = catalog.lookup("apps", "v1", "deployments")
NS = catalog.lookup("", "v1", "namespaces")
CM = catalog.lookup("", "v1", "configmaps")
ROLES = catalog.lookup("rbac.authorization.k8s.io", "v1", "roles")
assert PODS and DEPLOY and NS and CM and ROLES


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (150, "2m30s"), (600, "10m"),
     (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"), (47 * 3600, "47h"),
     (48 * 3600, "2d"), (50 * 3600, "2d2h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"),
     (731 * 86400, "2y1d"), (8 * 365 * 86400, "8y")],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def pod(**status: object) -> dict:
    return {
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2025-03-01T11:55:00Z"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5", **status},
    }


def running(name: str, restarts: int = 0, finished: str | None = None) -> dict:
    status: dict = {"name": name, "ready": True, "restartCount": restarts, "state": {"running": {}}}
    if finished:
        status["lastState"] = {"terminated": {"finishedAt": finished}}
    return status


def test_pod_rows() -> None:
    result = table(PODS, [pod(containerStatuses=[running("a", 2, "2025-03-01T11:59:00Z"), {
        "name": "b", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])],
        now=NOW)
    assert [c["name"] for c in result["columnDefinitions"]] == [
        "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
    assert [c["priority"] for c in result["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert result["rows"][0]["cells"] == ["web-1", "1/2", "CrashLoopBackOff", "2 (60s ago)", "5m", "10.0.0.5",
                                          "node-a", "<none>", "<none>"]
    terminating = pod(containerStatuses=[running("a"), running("b")])
    terminating["metadata"]["deletionTimestamp"] = "2025-03-01T12:00:00Z"
    assert table(PODS, [terminating], now=NOW)["rows"][0]["cells"][1:4] == ["2/2", "Terminating", "0"]


def test_row_objects_follow_include_object() -> None:
    obj = pod()
    assert table(PODS, [obj], now=NOW)["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    assert table(PODS, [obj], now=NOW, include_object="Object")["rows"][0]["object"] is obj
    assert "object" not in table(PODS, [obj], now=NOW, include_object="None")["rows"][0]


def test_deployment_namespace_configmap_and_default_rows() -> None:
    deployment = {"metadata": {"name": "web", "creationTimestamp": "2025-03-01T09:00:00Z"},
                  "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}},
                  "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert table(DEPLOY, [deployment], now=NOW)["rows"][0]["cells"] == [
        "web", "2/3", 3, 2, "3h", "app", "nginx:1.27", "app=web"]
    namespace = {"metadata": {"name": "dev", "creationTimestamp": "2025-02-27T12:00:00Z"},
                 "status": {"phase": "Active"}}
    assert table(NS, [namespace], now=NOW)["rows"][0]["cells"] == ["dev", "Active", "2d"]
    configmap = {"metadata": {"name": "c", "creationTimestamp": "2025-03-01T12:00:00Z"},
                 "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    assert table(CM, [configmap], now=NOW)["rows"][0]["cells"] == ["c", 2, "0s"]
    role = {"metadata": {"name": "reader", "creationTimestamp": "2025-03-01T12:00:00Z"}}
    result = table(ROLES, [role], now=NOW, list_meta={"resourceVersion": "7"})
    assert [c["name"] for c in result["columnDefinitions"]] == ["Name", "Created At"]
    assert result["rows"][0]["cells"] == ["reader", "2025-03-01T12:00:00Z"]
    assert result["metadata"] == {"resourceVersion": "7"}
    assert table(ROLES, [role], now=NOW, headers=False)["columnDefinitions"] is None
