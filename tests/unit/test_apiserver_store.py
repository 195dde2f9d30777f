"""The emulated API server's store: metadata, concurrency, deletion semantics, history and watches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.apiserver import catalog
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.store import ADDED, DELETED, MODIFIED_EVENT, Store, TooOldResourceVersion

CM = catalog.lookup("", "v1", "configmaps")
NS = catalog.lookup("", "v1", "namespaces")
PODS = catalog.lookup("", "v1", "pods")
DEPLOY = catalog.lookup("apps", "v1", "deployments")
SA = catalog.lookup("", "v1", "serviceaccounts")
assert CM and NS and PODS and DEPLOY and SA


def new_store(**kwargs: object) -> Store:
    store = Store(**kwargs)  # type: ignore[arg-type]
    for name in ("default", "dev"):
        store.create(NS, {"metadata": {"name": name}})
    return store


def deployment(name: str = "web", replicas: int = 2) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}},
    }


def test_create_fills_server_metadata() -> None:
    store = new_store()
    before = store.resource_version
    cm = store.create(CM, {"metadata": {"name": "a"}, "data": {"k": "v"}}, namespace="default")
    meta = cm["metadata"]
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert meta["namespace"] == "default"
    assert int(meta["resourceVersion"]) == before + 1 == store.resource_version
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert "generation" not in meta  # core types leave generation unset
    assert store.create(DEPLOY, deployment(), namespace="default")["metadata"]["generation"] == 1


def test_generate_name_appends_five_characters() -> None:
    store = new_store()
    made = store.create(CM, {"metadata": {"generateName": "job-"}}, namespace="default")
    name = made["metadata"]["name"]
    assert name.startswith("job-") and len(name) == len("job-") + 5
    assert set(name[4:]) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_duplicates_and_missing_objects_use_kube_wording() -> None:
    store = new_store()
    store.create(DEPLOY, deployment(), namespace="default")
    with pytest.raises(ApiError) as exists:
        store.create(DEPLOY, deployment(), namespace="default")
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")
    assert exists.value.message == 'deployments.apps "web" already exists'
    with pytest.raises(ApiError) as missing:
        store.require(PODS, "default", "nope")
    assert (missing.value.code, missing.value.message) == (404, 'pods "nope" not found')
    with pytest.raises(ApiError) as no_namespace:
        store.create(CM, {"metadata": {"name": "a"}}, namespace="ghost")
    assert no_namespace.value.message == 'namespaces "ghost" not found'


def test_update_with_a_stale_resource_version_conflicts() -> None:
    store = new_store()
    cm = store.create(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}}, namespace="default")
    cm["data"]["k"] = "2"
    updated = store.update(CM, cm, namespace="default")
    assert int(updated["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
    cm["data"]["k"] = "3"  # still carries the old resourceVersion
    with pytest.raises(ApiError) as conflict:
        store.update(CM, cm, namespace="default")
    assert conflict.value.code == 409
    assert conflict.value.message == ('Operation cannot be fulfilled on configmaps "a": the object has been '
                                      "modified; please apply your changes to the latest version and try again")


def test_update_without_changes_writes_nothing() -> None:
    store = new_store()
    cm = store.create(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}}, namespace="default")
    rv = store.resource_version
    same = store.update(CM, cm, namespace="default")
    assert same["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    assert store.resource_version == rv


def test_generation_counts_spec_changes_only() -> None:
    store = new_store()
    dep = store.create(DEPLOY, deployment(), namespace="default")
    dep["metadata"]["labels"] = {"team": "a"}
    dep = store.update(DEPLOY, dep, namespace="default")
    assert dep["metadata"]["generation"] == 1
    dep["spec"]["replicas"] = 5
    dep = store.update(DEPLOY, dep, namespace="default")
    assert dep["metadata"]["generation"] == 2
    assert dep["status"]["readyReplicas"] == 5
    assert dep["status"]["observedGeneration"] == 2


def test_status_only_changes_through_the_status_subresource() -> None:
    store = new_store()
    dep = store.create(DEPLOY, deployment(), namespace="default")
    dep["status"] = {"replicas": 99}
    assert store.update(DEPLOY, dep, namespace="default")["status"]["readyReplicas"] == 2
    dep = store.require(DEPLOY, "default", "web")
    dep["status"] = {"replicas": 7}
    dep["spec"]["replicas"] = 100
    after = store.update(DEPLOY, dep, namespace="default", subresource="status")
    assert after["status"] == {"replicas": 7}
    assert after["spec"]["replicas"] == 2


def test_created_pods_run_and_get_a_pod_ip() -> None:
    store = new_store()
    pod = store.create(PODS, {"metadata": {"name": "p"},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace="dev")
    status = pod["status"]
    assert status["phase"] == "Running"
    assert status["podIP"].startswith("10.0.")
    assert status["containerStatuses"][0]["ready"] is True
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # no tag means latest


def test_finalizers_hold_deletion_until_removed() -> None:
    store = new_store()
    store.create(CM, {"metadata": {"name": "held", "finalizers": ["example.com/keep"]}}, namespace="default")
    obj, gone = store.delete(CM, "default", "held")
    assert not gone and obj["metadata"]["deletionTimestamp"]
    obj["metadata"]["finalizers"] = []
    store.update(CM, obj, namespace="default")
    assert store.get(CM, "default", "held") is None


def test_deleting_a_namespace_deletes_its_objects() -> None:
    store = new_store()
    store.create(CM, {"metadata": {"name": "a"}}, namespace="dev")
    assert store.get(SA, "dev", "default") is not None  # the controller's default ServiceAccount
    watcher = store.subscribe(NS, None)
    terminating, gone = store.delete(NS, "", "dev")
    assert gone and terminating["status"]["phase"] == "Terminating"
    assert store.get(CM, "dev", "a") is None and store.get(NS, "", "dev") is None
    kinds = [watcher.queue.get_nowait().type for _ in range(watcher.queue.qsize())]
    assert kinds == [MODIFIED_EVENT, DELETED]
    with pytest.raises(ApiError) as immortal:
        store.delete(NS, "", "default")
    assert immortal.value.code == 403
    assert immortal.value.message == 'namespaces "default" is forbidden: this namespace may not be deleted'


def test_owned_objects_are_garbage_collected_unless_orphaned() -> None:
    store = new_store()
    owner = store.create(DEPLOY, deployment(), namespace="default")
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner["metadata"]["uid"]}
    store.create(CM, {"metadata": {"name": "owned", "ownerReferences": [ref]}}, namespace="default")
    store.delete(DEPLOY, "default", "web")
    assert store.get(CM, "default", "owned") is None
    owner = store.create(DEPLOY, deployment(), namespace="default")
    ref["uid"] = owner["metadata"]["uid"]
    store.create(CM, {"metadata": {"name": "kept", "ownerReferences": [ref]}}, namespace="default")
    store.delete(DEPLOY, "default", "web", propagation="Orphan")
    assert store.get(CM, "default", "kept") is not None


def test_pods_go_through_terminating_unless_forced() -> None:
    store = new_store()
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    for name in ("graceful", "forced"):
        store.create(PODS, {"metadata": {"name": name}, "spec": spec}, namespace="default")
    watcher = store.subscribe(PODS, "default")
    last, gone = store.delete(PODS, "default", "graceful")
    assert gone and last["metadata"]["deletionGracePeriodSeconds"] == 30
    store.delete(PODS, "default", "forced", grace_period_seconds=0)
    events = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
    assert [(e.type, e.name) for e in events] == [
        (MODIFIED_EVENT, "graceful"), (DELETED, "graceful"), (DELETED, "forced")]


def test_list_at_rebuilds_a_past_snapshot() -> None:
    store = new_store()
    store.create(CM, {"metadata": {"name": "a"}, "data": {"v": "1"}}, namespace="default")
    then = store.resource_version
    cm = store.require(CM, "default", "a")
    cm["data"]["v"] = "2"
    store.update(CM, cm, namespace="default")
    store.create(CM, {"metadata": {"name": "b"}}, namespace="default")
    store.delete(CM, "default", "a")
    past = store.list_at(CM, "default", then)
    assert [(o["metadata"]["name"], o["data"]) for o in past] == [("a", {"v": "1"})]
    assert [o["metadata"]["name"] for o in store.list(CM, "default")] == ["b"]


def test_history_is_bounded_like_a_compacted_etcd() -> None:
    store = new_store(history=3)
    start = store.resource_version
    for i in range(5):
        store.create(CM, {"metadata": {"name": f"c{i}"}}, namespace="default")
    with pytest.raises(TooOldResourceVersion, match=f"too old resource version: {start}"):
        store.events_since(CM, None, start)
    with pytest.raises(TooOldResourceVersion):
        store.list_at(CM, None, start)
    recent = store.events_since(CM, None, store.resource_version - 2)
    assert [e.name for e in recent] == ["c3", "c4"]
    assert all(e.type == ADDED for e in recent)


def test_a_watcher_that_falls_behind_is_closed() -> None:
    store = new_store()
    watcher = store.subscribe(CM, "default")
    for i in range(watcher.queue.maxsize + 1):
        store.create(CM, {"metadata": {"name": f"c{i}"}}, namespace="default")
    assert watcher.overflowed
    items = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
    assert items[-1] is None  # the end-of-stream marker


async def test_watchers_only_see_their_resource_and_namespace() -> None:
    store = new_store()
    watcher = store.subscribe(CM, "dev")
    store.create(CM, {"metadata": {"name": "elsewhere"}}, namespace="default")
    store.create(DEPLOY, deployment(), namespace="dev")
    store.create(CM, {"metadata": {"name": "here"}}, namespace="dev")
    event = await asyncio.wait_for(watcher.queue.get(), 1)
    assert event is not None and event.name == "here" and watcher.queue.empty()


def test_apply_creates_or_replaces_and_sets_status() -> None:
    fixed = datetime(2025, 1, 1, tzinfo=UTC)
    store = new_store(now=lambda: fixed)
    created = store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1"}})
    assert created["metadata"]["namespace"] == "default"
    assert created["metadata"]["creationTimestamp"] == "2025-01-01T00:00:00Z"
    replaced = store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"b": "2"}})
    assert replaced["data"] == {"b": "2"}
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done", "namespace": "dev"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Succeeded"}}
    store.apply(pod)
    assert store.apply(pod)["status"] == {"phase": "Succeeded"}
    assert store.get_by_kind("v1", "Pod", "done", "dev")["status"]["phase"] == "Succeeded"
    with pytest.raises(ValueError, match="not a resource this API server serves"):
        store.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}})


def test_validation_errors_are_422_with_causes() -> None:
    store = new_store()
    bad = deployment()
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    bad["spec"]["replicas"] = -1
    with pytest.raises(ApiError) as invalid:
        store.create(DEPLOY, bad, namespace="default")
    err = invalid.value
    assert err.code == 422 and err.reason is None and err.body()["reason"] == "Invalid"
    assert err.message.startswith('Deployment.apps "web" is invalid: [spec.template.metadata.labels: Invalid value: '
                                  'map[string]string{"app":"other"}: `selector` does not match template `labels`')
    fields = [c["field"] for c in err.details["causes"]]
    assert fields == ["spec.template.metadata.labels", "spec.replicas"]
    with pytest.raises(ApiError) as bad_name:
        store.create(CM, {"metadata": {"name": "Not_Valid"}}, namespace="default")
    assert "a lowercase RFC 1123 subdomain must consist of" in bad_name.value.message


def test_store_clock_sets_timestamps() -> None:
    moments = iter([datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(100)])
    store = new_store(now=lambda: next(moments))
    cm = store.create(CM, {"metadata": {"name": "a"}}, namespace="default")
    assert cm["metadata"]["creationTimestamp"].startswith("2025-01-01T00:00:")
