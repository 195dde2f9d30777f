"""The audit search of the console: the log's rotated files in order, queries from a form, and pages
that resume from a file and offset without missing or repeating an event."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from connector.audit.log_files import log_files
from connector.audit.search import AuditQuery, Position, search
from connector.audit.sessions_cli import UsageError

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{n}",
        "time": (NOW - dt.timedelta(minutes=300 - n)).isoformat().replace("+00:00", "Z"),
        "user": "bob" if n % 2 else "alice",
        "groups": ["ops"] if n % 2 else ["dev"],
        "socket": "prod",
        "decision": "deny" if n % 10 == 0 else "allow",
        "code": 403 if n % 10 == 0 else 200,
        "request": {
            "verb": "delete" if n % 10 == 0 else "get",
            "resource": "pods",
            "namespace": "default",
            "subresource": "exec" if n % 7 == 0 else "",
        },
        **fields,
    }


def lines(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@pytest.fixture
def rotated_log(tmp_path: Path) -> Path:
    """300 events: 0-99 in audit.log.2.gz, 100-199 in audit.log.1, 200-299 in audit.log."""
    current = tmp_path / "audit.log"
    (tmp_path / "audit.log.2.gz").write_bytes(gzip.compress(lines([event(n) for n in range(100)])))
    (tmp_path / "audit.log.1").write_bytes(lines([event(n) for n in range(100, 200)]))
    current.write_bytes(lines([event(n) for n in range(200, 300)]))
    return current


def all_pages(files: list[Path], query: AuditQuery, limit: int, budget: int) -> list[list[str]]:
    pages, start = [], None
    while True:
        found = search(files, query, start, limit=limit, byte_budget=budget)
        pages.append([e["request_id"] for e in found.events])
        if found.next is None:
            return pages
        start = Position.parse(found.next.token, files)


def test_the_logs_files_oldest_first_and_nothing_else(tmp_path):
    for name in ("audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.10.gz", "audit.log.bak", "audit.logx",
                 "other.log.1"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in log_files(tmp_path / "audit.log")] == [
        "audit.log.10.gz", "audit.log.2.gz", "audit.log.1", "audit.log"
    ]  # fmt: skip
    assert log_files(tmp_path / "missing" / "audit.log") == []


def test_pages_resume_across_plain_and_gzip_files_without_gaps_or_repeats(rotated_log):
    files = log_files(rotated_log)
    pages = all_pages(files, AuditQuery(), limit=40, budget=1 << 30)
    assert [len(p) for p in pages] == [40] * 7 + [20]
    assert [i for p in pages for i in p] == [f"req-{n}" for n in range(300)]


def test_a_byte_budget_ends_a_page_early_and_the_next_page_goes_on(rotated_log):
    files = log_files(rotated_log)
    denied = AuditQuery(decision="deny")
    pages = all_pages(files, denied, limit=100, budget=4096)
    assert len(pages) > 5 and all(len(p) < 100 for p in pages)
    assert [i for p in pages for i in p] == [f"req-{n}" for n in range(0, 300, 10)]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"user": "alice", "decision": "deny"}, list(range(0, 300, 10))),
        ({"group": "ops", "verb": "delete"}, []),
        ({"resource": "pods/exec", "user": "bob"}, [n for n in range(300) if n % 7 == 0 and n % 2]),
        ({"resource": "pods", "decision": "deny"}, [n for n in range(0, 300, 10) if n % 7]),
        ({"socket": "staging"}, []),
        ({"namespace": "default", "since": "2026-05-04T11:57:00Z"}, [297, 298, 299]),
        ({"until": "2026-05-04T07:02:00Z"}, [0, 1]),
        ({"since": "5m", "until": "3m"}, [295, 296]),
    ],
)
def test_each_filter_keeps_only_its_events(rotated_log, form, expected):
    query = AuditQuery.from_form(form, NOW)
    pages = all_pages(log_files(rotated_log), query, limit=1000, budget=1 << 30)
    assert [i for p in pages for i in p] == [f"req-{n}" for n in expected]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"decision": "maybe"}, "decision 'maybe' is not one of allow, deny, unauthenticated, rejected"),
        ({"since": "yesterday"}, "since 'yesterday' is neither a duration"),
        ({"until": "soon"}, "until 'soon' is neither a duration"),
        ({"since": "1h", "until": "2h"}, "until must be later than since"),
    ],
)
def test_bad_form_input_is_one_line_naming_the_field(form, message):
    with pytest.raises(UsageError) as caught:
        AuditQuery.from_form(form, NOW)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_position_must_name_a_file_of_the_log(rotated_log):
    files = log_files(rotated_log)
    assert Position.parse("audit.log.1:120", files) == Position("audit.log.1", 120)
    refused = {
        "audit.log.7:0": "not a file of the audit log",
        "../etc/passwd:0": "not a file of the audit log",
        "audit.log": "is not FILE:OFFSET",
        "audit.log:-1": "is not FILE:OFFSET",
    }
    for token, message in refused.items():
        with pytest.raises(UsageError, match=message):
            Position.parse(token, files)


def test_a_rotated_file_older_than_since_is_not_read(rotated_log):
    files = log_files(rotated_log)
    week_ago = (NOW - dt.timedelta(days=7)).timestamp()
    os.utime(files[0], (week_ago, week_ago))
    found = search(files, AuditQuery(since=NOW - dt.timedelta(days=1)), None, limit=1000, byte_budget=1 << 30)
    assert found.files == 2 and len(found.events) == 200


def test_values_the_encoder_escaped_are_still_found_and_bad_lines_counted(tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(b"not json\n" + lines([event(1, user="zo\u00eb"), event(2, user='say "hi"')]) + b"[1]\n")
    files = log_files(log)
    for user in ("zo\u00eb", 'say "hi"'):
        found = search(files, AuditQuery(user=user), None, limit=10, byte_budget=1 << 30)
        assert [e["user"] for e in found.events] == [user]
    assert search(files, AuditQuery(), None, limit=10, byte_budget=1 << 30).malformed == 1


def test_since_in_a_big_plain_file_starts_near_its_events_and_misses_none(tmp_path):
    log = tmp_path / "audit.log"
    events = [  # 6,000 events 100 ms apart, ~2 MB
        event(i % 300, request_id=f"req-{i}", time=(NOW - dt.timedelta(seconds=(6000 - i) / 10)).isoformat())
        for i in range(6000)
    ]
    events[-410]["time"] = events[-5]["time"]  # written 40 s out of time order: within ORDER_SLACK
    log.write_bytes(b"not json\n" + lines(events[:3000]) + b"{}\n" + lines(events[3000:]))
    size = log.stat().st_size
    query = AuditQuery(since=dt.datetime.fromisoformat(events[-10]["time"]))
    found = search(log_files(log), query, None, limit=1000, byte_budget=1 << 30)
    assert [e["request_id"] for e in found.events] == ["req-5590"] + [f"req-{i}" for i in range(5990, 6000)]
    assert found.bytes_read < 400 * 1024 < size  # a minute before `since` and the bisection's last step
    everything = search(log_files(log), AuditQuery(since=NOW - dt.timedelta(days=1)), None, limit=10_000,
                        byte_budget=1 << 30)  # fmt: skip
    assert len(everything.events) == 6000 and everything.malformed == 1
