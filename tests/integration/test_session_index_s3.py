"""The console's session index with recordings in S3 (moto's server on 127.0.0.1): a replica lists and
opens the sessions another replica recorded and uploaded, and S3 is listed at most every interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.audit.recording_config import RecordingConfig
from connector.audit.recording_sinks import RecordingStore
from connector.audit.sessions_cli import Sources
from connector.console.pages import _read_cast
from connector.console.session_index import SessionIndex, index_path
from tests.integration import test_recording_sinks as sinks
from tests.integration.test_console import console_connector
from tests.integration.test_recording_sinks import cast_files, create_bucket, new_bucket, record, recording_config
from tests.support.console import browser, sign_in

aws, s3 = sinks.aws, sinks.s3  # the fixtures: moto's server, and a client of it in an isolated AWS environment


async def _uploaded(s3: Any, tmp_path: Path, *session_ids: str) -> tuple[RecordingConfig, RecordingStore, str]:
    """A new bucket, and these sessions recorded by a replica and uploaded to it."""
    bucket = new_bucket()
    create_bucket(s3, bucket)
    config = recording_config(tmp_path, bucket)
    store = RecordingStore(config)
    for session_id in session_ids:
        await record(config, store, session_id, f"recorded {session_id}\n".encode())
    await store.drain()
    return config, store, bucket


def _replica_index(tmp_path: Path, name: str, config: RecordingConfig, **options) -> SessionIndex:
    """The index of a replica with its own recordings directory and state directory, sharing the bucket."""
    sources = Sources(audit_log=None, directory=tmp_path / name / "rec", s3=config.s3)
    (tmp_path / name / "rec").mkdir(parents=True)
    return SessionIndex(index_path(tmp_path / name / "state", sources), sources, **options)


def _ids(index: SessionIndex) -> list[str]:
    return [r.session_id for r in index.listing(user="", socket="", since=None, offset=0, limit=100).rows]


async def test_a_replica_lists_and_opens_the_sessions_another_replica_uploaded(s3, tmp_path: Path) -> None:
    config, _, bucket = await _uploaded(s3, tmp_path, "from-a")
    assert cast_files(config.dir) == []  # only in S3 now
    index = _replica_index(tmp_path, "b", config)
    [row] = index.listing(user="alice", socket="prod", since=None, offset=0, limit=10).rows
    assert (row.session_id, row.exit, row.recording) == ("from-a", "0", f"s3://{bucket}/sessions/from-a.cast")
    assert (row.namespace, row.pod, row.command) == ("shop", "web-0", ["sh"])
    cast = _read_cast(index, index.sources, "from-a")
    assert b"recorded from-a" in cast and cast == s3.get_object(Bucket=bucket, Key="sessions/from-a.cast")[
        "Body"].read()  # fmt: skip


async def test_s3_is_listed_at_most_every_interval_and_new_keys_then_appear(s3, tmp_path: Path) -> None:
    config, store, _ = await _uploaded(s3, tmp_path, "first")
    slow = _replica_index(tmp_path, "slow", config, s3_interval=3600)
    eager = _replica_index(tmp_path, "eager", config, s3_interval=0)
    assert _ids(slow) == _ids(eager) == ["first"]
    await record(config, store, "second", b"two\n")
    await store.drain()
    assert _ids(slow) == ["first"]  # listed less than an interval ago
    assert sorted(_ids(eager)) == ["first", "second"]


async def test_a_bucket_that_cannot_be_listed_gives_a_warning_not_an_error(s3, tmp_path: Path) -> None:
    config = recording_config(tmp_path, new_bucket())  # never created
    index = _replica_index(tmp_path, "b", config)
    page = index.listing(user="", socket="", since=None, offset=0, limit=10)
    assert page.total == 0 and "cannot be listed" in page.warnings[0]


async def test_the_consoles_sessions_pages_show_a_session_that_is_only_in_s3(s3, tmp_path: Path) -> None:
    _, _, bucket = await _uploaded(s3, tmp_path / "replica-a", "only-in-s3")
    s3_config = {"bucket": bucket, "prefix": "sessions/", "region": sinks.REGION}
    async with console_connector(tmp_path, recordings={"s3": s3_config}) as h:
        async with browser(h.ssl_context()) as session:
            await sign_in(session, h.url, "alice")
            async with session.get(h.url + "/console/sessions?user=alice") as resp:
                listing = await resp.text()
                assert resp.status == 200, listing
                assert "1 session(s)" in listing and 'href="/console/sessions/only-in-s3"' in listing
            async with session.get(h.url + "/console/sessions/only-in-s3") as resp:
                assert resp.status == 200
            async with session.get(h.url + "/console/sessions/only-in-s3.cast") as resp:
                assert await resp.read() == s3.get_object(Bucket=bucket, Key="sessions/only-in-s3.cast")["Body"].read()
    assert (tmp_path / "state" / "console").is_dir()  # the index lives in the state directory
