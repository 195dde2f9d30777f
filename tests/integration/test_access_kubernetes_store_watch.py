"""The Kubernetes store's watch loop and its place in `serve`, against a small fake apiserver on
127.0.0.1 (a real one compacts its history only every few minutes, so a 410 is cheap only here):
relist on 410 Gone, resume from the last resourceVersion, /readyz waits for the first list, and a
reload with the same access_store keeps the store (no new list)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from connector.access import crd
from connector.access.kubernetes_store import KubernetesStore
from connector.policy import access
from connector.policy.access_model import KubernetesStoreConfig
from tests.support.proxy_harness import ProxyHarness
from tests.unit.test_access_requests import BOB, DEFS, T0

NAMESPACE = "connector"


def _object(request_id: str, version: str) -> dict[str, Any]:
    filed = access.create(DEFS, BOB, "prod-break-glass", "incident", "1h", T0, request_id=request_id)
    obj = crd.to_object(filed, NAMESPACE)
    obj["metadata"]["resourceVersion"] = version
    return obj


class FakeApiserver:
    """Lists answer `listed` (after `list_gate`); the first watch ends with 410 Gone, later ones send
    `watched` and stay open."""

    def __init__(self) -> None:
        self.list_gate = asyncio.Event()
        self.list_gate.set()
        self.lists = 0
        self.watch_versions: list[str] = []
        self.listed: list[dict[str, Any]] = [_object("ar-old", "5")]
        self.url = ""

    async def collection(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            await self.list_gate.wait()
            self.lists += 1
            version = str(10 * self.lists)
            return web.json_response({"kind": "AccessRequestList", "metadata": {"resourceVersion": version},
                                      "items": self.listed})  # fmt: skip
        self.watch_versions.append(request.query["resourceVersion"])
        response = web.StreamResponse()
        await response.prepare(request)
        if len(self.watch_versions) == 1:
            gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            await response.write(json.dumps(gone).encode() + b"\n")
            return response
        added = {"type": "ADDED", "object": _object("ar-watched", "25")}
        await response.write(json.dumps(added).encode() + b"\n")
        await asyncio.sleep(3600)
        return response

    async def __aenter__(self) -> FakeApiserver:
        app = web.Application()
        app.router.add_get(crd.collection_path(NAMESPACE), self.collection)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))  # fmt: skip
        return path


async def _until(check: Any) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_410_lists_again_and_the_watch_resumes_from_the_new_list(tmp_path: Path) -> None:
    async with FakeApiserver() as fake:
        store = KubernetesStore(KubernetesStoreConfig(namespace=NAMESPACE, kubeconfig=str(fake.kubeconfig(
            tmp_path / "kubeconfig"))))  # fmt: skip
        await store.start()
        try:
            await store.wait_ready()
            assert [r.id for r in store.list()] == ["ar-old"]
            fake.listed = [_object("ar-relisted", "15")]
            await _until(lambda: {r.id for r in store.list()} == {"ar-relisted", "ar-watched"})
            assert (store.lists, fake.watch_versions) == (2, ["10", "20"])
        finally:
            await store.close()


async def test_serve_is_not_ready_until_the_first_list_and_a_reload_keeps_the_store(tmp_path: Path) -> None:
    async with FakeApiserver() as fake:
        fake.list_gate.clear()
        store_config = {"kubernetes": {"namespace": NAMESPACE, "kubeconfig": str(fake.kubeconfig(tmp_path / "kc"))}}
        async with ProxyHarness(tmp_path, config={"access_store": store_config}) as h:
            status, _, body = await h.request("GET", "/readyz", user=None)
            assert status == 503 and b"[-]access-store failed" in body, body
            fake.list_gate.set()
            assert h.connector is not None and h.connector.ctx is not None
            store = h.connector.ctx.access_store
            assert isinstance(store, KubernetesStore)
            await store.wait_ready()
            status, _, body = await h.request("GET", "/readyz", user=None)
            assert (status, b"[+]access-store ok" in body) == (200, True), body

            await _until(lambda: len(fake.watch_versions) == 2)  # the fake's 410 relisted once: settled
            lists = fake.lists
            config = h.config()
            config["policies"] = []
            h.write_config(config)
            await _until(lambda: h.connector is not None and h.connector.cfg is not None
                         and h.connector.cfg.policies == [])  # fmt: skip
            assert h.connector.ctx.access_store is store
            assert (fake.lists, len(fake.watch_versions)) == (lists, 2)
