"""Both access stores keep one contract (connector.access.store), run as a table against each: the
file store on a temp file, the Kubernetes store on a real kube-apiserver with the AccessRequest CRD
installed. A "replica" is one more store instance on the same file or namespace; with Kubernetes it
learns what the others wrote only through its watch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from connector.access import crd
from connector.access.file_store import FileStore
from connector.access.kubernetes_store import KubernetesStore
from connector.access.store import AccessStore
from connector.identity import Identity
from connector.policy import access
from connector.policy.access import APPROVED, DENIED, PENDING, REVOKED, AccessRequest, AccessRequestError
from connector.policy.access_model import KubernetesStoreConfig
from sandbox.controlplane.cluster import RealCluster
from sandbox.controlplane.seeding import api_client, create_objects, wait_for_established
from tests.support import real_control_plane
from tests.support.oidc import LoopThread
from tests.unit.test_access_requests import ALICE, BOB, DEFS, T0, ZED

real_cluster = real_control_plane.real_cluster  # the module's fixture

# How long a replica may take to see through its watch what another one wrote.
SEEN_WITHIN_SECONDS = 30
_namespaces = itertools.count(1)

Replicas = Callable[[], AccessStore]


@pytest.fixture(scope="module")
def crd_kubeconfig(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real cluster with the AccessRequest CRD installed; the kubeconfig file to reach it."""
    definition = crd.custom_resource_definition()
    with api_client(real_cluster.admin_kubeconfig()) as api:
        create_objects(api, [definition])
        wait_for_established(api, definition["metadata"]["name"])
    path = tmp_path_factory.mktemp("store-kubeconfig") / "kubeconfig"
    path.write_text(yaml.safe_dump(real_cluster.admin_kubeconfig()))
    return path


@pytest.fixture
def kubernetes_replicas(request: pytest.FixtureRequest) -> Iterator[Replicas]:
    """Stores on one fresh namespace, each on an event loop of its own (as replicas are processes)."""
    kubeconfig: Path = request.getfixturevalue("crd_kubeconfig")
    cluster: RealCluster = request.getfixturevalue("real_cluster")
    namespace = f"access-{next(_namespaces)}"
    with api_client(cluster.admin_kubeconfig()) as api:
        create_objects(api, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    started: list[tuple[LoopThread, KubernetesStore]] = []

    def replica() -> AccessStore:
        loop = LoopThread()
        store = KubernetesStore(KubernetesStoreConfig(namespace=namespace, kubeconfig=str(kubeconfig)))
        started.append((loop, store))
        loop.run(store.start())
        loop.run(store.wait_ready())
        return store

    try:
        yield replica
    finally:
        for loop, store in started:
            loop.run(store.close())
            loop.close()


@pytest.fixture(params=["file", "kubernetes"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Replicas:
    if request.param == "file":
        return lambda: FileStore(tmp_path / "requests.json")
    return request.getfixturevalue("kubernetes_replicas")


def _seen(store: AccessStore, request_id: str, check: Callable[[AccessRequest], bool]) -> AccessRequest:
    """The request as `store` has it once `check` holds (a watch takes a moment to deliver)."""
    deadline = time.monotonic() + SEEN_WITHIN_SECONDS
    while True:
        found = next((r for r in store.list() if r.id == request_id), None)
        if found is not None and check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{request_id} as this replica sees it: {found}")
        time.sleep(0.05)


def _approve(user: Identity) -> Callable[[AccessRequest], AccessRequest]:
    return lambda r: access.approve(r, DEFS, user, T0, "looks right")


def test_file_approve_deny_revoke_seen_by_another_replica(replicas: Replicas) -> None:
    first, second = replicas(), replicas()
    glass = first.create(access.create(DEFS, BOB, "prod-break-glass", "incident 42", "1h", T0))
    denied = first.create(access.create(DEFS, BOB, "prod-break-glass", "curious", "30m", T0))
    assert (glass.state, first.get(glass.id)) == (PENDING, glass)
    assert _seen(second, glass.id, lambda r: True) == glass

    approved = second.update(glass.id, _approve(ALICE))
    assert (approved.state, approved.expires_at, [a.user for a in approved.approvals]) == (
        APPROVED, T0 + glass.duration, ["alice"],
    )  # fmt: skip
    assert _seen(first, glass.id, lambda r: r.state == APPROVED) == approved
    assert access.grants_for(first.list(), DEFS, BOB, T0) == {"prod-exec": glass.id, "dev-read": glass.id}

    first.update(denied.id, lambda r: access.deny(r, DEFS, ZED, T0, "no incident"))
    assert _seen(second, denied.id, lambda r: r.state == DENIED).decided == access.Signoff("zed", T0, "no incident")

    second.update(glass.id, lambda r: access.revoke(r, DEFS, BOB, T0, "done"))
    assert _seen(first, glass.id, lambda r: r.state == REVOKED).approvals == approved.approvals
    assert access.grants_for(first.list(), DEFS, BOB, T0) == {}
    assert [r.id for r in second.list()] == sorted([glass.id, denied.id], key=lambda i: (T0, i))


def test_a_refused_change_changes_nothing(replicas: Replicas) -> None:
    store = replicas()
    made = store.create(access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0))
    with pytest.raises(AccessRequestError, match="bob may not approve") as refused:
        store.update(made.id, _approve(BOB))
    assert refused.value.status == 403
    with pytest.raises(AccessRequestError, match="no access request ar-nope") as missing:
        store.update("ar-nope", lambda r: r)
    assert missing.value.status == 404
    with pytest.raises(AccessRequestError, match="already exists") as twice:
        store.create(made)
    assert twice.value.status == 409
    assert replicas().get(made.id) == made


def _race(stores: list[AccessStore], request_id: str, users: list[Identity]) -> list[str]:
    """Each user approves through their own replica, all at once; "ok" or the refusal's status each."""
    start = threading.Barrier(len(users))
    outcomes: list[str] = []

    def approve(store: AccessStore, user: Identity) -> None:
        start.wait()
        try:
            store.update(request_id, _approve(user))
            outcomes.append("ok")
        except AccessRequestError as exc:
            outcomes.append(str(exc.status))

    threads = [threading.Thread(target=approve, args=pair) for pair in zip(stores, users, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return sorted(outcomes)


def test_two_approvers_racing_on_two_replicas_both_count(replicas: Replicas) -> None:
    stores = [replicas(), replicas()]
    for _round in range(3):
        made = stores[0].create(access.create(DEFS, BOB, "two-person", "", "30m", T0))
        _seen(stores[1], made.id, lambda r: True)
        assert _race(stores, made.id, [ALICE, ZED]) == ["ok", "ok"]
        final = replicas().get(made.id)
        assert (final.state, sorted(a.user for a in final.approvals)) == (APPROVED, ["alice", "zed"])


def test_the_same_approver_racing_counts_once(replicas: Replicas) -> None:
    stores = [replicas(), replicas()]
    made = stores[0].create(access.create(DEFS, BOB, "two-person", "", "30m", T0))
    _seen(stores[1], made.id, lambda r: True)
    assert _race(stores, made.id, [ALICE, ALICE]) == ["409", "ok"]
    final = replicas().get(made.id)
    assert (final.state, [a.user for a in final.approvals]) == (PENDING, ["alice"])


def test_a_restarted_replica_sees_everything_and_grants(replicas: Replicas) -> None:
    first = replicas()
    made = first.create(access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0))
    first.update(made.id, _approve(ALICE))
    restarted = replicas()
    assert [r.id for r in restarted.list()] == [made.id]
    assert access.grants_for(restarted.list(), DEFS, BOB, T0) == {"prod-exec": made.id, "dev-read": made.id}


def test_approvals_computed_from_the_same_version_are_both_kept(kubernetes_replicas: Replicas) -> None:
    """Both approvers read the request before either writes: the apiserver refuses the second PUT
    (409, stale resourceVersion) and that replica applies its approval again to the fresh copy."""
    stores = [kubernetes_replicas(), kubernetes_replicas()]
    made = stores[0].create(access.create(DEFS, BOB, "two-person", "", "30m", T0))
    _seen(stores[1], made.id, lambda r: True)
    both_read = threading.Barrier(2)
    computed: list[int] = []

    def approve_once_read(user: Identity) -> Callable[[AccessRequest], AccessRequest]:
        def change(current: AccessRequest) -> AccessRequest:
            computed.append(len(current.approvals))
            if len(computed) <= 2:
                both_read.wait(30)  # each first attempt waits until both have read
            return _approve(user)(current)

        return change

    threads = [threading.Thread(target=s.update, args=(made.id, approve_once_read(u)))
               for s, u in zip(stores, [ALICE, ZED], strict=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(computed) == [0, 0, 1]  # the loser decided again, on the winner's approval
    final = kubernetes_replicas().get(made.id)
    assert (final.state, sorted(a.user for a in final.approvals)) == (APPROVED, ["alice", "zed"])
