"""Retrying AWS calls that were throttled or failed transiently: capped exponential backoff with full
jitter (AWS's recommendation, so that many callers throttled together do not retry together).

The sleep and the random source are parameters so tests can check the delays without waiting them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

T = TypeVar("T")

# The throttling codes botocore's standard retry mode knows, that EKS, EC2 and STS answer with.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "EC2ThrottledException",
        "SlowDown",
    }
)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, a 5xx answer, or a connection that failed: worth another try after a pause."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLING_CODES or status == 429 or status >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


@dataclass(frozen=True)
class Backoff:
    """`attempts` tries in all; before try n+1 a pause of uniform(0, min(cap, base * 2**n)) seconds."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 8.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, retry: int) -> float:
        """The pause before retry number `retry` (0 for the first retry)."""
        return self.random() * min(self.cap, self.base * 2**retry)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await `call()` until it succeeds, fails with a non-retryable error, or attempts run out."""
        for retry in range(self.attempts - 1):
            try:
                return await call()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
            await self.sleep(self.delay(retry))
        return await call()
