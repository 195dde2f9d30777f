"""Regression tables from a hostile review of the request path: what reaches the cluster, how headers are
read, how streams are decided, and what the server lets one request cost."""

from __future__ import annotations

import hmac
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from connector.authn.errors import AuthenticationError
from connector.authn.service_tokens import ServiceTokenStore, hash_token
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info, reject_reason
from connector.policy.rules import effective_verb, stream_request_info
from connector.proxy.app import MAX_HEADER_LINE, runner_options
from connector.proxy.config import ServerConfig
from connector.proxy.forward import upstream_url
from connector.proxy.headers import client_response_headers, impersonation_headers, upstream_request_headers
from connector.proxy.upgrade import request_head

# --- the cluster is asked exactly what the policy decided -------------------------------------------------


@pytest.mark.parametrize(
    "query", ["x#&fieldSelector=metadata.name%3Dweb", "fieldSelector=metadata.name%3Dweb#", "#", "watch=0#&watch"]
)
def test_a_raw_hash_in_the_query_is_refused(query: str) -> None:
    assert reject_reason("GET", "/api/v1/namespaces/default/pods", query) == "the query contains '#'"


def test_an_encoded_hash_in_the_query_is_data() -> None:
    query = "fieldSelector=metadata.name%3Dweb%23x"
    assert reject_reason("GET", "/api/v1/namespaces/default/pods", query) is None
    assert parse_request_info("GET", "/api/v1/namespaces/default/pods", query).name == "web#x"


def _entry(base_url: str) -> SimpleNamespace:
    return SimpleNamespace(upstream=SimpleNamespace(base_url=base_url))


@pytest.mark.parametrize("base", ["https://10.0.0.1:6443", "https://rancher.example.com/k8s/clusters/c-1"])
def test_upstream_url_refuses_what_it_cannot_forward_byte_for_byte(base: str) -> None:
    with pytest.raises(ValueError, match="byte for byte"):
        upstream_url(_entry(base), "/api/v1/pods", "x#&fieldSelector=metadata.name%3Dweb")  # type: ignore[arg-type]


_PIECES = st.sampled_from(
    ["a", "B", "0", "/", ".", "%", "%2e", "%2F", "%25", "%23", "%3f", "%7E", ";", "=", "&", "+", ":", "@", "!", "$",
     "'", "(", ")", "*", ",", "~", "-", "_", "é", "#", "?"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=10).map("".join), st.lists(_PIECES, max_size=10).map("".join))
def test_what_reject_reason_accepts_is_forwarded_byte_for_byte(path_tail: str, query: str) -> None:
    path = "/api/v1/namespaces/default/pods/" + path_tail
    if "?" in path or reject_reason("GET", path, query) is not None:
        return
    for base in ("https://10.0.0.1:6443", "https://h/prefix"):
        url = upstream_url(_entry(base), path, query)  # type: ignore[arg-type]
        assert url.raw_path.endswith(path) and url.raw_query_string == query and not url.raw_fragment


# --- header names are compared as the cluster's front could read them ------------------------------------


def _forwarded(*pairs: tuple[str, str], **kwargs: object) -> CIMultiDict[str]:
    client = CIMultiDictProxy(CIMultiDict(pairs))
    return upstream_request_headers(client, credentials={"Authorization": "Bearer c"}, client_ip="10.0.0.9", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Impersonate_User", "impersonate_group", "IMPERSONATE_UID", "Impersonate_Extra-x"])
def test_impersonation_in_any_spelling_is_found(name: str) -> None:
    assert impersonation_headers(["Accept", name]) == [name]


@pytest.mark.parametrize(
    "name",
    ["X_Remote_User", "x_remote_group", "X_Remote_Extra_Scopes", "X_Forwarded_For", "X_Real_IP", "Proxy_Authorization",
     "Impersonate_User", "Audit_ID", "audit-id"],
)  # fmt: skip
def test_identity_headers_in_any_spelling_are_dropped(name: str) -> None:
    out = _forwarded((name, "client-value"))
    assert "client-value" not in out.values(), dict(out)


def test_headers_the_connection_header_names_in_another_spelling_are_dropped() -> None:
    out = _forwarded(("Connection", "x-secret"), ("X_Secret", "s"), ("X-Other", "o"))
    assert "X_Secret" not in out and out["X-Other"] == "o"


@pytest.mark.parametrize(
    "value", ["Base64URL.Bearer.Authorization.K8s.Io.c2VjcmV0", "BASE64URL.BEARER.AUTHORIZATION.K8S.IO.c2VjcmV0"]
)
def test_a_bearer_subprotocol_in_any_case_is_not_forwarded(value: str) -> None:
    out = _forwarded(("Sec-WebSocket-Protocol", f"{value}, v5.channel.k8s.io"))
    assert out.getall("Sec-WebSocket-Protocol") == ["v5.channel.k8s.io"]


def test_the_audit_id_is_the_connectors() -> None:
    out = _forwarded(("Audit-ID", "spoofed"), audit_id="c0ffee")
    assert out.getall("Audit-ID") == ["c0ffee"]


def test_cluster_challenges_and_cookies_are_not_relayed() -> None:
    upstream = CIMultiDict([("WWW-Authenticate", 'Basic realm="c"'), ("Set-Cookie", "a=b"), ("Audit-Id", "x")])
    assert dict(client_response_headers(upstream)) == {"Audit-Id": "x"}


@pytest.mark.parametrize("user", ["josé@example.com", "Łukasz", "用户"])
def test_an_upgrade_request_carries_names_as_plain_requests_do(user: str) -> None:
    """aiohttp's client sends header values as UTF-8; the upgrade request must say the same name (latin-1
    turned `josé` into other bytes, and failed outright for `Łukasz`)."""
    data = request_head("GET", "/x", "h", CIMultiDict({"Impersonate-User": user}))
    assert f"\r\nImpersonate-User: {user}\r\n".encode() in data
    # a client's own bytes, which aiohttp hands over surrogate-escaped, go out as they came in
    assert b"X-Raw: \xff\r\n" in request_head(
        "GET", "/x", "h", CIMultiDict({"X-Raw": b"\xff".decode("utf-8", "surrogateescape")})
    )


# --- streams are decided as create --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/api/v1/nodes/n1/proxy/exec/ns/pod/c", "create"),
        ("GET", "/api/v1/nodes/n1:10250/proxy/attach/ns/pod/c", "create"),
        ("GET", "/api/v1/namespaces/ns/pods/web/proxy/ws", "create"),
        ("GET", "/api/v1/namespaces/ns/services/https:web:443/proxy/", "create"),
        ("GET", "/api/v1/proxy/nodes/n1/exec/ns/pod/c", "create"),  # the legacy path verb
        ("GET", "/api/v1/namespaces/ns/pods/web/exec", "create"),
        ("GET", "/api/v1/namespaces/ns/pods?watch=1", "watch"),  # websocket watches stay watches
        ("GET", "/api/v1/namespaces/ns/pods/web", "get"),
        ("GET", "/version", "get"),
    ],
)
def test_streams_are_decided_as_create(method: str, path: str, verb: str) -> None:
    raw_path, _, query = path.partition("?")
    info = stream_request_info(parse_request_info(method, raw_path, query))
    assert effective_verb(info) == verb


def test_plain_proxied_requests_keep_the_apiservers_verb() -> None:
    info = parse_request_info("GET", "/api/v1/nodes/n1/proxy/metrics")
    assert (effective_verb(info), info.resource, info.subresource) == ("get", "nodes", "proxy")


# --- what one request head may cost -------------------------------------------------------------------


def test_a_request_head_costs_a_bounded_amount_before_any_handler_runs() -> None:
    options = runner_options(ServerConfig())
    assert options["max_field_size"] <= MAX_HEADER_LINE
    assert options["max_field_size"] * options["max_headers"] <= 16 * 1024 * 1024
    small = runner_options(ServerConfig.model_validate({"limits": {"max_header_bytes": 8192}}))
    assert small["max_field_size"] == 16384  # still past our own limit, so that the handler answers 413


# --- service tokens -------------------------------------------------------------------------------------


def test_a_token_costs_one_lookup_whatever_the_size_of_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "tokens.yaml"
    tokens = [f"token-{i}" for i in range(1000)]
    entries = [{"sha256": hash_token(t), "user": f"bot-{i}"} for i, t in enumerate(tokens)]
    entries.append({"sha256": hash_token("token-7"), "user": "bot-7-renamed"})  # the last entry of a hash wins
    path.write_text(yaml.safe_dump({"tokens": entries}))
    store = ServiceTokenStore(str(path))
    comparisons = []
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: comparisons.append(1) or a == b)
    assert store.authenticate("token-999") == Identity("bot-999", (), "service-token")
    assert store.authenticate("token-7").user == "bot-7-renamed"
    with pytest.raises(AuthenticationError):
        store.authenticate("not-a-token")
    assert len(comparisons) <= 3  # not one comparison per entry per request
