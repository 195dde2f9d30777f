"""One sandbox for the whole e2e session, and the real kubectl binaries pointed at it.

The sandbox is `python -m sandbox --dir TMP --port 0` in a child process, ready once it has written
TMP/sandbox.json (see tests.support.sandbox_process for why a process and not an in-process object).
Its shutdown on SIGTERM, exit code 0, is checked when the session ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox_process import AuditLog, Kubectl, SandboxProcess
from tests.support.stream_app import kubectl_binary

# The kubectl builds the tests name: real binaries beside the dispatcher, and the dispatcher itself
# (`kubectl` on PATH), which picks a real one by the server's /version.
KUBECTL_VERSIONS = {f"1.{minor}": minor for minor in range(27, 34)}
DISPATCHER = "dispatcher"


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """The running `python -m sandbox`; its printed tour is in `output`."""
    process = SandboxProcess(tmp_path_factory.mktemp("e2e") / "sandbox")
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"python -m sandbox exited with {code} on SIGTERM:\n{process.log()}"


@pytest.fixture(scope="session")
def sandbox(sandbox_process: SandboxProcess) -> dict[str, Any]:
    """What the sandbox wrote to sandbox.json: URLs, ports, paths, sockets, users."""
    return sandbox_process.info


@pytest.fixture(scope="session")
def audit(sandbox: dict[str, Any]) -> AuditLog:
    return AuditLog(Path(sandbox["audit_log"]))


@pytest.fixture(scope="session")
def kubectl(sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Kubectl]:
    """`kubectl("1.29" | "1.33" | "dispatcher", fresh_home=False)`: that kubectl on the sandbox's kubeconfig.

    Each build keeps one HOME for the session (its discovery cache warms up once); `fresh_home`
    gives a new, empty one. kubectl runs in its HOME, not in the checkout, so the kubeconfig's exec
    plugin must work from anywhere. Skips when the build is not installed."""
    homes: dict[str, Path] = {}

    def make(version: str, *, fresh_home: bool = False) -> Kubectl:
        binary = _binary(version)
        if fresh_home or version not in homes:
            home = tmp_path_factory.mktemp(f"home-{version}")
            if not fresh_home:
                homes[version] = home
        else:
            home = homes[version]
        return Kubectl(binary, Path(sandbox["kubeconfig"]), home, cwd=home, env={})

    return make


def _binary(version: str) -> Path:
    if version == DISPATCHER:
        found = shutil.which("kubectl")
        if found is None:
            pytest.skip("kubectl is not on PATH: the e2e tests drive the sandbox with the real kubectl")
        return Path(found)
    binary = kubectl_binary(KUBECTL_VERSIONS[version])
    if binary is None:
        pytest.skip(f"kubectl {version} is not installed beside the kubectl dispatcher (kubectl.{version})")
    return binary
