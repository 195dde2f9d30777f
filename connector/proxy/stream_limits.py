"""Bounds on concurrent long-lived streams (watch, `logs -f`, exec, attach, port-forward): per user and in total.

Each open stream holds a client connection, a cluster connection and relay buffers for as long as it
lasts, so without a bound one user, or one runaway script, could take the connector from everyone.
The counts belong to the running connector, not to a config: limits are read at each request, so a
reload that lowers them applies to the streams opened from then on and never cuts open ones.
"""

from __future__ import annotations


class StreamLimitExceeded(Exception):
    """Opening one more stream would pass a limit; the message names the limit and its config key."""


class StreamSlots:
    """Open streams counted by user. Used from the event loop only, so plain counters suffice."""

    def __init__(self) -> None:
        self._by_user: dict[str, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def open_for(self, user: str) -> int:
        return self._by_user.get(user, 0)

    def acquire(self, user: str, *, per_user: int, total: int) -> None:
        """Count one more stream for `user`, or raise StreamLimitExceeded (and count nothing).

        Every successful acquire must be paired with one `release(user)`, in a `finally`.
        """
        held = self._by_user.get(user, 0)
        if held >= per_user:
            raise StreamLimitExceeded(
                f"{user} has reached the limit of {per_user} open streams per user (watch, logs -f, exec, "
                "attach, port-forward; server.limits.max_streams_per_user); end one and retry"
            )
        if self._total >= total:
            raise StreamLimitExceeded(
                f"the connector has reached its limit of {total} open streams (server.limits.max_streams); retry later"
            )
        self._by_user[user] = held + 1
        self._total += 1

    async def claim(self, user: str, *, per_user: int, total: int) -> None:
        """`acquire` as the handler calls it (a worker's claim asks its supervisor, see connector.proxy.worker)."""
        self.acquire(user, per_user=per_user, total=total)

    def release(self, user: str) -> None:
        held = self._by_user.get(user, 0)
        if held <= 0:
            raise RuntimeError(f"stream slot released for {user!r}, who holds none")
        if held == 1:
            del self._by_user[user]  # the map holds only users with open streams, so it stays bounded
        else:
            self._by_user[user] = held - 1
        self._total -= 1
