"""The tour `python -m sandbox` prints works as printed: its kubectl commands (with the `kubectl` on
PATH, in a shell-less split of each line) and its replay of the recorded exec session."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.sandbox_process import REPO_ROOT, AuditLog, Kubectl, SandboxProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]


def _tour_commands(sandbox_process: SandboxProcess) -> dict[str, list[list[str]]]:
    """The commands of the tour, by program: `export`, `kubectl` and the Python ones (`python`)."""
    commands: dict[str, list[list[str]]] = {"export": [], "kubectl": [], "python": []}
    for line in sandbox_process.output.read_text().splitlines():
        if not line.startswith("  "):
            continue
        argv = shlex.split(line, comments=True)
        if argv and argv[0] in ("export", "kubectl"):
            commands[argv[0]].append(argv)
        elif argv[1:3] == ["-m", "connector"]:
            commands["python"].append(argv)
    return commands


def test_the_tour_works_as_printed(
    sandbox_process: SandboxProcess, sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog
) -> None:
    commands = _tour_commands(sandbox_process)
    assert commands["export"] == [["export", f"KUBECONFIG={sandbox['kubeconfig']}"]]
    listing, execution, deletion = commands["kubectl"][:3]  # the rest: tests/e2e/test_tour_access.py
    k = kubectl("dispatcher")

    done = k.run(*listing[1:])
    assert done.returncode == 0, done.stderr
    assert re.search(r"^dev\s+api-0\s+1/1\s+Running", done.stdout, re.M), done.stdout

    since = audit.mark()
    done = k.run(*execution[1:])
    assert (done.returncode, done.stdout) == (0, "hello from api-0\n"), done.stderr
    session = audit.wait(since, user="bob@example.com", subresource="exec", stage="ResponseComplete")

    done = k.run(*deletion[1:])
    assert done.returncode == 1
    refusals = done.stderr.splitlines()
    assert len(refusals) == 2 and all(
        line.startswith("Error from server (Forbidden): ") and "policy developers: no rule allows delete pods" in line
        for line in refusals
    ), done.stderr

    # Then the recorded session, listed and played back by id.
    listing_sessions, playing = commands["python"][:2]
    assert playing[playing.index("play") + 1] == "SESSION_ID"
    listed = subprocess.run(listing_sessions, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert session["request_id"] in listed.stdout
    playing[playing.index("SESSION_ID")] = session["request_id"]
    played = subprocess.run(playing, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert (played.returncode, played.stdout) == (0, "hello from api-0\n"), played.stderr
