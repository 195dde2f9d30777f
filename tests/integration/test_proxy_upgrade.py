"""Exec/attach/port-forward upgrades through the connector: websocket and SPDY/3.1 relays, refusals, taps."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from connector.audit.recording import RecordingSummary
from tests.support.proxy_harness import ProxyHarness

EXEC = (
    "/sockets/prod/api/v1/namespaces/default/pods/web/exec"
    "?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true"
)


@pytest.fixture
async def h(tmp_path: Path):
    async with ProxyHarness(tmp_path) as harness:
        yield harness


async def ws_exec(h: ProxyHarness, user: str = "alice", path: str = EXEC, **kwargs) -> aiohttp.ClientWebSocketResponse:
    kwargs.setdefault("headers", h.auth(user))
    kwargs.setdefault("protocols", ("v5.channel.k8s.io", "v4.channel.k8s.io"))
    return await h.session().ws_connect(h.url + path, **kwargs)


async def spdy_exec(
    h: ProxyHarness, query: str = "command=ls"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    port = int(h.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=h.ssl_context())
    writer.write(
        f"POST /sockets/prod/api/v1/namespaces/default/pods/web/exec?{query} HTTP/1.1\r\nHost: x\r\n"
        f"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        f"X-Stream-Protocol-Version: channel.k8s.io\r\nContent-Length: 0\r\n"
        f"Authorization: Bearer {h.tokens['alice']}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


def sessions_started(kind: str) -> float:
    return REGISTRY.get_sample_value("connector_sessions_total", {"socket": "prod", "kind": kind}) or 0.0


async def test_websocket_exec_is_relayed_byte_for_byte(h: ProxyHarness) -> None:
    before = sessions_started("exec")
    ws = await ws_exec(h)
    assert ws.protocol == "v5.channel.k8s.io"
    await ws.send_bytes(b"\x00echo hi\n")
    assert (await asyncio.wait_for(ws.receive(), 10)).data == b"\x00echo hi\n"
    await ws.send_bytes(b"\x04" + b'{"Width":80,"Height":24}')
    assert (await asyncio.wait_for(ws.receive(), 10)).data.startswith(b"\x04")
    await ws.close()
    await asyncio.wait_for(h.control.stream_closed.wait(), 10)
    started, complete = [e for e in await h.settled_audit() if e["stream"] == "exec"]
    assert (started["stage"], complete["stage"]) == ("ResponseStarted", "ResponseComplete")
    assert complete["code"] == 101 and complete["session_protocol"] == "v5.channel.k8s.io"
    assert complete["bytes_in"] > 0 and complete["bytes_out"] > 0
    assert (complete["request"]["verb"], complete["request"]["subresource"]) == ("create", "exec")
    assert sessions_started("exec") == before + 1
    seen = h.upstream.requests[-1]
    assert seen.path == EXEC.removeprefix("/sockets/prod") and seen.headers["Upgrade"] == "websocket"


async def test_spdy_exec_is_relayed_after_the_clusters_101(h: ProxyHarness) -> None:
    reader, writer, head = await spdy_exec(h)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Upgrade: SPDY/3.1" in head and b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    frame = bytes(range(256)) * 64  # arbitrary binary: the relay never looks at it
    writer.write(frame)
    echoed = await asyncio.wait_for(reader.readexactly(len(frame)), 10)
    assert echoed == frame
    writer.close()
    await asyncio.wait_for(h.control.stream_closed.wait(), 10)
    complete = (await h.settled_audit())[-1]
    assert complete["stage"] == "ResponseComplete" and complete["session_protocol"] == "v4.channel.k8s.io"
    assert complete["bytes_in"] == complete["bytes_out"] == len(frame)
    assert h.upstream.requests[-1].headers.getall("X-Stream-Protocol-Version") == [
        "v4.channel.k8s.io",
        "channel.k8s.io",
    ]


@pytest.mark.parametrize("protocol", ["websocket", "spdy"])
async def test_upgrade_the_cluster_refuses_is_a_plain_response_and_the_connection_closes(
    h: ProxyHarness, protocol: str
) -> None:
    if protocol == "spdy":
        reader, writer, head = await spdy_exec(h, "command=ls&refuse=1")
        rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the connector closed the connection
        writer.close()
    else:
        port = int(h.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=h.ssl_context())
        writer.write(
            f"GET /sockets/prod/api/v1/namespaces/default/pods/web/exec?command=ls&refuse=1 HTTP/1.1\r\nHost: x\r\n"
            f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
            f"Authorization: Bearer {h.tokens['alice']}\r\n\r\n".encode()
        )
        data = await asyncio.wait_for(reader.read(), 10)
        head, _, rest = data.partition(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"forbidden by the cluster" in rest
    event = h.audit_events()[-1]
    assert event["code"] == 403 and event["upstream_status"] == 403 and event["decision"] == "allow"


async def test_exec_denied_by_policy_never_reaches_the_cluster(h: ProxyHarness) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await ws_exec(h, user="carol")
    assert exc.value.status == 403
    other_ns = EXEC.replace("/default/", "/kube-system/")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await ws_exec(h, path=other_ns)
    assert h.upstream.requests == []


async def test_bearer_token_in_websocket_subprotocol_is_used_and_not_forwarded(h: ProxyHarness) -> None:
    token = base64.urlsafe_b64encode(h.tokens["alice"].encode()).decode().rstrip("=")
    ws = await ws_exec(h, headers={}, protocols=(f"base64url.bearer.authorization.k8s.io.{token}", "v5.channel.k8s.io"))
    await ws.close()
    sent = h.upstream.requests[-1].headers["Sec-WebSocket-Protocol"]
    assert sent == "v5.channel.k8s.io"
    assert h.audit_events()[0]["user"] == "alice"


class RecordingTap:
    def __init__(self, meta):
        self.meta = meta
        self.client = bytearray()
        self.upstream = bytearray()
        self.closed = False
        self.recording = "memory://test"

    def client_bytes(self, data: bytes) -> None:
        self.client += data

    def upstream_bytes(self, data: bytes) -> None:
        self.upstream += data

    async def close(self) -> RecordingSummary:
        self.closed = True
        return RecordingSummary(
            recording=self.recording, exit_code=None, exit_message="", bytes_from_client=len(self.client),
            bytes_from_upstream=len(self.upstream), truncated=False,
        )


async def test_session_tap_sees_both_directions_and_names_the_recording(h: ProxyHarness) -> None:
    taps: list[RecordingTap] = []
    assert h.connector is not None and h.connector.ctx is not None
    h.connector.ctx.tap_factory = lambda meta: taps.append(RecordingTap(meta)) or taps[-1]
    reader, writer, _ = await spdy_exec(h, "command=sh&command=-c&command=date&stdin=1&tty=false&container=app")
    writer.write(b"stdin-bytes")
    assert await asyncio.wait_for(reader.readexactly(11), 10) == b"stdin-bytes"
    writer.close()
    await asyncio.wait_for(h.control.stream_closed.wait(), 10)
    events = await h.settled_audit()
    [tap] = taps
    assert tap.closed and bytes(tap.client) == bytes(tap.upstream) == b"stdin-bytes"
    meta = tap.meta
    assert (meta.user, meta.socket, meta.namespace, meta.pod, meta.container) == (
        "alice",
        "prod",
        "default",
        "web",
        "app",
    )
    assert (meta.command, meta.stdin, meta.tty, meta.subresource) == (("sh", "-c", "date"), True, False, "exec")
    assert meta.protocol == "v4.channel.k8s.io" and meta.session_id == events[-1]["request_id"]
    assert events[-1]["recording"] == "memory://test"


async def test_tap_that_cannot_start_refuses_the_session(h: ProxyHarness) -> None:
    def broken(meta):
        raise OSError("disk full")

    assert h.connector is not None and h.connector.ctx is not None
    h.connector.ctx.tap_factory = broken
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await ws_exec(h)
    assert exc.value.status == 503
    assert "disk full" in h.audit_events()[-1]["error"]


async def test_tap_failing_mid_session_leaves_the_session_running(h: ProxyHarness) -> None:
    class Flaky(RecordingTap):
        def upstream_bytes(self, data: bytes) -> None:
            raise ValueError("cannot decode")

    assert h.connector is not None and h.connector.ctx is not None
    h.connector.ctx.tap_factory = Flaky
    ws = await ws_exec(h)
    for payload in (b"\x00one", b"\x00two"):
        await ws.send_bytes(payload)
        assert (await asyncio.wait_for(ws.receive(), 10)).data == payload
    await ws.close()
    await asyncio.wait_for(h.control.stream_closed.wait(), 10)
    assert "cannot decode" in (await h.settled_audit())[-1]["error"]


async def test_real_recorder_writes_a_recording(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path, config={"recordings": {"dir": str(tmp_path / "rec")}}) as h:
        ws = await ws_exec(h)
        await ws.send_bytes(b"\x00hello\n")
        await asyncio.wait_for(ws.receive(), 10)
        await ws.close()
        await asyncio.wait_for(h.control.stream_closed.wait(), 10)
        recording = (await h.settled_audit())[-1]["recording"]
        files = [p for p in (tmp_path / "rec").rglob("*") if p.is_file()]
        assert files and any(str(p) in recording or p.name in recording for p in files)
        header = json.loads(files[0].read_text().splitlines()[0])
        assert header["version"] == 2


async def test_shutdown_ends_open_sessions_and_streams_cleanly(h: ProxyHarness) -> None:
    ws = await ws_exec(h)
    await ws.send_bytes(b"\x00x")
    await asyncio.wait_for(ws.receive(), 10)
    watch = await h.session().get(
        h.url + "/sockets/prod/api/v1/namespaces/default/pods?watch=1", headers=h.auth("alice")
    )
    await asyncio.wait_for(watch.content.readline(), 10)
    assert h.connector is not None
    await asyncio.wait_for(h.connector.shutdown(), 20)
    # the watch ended as a complete chunked response (clients re-watch), the session's connection closed
    assert await asyncio.wait_for(watch.content.read(), 10) == b""
    closed = await asyncio.wait_for(ws.receive(), 10)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    ends = [e for e in h.audit_events() if e["stage"] == "ResponseComplete"]
    assert sorted(e["stream"] for e in ends) == ["exec", "watch"]
    assert all("ended by the connector" in e["error"] for e in ends)
    h.connector = None  # already shut down


def test_relays_work_on_uvloop(tmp_path: Path) -> None:
    """`serve` runs on uvloop, whose TLS transports are not asyncio's: the takeover must work there too."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async with ProxyHarness(tmp_path) as h:
            ws = await ws_exec(h)
            await ws.send_bytes(b"\x00on uvloop")
            assert (await asyncio.wait_for(ws.receive(), 10)).data == b"\x00on uvloop"
            await ws.close()
            reader, writer, head = await spdy_exec(h)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(b"spdy bytes")
            assert await asyncio.wait_for(reader.readexactly(10), 10) == b"spdy bytes"
            writer.close()
            status, _, _ = await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods")
            assert status == 200

    uvloop.run(scenario())


@pytest.mark.parametrize("stdin", ["stdin=yes", "stdin=", "stdin"])
async def test_stdin_the_cluster_reads_as_true_is_recorded(tmp_path: Path, stdin: str) -> None:
    """As found: `stdin=yes` (or `stdin=`) reached the container's stdin, but the recording said stdin
    false and held no `i` events. The apiserver reads any value but `0`/`false` as true."""
    config = {"recordings": {"dir": str(tmp_path / "rec"), "stdin": True}}
    async with ProxyHarness(tmp_path, config=config) as h:
        path = f"/sockets/prod/api/v1/namespaces/default/pods/web/exec?command=cat&command=&{stdin}&stdout=true"
        ws = await ws_exec(h, path=path)
        await ws.send_bytes(b"\x00typed\n")
        await asyncio.wait_for(ws.receive(), 10)
        await ws.close()
        await asyncio.wait_for(h.control.stream_closed.wait(), 10)
        await h.settled_audit()
        (cast,) = [p for p in (tmp_path / "rec").rglob("*.cast") if p.is_file()]
        header, *events = [json.loads(line) for line in cast.read_text().splitlines()]
        meta = header["connector"]
        assert (meta["stdin"], meta["command"]) == (True, ["cat", ""]), meta
        assert [e[2] for e in events if e[1] == "i"] == ["typed\n"]


def bearer_protocol(token: str) -> str:
    return "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("protocol_headers", "authorization", "error"),
    [
        (["{alice}, {bob}, v5.channel.k8s.io"], False, "multiple base64.bearer.authorization tokens"),
        (["{alice}, v5.channel.k8s.io", "{bob}"], False, "multiple base64.bearer.authorization tokens"),
        (["{bob}, v5.channel.k8s.io"], True, "both an Authorization header and a websocket bearer subprotocol"),
    ],
    ids=["one-header", "two-headers", "with-authorization"],
)
async def test_ambiguous_websocket_credentials_are_401(
    h: ProxyHarness, protocol_headers: list[str], authorization: bool, error: str
) -> None:
    """As found: two bearer subprotocols were accepted (the first won); kube-apiserver refuses them."""
    protocols = {"alice": bearer_protocol(h.tokens["alice"]), "bob": bearer_protocol(h.tokens["bob"])}
    lines = "".join(f"Sec-WebSocket-Protocol: {value.format(**protocols)}\r\n" for value in protocol_headers)
    if authorization:
        lines += f"Authorization: Bearer {h.tokens['alice']}\r\n"
    status, data = await h.raw(
        f"GET {EXEC} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{lines}\r\n".encode()
    )
    assert status == 401, data[:300]
    assert h.upstream.requests == []
    event = h.audit_events()[-1]
    assert (event["code"], event["decision"]) == (401, "unauthenticated") and error in event["error"]
