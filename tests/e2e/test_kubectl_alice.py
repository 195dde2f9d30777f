"""alice (platform-admins: everything) through the sandbox's connector with the real kubectl 1.29, 1.33
and the dispatcher: list, apply, exec over websocket and SPDY, port-forward, logs -f. Each action
also leaves its audit event (user, socket, verb, decision)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.world import CLUSTERS
from tests.support.sandbox_process import AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD, STAGING = (c.socket for c in CLUSTERS if c.exposed)
ALICE, ALICE_EMAIL = "alice", "alice@example.com"
WEB_POD = "web-7d4b9c-x2k4q"
SEEDED_PODS = {("default", "web-7d4b9c-x2k4q"), ("default", "web-7d4b9c-p9z7m"), ("dev", "api-0")}
WEBSOCKETS_OFF = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


def _pods(table: str) -> set[tuple[str, str]]:
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    assert all(row[2:4] == ["1/1", "Running"] for row in rows), table
    return {(row[0], row[1]) for row in rows}


@pytest.mark.parametrize(
    ("version", "socket_name"),
    [("1.29", PROD), ("1.33", PROD), ("dispatcher", PROD), ("dispatcher", STAGING)],
)
def test_alice_lists_pods_in_all_namespaces(
    kubectl: Callable[..., Kubectl], audit: AuditLog, version: str, socket_name: str
) -> None:
    since = audit.mark()
    done = kubectl(version).run("get", "pods", "-A", context=f"{ALICE}@{socket_name}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:5] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
    assert _pods(done.stdout) == SEEDED_PODS
    event = audit.wait(since, user=ALICE_EMAIL, socket=socket_name, verb="list", resource="pods", namespace="")
    assert (event["decision"], event["code"], event["policy"]) == ("allow", 200, "platform-admins")


@pytest.mark.parametrize("version", ["1.29", "1.33", "dispatcher"])
def test_alice_applies_a_configmap(
    kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path, version: str
) -> None:
    name = f"e2e-applied-{version.replace('.', '-')}"
    manifest = tmp_path / "configmap.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  greeting: hello\n")
    k, context = kubectl(version), f"{ALICE}@{PROD}"
    since = audit.mark()
    done = k.run("apply", "-n", "default", "-f", str(manifest), context=context)
    assert (done.returncode, done.stdout.strip()) == (0, f"configmap/{name} created"), done.stderr
    created = audit.wait(since, user=ALICE_EMAIL, socket=PROD, verb="create", resource="configmaps")
    assert (created["decision"], created["code"], created["request"]["namespace"]) == ("allow", 201, "default")
    done = k.run("get", "configmap", name, "-n", "default", "-o", "jsonpath={.data.greeting}", context=context)
    assert (done.returncode, done.stdout) == (0, "hello"), done.stderr
    done = k.run("delete", "configmap", name, "-n", "default", context=context)
    assert (done.returncode, done.stdout.strip()) == (0, f'configmap "{name}" deleted'), done.stderr
    deleted = audit.wait(since, user=ALICE_EMAIL, socket=PROD, verb="delete", resource="configmaps", name=name)
    assert deleted["decision"] == "allow"


# kubectl >= 1.30 execs over websocket (a GET upgraded to v5.channel.k8s.io) where the apiserver
# speaks v5 (1.30+); 1.29, or 1.33 with websockets turned off, over SPDY/3.1 (a POST,
# v4.channel.k8s.io inside), and so does 1.33 against kube-apiserver 1.29 after its websocket
# attempt is refused. The dispatcher picks the build matching prod's version.
EXEC_VARIANTS = [
    pytest.param("1.29", {}, id="1.29"),
    pytest.param("1.33", {}, id="1.33"),
    pytest.param("1.33", WEBSOCKETS_OFF, id="1.33-websockets-off"),
    pytest.param("dispatcher", {}, id="dispatcher"),
]


@pytest.mark.parametrize(("version", "env"), EXEC_VARIANTS)
def test_alice_execs(
    kubectl: Callable[..., Kubectl], audit: AuditLog, version: str, env: dict[str, str],
    execs_over_websocket: Callable[[str, dict[str, str]], bool],
) -> None:
    method, protocol = ("GET", "v5.channel.k8s.io") if execs_over_websocket(version, env) else (
        "POST", "v4.channel.k8s.io")
    k, context = kubectl(version), f"{ALICE}@{PROD}"
    marker = f"out-{version.replace('.', '-')}-{method.lower()}"
    since = audit.mark()
    done = k.run("exec", WEB_POD, "--", "sh", "-c", f"echo {marker}; echo err >&2; exit 3", context=context, env=env)
    assert done.returncode == 3, done.stderr
    assert done.stdout == f"{marker}\n"
    assert done.stderr.startswith("err\n") and "command terminated with exit code 3" in done.stderr
    event = audit.wait(
        since, user=ALICE_EMAIL, socket=PROD, verb="create", subresource="exec", stage="ResponseComplete",
        code=101, query=lambda query: marker in (query or ""),
    )
    assert (event["decision"], event["method"], event["session_protocol"]) == ("allow", method, protocol)

    data = b"".join(b"stdin line %04d\n" % n for n in range(2000))
    done = k.run("exec", "-i", WEB_POD, "--", "cat", context=context, env=env, stdin=data)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.encode() == data


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_alice_port_forwards(kubectl: Callable[..., Kubectl], audit: AuditLog, version: str) -> None:
    since = audit.mark()
    with kubectl(version).running("port-forward", f"pod/{WEB_POD}", ":80", context=f"{ALICE}@{PROD}") as forward:
        announced = forward.line()
        found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80$", announced.strip())
        assert found, announced
        lines = [b"e2e %s line %03d" % (version.encode(), n) for n in range(200)]
        with socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=20) as conn:
            conn.sendall(b"".join(line + b"\n" for line in lines))
            received = b""
            while received.count(b"\n") < len(lines):
                chunk = conn.recv(65536)
                assert chunk, f"the forwarded connection closed after {len(received.splitlines())} lines"
                received += chunk
    # The pod's port 80 answers each line with `<pod>:<port> <line>`.
    assert received.splitlines() == [f"{WEB_POD}:80 ".encode() + line for line in lines]
    event = audit.wait(since, user=ALICE_EMAIL, socket=PROD, verb="create", subresource="portforward")
    assert event["decision"] == "allow"


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_alice_follows_logs(kubectl: Callable[..., Kubectl], audit: AuditLog, version: str) -> None:
    since = audit.mark()
    with kubectl(version).running("logs", "-f", WEB_POD, context=f"{ALICE}@{PROD}") as logs:
        first = logs.line()
    assert re.fullmatch(rf"{WEB_POD} web line \d+\n", first), first
    event = audit.wait(since, user=ALICE_EMAIL, socket=PROD, verb="get", subresource="log")
    assert (event["decision"], event["request"]["name"]) == ("allow", WEB_POD)
