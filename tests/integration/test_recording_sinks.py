"""Recordings uploaded to S3 (moto's server on 127.0.0.1): encryption, retries, nothing lost while S3 is down."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connector.audit.recording import SessionMeta, open_session_tap
from connector.audit.recording_config import RecordingConfig, S3RecordingConfig
from connector.audit.recording_sinks import RecordingStore, S3Uploader
from connector.cli import main
from connector.kube.channels import PROTOCOLS
from sandbox.aws import EmbeddedAws
from tests.support.aws import isolate_aws_env
from tests.support.session_streams import exit_status, ws_server, ws_server_close

V5 = PROTOCOLS["v5.channel.k8s.io"]
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws() as embedded:
        yield embedded


@pytest.fixture
def s3(aws: EmbeddedAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    isolate_aws_env(monkeypatch, tmp_path)
    for name, value in aws.env(REGION).items():
        monkeypatch.setenv(name, value)
    return aws.client("s3", REGION)


def new_bucket() -> str:
    return f"rec-{secrets.token_hex(6)}"


def create_bucket(client, bucket: str) -> None:
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})


def meta(session_id: str) -> SessionMeta:
    return SessionMeta(
        session_id, "alice", ["dev"], "10.0.0.1", "prod", "shop", "web-0", "app", ["sh"], False, False, V5.name, "exec"
    )


async def record(config: RecordingConfig, store: RecordingStore, session_id: str, output: bytes) -> str:
    tap = open_session_tap(meta(session_id), config, store=store)
    tap.upstream_bytes(ws_server(V5, 1, output))
    tap.upstream_bytes(ws_server(V5, 3, exit_status(0)) + ws_server_close())
    summary = await tap.close()
    assert summary.recording == tap.recording
    return tap.recording


def upload_errors() -> float:
    return REGISTRY.get_sample_value("connector_recording_errors_total", {"stage": "upload"}) or 0.0


def cast_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.cast*"))


def recording_config(tmp_path: Path, bucket: str) -> RecordingConfig:
    return RecordingConfig(dir=tmp_path / "rec", s3=S3RecordingConfig(bucket=bucket, prefix="sessions/", region=REGION))


async def test_upload_is_encrypted_and_replaces_the_local_copy(s3, tmp_path: Path) -> None:
    bucket = new_bucket()
    create_bucket(s3, bucket)
    config = recording_config(tmp_path, bucket)
    store = RecordingStore(config)
    uri = await record(config, store, "sess-1", b"hello from the pod\n")
    assert uri == f"s3://{bucket}/sessions/sess-1.cast"
    await store.drain()
    head = s3.head_object(Bucket=bucket, Key="sessions/sess-1.cast")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/x-asciicast"
    body = s3.get_object(Bucket=bucket, Key="sessions/sess-1.cast")["Body"].read()
    header, *events = [json.loads(line) for line in body.splitlines()]
    assert header["connector"]["session_id"] == "sess-1"
    assert events[0][1:] == ["o", "hello from the pod\n"]
    assert cast_files(config.dir) == []


async def test_failed_attempts_are_retried_with_backoff_and_the_local_copy_kept(s3, tmp_path: Path) -> None:
    bucket = new_bucket()
    config = recording_config(tmp_path, bucket)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        # While S3 refuses, the finished recording waits on disk.
        assert cast_files(config.dir) == ["sess-2.cast"]
        if len(delays) == 2:
            create_bucket(s3, bucket)  # S3 "comes back"

    assert config.s3 is not None
    store = RecordingStore(config, uploader=S3Uploader(config.s3, attempts=5, first_delay=0.01, sleep=sleep))
    before = upload_errors()
    await record(config, store, "sess-2", b"x\n")
    await store.drain()
    assert delays == [0.01, 0.02]
    assert "Body" in s3.get_object(Bucket=bucket, Key="sessions/sess-2.cast")
    assert cast_files(config.dir) == []
    assert upload_errors() == before


async def test_nothing_is_lost_while_s3_is_down(s3, tmp_path: Path) -> None:
    bucket = new_bucket()
    config = recording_config(tmp_path, bucket)
    assert config.s3 is not None

    async def no_wait(delay: float) -> None:
        return None

    store = RecordingStore(config, uploader=S3Uploader(config.s3, attempts=3, first_delay=0.01, sleep=no_wait))
    before = upload_errors()
    await record(config, store, "while-down", b"1\n")
    await store.drain()
    assert upload_errors() == before + 1
    assert cast_files(config.dir) == ["while-down.cast"]
    # S3 is back: the next upload that succeeds takes the one left behind with it.
    create_bucket(s3, bucket)
    await record(config, store, "after", b"2\n")
    await store.drain()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["sessions/after.cast", "sessions/while-down.cast"]
    assert cast_files(config.dir) == []


async def test_recordings_left_by_an_earlier_run_are_uploaded(s3, tmp_path: Path) -> None:
    bucket = new_bucket()
    create_bucket(s3, bucket)
    config = recording_config(tmp_path, bucket)
    # An earlier run (without S3) left a finished recording, and one cut off mid-session (.part).
    await record(RecordingConfig(dir=config.dir), RecordingStore(RecordingConfig(dir=config.dir)), "old", b"old\n")
    (config.dir / "crashed.cast.part").write_text('{"version": 2, "width": 80, "height": 24}\n')
    store = RecordingStore(config)
    await record(config, store, "new", b"new\n")
    await store.drain()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["sessions/new.cast", "sessions/old.cast"]
    assert cast_files(config.dir) == ["crashed.cast.part"]


async def test_sessions_cli_reads_recordings_from_s3(s3, tmp_path: Path, capsys) -> None:
    bucket = new_bucket()
    create_bucket(s3, bucket)
    config = recording_config(tmp_path, bucket)
    store = RecordingStore(config)
    await record(config, store, "in-s3", b"stored remotely\n")
    await store.drain()
    assert cast_files(config.dir) == []
    config_file = tmp_path / "connector.yaml"
    config_file.write_text(
        f"recordings:\n  dir: {config.dir}\n  s3: {{bucket: {bucket}, prefix: sessions/, region: {REGION}}}\n"
    )
    assert main(["sessions", "play", "in-s3", "--config", str(config_file), "--speed", "1000"]) == 0
    assert capsys.readouterr().out == "stored remotely\n"
    assert main(["sessions", "export", f"s3://{bucket}/sessions/in-s3.cast", "--format", "txt"]) == 0
    assert capsys.readouterr().out == "stored remotely\n"
    assert main(["sessions", "list", "--config", str(config_file), "--s3", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["session_id"], row["exit"], row["recording"]) == ("in-s3", "0", f"s3://{bucket}/sessions/in-s3.cast")
    assert main(["sessions", "play", "missing", "--config", str(config_file)]) == 1
    assert f"s3://{bucket}/sessions/missing.cast" in capsys.readouterr().err


def test_the_sessions_command_runs_as_a_program(s3, tmp_path: Path) -> None:
    # The real entry point, in its own process, as an operator runs it.
    done = subprocess.run(
        [sys.executable, "-m", "connector", "sessions", "list", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["STARTED", "ID", "USER", "SOCKET", "KIND", "TARGET", "COMMAND", "EXIT", "RECORDING"]
