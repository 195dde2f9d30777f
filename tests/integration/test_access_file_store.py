"""The access request file store: racing approvers in separate processes, restarts, failed changes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import time
from datetime import timedelta
from pathlib import Path

import pytest

from connector.access.file_store import FileStore
from connector.identity import Identity
from connector.policy import access
from connector.policy.access import APPROVED, PENDING, AccessRequestError
from tests.unit.test_access_requests import ALICE, BOB, DEFS, T0, ZED

ROUNDS = 3
# Held between reading and writing, so that without the lock both racers would read the same state.
WINDOW_SECONDS = 0.3


def _approve_as(path: str, request_id: str, user: str, start: multiprocessing.synchronize.Event) -> str:
    def slow_approve(request: access.AccessRequest) -> access.AccessRequest:
        time.sleep(WINDOW_SECONDS)
        return access.approve(request, DEFS, Identity(user, ("platform-admins",)), T0)

    start.wait()
    try:
        FileStore(path).update(request_id, slow_approve)
        return "ok"
    except AccessRequestError as exc:
        return f"{exc.status}"


def _race(path: Path, request_id: str, users: list[str]) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(len(users)) as pool:
            pending = [pool.apply_async(_approve_as, (str(path), request_id, u, start)) for u in users]
            start.set()
            return sorted(p.get(timeout=60) for p in pending)


def test_two_distinct_approvers_racing_both_count(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    store = FileStore(path)
    ids = [store.create(access.create(DEFS, BOB, "two-person", "", "30m", T0)).id for _ in range(ROUNDS)]
    for request_id in ids:
        assert _race(path, request_id, ["alice", "zed"]) == ["ok", "ok"]
    for request in FileStore(path).list():
        assert request.state == APPROVED
        assert sorted(a.user for a in request.approvals) == ["alice", "zed"]


def test_the_same_approver_racing_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    request = FileStore(path).create(access.create(DEFS, BOB, "two-person", "", "30m", T0))
    assert _race(path, request.id, ["alice", "alice"]) == ["409", "ok"]
    stored = FileStore(path).get(request.id)
    assert stored.state == PENDING and [a.user for a in stored.approvals] == ["alice"]


def test_a_restarted_store_sees_everything_and_grants(tmp_path: Path) -> None:
    path = tmp_path / "state" / "requests.json"
    first = FileStore(path)
    made = first.create(access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0))
    first.update(made.id, lambda r: access.approve(r, DEFS, ALICE, T0))
    restarted = FileStore(path)
    assert [r.id for r in restarted.list()] == [made.id]
    assert access.grants_for(restarted.list(), DEFS, BOB, T0 + timedelta(minutes=59)) == {
        "prod-exec": made.id,
        "dev-read": made.id,
    }
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in path.parent.iterdir()) == ["requests.json", "requests.json.lock"]


def test_a_refused_change_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    store = FileStore(path)
    made = store.create(access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0))
    before = path.read_bytes()
    with pytest.raises(AccessRequestError, match="bob may not approve"):
        store.update(made.id, lambda r: access.approve(r, DEFS, BOB, T0))
    with pytest.raises(AccessRequestError, match="no access request ar-nope") as caught:
        store.update("ar-nope", lambda r: r)
    assert caught.value.status == 404
    with pytest.raises(AccessRequestError, match="already exists"):
        store.create(made)
    assert path.read_bytes() == before
    assert store.update(made.id, lambda r: access.approve(r, DEFS, ZED, T0)).state == APPROVED


def test_a_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match=r"requests\.json is unreadable"):
        FileStore(path).list()


def test_a_missing_file_is_an_empty_store(tmp_path: Path) -> None:
    assert FileStore(tmp_path / "none.json").list() == []
