"""Where session recordings are kept: a local directory, and S3 when configured.

Every recording is first a local file, written as the session goes (`ID.cast.part`) and, when the
session ends, fsynced and renamed to `ID.cast`, so a finished recording is always complete on disk.
With S3 configured the finished file is then uploaded (server-side encryption, retried with
exponential backoff) and deleted only once the upload succeeded: while S3 is unreachable the
recordings wait in the directory, and they are uploaded later by the next sweep (one runs when the
store is first used, and again whenever an upload succeeds after another one failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from connector.audit.recording_config import RecordingConfig, S3RecordingConfig
from connector.metrics import RECORDING_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

RECORDING_SUFFIX = ".cast"
PARTIAL_SUFFIX = ".cast.part"
CONTENT_TYPE = "application/x-asciicast"
SERVER_SIDE_ENCRYPTION = "AES256"

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RecordingError(Exception):
    """A recording could not be started (e.g. the directory is not writable)."""


def recording_id_for(session_id: str) -> str:
    """The file name stem for a session: the session id itself when it is safe in a path and key.

    Session ids are request ids, which may come from the client; one that is not a plain token is
    replaced by a digest of it, so that no id can reach outside the directory or the S3 prefix.
    """
    if _SAFE_ID.match(session_id) and not session_id.endswith((".part", ".")):
        return session_id
    return "s-" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LocalRecordingFile:
    """One session's recording on disk, written as it goes and made durable by `finish`."""

    def __init__(self, directory: Path, recording_id: str):
        self.recording_id = recording_id
        self.partial_path = directory / f"{recording_id}{PARTIAL_SUFFIX}"
        self.path = directory / f"{recording_id}{RECORDING_SUFFIX}"
        if self.path.exists():
            raise FileExistsError(str(self.path))
        # Exclusive create: a session never overwrites another one's recording. Owner-only mode:
        # recordings hold everything the session printed.
        fd = os.open(self.partial_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=64 * 1024)

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    async def finish(self) -> Path:
        """Flush, fsync and rename to the final name; the blocking part runs in a thread."""
        return await asyncio.to_thread(self._finish)

    def _finish(self) -> Path:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
        os.replace(self.partial_path, self.path)
        _fsync_directory(self.path.parent)
        return self.path


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Uploader:
    """Uploads finished recordings to `s3://bucket/prefix/ID.cast`, retrying with exponential backoff.

    The S3 client is made on first use, in a thread (making one reads botocore's data files), from
    the default credential chain: the connector's IAM role on AWS, or the usual AWS_* variables.
    """

    def __init__(
        self,
        config: S3RecordingConfig,
        *,
        attempts: int = 5,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ):
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.config = config
        self._attempts = attempts
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._client: Any = None
        self._client_lock = asyncio.Lock()

    def key(self, recording_id: str) -> str:
        return f"{self.config.prefix}{recording_id}{RECORDING_SUFFIX}"

    def uri(self, recording_id: str) -> str:
        return f"s3://{self.config.bucket}/{self.key(recording_id)}"

    async def _s3(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                self._client = await asyncio.to_thread(make_s3_client, self.config.region)
            return self._client

    async def upload(self, path: Path, recording_id: str) -> bool:
        """Upload `path`; True once S3 has it. Each failed attempt is logged, the last one counted."""
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                client = await self._s3()
                await asyncio.to_thread(
                    client.upload_file,
                    str(path),
                    self.config.bucket,
                    self.key(recording_id),
                    ExtraArgs={"ServerSideEncryption": SERVER_SIDE_ENCRYPTION, "ContentType": CONTENT_TYPE},
                )
                return True
            # botocore's errors (ClientError, BotoCoreError, S3UploadFailedError...) share no base
            # class short of Exception; any of them means "not uploaded", which is what is handled.
            except Exception as exc:
                if attempt == self._attempts:
                    log.error(
                        "recording upload of %s to %s failed after %d attempts, keeping the local copy: %s",
                        path,
                        self.uri(recording_id),
                        attempt,
                        exc,
                    )
                    return False
                log.warning(
                    "recording upload of %s failed (attempt %d of %d), retrying in %.1fs: %s",
                    path,
                    attempt,
                    self._attempts,
                    delay,
                    exc,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._max_delay)
        return False


def make_s3_client(region: str | None) -> Any:
    """An S3 client for `region` from the default credential chain (also used by the sessions CLI)."""
    import boto3  # imported here: only connectors that upload recordings pay for it

    return boto3.session.Session(region_name=region).client("s3")


class RecordingStore:
    """The recordings of one connector: creates session files, uploads finished ones."""

    def __init__(self, config: RecordingConfig, *, uploader: S3Uploader | None = None):
        if config.dir is None:
            raise RecordingError("recordings are disabled: set recordings.dir to record sessions")
        self.directory = Path(config.dir)
        self.uploader = uploader if uploader is not None else (S3Uploader(config.s3) if config.s3 else None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight: set[str] = set()
        self._swept = False
        self._sweeping = False
        self._failed_since_sweep = False

    def create(self, session_id: str) -> LocalRecordingFile:
        """A new file for the session. Raises RecordingError when it cannot be created."""
        base = recording_id_for(session_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for candidate in (base, f"{base}-{secrets.token_hex(4)}", f"{base}-{secrets.token_hex(8)}"):
                with contextlib.suppress(FileExistsError):
                    recording = LocalRecordingFile(self.directory, candidate)
                    break
            else:
                raise RecordingError(f"cannot create a recording for session {session_id!r}: the names are taken")
        except OSError as exc:
            RECORDING_ERRORS.labels(stage="write").inc()
            raise RecordingError(f"cannot create a recording in {self.directory}: {exc}") from exc
        if self.uploader is not None and not self._swept:
            self._swept = True
            self.track(self.upload_leftovers())
        return recording

    def location(self, recording_id: str) -> str:
        """Where the recording will be for good: its S3 URI, or its local path."""
        if self.uploader is not None:
            return self.uploader.uri(recording_id)
        return str(self.directory / f"{recording_id}{RECORDING_SUFFIX}")

    def submit(self, path: Path, recording_id: str) -> None:
        """Hand a finished recording over for upload (in the background; see `drain`)."""
        if self.uploader is not None:
            self.track(self._upload(path, recording_id))

    async def _upload(self, path: Path, recording_id: str) -> bool:
        assert self.uploader is not None
        if recording_id in self._in_flight:
            return False
        self._in_flight.add(recording_id)
        try:
            if not await self.uploader.upload(path, recording_id):
                RECORDING_ERRORS.labels(stage="upload").inc()
                self._failed_since_sweep = True
                return False
            await asyncio.to_thread(_remove, path)
        finally:
            self._in_flight.discard(recording_id)
        if self._failed_since_sweep and not self._sweeping:
            # S3 is back: take the recordings that earlier failures left behind.
            self._failed_since_sweep = False
            self.track(self.upload_leftovers())
        return True

    async def upload_leftovers(self) -> int:
        """Upload every finished recording still in the directory; returns how many succeeded."""
        if self.uploader is None or self._sweeping:
            return 0
        self._sweeping = True
        try:
            paths = await asyncio.to_thread(lambda: sorted(self.directory.glob(f"*{RECORDING_SUFFIX}")))
            uploaded = 0
            for path in paths:
                recording_id = path.name[: -len(RECORDING_SUFFIX)]
                if recording_id not in self._in_flight and await self._upload(path, recording_id):
                    uploaded += 1
            return uploaded
        finally:
            self._sweeping = False

    def track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` as a task that `drain` waits for (session endings, uploads)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every session ending and upload in progress (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
