"""Connections bounded before their request is known: the probes of a client holding them for free.

Real sockets on 127.0.0.1 against a running connector with short limits, so each probe ends in a
second or two; every wait is bounded, and a probe that is never closed fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiohttp.web_protocol import RequestHandler
from prometheus_client import REGISTRY

from connector.config import ConfigError, load_config
from tests.support.proxy_harness import ProxyHarness

HANDSHAKE, HEADERS, IDLE = 0.5, 1.0, 1.0
# Longer than every deadline above: a quiet stream that outlives it was not cut by them.
QUIET = 2.5
# A probe the connector should close within its limit has this long before the test fails.
CLOSE_WITHIN = 10.0
# The crowd: each holds a TLS connection and an unfinished head.
SLOWLORIS = 1000
WATCH = "/sockets/prod/api/v1/namespaces/default/pods?watch=1"


def limits(**extra: float) -> dict[str, dict[str, dict[str, float]]]:
    return {
        "server": {
            "limits": {
                "tls_handshake_seconds": HANDSHAKE,
                "header_read_seconds": HEADERS,
                "keepalive_idle_seconds": IDLE,
                **extra,
            }
        }
    }


@pytest.fixture
async def h(tmp_path: Path):
    async with ProxyHarness(tmp_path, config=limits()) as harness:
        yield harness


def timeouts(phase: str) -> float:
    return REGISTRY.get_sample_value("connector_connection_timeouts_total", {"phase": phase}) or 0.0


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("connector_connections_refused_total", {"reason": reason}) or 0.0


def port(h: ProxyHarness) -> int:
    return int(h.url.rsplit(":", 1)[1])


async def tls_connection(
    h: ProxyHarness, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port(h), ssl=h.ssl_context(), local_addr=(source, 0)), CLOSE_WITHIN
    )


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    try:
        return await asyncio.wait_for(reader.read(), CLOSE_WITHIN)
    except (ConnectionResetError, ssl.SSLError):
        return b""


@pytest.mark.parametrize(
    ("tls", "phase"),
    [(False, "handshake"), (True, "headers")],
    ids=["tcp-that-never-starts-tls", "tls-that-sends-nothing"],
)
async def test_a_connection_that_sends_nothing_is_closed_after_its_limit(
    h: ProxyHarness, tls: bool, phase: str
) -> None:
    before = timeouts(phase)
    reader, writer = await (tls_connection(h) if tls else asyncio.open_connection("127.0.0.1", port(h)))
    assert await closed_by_server(reader) == b""
    writer.close()
    assert timeouts(phase) == before + 1


async def test_a_slowloris_head_is_closed_however_steadily_it_trickles(h: ProxyHarness) -> None:
    before = timeouts("headers")
    reader, writer = await tls_connection(h)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = asyncio.ensure_future(closed_by_server(reader))
    # One header line every fifth of the header limit: each byte is in time, the head never is.
    for n in range(int(CLOSE_WITHIN / (HEADERS / 5))):
        if closed.done():
            break
        writer.write(f"X-Trickle-{n}: 1\r\n".encode())
        await asyncio.sleep(HEADERS / 5)
    assert await closed == b""
    writer.close()
    assert timeouts("headers") == before + 1


async def test_a_keepalive_connection_left_idle_is_closed_after_the_idle_limit(h: ProxyHarness) -> None:
    before = timeouts("idle")
    reader, writer = await tls_connection(h)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
    writer.close()
    assert timeouts("idle") == before + 1


async def test_a_head_over_its_byte_budget_is_431_while_it_is_still_being_read(tmp_path: Path) -> None:
    config = limits(max_header_bytes=8192, max_request_line_bytes=1024, header_read_seconds=60)
    async with ProxyHarness(tmp_path, config=config) as h:
        reader, writer = await tls_connection(h)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # 1 KB lines, each far within aiohttp's line limit, and never the blank line that ends the head.
        for n in range(40):
            writer.write(f"X-Filler-{n}: {'a' * 1000}\r\n".encode())
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.split(b" ", 2)[1] == b"431", answer[:100]
        assert b"Request header fields too large" in answer
        event = h.audit_events()[-1]
        assert (event["decision"], event["code"], event["method"]) == ("rejected", 431, "GET")
        assert event["request_id"].encode() in answer


async def test_connections_over_the_per_ip_and_total_caps_are_refused_and_recover(tmp_path: Path) -> None:
    config = limits(max_connections=4, max_connections_per_ip=2, header_read_seconds=60)
    async with ProxyHarness(tmp_path, config=config) as h:
        per_ip, total = refused("max_connections_per_ip"), refused("max_connections")
        first = [await tls_connection(h, "127.0.0.1") for _ in range(2)]
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await tls_connection(h, "127.0.0.1")
        assert refused("max_connections_per_ip") == per_ip + 1
        others = [await tls_connection(h, "127.0.0.2") for _ in range(2)]
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await tls_connection(h, "127.0.0.3")
        assert refused("max_connections") == total + 1
        assert REGISTRY.get_sample_value("connector_connections_open") == 4

        _, writer = first.pop()
        writer.close()
        for _ in range(100):  # the slot is given back once the connector sees the close
            if REGISTRY.get_sample_value("connector_connections_open") == 3:
                break
            await asyncio.sleep(0.05)
        reader, writer = await tls_connection(h, "127.0.0.1")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 200")
        for _, w in [*first, *others, (reader, writer)]:
            w.close()


async def test_a_slowloris_crowd_leaves_normal_requests_answered(tmp_path: Path) -> None:
    # The handshake deadline is not what this probes: 1,000 handshakes on a loaded machine, with the
    # client in the same event loop, may each take longer than the short one the other probes use.
    config = limits(
        tls_handshake_seconds=30,
        header_read_seconds=60,
        max_connections_per_ip=SLOWLORIS + 10,
        max_connections=SLOWLORIS + 10,
    )
    async with ProxyHarness(tmp_path, config=config) as h:
        crowd = [await tls_connection(h) for _ in range(SLOWLORIS)]
        for n, (_, writer) in enumerate(crowd):
            writer.write(f"GET /healthz HTTP/1.1\r\nX-Slow-{n}: 1\r\n".encode())
        status, _, body = await asyncio.wait_for(h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods"), 10)
        assert status == 200 and body
        for _, writer in crowd:
            writer.close()


async def test_a_quiet_watch_outlives_every_connection_deadline(h: ProxyHarness) -> None:
    async with h.session().get(h.url + WATCH, headers=h.auth("alice")) as resp:
        assert resp.status == 200
        assert b'"ADDED"' in await asyncio.wait_for(resp.content.readline(), CLOSE_WITHIN)
        await asyncio.sleep(QUIET)
        h.control.release.set()
        assert b'"MODIFIED"' in await asyncio.wait_for(resp.content.readline(), CLOSE_WITHIN)


async def test_an_idle_interactive_exec_outlives_every_connection_deadline(h: ProxyHarness) -> None:
    exec_path = "/sockets/prod/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true&tty=true"
    ws = await h.session().ws_connect(h.url + exec_path, headers=h.auth("alice"), protocols=("v5.channel.k8s.io",))
    await asyncio.sleep(QUIET)
    await ws.send_bytes(b"\x00still here\n")
    assert (await asyncio.wait_for(ws.receive(), CLOSE_WITHIN)).data == b"\x00still here\n"
    await ws.close()


async def test_a_quiet_port_forward_outlives_every_connection_deadline(h: ProxyHarness) -> None:
    reader, writer = await tls_connection(h)
    writer.write(
        b"POST /sockets/prod/api/v1/namespaces/default/pods/web/portforward HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
        b"Content-Length: 0\r\nAuthorization: Bearer " + h.tokens["alice"].encode() + b"\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN)
    assert head.startswith(b"HTTP/1.1 101")
    await asyncio.sleep(QUIET)
    writer.write(b"tunnel bytes")
    assert await asyncio.wait_for(reader.readexactly(len(b"tunnel bytes")), CLOSE_WITHIN) == b"tunnel bytes"
    writer.close()


async def test_connection_limits_are_validated_with_the_key_named(tmp_path: Path) -> None:
    h = ProxyHarness(tmp_path, config=limits(max_connections=10, max_connections_per_ip=20))
    h.write_config(h.config())
    with pytest.raises(ConfigError) as caught:
        load_config(h.config_path)
    assert any("max_connections_per_ip (20) is over max_connections (10)" in line for line in caught.value.errors)


def test_aiohttp_still_has_the_internals_the_bounds_use() -> None:
    """The head budget answers through aiohttp's own parser-error path; fail loudly if it moves."""
    assert {"_messages", "_request_count", "_waiter", "_close"} <= set(RequestHandler.__slots__)
