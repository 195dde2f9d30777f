"""CPU time and resident memory of a proxy under test, its worker processes included.

psutil reads them from the kernel's per-process accounting; a proxy that forks workers (the connector
with `serve --workers`) is summed over its whole process tree, so every peer is charged for all the
processes that serve it.
"""

from __future__ import annotations

import contextlib

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its live descendants."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its live descendants."""
    total = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total
