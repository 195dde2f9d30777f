"""`python -m connector sessions list|play|export`, on recordings made by the real recorder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from connector.audit.recording import SessionMeta, SessionTap
from connector.audit.recording_config import RecordingConfig
from connector.audit.recording_sinks import RecordingStore
from connector.audit.sessions_cli import exit_from_tail, parse_since, plain_text
from connector.cli import main
from connector.kube.channels import PROTOCOLS
from tests.support.session_streams import exit_status, ws_client_resize, ws_server, ws_server_close

V5 = PROTOCOLS["v5.channel.k8s.io"]
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def record(
    directory: Path, session_id: str, user: str, socket: str, outputs: list[bytes], code: int, *, tty: bool = False
) -> str:
    config = RecordingConfig(dir=directory)
    meta = SessionMeta(
        session_id, user, ["dev"], "10.0.0.1", socket, "shop", "web-0", "app", ["sh"], tty, False, V5.name, "exec"
    )
    clock = Clock()
    started = NOW.timestamp() - 3600
    tap = SessionTap(meta, config, RecordingStore(config), monotonic=clock, wall=lambda: started)
    if tty:
        tap.client_bytes(ws_client_resize(V5, 90, 20))
    for output in outputs:
        clock.now += 0.01
        tap.upstream_bytes(ws_server(V5, 1, output))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(code)) + ws_server_close())
    await tap.close()
    return tap.recording


def audit_line(request_id: str, user: str, socket: str, stage: str, time: str, **extra) -> str:
    event = {
        "request_id": request_id,
        "stage": stage,
        "decision": "allow",
        "code": 101,
        "method": "GET",
        "path": f"/sockets/{socket}/api/v1/namespaces/shop/pods/web-0/exec",
        "query": "command=sh&command=-c&command=echo+hi&container=app&stdout=true",
        "source_ip": "10.0.0.1",
        "time": time,
        "user": user,
        "groups": ["dev"],
        "socket": socket,
        "request": {"verb": "create", "namespace": "shop", "resource": "pods", "subresource": "exec", "name": "web-0"},
        "stream": "exec",
    }
    event.update(extra)
    return json.dumps(event)


@pytest.fixture
async def world(tmp_path: Path) -> dict:
    rec = tmp_path / "rec"
    alice = await record(rec, "req-alice", "alice", "prod", [b"hello\n", b"world\n"], 0)
    bob = await record(rec, "req-bob", "bob", "staging", [b"\x1b[1mbold\x1b[0m\r\n"], 3, tty=True)
    # A session still running: its recording is the .part file.
    running = SessionTap(
        SessionMeta(
            "req-carol", "carol", [], "10.0.0.2", "prod", "shop", "db-0", "", ["psql"], False, False, V5.name, "exec"
        ),
        RecordingConfig(dir=rec),
        RecordingStore(RecordingConfig(dir=rec)),
    )
    running._flush()
    audit = tmp_path / "audit.log"
    audit.write_text(
        "\n".join(
            [
                audit_line("req-alice", "alice", "prod", "ResponseStarted", "2024-05-01T09:00:00.000000Z"),
                audit_line(
                    "req-alice", "alice", "prod", "ResponseComplete", "2024-05-01T09:05:00.000000Z", recording=alice
                ),
                "this line is not JSON",
                json.dumps({"request_id": "get-1", "decision": "allow", "request": {"resource": "pods"}}),
                audit_line(
                    "req-denied", "mallory", "prod", "ResponseComplete", "2024-05-01T10:00:00Z", decision="deny"
                ),
                audit_line("req-old", "dave", "prod", "ResponseComplete", "2024-04-01T10:00:00Z"),
            ]
        )
        + "\n"
    )
    config = tmp_path / "connector.yaml"
    config.write_text(f"recordings:\n  dir: {rec}\naudit:\n  file: {audit}\n")
    yield {"rec": rec, "audit": audit, "config": config, "alice": alice, "bob": bob}
    await running.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["sessions", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_merges_the_audit_log_and_the_recordings(world: dict, capsys) -> None:
    code, out, err = run(capsys, "list", "--config", str(world["config"]), "--json")
    assert code == 0
    rows = {r["session_id"]: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {"req-alice", "req-bob", "req-carol", "req-old"}  # denied and non-session events left out
    alice = rows["req-alice"]
    assert alice["started"] == "2024-05-01T09:00:00Z"
    assert alice["command"] == ["sh", "-c", "echo hi"] and alice["container"] == "app"
    assert alice["recording"] == world["alice"] and alice["exit"] == "0"
    assert alice["sources"] == ["audit", "recording"]
    assert (
        rows["req-bob"]["exit"] == "3"
        and rows["req-bob"]["user"] == "bob"
        and rows["req-bob"]["sources"] == ["recording"]
    )
    assert rows["req-carol"]["exit"] == "running"
    assert rows["req-old"]["recording"] == ""
    assert "skipped 1 lines that are not JSON objects" in err


def test_list_table_and_filters(world: dict, capsys) -> None:
    code, out, _ = run(capsys, "list", "--config", str(world["config"]), "--user", "alice")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["STARTED", "ID", "USER", "SOCKET", "KIND", "TARGET", "COMMAND", "EXIT", "RECORDING"]
    assert len(rows) == 1 and "req-alice" in rows[0] and "sh -c echo hi" in rows[0] and rows[0].endswith(world["alice"])
    _, out, _ = run(capsys, "list", "--config", str(world["config"]), "--socket", "staging", "--json")
    assert [json.loads(r)["session_id"] for r in out.splitlines()] == ["req-bob"]
    _, out, _ = run(capsys, "list", "--config", str(world["config"]), "--since", "2024-04-15", "--json")
    assert "req-old" not in out and "req-alice" in out


def test_list_shows_no_control_characters_from_users(tmp_path: Path, capsys) -> None:
    audit = tmp_path / "audit.log"
    audit.write_text(audit_line("x", "eve\x1b]0;pwned\x07", "prod", "ResponseComplete", "2024-05-01T10:00:00Z") + "\n")
    code, out, _ = run(capsys, "list", "--audit-log", str(audit))
    assert code == 0 and "\x1b" not in out and "eve?]0;pwned?" in out


def test_play_prints_the_output_with_markers_on_stderr(world: dict, capsys) -> None:
    code, out, err = run(capsys, "play", "req-alice", "--config", str(world["config"]), "--speed", "1000")
    assert code == 0
    assert out == "hello\nworld\n"
    assert err.strip() == "[exit status 0]"


def test_play_and_export_find_a_recording_by_file_path(world: dict, capsys) -> None:
    code, out, _ = run(capsys, "play", world["bob"], "--speed", "50", "--dir", str(world["rec"]))
    assert code == 0 and out == "\x1b[1mbold\x1b[0m\r\n"


def test_play_and_export_take_a_unique_prefix_of_a_session_id(world: dict, capsys) -> None:
    """As found: only a whole session id (32 hex digits in practice) was accepted; now a prefix names
    the one session it starts, and an ambiguous one says so (like git's short commit ids)."""
    code, out, _ = run(capsys, "play", "req-a", "--config", str(world["config"]), "--speed", "1000")
    assert (code, out) == (0, "hello\nworld\n")
    code, _, err = run(capsys, "export", "req-", "--format", "txt", "--config", str(world["config"]))
    assert code == 2
    assert "session id 'req-' is ambiguous: 4 sessions start with it (req-alice, req-bob, req-carol, req-old)" in err
    code, out, _ = run(capsys, "export", "req-b", "--format", "txt", "--dir", str(world["rec"]))
    assert (code, out) == (0, "bold\n")  # from the recordings directory alone, no audit log


def test_export_cast_is_the_recording_byte_for_byte(world: dict, capsysbinary) -> None:
    assert main(["sessions", "export", "req-bob", "--format", "cast", "--dir", str(world["rec"])]) == 0
    assert capsysbinary.readouterr().out == Path(world["bob"]).read_bytes()


def test_export_txt_is_the_plain_output(world: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out.txt"
    code, out, _ = run(capsys, "export", "req-bob", "--format", "txt", "--dir", str(world["rec"]), "-o", str(target))
    assert code == 0 and out == ""
    assert target.read_text() == "bold\n"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["list"], 2, "say where the sessions are"),
        (["play", "nope", "--dir", "{rec}"], 1, "no recording found for 'nope'"),
        (["play", "req-alice", "--dir", "{rec}", "--speed", "0"], 2, "--speed must be a positive number"),
        (["play", "req-alice", "--dir", "{rec}", "--speed", "fast"], 2, "--speed must be a number"),
        (["list", "--dir", "{rec}", "--since", "yesterday"], 2, "--since 'yesterday' is neither a duration"),
        (["list", "--dir", "{rec}", "--s3"], 2, "--s3 needs a config with recordings.s3"),
        (["list", "--config", "{bad}"], 2, "recordings.max_bytes: max_bytes must be at least"),
        (["list", "--audit-log", "{missing}"], 1, "cannot read the audit log"),
        (["export", "{junk}", "--format", "txt", "--dir", "{rec}"], 2, "not an asciicast v2 recording"),
        (["export", "{badevent}", "--format", "txt", "--dir", "{rec}"], 2, "badevent.cast:3: an event is"),
    ],
)
def test_errors(world: dict, tmp_path: Path, capsys, argv: list[str], code: int, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("recordings:\n  dir: /x\n  max_bytes: 10\n")
    junk = tmp_path / "junk.cast"
    junk.write_text("hello\n")
    badevent = tmp_path / "badevent.cast"
    badevent.write_text('{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "x"]\n[0.2, "o"]\n')
    names = {"rec": world["rec"], "bad": bad, "junk": junk, "badevent": badevent, "missing": tmp_path / "none.log"}
    got, _, err = run(capsys, *[a.format(**names) for a in argv])
    assert got == code
    assert message in err


def test_parse_since() -> None:
    assert parse_since("90m", NOW) == NOW - dt.timedelta(minutes=90)
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("2024-05-01T10:00:00Z", NOW) == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert parse_since("2024-05-01", NOW) == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert parse_since("2024-05-01T10:00:00+02:00", NOW) == dt.datetime(2024, 5, 1, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("output", "plain"),
    [
        ("\x1b[1;32mgreen\x1b[0m\r\n", "green\n"),
        ("\x1b]0;title\x07prompt$ ", "prompt$ "),
        ("a\x1b[2Jb\x1b(Bc", "abc"),
        ("plain\nlines\n", "plain\nlines\n"),
    ],
)
def test_plain_text(output: str, plain: str) -> None:
    assert plain_text(output) == plain


@pytest.mark.parametrize(
    ("tail", "exit"),
    [
        (b'[1.0,"o","x"]\n[2.0,"m","exit status 3: command terminated"]\n', "3"),
        (b'[2.0,"m","exit status 0"]\n', "0"),
        (b'[2.0,"m","session failed: boom"]\n', "failed"),
        (b'[2.0,"m","port-forward ended: 1 bytes from the client, 2 bytes to the client"]\n', "-"),
        (b'[2.0,"m","session ended without an exit status"]\n', "?"),
        (b'ncated line"]\n', "?"),
    ],
)
def test_exit_from_tail(tail: bytes, exit: str) -> None:
    assert exit_from_tail(tail) == exit
