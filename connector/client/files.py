"""Replacing a user's small file (kubeconfig, token cache) atomically: a crash never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, text: str, *, mode: int) -> None:
    """Write `text` to a new file beside `path` with permissions `mode`, fsync it, and rename it over `path`.

    The permissions are set before any byte is written, so a secret is never readable by others.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
