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
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# The suffixes logrotate gives the copies of a log (without `dateext`): `.1`, `.2.gz`, ...
_ROTATED_SUFFIX = re.compile(r"\.(\d+)(\.gz)?")


def open_log_file(path: str | Path) -> BinaryIO:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
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
