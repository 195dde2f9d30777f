"""Fault injection, for tests of how clients and the connector cope with a misbehaving cluster.

From Python, on a running server (`server.faults`):
- `set_latency(seconds)`: every request waits that long before it is handled;
- `drop_connections(n)`: the next `n` connections are closed right after the TLS handshake,
  before a byte of HTTP is read (what a crashing or overloaded endpoint does);
- `fail_requests(n, status=503)`: the next `n` requests are answered with a 429, 500 or 503
  Status, as kube-apiserver words them (429 and 503 carry `Retry-After`);
- `await restart(down_for=0.0)`: stop listening, drop every connection and watch, and come back on
  the same port with the same objects (an API server rollout).
`reset()` clears latency and pending drops and failures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sandbox.apiserver.errors import ApiError

_FAILURES = {
    429: ApiError(429, "Too many requests, please try again later.", reason="TooManyRequests",
                  details={"retryAfterSeconds": 1}, headers={"Retry-After": "1"}),
    500: ApiError(500, "Internal error occurred: injected fault", reason="InternalError",
                  details={"causes": [{"message": "injected fault"}]}),
    503: ApiError(503, "The server is currently unable to handle the request", reason="ServiceUnavailable",
                  details={"retryAfterSeconds": 1}, headers={"Retry-After": "1"}),
}


@dataclass
class Faults:
    restart_server: Callable[[float], Awaitable[None]]
    latency: float = 0.0
    _drops: int = 0
    _failures: int = 0
    _failure_status: int = 503

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be 0 or more seconds, got {seconds}")
        self.latency = seconds

    def drop_connections(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"the number of connections to drop must be 0 or more, got {count}")
        self._drops = count

    def fail_requests(self, count: int, status: int = 503) -> None:
        if status not in _FAILURES:
            raise ValueError(f"status must be one of {sorted(_FAILURES)}, got {status}")
        if count < 0:
            raise ValueError(f"the number of requests to fail must be 0 or more, got {count}")
        self._failures, self._failure_status = count, status

    def reset(self) -> None:
        self.latency, self._drops, self._failures = 0.0, 0, 0

    async def restart(self, down_for: float = 0.0) -> None:
        await self.restart_server(down_for)

    def take_drop(self) -> bool:
        """Whether to drop the connection being accepted (consumes one pending drop)."""
        if self._drops <= 0:
            return False
        self._drops -= 1
        return True

    def take_failure(self) -> ApiError | None:
        """The error to answer the current request with, if one is pending."""
        if self._failures <= 0:
            return None
        self._failures -= 1
        return _FAILURES[self._failure_status]
