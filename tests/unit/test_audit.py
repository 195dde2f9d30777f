"""Audit events and sinks (connector.audit.events, connector.audit.sinks) against real files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connector.audit.config import AuditConfig
from connector.audit.events import AuditEvent, RequestAttributes, utc_timestamp
from connector.audit.sinks import AuditLog, AuditSinkError


def event(**fields) -> AuditEvent:
    base = {
        "request_id": "r1",
        "stage": "ResponseComplete",
        "decision": "allow",
        "code": 200,
        "method": "GET",
        "path": "/sockets/prod/api/v1/pods",
        "source_ip": "10.0.0.1",
    }
    return AuditEvent(**{**base, **fields})


def write_errors() -> float:
    return REGISTRY.get_sample_value("connector_audit_write_errors_total") or 0.0


def test_event_json_has_the_documented_fields_and_omits_absent_ones() -> None:
    e = event(
        user="alice",
        groups=("dev",),
        socket="prod",
        request=RequestAttributes(verb="list", resource="pods", namespace="default", is_resource_request=True),
        policy="dev-read",
        rule=0,
        upstream_status=200,
        bytes_out=120,
        duration_ms=1.23456,
        user_agent="kubectl/v1.33",
    )
    line = e.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = json.loads(line)
    documented = (
        "time", "request_id", "user", "groups", "source_ip", "socket", "request", "decision", "policy", "rule",
        "upstream_status", "bytes_in", "bytes_out", "duration_ms", "user_agent", "stage", "code",
    )  # fmt: skip
    for key in documented:
        assert key in data, key
    assert data["groups"] == ["dev"] and data["request"]["verb"] == "list" and data["duration_ms"] == 1.235
    assert "error" not in data and "recording" not in data


def test_bytes_that_are_not_utf8_are_written_as_replacement_characters() -> None:
    """As found: a User-Agent of Latin-1 bytes (aiohttp decodes headers with surrogateescape) made the
    line unencodable; the request was answered and its event lost."""
    ua = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    e = AuditEvent(request_id="r", stage="ResponseComplete", decision="allow", code=200, method="GET",
                   path="/x", source_ip="1.2.3.4", user_agent=ua, groups=(ua,))  # fmt: skip
    data = json.loads(e.to_line())
    assert data["user_agent"] == "caf\ufffd \ufffd" and data["groups"] == ["caf\ufffd \ufffd"]


def test_timestamp_format() -> None:
    stamp = utc_timestamp()
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000000Z")


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_file_sink_appends_one_line_per_event(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"earlier":"line"}\n')
    log = AuditLog(AuditConfig(file=str(path), fsync=fsync, fsync_interval_seconds=0.01))
    log.start()
    assert await log.emit(event(request_id="a"))
    assert await log.emit(event(request_id="b", user="ünïcode"))
    await log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x).get("request_id") for x in lines] == [None, "a", "b"]
    assert json.loads(lines[2])["user"] == "ünïcode"
    assert log.healthy


async def test_stdout_sink() -> None:
    out = io.BytesIO()
    log = AuditLog(AuditConfig(), stdout=out)
    assert await log.emit(event())
    assert json.loads(out.getvalue())["request_id"] == "r1"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to make writes fail")
async def test_failed_write_is_counted_logged_and_marks_unhealthy(caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(AuditConfig(file="/dev/full", fsync="never", fail_closed=True))
    before = write_errors()
    assert not await log.emit(event(request_id="lost-but-logged"))
    assert write_errors() == before + 1
    assert not log.healthy and "No space left" in (log.last_error or "")
    assert log.fail_closed
    # the event itself is in the error log, so it is not lost
    assert any("lost-but-logged" in r.getMessage() for r in caplog.records)
    await log.close()


async def test_recovers_when_a_later_write_succeeds() -> None:
    out = io.BytesIO()
    log = AuditLog(AuditConfig(), stdout=out)
    out.close()
    assert not await log.emit(event())
    assert not log.healthy
    log._sink._stream = io.BytesIO()  # type: ignore[attr-defined]  # the collector came back
    assert await log.emit(event())
    assert log.healthy


async def test_closed_log_refuses_writes_instead_of_writing_elsewhere(tmp_path: Path) -> None:
    log = AuditLog(AuditConfig(file=str(tmp_path / "a.log")))
    await log.close()
    before = write_errors()
    assert not await log.emit(event())
    assert write_errors() == before + 1


async def test_reopen_after_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(AuditConfig(file=str(path)))
    await log.emit(event(request_id="old"))
    path.rename(tmp_path / "audit.log.1")
    log.reopen()
    await log.emit(event(request_id="new"))
    await log.close()
    assert json.loads((tmp_path / "audit.log.1").read_text())["request_id"] == "old"
    assert json.loads(path.read_text())["request_id"] == "new"


def test_unopenable_file_names_the_key_and_path(tmp_path: Path) -> None:
    with pytest.raises(AuditSinkError) as exc:
        AuditLog(AuditConfig(file=str(tmp_path / "missing-dir" / "audit.log")))
    assert "audit.file" in str(exc.value) and "missing-dir" in str(exc.value)
