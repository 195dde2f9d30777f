"""Bounds on open long-lived streams (server.limits.max_streams_per_user, max_streams), against the real
connector on 127.0.0.1 with small limits: the stream over a limit gets a 429 Status naming it, and a
slot comes back however its stream ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from connector.proxy.stream_limits import StreamSlots
from tests.support.proxy_harness import ProxyHarness

PODS = "/sockets/prod/api/v1/namespaces/default/pods"
EXEC = "/sockets/prod/api/v1/namespaces/default/pods/web/exec?command=id&stdout=true"


def limited(tmp_path: Path, per_user: int, total: int) -> ProxyHarness:
    return ProxyHarness(
        tmp_path, config={"server": {"limits": {"max_streams_per_user": per_user, "max_streams": total}}}
    )


def slots(h: ProxyHarness) -> StreamSlots:
    assert h.connector is not None and h.connector.ctx is not None
    return h.connector.ctx.streams


async def released(h: ProxyHarness, total: int) -> None:
    """Wait (up to 10 s) until the connector counts `total` open streams."""
    for _ in range(500):
        if slots(h).total == total:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{slots(h).total} streams still counted, expected {total}")


async def open_watch(h: ProxyHarness, user: str) -> aiohttp.ClientResponse:
    """A watch the upstream holds open after its first event (read here, so the stream is surely counted)."""
    resp = await h.session().get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth(user))
    assert resp.status == 200
    await asyncio.wait_for(resp.content.readline(), 10)
    return resp


async def test_streams_over_the_limits_get_a_429_naming_the_limit(tmp_path: Path) -> None:
    async with limited(tmp_path, per_user=2, total=3) as h:
        first, second = await open_watch(h, "alice"), await open_watch(h, "alice")
        status, headers, body = await h.request("GET", f"{PODS}?watch=1")
        assert status == 429
        doc = json.loads(body)
        assert (doc["reason"], doc["code"]) == ("TooManyRequests", 429)
        assert "server.limits.max_streams_per_user" in doc["message"] and "alice" in doc["message"]
        assert "Retry-After" not in headers  # client-go would retry silently instead of telling the user
        event = h.audit_events()[-1]
        assert (event["code"], event["decision"], event["user"]) == (429, "rejected", "alice")
        assert event["reason"] == doc["message"]
        # the limit is on streams only: alice's other requests are served
        assert (await h.request("GET", PODS))[0] == 200

        third = await open_watch(h, "bob")  # bob has his own per-user allowance, up to the total
        status, _, body = await h.request("GET", f"{PODS}/web/log?follow=true", user="bob")
        assert status == 429 and "server.limits.max_streams)" in json.loads(body)["message"]
        assert (slots(h).open_for("alice"), slots(h).open_for("bob"), slots(h).total) == (2, 1, 3)

        first.close()  # the client goes away: the connector's handler is cancelled and gives the slot back
        await released(h, 2)
        fourth = await open_watch(h, "bob")
        for resp in (second, third, fourth):
            resp.close()
        await released(h, 0)


async def test_a_slot_comes_back_however_the_stream_ends(tmp_path: Path) -> None:
    async with limited(tmp_path, per_user=1, total=1) as h:
        # the cluster refuses the upgrade: no stream was opened, the slot is free again
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await h.session().ws_connect(
                h.url + EXEC + "&refuse=1", headers=h.auth("alice"), protocols=("v5.channel.k8s.io",)
            )
        assert refused.value.status == 403
        await released(h, 0)

        # an exec session that ends (the client closes it)
        ws = await h.session().ws_connect(h.url + EXEC, headers=h.auth("alice"), protocols=("v5.channel.k8s.io",))
        assert slots(h).total == 1
        status, _, _ = await h.request("GET", f"{PODS}?watch=1", user="bob")
        assert status == 429  # the total is taken by alice's session
        await ws.close()
        await released(h, 0)

        # a watch the cluster ends
        watch = await open_watch(h, "alice")
        h.control.release.set()
        await asyncio.wait_for(watch.read(), 10)
        await released(h, 0)

        # the cluster cannot be reached at all
        assert h.connector is not None
        await h.upstream.stop()
        assert (await h.request("GET", f"{PODS}?watch=1"))[0] == 503
        await released(h, 0)


@pytest.mark.parametrize("follow", ["follow=yes", "follow=on", "follow=", "follow"])
async def test_logs_followed_as_the_cluster_reads_follow_count_as_streams(tmp_path: Path, follow: str) -> None:
    """As found: `logs?follow=yes|on|` (empty) streamed the log but was not counted as a stream."""
    async with limited(tmp_path, per_user=1, total=4) as h:
        first = await open_watch(h, "alice")
        status, _, body = await h.request("GET", f"{PODS}/web/log?{follow}")
        assert status == 429, body[:300]
        assert "server.limits.max_streams_per_user" in json.loads(body)["message"]
        first.close()
        await released(h, 0)
