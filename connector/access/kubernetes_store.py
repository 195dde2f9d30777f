"""The Kubernetes store for access requests: AccessRequest custom resources (connector.access.crd)
in one namespace of the connector's home cluster, whose etcd is then the replicated store.

Every replica keeps the whole namespace's requests in memory, fed by a list and then a watch that
resumes from the last resourceVersion it saw (bookmarks keep it fresh), lists again when the
apiserver answers 410 Gone, and reconnects with a doubling backoff on any other failure. `list` and
`get` read that copy only: every proxied request asks for the caller's grants, and must not wait
on the network. A write (file, approve, deny, revoke) goes to the apiserver: a transition is a PUT
of the status subresource carrying the resourceVersion it was computed from; on 409 Conflict the
request is read again and the transition rule applied again to the fresh copy, so two approvers on
two replicas are both counted once and neither approval is lost.

aiohttp straight against the REST API, not a Kubernetes client library: the connector already
speaks to clusters that way (connector.upstream resolves the kubeconfig or the in-cluster service
account, with its TLS and credential refresh), the runtime image has no Kubernetes client, and the
four calls needed (list, watch, create, replace status) are a few lines each.

The AccessStore methods are synchronous (connector.access.store): called from a worker thread, a
write runs on the event loop the store was started on and the thread waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import aiohttp

from connector.access import crd
from connector.access.store import oldest_first
from connector.aws.token import EksTokenCache
from connector.policy.access import AccessRequest, AccessRequestError
from connector.policy.access_model import KubernetesStoreConfig
from connector.upstream.config import StandardSocketConfig
from connector.upstream.kubeconfig import SERVICE_ACCOUNT_DIR, in_cluster_config
from connector.upstream.resolve import resolve_socket
from connector.upstream.upstream import SocketError, Upstream

log = logging.getLogger(__name__)

# The name the store's connection goes by in messages (it is no socket users can reach).
CONNECTION_NAME = "access-store"
# The apiserver ends a watch after this long; the store then resumes it from the last version.
WATCH_SECONDS = 300
# Between failed attempts to list or watch: from the first delay, doubling, up to the last.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# How many times one transition is computed again after a 409 before the caller is told to retry.
CONFLICT_RETRIES = 20
# How long a caller's thread waits for one write (a write is a few round trips to the apiserver).
WRITE_TIMEOUT_SECONDS = 30.0


class KubernetesApiError(RuntimeError):
    """An answer of the apiserver the store cannot use (its status and message)."""

    def __init__(self, what: str, status: int, body: Any):
        message = body.get("message") if isinstance(body, Mapping) else None
        super().__init__(f"access store: {what}: the Kubernetes API answered {status}: {message or body}")
        self.status = status


class _Gone(Exception):
    """The resourceVersion the watch resumes from is too old (410): list again."""


def _version(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def _newer_or_same(candidate: str, stored: str) -> bool:
    """Whether `candidate` is not older than `stored`. resourceVersions are etcd revisions, so they
    compare as integers; a version that is not one is taken as newer (the watch is the authority)."""
    try:
        return int(candidate) >= int(stored)
    except ValueError:
        return True


class KubernetesStore:
    def __init__(
        self,
        config: KubernetesStoreConfig,
        *,
        environ: Mapping[str, str] | None = None,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        backoff_first_seconds: float = BACKOFF_FIRST_SECONDS,
    ):
        self.config = config
        self.namespace = config.namespace
        self.on_change: Callable[[], None] | None = None  # called on the loop after each change seen
        self._environ = environ
        self._service_account_dir = service_account_dir
        self._backoff_first = backoff_first_seconds
        self._guard = threading.Lock()  # readers are worker threads, the writer is the loop
        self._requests: dict[str, tuple[str, AccessRequest]] = {}  # id -> (resourceVersion, request)
        self._ordered: list[AccessRequest] = []
        self._resource_version: str | None = None  # where the watch resumes; None: list first
        self._listed = asyncio.Event()  # set on the loop; is_set() is safe to read anywhere
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._upstream: Upstream | None = None
        self._http: aiohttp.ClientSession | None = None
        self.lists = 0  # how many times the namespace was listed (the first, then one per 410)

    # -- the AccessStore contract ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._listed.is_set()

    def same_config(self, config: object) -> bool:
        return getattr(config, "kubernetes", None) == self.config

    async def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="access-store-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def wait_ready(self) -> None:
        """Until the first list is done (for tests and tools: serving reports it in /readyz only)."""
        await self._listed.wait()

    def list(self) -> list[AccessRequest]:
        with self._guard:
            return list(self._ordered)

    def get(self, request_id: str) -> AccessRequest:
        with self._guard:
            found = self._requests.get(request_id)
        if found is not None:
            return found[1]
        # Filed on another replica a moment ago, the watch not here yet: ask the apiserver.
        obj = self._on_loop(lambda: self._read(request_id))
        return crd.from_object(obj)

    def create(self, request: AccessRequest) -> AccessRequest:
        return self._on_loop(lambda: self._create(request))

    def update(self, request_id: str, change: Callable[[AccessRequest], AccessRequest]) -> AccessRequest:
        return self._on_loop(lambda: self._update(request_id, change))

    # -- writes ------------------------------------------------------------------------------------

    def _on_loop(self, work: Callable[[], Awaitable[AccessRequest | dict[str, Any]]]) -> Any:
        loop = self._loop
        if loop is None:
            raise AccessRequestError(503, "the access store is not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("KubernetesStore methods block: call them with asyncio.to_thread")
        future = asyncio.run_coroutine_threadsafe(_awaited(work), loop)
        try:
            return future.result(WRITE_TIMEOUT_SECONDS)
        except FutureTimeout:
            future.cancel()
            raise AccessRequestError(503, "the access store did not answer in time; try again") from None

    async def _create(self, request: AccessRequest) -> AccessRequest:
        path = crd.collection_path(self.namespace)
        status, body = await self._call("POST", path, crd.to_object(request, self.namespace))
        if status == 409:
            raise AccessRequestError(409, f"access request {request.id} already exists")
        if status != 201:
            raise KubernetesApiError(f"filing {request.id}", status, body)
        stored = self._remember(body)
        if stored != request:  # the apiserver drops the status of a create: write it
            return await self._update(request.id, lambda _current: request)
        return stored

    async def _update(self, request_id: str, change: Callable[[AccessRequest], AccessRequest]) -> AccessRequest:
        with self._guard:
            known = self._requests.get(request_id)
        for _attempt in range(CONFLICT_RETRIES):
            if known is None:
                obj = await self._read(request_id)
                known = (_version(obj), crd.from_object(obj))
            version, current = known
            changed = change(current)
            if crd.to_object(changed, self.namespace)["spec"] != crd.to_object(current, self.namespace)["spec"]:
                raise RuntimeError(f"access store: a transition of {request_id} changed what was filed")
            path = crd.object_path(self.namespace, request_id) + "/status"
            status, body = await self._call("PUT", path, crd.to_object(changed, self.namespace, version))
            if status == 200:
                return self._remember(body)
            if status == 404:
                raise AccessRequestError(404, f"no access request {request_id}")
            if status != 409:
                raise KubernetesApiError(f"changing {request_id}", status, body)
            known = None  # another writer was first: read its version, decide again
        raise AccessRequestError(409, f"access request {request_id} is changing too often; try again")

    async def _read(self, request_id: str) -> dict[str, Any]:
        status, body = await self._call("GET", crd.object_path(self.namespace, request_id))
        if status == 404:
            raise AccessRequestError(404, f"no access request {request_id}")
        if status != 200:
            raise KubernetesApiError(f"reading {request_id}", status, body)
        self._remember(body)
        return body

    # -- the in-memory copy ------------------------------------------------------------------------

    def _remember(self, obj: Mapping[str, Any]) -> AccessRequest:
        """Keep `obj` unless a newer version of it is already kept; the request as kept."""
        request = crd.from_object(obj)
        version = _version(obj)
        with self._guard:
            kept = self._requests.get(request.id)
            if kept is not None and not _newer_or_same(version, kept[0]):
                return kept[1]
            self._requests[request.id] = (version, request)
            self._ordered = oldest_first(r for _, r in self._requests.values())
        self._changed()
        return request

    def _forget(self, obj: Mapping[str, Any]) -> None:
        with self._guard:
            self._requests.pop(obj["metadata"]["name"], None)
            self._ordered = oldest_first(r for _, r in self._requests.values())
        self._changed()

    def _replace_all(self, items: list[dict[str, Any]]) -> None:
        requests: dict[str, tuple[str, AccessRequest]] = {}
        for obj in items:
            try:
                requests[obj["metadata"]["name"]] = (_version(obj), crd.from_object(obj))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("access store: skipping the unreadable AccessRequest %s: %s", _name(obj), exc)
        with self._guard:
            self._requests = requests
            self._ordered = oldest_first(r for _, r in requests.values())
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- list and watch ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_first
        while True:
            try:
                if self._resource_version is None:
                    await self._list()
                if await self._watch():
                    delay = self._backoff_first
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("access store: the watch's resourceVersion is gone; listing again")
                self._resource_version = None
            except Exception as exc:
                log.warning("access store: %s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _list(self) -> None:
        status, body = await self._call("GET", crd.collection_path(self.namespace))
        if status != 200:
            raise KubernetesApiError(f"listing AccessRequests in {self.namespace}", status, body)
        self._replace_all(body.get("items") or [])
        self._resource_version = body["metadata"]["resourceVersion"]
        self.lists += 1
        self._listed.set()

    async def _watch(self) -> bool:
        """One watch until the apiserver ends it; whether it was accepted (the backoff then resets)."""
        http, upstream = await self._connection()
        params = {
            "watch": "1",
            "resourceVersion": self._resource_version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        url = upstream.base_url + crd.collection_path(self.namespace)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WATCH_SECONDS + 30)
        async with http.get(url, params=params, headers=await upstream.auth_headers(), ssl=_ssl(upstream),
                            server_hostname=upstream.tls_server_name, timeout=timeout) as response:  # fmt: skip
            if response.status == 410:
                raise _Gone()
            if response.status != 200:
                raise KubernetesApiError("watching AccessRequests", response.status, await _json(response))
            async for line in response.content:
                if line.strip():
                    self._apply_event(json.loads(line))
        return True

    def _apply_event(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise KubernetesApiError("watching AccessRequests", int(obj.get("code") or 0), obj)
        if kind in ("ADDED", "MODIFIED"):
            try:
                self._remember(obj)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("access store: skipping the unreadable AccessRequest %s: %s", _name(obj), exc)
        elif kind == "DELETED":
            self._forget(obj)
        self._resource_version = _version(obj)

    # -- HTTP --------------------------------------------------------------------------------------

    async def _connection(self) -> tuple[aiohttp.ClientSession, Upstream]:
        if self._upstream is None:
            self._upstream = await resolve_socket(
                CONNECTION_NAME, self._socket_config(), token_cache=EksTokenCache(), environ=self._environ
            )
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http, self._upstream

    def _socket_config(self) -> StandardSocketConfig:
        if self.config.kubeconfig is not None:
            return StandardSocketConfig(service_type="standard", kubeconfig_path=self.config.kubeconfig)
        in_cluster = in_cluster_config(os.environ if self._environ is None else self._environ,
                                       self._service_account_dir)  # fmt: skip
        if in_cluster is None:
            raise SocketError(CONNECTION_NAME, "access_store.kubernetes has no kubeconfig and this is not a pod "
                              "with a service account (KUBERNETES_SERVICE_HOST and its token)")  # fmt: skip
        return StandardSocketConfig(
            service_type="standard",
            server=in_cluster.cluster.server,
            certificate_authority=str(in_cluster.cluster.certificate_authority),
            token_file=str(in_cluster.user.token_file) if in_cluster.user is not None else None,
        )

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        http, upstream = await self._connection()
        headers = await upstream.auth_headers()
        async with http.request(method, upstream.base_url + path, json=body, headers=headers, ssl=_ssl(upstream),
                                server_hostname=upstream.tls_server_name,
                                timeout=aiohttp.ClientTimeout(total=WRITE_TIMEOUT_SECONDS)) as response:  # fmt: skip
            if response.status == 401:
                upstream.invalidate_credentials()
            return response.status, await _json(response)


async def _awaited(work: Callable[[], Awaitable[Any]]) -> Any:
    return await work()


async def _json(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    try:
        return json.loads(text)
    except ValueError:
        return text[:200]


def _ssl(upstream: Upstream) -> Any:
    return upstream.ssl_context if upstream.ssl_context is not None else False


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))
