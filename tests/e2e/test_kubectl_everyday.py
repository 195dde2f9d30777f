"""What people do with kubectl every day, through the connector, with every kubectl 1.27-1.33 (the
REST verbs; all of them on real 1.33, the two exec transports' builds elsewhere) or the builds
1.29 and 1.33 (the streams): get, watch, apply,
server-side apply, diff, patch of each type, scale, delete, explain, api-resources, auth can-i and
whoami; exec -it with a terminal resize, attach, cp both ways. Run, like every e2e test, against
real kube-apiservers 1.33 and 1.29 and the emulated one (tests/e2e/conftest.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.world import CLUSTERS
from tests.e2e.conftest import KUBECTL_VERSIONS
from tests.support.pty_terminal import PtyTerminal
from tests.support.sandbox_process import AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
ALICE, ALICE_EMAIL = f"alice@{PROD}", "alice@example.com"
WEB_POD = "web-7d4b9c-x2k4q"
EVERY_KUBECTL = sorted(KUBECTL_VERSIONS, key=lambda v: KUBECTL_VERSIONS[v])
WAIT_SECONDS = 30.0


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr}"
    return done.stdout


def _configmap(path: Path, name: str, data: dict[str, str]) -> Path:
    lines = [f"  {key}: '{value}'" for key, value in data.items()]
    path.write_text("\n".join(["apiVersion: v1", "kind: ConfigMap", "metadata:", f"  name: {name}",
                               "  namespace: default", "data:", *lines]) + "\n")
    return path


@pytest.mark.every_kubectl
@pytest.mark.parametrize("version", EVERY_KUBECTL)
def test_the_rest_verbs_work_with_every_kubectl(
    kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path, version: str
) -> None:
    k = kubectl(version)
    name = f"everyday-{version.replace('.', '-')}"

    def run(*args: str) -> str:
        return _ok(k.run(*args, context=ALICE))

    # get and list, by name and by label
    assert run("get", "deployment", "web", "-n", "default", "-o", "jsonpath={.spec.selector.matchLabels.app}") == "web"
    assert set(run("get", "pods", "-n", "default", "-l", "app=web", "-o", "name").split()) == {
        "pod/web-7d4b9c-x2k4q", "pod/web-7d4b9c-p9z7m"}

    # apply, apply of a change, then diff against the server
    assert run("apply", "-f", str(_configmap(tmp_path / "a.yaml", name, {"v": "1"}))).strip() == (
        f"configmap/{name} created")
    assert run("apply", "-f", str(_configmap(tmp_path / "b.yaml", name, {"v": "2"}))).strip() == (
        f"configmap/{name} configured")
    diff = k.run("diff", "-f", str(_configmap(tmp_path / "c.yaml", name, {"v": "3"})), context=ALICE)
    assert diff.returncode == 1, diff.stderr  # 1: there are differences (0: none, >1: an error)
    assert re.search(r"^-\s+v: \"?'?2", diff.stdout, re.M) and re.search(r"^\+\s+v: \"?'?3", diff.stdout, re.M), (
        diff.stdout)

    # patch: strategic merge (the default), JSON merge, JSON patch
    assert run("patch", "configmap", name, "-n", "default", "-p", '{"data":{"s":"strategic"}}').strip() == (
        f"configmap/{name} patched")
    run("patch", "configmap", name, "-n", "default", "--type", "merge", "-p", '{"data":{"m":"merge"}}')
    run("patch", "configmap", name, "-n", "default", "--type", "json",
        "-p", '[{"op":"add","path":"/data/j","value":"json"}]')
    data = run("get", "configmap", name, "-n", "default", "-o", "jsonpath={.data.s} {.data.m} {.data.j} {.data.v}")
    assert data == "strategic merge json 2"

    # scale, through the scale subresource
    since = audit.mark()
    assert run("scale", "deployment", "web", "-n", "default", "--replicas", "3").strip() == "deployment.apps/web scaled"
    assert run("get", "deployment", "web", "-n", "default", "-o", "jsonpath={.spec.replicas}") == "3"
    scaled = audit.wait(since, user=ALICE_EMAIL, socket=PROD, subresource="scale", verb=lambda v: v in (
        "update", "patch"))
    assert scaled["decision"] == "allow"
    run("scale", "deployment", "web", "-n", "default", "--replicas", "2")

    # delete
    assert run("delete", "configmap", name, "-n", "default").strip() == f'configmap "{name}" deleted'
    gone = k.run("get", "configmap", name, "-n", "default", context=ALICE)
    assert gone.returncode == 1 and "NotFound" in gone.stderr, gone.stderr

    # discovery and OpenAPI
    assert "deployments.apps" in run("api-resources", "--api-group=apps", "-o", "name").split()
    explained = run("explain", "pods.spec.containers.name")
    assert "DESCRIPTION" in explained and "name" in explained, explained

    # questions the connector answers itself
    assert run("auth", "can-i", "delete", "pods", "-n", "default").strip() == "yes"
    if KUBECTL_VERSIONS[version] >= 28:  # `auth whoami` left alpha in 1.28
        assert "alice@example.com" in run("auth", "whoami")


@pytest.mark.every_kubectl
@pytest.mark.parametrize("version", EVERY_KUBECTL)
def test_server_side_apply(kubectl: Callable[..., Kubectl], cluster_kind: str, tmp_path: Path, version: str) -> None:
    if cluster_kind == "emulated":
        pytest.skip("the emulated API server does not implement server-side apply (a documented divergence)")
    k = kubectl(version)
    name = f"ssa-{version.replace('.', '-')}"
    for value in ("1", "2"):
        applied = _ok(k.run("apply", "--server-side", "-f", str(_configmap(tmp_path / "cm.yaml", name, {"v": value})),
                            context=ALICE))
        assert applied.strip() == f"configmap/{name} serverside-applied"
    shown = _ok(k.run("get", "configmap", name, "-n", "default", "--show-managed-fields", "-o",
                      "jsonpath={.data.v} {.metadata.managedFields[*].manager} {.metadata.managedFields[*].operation}",
                      context=ALICE))
    assert shown == "2 kubectl Apply", shown
    conflicting = k.run("patch", "configmap", name, "-n", "default", "--type", "merge", "-p", '{"data":{"v":"x"}}',
                        "--field-manager", "someone-else", context=ALICE)
    _ok(conflicting)
    refused = k.run("apply", "--server-side", "-f", str(_configmap(tmp_path / "cm.yaml", name, {"v": "3"})),
                    context=ALICE)
    assert refused.returncode == 1 and "conflict" in refused.stderr.lower(), refused.stderr
    _ok(k.run("apply", "--server-side", "--force-conflicts", "-f", str(tmp_path / "cm.yaml"), context=ALICE))
    _ok(k.run("delete", "configmap", name, "-n", "default", context=ALICE))


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_a_watch_sees_a_change(kubectl: Callable[..., Kubectl], version: str) -> None:
    k = kubectl(version)
    name = f"watched-{version.replace('.', '-')}"
    _ok(k.run("create", "configmap", name, "-n", "default", "--from-literal=n=0", context=ALICE))
    try:
        with k.running("get", "configmap", name, "-n", "default", "-w", "-o", "jsonpath={.data.n}{'\\n'}",
                       context=ALICE) as watch:
            assert watch.line() == "0\n"
            _ok(k.run("patch", "configmap", name, "-n", "default", "-p", '{"data":{"n":"1"}}', context=ALICE))
            assert watch.line() == "1\n"
    finally:
        k.run("delete", "configmap", name, "-n", "default", context=ALICE)


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_cp_copies_both_ways(kubectl: Callable[..., Kubectl], tmp_path: Path, version: str) -> None:
    k = kubectl(version)
    sent = tmp_path / "sent.txt"
    sent.write_bytes(b"".join(b"cp line %05d\n" % n for n in range(5000)))
    in_pod = f"e2e-cp-{version.replace('.', '-')}.txt"
    _ok(k.run("cp", str(sent), f"default/{WEB_POD}:{in_pod}", context=ALICE))
    assert _ok(k.run("exec", "-n", "default", WEB_POD, "--", "wc", "-l", in_pod, context=ALICE)).split()[0] == "5000"
    back = tmp_path / "back.txt"
    _ok(k.run("cp", f"default/{WEB_POD}:{in_pod}", str(back), context=ALICE))
    assert back.read_bytes() == sent.read_bytes()


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_attach_shows_the_containers_output(kubectl: Callable[..., Kubectl], audit: AuditLog, version: str) -> None:
    since = audit.mark()
    with kubectl(version).running("attach", WEB_POD, "-n", "default", context=ALICE) as attached:
        line = attached.line(timeout=WAIT_SECONDS)
        while not re.fullmatch(rf"{WEB_POD} web tick \d+\n", line):
            line = attached.line(timeout=WAIT_SECONDS)  # kubectl may first say how to detach
    event = audit.wait(since, user=ALICE_EMAIL, socket=PROD, subresource="attach", code=101)
    assert event["decision"] == "allow"


@pytest.mark.parametrize("version", ["1.29", "1.33"])
async def test_exec_with_a_terminal_follows_a_resize(
    kubectl: Callable[..., Kubectl], audit: AuditLog, version: str
) -> None:
    k = kubectl(version)
    terminal = PtyTerminal(rows=30, cols=100)
    process: asyncio.subprocess.Process | None = None
    since = audit.mark()
    try:
        process = await terminal.spawn([str(k.binary), "--context", ALICE, "exec", "-it", "-n", "default", WEB_POD,
                                        "--", "sh"], env={**k._env(None), "TERM": "xterm"})
        await terminal.wait_for_output()  # the prompt: kubectl has put the terminal in raw mode
        terminal.type(b"stty size\r")
        await terminal.read_until(b"\r\n30 100\r\n")
        terminal.resize(process, rows=40, cols=132)
        # The resize travels on its own stream and may reach the shell after the next keystrokes.
        terminal.type(b'n=0; while [ "$(stty size)" = "30 100" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); '
                      b"done; stty size; exit 5\r")
        shown = (await terminal.read_to_end()).decode()
        code = await asyncio.wait_for(process.wait(), WAIT_SECONDS)
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        terminal.close()
    assert code == 5, shown
    assert "40 132\r\n" in shown.partition("exit 5")[2], shown  # after the loop saw the new size
    event = audit.wait(since, user=ALICE_EMAIL, socket=PROD, subresource="exec", stage="ResponseComplete", code=101)
    assert event["decision"] == "allow"
