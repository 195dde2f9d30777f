"""WATCH: a chunked stream of `{"type": ..., "object": ...}` lines, as kube-apiserver's watch cache sends.

- No `resourceVersion` (or `0`): the current objects first, as ADDED, then every change.
- `resourceVersion=N`: every change after N, replayed from the store's history, then live; when the
  history no longer reaches N the stream carries one ERROR event with a 410 Expired Status.
- `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan` and bookmarks): the current
  objects, then a BOOKMARK annotated `k8s.io/initial-events-end`.
- Selectors apply to both states of a change: an object that starts matching is ADDED, one that
  stops matching is DELETED, as kube-apiserver's cacher reports them.
- `allowWatchBookmarks=true`: a BOOKMARK with the current resourceVersion every bookmark interval.
- `timeoutSeconds` (default 1800) ends the stream; so does a restart or a watcher that cannot keep up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.errors import ApiError, bad_request, expired
from sandbox.apiserver.lists import object_filter
from sandbox.apiserver.negotiation import Negotiated
from sandbox.apiserver.store import ADDED, DELETED, Event, Store, TooOldResourceVersion

DEFAULT_TIMEOUT = 1800.0
_POLL = 0.5  # how often an idle watch checks whether its client went away

Render = Callable[[dict[str, Any], bool], dict[str, Any]]


def _selected_event(
    event: Event, matches: Callable[[dict[str, Any] | None], bool]
) -> tuple[str, dict[str, Any]] | None:
    """The event a watcher with these selectors sees for a write (or None if it sees none)."""
    now_matches = matches(event.object)
    if event.type == ADDED:
        return (ADDED, event.object) if now_matches else None
    if event.type == DELETED:
        return (DELETED, event.object) if matches(event.previous) or now_matches else None
    before = matches(event.previous)
    if before and now_matches:
        return ("MODIFIED", event.object)
    if now_matches:
        return (ADDED, event.object)
    if before:
        return (DELETED, event.object)
    return None


def _timeout(params: Mapping[str, str]) -> float:
    raw = params.get("timeoutSeconds", "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f'timeoutSeconds: Invalid value: "{raw}": must be an integer') from None
    return float(value) if value > 0 else DEFAULT_TIMEOUT


async def serve_watch(
    request: web.Request,
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    params: Mapping[str, str],
    negotiated: Negotiated,
    render: Render | None,
    *,
    bookmark_interval: float,
) -> web.StreamResponse:
    """`render(obj, first)` turns an object into what the client asked for (a Table), or None for JSON."""
    selection = object_filter(rt, params)
    timeout = _timeout(params)
    rv_param = params.get("resourceVersion", "")
    bookmarks = params.get("allowWatchBookmarks", "").lower() == "true"
    initial_events = params.get("sendInitialEvents", "").lower() == "true"
    if initial_events and (params.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
        raise ApiError(422, "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: "
                            "sendInitialEvents is only supported with resourceVersionMatch=NotOlderThan and "
                            "allowWatchBookmarks=true", reason="Invalid")
    if rv_param not in ("", "0"):
        try:
            since = int(rv_param)
        except ValueError:
            raise bad_request(f'resourceVersion: Invalid value: "{rv_param}": must be an integer') from None
    else:
        since = -1

    watcher = store.subscribe(rt, namespace)
    try:
        start_rv = store.resource_version
        backlog: list[tuple[str, dict[str, Any]]] = []
        failure: ApiError | None = None
        if since < 0 or initial_events:
            backlog = [(ADDED, obj) for obj in store.list(rt, namespace) if selection.matches(obj)]
        else:
            try:
                for event in store.events_since(rt, namespace, since):
                    seen = _selected_event(event, selection.matches)
                    if seen:
                        backlog.append(seen)
            except TooOldResourceVersion as exc:
                failure = expired(str(exc))

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        first = True

        async def send(kind: str, obj: dict[str, Any]) -> None:
            nonlocal first
            if render is not None and kind in (ADDED, "MODIFIED", DELETED):
                obj = render(obj, first)
                first = False
            await response.write(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

        def bookmark(annotations: dict[str, str] | None = None) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
            if annotations:
                meta["annotations"] = annotations
            return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

        try:
            if failure is not None:
                await send("ERROR", failure.body())
                await response.write_eof()
                return response
            for kind, obj in backlog:
                await send(kind, obj)
            if initial_events:
                await send("BOOKMARK", bookmark({"k8s.io/initial-events-end": "true"}))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                wait = min(_POLL, deadline - now, max(next_bookmark - now, 0.0) if bookmarks else _POLL)
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await send("BOOKMARK", bookmark())
                        next_bookmark = time.monotonic() + bookmark_interval
                    continue
                if event is None:
                    break  # restart, or this watcher fell behind
                if event.rv <= start_rv:
                    continue
                seen = _selected_event(event, selection.matches)
                if seen:
                    await send(*seen)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        return response
    finally:
        store.unsubscribe(watcher)
