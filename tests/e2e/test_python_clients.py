"""The Python `kubernetes` and `kubernetes_asyncio` clients (list, watch, exec stream each) through the
sandbox's connector, with nothing but a context of the sandbox's kubeconfig (exec plugin included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes import watch as kube_watch
from kubernetes.stream import stream as kube_stream
from kubernetes_asyncio import client as async_client
from kubernetes_asyncio import config as async_config
from kubernetes_asyncio import watch as async_watch
from kubernetes_asyncio.stream import WsApiClient

from sandbox.world import CLUSTERS
from tests.support.sandbox_process import AuditLog

pytestmark = pytest.mark.e2e

PROD = next(c.socket for c in CLUSTERS if c.exposed)
CONTEXT = f"alice@{PROD}"
ALICE = "alice@example.com"
WEB_POD = "web-7d4b9c-x2k4q"
SEEDED_PODS = {("default", "web-7d4b9c-x2k4q"), ("default", "web-7d4b9c-p9z7m"), ("dev", "api-0")}


@pytest.fixture(scope="module")
def core(sandbox: dict[str, Any]) -> Iterator[kube_client.CoreV1Api]:
    api = kube_config.new_client_from_config(config_file=sandbox["kubeconfig"], context=CONTEXT)
    with api:
        yield kube_client.CoreV1Api(api)


def test_kubernetes_client_lists(core: kube_client.CoreV1Api, audit: AuditLog) -> None:
    since = audit.mark()
    pods = core.list_pod_for_all_namespaces()
    assert {(p.metadata.namespace, p.metadata.name) for p in pods.items} == SEEDED_PODS
    assert {p.status.phase for p in pods.items} == {"Running"}
    event = audit.wait(since, user=ALICE, socket=PROD, verb="list", resource="pods")
    assert (event["decision"], event["code"]) == ("allow", 200)


def test_kubernetes_client_watches_an_event(core: kube_client.CoreV1Api, audit: AuditLog) -> None:
    name = "e2e-watched-by-python"
    since = audit.mark()
    listed = core.list_namespaced_config_map("default")
    core.create_namespaced_config_map(
        "default", kube_client.V1ConfigMap(metadata=kube_client.V1ObjectMeta(name=name), data={"k": "v"})
    )
    try:
        watch = kube_watch.Watch()
        # From the list's resourceVersion: the creation above is the first thing the watch reports.
        events = watch.stream(
            core.list_namespaced_config_map, "default", resource_version=listed.metadata.resource_version,
            timeout_seconds=30,
        )  # fmt: skip
        first = next(events)
        watch.stop()
        assert (first["type"], first["object"].metadata.name, first["object"].data) == ("ADDED", name, {"k": "v"})
    finally:
        core.delete_namespaced_config_map(name, "default")
    event = audit.wait(since, user=ALICE, socket=PROD, verb="watch", resource="configmaps", namespace="default")
    assert event["decision"] == "allow"


def test_kubernetes_client_execs_with_a_stream(core: kube_client.CoreV1Api, audit: AuditLog) -> None:
    since = audit.mark()
    session = kube_stream(
        core.connect_get_namespaced_pod_exec, WEB_POD, "default",
        command=["sh", "-c", "echo from-python; echo to-stderr >&2; exit 4"],
        stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False,
    )  # fmt: skip
    session.run_forever(timeout=30)
    assert (session.read_stdout(), session.read_stderr()) == ("from-python\n", "to-stderr\n")
    assert session.returncode == 4
    session.close()
    event = audit.wait(since, user=ALICE, socket=PROD, verb="create", subresource="exec", stage="ResponseComplete")
    assert (event["decision"], event["method"]) == ("allow", "GET")  # a websocket upgrade


async def test_kubernetes_asyncio_lists(sandbox: dict[str, Any], audit: AuditLog) -> None:
    since = audit.mark()
    api = await async_config.new_client_from_config(config_file=sandbox["kubeconfig"], context=CONTEXT)
    async with api:
        pods = await async_client.CoreV1Api(api).list_pod_for_all_namespaces()
    assert {(p.metadata.namespace, p.metadata.name) for p in pods.items} == SEEDED_PODS
    event = audit.wait(since, user=ALICE, socket=PROD, verb="list", resource="pods")
    assert event["decision"] == "allow"


async def test_kubernetes_asyncio_watches_an_event(sandbox: dict[str, Any], audit: AuditLog) -> None:
    name = "e2e-watched-by-asyncio"
    since = audit.mark()
    api = await async_config.new_client_from_config(config_file=sandbox["kubeconfig"], context=CONTEXT)
    async with api:
        core = async_client.CoreV1Api(api)
        listed = await core.list_namespaced_config_map("default")
        body = async_client.V1ConfigMap(metadata=async_client.V1ObjectMeta(name=name), data={"k": "v"})
        await core.create_namespaced_config_map("default", body)
        try:
            async with async_watch.Watch() as watch:
                async for event in watch.stream(core.list_namespaced_config_map, "default",
                                                resource_version=listed.metadata.resource_version,
                                                timeout_seconds=30):
                    first = event
                    break
            assert (first["type"], first["object"].metadata.name) == ("ADDED", name)
        finally:
            await core.delete_namespaced_config_map(name, "default")
    event = audit.wait(since, user=ALICE, socket=PROD, verb="watch", resource="configmaps", namespace="default")
    assert event["decision"] == "allow"


async def test_kubernetes_asyncio_execs_over_a_websocket(sandbox: dict[str, Any], audit: AuditLog) -> None:
    since = audit.mark()
    configuration = async_client.Configuration()
    await async_config.load_kube_config(config_file=sandbox["kubeconfig"], context=CONTEXT,
                                        client_configuration=configuration)
    async with WsApiClient(configuration=configuration) as ws:
        output = await async_client.CoreV1Api(api_client=ws).connect_get_namespaced_pod_exec(
            WEB_POD, "default", command=["sh", "-c", "echo from-asyncio"], stdout=True, stderr=True, stdin=False,
            tty=False,
        )
    assert output == "from-asyncio\n"
    event = audit.wait(since, user=ALICE, socket=PROD, verb="create", subresource="exec", stage="ResponseComplete")
    assert (event["decision"], event["method"], event["code"]) == ("allow", "GET", 101)
