"""The access requests webhook against a real aiohttp receiver on 127.0.0.1 that checks every
signature: events for each transition, retries with backoff after failures, a bound on attempts and
on the queue, and a receiver that never answers while the API stays responsive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from connector.access.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, Retry, WebhookNotifier, verify
from connector.config import ConfigError
from tests.integration.test_access_request_api import ACCESS_REQUESTS, POLICIES, call
from tests.support.proxy_harness import ProxyHarness

SECRET = "hook-secret-4d2f"
API = "/v1/access-requests"
WAIT_SECONDS = 30  # a bound so that a broken connector fails the test instead of hanging it


@dataclass
class Receiver:
    """Answers 500 to the first `failures` POSTs, then 204; or holds every POST open when `hang`."""

    failures: int = 0
    hang: bool = False
    url: str = ""
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (delivery id, body)
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET.encode(), request.headers.get(SIGNATURE_HEADER, ""), body, time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.posts.append((request.headers[DELIVERY_HEADER], json.loads(body)))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        if len(self.posts) <= self.failures:
            return web.Response(status=500)
        return web.Response(status=204)

    async def wait_for(self, predicate: Any) -> None:
        async def until() -> None:
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), WAIT_SECONDS)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


def webhook_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("connector_access_webhook_events_total", {"outcome": outcome}) or 0.0


EVENT = {"event": "access_request.requested", "id": "ar-000000000001:requested", "request": {"id": "ar-000000000001"}}


@contextlib.asynccontextmanager
async def notifying(receiver: Receiver, **options: Any) -> AsyncIterator[WebhookNotifier]:
    """A started notifier for `receiver`, closed (its queue drained) at the end."""
    notifier = WebhookNotifier(receiver.url, SECRET.encode(), **options)
    notifier.start()
    try:
        yield notifier
    finally:
        await notifier.close()


async def test_failures_are_retried_with_the_same_delivery_id_until_delivered() -> None:
    delivered = webhook_count("delivered")
    async with receiving(Receiver(failures=2)) as receiver:
        async with notifying(receiver, retry=Retry(attempts=4, first_backoff_seconds=0.05)) as notifier:
            notifier.notify(EVENT)
            await receiver.wait_for(lambda: len(receiver.posts) == 3)
    assert receiver.bad_signatures == 0
    assert [d for d, _ in receiver.posts] == ["ar-000000000001:requested"] * 3
    assert all(body == EVENT for _, body in receiver.posts)
    assert webhook_count("delivered") == delivered + 1


async def test_attempts_are_bounded() -> None:
    failed = webhook_count("failed")
    async with receiving(Receiver(failures=100)) as receiver:
        async with notifying(receiver, retry=Retry(attempts=3, first_backoff_seconds=0.01)) as notifier:
            notifier.notify(EVENT)
            notifier.notify({**EVENT, "id": "second"})
            await receiver.wait_for(lambda: len(receiver.posts) == 6)
    assert [d for d, _ in receiver.posts] == ["ar-000000000001:requested"] * 3 + ["second"] * 3
    assert webhook_count("failed") == failed + 2


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    dropped = webhook_count("dropped")
    async with receiving(Receiver(hang=True)) as receiver:
        async with notifying(receiver, queue_size=2) as notifier:
            notifier.notify({**EVENT, "id": "held"})
            await receiver.wait_for(lambda: len(receiver.posts) == 1)  # off the queue, its POST held open
            for n in range(5):
                notifier.notify({**EVENT, "id": f"queued-{n}"})
            assert webhook_count("dropped") == dropped + 3
            receiver.release.set()
            await receiver.wait_for(lambda: len(receiver.posts) == 3)
    assert [d for d, _ in receiver.posts] == ["held", "queued-0", "queued-1"]


@contextlib.asynccontextmanager
async def connector_with_webhook(tmp_path: Path, receiver: Receiver) -> AsyncIterator[ProxyHarness]:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    config = {
        "access_requests": ACCESS_REQUESTS,
        "access_store": {"file": str(tmp_path / "access-requests.json")},
        "access_requests_webhook": {"url": receiver.url, "secret": f"file:{secret_file}"},
    }
    async with ProxyHarness(tmp_path, policies=POLICIES, config=config) as harness:
        yield harness


async def file_and_approve(h: ProxyHarness, duration: str) -> str:
    status, filed = await call(
        h, "POST", API, "alice", {"name": "prod-break-glass", "reason": "INC-1", "duration": duration}
    )
    assert status == 201, filed
    for approver in ("bob", "carol"):
        status, body = await call(h, "POST", f"{API}/{filed['id']}/approve", approver, {"reason": "ok"})
        assert status == 200, body
    return filed["id"]


async def test_every_transition_is_posted_once_signed(tmp_path: Path) -> None:
    async with receiving(Receiver()) as receiver, connector_with_webhook(tmp_path, receiver) as h:
        revoked = await file_and_approve(h, "1h")
        status, body = await call(h, "POST", f"{API}/{revoked}/revoke", "alice", {"reason": "done"})
        assert status == 200, body
        status, denied = await call(
            h, "POST", API, "alice", {"name": "prod-break-glass", "reason": "x", "duration": "1h"}
        )
        assert status == 201, denied
        status, body = await call(h, "POST", f"{API}/{denied['id']}/deny", "bob", {"reason": "use the runbook"})
        assert status == 200, body
        expired = await file_and_approve(h, "2s")
        await receiver.wait_for(lambda: f"{expired}:expired" in [d for d, _ in receiver.posts])
    assert receiver.bad_signatures == 0
    by_request: dict[str, list[str]] = {}
    for delivery, body in receiver.posts:
        assert delivery == f"{body['request']['id']}:{body['event'].removeprefix('access_request.')}"
        by_request.setdefault(body["request"]["id"], []).append(body["event"].removeprefix("access_request."))
    # bob's approval is one of two required: no transition, so no event of its own
    assert by_request == {
        revoked: ["requested", "approved", "revoked"],
        denied["id"]: ["requested", "denied"],
        expired: ["requested", "approved", "expired"],
    }
    approved = next(b for d, b in receiver.posts if d == f"{revoked}:approved")
    assert approved["actor"] == "carol" and approved["request"]["state"] == "approved"
    assert [a["user"] for a in approved["request"]["approvals"]] == ["bob", "carol"]
    denial = next(b for d, b in receiver.posts if d == f"{denied['id']}:denied")
    assert denial["actor"] == "bob" and denial["reason"] == "use the runbook"


async def test_a_hanging_webhook_never_holds_up_the_api(tmp_path: Path) -> None:
    async with receiving(Receiver(hang=True)) as receiver, connector_with_webhook(tmp_path, receiver) as h:
        first = await file_and_approve(h, "1h")
        await receiver.wait_for(lambda: len(receiver.posts) == 1)
        # The webhook holds its first POST open; every API call below still answers.
        for _ in range(3):
            await asyncio.wait_for(file_and_approve(h, "1h"), WAIT_SECONDS)
        status, body = await asyncio.wait_for(call(h, "GET", API, "alice"), WAIT_SECONDS)
        assert status == 200 and len(body["requests"]) == 4
        assert [d for d, _ in receiver.posts] == [f"{first}:requested"] and not receiver.release.is_set()
        receiver.release.set()  # then every event still goes out, in order
        await receiver.wait_for(lambda: len(receiver.posts) == 4 * 2)
        assert receiver.posts[1][0] == f"{first}:approved"


async def test_an_unreadable_secret_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    config = {
        "access_requests": ACCESS_REQUESTS,
        "access_store": {"file": str(tmp_path / "access-requests.json")},
        "access_requests_webhook": {"url": "http://127.0.0.1:9/hook", "secret": f"file:{tmp_path / 'missing'}"},
    }
    with pytest.raises(ConfigError) as caught:
        async with ProxyHarness(tmp_path, policies=POLICIES, config=config):
            pass
    (line,) = caught.value.errors
    assert "access_requests_webhook.secret: cannot read file:" in line and "file not found" in line


async def test_a_reload_moves_events_to_the_new_webhook(tmp_path: Path) -> None:
    async with receiving(Receiver()) as old, receiving(Receiver()) as new, connector_with_webhook(tmp_path, old) as h:
        first = await file_and_approve(h, "1h")
        await old.wait_for(lambda: len(old.posts) == 2)
        config = h.config()
        config["access_requests_webhook"]["url"] = new.url
        h.write_config(config)
        assert await h.connector.reload("test")
        second = await file_and_approve(h, "1h")
        await new.wait_for(lambda: len(new.posts) == 2)
    assert [d for d, _ in old.posts] == [f"{first}:requested", f"{first}:approved"]
    assert [d for d, _ in new.posts] == [f"{second}:requested", f"{second}:approved"]
