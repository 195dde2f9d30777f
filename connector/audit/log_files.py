"""The audit log's files on disk: the current `audit.file` and the copies logrotate keeps beside it
(`audit.log.1`, `audit.log.2.gz`, ...), opened plain or gzip by their first bytes, read line by line
from a byte offset.

`policy replay` opens its files here; the console's audit search resumes a page from a file and an
offset, so that no search ever holds more than a line of the log. An offset in a gzip file counts
uncompressed bytes: resuming there decompresses the file up to it again (a rotated file's size, not
the whole log's).
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# The suffixes logrotate gives the copies of a log (without `dateext`): `.1`, `.2.gz`, ...
_ROTATED_SUFFIX = re.compile(r"\.(\d+)(\.gz)?")


def is_gzip(path: str | Path) -> bool:
    """Whether the file starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def open_log_file(path: str | Path) -> BinaryIO:
    """The file's bytes, decompressed when it is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def log_files(current: Path) -> list[Path]:
    """The log's files, oldest first: its rotated copies by falling number, then the current file
    (when it exists). Events are appended in time order, so this is the order of the whole log."""
    rotated: list[tuple[int, Path]] = []
    if current.parent.is_dir():
        for candidate in current.parent.iterdir():
            if not candidate.name.startswith(current.name):
                continue
            match = _ROTATED_SUFFIX.fullmatch(candidate.name[len(current.name) :])
            if match and candidate.is_file():
                rotated.append((int(match.group(1)), candidate))
    files = [path for _, path in sorted(rotated, key=lambda pair: -pair[0])]
    return files + ([current] if current.is_file() else [])


def lines_from(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """(line, the offset just after it) for each line of the file from `offset` (a line start) on."""
    with open_log_file(path) as stream:
        if offset:
            stream.seek(offset)
        position = offset
        for line in stream:
            position += len(line)
            yield line, position


def offset_before(path: Path, at_or_after: Callable[[bytes], bool | None]) -> int:
    """In a plain (not gzip) file whose lines are in order, a line start shortly before the first line
    for which `at_or_after(line)` is true, found by bisecting the file's bytes: a search for the last
    hour of a big log starts near its end, not at its beginning. `at_or_after` returns None for a line
    it cannot place (not an event); the probe then looks at the next line. The lines between the offset
    and the first true one (at most `_BISECT_STOP` bytes) are for the caller to skip or filter."""
    with open(path, "rb") as stream:
        low, high = 0, stream.seek(0, io.SEEK_END)
        while high - low > _BISECT_STOP:
            middle = (low + high) // 2
            stream.seek(middle)
            stream.readline()  # the rest of the line `middle` falls in
            verdict = None
            for _ in range(_PROBE_LINES):
                line = stream.readline()
                if not line:
                    break
                verdict = at_or_after(line)
                if verdict is not None:
                    break
            if verdict is False:
                low = middle
            else:
                high = middle
        if low == 0:
            return 0
        stream.seek(low)
        stream.readline()
        return stream.tell()


_BISECT_STOP = 64 * 1024
_PROBE_LINES = 100
