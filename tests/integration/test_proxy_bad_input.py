"""Every row of the proxy's bad-input list: the status code, an audit event, and nothing sent upstream."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.proxy_harness import ProxyHarness

LIMITS = {"server": {"limits": {"max_header_bytes": 16384, "max_header_count": 32, "max_body_bytes": 1024}}}
PODS = "/sockets/prod/api/v1/namespaces/default/pods"


@pytest.fixture
async def h(tmp_path: Path):
    async with ProxyHarness(tmp_path, config=LIMITS) as harness:
        yield harness


async def assert_refused(h: ProxyHarness, status: int, got: int, body: bytes = b"") -> None:
    assert got == status, body[:300]
    assert h.upstream.requests == [], "the upstream must not see a refused request"
    events = h.audit_events()
    assert events and events[-1]["code"] == status and events[-1]["stage"] == "ResponseComplete"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (f"{PODS}/../secrets", "dot segment"),
        ("/sockets/prod/api/v1/namespaces/default/pods/%2e%2e/x", "dot segment"),
        ("/sockets/prod/api/v1/namespaces/a%2Fb/pods", "encoded slash"),
        ("/sockets/prod/api/v1/namespaces/default/pods/a%00b", "NUL"),
        ("/sockets/prod/api/v1//namespaces/default/pods", "empty segment"),
        ("/sockets/prod/api/v1/namespaces/default/pods/%zz", "percent-encoding"),
        (f"{PODS}?watch=1&watch=0", "repeats 'watch'"),
        (f"{PODS}?fieldSelector=a%3Db&fieldSelector=c%3Dd", "repeats 'fieldSelector'"),
        (f"{PODS}?labelSelector=a&labelSelector=b", "repeats 'labelSelector'"),
        (f"{PODS}?limit=1;watch=1", "';'"),
        ("/sockets/prod/api/v1/watch", "path verb"),
        ("/%73ockets/prod/api/v1/namespaces/default/pods", "/sockets/SOCKET/"),
    ],
)
async def test_paths_the_cluster_could_read_differently_are_400(h: ProxyHarness, path: str, words: str) -> None:
    status, _, body = await h.request("GET", path, user="bob")
    await assert_refused(h, 400, status, body)
    assert words in body.decode()


async def test_backslash_in_path_is_400(h: ProxyHarness) -> None:
    status, data = await h.raw(
        f"GET /sockets/prod/api/v1/namespaces/default/pods\\x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {h.tokens['bob']}\r\n\r\n".encode()
    )
    await assert_refused(h, 400, status, data)


@pytest.mark.parametrize(
    "header", ["Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Impersonate-Extra-Scopes"]
)
async def test_client_impersonation_is_403(h: ProxyHarness, header: str) -> None:
    status, _, body = await h.request("GET", PODS, user="bob", headers={header: "system:admin"})
    await assert_refused(h, 403, status, body)
    assert header in body.decode()


async def test_headers_over_the_size_limit_are_413(h: ProxyHarness) -> None:
    big = {f"X-Big-{i}": "v" * 6000 for i in range(3)}
    status, _, body = await h.request("GET", PODS, user="bob", headers=big)
    await assert_refused(h, 413, status, body)


async def test_one_header_over_the_size_limit_is_413(h: ProxyHarness) -> None:
    status, _, body = await h.request("GET", PODS, user="bob", headers={"X-Huge": "v" * 20000})
    await assert_refused(h, 413, status, body)


async def test_too_many_headers_are_413(h: ProxyHarness) -> None:
    many = {f"X-Many-{i}": "v" for i in range(40)}
    status, _, body = await h.request("GET", PODS, user="bob", headers=many)
    await assert_refused(h, 413, status, body)


async def test_body_over_the_limit_is_413(h: ProxyHarness) -> None:
    status, _, body = await h.request(
        "POST", PODS, user="bob", data=b"x" * 2000, headers={"Content-Type": "application/json"}
    )
    await assert_refused(h, 413, status, body)


async def test_chunked_body_over_the_limit_is_413_before_anything_is_sent(h: ProxyHarness) -> None:
    async def chunks():
        for _ in range(4):
            yield b"y" * 400

    status, _, body = await h.request("POST", PODS, user="bob", data=chunks())
    await assert_refused(h, 413, status, body)


@pytest.mark.parametrize("upgrade", ["h2c", "websocket, SPDY/3.1", "SPDY/3", "tcp"])
async def test_unsupported_upgrades_are_400(h: ProxyHarness, upgrade: str) -> None:
    status, data = await h.raw(
        f"GET /sockets/prod/api/v1/namespaces/default/pods/web/exec?command=ls HTTP/1.1\r\nHost: x\r\n"
        f"Connection: Upgrade\r\nUpgrade: {upgrade}\r\nAuthorization: Bearer {h.tokens['bob']}\r\n\r\n".encode()
    )
    await assert_refused(h, 400, status, data)
    assert b"unsupported upgrade" in data


async def test_upgrade_with_a_body_is_400(h: ProxyHarness) -> None:
    status, data = await h.raw(
        f"POST /sockets/prod/api/v1/namespaces/default/pods/web/exec?command=ls HTTP/1.1\r\nHost: x\r\n"
        f"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 3\r\n"
        f"Authorization: Bearer {h.tokens['bob']}\r\n\r\n".encode(),
        b"abc",
    )
    await assert_refused(h, 400, status, data)


@pytest.mark.parametrize(
    "auth", [None, "Bearer not-a-token", "Basic YWxpY2U6cHc=", "Bearer a.b.c"], ids=["none", "unknown", "basic", "jwt"]
)
async def test_missing_or_bad_credentials_are_401(h: ProxyHarness, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    status, _, body = await h.request("GET", PODS, user=None, headers=headers)
    await assert_refused(h, 401, status, body)
    # what failed exactly goes to the audit log, not to the client
    assert h.audit_events()[-1]["decision"] == "unauthenticated"
    assert b"Unauthorized" in body


async def test_unknown_socket_is_404(h: ProxyHarness) -> None:
    status, _, body = await h.request("GET", "/sockets/staging/api/v1/pods", user="bob")
    await assert_refused(h, 404, status, body)


@pytest.mark.parametrize(
    ("user", "path", "words"),
    [
        ("carol", PODS, "no policy grants carol access to socket prod"),
        ("alice", "/sockets/prod/api/v1/namespaces/kube-system/pods", "no rule allows list pods in namespace kube-"),
        ("alice", "/sockets/prod/api/v1/namespaces/default/secrets", "socket prod"),
    ],
)  # fmt: skip
async def test_denied_by_policy_is_403_naming_socket_and_reason(
    h: ProxyHarness, user: str, path: str, words: str
) -> None:
    status, _, body = await h.request("GET", path, user=user)
    await assert_refused(h, 403, status, body)
    assert words in body.decode()
    assert h.audit_events()[-1]["decision"] == "deny"


async def test_a_megabyte_request_line_is_refused_while_read_and_never_audited_whole(tmp_path: Path) -> None:
    """As found: 900k `a&` pairs (1.8 MB target), no token, took seconds of event-loop time and wrote a
    1.8 MB audit line. With the default limits the parser refuses the target once it passes 16 KiB."""
    async with ProxyHarness(tmp_path) as h:
        await _megabyte_request_line(h)


async def _megabyte_request_line(h: ProxyHarness) -> None:
    status, data = await h.raw(
        b"GET " + PODS.encode() + b"?" + b"a&" * 900_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 400, data[:300]
    assert h.upstream.requests == []
    assert not any(len(event.get("path", "")) > 16 << 10 for event in h.audit_events())
    status, _, body = await h.request("GET", f"{PODS}?" + "a&" * 3000, user="bob")
    assert status == 200, body[:300]


@pytest.mark.parametrize(
    "authorization",
    ["{token}", "Bearer:{token}", "Bearer\t{token}", "Bearer\r\n {token}", "Bearer {token}\x01"],
    ids=["no-scheme", "colon", "tab", "obs-fold", "control-char"],
)
async def test_a_malformed_authorization_header_is_never_logged_or_echoed(
    h: ProxyHarness, caplog: pytest.LogCaptureFixture, authorization: str
) -> None:
    """As found: the audit `error` and the connector log carried the whole valid token, and aiohttp's own
    400 for an obs-folded header quoted it in the body. Only the kind and a fingerprint may be written."""
    token = h.tokens["bob"]
    caplog.set_level(logging.DEBUG)
    status, data = await h.raw(
        f"GET {PODS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: {authorization.format(token=token)}\r\n\r\n".encode()
    )
    assert status in (400, 401), data[:300]
    assert h.upstream.requests == []
    audit = h.audit_path.read_text() if h.audit_path.exists() else ""
    for written in (data.decode(errors="replace"), caplog.text, audit):
        assert token not in written and token[:12] not in written
    if status == 401:
        assert "sha256:" in h.audit_events()[-1]["error"]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", "obs-fold"),
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", "bare LF"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "duplicate length"),
    ],
    ids=["obs-fold", "bare-lf", "duplicate-content-length"],
)
async def test_a_head_the_parser_refuses_is_audited_with_its_request_id(
    h: ProxyHarness, head: bytes, kind: str
) -> None:
    """As found: the parser's own 400s had no request id and no audit event. Now they have both, and the
    event trusts nothing of the head but its method."""
    status, data = await h.raw(head)
    assert status == 400, data[:300]
    answer_head, _, body = data.partition(b"\r\n\r\n")
    request_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in answer_head.split(b"\r\n")
        if line.lower().startswith(b"x-connector-request-id:")
    )
    assert f"request id {request_id}".encode() in body
    event = h.audit_events()[-1]
    assert event["request_id"] == request_id, kind
    assert (event["decision"], event["code"], event["stage"]) == ("rejected", 400, "ResponseComplete")
    assert event["reason"].startswith("malformed request head: ") and event["path"] == ""
    assert event["method"] == head.split(b" ", 1)[0].decode()
    assert event["source_ip"] == "127.0.0.1"


async def test_a_header_that_is_not_utf8_is_audited_not_lost(h: ProxyHarness) -> None:
    """As found: a User-Agent of Latin-1 bytes made the audit line unencodable; the request was served and
    its event lost (a way to act unaudited). The bytes are written as U+FFFD, as kube-apiserver does."""
    status, data = await h.raw(
        f"GET {PODS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {h.tokens['bob']}\r\n".encode()
        + b"User-Agent: caf\xe9 \xff\r\n\r\n"
    )
    assert status == 200, data[:300]
    event = h.audit_events()[-1]
    assert (event["decision"], event["code"], event["user_agent"]) == ("allow", 200, "caf\ufffd \ufffd")
