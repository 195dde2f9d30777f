"""`python -m connector ... | head` ends quietly: found as `error: [Errno 32] Broken pipe` after
`client kubeconfig get | head`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_closed_stdout_ends_the_command_quietly():
    # `--help` of the client prints more than the pipe's reader takes; the reader closes at once.
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['x']; from connector.cli import main;"
         "from connector.client import cli; cli.cmd_sockets=lambda a: [print('row ' * 50) for _ in range(20000)] and 0;"
         "sys.exit(main(['client','sockets','--connector','https://c']))"],
        cwd=REPO, stdout=reader.stdin, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
    )
    reader.stdin.close()
    reader.wait()
    assert done.stderr == ""
    assert done.returncode == 0
