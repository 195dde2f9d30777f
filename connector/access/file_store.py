"""The file store for access requests: one JSON file, for a single connector outside any cluster.

Every change is a read-modify-write under an exclusive lock on `PATH.lock`, written to a new file
and renamed over the old one (connector.client.files.replace_file), so two approvers racing — in
threads or in separate processes — are applied one after the other: the second sees the first's
approval, and a crash never leaves half a file. Readers take no lock (the rename is atomic) and
re-parse only when the file changed, because every proxied request asks for the caller's grants.
The methods block briefly on disk: async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from connector.access.store import oldest_first
from connector.client.files import replace_file
from connector.policy.access import AccessRequest, AccessRequestError

_FORMAT = 1
_LOCK_TIMEOUT_SECONDS = 30


class FileStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", timeout=_LOCK_TIMEOUT_SECONDS)
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: dict[str, AccessRequest] = {}
        self._ordered: list[AccessRequest] = []  # _cache's values, oldest first: sorted once per change
        self._cache_guard = threading.Lock()

    # The file needs no connection: ready from the start, nothing to start or close.
    ready = True

    def same_config(self, config: object) -> bool:
        return getattr(config, "file", None) is not None and Path(config.file) == self.path  # type: ignore[attr-defined]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def list(self) -> list[AccessRequest]:
        """Every request, oldest first (a new list; the store's own stays as read)."""
        with self._cache_guard:
            self._read_locked()
            return list(self._ordered)

    def get(self, request_id: str) -> AccessRequest:
        found = self._read().get(request_id)
        if found is None:
            raise AccessRequestError(404, f"no access request {request_id}")
        return found

    def create(self, request: AccessRequest) -> AccessRequest:
        def add(requests: dict[str, AccessRequest]) -> AccessRequest:
            if request.id in requests:
                raise AccessRequestError(409, f"access request {request.id} already exists")
            requests[request.id] = request
            return request

        return self._change(add)

    def update(self, request_id: str, change: Callable[[AccessRequest], AccessRequest]) -> AccessRequest:
        """Apply `change` to the request as currently stored and save the result, atomically with
        respect to every other writer; an AccessRequestError from `change` leaves the file alone."""

        def apply(requests: dict[str, AccessRequest]) -> AccessRequest:
            current = requests.get(request_id)
            if current is None:
                raise AccessRequestError(404, f"no access request {request_id}")
            requests[request_id] = changed = change(current)
            return changed

        return self._change(apply)

    def _change(self, change: Callable[[dict[str, AccessRequest]], AccessRequest]) -> AccessRequest:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            requests = dict(self._read())
            result = change(requests)
            document = {"format": _FORMAT, "requests": [r.to_json() for r in requests.values()]}
            replace_file(self.path, json.dumps(document, indent=1, sort_keys=True) + "\n", mode=0o600)
            return result

    def _read(self) -> dict[str, AccessRequest]:
        with self._cache_guard:
            return self._read_locked()

    def _read_locked(self) -> dict[str, AccessRequest]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cache_key, self._cache, self._ordered = None, {}, []
            return self._cache
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._cache_key:
            return self._cache
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            requests = {r.id: r for r in map(AccessRequest.from_json, document["requests"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"access request file {self.path} is unreadable: {exc}") from None
        self._cache_key, self._cache = key, requests
        self._ordered = oldest_first(requests.values())
        return requests
