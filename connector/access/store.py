"""The contract every access-request store keeps, so the API, the proxy and the stream checker need
not know which one the config chose (connector.access.file_store, connector.access.kubernetes_store).

The methods are synchronous and may block briefly (disk, or a write to the Kubernetes API): async
callers run them with `asyncio.to_thread`. `list` and `get` are what every proxied request asks
for, so a store serves them from memory. `update` is the only way to change a request: the store
applies `change` to the request as currently stored and retries it on a newer copy when another
writer got there first, so two approvers racing are both counted and an approval is never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from connector.policy.access import AccessRequest


class AccessStore(Protocol):
    def list(self) -> list[AccessRequest]:
        """Every request, oldest first (a new list)."""
        ...

    def get(self, request_id: str) -> AccessRequest:
        """The request, or AccessRequestError(404)."""
        ...

    def create(self, request: AccessRequest) -> AccessRequest:
        """Store a new request; AccessRequestError(409) if its id exists."""
        ...

    def update(self, request_id: str, change: Callable[[AccessRequest], AccessRequest]) -> AccessRequest:
        """Apply `change` to the stored request atomically; an AccessRequestError from it changes nothing."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the store can answer (the Kubernetes store: its first list is done)."""
        ...

    def same_config(self, config: object) -> bool:
        """Whether this store is what `config` (an AccessStoreConfig) names: a reload then keeps it."""
        ...

    async def start(self) -> None:
        """Begin serving (the Kubernetes store: list and watch); returns at once."""
        ...

    async def close(self) -> None:
        ...


def oldest_first(requests: Iterable[AccessRequest]) -> list[AccessRequest]:
    """The order `list` answers in: creation time, then id (two requests may share an instant)."""
    return sorted(requests, key=lambda r: (r.created_at, r.id))
