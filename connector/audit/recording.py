"""Session recordings: every exec and attach as an asciicast v2 file that `asciinema play` replays.

The file is one JSON header line, then one JSON line per event `[seconds, code, data]`:

- header: `version` 2, `width`/`height` (the size in effect at the session's first output, else the
  first resize after it, else 80x24),
  `timestamp` (start, Unix seconds), `title`, and a `connector` object with the session's metadata
  (session id, user, groups, source IP, socket, namespace, pod, container, command, tty, stdin,
  protocol, subresource);
- `o`: what the container wrote, stdout and stderr alike (as a terminal shows them);
- `r`: a resize, `COLSxROWS`;
- `i`: what the user typed, only with `recordings.stdin: true` (it may hold passwords);
- `m`: markers: protocol oddities, a decode failure, the truncation point, and last the exit status.

Port-forward sessions carry arbitrary TCP data and are recorded as metadata and byte counts only.

Memory per session is bounded whatever its length: events are written as they arrive (through a
64 KiB file buffer, flushed at least every second), and only the few first events of a TTY session
are held back, until the header's size is known: the one in effect when the container's output
begins. Not simply the first resize: `kubectl attach -it` sends the size plus one, then the real
size (to make the program redraw), and the first would be one column and one row too many.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.audit.recording_config import RecordingConfig
from connector.audit.recording_sinks import LocalRecordingFile, RecordingError, RecordingStore
from connector.audit.tap import (
    DecodeError,
    PassiveTap,
    ProtocolNote,
    SessionEvent,
    StreamData,
    session_decoder_for,
)
from connector.kube.channels import ExitStatus, TerminalSize
from connector.metrics import RECORDING_ERRORS

log = logging.getLogger(__name__)

DEFAULT_SIZE = TerminalSize(80, 24)
# A TTY session's events wait for its header's size at most this long / this much.
HEADER_WAIT_SECONDS = 2.0
HEADER_WAIT_BYTES = 64 * 1024
FLUSH_INTERVAL_SECONDS = 1.0
# Room kept below max_bytes for the truncation marker and the exit status marker.
TRAILER_RESERVE = 4096
MAX_MARKER_CHARS = 500

__all__ = [
    "AsciicastWriter",
    "RecordingError",
    "RecordingSummary",
    "SessionMeta",
    "SessionTap",
    "drain_recordings",
    "open_session_tap",
]


@dataclass(frozen=True)
class SessionMeta:
    """What the proxy knows about an exec, attach or port-forward session when it starts."""

    session_id: str
    user: str
    groups: tuple[str, ...]
    source_ip: str
    socket: str
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    tty: bool
    stdin: bool
    protocol: str  # the negotiated websocket subprotocol, or "SPDY/3.1"
    subresource: str  # exec | attach | portforward

    def __post_init__(self) -> None:
        # Callers naturally pass lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "command", tuple(self.command))

    def title(self) -> str:
        target = f"{self.namespace}/{self.pod}" + (f" -c {self.container}" if self.container else "")
        command = f" -- {shlex.join(self.command)}" if self.command else ""
        return f"{self.user}: {self.subresource} {target}{command} ({self.socket})"

    def header_object(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user": self.user,
            "groups": list(self.groups),
            "source_ip": self.source_ip,
            "socket": self.socket,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "command": list(self.command),
            "tty": self.tty,
            "stdin": self.stdin,
            "protocol": self.protocol,
            "subresource": self.subresource,
        }


def _line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MARKER_CHARS else text[: MAX_MARKER_CHARS - 1] + "…"


class AsciicastWriter:
    """Session events -> asciicast v2 lines, handed to `write` as they come, within `max_bytes`.

    Output bytes are decoded as UTF-8 per stream (a character split across two chunks is joined;
    bytes that are not UTF-8 become U+FFFD, as in asciinema's own recorder).
    """

    def __init__(
        self,
        meta: SessionMeta,
        *,
        started_at: float,
        max_bytes: int,
        record_stdin: bool,
        write: Callable[[bytes], None],
    ):
        self.meta = meta
        self._started_at = started_at
        self._max_bytes = max_bytes
        self._limit = max_bytes - TRAILER_RESERVE
        self._record_stdin = record_stdin
        self._write = write
        self._stream_decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
            "stdin": codecs.getincrementaldecoder("utf-8")("replace"),
        }
        # A TTY session's size comes with its resizes: hold events back until both a resize and
        # output have come, and give the header the last size before that point.
        waits = meta.tty and meta.subresource in ("exec", "attach")
        self._pending: list[tuple[float, str, str]] | None = [] if waits else None
        self._pending_bytes = 0
        self._size = DEFAULT_SIZE
        self._resized = False
        self._output_seen = False
        self.bytes_written = 0
        self.truncated = False
        self.exit_status: ExitStatus | None = None
        self.decode_error: str | None = None
        self._closed = False
        if self._pending is None:
            self._write_header()

    # -- events ---------------------------------------------------------------------------------

    def add(self, elapsed: float, event: SessionEvent) -> None:
        if self._closed:
            return
        if isinstance(event, StreamData):
            if event.stream == "stdin" and not self._record_stdin:
                return
            text = self._stream_decoders[event.stream].decode(event.data)
            if text:
                self._event(elapsed, "i" if event.stream == "stdin" else "o", text)
        elif isinstance(event, TerminalSize):
            if self._pending is not None and event.width > 0 and event.height > 0:
                self._size = event
                self._resized = True
            self._event(elapsed, "r", f"{event.width}x{event.height}")
        elif isinstance(event, ExitStatus):
            self.exit_status = event
        elif isinstance(event, ProtocolNote):
            self._event(elapsed, "m", _clip(f"protocol note ({event.direction}): {event.message}"))
        elif isinstance(event, DecodeError):
            self.decode_error = event.message
            self._event(elapsed, "m", _clip(f"decode error: {event.message}; the rest of the session is not recorded"))
        # StreamClosed needs no line: the stream's data simply ends.

    def close(self, elapsed: float, *, bytes_from_client: int, bytes_from_upstream: int) -> None:
        """Write what is still held back and the final marker."""
        if self._closed:
            return
        for stream, decoder in self._stream_decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest and (stream != "stdin" or self._record_stdin):
                self._event(elapsed, "i" if stream == "stdin" else "o", rest)
        self._release()
        self._closed = True
        self._marker(elapsed, self._final_text(bytes_from_client, bytes_from_upstream))

    def _final_text(self, from_client: int, from_upstream: int) -> str:
        if self.meta.subresource == "portforward":
            return f"port-forward ended: {from_client} bytes from the client, {from_upstream} bytes to the client"
        status = self.exit_status
        if status is None:
            return "session ended without an exit status"
        if status.code is None:
            return _clip(f"session failed: {status.message}")
        if status.code == 0 or not status.message:
            return f"exit status {status.code}"
        return _clip(f"exit status {status.code}: {status.message}")

    # -- writing --------------------------------------------------------------------------------

    def _write_header(self) -> None:
        header = {
            "version": 2,
            "width": self._size.width,
            "height": self._size.height,
            "timestamp": int(self._started_at),
            "title": _clip(self.meta.title()),
            "connector": self.meta.header_object(),
        }
        self._put(_line(header))

    def _release(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._write_header()
        for item in pending:
            self._event(*item)

    def _event(self, elapsed: float, code: str, text: str) -> None:
        if self._pending is not None:
            self._pending.append((elapsed, code, text))
            self._pending_bytes += len(text)
            self._output_seen = self._output_seen or code == "o"
            sized = self._resized and self._output_seen
            if sized or self._pending_bytes > HEADER_WAIT_BYTES or elapsed > HEADER_WAIT_SECONDS:
                self._release()
            return
        if self.truncated:
            return
        line = _line([round(elapsed, 6), code, text])
        if self.bytes_written + len(line) <= self._limit:
            self._put(line)
            return
        if code in ("o", "i"):
            # Keep what fits: a character takes at most 6 bytes in this JSON (\u00XX escapes).
            room = self._limit - self.bytes_written - len(_line([round(elapsed, 6), code, ""]))
            if room >= 6:
                self._put(_line([round(elapsed, 6), code, text[: room // 6]]))
        self.truncated = True
        self._marker(
            elapsed, f"recording truncated: the {self._max_bytes}-byte limit was reached; later events are not recorded"
        )

    def _marker(self, elapsed: float, text: str) -> None:
        self._put(_line([round(elapsed, 6), "m", text]))

    def _put(self, line: bytes) -> None:
        self.bytes_written += len(line)
        self._write(line)


@dataclass(frozen=True)
class RecordingSummary:
    """What the end-of-session audit event says about the recording."""

    recording: str | None
    exit_code: int | None
    exit_message: str
    bytes_from_client: int
    bytes_from_upstream: int
    truncated: bool
    decode_error: str | None = None
    write_error: str | None = None


class SessionTap:
    """The tap the proxy's relay calls: decodes the session and writes its recording.

    `client_bytes` and `upstream_bytes` are called with every relayed chunk and never raise;
    `await close()` at the end of the session makes the file durable, hands it to the S3 upload
    when configured, and returns the summary. `recording` names the recording from the start (its
    S3 URI, or its local path), so the audit events can point at it.
    """

    def __init__(
        self,
        meta: SessionMeta,
        config: RecordingConfig,
        store: RecordingStore,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
    ):
        self.meta = meta
        self._store = store
        self._monotonic = monotonic
        self._file: LocalRecordingFile = store.create(meta.session_id)
        self.recording_id = self._file.recording_id
        self.recording: str = store.location(self.recording_id)
        self.write_error: str | None = None
        self._tap = PassiveTap(session_decoder_for(meta.protocol, meta.subresource))
        self._start = monotonic()
        self._flush_interval = flush_interval
        self._flush_timer: asyncio.TimerHandle | None = None
        self._ending: asyncio.Task[RecordingSummary] | None = None
        self._closing = False
        self._writer = AsciicastWriter(
            meta,
            started_at=wall(),
            max_bytes=config.max_bytes,
            record_stdin=config.stdin and meta.stdin,
            write=self._write,
        )
        if not self._tap.decoding and meta.subresource in ("exec", "attach"):
            self._writer.add(
                0.0,
                ProtocolNote("upstream", f"protocol {meta.protocol!r} is not decoded; only byte counts are recorded"),
            )

    def client_bytes(self, data: bytes) -> None:
        if not self._closing:
            self._record(self._tap.client_bytes(data))

    def upstream_bytes(self, data: bytes) -> None:
        if not self._closing:
            self._record(self._tap.upstream_bytes(data))

    def _record(self, events: list[SessionEvent]) -> None:
        now = self._monotonic()
        for event in events:
            if isinstance(event, DecodeError):
                RECORDING_ERRORS.labels(stage="decode").inc()
            self._writer.add(now - self._start, event)

    def _write(self, data: bytes) -> None:
        if self.write_error is not None:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self._write_failed(exc)
            return
        if self._flush_timer is None and not self._closing:
            # Whatever sits in the file buffer reaches the disk within the interval, even if the
            # session then goes quiet, so a crash of the connector loses at most that much.
            self._flush_timer = asyncio.get_running_loop().call_later(self._flush_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_timer = None
        self._flush()

    def _flush(self) -> None:
        if self.write_error is not None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        self.write_error = f"{self._file.partial_path}: {exc}"
        RECORDING_ERRORS.labels(stage="write").inc()
        log.error("recording of session %s stopped: cannot write %s", self.meta.session_id, self.write_error)

    async def close(self) -> RecordingSummary:
        """End the recording; safe to call more than once.

        The work runs in a task of its own that a cancelled caller does not stop (a request handler
        may be cancelled when its connection goes), so the file is always finished and uploaded.
        """
        if self._ending is None:
            self._closing = True
            self._ending = self._store.track(self._end())
        return await asyncio.shield(self._ending)

    async def _end(self) -> RecordingSummary:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._record(self._tap.finish())
        elapsed = self._monotonic() - self._start
        self._writer.close(
            elapsed, bytes_from_client=self._tap.bytes_from_client, bytes_from_upstream=self._tap.bytes_from_upstream
        )
        try:
            path = await self._file.finish()
        except OSError as exc:
            if self.write_error is None:
                self._write_failed(exc)
            path = None
        if path is not None:
            self._store.submit(path, self.recording_id)
        status = self._writer.exit_status
        return RecordingSummary(
            recording=self.recording if path is not None else None,
            exit_code=status.code if status else None,
            exit_message=status.message if status else "",
            bytes_from_client=self._tap.bytes_from_client,
            bytes_from_upstream=self._tap.bytes_from_upstream,
            truncated=self._writer.truncated,
            decode_error=self._tap.decode_error,
            write_error=self.write_error,
        )


_STORES: dict[RecordingConfig, RecordingStore] = {}


def store_for(config: RecordingConfig) -> RecordingStore:
    """The store for a recordings config; one per distinct config, kept across config reloads."""
    store = _STORES.get(config)
    if store is None:
        store = _STORES[config] = RecordingStore(config)
    return store


async def drain_recordings() -> None:
    """Wait until every ended session's recording is on disk and uploaded (for a graceful shutdown)."""
    await asyncio.gather(*(store.drain() for store in list(_STORES.values())))


def open_session_tap(meta: SessionMeta, config: RecordingConfig, *, store: RecordingStore | None = None) -> SessionTap:
    """Start recording a session. Raises RecordingError when it cannot be recorded.

    The proxy decides what a RecordingError means for the session: refusing it keeps the promise
    that every session is recorded, at the price of availability when the disk is full.
    """
    if not config.enabled:
        raise RecordingError("recordings are disabled: set recordings.dir to record sessions")
    return SessionTap(meta, config, store if store is not None else store_for(config))
