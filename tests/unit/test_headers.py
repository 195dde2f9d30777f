"""Header hygiene between client and cluster (connector.proxy.headers), as tables."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from connector.proxy.headers import (
    client_response_headers,
    connection_tokens,
    header_bytes,
    impersonation_headers,
    requested_upgrade,
    upgrade_protocol,
    upstream_request_headers,
    without_bearer_protocol,
)


def h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def forwarded(*pairs: tuple[str, str], **kwargs) -> CIMultiDict[str]:
    kwargs.setdefault("credentials", {"Authorization": "Bearer connector"})
    kwargs.setdefault("client_ip", "10.1.2.3")
    return upstream_request_headers(h(*pairs), **kwargs)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization", "Cookie", "Proxy-Authorization", "Connection", "Keep-Alive", "Proxy-Connection", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Forwarded", "X-Forwarded-Host",
        "X-Forwarded-Proto", "X-Real-IP", "X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Scopes", "Expect",
        "Host", "Sec-WebSocket-Extensions", "Impersonate-User",
    ],
)  # fmt: skip
def test_dropped_request_headers(name: str) -> None:
    out = forwarded((name, "client-value"))
    assert out.get(name) != "client-value"


@pytest.mark.parametrize(
    "name",
    ["Accept", "Accept-Encoding", "Content-Type", "Content-Length", "User-Agent", "Kubectl-Command",
     "Sec-WebSocket-Key", "Sec-WebSocket-Version", "X-Stream-Protocol-Version"],
)  # fmt: skip
def test_kept_request_headers(name: str) -> None:
    assert forwarded((name, "v")).getall(name) == ["v"]


def test_headers_named_by_connection_are_dropped_but_not_upgrade_semantics() -> None:
    out = forwarded(("Connection", "close, X-Secret"), ("X-Secret", "s"), ("X-Other", "o"))
    assert "X-Secret" not in out and out["X-Other"] == "o" and "Connection" not in out


def test_credentials_forwarding_and_repeated_headers() -> None:
    out = forwarded(("Authorization", "Bearer user"), ("X-Forwarded-For", "6.6.6.6"), ("Accept", "a"), ("Accept", "b"))
    assert out.getall("Authorization") == ["Bearer connector"]
    assert out.getall("X-Forwarded-For") == ["10.1.2.3"]
    assert out.getall("Accept") == ["a", "b"]


def test_impersonation_added_only_when_asked() -> None:
    assert "Impersonate-User" not in forwarded()
    out = forwarded(impersonate_user="alice", impersonate_groups=("dev", "ops"))
    assert out["Impersonate-User"] == "alice"
    assert out.getall("Impersonate-Group") == ["dev", "ops"]
    # a client's own Impersonate-Group never survives next to ours
    out = forwarded(("Impersonate-Group", "system:masters"), impersonate_user="alice", impersonate_groups=("dev",))
    assert out.getall("Impersonate-Group") == ["dev"]


def test_upgrade_headers_set_for_upgrades_only() -> None:
    client = (("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"))
    assert "Upgrade" not in forwarded(*client)
    out = forwarded(*client, upgrade="SPDY/3.1")
    assert out["Connection"] == "Upgrade" and out["Upgrade"] == "SPDY/3.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("v5.channel.k8s.io", "v5.channel.k8s.io"),
        ("base64url.bearer.authorization.k8s.io.dG9r, v4.channel.k8s.io", "v4.channel.k8s.io"),
        ("v4.channel.k8s.io,base64url.bearer.authorization.k8s.io.dG9r,channel.k8s.io",
         "v4.channel.k8s.io, channel.k8s.io"),
        ("base64url.bearer.authorization.k8s.io.dG9r", ""),
    ],
)  # fmt: skip
def test_websocket_bearer_subprotocol_removed(value: str, expected: str) -> None:
    assert without_bearer_protocol(value) == expected
    out = forwarded(("Sec-WebSocket-Protocol", value))
    assert out.get("Sec-WebSocket-Protocol", "") == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["Accept"], []),
        (["Impersonate-User"], ["Impersonate-User"]),
        (["impersonate-group", "Impersonate-Uid", "impersonate-extra-scopes"],
         ["Impersonate-Uid", "impersonate-extra-scopes", "impersonate-group"]),
    ],
)  # fmt: skip
def test_impersonation_headers(names: list[str], expected: list[str]) -> None:
    assert impersonation_headers(names) == expected


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        ((("Upgrade", "websocket"),), None),  # no Connection: upgrade, so not an upgrade request
        ((("Connection", "Upgrade"), ("Upgrade", "websocket")), "websocket"),
        ((("Connection", "keep-alive, upgrade"), ("Upgrade", "SPDY/3.1")), "SPDY/3.1"),
        ((("Connection", "upgrade"), ("Upgrade", "h2c"), ("Upgrade", "websocket")), "h2c, websocket"),
    ],
)
def test_requested_upgrade(pairs, expected) -> None:
    assert requested_upgrade(h(*pairs)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("websocket", "websocket"), ("WebSocket", "websocket"), ("SPDY/3.1", "SPDY/3.1"), ("spdy/3.1", "SPDY/3.1"),
     ("h2c", None), ("SPDY/3", None), ("websocket, SPDY/3.1", None), ("tcp", None)],
)  # fmt: skip
def test_upgrade_protocol(value: str, expected: str | None) -> None:
    assert upgrade_protocol(value) == expected


def test_response_headers() -> None:
    upstream = h(
        ("Content-Type", "application/json"), ("Content-Length", "10"), ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Set-Cookie", "a=b"), ("Audit-Id", "x"),
        ("Content-Encoding", "gzip"), ("Upgrade", "SPDY/3.1"),
    )  # fmt: skip
    out = client_response_headers(upstream)
    assert dict(out) == {
        "Content-Type": "application/json",
        "Content-Length": "10",
        "Audit-Id": "x",
        "Content-Encoding": "gzip",
    }
    switched = client_response_headers(upstream, upgrade="SPDY/3.1")
    assert switched["Connection"] == "Upgrade" and switched["Upgrade"] == "SPDY/3.1"


def test_connection_tokens_and_header_bytes() -> None:
    assert connection_tokens(h(("Connection", "Keep-Alive, Upgrade"), ("Connection", " x "))) == {
        "keep-alive",
        "upgrade",
        "x",
    }
    assert header_bytes([(b"Host", b"a"), (b"X", b"")]) == len(b"Host: a\r\n") + len(b"X: \r\n")
