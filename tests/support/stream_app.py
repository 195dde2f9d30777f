"""A minimal API server around `sandbox.apiserver.streaming`, for testing the streaming protocols alone.

It serves just enough of kube-apiserver for kubectl's exec, attach and port-forward (discovery,
GET of a pod) and routes pods/exec|attach|portforward to the streaming module, with no
authentication, so the stream protocols can be tested with the real kubectl, the Python client
and hand-made SPDY/websocket clients without the rest of the emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from connector.kube.status import status_json
from connector.pki import KeyPair, generate_ca, issue_certificate
from sandbox.apiserver.runtime import PodRuntime
from sandbox.apiserver.streaming import StreamParams, StreamParamsError, serve_attach, serve_exec, serve_portforward

_POD_RESOURCES = [
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
     "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
    *({"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": verbs}
      for sub, kind, verbs in (("exec", "PodExecOptions", ["create", "get"]),
                               ("attach", "PodAttachOptions", ["create", "get"]),
                               ("portforward", "PodPortForwardOptions", ["create", "get"]),
                               ("log", "Pod", ["get"]))),
]


@dataclass(frozen=True)
class Served:
    """How one streaming request was answered: subresource, transport and negotiated protocol."""

    subresource: str
    transport: str  # "websocket", "spdy", or "http <status>" for a refusal
    protocol: str


def make_pod(name: str, *, namespace: str = "default", containers: Iterable[dict[str, Any]] | None = None,
             uid: str | None = None) -> dict[str, Any]:
    """A Running pod object as the REST side would store it."""
    containers = list(containers or [{"name": "main", "image": "busybox"}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}",
                     "resourceVersion": "1", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"containers": containers, "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "10.0.0.10",
                   "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0,
                                          "image": c.get("image", ""), "imageID": "", "started": True,
                                          "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
                                         for c in containers]},
    }


class StreamApp:
    """The app on 127.0.0.1 (free port), over http or https with its own CA."""

    def __init__(self, scratch: Path, pods: Iterable[dict[str, Any]], *, tls: bool = False,
                 attach_tick_seconds: float = 0.2) -> None:
        self.runtime = PodRuntime(scratch / "pods", attach_tick_seconds=attach_tick_seconds)
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self._scratch = scratch
        self._tls = tls
        self.ca: KeyPair | None = None
        self.url = ""
        self.served: list[Served] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> StreamApp:
        app = web.Application()
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api)
        app.router.add_get("/apis", self._apis)
        app.router.add_get("/api/v1", self._api_v1)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", self._get_pod)
        for sub, serve in (("exec", serve_exec), ("attach", serve_attach), ("portforward", serve_portforward)):
            handler = self._stream_handler(sub, serve)
            app.router.add_route("GET", f"/api/v1/namespaces/{{namespace}}/pods/{{name}}/{sub}", handler)
            app.router.add_route("POST", f"/api/v1/namespaces/{{namespace}}/pods/{{name}}/{sub}", handler)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        context = None
        if self._tls:
            self.ca = generate_ca("stream-app-ca")
            serving = issue_certificate(self.ca, "127.0.0.1", hosts=("127.0.0.1", "localhost"))
            cert, key = self._scratch / "serving.crt", self._scratch / "serving.key"
            cert.write_bytes(serving.cert_pem)
            key.write_bytes(serving.key_pem)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this server; the token is never checked, it only keeps kubectl from prompting."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca is not None:
            ca_path = self._scratch / "ca.crt"
            ca_path.write_bytes(self.ca.cert_pem)
            cluster["certificate-authority"] = str(ca_path)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "stream-app",
            "clusters": [{"name": "stream-app", "cluster": cluster}],
            "users": [{"name": "nobody", "user": {"token": "unchecked"}}],
            "contexts": [{"name": "stream-app", "context": {"cluster": "stream-app", "user": "nobody",
                                                             "namespace": "default"}}],
        }
        path.write_text(json.dumps(config))
        return path

    async def served_requests(self, count: int) -> list[Served]:
        """`served` once `count` streaming requests have ended (a client may exit before its handler ends)."""
        for _ in range(200):
            if len(self.served) >= count:
                break
            await asyncio.sleep(0.05)
        return self.served

    @staticmethod
    async def _version(request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.4", "platform": "linux/amd64"})

    @staticmethod
    async def _api(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})

    @staticmethod
    async def _apis(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    @staticmethod
    async def _api_v1(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": _POD_RESOURCES})

    def _pod(self, request: web.Request) -> dict[str, Any] | None:
        return self.pods.get((request.match_info["namespace"], request.match_info["name"]))

    async def _get_pod(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        if pod is None:
            return _not_found(request.match_info["name"])
        return web.json_response(pod)

    def _stream_handler(self, subresource: str, serve: Any) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            pod = self._pod(request)
            if pod is None:
                return _not_found(request.match_info["name"])
            try:
                params = StreamParams.from_query(request.query)
            except StreamParamsError as exc:
                return web.Response(status=400, body=status_json(400, str(exc)), content_type="application/json")
            response = await serve(request, self.runtime, pod, params)
            if isinstance(response, web.WebSocketResponse):
                self.served.append(Served(subresource, "websocket", response.ws_protocol or ""))
            elif response.status == 101:
                self.served.append(Served(subresource, "spdy", response.headers.get("X-Stream-Protocol-Version", "")))
            else:
                self.served.append(Served(subresource, f"http {response.status}", ""))
            return response

        return handler


def _not_found(name: str) -> web.Response:
    body = status_json(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})
    return web.Response(status=404, body=body, content_type="application/json")


def kubectl_binary(minor: int) -> Path | None:
    """The real kubectl 1.<minor> installed beside the `kubectl` dispatcher, if any."""
    dispatcher = shutil.which("kubectl")
    if dispatcher is None:
        return None
    candidate = Path(os.path.realpath(dispatcher)).parent / f"kubectl.1.{minor}"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None
