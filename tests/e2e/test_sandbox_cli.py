"""`python -m sandbox` refuses, with a message saying what to do, what it cannot or must not do: a port
already in use, wiping a directory it did not create, real clusters without their binaries; and
without them it falls back to emulated clusters on its own, saying so in one line. (Coming up and
shutting down cleanly on SIGTERM is what the session's sandbox fixture checks.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import REPO_ROOT, SandboxProcess

pytestmark = pytest.mark.e2e


def _sandbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        check=False, env=env,
    )  # fmt: skip


def _without_control_plane(tmp_path: Path) -> dict[str, str]:
    """An environment with no `go` on PATH, an empty binary cache and no KUBEBUILDER_ASSETS."""
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env.update(PATH="/usr/bin:/bin", XDG_CACHE_HOME=str(tmp_path / "empty-cache"))
    if shutil.which("go", path=env["PATH"]):
        pytest.skip("go is installed in /usr/bin here: no environment without it to test")
    return env


def test_real_clusters_without_their_binaries_are_refused_in_one_line(tmp_path: Path) -> None:
    done = _sandbox("--dir", str(tmp_path / "state"), "--port", "0", "--cluster", "real",
                    env=_without_control_plane(tmp_path))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "sandbox: --cluster real: no kube-apiserver 1.29: `go` is not on PATH, none is cached, and "
        "KUBEBUILDER_ASSETS holds none of that minor"), done.stderr


def test_without_the_binaries_the_sandbox_runs_emulated_clusters_and_says_so(tmp_path: Path) -> None:
    process = SandboxProcess(tmp_path / "state", env=_without_control_plane(tmp_path))
    info = process.start()
    try:
        assert {c["kind"] for c in info["clusters"].values()} == {"emulated"}
        notes = [line for line in process.output.read_text().splitlines() if line.startswith("note: emulated")]
        assert notes == ["note: emulated clusters (no real kube-apiserver: no kube-apiserver 1.29: `go` is not on "
                         "PATH, none is cached, and KUBEBUILDER_ASSETS holds none of that minor)"], notes
    finally:
        assert process.stop() == 0


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


def test_a_second_sandbox_on_a_running_sandboxs_dir_is_refused_and_wipes_nothing(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    state = sandbox_process.state_dir
    before = sorted(p.name for p in state.iterdir())
    done = _sandbox("--dir", str(state), "--port", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"sandbox: --dir {state} is in use by the sandbox running as PID {sandbox_process.process.pid}: "
        "stop it first, or give this one another --dir"
    ), done.stderr
    assert sorted(p.name for p in state.iterdir()) == before
    assert (state / "sandbox.json").exists()
