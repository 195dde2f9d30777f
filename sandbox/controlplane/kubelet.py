"""One node of a real control plane: the kubelet API kube-apiserver dials, and the node's part of
the pod lifecycle, with the sandbox's process runtime as the container runtime.

kube-apiserver reaches a pod's exec, attach, port-forward and logs by calling the kubelet of the
node the pod is bound to, at the node's InternalIP and `status.daemonEndpoints.kubeletEndpoint`,
over TLS with its `--kubelet-client-certificate`. This module serves that API:

    /exec/{namespace}/{pod}/{container}?command=..&input=1&output=1&error=1&tty=1
    /attach/{namespace}/{pod}/{container}?input=1&output=1&error=1&tty=1
    /portForward/{namespace}/{pod}            (SPDY/3.1; websocket channels with ?port=)
    /containerLogs/{namespace}/{pod}/{container}?follow=..&tailLines=..&timestamps=..
    (each also with a `{uid}` segment before the container, as the kubelet accepts)

and answers them with `sandbox.apiserver.streaming`/`logs` in kubelet mode: a websocket exec
offering only v5.channel.k8s.io is refused as a kubelet refuses it (kube-apiserver 1.29 hands
websocket upgrades to the kubelet untranslated, so kubectl ≥ 1.30 falls back to SPDY there; 1.33
translates to SPDY itself). Only callers with a client certificate from the cluster's CA get in.

`Node` also does what a kubelet and the scheduler do for pods, and nothing more (there is no
kube-controller-manager: objects exist as they are created, and deployments create no pods):
registers the Node (Ready, addresses, capacity, kubelet endpoint), binds every unscheduled pod to
itself, reports bound pods Running with their containers started, and completes the graceful
deletion of pods being deleted (the final delete a kubelet sends once containers have stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict

from connector.kube.status import status_json
from sandbox.apiserver import logs, streaming
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.runtime import PodRuntime
from sandbox.apiserver.streaming import StreamParams, StreamParamsError
from sandbox.controlplane.loopback import LoopbackApp

log = logging.getLogger(__name__)

WATCH_RETRY_SECONDS = 0.5
LOG_LINE_INTERVAL_SECONDS = 0.5


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stream_params(request: web.Request) -> StreamParams:
    """The kubelet's query names (`input`, `output`, `error`, `port`) as the apiserver's StreamParams."""
    query = request.query
    translated: MultiDict[str] = MultiDict()
    for name in query.getall("command", []):
        translated.add("command", name)
    for kubelet_name, name in (("input", "stdin"), ("output", "stdout"), ("error", "stderr"), ("tty", "tty")):
        for value in query.getall(kubelet_name, []):
            translated.add(name, value)
    for value in query.getall("port", []):
        translated.add("ports", value)
    if "container" in request.match_info:
        translated["container"] = request.match_info["container"]
    return StreamParams.from_query(translated)


class Node:
    """A node named `name` of the cluster at `api_url`, serving the kubelet API on 127.0.0.1."""

    def __init__(
        self,
        name: str,
        *,
        api_url: str,
        api_ssl: ssl.SSLContext,
        serving_ssl: ssl.SSLContext,
        kubelet_version: str,
        scratch_dir: Path,
    ) -> None:
        self.name = name
        self.api_url = api_url.rstrip("/")
        self._api_ssl = api_ssl
        self._serving_ssl = serving_ssl
        self.kubelet_version = kubelet_version
        self.runtime = PodRuntime(scratch_dir)
        self.port = 0
        self._server: LoopbackApp | None = None
        self._http: aiohttp.ClientSession | None = None
        self._pods: asyncio.Task[None] | None = None
        self._pod_ips: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        for kind, handler in (("exec", self._exec), ("attach", self._attach)):
            app.router.add_route("*", f"/{kind}/{{namespace}}/{{pod}}/{{container}}", handler)
            app.router.add_route("*", f"/{kind}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", handler)
        app.router.add_route("*", "/portForward/{namespace}/{pod}", self._portforward)
        app.router.add_route("*", "/portForward/{namespace}/{pod}/{uid}", self._portforward)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._server = LoopbackApp(app, self._serving_ssl)
        self.port = await self._server.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        await self._register()
        self._pods = asyncio.create_task(self._run_pods(), name=f"node {self.name} pods")

    async def stop(self) -> None:
        if self._pods is not None:
            self._pods.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pods
            self._pods = None
        await self.runtime.close()
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- talking to the apiserver ----------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None, *,
                    content_type: str = "application/json", ok: tuple[int, ...] = (200, 201)) -> Any:
        assert self._http is not None
        data = None if body is None else json.dumps(body)
        async with self._http.request(method, self.api_url + path, data=data, ssl=self._api_ssl,
                                      headers={"Content-Type": content_type}) as response:
            text = await response.text()
            if response.status not in ok:
                raise ApiError(response.status, f"{method} {path}: {text[:300]}")
            return json.loads(text) if text else None

    async def _register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        await self._call("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
        }, ok=(201, 409))
        resources = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
        now = _now()
        status = {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "kubeletVersion": self.kubelet_version, "kubeProxyVersion": self.kubelet_version,
                "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "sandbox://1.0",
                "osImage": "sandbox", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
        }
        await self._call("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": status},
                         content_type="application/merge-patch+json")

    async def _run_pods(self) -> None:
        """Watch every pod and do the node's part for each; a broken watch is resumed from a new list."""
        assert self._http is not None
        while True:
            try:
                listed = await self._call("GET", "/api/v1/pods")
                for pod in listed.get("items") or []:
                    await self._reconcile(pod)
                version = listed["metadata"]["resourceVersion"]
                url = f"{self.api_url}/api/v1/pods?watch=1&allowWatchBookmarks=false&resourceVersion={version}"
                async with self._http.get(url, ssl=self._api_ssl) as response:
                    if response.status != 200:
                        raise ApiError(response.status, "watch pods")
                    async for line in response.content:
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            await self._reconcile(event["object"])
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, ApiError, ValueError, KeyError, OSError) as exc:
                log.info("node %s: pod watch ended (%s); resuming", self.name, exc)
            await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _reconcile(self, pod: dict[str, Any]) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        node = spec.get("nodeName")
        try:
            if not node:
                await self._call("POST", f"{path}/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": uid},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
                }, ok=(201, 404, 409))
            elif node != self.name:
                return
            elif meta.get("deletionTimestamp"):
                await self._call("DELETE", path, {
                    "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": uid},
                }, ok=(200, 404, 409))
                self._pod_ips.pop(uid, None)
            elif (pod.get("status") or {}).get("phase") != "Running":
                await self._call("PATCH", f"{path}/status", {"status": self._running_status(pod)},
                                 content_type="application/merge-patch+json", ok=(200, 404, 409))
        except ApiError as exc:
            log.warning("node %s: pod %s/%s: %s", self.name, namespace, name, exc)

    def _running_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The status a kubelet reports for a started pod; `qosClass` stays what the apiserver set (immutable)."""
        now = _now()
        uid = pod["metadata"].get("uid", "")
        ip = self._pod_ips.setdefault(uid, f"10.244.0.{len(self._pod_ips) % 250 + 2}")
        containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
        conditions = [{"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                      for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                   "PodScheduled")]
        return {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "containerStatuses": [{
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": f"sandbox://{c.get('image', '')}",
                "containerID": f"sandbox://{secrets.token_hex(16)}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            } for c in containers],
        }

    async def _pod(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The pod a kubelet request names, fresh from the apiserver, or the answer refusing it."""
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        try:
            pod = await self._call("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", ok=(200,))
        except ApiError as exc:
            if exc.code == 404:
                return web.Response(status=404, text=f"pod does not exist: {namespace}/{name}")
            raise
        uid = request.match_info.get("uid")
        if (pod.get("spec") or {}).get("nodeName") != self.name or (uid and pod["metadata"].get("uid") != uid):
            return web.Response(status=404, text=f"pod does not exist: {namespace}/{name}")
        return pod

    # --- the kubelet API -------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stream(self, request: web.Request, serve: Callable[..., Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        pod = await self._pod(request)
        if isinstance(pod, web.Response):
            return pod
        try:
            params = _stream_params(request)
        except StreamParamsError as exc:
            return web.Response(status=400, body=status_json(400, str(exc)), content_type="application/json")
        return await serve(request, self.runtime, pod, params, kubelet=True)

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, streaming.serve_exec)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, streaming.serve_attach)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, streaming.serve_portforward)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        pod = await self._pod(request)
        if isinstance(pod, web.Response):
            return pod
        params = {**request.query, "container": request.match_info["container"]}
        try:
            options = logs.parse_options(pod, params, datetime.now(UTC))
        except ApiError as exc:
            return web.Response(status=exc.code, text=exc.message)
        started = logs.started_at(pod)
        if started is None:
            return web.Response(status=400, text=f'container "{options.container}" has not started')
        container_log = logs.ContainerLog(pod, options.container, started, LOG_LINE_INTERVAL_SECONDS)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await logs.stream(container_log, options, response.write, now=lambda: datetime.now(UTC),
                              running=lambda: not self.runtime.closed)
            await response.write_eof()
        except ConnectionError:
            pass  # the apiserver stopped reading: `kubectl logs -f` ended
        return response
