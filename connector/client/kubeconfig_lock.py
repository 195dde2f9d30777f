"""The kubeconfig lock that kubectl honours: `<file>.lock`, created exclusively and removed when done.

client-go (`clientcmd.lockFile`) creates `<kubeconfig>.lock` with O_CREATE|O_EXCL before it writes the
file and deletes it afterwards; while the lock file exists, `kubectl config ...` fails with
"file exists". Using the same protocol makes our writes and kubectl's exclude each other, and leaves
nothing behind. A lock we cannot get within the wait is reported with the exact file: if it is old,
it is most likely left by a killed process, but only the user can know that, so it is never deleted
for them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

WAIT_SECONDS = 10.0
RETRY_SECONDS = 0.05
STALE_SECONDS = 60.0


class KubeconfigLocked(OSError):
    """The kubeconfig's lock file stayed in place for the whole wait."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def kubeconfig_lock(path: Path, *, wait: float = WAIT_SECONDS, stale_after: float = STALE_SECONDS) -> Iterator[None]:
    """Hold `<path>.lock` for the duration of the block, waiting up to `wait` seconds for another writer."""
    lock = lock_path(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                raise KubeconfigLocked(_held_message(lock, stale_after)) from None
            time.sleep(RETRY_SECONDS)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _held_message(lock: Path, stale_after: float) -> str:
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:  # released just now: the caller may simply retry
        return f"{lock} was held by another writer; try again"
    if age > stale_after:
        return (
            f"{lock} has existed for {age:.0f} s, probably left by a process that was killed while writing; "
            f"if no kubectl or other tool is writing the kubeconfig, remove it: rm {lock}"
        )
    return f"{lock} is held by another writer (kubectl?) for {age:.0f} s; try again when it is done"
