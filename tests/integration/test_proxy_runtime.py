"""The running connector: reload (file change, SIGHUP), discovered sockets, client certificates, `serve`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client import REGISTRY

from connector.aws.discovery import EksCluster
from connector.pki import generate_ca, issue_certificate
from tests.support.proxy_harness import DEFAULT_POLICIES, ProxyHarness

KUBE_SYSTEM = "/sockets/prod/api/v1/namespaces/kube-system/pods"
REPO = Path(__file__).resolve().parents[2]


def reloads(outcome: str) -> float:
    return REGISTRY.get_sample_value("connector_config_reloads_total", {"outcome": outcome}) or 0.0


async def eventually(check) -> None:
    deadline = time.monotonic() + 10
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_policy_change_in_the_file_applies_to_the_next_request(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path) as h:
        assert (await h.request("GET", KUBE_SYSTEM))[0] == 403
        applied = reloads("applied")
        config = h.config()
        config["policies"] = [
            {"name": "dev-all", "subjects": {"groups": ["dev"]}, "sockets": ["prod"], "kubernetes": {}},
        ]
        h.write_config(config)

        async def allowed() -> bool:
            return (await h.request("GET", KUBE_SYSTEM))[0] == 200

        await eventually(allowed)
        assert reloads("applied") == applied + 1
        assert h.audit_events()[-1]["policy"] == "dev-all"


async def test_a_config_that_does_not_validate_is_refused_and_the_running_one_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ProxyHarness(tmp_path) as h:
        rejected = reloads("rejected")
        config = h.config()
        config["policies"] = [{"name": "broken", "subjects": {"groups": ["dev"]}, "sockets": ["prod"], "verbz": 1}]
        caplog.set_level(logging.ERROR)
        h.write_config(config)

        async def refused() -> bool:
            return reloads("rejected") == rejected + 1

        await eventually(refused)
        assert any("policies[0].verbz" in r.getMessage() and ":" in r.getMessage() for r in caplog.records)
        assert (await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods"))[0] == 200
        assert (await h.request("GET", KUBE_SYSTEM))[0] == 403


async def test_removed_socket_stops_being_served_and_its_watch_ends_cleanly(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path) as h:
        watch = await h.session().get(
            h.url + "/sockets/prod/api/v1/namespaces/default/pods?watch=1", headers=h.auth("alice")
        )
        await asyncio.wait_for(watch.content.readline(), 10)
        config = h.config()
        config["sockets"] = {}
        h.write_config(config)
        assert h.connector is not None
        assert await h.connector.reload("test")
        assert await asyncio.wait_for(watch.content.read(), 10) == b""  # a clean end: clients re-watch
        assert (await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods"))[0] == 404
        watch_end = [e for e in await h.settled_audit() if e.get("stream") == "watch"][-1]
        assert watch_end["stage"] == "ResponseComplete" and "ended by the connector" in watch_end["error"]


def cluster(h: ProxyHarness, name: str, **tags: str) -> EksCluster:
    return EksCluster(
        socket_name=name,
        cluster_name=name,
        region="eu-west-1",
        arn=f"arn:aws:eks:eu-west-1:111122223333:cluster/{name}",
        endpoint=h.upstream.url,
        ca_data=base64.b64encode(h.upstream.ca_pem).decode(),
        version="1.31",
        platform_version="eks.1",
        tags=dict(tags),
        authentication_mode="API",
        vpc_id="vpc-1",
    )


async def test_discovered_clusters_come_and_go_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EKS tokens are presigned URLs: signing needs credentials, not the network.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    eks_policy = {
        "name": "dev-eks",
        "subjects": {"groups": ["dev"]},
        "socket_tags": {"team": ["dev"]},
        "kubernetes": {},
    }
    policies = [*DEFAULT_POLICIES, eks_policy]
    async with ProxyHarness(tmp_path, policies=policies) as h:
        assert h.connector is not None
        path = "/sockets/eks-dev/api/v1/namespaces/default/pods"
        assert (await h.request("GET", path))[0] == 404
        h.connector._discovered([cluster(h, "eks-dev", team="dev")], [], [])
        status, _, _ = await h.request("GET", path)
        assert status == 200
        assert h.upstream.requests[-1].headers["Authorization"].startswith("Bearer k8s-aws-v1.")
        listed = json.loads((await h.request("GET", "/v1/sockets"))[2])["sockets"]
        eks = next(s for s in listed if s["name"] == "eks-dev")
        assert (eks["type"], eks["region"], eks["source"]) == ("aws_eks", "eu-west-1", "discovery")

        watch = await h.session().get(h.url + path + "?watch=1", headers=h.auth("alice"))
        await asyncio.wait_for(watch.content.readline(), 10)
        # a scan that only marks it stale keeps it, and keeps its streams
        stale = cluster(h, "eks-dev", team="dev")
        h.connector._discovered([], [EksCluster(**{**stale.__dict__, "stale": True, "error": "throttled"})], [])
        assert (await h.request("GET", path))[0] == 200
        assert h.connector.ctx is not None
        entry = h.connector.ctx.registry.get("eks-dev")
        assert entry is not None and len(entry.streams) == 1 and not entry.retired
        h.connector._discovered([], [], [stale])
        assert await asyncio.wait_for(watch.content.read(), 10) == b""
        assert (await h.request("GET", path))[0] == 404


async def test_client_certificates_authenticate_and_other_cas_do_not(tmp_path: Path) -> None:
    ca = generate_ca("client-ca")
    ca_file = tmp_path / "client-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    config = {"authentication": {"client_certificates": {"client_ca_file": str(ca_file)}}}
    async with ProxyHarness(tmp_path, config=config) as h:
        good = issue_certificate(ca, "dora", organizations=("dev",), client=True)
        stranger = issue_certificate(generate_ca("other"), "eve", organizations=("ops",), client=True)

        async def get_as(pair) -> int:
            (tmp_path / "c.crt").write_bytes(pair.cert_pem)
            (tmp_path / "c.key").write_bytes(pair.key_pem)
            context = h.ssl_context()
            context.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s:
                async with s.get(h.url + "/sockets/prod/api/v1/namespaces/default/pods") as resp:
                    return resp.status

        assert await get_as(good) == 200
        assert h.audit_events()[-1]["user"] == "dora" and h.audit_events()[-1]["auth_method"] == "client-cert"
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            await get_as(stranger)
        # service tokens still work: the certificate is optional
        assert (await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods"))[0] == 200

        # the listener trusts the CA it started with, so changing it needs a restart
        other = tmp_path / "other-ca.crt"
        other.write_bytes(generate_ca("x").cert_pem)
        changed = h.config()
        changed["authentication"]["client_certificates"]["client_ca_file"] = str(other)
        h.write_config(changed)
        assert h.connector is not None
        assert not await h.connector.reload("test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_reloads_on_sighup_and_shuts_down_on_sigterm(tmp_path: Path) -> None:
    h = ProxyHarness(tmp_path)
    config = h.config()
    # the upstream is not started: this test is about the process, and a socket pointing nowhere
    config["server"]["listen"] = f"127.0.0.1:{free_port()}"
    config["sockets"]["prod"]["server"] = "https://127.0.0.1:9"
    h.write_config(config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "serve", "--config", str(h.config_path)],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        lines = []
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            match = re.search(r"serving on (https://\S+)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        context = ssl.create_default_context(cafile=str(tmp_path / "state" / "ca.crt"))
        import urllib.request

        with urllib.request.urlopen(url + "/healthz", context=context, timeout=10) as resp:
            assert resp.read() == b"ok\n"
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not any("config reloaded (SIGHUP)" in x for x in lines) and time.monotonic() < deadline:
            lines.append(proc.stderr.readline())
        assert any("config reloaded (SIGHUP)" in x for x in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_with_a_bad_config_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"server": {"listen": "nowhere"}, "audit": {"fsync": "sometimes"}}))
    result = subprocess.run(
        [sys.executable, "-m", "connector", "serve", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{path}:" in result.stderr and "server.listen" in result.stderr and "audit.fsync" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_its_metrics_port_taken_exits_1_in_one_line_before_serving(tmp_path: Path, workers: str) -> None:
    h = ProxyHarness(tmp_path)
    config = h.config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config["server"]["metrics_listen"] = f"127.0.0.1:{port}"
        config["sockets"]["prod"]["server"] = "https://127.0.0.1:9"
        h.write_config(config)
        result = subprocess.run(
            [sys.executable, "-m", "connector", "serve", "--config", str(h.config_path), "--workers", workers],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    [error] = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert error.startswith("python -m connector serve: cannot listen: ") and str(port) in error, result.stderr
    assert "Traceback" not in result.stderr and "serving on" not in result.stderr
    assert "worker 0" not in result.stderr  # no worker was started


async def test_metrics_listen_off_serves_no_metrics(tmp_path: Path) -> None:
    async with ProxyHarness(tmp_path, config={"server": {"metrics_listen": "off"}}) as h:
        assert h.connector is not None and h.connector.metrics_url == ""
        assert (await h.request("GET", "/metrics", user=None))[0] == 404
