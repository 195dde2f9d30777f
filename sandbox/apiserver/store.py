"""The object store: etcd plus the generic registry of kube-apiserver, in memory.

It owns what every object has in common: a global, monotonically increasing resourceVersion,
`uid`, `creationTimestamp`, `generation`, `generateName`, optimistic concurrency, finalizers,
namespace lifecycle and owner-reference garbage collection. Per-type rules (defaults, status,
validation) come from `strategy`. Every write is recorded in a bounded history so that watches can
resume from a resourceVersion and paged lists can be served from a consistent snapshot; anything older
than the history is `410 Expired`, as after an etcd compaction.

The store is not thread-safe: use it from the event loop that runs the server (writes fan out to
watchers through asyncio queues).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.apiserver import catalog, strategy
from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.errors import (
    MODIFIED,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    not_found,
)
from sandbox.apiserver.times import rfc3339

log = logging.getLogger(__name__)

ADDED = "ADDED"
MODIFIED_EVENT = "MODIFIED"
DELETED = "DELETED"

# The NamespaceLifecycle admission plugin refuses to delete these.
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# kube's names.SimpleNameGenerator alphabet: no vowels (no words), no confusable characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_WATCH_QUEUE = 1000


@dataclass(frozen=True)
class Event:
    """One write, as watches see it. `object` is the state after the write (for DELETED: the last
    state, carrying the deletion's resourceVersion); `previous` the state before it."""

    rv: int
    type: str
    group: str
    resource: str
    namespace: str
    name: str
    object: dict[str, Any]
    previous: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    """A subscription to the writes of one resource (optionally one namespace)."""

    group: str
    resource: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(_WATCH_QUEUE))
    overflowed: bool = False

    def wants(self, event: Event) -> bool:
        return (
            event.group == self.group
            and event.resource == self.resource
            and (self.namespace is None or event.namespace == self.namespace)
        )


class TooOldResourceVersion(Exception):
    """The history no longer reaches back to the asked resourceVersion."""

    def __init__(self, asked: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {asked} ({oldest})")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata: must be an object")
    return meta


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _strip_volatile(obj: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(obj)
    clean.get("metadata", {}).pop("resourceVersion", None)
    return clean


class Store:
    """All objects of one emulated cluster. Methods take and return plain JSON-like dicts (copies)."""

    def __init__(self, *, history: int = 5000, now: Callable[[], datetime] | None = None) -> None:
        self._objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._rv = 0
        self._history: deque[Event] = deque()
        self._history_limit = history
        self._compacted_rv = 0
        self._watchers: set[Watcher] = set()
        self._now = now or (lambda: datetime.now(UTC))

    # ----- reading -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def now(self) -> datetime:
        return self._now()

    def _bucket(self, rt: ResourceType) -> dict[str, dict[str, Any]]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._bucket(rt).get(_key(namespace if rt.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def get_by_kind(self, api_version: str, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """`get` by apiVersion and kind (`store.get_by_kind("apps/v1", "Deployment", "web")`), for seeding
        code and tests; `namespace` is ignored for cluster-scoped kinds."""
        rt = catalog.by_kind(api_version, kind)
        if rt is None:
            raise ValueError(f"apiVersion={api_version!r} kind={kind!r} is not a resource this API server serves")
        return self.get(rt, namespace, name)

    def require(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current objects in key order (namespace/name, as etcd keys sort)."""
        bucket = self._bucket(rt)
        prefix = f"{namespace}/" if namespace and rt.namespaced else ""
        return [copy.deepcopy(bucket[k]) for k in sorted(bucket) if k.startswith(prefix)]

    def list_at(self, rt: ResourceType, namespace: str | None, rv: int) -> list[dict[str, Any]]:
        """The objects as they were at resourceVersion `rv`, rebuilt by undoing later writes."""
        if rv < self._compacted_rv:
            raise TooOldResourceVersion(rv, self._compacted_rv)
        state = {k: v for k, v in self._bucket(rt).items()}
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.group != rt.group or event.resource != rt.plural:
                continue
            key = _key(event.namespace, event.name)
            if event.type == ADDED:
                state.pop(key, None)
            elif event.previous is not None:
                state[key] = event.previous
        prefix = f"{namespace}/" if namespace and rt.namespaced else ""
        return [copy.deepcopy(state[k]) for k in sorted(state) if k.startswith(prefix)]

    def events_since(self, rt: ResourceType, namespace: str | None, rv: int) -> list[Event]:
        """The writes after `rv`, oldest first; `TooOldResourceVersion` when history lost some."""
        if rv < self._compacted_rv:
            raise TooOldResourceVersion(rv, self._compacted_rv)
        return [
            e
            for e in self._history
            if e.rv > rv and e.group == rt.group and e.resource == rt.plural
            and (namespace is None or e.namespace == namespace)
        ]

    # ----- watching ------------------------------------------------------------------------------

    def subscribe(self, rt: ResourceType, namespace: str | None) -> Watcher:
        watcher = Watcher(rt.group, rt.plural, namespace if rt.namespaced else None)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watchers(self) -> None:
        """End every watch (a restart): clients see their streams end and re-watch."""
        for watcher in list(self._watchers):
            self._end(watcher)

    def _end(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        while True:
            try:
                watcher.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                watcher.queue.get_nowait()

    def _record(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            if not watcher.wants(event):
                continue
            try:
                watcher.queue.put_nowait(event)
            except asyncio.QueueFull:
                # kube-apiserver drops a watcher that cannot keep up; the client re-lists.
                log.warning("watch of %s is not keeping up; closing it", event.resource)
                watcher.overflowed = True
                self._end(watcher)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # ----- writing -------------------------------------------------------------------------------

    def create(self, rt: ResourceType, obj: dict[str, Any], *, namespace: str = "", dry_run: bool = False
               ) -> dict[str, Any]:
        """Create `obj` (already checked to be of kind `rt`); `namespace` is the request's."""
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = _meta(obj)
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
            self._admit_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = self._generate_name(rt, meta.get("namespace", ""), str(meta["generateName"]))
            meta["name"] = name
        strategy.validate_name(rt, obj)
        if self.get(rt, meta.get("namespace", ""), name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        for volatile in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(volatile, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self._now())
        if rt.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        strategy.prepare_create(rt, obj, self)
        strategy.validate(rt, obj, None)
        if dry_run:
            return obj
        return self._write(rt, obj, None)

    def update(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        *,
        namespace: str = "",
        subresource: str = "",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Replace an object (PUT semantics). A resourceVersion in `obj` must be the current one."""
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        name = meta.get("name") or ""
        ns = (namespace or meta.get("namespace") or "") if rt.namespaced else ""
        old = self.require(rt, ns, name)
        old_meta = old["metadata"]
        asked_rv = meta.get("resourceVersion")
        if asked_rv not in (None, "") and str(asked_rv) != old_meta["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name, MODIFIED)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(
                rt.plural, rt.group, name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta['uid']}",
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.namespaced:
            meta["namespace"] = ns
        # Fields the server owns: a client cannot change them by sending them back altered.
        for owned in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if owned in old_meta:
                meta[owned] = old_meta[owned]
            else:
                meta.pop(owned, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        new = strategy.prepare_update(rt, old, obj, subresource)
        strategy.validate(rt, new, old)
        if rt.generation and strategy.spec_changed(old, new):
            new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
            strategy.refresh_status(rt, new)
        if _strip_volatile(new) == _strip_volatile(old):
            return old  # kube-apiserver writes nothing (and bumps nothing) for a no-op update
        if dry_run:
            return new
        if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(rt, new)
        return self._write(rt, new, old)

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation: str = "Background",
        grace_period_seconds: int | None = None,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete an object; returns (its last state, whether it is gone already).

        Objects with finalizers only get a deletionTimestamp (they go when the last finalizer is
        removed); a namespace takes its content with it; dependents (ownerReferences) are garbage
        collected unless `propagation` is Orphan. A pod is deleted gracefully unless the grace
        period is 0: watchers see it Terminating (deletionTimestamp set) before it goes, as when
        the kubelet confirms the termination at once.
        """
        ns = namespace if rt.namespaced else ""
        old = self.require(rt, ns, name)
        old_meta = old["metadata"]
        if uid and uid != old_meta["uid"]:
            raise conflict(rt.plural, rt.group, name,
                           f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old_meta['uid']}")
        if resource_version and resource_version != old_meta["resourceVersion"]:
            raise conflict(
                rt.plural, rt.group, name,
                f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                f"ResourceVersion in object meta: {old_meta['resourceVersion']}",
            )
        if rt.kind == "Namespace" and name in IMMORTAL_NAMESPACES:
            raise ApiError(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           details={"name": name, "kind": "namespaces"})
        if dry_run:
            return old, True
        if old_meta.get("finalizers") and rt.kind != "Namespace":
            if old_meta.get("deletionTimestamp"):
                return old, False
            marked = copy.deepcopy(old)
            marked["metadata"]["deletionTimestamp"] = rfc3339(self._now())
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._write(rt, marked, old), False
        if rt.kind == "Namespace":
            return self._terminate_namespace(old), True
        if rt.kind == "Pod" and grace_period_seconds != 0:
            grace = grace_period_seconds if grace_period_seconds is not None else \
                int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            terminating = copy.deepcopy(old)
            terminating["metadata"]["deletionTimestamp"] = rfc3339(self._now())
            terminating["metadata"]["deletionGracePeriodSeconds"] = grace
            old = self._write(rt, terminating, old)
        gone = self._remove(rt, old)
        if propagation != "Orphan":
            self._collect_dependents(old_meta["uid"])
        return gone, True

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj`, or replace the object of that name (for seeding; no concurrency check).

        A `status` in `obj` is then written through the status subresource, so seeds can describe
        states the emulated controllers would not produce (a Succeeded pod, a half-ready Deployment)."""
        rt = catalog.by_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rt is None or not catalog.is_stored(rt):
            raise ValueError(f"cannot store apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}: "
                             "not a resource this API server serves")
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "default") if rt.namespaced else ""
        if self.get(rt, ns, str(meta.get("name", ""))) is None:
            updated = self.create(rt, obj, namespace=ns)
        else:
            replacement = copy.deepcopy(obj)
            replacement["metadata"] = {**copy.deepcopy(meta), "resourceVersion": ""}
            updated = self.update(rt, replacement, namespace=ns)
        if "status" in obj and rt.subresource("status"):
            status_only = copy.deepcopy(updated)
            status_only["status"] = copy.deepcopy(obj["status"])
            status_only["metadata"]["resourceVersion"] = ""
            updated = self.update(rt, status_only, namespace=ns, subresource="status")
        return updated

    # ----- internals -----------------------------------------------------------------------------

    def _write(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        self._bucket(rt)[_key(ns, meta["name"])] = copy.deepcopy(obj)
        self._record(Event(rv, ADDED if old is None else MODIFIED_EVENT, rt.group, rt.plural, ns, meta["name"],
                           copy.deepcopy(obj), old))
        if old is None:
            strategy.after_create(rt, obj, self)
        return copy.deepcopy(obj)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        previous = self._bucket(rt).pop(_key(ns, meta["name"]))
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(Event(int(gone["metadata"]["resourceVersion"]), DELETED, rt.group, rt.plural, ns, meta["name"],
                           copy.deepcopy(gone), previous))
        return gone

    def _admit_namespace(self, namespace: str) -> None:
        ns_type = catalog.lookup("", "v1", "namespaces")
        assert ns_type is not None
        ns = self.get(ns_type, "", namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns.get("status", {}).get("phase") == "Terminating":
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                details={"name": namespace, "kind": "namespaces"},
            )

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        # kube truncates the prefix so that prefix + 5 random characters fit in 63.
        base = prefix[: 63 - 5]
        for _ in range(16):
            candidate = base + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.get(rt, namespace, candidate) is None:
                return candidate
        raise ApiError(
            409, f'{rt.plural} "{prefix}" already exists: could not generate a unique name', reason="AlreadyExists"
        )

    def _terminate_namespace(self, ns_obj: dict[str, Any]) -> dict[str, Any]:
        """What the namespace controller does: mark Terminating, empty it, then remove it.

        Returns the Terminating namespace, which is what kube-apiserver answers a DELETE with."""
        ns_type = catalog.lookup("", "v1", "namespaces")
        assert ns_type is not None
        name = ns_obj["metadata"]["name"]
        if ns_obj.get("status", {}).get("phase") != "Terminating":
            terminating = copy.deepcopy(ns_obj)
            terminating["metadata"]["deletionTimestamp"] = rfc3339(self._now())
            terminating["metadata"]["deletionGracePeriodSeconds"] = 0
            terminating.setdefault("status", {})["phase"] = "Terminating"
            ns_obj = self._write(ns_type, terminating, ns_obj)
        for rt in catalog.RESOURCES:
            if rt.namespaced and catalog.is_stored(rt):
                for obj in self.list(rt, name):
                    self._remove(rt, obj)
        finalized = copy.deepcopy(ns_obj)
        finalized.setdefault("spec", {})["finalizers"] = []
        self._remove(ns_type, finalized)
        return ns_obj

    def _collect_dependents(self, owner_uid: str) -> None:
        """The garbage collector's background propagation: delete what the deleted object owned."""
        for rt in catalog.RESOURCES:
            if not catalog.is_stored(rt):
                continue
            for obj in self.list(rt):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(isinstance(r, dict) and r.get("uid") == owner_uid for r in refs):
                    meta = obj["metadata"]
                    if self.get(rt, meta.get("namespace", ""), meta["name"]) is None:
                        continue
                    self._remove(rt, obj)
                    self._collect_dependents(meta["uid"])
