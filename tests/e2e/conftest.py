"""The e2e suite runs once per kind of cluster: real kube-apiservers 1.33, then 1.29, then the
emulated API server. Each run has one sandbox, and the real kubectl binaries pointed at it.

The sandbox is `python -m sandbox --dir TMP --port 0 --cluster KIND [--kubernetes MINOR]` in a child
process, ready once it has written TMP/sandbox.json (see tests.support.sandbox_process for why a
process and not an in-process object). Its shutdown on SIGTERM, exit code 0, is checked when its
run ends. The real kinds need kube-apiserver binaries (sandbox.controlplane.binaries): they are
built when missing and `go` is on PATH (a failed build fails the run with the build's last lines),
and the run is skipped, saying why, only when there is no `go` and nothing cached or supplied.

`E2E_FIDELITY_TABLE=FILE` writes a Markdown table of every case's outcome per kind of cluster
(the README's fidelity table).
"""

from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.controlplane import binaries
from tests.support.sandbox_process import AuditLog, Kubectl, SandboxProcess
from tests.support.stream_app import kubectl_binary

# The kubectl builds the tests name: real binaries beside the dispatcher, and the dispatcher itself
# (`kubectl` on PATH), which picks a real one by the server's /version.
KUBECTL_VERSIONS = {f"1.{minor}": minor for minor in range(27, 34)}
DISPATCHER = "dispatcher"


# Each kind of cluster the suite runs against, and the sandbox arguments that give it.
CLUSTER_KINDS = {
    "real-1.33": ("--cluster", "real", "--kubernetes", "1.33"),
    "real-1.29": ("--cluster", "real", "--kubernetes", "1.29"),
    "emulated": ("--cluster", "emulated"),
}


# Where a test marked `every_kubectl` runs with every kubectl build; on the other kinds, only with
# the builds of the two exec transports (1.29: SPDY, 1.33: websocket), to keep the suite's time.
REFERENCE_KIND = "real-1.33"
TRANSPORT_BUILDS = ("1.29", "1.33")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        narrowed = (item.get_closest_marker("every_kubectl") is not None
                    and params.get("cluster_kind") not in (None, REFERENCE_KIND)
                    and params.get("version") not in TRANSPORT_BUILDS)
        (dropped if narrowed else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _real_binaries(minor: str) -> None:
    """Build or find kube-apiserver `minor` and etcd; skip only when they cannot be had at all."""
    try:
        for wanted in dict.fromkeys((minor, binaries.ETCD_MINOR)):
            binaries.ensure(wanted)
    except binaries.ControlPlaneUnavailable as exc:
        if binaries.can_build():
            pytest.fail(f"the real control plane could not be built: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session", params=list(CLUSTER_KINDS))
def cluster_kind(request: pytest.FixtureRequest) -> str:
    """`real-1.33`, `real-1.29` or `emulated`: what the sandbox's clusters are in this run."""
    return str(request.param)


@pytest.fixture(scope="session")
def sandbox_process(cluster_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """The running `python -m sandbox`; its printed tour is in `output`."""
    if cluster_kind.startswith("real-"):
        _real_binaries(cluster_kind.removeprefix("real-"))
    process = SandboxProcess(tmp_path_factory.mktemp(f"e2e-{cluster_kind}") / "sandbox", CLUSTER_KINDS[cluster_kind])
    process.start()
    yield process
    code = process.stop()
    assert code == 0, f"python -m sandbox exited with {code} on SIGTERM:\n{process.log()}"


@pytest.fixture(scope="session")
def sandbox(sandbox_process: SandboxProcess) -> dict[str, Any]:
    """What the sandbox wrote to sandbox.json: URLs, ports, paths, sockets, users."""
    return sandbox_process.info


@pytest.fixture(scope="session")
def server_minor(sandbox: dict[str, Any]) -> int:
    """The minor version prod's API server reports (the kubectl dispatcher picks its kubectl by it)."""
    return int(sandbox["clusters"]["prod"]["version"].lstrip("v").split(".")[1])


@pytest.fixture(scope="session")
def execs_over_websocket(server_minor: int) -> Callable[[str, dict[str, str]], bool]:
    """Whether `kubectl VERSION` (with env) ends up exec'ing over websocket on prod: kubectl >= 1.30
    tries websocket unless told not to, and keeps it when the apiserver speaks v5 to clients (1.30+,
    and the emulator); kube-apiserver 1.29 hands the upgrade to the kubelet, which refuses v5, and
    kubectl falls back to SPDY."""

    def decide(version: str, env: dict[str, str]) -> bool:
        minor = min(max(server_minor, 27), 33) if version == DISPATCHER else KUBECTL_VERSIONS[version]
        return minor >= 30 and server_minor >= 30 and env.get("KUBECTL_REMOTE_COMMAND_WEBSOCKETS") != "false"

    return decide


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


# --- the fidelity table ------------------------------------------------------------------------

_OUTCOMES: dict[str, dict[str, str]] = defaultdict(dict)


def _case(nodeid: str, kind: str) -> str:
    """The test's id without the cluster kind: the same case on every kind of cluster."""
    case = re.sub(rf"(?<=[\[-]){re.escape(kind)}(?=[\]-])", "", nodeid.removeprefix("tests/e2e/"))
    return case.replace("[-", "[").replace("-]", "]").replace("--", "-").replace("[]", "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    callspec = getattr(item, "callspec", None)
    kind = callspec.params.get("cluster_kind") if callspec is not None else None
    if kind is not None and (report.when == "call" or report.outcome != "passed"):
        outcomes = _OUTCOMES[_case(item.nodeid, kind)]
        if outcomes.get(kind) in (None, "pass"):  # a failed teardown after a passed call counts
            outcomes[kind] = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[report.outcome]
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("E2E_FIDELITY_TABLE")
    if not target or not _OUTCOMES:
        return
    kinds = list(CLUSTER_KINDS)
    lines = ["| e2e case | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for case in sorted(_OUTCOMES):
        lines.append(f"| `{case}` | " + " | ".join(_OUTCOMES[case].get(k, "—") for k in kinds) + " |")
    Path(target).write_text("\n".join(lines) + "\n")
