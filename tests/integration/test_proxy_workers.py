"""`serve --workers N`: several serving processes on one port that behave as one connector.

The supervisor runs in the test process (so its state can be read), its workers are real
`python -m connector serve` processes. Requests go over fresh connections, which the kernel spreads
over the workers (SO_REUSEPORT); where a check must hold on every worker, it is made on enough fresh
connections that a worker left out would show.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from connector.metrics import DISCOVERY_SCANS
from connector.proxy.worker import STREAMS
from connector.proxy.workers import Supervisor
from tests.integration.test_connection_bounds import tls_connection
from tests.integration.test_proxy_runtime import cluster, free_port
from tests.support.aws import create_mock_cluster, mocked_aws
from tests.support.console import register_console, sign_in
from tests.support.oidc import running_issuer
from tests.support.proxy_harness import DEFAULT_POLICIES, ProxyHarness

PODS = "/sockets/prod/api/v1/namespaces/default/pods"
KUBE_SYSTEM = "/sockets/prod/api/v1/namespaces/kube-system/pods"
REPO = Path(__file__).resolve().parents[2]
# Fresh connections per check that every worker answers alike: all of them landing on one of two
# workers has a chance of 2^-(FRESH - 1).
FRESH = 24


class WorkersHarness(ProxyHarness):
    """ProxyHarness with the connector as a supervisor of `workers` worker processes."""

    def __init__(self, tmp: Path, *, workers: int = 2, **kwargs: object):
        super().__init__(tmp, **kwargs)  # type: ignore[arg-type]
        self.workers = workers

    async def __aenter__(self) -> WorkersHarness:
        if self.cluster is None:
            await self.upstream.start()
        self.write_config(self.config())
        self.connector = Supervisor(self.config_path, workers=self.workers)
        await self.connector.start()
        return self

    @property
    def supervisor(self) -> Supervisor:
        assert isinstance(self.connector, Supervisor)
        return self.connector

    def fresh_session(self, limit: int = 32) -> aiohttp.ClientSession:
        """A client that opens a new connection per request, so the kernel picks a worker each time."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context(), force_close=True, limit=limit)
        )

    async def statuses(self, path: str, user: str = "alice", count: int = FRESH) -> list[int]:
        async with self.fresh_session() as session:
            statuses = []
            for _ in range(count):
                async with session.get(URL(self.url + path, encoded=True), headers=self.auth(user)) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            return statuses

    async def worker_pids(self) -> set[str]:
        """The pids of the workers serving now, as the supervisor's metrics listener tells them."""
        text = await self.metrics()
        return set(re.findall(r'^connector_worker\{index="\d+",pid="(\d+)"\} 1\.0$', text, re.M))


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def eventually(check, seconds: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "audit",
    [{}, {"fail_closed": True, "fsync": "always"}],
    ids=["lines-sent-without-waiting", "each-line-answered-after-fsync"],
)
async def test_both_workers_serve_and_every_audit_line_is_whole_under_load(
    tmp_path: Path, audit: dict[str, object]
) -> None:
    async with WorkersHarness(tmp_path, config={"audit": audit}) as h:
        pids = await h.worker_pids()
        assert pids == {str(w.process.pid) for w in h.supervisor._workers if w.process is not None}
        assert len(pids) == 2 and str(os.getpid()) not in pids
        async with h.fresh_session(limit=32) as session:

            async def one() -> int:
                async with session.get(URL(h.url + PODS, encoded=True), headers=h.auth("alice")) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(one() for _ in range(400)))
        assert statuses == [200] * 400
    # The supervisor closed its audit log after the last worker exited: every line is in the file.
    lines = h.audit_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    events = [json.loads(line) for line in lines[:-1]]
    pods = [e for e in events if e["path"] == PODS]
    assert len(pods) == 400, len(pods)
    assert len({e["request_id"] for e in pods}) == 400


async def test_per_user_stream_limit_holds_across_workers_and_a_killed_worker_frees_its_slots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connector.proxy.workers")
    limits = {"server": {"limits": {"max_streams_per_user": 1, "max_streams": 100}}}
    async with WorkersHarness(tmp_path, config=limits) as h:
        watch = await h.session().get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth("alice"))
        assert watch.status == 200
        await asyncio.wait_for(watch.content.readline(), 10)
        # Whichever worker a second watch reaches, alice has her one stream.
        assert await h.statuses(f"{PODS}?watch=1") == [429] * FRESH
        bobs = await h.session().get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth("bob"))
        assert bobs.status == 200  # the limit is per user
        bobs.close()

        holder = next(w for w in h.supervisor._workers if w.held[STREAMS, "alice"])
        assert holder.process is not None
        killed = holder.process.pid
        os.kill(killed, signal.SIGKILL)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(watch.content.read(), 10)

        async def replaced() -> bool:
            return holder.process is not None and holder.process.pid != killed and holder.ready.is_set()

        await eventually(replaced)
        assert any(
            re.fullmatch(
                rf"worker {holder.index} \(pid {killed}\) exited with code -9; starting a new one.*", r.message
            )
            for r in caplog.records
        ), [r.message for r in caplog.records]
        assert h.supervisor._streams.open_for("alice") == 0
        watch2 = await h.session().get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth("alice"))
        assert watch2.status == 200
        watch2.close()
        pids = await h.worker_pids()
        assert len(pids) == 2 and str(killed) not in pids


LISTS = 'connector_requests_total{code="200",decision="allow",socket="prod",verb="list"}'
WATCHES = 'connector_open_streams{kind="watch",socket="prod"}'


async def test_the_metrics_listener_sums_every_worker_and_keeps_a_dead_workers_counters_not_its_gauges(
    tmp_path: Path,
) -> None:
    async with WorkersHarness(tmp_path) as h:
        before = await h.metrics()
        # One kept-alive connection: its five lists and then its watch are served by the worker that
        # accepted it...
        kept = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=h.ssl_context(), limit=1))
        for _ in range(5):
            async with kept.get(URL(h.url + PODS, encoded=True), headers=h.auth("alice")) as resp:
                assert resp.status == 200
        watch = await kept.get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth("alice"))
        assert watch.status == 200
        await asyncio.wait_for(watch.content.readline(), 10)
        # ...and these, over fresh connections, by both.
        assert await h.statuses(PODS) == [200] * FRESH
        # A worker counts a request once its answer is sent, so the sum may lag the client for a moment.
        during = ""

        async def all_counted() -> bool:
            nonlocal during
            during = await h.metrics()
            return (metric(during, LISTS), metric(during, WATCHES)) == (
                metric(before, LISTS) + 5 + FRESH,
                metric(before, WATCHES) + 1,
            )

        await eventually(all_counted)

        holder = next(w for w in h.supervisor._workers if w.held[STREAMS, "alice"])
        assert holder.process is not None
        killed = holder.process.pid
        os.kill(killed, signal.SIGKILL)

        async def replaced() -> bool:
            return holder.process is not None and holder.process.pid != killed and holder.ready.is_set()

        await eventually(replaced)
        after = await h.metrics()
        await kept.close()
        # The dead worker's five lists (at least) are still counted; its watch is not open any more.
        assert metric(after, LISTS) == metric(during, LISTS)
        assert metric(after, WATCHES) == metric(before, WATCHES)
        pids = await h.worker_pids()
        assert str(killed) not in pids and str(holder.process.pid) in pids and len(pids) == 2


async def test_connection_limits_hold_across_workers(tmp_path: Path) -> None:
    limits = {"server": {"limits": {"max_connections": 10, "max_connections_per_ip": 2, "header_read_seconds": 60}}}
    async with WorkersHarness(tmp_path, config=limits) as h:
        held = [await tls_connection(h) for _ in range(2)]
        for _ in range(FRESH):  # whichever worker the kernel picks, 127.0.0.1 has its two
            with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError)):
                _, writer = await tls_connection(h)
                writer.close()
        assert h.supervisor._connections is not None and h.supervisor._connections.acquire("127.0.0.1") is not None
        _, writer = held.pop()
        writer.close()

        async def accepted() -> bool:
            try:
                reader, writer = await tls_connection(h)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
                return False
            held.append((reader, writer))
            return True

        await eventually(accepted)
        for _, w in held:
            w.close()


async def test_readyz_passes_on_every_worker_and_sigterm_ends_open_watches_cleanly(tmp_path: Path) -> None:
    async with WorkersHarness(tmp_path) as h:
        async with h.fresh_session() as session:
            for _ in range(FRESH):
                async with session.get(h.url + "/readyz") as resp:
                    assert resp.status == 200, await resp.text()
        watch = await h.session().get(URL(h.url + f"{PODS}?watch=1", encoded=True), headers=h.auth("alice"))
        assert watch.status == 200
        await asyncio.wait_for(watch.content.readline(), 10)
        shutdown = asyncio.create_task(h.supervisor.shutdown())
        assert await asyncio.wait_for(watch.content.read(), 30) == b""  # the chunked body ends: a clean end
        await shutdown
        assert all(w.process is not None and w.process.returncode == 0 for w in h.supervisor._workers)
        h.connector = None  # shut down already
    # The watch's end, written by a worker during its shutdown, is in the log the supervisor closed last.
    ends = [json.loads(line) for line in h.audit_path.read_text().splitlines()]
    assert any(e.get("stream") == "watch" and e["stage"] == "ResponseComplete" for e in ends)


async def test_discovery_runs_in_the_supervisor_only_and_every_worker_serves_what_it_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mocked_aws(monkeypatch, tmp_path):
        create_mock_cluster("dev", "eu-west-1", tags={"team": "dev"})
        eks_policy = {
            "name": "dev-eks",
            "subjects": {"groups": ["dev"]},
            "socket_tags": {"team": ["dev"]},
            "kubernetes": {},
        }
        config = {"discovery": {"aws_eks": [{"regions": ["eu-west-1"], "scan_interval_minutes": 60}]}}
        scans_before = DISCOVERY_SCANS.labels(outcome="ok")._value.get()
        async with WorkersHarness(tmp_path, config=config, policies=[*DEFAULT_POLICIES, eks_policy]) as h:
            # One scan, in this process (the mocked AWS is reachable from here only); none in the workers.
            assert DISCOVERY_SCANS.labels(outcome="ok")._value.get() == scans_before + 1
            assert h.supervisor._discovery is not None and len(h.supervisor._discovery.current()) == 1
            # The served sum is this process's count alone: no worker scanned.
            assert metric(await h.metrics(), 'connector_discovery_scans_total{outcome="ok"}') == scans_before + 1

            # What the supervisor's scanner reports, every worker serves (here: pointed at the test upstream).
            path = "/sockets/eks-dev/api/v1/namespaces/default/pods"
            assert await h.statuses(path) == [404] * FRESH
            h.supervisor._discovered([cluster(h, "eks-dev", team="dev")], [], [])
            await eventually(lambda: _all_equal(h, path, 200))
            assert await h.statuses(path) == [200] * FRESH
            h.supervisor._discovered([], [], [cluster(h, "eks-dev", team="dev")])
            await eventually(lambda: _all_equal(h, path, 404))


async def _all_equal(h: WorkersHarness, path: str, status: int) -> bool:
    return await h.statuses(path, count=4) == [status] * 4


async def test_a_policy_change_in_the_file_reaches_every_worker(tmp_path: Path) -> None:
    async with WorkersHarness(tmp_path) as h:
        assert await h.statuses(KUBE_SYSTEM) == [403] * FRESH
        config = h.config()
        config["policies"] = [
            {"name": "dev-all", "subjects": {"groups": ["dev"]}, "sockets": ["prod"], "kubernetes": {}},
        ]
        h.write_config(config)
        # The supervisor applies the file once it has been told every worker applied it.
        await eventually(lambda: _all_equal(h, KUBE_SYSTEM, 200))
        assert await h.statuses(KUBE_SYSTEM) == [200] * FRESH


def test_serve_with_workers_reloads_on_sighup_in_every_worker_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    h = ProxyHarness(tmp_path)
    config = h.config()
    config["server"]["listen"] = f"127.0.0.1:{free_port()}"
    config["sockets"]["prod"]["server"] = "https://127.0.0.1:9"  # nothing upstream: this is about processes
    h.write_config(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "serve", "--config", str(h.config_path), "--workers", "2"],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: list[str] = []

        def read_until(pattern: str, count: int = 1) -> None:
            deadline = time.monotonic() + 30
            while len([x for x in lines if re.search(pattern, x)]) < count and time.monotonic() < deadline:
                lines.append(proc.stderr.readline())
            assert len([x for x in lines if re.search(pattern, x)]) >= count, "".join(lines)

        read_until(r"serving on https://\S+ with 2 workers")
        proc.send_signal(signal.SIGHUP)
        read_until(r"worker \d \(pid \d+\) connector\.proxy\.runtime: config reloaded \(SIGHUP\)", 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read()
        assert "Traceback" not in "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_bad_worker_count_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector", "serve", "--config", str(tmp_path / "c.yaml"), "--workers", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers: must be between 1 and 256, not 0" in result.stderr and "Traceback" not in result.stderr


async def test_a_console_session_signed_in_on_one_worker_holds_on_every_worker(tmp_path: Path) -> None:
    """The kernel spreads a browser's connections over the workers: the console's session store is the
    supervisor's, so a sign-in made through one worker is known to all, and so is signing out."""
    async with running_issuer() as issuer:
        config = {
            "authentication": {"oidc": [{"issuer": issuer.url, "client_id": "eks-access-connector"}]},
            "console": {"enabled": True},
            "recordings": {"dir": str(tmp_path / "recordings")},
        }
        reviewers = {"name": "reviewers", "subjects": {"users": ["alice@example.com"]}, "console": {"sessions": "read"}}
        async with WorkersHarness(tmp_path, policies=[*DEFAULT_POLICIES, reviewers], config=config) as h:
            register_console(issuer, h.url)
            jar = aiohttp.CookieJar(unsafe=True)
            fresh = aiohttp.TCPConnector(ssl=h.ssl_context(), force_close=True)
            async with aiohttp.ClientSession(connector=fresh, cookie_jar=jar) as session:
                status, page, _ = await sign_in(session, h.url, "alice")
                assert status == 200, page
                for _ in range(FRESH):  # each on a new connection: every worker gets some
                    async with session.get(h.url + "/console/sessions") as resp:
                        assert resp.status == 200, await resp.text()
                async with session.get(h.url + "/console/") as resp:
                    csrf = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
                assert csrf is not None
                async with session.post(h.url + "/console/logout", data={"csrf_token": csrf.group(1)}) as resp:
                    assert resp.status == 200, await resp.text()
                for _ in range(FRESH):
                    async with session.get(h.url + "/console/sessions") as resp:
                        assert resp.status == 401
