"""The console's session index on real files and SQLite: the same sessions as `sessions list`, kept
caught up incrementally (audit log by offset, recordings directory by mtime), filtered and paged by
SQLite, rebuilt when deleted, and answering (with a warning) while another process holds it."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

from connector.audit.sessions_cli import Sources, collect_sessions
from connector.console.session_index import SessionIndex, index_path
from tests.unit import test_sessions_cli
from tests.unit.test_sessions_cli import audit_line, record

world = test_sessions_cli.world  # the fixture: sessions made by the real recorder, and their audit log

T0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)


def _sources(world: dict) -> Sources:
    return Sources(audit_log=world["audit"], directory=world["rec"], s3=None)


def _index(tmp_path: Path, sources: Sources, **options) -> SessionIndex:
    return SessionIndex(index_path(tmp_path / "state", sources), sources, **options)


def _all(index: SessionIndex, **filters) -> list:
    values = {"user": "", "socket": "", "since": None, **filters}
    return index.listing(**values, offset=0, limit=1000).rows


def test_the_index_lists_what_sessions_list_lists_newest_first(world, tmp_path):
    sources = _sources(world)
    expected = list(reversed(collect_sessions(sources, include_s3=False, since=None, warnings=[])))
    rows = _all(_index(tmp_path, sources))
    assert [r.session_id for r in rows] == ["req-carol", "req-bob", "req-alice", "req-old"]
    assert rows == expected
    alice = rows[2]
    assert (alice.user, alice.exit, alice.command, alice.sources) == ("alice", "0", ["sh", "-c", "echo hi"],
                                                                       {"audit", "recording"})  # fmt: skip
    assert rows[0].exit == "running"


async def test_catching_up_reads_only_what_is_new_and_a_half_written_line_waits(world, tmp_path, monkeypatch):
    sources = _sources(world)
    index = _index(tmp_path, sources)
    assert len(_all(index)) == 4

    def unexpected(path):
        raise AssertionError(f"{path} read again, though the directory did not change")

    with monkeypatch.context() as patched:
        patched.setattr("connector.console.session_index.read_local_recording", unexpected)
        assert len(_all(index)) == 4
    whole = audit_line("req-eve", "eve", "prod", "ResponseComplete", "2024-05-01T11:00:00Z")
    with world["audit"].open("a") as f:
        f.write(whole[:40])  # the connector is writing this line
    assert len(_all(index)) == 4
    with world["audit"].open("a") as f:
        f.write(whole[40:] + "\n")
    await record(world["rec"], "req-frank", "frank", "staging", [b"hi\n"], 1)
    rows = {r.session_id: r for r in _all(index)}
    assert rows["req-eve"].user == "eve" and rows["req-frank"].exit == "1"
    assert len(rows) == 6
    assert len(index.audit_lines("req-alice", 10)) == 2
    assert json.loads(index.audit_lines("req-eve", 10)[0])["request_id"] == "req-eve"


def test_a_rotated_audit_log_is_read_from_its_start(world, tmp_path):
    sources = _sources(world)
    index = _index(tmp_path, sources)
    _all(index)
    rotated = world["audit"].with_suffix(".new")
    rotated.write_text(audit_line("req-gina", "gina", "prod", "ResponseComplete", "2024-05-01T12:00:00Z") + "\n")
    os.replace(rotated, world["audit"])
    rows = {r.session_id: r for r in _all(index)}
    assert rows["req-gina"].user == "gina" and "req-alice" in rows  # indexed sessions stay
    assert index.audit_lines("req-alice", 10) == []  # its lines were in the old file
    assert len(index.audit_lines("req-gina", 10)) == 1


def test_filters_order_and_pages_are_applied_by_the_index(tmp_path):
    audit = tmp_path / "audit.log"
    lines = []
    for n in range(230):
        when = (T0 + dt.timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        user, socket = f"user-{n % 3}", ("prod", "staging")[n % 2]
        lines.append(audit_line(f"s-{n:03d}", user, socket, "ResponseComplete", when))
    audit.write_text("\n".join(lines) + "\n")
    index = _index(tmp_path, Sources(audit_log=audit, directory=None, s3=None))
    everything = _all(index)
    assert [r.session_id for r in everything] == [f"s-{n:03d}" for n in reversed(range(230))]
    since = T0 + dt.timedelta(minutes=100)
    page = index.listing(user="user-1", socket="prod", since=since, offset=5, limit=7)
    expected = [r for r in everything if r.user == "user-1" and r.socket == "prod" and r.started >= since]
    assert page.total == len(expected) == 22
    assert page.rows == expected[5:12]
    assert index.listing(user="nobody", socket="", since=None, offset=0, limit=10).total == 0


def test_the_index_is_a_cache_deleting_it_rebuilds_the_same_list(world, tmp_path):
    sources = _sources(world)
    index = _index(tmp_path, sources)
    before = _all(index)
    for leftover in index.path.parent.iterdir():
        leftover.unlink()
    assert _all(_index(tmp_path, sources)) == before


def test_while_another_process_updates_the_index_the_page_answers_with_a_warning(world, tmp_path):
    sources = _sources(world)
    index = _index(tmp_path, sources, wait=0.05)
    _all(index)
    world["audit"].write_text(world["audit"].read_text() + audit_line("req-h", "h", "prod", "ResponseComplete",
                                                                       "2024-05-01T12:00:00Z") + "\n")  # fmt: skip
    other = sqlite3.connect(index.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        page = index.listing(user="", socket="", since=None, offset=0, limit=10)
        assert page.total == 4 and "may be incomplete" in page.warnings[0]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(_all(index)) == 5


def test_other_sources_get_another_index_file(tmp_path):
    one = Sources(audit_log=tmp_path / "a.log", directory=None, s3=None)
    two = Sources(audit_log=tmp_path / "b.log", directory=None, s3=None)
    assert index_path(tmp_path, one) != index_path(tmp_path, two)
    assert index_path(tmp_path, one) == index_path(tmp_path, Sources(audit_log=tmp_path / "a.log", directory=None,
                                                                      s3=None))  # fmt: skip
