"""`python -m sandbox` refuses, with a message saying what to do, what it cannot or must not do: a port
already in use, and wiping a directory it did not create. (Coming up and shutting down cleanly on
SIGTERM is what the session's sandbox fixture checks.)"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import REPO_ROOT

pytestmark = pytest.mark.e2e


def _sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_a_port_in_use_is_refused_with_a_clear_message(sandbox: dict[str, Any], tmp_path: Path) -> None:
    port = sandbox["connector"]["port"]  # the session's sandbox holds it
    done = _sandbox("--dir", str(tmp_path / "state"), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"sandbox: port {port} on 127.0.0.1 is in use (another sandbox?): stop it, or pick another with --port"
    ), done.stderr
    assert not (tmp_path / "state").exists()


def test_a_directory_it_did_not_create_is_not_wiped(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with socket.socket() as probe:  # a port that is free now, so only the directory can be the problem
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _sandbox("--dir", str(tmp_path), "--port", str(port))
    assert done.returncode == 1
    assert f"--dir {tmp_path} is not empty and holds no earlier sandbox state" in done.stderr, done.stderr
    assert precious.read_text() == "keep me"
