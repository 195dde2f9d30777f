"""An index of the recorded sessions for the console: an SQLite file in the connector's state
directory, caught up with the sinks, so that a page of the sessions list is one indexed query
whether there are ten sessions or 100,000.

Why this design:
- The sinks stay the truth (the audit log, the recordings directory, the S3 bucket); the index is a
  cache of them, deleted at will and rebuilt from them. Each replica (and each worker of
  `serve --workers N`, which share the file) catches up from the same sinks, S3 included, so all of
  them show the same list and nothing is shared between replicas but the bucket.
- Catching up is incremental, and nearly free when nothing changed: the audit log is read from the
  byte offset where the last catch-up stopped (from the start again when the file was replaced or
  shrank: rotation); the recordings directory is listed only when its mtime changed (a recording is
  created, then renamed when it ends: both change it), and only the names not indexed yet are read;
  S3 is listed at most every `s3_interval` seconds and only new keys are read (two ranged GETs).
- It runs before a list page is answered, and once at start (so the first page after a restart is
  fast), rather than being fed by the recorder: the recorder runs in whichever worker served the
  exec, and the S3 uploads come from every replica, so reading the sinks is what sees all sessions.
- Filters (user, socket, since), the order (newest first) and the page are done by SQLite on its
  indexes. The byte offsets of each session's audit lines are kept too, so the session page seeks
  to them instead of reading the whole log.
- SQLite comes with Python: no new dependency, no server. In WAL mode pages read while a catch-up
  writes; the catch-up commits in batches, and a page does not wait long for another's catch-up: it
  answers from the index as it is, saying the list may be incomplete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.audit.recording_sinks import RECORDING_SUFFIX, make_s3_client
from connector.audit.sessions_cli import (
    SessionRow,
    Sources,
    UsageError,
    fill_from_header,
    is_recording_name,
    read_local_recording,
    read_s3_recording,
    sessions_from_audit,
)
from connector.proxy.server_tls import default_state_dir

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

log = logging.getLogger(__name__)

S3_LIST_INTERVAL_SECONDS = 30.0
# How long a page waits for another request's catch-up before answering from the index as it is.
CATCH_UP_WAIT_SECONDS = 5.0
# Recordings (and audit lines / 20) per transaction: a crash loses at most one batch of work, and
# readers see the progress.
BATCH = 5000
# Audit lines that can belong to a session name one of these; the others are not parsed at all.
_SESSION_LINE = re.compile(rb'"(?:exec|attach|portforward)"')
# Where the index finds a session line's request id without parsing it again (what the seeks need).
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([^"\\]*)"')
_SELECT = ("SELECT session_id, started, user, socket, namespace, pod, container, kind, command, exit, recording, "
           "sources FROM sessions")  # fmt: skip
_STORE = ("INSERT OR REPLACE INTO sessions (session_id, started, user, socket, namespace, pod, container, kind, "
          "command, exit, recording, sources) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, started REAL, user TEXT NOT NULL, socket TEXT NOT NULL,
    namespace TEXT NOT NULL, pod TEXT NOT NULL, container TEXT NOT NULL, kind TEXT NOT NULL,
    command TEXT NOT NULL, exit TEXT NOT NULL, recording TEXT NOT NULL, sources TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_newest ON sessions (started DESC, session_id DESC);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user, started DESC, session_id DESC);
CREATE INDEX IF NOT EXISTS sessions_by_socket ON sessions (socket, started DESC, session_id DESC);
CREATE TABLE IF NOT EXISTS audit_lines (session_id TEXT NOT NULL, offset INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS audit_lines_by_session ON audit_lines (session_id, offset);
CREATE TABLE IF NOT EXISTS seen (location TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SessionPage:
    rows: list[SessionRow]
    total: int
    warnings: list[str]


class Busy(Exception):
    """Another process holds the index's write lock."""


def index_path(state_dir: Path, sources: Sources) -> Path:
    """The index file for these sources: other sources (after a config change) get another file."""
    s3 = sources.s3
    where = json.dumps([str(sources.audit_log), str(sources.directory), s3 and [s3.bucket, s3.prefix]])
    return state_dir / "console" / f"sessions-{hashlib.sha256(where.encode()).hexdigest()[:16]}.sqlite"


class SessionIndex:
    """The sessions of `sources`, indexed in the SQLite file at `path` (made on first use)."""

    def __init__(
        self,
        path: Path,
        sources: Sources,
        *,
        s3_interval: float = S3_LIST_INTERVAL_SECONDS,
        wait: float = CATCH_UP_WAIT_SECONDS,
    ):
        self.path = path
        self.sources = sources
        self.s3_interval = s3_interval
        self.wait = wait
        self._catching_up = threading.Lock()
        self._closed = threading.Event()
        # The recordings this process knows are indexed (loaded once): another process indexing one too
        # only makes this one read it again, which changes nothing.
        self._seen: set[str] | None = None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def close(self) -> None:
        """Make a catch-up in progress stop after its current batch (the connector is stopping)."""
        self._closed.set()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=self.wait, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a crash may lose the last batch: it is read again
            yield db

    @contextmanager
    def _batch(self, db: sqlite3.Connection) -> Iterator[None]:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Busy(str(exc)) from None
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- catching up with the sinks ---------------------------------------------------------------

    def catch_up(self) -> list[str]:
        """Index what the sinks have that the index has not; the warnings to show (unreadable files,
        S3 errors, or that another catch-up is still running)."""
        if not self._catching_up.acquire(timeout=self.wait):
            return ["the sessions index is still catching up with the recordings: this list may be incomplete"]
        warnings: list[str] = []
        try:
            with self._connect() as db:
                if self.sources.audit_log is not None:
                    self._catch_up_audit(db, self.sources.audit_log)
                if self.sources.directory is not None:
                    self._catch_up_directory(db, self.sources.directory, warnings)
                if self.sources.s3 is not None:
                    self._catch_up_s3(db, self.sources.s3, warnings)
        except Busy:
            warnings.append("another process is updating the sessions index: this list may be incomplete")
        except sqlite3.DatabaseError as exc:
            log.error("sessions index %s: %s", self.path, exc)
            warnings.append(f"the sessions index cannot be updated ({exc}): this list may be incomplete")
        finally:
            self._catching_up.release()
        return warnings

    def _catch_up_audit(self, db: sqlite3.Connection, audit_log: Path) -> None:
        try:
            f = audit_log.open("rb")
        except FileNotFoundError:
            return
        with f:
            st = os.fstat(f.fileno())
            file_id = f"{st.st_dev}:{st.st_ino}"
            if _meta(db, "audit_file") == file_id and _meta(db, "audit_offset") == str(st.st_size):
                return  # nothing new: no write transaction at all
            while not self._closed.is_set():
                with self._batch(db):
                    offset = int(_meta(db, "audit_offset") or 0)
                    if _meta(db, "audit_file") != file_id or offset > st.st_size:
                        db.execute("DELETE FROM audit_lines")  # they point into the file that was rotated away
                        _set_meta(db, "audit_file", file_id)
                        offset = 0
                    f.seek(offset)
                    offset, more = self._index_audit_lines(db, f, offset)
                    _set_meta(db, "audit_offset", str(offset))
                if not more:
                    return

    def _index_audit_lines(self, db: sqlite3.Connection, f: Any, offset: int) -> tuple[int, bool]:
        """Index the session lines among the next BATCH * 20 lines from `offset`; (the offset after the
        last whole line read, whether there is more)."""
        candidates: list[tuple[int, bytes]] = []
        more = True
        for _ in range(BATCH * 20):
            line = f.readline()
            if not line.endswith(b"\n"):
                more = False  # the end, or a line still being written: read it next time
                break
            if _SESSION_LINE.search(line):
                candidates.append((offset, line))
            offset += len(line)
        # One parse of the batch merges each session's lines, then one read and write per session.
        rows, _ = sessions_from_audit(line.decode("utf-8", "replace") for _, line in candidates)
        for row in rows.values():
            old = _load(db, row.session_id)
            _store(db, row if old is None else _with_audit(old, row))
        lines = ((m.group(1).decode(), at) for at, line in candidates if (m := _REQUEST_ID.search(line)))
        db.executemany("INSERT INTO audit_lines VALUES (?, ?)", ((i, at) for i, at in lines if i in rows))
        return offset, more

    def _catch_up_directory(self, db: sqlite3.Connection, directory: Path, warnings: list[str]) -> None:
        try:
            mtime = str(directory.stat().st_mtime_ns)  # before listing: a change while listing is seen next time
        except FileNotFoundError:
            warnings.append(f"recordings directory {directory} does not exist")
            return
        if _meta(db, "directory_mtime") == mtime:
            return
        seen = self._seen_locations(db)
        new = sorted(e.name for e in os.scandir(directory) if is_recording_name(e.name) and e.name not in seen)
        for start in range(0, len(new), BATCH):
            if self._closed.is_set():
                return
            with self._batch(db):
                for name in new[start : start + BATCH]:
                    path = directory / name
                    try:
                        session_id, header, exit_code = read_local_recording(path)
                    except FileNotFoundError:
                        continue  # a recording that ended meanwhile: its final name is indexed next time
                    except (OSError, UsageError) as exc:
                        warnings.append(f"{path}: {exc}")
                    else:
                        self._add_recording(db, session_id, header, exit_code, str(path))
                    db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (name,))
            seen.update(new[start : start + BATCH])  # after the commit: a rolled-back batch is read again
        with self._batch(db):
            _set_meta(db, "directory_mtime", mtime)

    def _catch_up_s3(self, db: sqlite3.Connection, s3: Any, warnings: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        listed_at = float(_meta(db, "s3_listed_at") or 0)
        if time.time() - listed_at < self.s3_interval:
            return
        started = time.time()
        prefix = f"s3://{s3.bucket}/"
        seen = self._seen_locations(db)
        client = make_s3_client(s3.region)
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=s3.prefix):
                if self._closed.is_set():
                    return
                keys = [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(RECORDING_SUFFIX)]
                with self._batch(db):
                    for key in (k for k in keys if prefix + k not in seen):
                        try:
                            session_id, header, exit_code = read_s3_recording(client, s3.bucket, key)
                        except UsageError as exc:
                            warnings.append(f"{prefix}{key}: {exc}")
                        else:
                            self._add_recording(db, session_id, header, exit_code, prefix + key)
                        db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (prefix + key,))
                seen.update(prefix + k for k in keys)
        except (BotoCoreError, ClientError) as exc:
            warnings.append(f"the recordings in s3://{s3.bucket}/{s3.prefix} cannot be listed: {exc}")
            return
        with self._batch(db):
            _set_meta(db, "s3_listed_at", str(started))

    def _seen_locations(self, db: sqlite3.Connection) -> set[str]:
        """The recording file names and s3:// URIs already indexed."""
        if self._seen is None:
            self._seen = {location for (location,) in db.execute("SELECT location FROM seen")}
        return self._seen

    def _add_recording(
        self, db: sqlite3.Connection, session_id: str, header: dict[str, Any], exit_code: str, location: str
    ) -> None:
        row = _load(db, session_id) or SessionRow(session_id)
        fill_from_header(row, header, location)
        row.recording = location  # where it is now (a local file uploaded to S3 is deleted)
        row.exit = exit_code
        _store(db, row)

    # -- reading ----------------------------------------------------------------------------------

    def listing(self, *, user: str, socket: str, since: dt.datetime | None, offset: int, limit: int) -> SessionPage:
        """Caught up, then one page of the sessions matching the filters, newest first, and their count."""
        warnings = self.catch_up()
        where, values = [], []
        for column, value in (("user", user), ("socket", socket)):
            if value:
                where.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            where.append("started >= ?")
            values.append(since.timestamp())
        # Only the fixed predicates above are joined into the SQL; every value is a bound parameter.
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        with self._connect() as db:
            total = db.execute("SELECT COUNT(*) FROM sessions" + condition, values).fetchone()[0]  # noqa: S608
            found = db.execute(
                _SELECT + condition + " ORDER BY started DESC, session_id DESC LIMIT ? OFFSET ?",
                [*values, limit, offset],
            ).fetchall()
        return SessionPage([_row(r) for r in found], total, warnings)

    def recording(self, session_id: str) -> str | None:
        """Where the session's recording was last found (a path or an s3:// URI), if indexed."""
        with self._connect() as db:
            row = _load(db, session_id)
        return row.recording if row is not None and row.recording else None

    def audit_lines(self, session_id: str, limit: int) -> list[bytes]:
        """The session's audit log lines, read where the index saw them (no scan of the log)."""
        audit_log = self.sources.audit_log
        if audit_log is None:
            return []
        with self._connect() as db:
            file_id = _meta(db, "audit_file")
            offsets = [
                at
                for (at,) in db.execute(
                    "SELECT offset FROM audit_lines WHERE session_id = ? ORDER BY offset LIMIT ?", (session_id, limit)
                )
            ]
        try:
            f = audit_log.open("rb")
        except FileNotFoundError:
            return []
        with f:
            st = os.fstat(f.fileno())
            if f"{st.st_dev}:{st.st_ino}" != file_id:
                return []  # rotated since: the next catch-up indexes the new file
            lines = []
            for at in offsets:
                f.seek(at)
                lines.append(f.readline())
            return lines


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    found = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return found[0] if found else None


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def _with_audit(old: SessionRow, new: SessionRow) -> SessionRow:
    """`old` updated with an audit line's row: the audit log's values win (as in `sessions list`)."""
    for attr in ("user", "socket", "namespace", "pod", "container", "kind"):
        if getattr(new, attr):
            setattr(old, attr, getattr(new, attr))
    old.command = new.command or old.command
    old.recording = old.recording or new.recording
    if new.started is not None and (old.started is None or new.started < old.started):
        old.started = new.started
    old.sources |= new.sources
    return old


def _load(db: sqlite3.Connection, session_id: str) -> SessionRow | None:
    found = db.execute(_SELECT + " WHERE session_id = ?", (session_id,)).fetchone()
    return None if found is None else _row(found)


def _row(values: tuple[Any, ...]) -> SessionRow:
    session_id, started, user, socket, namespace, pod, container, kind, command, exit_code, recording, sources = values
    return SessionRow(
        session_id=session_id,
        started=None if started is None else dt.datetime.fromtimestamp(started, dt.UTC),
        user=user, socket=socket, namespace=namespace, pod=pod, container=container, kind=kind,
        command=json.loads(command), exit=exit_code, recording=recording, sources=set(json.loads(sources)),
    )  # fmt: skip


def _store(db: sqlite3.Connection, row: SessionRow) -> None:
    db.execute(
        _STORE,
        (
            row.session_id, None if row.started is None else row.started.timestamp(), row.user, row.socket,
            row.namespace, row.pod, row.container, row.kind, json.dumps(row.command), row.exit, row.recording,
            json.dumps(sorted(row.sources)),
        ),
    )  # fmt: skip


def open_session_index(cfg: ConnectorConfig, sources: Sources, previous: SessionIndex | None) -> SessionIndex | None:
    """The index for the console's sessions pages (None with the console off, or when the state
    directory cannot hold it: the pages then say so); `previous` is kept when the sources are the same."""
    if not cfg.console.enabled:
        return None
    state_dir = Path(cfg.server.state_dir) if cfg.server.state_dir else default_state_dir()
    path = index_path(state_dir, sources)
    if previous is not None and previous.path == path:
        return previous
    if previous is not None:
        previous.close()
    try:
        return SessionIndex(path, sources)
    except (OSError, sqlite3.Error) as exc:
        log.error("console: cannot keep the sessions index in %s: %s (set server.state_dir to a writable "
                  "directory)", path, exc)  # fmt: skip
        return None
