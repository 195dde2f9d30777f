"""Forwarding through the connector to a real HTTPS upstream: bytes, headers, streams, failures, audit."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from connector.kube import protobuf
from connector.pki import generate_ca
from connector.proxy import reviews
from connector.proxy.app import not_found_message
from tests.support.proxy_harness import UPSTREAM_TOKEN, ProxyHarness
from tests.support.upstream_app import CLUSTER_ADDRESS

PODS = "/sockets/prod/api/v1/namespaces/default/pods"


@pytest.fixture
async def h(tmp_path: Path):
    async with ProxyHarness(tmp_path) as harness:
        yield harness


async def test_path_and_query_reach_the_cluster_byte_identical(h: ProxyHarness) -> None:
    query = "labelSelector=app%3Dweb%2Ctier%21%3Dfront&limit=500&fieldSelector=status.phase%3DRunning&x=%7E+y"
    status, headers, body = await h.request("GET", f"{PODS}?{query}")
    assert status == 200, body
    assert h.upstream.requests[-1].path == f"/api/v1/namespaces/default/pods?{query}"
    assert json.loads(body)["kind"] == "PodList"
    event = h.audit_events()[-1]
    assert event["request_id"] == headers["X-Connector-Request-Id"]
    assert (event["decision"], event["policy"], event["rule"], event["upstream_status"]) == (
        "allow",
        "dev-read",
        0,
        200,
    )
    assert event["upstream_audit_id"] == "a-1" and event["bytes_out"] == int(headers["Content-Length"])  # gzip


async def test_client_identity_never_reaches_the_cluster(h: ProxyHarness) -> None:
    status, _, _ = await h.request(
        "GET",
        PODS,
        headers={
            "Cookie": "session=1",
            "X-Forwarded-For": "6.6.6.6",
            "X-Remote-User": "system:admin",
            "X-Remote-Group": "system:masters",
            "X-HTTP-Method-Override": "DELETE",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
    )
    assert status == 200
    seen = h.upstream.requests[-1].headers
    assert seen.getall("Authorization") == [f"Bearer {UPSTREAM_TOKEN}"]
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    for name in ("Cookie", "X-Remote-User", "X-Remote-Group", "Impersonate-User", "Impersonate-Group",
                 "X-HTTP-Method-Override"):
        assert name not in seen, name
    assert seen["Accept"] == "application/json;as=Table;v=v1;g=meta.k8s.io"


async def test_impersonation_headers_added_when_the_socket_asks(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path, socket={"impersonation_enabled": True}) as h:
        status, _, _ = await h.request("GET", PODS)
        assert status == 200
        seen = h.upstream.requests[-1].headers
        assert seen["Impersonate-User"] == "alice" and seen.getall("Impersonate-Group") == ["dev"]


async def test_compressed_bodies_are_relayed_as_they_are(h: ProxyHarness) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=h.ssl_context()), auto_decompress=False
    ) as session:
        async with session.get(h.url + PODS, headers={**h.auth("alice"), "Accept-Encoding": "gzip"}) as resp:
            raw = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip"
            assert json.loads(gzip.decompress(raw))["kind"] == "PodList"
    # a client that does not accept gzip does not get it: the connector adds no Accept-Encoding of its own
    status, data = await h.raw(
        f"GET {PODS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {h.tokens['alice']}\r\n\r\n".encode()
    )
    assert status == 200 and b"Content-Encoding" not in data and b'"PodList"' in data
    assert "Accept-Encoding" not in h.upstream.requests[-1].headers


async def test_redirects_are_returned_not_followed(h: ProxyHarness) -> None:
    status, headers, _ = await h.request("GET", "/sockets/prod/redirect", user="bob")
    assert status == 302 and headers["Location"] == "/elsewhere"
    assert [r.path for r in h.upstream.requests] == ["/redirect"]


async def test_write_bodies_are_forwarded(h: ProxyHarness) -> None:
    cm = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}).encode()
    status, _, body = await h.request(
        "POST", "/sockets/prod/api/v1/namespaces/default/configmaps", data=cm,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201 and body == cm
    seen = h.upstream.requests[-1]
    assert seen.body == cm and seen.headers["Content-Length"] == str(len(cm))
    assert h.audit_events()[-1]["bytes_in"] == len(cm)


async def test_chunked_write_under_the_limit_is_forwarded_whole(h: ProxyHarness) -> None:
    async def chunks():
        yield b'{"kind":'
        yield b'"ConfigMap"}'

    status, _, body = await h.request("POST", "/sockets/prod/api/v1/namespaces/default/configmaps", data=chunks())
    assert status == 201 and body == b'{"kind":"ConfigMap"}'


@pytest.mark.parametrize(
    ("path", "kind", "first", "second"),
    [
        (f"{PODS}?watch=1", "watch", b'"ADDED"', b'"MODIFIED"'),
        (f"{PODS}/web/log?follow=true", "log", b"line 1", b"line 2"),
    ],
)
async def test_streams_are_flushed_at_once_and_audited_at_start_and_end(
    h: ProxyHarness, path: str, kind: str, first: bytes, second: bytes
) -> None:
    async with h.session().get(URL(h.url + path, encoded=True), headers=h.auth("alice")) as resp:
        assert resp.status == 200
        # the upstream holds the stream open after its first chunk: it must arrive now, not at the end
        line = await asyncio.wait_for(resp.content.readline(), 10)
        assert first in line
        started = [e for e in h.audit_events() if e["stage"] == "ResponseStarted"]
        assert len(started) == 1 and started[0]["stream"] == kind
        h.control.release.set()
        assert second in await asyncio.wait_for(resp.content.readline(), 10)
        await resp.read()
    ends = [e for e in await h.settled_audit() if e["request_id"] == started[0]["request_id"]]
    assert [e["stage"] for e in ends] == ["ResponseStarted", "ResponseComplete"]
    assert ends[1]["bytes_out"] > 0 and "error" not in ends[1]


async def test_client_going_away_ends_the_upstream_stream(h: ProxyHarness) -> None:
    resp = await h.session().get(h.url + f"{PODS}?watch=true", headers=h.auth("alice"))
    await asyncio.wait_for(resp.content.readline(), 10)
    resp.close()
    await asyncio.wait_for(h.control.stream_closed.wait(), 10)
    end = (await h.settled_audit())[-1]
    assert end["stage"] == "ResponseComplete" and end["stream"] == "watch" and "disconnected" in end["error"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_cluster_is_503_and_the_connector_stays_healthy(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path, socket={"server": f"https://127.0.0.1:{closed_port()}"}) as h:
        status, _, body = await h.request("GET", PODS)
        assert status == 503 and b"socket prod" in body and b"unreachable" in body
        assert "127.0.0.1" in h.audit_events()[-1]["error"] or "onnect" in h.audit_events()[-1]["error"]
        assert (await h.request("GET", "/healthz", user=None))[0] == 200


async def test_tls_failure_is_502(tmp_path: Path) -> None:
    other_ca = base64.b64encode(generate_ca("someone-else").cert_pem).decode()
    async with ProxyHarness(tmp_path, socket={"certificate_authority_data": other_ca}) as h:
        status, _, body = await h.request("GET", PODS)
        assert status == 502 and b"TLS" in body and b"socket prod" in body


async def test_slow_cluster_is_504(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path, config={"server": {"upstream": {"response_seconds": 0.3}}}) as h:
        status, _, body = await h.request("GET", "/sockets/prod/slow", user="bob")
        h.control.release.set()
        assert status == 504 and b"did not answer within 0.3 s" in body


async def test_cluster_breaking_mid_response_cuts_the_client(h: ProxyHarness) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await h.request("GET", "/sockets/prod/broken", user="bob")
    for _ in range(500):
        if h.audit_events():
            break
        await asyncio.sleep(0.02)
    assert "mid-response" in h.audit_events()[-1]["error"]


SSAR = "/sockets/prod/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@pytest.mark.parametrize(
    ("attrs", "allowed"),
    [
        ({"namespace": "default", "verb": "list", "resource": "pods"}, True),
        ({"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"}, True),
        ({"namespace": "default", "verb": "delete", "resource": "pods"}, False),
    ],
)
async def test_access_reviews_are_answered_from_policy(h: ProxyHarness, attrs: dict, allowed: bool) -> None:
    body = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                       "spec": {"resourceAttributes": attrs}})  # fmt: skip
    status, _, data = await h.request("POST", SSAR, data=body, headers={"Content-Type": "application/json"})
    assert status == 201
    assert json.loads(data)["status"]["allowed"] is allowed
    assert h.upstream.requests == []


async def test_a_review_body_nested_too_deep_is_400(h: ProxyHarness) -> None:
    """As found: 5000 `[` made the JSON decoder raise RecursionError, answered as a 500."""
    status, _, data = await h.request("POST", SSAR, data=b"[" * 5000, headers={"Content-Type": "application/json"})
    assert status == 400, data[:300]
    assert "not valid JSON" in json.loads(data)["message"]
    assert h.audit_events()[-1]["code"] == 400 and h.upstream.requests == []


async def test_protobuf_review_bodies_are_bounded_before_they_are_decoded(h: ProxyHarness) -> None:
    """As found: six concurrent 3 MiB SSAR bodies of 1.5 M tiny protobuf fields stalled the event loop for
    seconds. A review body over 64 KiB is refused unread; one just under it is decoded and answered."""
    headers = {"Content-Type": protobuf.MEDIA_TYPE}
    type_meta = protobuf.string(1, "authorization.k8s.io/v1") + protobuf.string(2, "SelfSubjectAccessReview")
    spec = protobuf.message(1, protobuf.string(1, "default") + protobuf.string(2, "list") + protobuf.string(5, "pods"))

    def body(filler_fields: int) -> bytes:
        filler = protobuf.boolean(15, True) * filler_fields  # an unknown field, two bytes each
        raw = protobuf.length_delimited(2, filler + protobuf.message(2, spec))
        return protobuf.MAGIC + protobuf.message(1, type_meta) + raw

    huge = body(1_500_000)
    answers = await asyncio.gather(*(h.request("POST", SSAR, data=huge, headers=headers) for _ in range(6)))
    for status, _, data in answers:
        assert status == 413, data[:300]
        assert f"larger than {reviews.MAX_REVIEW_BODY_BYTES} bytes" in json.loads(data)["message"]
    near_limit = body((reviews.MAX_REVIEW_BODY_BYTES - 200) // 2)
    assert len(near_limit) <= reviews.MAX_REVIEW_BODY_BYTES
    status, _, data = await h.request("POST", SSAR, data=near_limit, headers=headers)
    assert status == 201, data[:300]
    assert json.loads(data)["status"]["allowed"] is True
    assert h.upstream.requests == []


async def test_whoami_and_rules_review(h: ProxyHarness) -> None:
    status, _, data = await h.request(
        "POST", "/sockets/prod/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201 and json.loads(data)["status"]["userInfo"] == {"username": "alice", "groups": ["dev"]}
    status, _, data = await h.request(
        "POST", "/sockets/prod/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        data=b'{"spec":{"namespace":"default"}}', headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201
    assert {"verbs": ["get", "list", "watch"], "apiGroups": ["*"], "resources": ["pods", "pods/log"]} in json.loads(
        data
    )["status"]["resourceRules"]
    # a user with no policy on the socket may not even ask
    status, _, _ = await h.request("POST", SSAR, user="carol", data=b"{}", headers={"Content-Type": "application/json"})
    assert status == 403
    assert h.upstream.requests == []


async def test_sockets_listing(h: ProxyHarness) -> None:
    status, _, data = await h.request("GET", "/v1/sockets", user="alice")
    assert status == 200
    [prod] = json.loads(data)["sockets"]
    assert prod["name"] == "prod" and prod["type"] == "standard" and prod["server"] == f"{h.url}/sockets/prod"
    assert json.loads((await h.request("GET", "/v1/sockets", user="carol"))[2]) == {"sockets": []}
    assert (await h.request("GET", "/v1/sockets", user=None))[0] == 401
    assert (await h.request("GET", "/v1/login-config", user=None))[0] == 404  # no OIDC issuer configured
    assert (await h.request("GET", "/nothing-here", user=None))[0] == 404


async def test_metrics_count_requests_by_socket_verb_code_and_decision(h: ProxyHarness) -> None:
    await h.request("GET", PODS)
    await h.request("GET", "/sockets/prod/api/v1/namespaces/other/pods")
    text = await h.metrics()
    assert h.connector is not None and h.connector.metrics_url.startswith("http://127.0.0.1:")
    assert 'connector_requests_total{code="200",decision="allow",socket="prod",verb="list"}' in text
    assert 'connector_requests_total{code="403",decision="deny",socket="prod",verb="list"}' in text
    assert "connector_request_duration_seconds_bucket" in text


async def test_the_main_listener_serves_no_metrics_and_says_where_a_clusters_api_is(h: ProxyHarness) -> None:
    """As found: `kubectl get --raw /metrics` (sent to the root, not under /sockets/NAME) showed the
    connector's own metrics, unauthenticated, as if they were the cluster's."""
    await h.request("GET", PODS)
    status, headers, data = await h.request("GET", "/metrics", user=None, headers={"Accept": "application/json"})
    assert status == 404 and headers["Content-Type"] == "application/json"
    body = json.loads(data)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == not_found_message("/metrics")
    assert "/sockets/SOCKET/metrics" in body["message"] and b"connector_requests_total" not in data
    # client-go's discovery of a kubeconfig without /sockets/NAME reads /api as text: a 403 keeps our text.
    status, headers, data = await h.request("GET", "/api", user="alice", headers={"Accept": "application/json, */*"})
    assert status == 403 and headers["Content-Type"].startswith("text/plain")
    assert data.decode() == not_found_message("/api") + "\n"
    # Long paths are not repeated whole.
    assert len(not_found_message("/x" * 5000)) < 600


async def test_socket_that_cannot_be_resolved_fails_readyz_and_answers_503(tmp_path: Path) -> None:
    config = {"sockets": {"broken": {"service_type": "standard", "kubeconfig_path": str(tmp_path / "missing")}}}
    async with ProxyHarness(tmp_path, config=config) as h:
        status, _, body = await h.request("GET", "/readyz", user=None)
        assert status == 503 and b"[-]sockets failed: broken:" in body
        status, _, body = await h.request("GET", "/sockets/broken/api", user="bob")
        assert status == 503 and b"socket broken is not available" in body
        assert (await h.request("GET", PODS))[0] == 200  # the other sockets keep serving


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to make audit writes fail")
async def test_audit_failure_fails_readyz_and_with_fail_closed_refuses(tmp_path: Path) -> None:
    config = {"audit": {"file": "/dev/full", "fsync": "never", "fail_closed": True}}
    async with ProxyHarness(tmp_path, config=config) as h:
        assert (await h.request("GET", PODS))[0] == 200  # its own event is the first write to fail
        status, _, body = await h.request("GET", "/readyz", user=None)
        assert status == 503 and b"[-]audit failed" in body
        status, _, body = await h.request("GET", PODS)
        assert status == 503 and b"audit log" in body
        assert len(h.upstream.requests) == 1


async def test_login_config_names_the_issuer_without_authentication(tmp_path: Path) -> None:
    oidc = {"oidc": [{"issuer": "https://sso.example.com", "client_id": "eks-access-connector"}]}
    async with ProxyHarness(tmp_path, config={"authentication": oidc}) as h:
        status, _, body = await h.request("GET", "/v1/login-config", user=None)
        assert status == 200
        assert json.loads(body) == {"issuer": "https://sso.example.com", "client_id": "eks-access-connector"}


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_core_discovery_never_names_the_clusters_address(h: ProxyHarness, encoding: str) -> None:
    """As found: `/api` relayed `serverAddressByClientCIDRs`, the cluster's own endpoint, to socket users."""
    status, headers, body = await h.request("GET", "/sockets/prod/api", headers={"Accept-Encoding": encoding})
    assert status == 200, body[:300]
    doc = json.loads(body)
    assert doc["versions"] == ["v1"] and "serverAddressByClientCIDRs" not in doc
    assert CLUSTER_ADDRESS.encode() not in body and int(headers["Content-Length"]) == len(body)
    assert headers["X-Connector-Request-Id"] == h.audit_events()[-1]["request_id"]
