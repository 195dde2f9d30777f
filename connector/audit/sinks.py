"""Where audit events are written (stdout or a file), and what happens when that fails.

An audit event is never dropped silently: a failed write is counted
(`connector_audit_write_errors_total`), the event itself goes to the error log, `/readyz` reports
the sink as failing until a later write succeeds, and with `audit.fail_closed` the proxy refuses
requests with 503 meanwhile. Writes are small appends done in the event loop; the slow part,
fsync, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, BinaryIO, Protocol

from connector import metrics
from connector.audit.config import AuditConfig
from connector.audit.events import AuditEvent

log = logging.getLogger(__name__)


class AuditSinkError(Exception):
    """The audit destination cannot be opened (reported at startup and on reload)."""


class _Sink(Protocol):
    def write(self, line: bytes) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    """Lines to the process's stdout; durability is the log collector's job, so `sync` only flushes."""

    def __init__(self, stream: BinaryIO | None = None):
        self._stream = stream if stream is not None else sys.stdout.buffer

    def write(self, line: bytes) -> None:
        self._stream.write(line)
        self._stream.flush()

    def sync(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.sync()


class FileSink:
    """Lines appended to a file opened with O_APPEND, so several writers never interleave within a line."""

    def __init__(self, path: str):
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditSinkError(f"audit.file: cannot open {path} for appending: {exc.strerror}") from None
        self._fd = fd

    def write(self, line: bytes) -> None:
        if self._fd < 0:
            raise ValueError(f"audit file {self.path} is closed")
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")

    def sync(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        # The descriptor number is forgotten first: a late write must fail, not land in whatever file
        # the operating system hands that number to next.
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_sink(config: AuditConfig, stdout: BinaryIO | None = None) -> _Sink:
    """The sink the config asks for; raises AuditSinkError when a file cannot be opened."""
    if config.file is None:
        return StdoutSink(stdout)
    return FileSink(config.file)


def report_lost_event(error: str, line: bytes) -> None:
    """Count a failed write and put the event in the error log, so that it is not lost though the sink refused it."""
    metrics.AUDIT_WRITE_ERRORS.inc()
    log.error("audit event could not be written (%s): %s", error, line.decode(errors="replace").rstrip())


class AuditLog:
    """The running audit log: writes events, tracks whether the sink works, fsyncs per policy."""

    def __init__(self, config: AuditConfig, *, stdout: BinaryIO | None = None):
        self.config = config
        self._stdout = stdout
        self._sink = open_sink(config, stdout)
        self._healthy = True
        self._last_error: str | None = None
        self._dirty = False
        self._syncer: asyncio.Task[None] | None = None
        self._pending_syncs: set[asyncio.Future[None]] = set()

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def fail_closed(self) -> bool:
        return self.config.fail_closed

    def start(self) -> None:
        """Start the periodic fsync when the policy is `interval` (needs a running loop)."""
        if self.config.fsync == "interval" and self._syncer is None:
            self._syncer = asyncio.create_task(self._sync_periodically(), name="audit-fsync")

    def emit(self, event: AuditEvent) -> Coroutine[Any, Any, bool]:
        """Write one event; True when it reached the sink (and the disk, with `fsync: always`)."""
        return self.emit_line(event.to_line())

    async def emit_line(self, line: bytes) -> bool:
        """Write one serialized event (a worker's, under `serve --workers N`); as `emit`."""
        try:
            self._sink.write(line)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self._failed(exc, line)
            return False
        if self.config.fsync == "always":
            sync = asyncio.ensure_future(asyncio.to_thread(self._sink.sync))
            self._pending_syncs.add(sync)
            sync.add_done_callback(functools.partial(self._sync_done, line))
            try:
                # Shielded: a client hanging up mid-request must not leave the event unsynced.
                await asyncio.shield(sync)
            except OSError:
                return False  # counted and logged by _sync_done
        else:
            self._dirty = True
        self._healthy = True
        return True

    def _sync_done(self, line: bytes, sync: asyncio.Future[None]) -> None:
        self._pending_syncs.discard(sync)
        if sync.cancelled():
            return
        exc = sync.exception()
        if exc is not None:
            self._failed(exc, line)

    def _failed(self, exc: BaseException, line: bytes) -> None:
        self._healthy = False
        self._last_error = f"{type(exc).__name__}: {exc}"
        report_lost_event(self._last_error, line)

    async def _sync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.fsync_interval_seconds)
            if not self._dirty:
                continue
            self._dirty = False
            try:
                await asyncio.to_thread(self._sink.sync)
            except OSError as exc:
                metrics.AUDIT_WRITE_ERRORS.inc()
                self._healthy = False
                self._last_error = f"fsync failed: {exc}"
                log.error("audit log fsync failed: %s", exc)

    def reopen(self) -> None:
        """Reopen the destination (after logrotate moved the file); raises AuditSinkError and keeps the old one."""
        new = open_sink(self.config, self._stdout)
        old, self._sink = self._sink, new
        with contextlib.suppress(OSError, ValueError):
            old.close()

    async def close(self) -> None:
        """Flush and fsync everything written so far; the log accepts no events afterwards."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
            self._syncer = None
        if self._pending_syncs:
            await asyncio.gather(*self._pending_syncs, return_exceptions=True)
        try:
            await asyncio.to_thread(self._sink.close)
        except (OSError, ValueError) as exc:
            metrics.AUDIT_WRITE_ERRORS.inc()
            log.error("audit log could not be closed cleanly: %s", exc)
