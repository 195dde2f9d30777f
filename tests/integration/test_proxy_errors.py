"""How the connector answers when something goes wrong, against the real connector on 127.0.0.1: an
exception nothing foresaw, a client that hangs up before the answer, a cluster refusing the connector's
own credentials, and denials of discovery requests in the form client-go can print."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from connector.aws.discovery import EksCluster
from connector.policy.engine import PolicyEngine
from connector.upstream import upstream as upstream_module
from tests.support.https_server import RecordingHttpsServer
from tests.support.proxy_harness import DEFAULT_POLICIES, Cluster, ProxyHarness
from tests.support.raw_upstream import RawUpstream

PODS = "/sockets/prod/api/v1/namespaces/default/pods"
AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
UNAUTHORIZED = b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}'
CLUSTER_401 = (
    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nAudit-Id: cluster-audit-1\r\n"
    b'WWW-Authenticate: Basic realm="kubernetes-master"\r\n'
    b"Content-Length: %d\r\n\r\n%s" % (len(UNAUTHORIZED), UNAUTHORIZED)
)
WEBSOCKET_EXEC = (
    "GET {path}/web/exec?command=id HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\nAuthorization: Bearer {token}\r\n\r\n"
)


def requests_counted(code: str, decision: str) -> float:
    labels = {"socket": "prod", "verb": "list", "code": code, "decision": decision}
    return REGISTRY.get_sample_value("connector_requests_total", labels) or 0.0


async def wait_for_event(h: ProxyHarness, request_id: str | None = None, code: int | None = None) -> dict:
    """The ResponseComplete event of a request (by id, or by code), waiting up to 10 s for it to be written."""
    for _ in range(500):
        for event in h.audit_events():
            if event["stage"] == "ResponseComplete" and request_id in (None, event["request_id"]):
                if code in (None, event["code"]):
                    return event
        await asyncio.sleep(0.02)
    raise AssertionError(f"no ResponseComplete event for request {request_id} / code {code}")


# --- an exception nothing foresaw ------------------------------------------------------------------------


async def test_an_unexpected_exception_is_a_500_status_audited_counted_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_decide(*args: object, **kwargs: object) -> None:
        raise RuntimeError("policy store at /etc/secret-place exploded")

    async with ProxyHarness(tmp_path) as h:
        monkeypatch.setattr(PolicyEngine, "decide", broken_decide)
        before = requests_counted("500", "rejected")
        with caplog.at_level(logging.ERROR, logger="connector.proxy.handler"):
            status, headers, body = await h.request("GET", PODS)
        assert status == 500 and headers["Content-Type"].startswith("application/json")
        request_id = headers["X-Connector-Request-Id"]
        doc = json.loads(body)
        assert (doc["kind"], doc["reason"], doc["code"]) == ("Status", "InternalError", 500)
        assert request_id in doc["message"] and doc["message"].startswith("socket prod: internal error")
        assert "secret-place" not in body.decode() and "RuntimeError" not in body.decode()

        event = h.audit_events()[-1]
        assert (event["request_id"], event["code"], event["user"]) == (request_id, 500, "alice")
        assert event["error"] == "internal error: RuntimeError: policy store at /etc/secret-place exploded"
        assert requests_counted("500", "rejected") == before + 1
        [record] = [r for r in caplog.records if request_id in r.getMessage()]
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert h.upstream.requests == []
        monkeypatch.undo()
        assert (await h.request("GET", PODS))[0] == 200  # the connector keeps serving


async def test_a_cancellation_is_not_turned_into_an_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CancelledError is how aiohttp ends a handler whose client left, and how shutdown ends them: the
    catch-all must let it through (no 500 written), while the audit log still gets the request."""

    def cancelled_decide(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError

    async with ProxyHarness(tmp_path) as h:
        monkeypatch.setattr(PolicyEngine, "decide", cancelled_decide)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await h.request("GET", PODS)
        event = await wait_for_event(h)
        assert event["code"] == 499 and "cancelled before the response" in event["error"]


async def test_a_client_leaving_before_the_cluster_answers_is_still_audited(tmp_path: Path) -> None:
    """The request reached the cluster (it may have been a delete): its client hanging up must not make it
    vanish from the audit log."""
    async with ProxyHarness(tmp_path) as h:
        request = asyncio.ensure_future(h.request("GET", "/sockets/prod/slow", user="bob"))
        for _ in range(500):
            if h.upstream.requests:
                break
            await asyncio.sleep(0.02)
        assert [r.path for r in h.upstream.requests] == ["/slow"]
        request.cancel()  # closes the client's connection; aiohttp then cancels the connector's handler
        with pytest.raises(asyncio.CancelledError):
            await request
        event = await wait_for_event(h)
        h.control.release.set()
        assert (event["user"], event["decision"], event["code"]) == ("bob", "allow", 499)
        assert event["path"] == "/sockets/prod/slow" and "cancelled before the response" in event["error"]


# --- the cluster refusing the connector's own credentials -----------------------------------------------


async def test_a_cluster_401_is_a_502_naming_the_connectors_credentials(tmp_path: Path) -> None:
    async with RawUpstream(CLUSTER_401, then="close") as up, ProxyHarness(tmp_path, cluster=up.cluster) as h:
        status, headers, body = await h.request("GET", PODS)
        assert status == 502
        doc = json.loads(body)
        assert doc["reason"] == "InternalError"
        assert doc["message"] == (
            "socket prod: the cluster refused the connector's credentials (HTTP 401); "
            "check the credentials configured for this socket and what the cluster grants them"
        )
        assert "WWW-Authenticate" not in headers
        event = h.audit_events()[-1]
        assert (event["code"], event["upstream_status"], event["decision"]) == (502, 401, "allow")
        assert event["upstream_audit_id"] == "cluster-audit-1" and "401" in event["error"]


async def test_an_eks_cluster_401_points_at_aws_auth_and_access_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # EKS tokens are signed locally, never sent to AWS
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    eks_policy = {"name": "ops-eks", "subjects": {"groups": ["ops"]}, "sockets": ["eks-prod"], "kubernetes": {}}
    policies = [*DEFAULT_POLICIES, eks_policy]
    async with RawUpstream(CLUSTER_401, then="close") as up, ProxyHarness(tmp_path, policies=policies) as h:
        assert h.connector is not None
        eks = EksCluster(
            socket_name="eks-prod", cluster_name="eks-prod", region="eu-west-1",
            arn="arn:aws:eks:eu-west-1:111122223333:cluster/eks-prod", endpoint=up.url,
            ca_data=base64.b64encode(up.ca.cert_pem).decode(), version="1.31", platform_version="eks.1",
            tags={}, authentication_mode="API", vpc_id="vpc-1",
        )  # fmt: skip
        h.connector._discovered([eks], [], [])
        with caplog.at_level(logging.ERROR, logger="connector.proxy.handler"):
            status, _, body = await h.request("GET", "/sockets/eks-prod/api/v1/pods", user="bob")
        assert status == 502
        assert json.loads(body)["message"] == (
            "socket eks-prod: the cluster refused the connector's credentials (HTTP 401); "
            "check the connector's cluster access (aws-auth mapping or EKS access entry)"
        )
        assert any("refused the connector's credentials" in r.getMessage() for r in caplog.records)


def rewrite_keeping_stamp(path: Path, token: str) -> None:
    """Replace the token in place with one of the same length and put the mtime back: to a stat() the
    file looks unchanged, so only an explicit invalidation makes the connector read it again."""
    before = path.stat()
    with path.open("r+b") as f:
        assert len(token.encode()) == before.st_size
        f.write(token.encode())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)


async def test_a_cluster_401_makes_the_connector_fetch_its_credentials_again_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 401 the next request re-reads the token file instead of keeping the refused token until its
    normal refresh; a cluster that keeps refusing does not make the connector fetch again per request."""
    monkeypatch.setattr(upstream_module, "INVALIDATE_INTERVAL_SECONDS", 3600.0)  # no second invalidation here
    accepted = {"Bearer token-new-1"}

    async def cluster(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") in accepted:
            return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": []})
        return web.Response(status=401, body=UNAUTHORIZED, content_type="application/json")

    token = tmp_path / "cluster-token"
    token.write_text("token-old-1")
    async with RecordingHttpsServer(handler=cluster) as srv:
        socket = {"token": None, "token_file": str(token)}
        async with ProxyHarness(tmp_path, cluster=Cluster(srv.url, srv.ca_pem, "unused"), socket=socket) as h:
            assert (await h.request("GET", PODS, user="bob"))[0] == 502
            rewrite_keeping_stamp(token, "token-new-1")
            assert (await h.request("GET", PODS, user="bob"))[0] == 200
            # The cluster now refuses that token too; the token was already fetched again once within
            # the interval, so the connector keeps the one it has rather than re-reading per request.
            accepted.clear()
            rewrite_keeping_stamp(token, "token-new-2")
            assert (await h.request("GET", PODS, user="bob"))[0] == 502
            assert (await h.request("GET", PODS, user="bob"))[0] == 502
        sent = [r.headers["Authorization"] for r in srv.requests]
        assert sent == ["Bearer token-old-1", "Bearer token-new-1", "Bearer token-new-1", "Bearer token-new-1"]


@pytest.mark.parametrize("protocol", ["websocket", "SPDY/3.1"])
async def test_a_cluster_401_to_an_upgrade_is_a_502_and_no_tunnel(tmp_path: Path, protocol: str) -> None:
    async with RawUpstream(CLUSTER_401, then="close") as up, ProxyHarness(tmp_path, cluster=up.cluster) as h:
        request = WEBSOCKET_EXEC.format(path=PODS, token=h.tokens["alice"])
        if protocol != "websocket":
            request = request.replace("Upgrade: websocket", "Upgrade: SPDY/3.1")
        status, data = await h.raw(request.encode())  # reads until the connector closes the connection
        assert status == 502 and b" 101 " not in data
        assert b"the cluster refused the connector's credentials (HTTP 401)" in data
        event = h.audit_events()[-1]
        assert (event["code"], event["upstream_status"], event.get("stream")) == (502, 401, None)


async def test_a_cluster_403_stays_a_403(tmp_path: Path) -> None:
    """A 403 is the cluster's RBAC speaking (about the connector, or about the user with impersonation)."""
    forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    async with RawUpstream(forbidden, then="close") as up, ProxyHarness(tmp_path, cluster=up.cluster) as h:
        status, _, body = await h.request("GET", PODS)
        assert (status, body) == (403, b"{}")
        assert h.audit_events()[-1]["upstream_status"] == 403


# --- denials of discovery requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accept", "user", "status", "text"),
    [
        # read by client-go with Result.Raw(): only a text body is printed
        ("/api", AGGREGATED, "carol", 403, True),
        ("/apis", AGGREGATED, "carol", 403, True),
        ("/version", "application/json, */*", "carol", 403, True),
        ("/apis", AGGREGATED, None, 401, True),
        # a client that accepts only JSON, and the paths client-go decodes a Status on
        ("/api", "application/json", "carol", 403, False),
        ("/api/v1", "application/json, */*", "carol", 403, False),
        ("/apis/apps/v1", "application/json, */*", "carol", 403, False),
        (PODS.removeprefix("/sockets/prod"), "*/*", "carol", 403, False),
    ],
)
async def test_discovery_denials_come_in_a_form_the_client_can_print(
    tmp_path: Path, path: str, accept: str, user: str | None, status: int, text: bool
) -> None:
    async with ProxyHarness(tmp_path) as h:
        got, headers, body = await h.request("GET", f"/sockets/prod{path}", user=user, headers={"Accept": accept})
        assert got == status
        message = "no policy grants carol access to socket prod" if user else None
        if text:
            assert headers["Content-Type"].startswith("text/plain")
            if message:
                assert body.decode() == message + "\n"
        else:
            assert headers["Content-Type"] == "application/json"
            doc = json.loads(body)
            assert doc["kind"] == "Status" and doc["code"] == status
            if message:
                assert message in doc["message"]
        assert h.upstream.requests == []
