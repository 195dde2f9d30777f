"""The real kubectl (1.29 and 1.33) and the Python `kubernetes` client through the connector, in front of
the sandbox's emulated EKS API server: everything a user does works, and a denial reads well."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes import client as kube_client
from kubernetes import watch as kube_watch
from kubernetes.stream import stream as kube_stream

from sandbox.apiserver import EmulatedApiServer
from tests.support.proxy_harness import Cluster, ProxyHarness
from tests.support.stream_app import kubectl_binary, make_pod

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLICIES = [
    {
        "name": "dev",
        "subjects": {"groups": ["dev"]},
        "sockets": ["prod"],
        "kubernetes": {
            "rules": [
                {"verbs": ["get", "list", "watch"], "resources": ["pods", "pods/log"], "namespaces": ["default"]},
                {"verbs": ["*"], "resources": ["configmaps"], "namespaces": ["default"]},
                {"verbs": ["create"], "resources": ["pods/exec", "pods/portforward"], "namespaces": ["default"]},
            ]
        },
    },
    {"name": "ops-all", "subjects": {"groups": ["ops"]}, "sockets": ["*"], "kubernetes": {}},
]
VERSIONS = [pytest.param(29, id="1.29"), pytest.param(33, id="1.33")]
EXEC_VARIANTS = [
    pytest.param(29, {}, id="1.29-spdy"),
    pytest.param(33, {}, id="1.33-websocket"),
    pytest.param(33, {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, id="1.33-spdy"),
]


@dataclass
class World:
    harness: ProxyHarness
    cluster: EmulatedApiServer
    tmp: Path


@contextlib.asynccontextmanager
async def emulated_prod(tmp: Path, container: dict[str, Any]) -> AsyncIterator[tuple[EmulatedApiServer, Cluster]]:
    """An emulated `prod` cluster holding pod `web` with `container`, and how the connector reaches it."""
    cluster = EmulatedApiServer("prod", scratch_dir=tmp / "cluster", log_interval=0.2)
    await cluster.start()
    try:
        cluster.store.apply(make_pod("web", containers=[container]))
        yield cluster, Cluster(cluster.url, cluster.ca_pem, cluster.bootstrap_token)
    finally:
        await cluster.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kubectl-through-connector")
    container = {"name": "main", "image": "busybox", "ports": [{"containerPort": 8080}]}
    async with emulated_prod(tmp, container) as (cluster, target):
        async with ProxyHarness(tmp, policies=POLICIES, cluster=target) as harness:
            yield World(harness, cluster, tmp)


class Kubectl:
    def __init__(self, world: World, minor: int, env: dict[str, str] | None = None):
        binary = kubectl_binary(minor)
        if binary is None:
            pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
        home = world.tmp / f"home-{minor}"
        home.mkdir(exist_ok=True)
        self.binary = binary
        self.env = {
            **os.environ,
            "HOME": str(home),
            "KUBECONFIG": str(world.harness.kubeconfig(home / "kubeconfig")),
            **(env or {}),
        }

    async def run(self, *args: str, stdin: bytes | None = None, user: str = "alice") -> tuple[int, str, str]:
        process = await self.start(*args, user=user, stdin=asyncio.subprocess.PIPE if stdin is not None else None)
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def start(self, *args: str, user: str = "alice", stdin: int | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(self.binary), "--context", user, *args, env=self.env,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, pattern: str, seconds: float = 20) -> str:
    seen = ""
    while not re.search(pattern, seen):
        line = await asyncio.wait_for(stream.readline(), seconds)
        assert line, f"stream ended before {pattern!r}: {seen!r}"
        seen += line.decode()
    return seen


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_get_list_and_json(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    code, out, err = await kubectl.run("get", "pods")
    assert code == 0, err
    assert re.search(r"^web\s+1/1\s+Running", out, re.M)
    code, out, err = await kubectl.run("get", "pods", "-A", "-o", "json", user="bob")
    assert code == 0, err
    assert "web" in [item["metadata"]["name"] for item in json.loads(out)["items"]]


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_denied_user_sees_forbidden_with_the_reason(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    code, _, err = await kubectl.run("get", "pods", user="carol")
    assert code == 1
    assert "Error from server (Forbidden): no policy grants carol access to socket prod" in err
    code, _, err = await kubectl.run("get", "pods", "-A")
    assert code == 1
    assert "Error from server (Forbidden): socket prod: policy dev: no rule allows list pods" in err


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_watch_delivers_events(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    process = await kubectl.start("get", "pods", "-w")
    assert process.stdout is not None
    try:
        await read_until(process.stdout, r"\bweb\b")
        world.cluster.store.apply(make_pod(f"watched-{minor}"))
        await read_until(process.stdout, rf"\bwatched-{minor}\b")
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_logs_follow_streams_lines_as_they_come(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    process = await kubectl.start("logs", "-f", "web")
    assert process.stdout is not None
    try:
        first = await asyncio.wait_for(process.stdout.readline(), 20)
        second = await asyncio.wait_for(process.stdout.readline(), 20)
        assert first and second and first != second
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_apply_and_delete(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    manifest = world.tmp / f"cm-{minor}.yaml"
    manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{minor}\ndata:\n  k: v\n")
    code, out, err = await kubectl.run("apply", "-f", str(manifest))
    assert (code, out.strip()) == (0, f"configmap/cm-{minor} created"), err
    code, out, err = await kubectl.run("delete", "configmap", f"cm-{minor}")
    assert (code, out.strip()) == (0, f'configmap "cm-{minor}" deleted'), err


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env"), EXEC_VARIANTS)
async def test_exec(world: World, minor: int, env: dict[str, str]) -> None:
    kubectl = Kubectl(world, minor, env)
    code, out, err = await kubectl.run("exec", "web", "--", "echo", "hi")
    assert (code, out, err) == (0, "hi\n", "")
    data = b"".join(b"line %05d\n" % n for n in range(5000))
    code, out, err = await kubectl.run("exec", "-i", "web", "--", "cat", stdin=data)
    assert (code, err) == (0, "") and out.encode() == data
    code, _, err = await kubectl.run("exec", "web", "--", "sh", "-c", "exit 3")
    assert code == 3 and "command terminated with exit code 3" in err
    code, _, err = await kubectl.run("exec", "web", "--", "true", user="carol")
    assert code == 1 and "Forbidden" in err


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_port_forward_moves_bytes(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    process = await kubectl.start("port-forward", "pod/web", ":8080")
    assert process.stdout is not None
    try:
        line = await read_until(process.stdout, r"Forwarding from 127\.0\.0\.1:\d+")
        local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
        payload = b"".join(b"chunk %05d\n" % n for n in range(2000))
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(payload)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        assert answer == payload.replace(b"chunk", b"web:8080 chunk")
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_auth_can_i_and_whoami_answer_for_the_caller(world: World, minor: int) -> None:
    kubectl = Kubectl(world, minor)
    assert (await kubectl.run("auth", "can-i", "list", "pods"))[:2] == (0, "yes\n")
    assert (await kubectl.run("auth", "can-i", "create", "pods", "--subresource=exec"))[:2] == (0, "yes\n")
    code, out, _ = await kubectl.run("auth", "can-i", "delete", "pods")
    assert code == 1 and out.startswith("no")
    code, out, _ = await kubectl.run("auth", "can-i", "list", "pods", "-n", "kube-system")
    assert code == 1 and out.startswith("no")
    code, out, err = await kubectl.run("auth", "can-i", "--list")
    assert code == 0, err
    assert re.search(r"^pods\.\*\s+\[\]\s+\[\]\s+\[get list watch\]", out, re.M), out
    code, out, err = await kubectl.run("auth", "whoami")
    assert code == 0, err
    assert re.search(r"Username\s+alice", out) and re.search(r"Groups\s+\[dev\]", out)
    seen_reviews = [r for r in world.cluster.requests_seen if "selfsubject" in r.path]
    assert seen_reviews == [], "self-reviews are answered by the connector, never forwarded"


def python_api(world: World, user: str = "alice") -> kube_client.CoreV1Api:
    h = world.harness
    configuration = kube_client.Configuration(host=f"{h.url}/sockets/prod")
    configuration.ssl_ca_cert = str(h.ca_file)
    configuration.api_key = {"authorization": f"Bearer {h.tokens[user]}"}
    return kube_client.CoreV1Api(kube_client.ApiClient(configuration))


async def test_python_client_list_watch_and_exec(world: World) -> None:
    # The client is synchronous: it runs in a thread, the connector in this event loop.
    api = python_api(world)

    def list_names() -> list[str]:
        return [p.metadata.name for p in api.list_namespaced_pod("default").items]

    assert "web" in await asyncio.to_thread(list_names)

    def first_watch_event() -> tuple[str, str]:
        for event in kube_watch.Watch().stream(api.list_namespaced_pod, "default", timeout_seconds=5):
            return event["type"], event["object"].metadata.name
        raise AssertionError("no watch event")

    kind, _ = await asyncio.to_thread(first_watch_event)
    assert kind == "ADDED"

    def exec_echo() -> str:
        return kube_stream(
            api.connect_get_namespaced_pod_exec, "web", "default",
            command=["echo", "from-python"], stderr=True, stdin=False, stdout=True, tty=False,
        )  # fmt: skip

    assert (await asyncio.to_thread(exec_echo)).strip() == "from-python"
