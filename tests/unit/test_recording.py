"""Session recordings: asciicast v2 files that the real `asciinema cat` replays, within their limits."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connector.audit.recording import (
    HEADER_WAIT_SECONDS,
    AsciicastWriter,
    RecordingError,
    SessionMeta,
    SessionTap,
    drain_recordings,
    open_session_tap,
    store_for,
)
from connector.audit.recording_config import RecordingConfig
from connector.audit.recording_sinks import RecordingStore
from connector.audit.tap import StreamData
from connector.config import ConfigError, ConnectorConfig, load_model
from connector.kube.channels import PROTOCOLS, ExitStatus, TerminalSize
from tests.support.session_streams import (
    SpdyExec,
    exit_status,
    ws_client,
    ws_client_close_stream,
    ws_client_resize,
    ws_server,
    ws_server_close,
)

V5 = PROTOCOLS["v5.channel.k8s.io"]
ASCIINEMA = Path(sys.executable).parent / "asciinema"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meta(**overrides) -> SessionMeta:
    fields = dict(
        session_id="3f2c9a",
        user="alice@example.com",
        groups=["dev", "oncall"],
        source_ip="192.0.2.7",
        socket="prod-eu",
        namespace="shop",
        pod="web-0",
        container="app",
        command=["sh", "-c", "echo out; echo err >&2; exit 3"],
        tty=False,
        stdin=False,
        protocol="v5.channel.k8s.io",
        subresource="exec",
    )
    fields.update(overrides)
    return SessionMeta(**fields)


def lines(path: str | Path) -> list:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def text(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def size(path: str | Path) -> int:
    return os.path.getsize(path)


def asciinema_cat(path: str | Path) -> bytes:
    assert ASCIINEMA.exists(), "asciinema is a test dependency (requirements-dev.txt)"
    # A new session has no controlling terminal, so asciinema does not touch the test's terminal.
    done = subprocess.run(
        [str(ASCIINEMA), "cat", str(path)], capture_output=True, start_new_session=True, timeout=60, check=True
    )
    return done.stdout


def errors(stage: str) -> float:
    return REGISTRY.get_sample_value("connector_recording_errors_total", {"stage": stage}) or 0.0


@pytest.fixture
def config(tmp_path: Path) -> RecordingConfig:
    return RecordingConfig(dir=tmp_path / "rec")


def new_tap(config: RecordingConfig, clock: Clock | None = None, **overrides) -> SessionTap:
    clock = clock or Clock()
    return SessionTap(meta(**overrides), config, RecordingStore(config), monotonic=clock, wall=lambda: 1_700_000_000.5)


async def test_non_tty_exec_replays_stdout_and_stderr(config: RecordingConfig) -> None:
    clock = Clock()
    tap = new_tap(config, clock)
    assert tap.recording == str(config.dir / "3f2c9a.cast")
    assert (config.dir / "3f2c9a.cast.part").exists()
    tap.upstream_bytes(ws_server(V5, 1, b""))
    clock.now += 0.25
    tap.upstream_bytes(ws_server(V5, 1, b"out\n"))
    clock.now += 0.5
    tap.upstream_bytes(ws_server(V5, 2, b"err\n"))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(3)) + ws_server_close())
    summary = await tap.close()

    assert summary.recording == tap.recording and summary.exit_code == 3
    assert not (config.dir / "3f2c9a.cast.part").exists()
    header, *events = lines(tap.recording)
    assert header == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1_700_000_000,
        "title": "alice@example.com: exec shop/web-0 -c app -- sh -c 'echo out; echo err >&2; exit 3' (prod-eu)",
        "connector": {
            "session_id": "3f2c9a",
            "user": "alice@example.com",
            "groups": ["dev", "oncall"],
            "source_ip": "192.0.2.7",
            "socket": "prod-eu",
            "namespace": "shop",
            "pod": "web-0",
            "container": "app",
            "command": ["sh", "-c", "echo out; echo err >&2; exit 3"],
            "tty": False,
            "stdin": False,
            "protocol": "v5.channel.k8s.io",
            "subresource": "exec",
        },
    }
    assert events[:2] == [[0.25, "o", "out\n"], [0.75, "o", "err\n"]]
    assert events[2][1] == "m" and events[2][2].startswith("exit status 3: command terminated")
    assert len(events) == 3
    assert asciinema_cat(tap.recording) == b"out\nerr\n"
    assert stat.S_IMODE(os.stat(tap.recording).st_mode) == 0o600


async def test_tty_session_takes_its_size_from_the_first_resize(config: RecordingConfig) -> None:
    clock = Clock()
    tap = new_tap(config, clock, tty=True, stdin=True, command=["sh"])
    tap.upstream_bytes(ws_server(V5, 1, b"$ "))  # the prompt may come before the resize
    clock.now += 0.1
    tap.client_bytes(ws_client_resize(V5, 132, 43))
    clock.now += 0.1
    tap.client_bytes(ws_client(V5, 0, b"ls\r"))
    tap.upstream_bytes(ws_server(V5, 1, b"ls\r\na  b\r\n$ "))
    clock.now += 1
    tap.client_bytes(ws_client_resize(V5, 100, 30))
    tap.client_bytes(ws_client_close_stream(V5, 0))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(0)) + ws_server_close())
    await tap.close()
    header, *events = lines(tap.recording)
    assert (header["width"], header["height"]) == (132, 43)
    assert [e[1:] for e in events] == [
        ["o", "$ "],
        ["r", "132x43"],
        ["o", "ls\r\na  b\r\n$ "],
        ["r", "100x30"],
        ["m", "exit status 0"],
    ]
    assert asciinema_cat(tap.recording) == b"$ ls\r\na  b\r\n$ "


async def test_kubectl_attach_redraw_trick_gives_the_header_the_real_size(config: RecordingConfig) -> None:
    """`kubectl attach -it` sends the terminal size plus one, then the real size, to make the program
    redraw: the header must say 90x25 for a 90x25 terminal, and both resizes stay in the recording."""
    clock = Clock()
    tap = new_tap(config, clock, tty=True, stdin=True, subresource="attach", command=[])
    tap.client_bytes(ws_client_resize(V5, 91, 26))
    tap.client_bytes(ws_client_resize(V5, 90, 25))
    clock.now += 0.1
    tap.upstream_bytes(ws_server(V5, 1, b"\x1b[H\x1b[2J$ "))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(0)) + ws_server_close())
    await tap.close()
    header, *events = lines(tap.recording)
    assert (header["width"], header["height"]) == (90, 25)
    assert [e[1:] for e in events] == [["r", "91x26"], ["r", "90x25"], ["o", "\x1b[H\x1b[2J$ "], ["m", "exit status 0"]]


def _header_size(events: list[TerminalSize | StreamData]) -> tuple[int, int]:
    written: list[bytes] = []
    writer = AsciicastWriter(
        meta(tty=True, subresource="attach"), started_at=0, max_bytes=1 << 20, record_stdin=True, write=written.append
    )
    for event in events:
        writer.add(0.5, event)
    writer.close(1.0, bytes_from_client=0, bytes_from_upstream=0)
    header = json.loads(written[0])
    resizes = [json.loads(line)[2] for line in written[1:] if json.loads(line)[1] == "r"]
    assert resizes == [f"{e.width}x{e.height}" for e in events if isinstance(e, TerminalSize)]  # all kept
    return header["width"], header["height"]


OUT = StreamData("stdout", b"$ ")
TYPED = StreamData("stdin", b"ls\r")


@pytest.mark.parametrize(
    ("events", "size"),
    [
        ([], (80, 24)),
        ([OUT], (80, 24)),
        ([TerminalSize(91, 26), TerminalSize(90, 25), OUT], (90, 25)),
        ([TerminalSize(91, 26), TerminalSize(90, 25)], (90, 25)),  # no output at all: the last size
        ([TerminalSize(90, 25), OUT, TerminalSize(120, 40)], (90, 25)),  # a later resize is only an event
        ([OUT, TerminalSize(132, 43), TerminalSize(100, 30)], (132, 43)),  # output first: the first size after it
        ([TerminalSize(90, 25), TYPED, TerminalSize(100, 30), OUT], (100, 30)),  # typing is not output
        ([TerminalSize(90, 25), TerminalSize(0, 0), OUT], (90, 25)),  # an empty size does not count
    ],
)
def test_the_header_has_the_size_in_effect_when_output_begins(
    events: list[TerminalSize | StreamData], size: tuple[int, int]
) -> None:
    assert _header_size(events) == size


async def test_tty_header_waits_a_bounded_time_for_a_resize(config: RecordingConfig) -> None:
    clock = Clock()
    tap = new_tap(config, clock, tty=True)
    tap.upstream_bytes(ws_server(V5, 1, b"a"))
    clock.now += HEADER_WAIT_SECONDS + 0.5
    tap.upstream_bytes(ws_server(V5, 1, b"b"))
    clock.now += 1
    tap.client_bytes(ws_client_resize(V5, 50, 10))
    await tap.close()
    header, *events = lines(tap.recording)
    assert (header["width"], header["height"]) == (80, 24)
    assert [e[1:] for e in events][:3] == [["o", "a"], ["o", "b"], ["r", "50x10"]]


@pytest.mark.parametrize(("record_stdin", "session_stdin", "recorded"), [(True, True, True), (False, True, False)])
async def test_stdin_only_when_enabled(tmp_path: Path, record_stdin: bool, session_stdin: bool, recorded: bool) -> None:
    config = RecordingConfig(dir=tmp_path, stdin=record_stdin)
    tap = new_tap(config, stdin=session_stdin)
    tap.client_bytes(ws_client(V5, 0, b"secret\n"))
    tap.upstream_bytes(ws_server(V5, 1, b"ok\n"))
    await tap.close()
    codes = [e[1] for e in lines(tap.recording)[1:]]
    assert ("i" in codes) is recorded
    assert ("secret" in text(tap.recording)) is recorded
    # asciinema replays output only, stdin or not.
    assert asciinema_cat(tap.recording) == b"ok\n"


async def test_spdy_session_replays_the_same(config: RecordingConfig) -> None:
    # The proxy names a SPDY session by its X-Stream-Protocol-Version.
    tap = new_tap(config, protocol="v4.channel.k8s.io")
    s = SpdyExec()
    client, server = s.open("error", "stdout", "stderr")
    tap.client_bytes(client)
    tap.upstream_bytes(server)
    tap.upstream_bytes(s.server_data("stdout", b"out\n"))
    tap.upstream_bytes(s.server_data("stderr", b"err\n"))
    tap.upstream_bytes(s.server_data("error", exit_status(3), fin=True))
    summary = await tap.close()
    assert summary.exit_code == 3 and summary.decode_error is None
    assert asciinema_cat(tap.recording) == b"out\nerr\n"


async def test_utf8_split_across_chunks_and_invalid_bytes(config: RecordingConfig) -> None:
    tap = new_tap(config)
    euro = "€".encode()
    tap.upstream_bytes(ws_server(V5, 1, b"price: " + euro[:1]))
    tap.upstream_bytes(ws_server(V5, 2, b"E"))  # another stream in between keeps its own decoder
    tap.upstream_bytes(ws_server(V5, 1, euro[1:] + b"5\n\xff\n"))
    await tap.close()
    assert asciinema_cat(tap.recording).decode() == "price: E€5\n\ufffd\n"


async def test_the_size_cap_truncates_with_a_marker_and_keeps_the_exit_status(tmp_path: Path) -> None:
    config = RecordingConfig(dir=tmp_path, max_bytes=16 * 1024)
    tap = new_tap(config)
    output = b"".join(b"line %05d\n" % i for i in range(5000))
    for i in range(0, len(output), 1000):
        tap.upstream_bytes(ws_server(V5, 1, output[i : i + 1000]))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(0)) + ws_server_close())
    summary = await tap.close()
    assert summary.truncated
    assert size(tap.recording) <= config.max_bytes
    events = lines(tap.recording)[1:]
    assert events[-2][1] == "m" and "16384-byte limit" in events[-2][2]
    assert events[-1][1:] == ["m", "exit status 0"]
    replay = asciinema_cat(tap.recording)
    assert output.startswith(replay) and len(replay) > 8000


def test_truncation_keeps_the_part_of_an_event_that_fits() -> None:
    written: list[bytes] = []
    writer = AsciicastWriter(meta(), started_at=0, max_bytes=16 * 1024, record_stdin=False, write=written.append)
    writer.add(0.5, StreamData("stdout", b"\x1b" * 20000))  # escapes take 6 bytes each in JSON
    writer.close(1.0, bytes_from_client=0, bytes_from_upstream=0)
    assert writer.truncated and sum(map(len, written)) <= 16 * 1024
    first_event = json.loads(written[1])
    assert first_event[1] == "o" and len(first_event[2]) > 1000


async def test_memory_stays_bounded_however_long_the_session(config: RecordingConfig) -> None:
    tap = new_tap(config, tty=True)
    tap.client_bytes(ws_client_resize(V5, 80, 24))
    chunk = ws_server(V5, 1, bytes(range(32, 127)) * 600)  # ~57 KB per message
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(400):  # ~23 MB of output, all of it written to the recording
            tap.upstream_bytes(chunk)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    await tap.close()
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
    assert size(tap.recording) > 20_000_000


async def test_recording_reaches_the_disk_while_the_session_is_quiet(config: RecordingConfig) -> None:
    tap = SessionTap(meta(), config, RecordingStore(config), flush_interval=0.01)
    tap.upstream_bytes(ws_server(V5, 1, b"early output\n"))
    partial = config.dir / "3f2c9a.cast.part"
    for _ in range(500):  # no more events come: the timer alone must flush
        if b"early output" in partial.read_bytes():
            break
        await asyncio.sleep(0.01)
    assert b"early output" in partial.read_bytes()
    await tap.close()


async def test_portforward_records_metadata_and_byte_counts(config: RecordingConfig) -> None:
    tap = new_tap(config, subresource="portforward", protocol="SPDY/3.1+portforward.k8s.io", command=[])
    tap.client_bytes(b"x" * 100)
    tap.upstream_bytes(b"y" * 250)
    summary = await tap.close()
    header, *events = lines(tap.recording)
    assert header["connector"]["subresource"] == "portforward"
    assert events == [[0.0, "m", "port-forward ended: 100 bytes from the client, 250 bytes to the client"]]
    assert (summary.bytes_from_client, summary.bytes_from_upstream) == (100, 250)


async def test_a_decode_error_is_marked_and_counted_and_the_session_goes_on(config: RecordingConfig) -> None:
    before = errors("decode")
    tap = new_tap(config)
    tap.upstream_bytes(ws_server(V5, 1, b"seen\n"))
    tap.upstream_bytes(bytes([0xC2, 0x00]))
    tap.upstream_bytes(ws_server(V5, 1, b"unseen\n"))
    summary = await tap.close()
    assert errors("decode") == before + 1
    assert summary.decode_error and "RSV" in summary.decode_error
    events = lines(tap.recording)[1:]
    assert events[1][1] == "m" and events[1][2].startswith("decode error: WebSocketProtocolError")
    assert events[-1][2] == "session ended without an exit status"
    assert summary.bytes_from_upstream == len(ws_server(V5, 1, b"seen\n")) + 2 + len(ws_server(V5, 1, b"unseen\n"))


async def test_an_undecoded_protocol_is_noted(config: RecordingConfig) -> None:
    tap = new_tap(config, protocol="v9.channel.example.com")
    tap.upstream_bytes(b"\x82\x04\x01abc")
    await tap.close()
    events = lines(tap.recording)[1:]
    assert "'v9.channel.example.com' is not decoded" in events[0][2]


async def test_write_errors_never_reach_the_relay(config: RecordingConfig) -> None:
    before = errors("write")
    tap = new_tap(config)

    def broken(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    tap._file.write = broken  # type: ignore[method-assign]
    tap.upstream_bytes(ws_server(V5, 1, b"out\n"))
    tap.upstream_bytes(ws_server(V5, 1, b"more\n"))
    summary = await tap.close()
    assert summary.write_error and "No space left" in summary.write_error
    assert errors("write") == before + 1


async def test_close_is_idempotent_and_later_bytes_are_ignored(config: RecordingConfig) -> None:
    tap = new_tap(config)
    first = await tap.close()
    tap.upstream_bytes(ws_server(V5, 1, b"late\n"))
    assert await tap.close() is first
    assert "late" not in text(tap.recording)


async def test_a_cancelled_caller_does_not_stop_the_recording_from_ending(config: RecordingConfig) -> None:
    store = RecordingStore(config)
    tap = SessionTap(meta(), config, store)
    tap.upstream_bytes(ws_server(V5, 1, b"kept\n"))
    closing = asyncio.ensure_future(tap.close())
    await asyncio.sleep(0)
    closing.cancel()  # e.g. the request handler is cancelled when its connection goes
    await store.drain()
    assert asciinema_cat(tap.recording) == b"kept\n"
    assert (await tap.close()).recording == tap.recording


async def test_open_session_tap(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"set recordings\.dir"):
        open_session_tap(meta(), RecordingConfig())
    config = RecordingConfig(dir=tmp_path / "a")
    store = RecordingStore(config)
    first = open_session_tap(meta(), config, store=store)
    second = open_session_tap(meta(), config, store=store)  # the same id again: never overwritten
    assert first.recording != second.recording
    assert Path(second.recording).name.startswith("3f2c9a-")
    odd = open_session_tap(meta(session_id="../../etc/passwd"), config, store=store)
    assert Path(odd.recording).parent == config.dir and Path(odd.recording).name.startswith("s-")
    for tap in (first, second, odd):
        await tap.close()
    assert names(config.dir) == sorted(Path(t.recording).name for t in (first, second, odd))


async def test_sessions_of_one_config_share_a_store(tmp_path: Path) -> None:
    first = open_session_tap(meta(session_id="one"), RecordingConfig(dir=tmp_path))
    second = open_session_tap(meta(session_id="two"), RecordingConfig(dir=tmp_path))  # e.g. after a reload
    assert first._store is second._store is store_for(RecordingConfig(dir=tmp_path))
    assert store_for(RecordingConfig(dir=tmp_path / "other")) is not first._store
    closing = [asyncio.ensure_future(tap.close()) for tap in (first, second)]
    await asyncio.sleep(0)  # the closes start; drain_recordings waits for them to end
    await drain_recordings()
    assert names(tmp_path) == ["one.cast", "two.cast"]
    await asyncio.gather(*closing)


async def test_an_unwritable_directory_refuses_the_recording(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = errors("write")
    with pytest.raises(RecordingError, match="cannot create a recording"):
        open_session_tap(meta(), RecordingConfig(dir=blocker / "rec"))
    assert errors("write") == before + 1


def test_writer_markers_for_each_ending() -> None:
    def final(status: ExitStatus | None) -> str:
        written: list[bytes] = []
        writer = AsciicastWriter(meta(), started_at=0, max_bytes=1 << 20, record_stdin=False, write=written.append)
        if status is not None:
            writer.add(1, status)
        writer.add(1, TerminalSize(10, 10))
        writer.close(2, bytes_from_client=0, bytes_from_upstream=0)
        return json.loads(written[-1])[2]

    assert final(ExitStatus(0, "")) == "exit status 0"
    assert final(ExitStatus(2, "")) == "exit status 2"
    assert final(ExitStatus(None, "boom")) == "session failed: boom"
    assert final(None) == "session ended without an exit status"


# -- config --------------------------------------------------------------------------------------------


def test_recordings_section_defaults_to_off() -> None:
    assert ConnectorConfig().recordings == RecordingConfig()
    assert not RecordingConfig().enabled


def test_recordings_section_loads() -> None:
    cfg = load_model(
        ConnectorConfig,
        "recordings:\n  dir: /tmp/rec\n  stdin: true\n  max_bytes: 1048576\n"
        "  s3: {bucket: my-recordings, prefix: sessions/, region: eu-west-1}\n",
        "c.yaml",
    )
    rec = cfg.recordings
    assert (str(rec.dir), rec.stdin, rec.max_bytes) == ("/tmp/rec", True, 1048576)
    assert rec.s3 is not None
    assert (rec.s3.bucket, rec.s3.prefix, rec.s3.region) == ("my-recordings", "sessions/", "eu-west-1")


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("recordings:\n  max_bytes: 100\n", "c.yaml:2: recordings.max_bytes: max_bytes must be at least 16384"),
        ("recordings:\n  dir: ''\n", "c.yaml:2: recordings.dir: the recordings dir must not be empty"),
        ("recordings:\n  s3: {bucket: ok-bucket}\n", "c.yaml:1: recordings: recordings.s3 needs recordings.dir"),
        ("recordings:\n  dir: /r\n  s3: {bucket: Bad_Bucket}\n", "recordings.s3.bucket: 'Bad_Bucket' is not a valid"),
        ("recordings:\n  dir: /r\n  s3: {bucket: b1b, prefix: /x}\n", "must not start with '/'"),
        ("recordings:\n  dir: /r\n  s3: {bucket: b1b, region: mars}\n", "'mars' is not an AWS region name"),
        ("recordings:\n  dir: /r\n  sdtin: true\n", "c.yaml:3: recordings.sdtin: unknown key"),
    ],
)
def test_recordings_section_errors(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(ConnectorConfig, yaml, "c.yaml")
    assert any(message in line for line in caught.value.errors), caught.value.errors
