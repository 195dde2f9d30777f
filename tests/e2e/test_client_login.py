"""A user's first day against the sandbox (issue 9): `client login` (the browser step completed over
HTTP, as a browser would), `client kubeconfig set`, then plain kubectl 1.29 and 1.33 on the context it
wrote, with no extra environment variables (only a HOME of the user's own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def browser_login(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run `client login --no-browser`, do alice's browser step, and return the line it ends with."""
    login = subprocess.Popen(
        [*argv, "--no-browser"], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = RunningCommand(login)
    try:
        line = ""
        while "/authorize?" not in line:
            line = output.line(timeout=30)
        complete_browser_login(line.strip(), "alice")
        assert login.wait(30) == 0, f"client login failed: {line}"
        while not line.startswith("Logged in"):
            line = output.line(timeout=10)
    finally:
        output.stop()
    return line


@pytest.fixture(scope="module")
def user_home(sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's HOME after `client login` and `client kubeconfig set`."""
    home = tmp_path_factory.mktemp("alice-laptop")
    connector = ["--connector", sandbox["connector"]["url"], "--ca-file", sandbox["connector"]["ca_file"]]
    browser_login([sys.executable, "-m", "connector", "client", "login", *connector], REPO_ROOT, _user_env(home))
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


# The packaging test builds and installs the package once; the kind of cluster does not change it.
PACKAGING_KIND = "real-1.33"


@pytest.fixture(scope="session")
def laptop_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with only the base install (`pip install eks-access-connector`, no extras),
    built from a copy of the tracked files so that the build leaves nothing in the checkout.
    Session-scoped: at module scope it was rebuilt (about 10 s) for each kind of cluster this module
    runs on, though the kind does not change it."""
    root = tmp_path_factory.mktemp("laptop")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    source = root / "src"
    for name in tracked.decode().split("\0"):
        if name and (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source),
         "-c", str(source / "constraints.txt")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def test_the_base_install_alone_logs_in_and_kubectl_works_through_its_plugin(
    sandbox: dict[str, Any], cluster_kind: str, laptop_venv: Path, tmp_path: Path
) -> None:
    """As found: `pip install .` declared no dependencies (`client token` died on `import requests`), and
    the kubeconfig ran the repository's own virtualenv. Now a fresh venv with only the base install has
    the `eks-access-connector` command, and the kubeconfig it writes runs that command from PATH."""
    if cluster_kind != PACKAGING_KIND:
        pytest.skip(f"the packaging test runs once, on {PACKAGING_KIND}")
    binary = kubectl_binary(33)
    if binary is None:
        pytest.skip("kubectl 1.33 is not installed beside the kubectl dispatcher")
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = laptop_venv / "bin"
    # Nothing of the checkout: its virtualenv is not on PATH, and no PYTHONPATH points into it.
    env = {**_user_env(home), "PATH": f"{bin_dir}:{Path(binary).parent}:/usr/bin:/bin", "PYTHONPATH": ""}
    lean = subprocess.run([str(bin_dir / "python"), "-c", "import aiohttp"], capture_output=True, env=env, check=False)
    assert lean.returncode != 0, "the base install must not pull in the server's dependencies"
    bare = ["--connector", sandbox["connector"]["url"]]
    connector = [*bare, "--ca-file", sandbox["connector"]["ca_file"]]
    untrusted = subprocess.run(
        ["eks-access-connector", "client", "login", *bare, "--no-browser"], cwd=home, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert untrusted.returncode == 1 and "does not trust: pass the connector's CA with --ca-file FILE" in (
        untrusted.stderr
    ), untrusted.stderr
    said = browser_login(["eks-access-connector", "client", "login", *connector], home, env)
    assert said.startswith(f"Logged in to {sandbox['connector']['url']} as alice@example.com (groups: "), said
    done = subprocess.run(
        ["eksac", "client", "kubeconfig", "set", *connector], cwd=home, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((home / ".kube" / "config").read_text())
    plugin = next(u for u in config["users"] if u["name"].startswith("connector-"))["user"]["exec"]
    assert plugin["command"] == "eks-access-connector" and plugin["args"][:2] == ["client", "token"]
    k = Kubectl(binary, home / ".kube" / "config", home, cwd=home, env={"PATH": env["PATH"], "PYTHONPATH": ""})
    done = k.run("--context", CONTEXT, "get", "pods", "-n", "default", "-o", "name")
    assert (done.returncode, sorted(done.stdout.split())) == (
        0, ["pod/web-7d4b9c-p9z7m", "pod/web-7d4b9c-x2k4q"]
    ), done.stderr

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["eks-access-connector", "client", *args, *bare], cwd=home, env=env,  # the CA kept by login
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    who = client("whoami", "--output", "json")
    assert who.returncode == 0, who.stderr
    identity = json.loads(who.stdout)
    assert identity["user"] == "alice@example.com" and "platform-admins" in identity["groups"]
    out = client("logout", "--kubeconfig-entries")
    assert out.returncode == 0 and f"Logged out of {sandbox['connector']['url']}" in out.stderr, out.stderr
    assert "Removed 2 context(s)" in out.stderr, out.stderr
    config = yaml.safe_load((home / ".kube" / "config").read_text())
    assert not [c for c in config.get("contexts") or [] if c["name"].startswith("connector-")]
    after = client("whoami")
    assert after.returncode == 1 and "eks-access-connector client login --connector" in after.stderr, after.stderr
