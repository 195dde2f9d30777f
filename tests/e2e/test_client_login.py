"""A user's first day against the sandbox (issue 9): `client login` (the browser step completed over
HTTP, as a browser would), `client kubeconfig set`, then plain kubectl 1.29 and 1.33 on the context it
wrote, with no extra environment variables (only a HOME of the user's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox.logins import complete_browser_login
from sandbox.world import CLUSTERS
from tests.support.sandbox_process import REPO_ROOT, Kubectl, RunningCommand
from tests.support.stream_app import kubectl_binary

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
CONTEXT = f"connector-{PROD}"


def _user_env(home: Path) -> dict[str, str]:
    """The environment of a user whose HOME is `home` (no XDG overrides, no kubectl settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "KUBE"))}
    return {**env, "HOME": str(home)}


def _client(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", "client", *args], cwd=REPO_ROOT, env=_user_env(home),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def user_home(sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's HOME after `client login` and `client kubeconfig set`."""
    home = tmp_path_factory.mktemp("alice-laptop")
    connector = ["--connector", sandbox["connector"]["url"], "--ca-file", sandbox["connector"]["ca_file"]]
    login = subprocess.Popen(
        [sys.executable, "-m", "connector", "client", "login", *connector, "--no-browser"],
        cwd=REPO_ROOT, env=_user_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = RunningCommand(login)
    try:
        line = ""
        while "/authorize?" not in line:
            line = output.line(timeout=30)
        complete_browser_login(line.strip(), "alice")
        assert login.wait(30) == 0, f"client login failed: {line}"
    finally:
        output.stop()
    done = _client("kubeconfig", "set", *connector, home=home)
    assert done.returncode == 0, done.stderr
    return home


@pytest.mark.parametrize("minor", [29, 33])
def test_kubectl_works_on_the_context_kubeconfig_set_wrote(user_home: Path, minor: int) -> None:
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    # ~/.kube/config, as kubeconfig set wrote it; kubectl run from the checkout, where `python -m
    # connector` (the exec plugin) is importable.
    k = Kubectl(binary, user_home / ".kube" / "config", user_home, cwd=REPO_ROOT, env={})
    done = k.run("--context", CONTEXT, "get", "pods", "-n", "default", "-o", "name")
    assert (done.returncode, sorted(done.stdout.split())) == (
        0, ["pod/web-7d4b9c-p9z7m", "pod/web-7d4b9c-x2k4q"]
    ), done.stderr
    done = k.run("--context", CONTEXT, "exec", "-n", "dev", "api-0", "--", "echo", f"hi from 1.{minor}")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"hi from 1.{minor}\n", "")
