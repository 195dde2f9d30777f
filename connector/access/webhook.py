"""Notify a webhook of every access request transition: signed JSON POSTs, retried, never in the way.

Approvers want to hear of a request without watching `access list`, and security teams want the
story in their own tools; a webhook (`access_requests_webhook: {url, secret}`) serves both. What is
sent, one POST per transition (`requested`, `approved`, `denied`, `revoked`, `expired`):

    {"event": "access_request.approved", "id": "ar-...:approved", "at": "...", "actor": "alice",
     "reason": "...", "request": {<the request as GET /v1/access-requests/{id} answers it>}}

signed like Stripe's webhooks: `X-Connector-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>." + the exact body, keyed with the secret>`. `X-Connector-Delivery` is the event's id: the
same for every retry and on every replica, so a receiver drops what it has already seen.

A caller never waits for the webhook: `notify` only queues (bounded; when full the event is logged
and counted in `connector_access_webhook_events_total{outcome="dropped"}`), and one background
task delivers in order, each attempt with a deadline, retrying a failure (no answer, or not 2xx)
with exponential backoff for a bounded number of attempts before giving it up (logged, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from connector import metrics
from connector.access.webhook_config import AccessRequestsWebhookConfig
from connector.policy.access import AccessRequest
from connector.secrets import resolve_secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Connector-Signature"
DELIVERY_HEADER = "X-Connector-Delivery"
EVENT_HEADER = "X-Connector-Event"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Connector-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance_seconds: float = 300) -> bool:
    """What a receiver does: the signature matches the exact body, and its timestamp is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={fields.get('v1', '')}")


def transition_event(event: str, request: AccessRequest, now: dt.datetime, actor: str, reason: str) -> dict[str, Any]:
    """The JSON of one transition; `event` is the state the request entered (or `requested`)."""
    return {
        "event": f"access_request.{event}",
        "id": f"{request.id}:{event}",
        "at": now.isoformat(),
        "actor": actor,
        "reason": reason,
        "request": request.view(now),
    }


@dataclass(frozen=True)
class Retry:
    """How deliveries are retried: `attempts` in all, waiting `first_backoff_seconds`, doubling up to the max."""

    attempts: int = 6
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    attempt_timeout_seconds: float = 10.0

    def backoff(self, failed_attempts: int) -> float:
        return min(self.max_backoff_seconds, self.first_backoff_seconds * 2 ** (failed_attempts - 1))


QUEUE_SIZE = 1000


class WebhookNotifier:
    """Queues transition events and POSTs them to the webhook from one background task."""

    def __init__(self, url: str, secret: bytes, *, retry: Retry = Retry(), queue_size: int = QUEUE_SIZE) -> None:
        self.url = url
        self._secret = secret
        self._retry = retry
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, cfg: AccessRequestsWebhookConfig) -> WebhookNotifier:
        """Raises connector.secrets.SecretError when the secret reference cannot be resolved."""
        return cls(cfg.url, resolve_secret(cfg.secret.get_secret_value()).encode())

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver_all(), name="access-requests-webhook")

    def notify(self, event: Mapping[str, Any]) -> None:
        """Queue `event` for delivery; never waits. A full queue drops it, logged and counted."""
        try:
            self._queue.put_nowait(dict(event))
        except asyncio.QueueFull:
            log.error("access requests webhook: queue full (%d events), dropped %s", self._queue.maxsize, event["id"])
            metrics.ACCESS_WEBHOOK_EVENTS.labels("dropped").inc()
            return
        metrics.ACCESS_WEBHOOK_EVENTS.labels("queued").inc()

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Give queued events `drain_seconds` to go out, then stop; what is left is logged as lost."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if not self._queue.empty():
            log.error("access requests webhook: %d event(s) not delivered at shutdown", self._queue.qsize())

    async def _deliver_all(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._retry.attempt_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                event = await self._queue.get()
                try:
                    outcome = await self._deliver(session, event)
                except Exception:  # a bug must cost this event, not every later one
                    log.exception("access requests webhook: delivering %s failed", event.get("id"))
                    outcome = "failed"
                finally:
                    self._queue.task_done()
                metrics.ACCESS_WEBHOOK_EVENTS.labels(outcome).inc()

    async def _deliver(self, session: aiohttp.ClientSession, event: dict[str, Any]) -> str:
        body = json.dumps(event, separators=(",", ":")).encode()
        attempt = 0
        while True:
            attempt += 1
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),  # fresh: a retry is recent too
                DELIVERY_HEADER: event["id"],
                EVENT_HEADER: event["event"],
            }
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        return "delivered"
                    failure = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = str(exc) or type(exc).__name__
            metrics.ACCESS_WEBHOOK_FAILED_ATTEMPTS.inc()
            if attempt == self._retry.attempts:
                log.error(
                    "access requests webhook: gave up on %s after %d attempts (last: %s)", event["id"], attempt, failure
                )
                return "failed"
            wait = self._retry.backoff(attempt)
            log.warning("access requests webhook: %s attempt %d failed (%s); retrying in %gs", event["id"], attempt,
                        failure, wait)  # fmt: skip
            await asyncio.sleep(wait)
