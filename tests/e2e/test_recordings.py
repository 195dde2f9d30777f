"""An exec session through the sandbox's connector is recorded, and the recording replays with the real
asciinema (`asciinema cat`) and with the tour's `sessions play` to what the command printed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.world import CLUSTERS
from tests.support.sandbox_process import REPO_ROOT, AuditLog, Kubectl, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
WEB_POD = "web-7d4b9c-x2k4q"
ASCIINEMA = Path(sys.executable).parent / "asciinema"


@pytest.mark.parametrize("version", ["1.33", "1.29"])
def test_an_exec_session_replays_to_the_commands_output(
    sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path, version: str,
    execs_over_websocket: Callable[[str, dict[str, str]], bool],
) -> None:
    protocol = "v5.channel.k8s.io" if execs_over_websocket(version, {}) else "v4.channel.k8s.io"
    if not ASCIINEMA.exists():
        pytest.skip(f"asciinema is not installed in this virtualenv ({ASCIINEMA})")
    command = f"echo recorded-{version}; echo err >&2; exit 3"
    since = audit.mark()
    done = kubectl(version).run("exec", WEB_POD, "--", "sh", "-c", command, context=f"alice@{PROD}")
    assert done.returncode == 3, done.stderr
    printed = done.stdout + done.stderr.replace("command terminated with exit code 3\n", "")
    assert printed == f"recorded-{version}\nerr\n"

    event = audit.wait(since, user="alice@example.com", socket=PROD, subresource="exec", stage="ResponseComplete",
                       code=101, recording=lambda path: bool(path))
    recording = Path(event["recording"])
    assert recording.parent == Path(sandbox["recordings"])
    wait_for(f"the recording {recording}", lambda: recording.exists() or None)
    header = json.loads(recording.read_text().splitlines()[0])
    assert (header["version"], header["connector"]["user"], header["connector"]["socket"]) == (
        2, "alice@example.com", PROD
    )
    assert (header["connector"]["command"], header["connector"]["protocol"]) == (["sh", "-c", command], protocol)

    replay = subprocess.run(
        [str(ASCIINEMA), "cat", str(recording)], capture_output=True, timeout=30, check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    # stdout and stderr are separate streams: the recording has them in the order they arrived,
    # which a real kubelet does not fix (the emulator happened to send stdout first).
    assert sorted(replay.stdout.decode().splitlines()) == sorted(printed.splitlines())

    # The tour's way: by session id, through the connector's config.
    play = subprocess.run(
        [sys.executable, "-m", "connector", "sessions", "play", event["request_id"], "--speed", "100",
         "--config", sandbox["connector"]["config"]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert play.returncode == 0, play.stderr
    assert sorted(play.stdout.splitlines()) == sorted(printed.splitlines())
