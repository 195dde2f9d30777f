"""Console page times at scale: the sessions list with 100,000 recorded sessions and a large audit
log, one session's page, and the Access page with many policies and sockets.

The data is generated in a temp dir: N recordings (asciicast v2, as the recorder writes them) in a
recordings directory, and an audit log with each session's two events (built by the connector's own
`AuditEvent`) among ordinary request events up to the size asked for. Then:
- the session index is built from nothing (what the first start on existing sinks costs);
- a real connector (connector.proxy.runtime.Connector, in this process) serves the console over
  HTTPS on 127.0.0.1; a browser session is made in its session store (sign-in is not what is measured)
  and each page is fetched with aiohttp, `--repeat` times after one warm-up: median and p95;
- a session is added to the sinks and the list page after it is timed (the catch-up cost), twice:
  the first change after start also loads the names of the indexed recordings.

    python -m bench.console [--sessions 100000] [--audit-mb 1024] [--policies 200] [--sockets 50]
                            [--repeat 20] [--json]

Figures depend on the machine and on what else runs on it; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from connector.audit.events import AuditEvent, RequestAttributes
from connector.audit.sessions_cli import Sources
from connector.console.browser_sessions import COOKIE
from connector.console.session_index import SessionIndex, index_path
from connector.identity import Identity

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
USERS = 50
SPREAD_DAYS = 100
REVIEWER = "bench-reviewer@example.com"


def _session_id(n: int) -> str:
    return f"bench-{n:08d}"


def _user(n: int) -> str:
    return f"user-{n % USERS:02d}@example.com"


def _socket(n: int, sockets: int) -> str:
    return f"cluster-{n % sockets:03d}"


def _started(n: int, sessions: int) -> dt.datetime:
    return START + dt.timedelta(seconds=n * SPREAD_DAYS * 86400 / max(1, sessions))


def _session_events(n: int, sessions: int, sockets: int, recording: Path) -> bytes:
    started = _started(n, sessions)
    request = RequestAttributes(verb="create", api_version="v1", namespace="shop", resource="pods",
                                subresource="exec", name=f"web-{n % 7}", is_resource_request=True)  # fmt: skip
    common: dict[str, Any] = {
        "request_id": _session_id(n), "decision": "allow", "method": "GET", "source_ip": "10.0.0.1",
        "path": f"/sockets/{_socket(n, sockets)}/api/v1/namespaces/shop/pods/web-{n % 7}/exec",
        "query": "command=sh&command=-c&command=echo+hi&container=app&stdout=true", "user": _user(n),
        "groups": ("dev",), "socket": _socket(n, sockets), "request": request, "stream": "exec",
    }  # fmt: skip
    first = AuditEvent(stage="ResponseStarted", code=101, time=started.isoformat().replace("+00:00", "Z"), **common)
    ended = (started + dt.timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    last = AuditEvent(stage="ResponseComplete", code=101, time=ended, recording=str(recording), **common)
    return first.to_line() + last.to_line()


def _filler_line(sockets: int) -> bytes:
    """An ordinary request's event (a pod list), the bulk of a real audit log."""
    request = RequestAttributes(verb="list", api_version="v1", namespace="shop", resource="pods",
                                is_resource_request=True)  # fmt: skip
    return AuditEvent(
        request_id="00000000-filler", stage="ResponseComplete", decision="allow", code=200, method="GET",
        path="/sockets/cluster-000/api/v1/namespaces/shop/pods", source_ip="10.0.0.2", user=_user(1),
        groups=("dev",), socket=_socket(0, sockets), request=request, policy="dev-read", rule=0,
        upstream_status=200, bytes_out=61_440, duration_ms=12.5, user_agent="kubectl/v1.33.0",
    ).to_line()  # fmt: skip


def write_recording(directory: Path, n: int, sessions: int, sockets: int) -> Path:
    path = directory / f"{_session_id(n)}.cast"
    header = {"version": 2, "width": 80, "height": 24, "timestamp": int(_started(n, sessions).timestamp()),
              "connector": {"session_id": _session_id(n), "user": _user(n), "socket": _socket(n, sockets),
                            "namespace": "shop", "pod": f"web-{n % 7}", "container": "app", "subresource": "exec",
                            "command": ["sh", "-c", "echo hi"]}}  # fmt: skip
    events = [[0.1, "o", f"hello from session {n}\r\n"], [0.2, "m", "exit status 0"]]
    path.write_text("\n".join(json.dumps(x) for x in [header, *events]) + "\n")
    return path


def generate(root: Path, sessions: int, audit_mb: int, sockets: int) -> Sources:
    """The recordings and the audit log (`audit_mb` MB, or just the sessions' events if that is more)."""
    recordings = root / "recordings"
    recordings.mkdir()
    filler = _filler_line(sockets)
    with (root / "audit.log").open("wb") as audit:
        fillers_total = audit_mb * 1024 * 1024 // len(filler)
        per_session = fillers_total // max(1, sessions)
        for n in range(sessions):
            events = _session_events(n, sessions, sockets, write_recording(recordings, n, sessions, sockets))
            audit.write(events)
            audit.write(filler * max(0, per_session - len(events) // len(filler)))
        audit.write(filler * max(0, (audit_mb * 1024 * 1024 - audit.tell()) // len(filler)))
    return Sources(audit_log=root / "audit.log", directory=recordings, s3=None)


def config(root: Path, sources: Sources, policies: int, sockets: int) -> dict[str, Any]:
    socket_names = [_socket(n, sockets) for n in range(sockets)]
    return {
        "server": {"listen": "127.0.0.1:0", "state_dir": str(root / "state")},
        # Sign-in is not measured: the issuer is never reached (the bench makes its browser session itself).
        "authentication": {"oidc": [{"issuer": "https://127.0.0.1:9", "client_id": "bench"}]},
        "console": {"enabled": True},
        "audit": {"file": str(sources.audit_log)},
        "recordings": {"dir": str(sources.directory)},
        "sockets": {
            name: {"service_type": "standard", "server": "https://127.0.0.1:9", "token": "unused"}
            for name in socket_names
        },
        "policies": [
            {"name": "reviewers", "subjects": {"users": [REVIEWER]}, "console": {"sessions": "read", "access": "read"}},
            *(_team_policy(p, socket_names) for p in range(policies)),
        ],
    }


def _team_policy(p: int, socket_names: list[str]) -> dict[str, Any]:
    return {
        "name": f"team-{p:03d}",
        "subjects": {"groups": [f"team-{p:03d}"], "users": [_user(p)]},
        "sockets": sorted({socket_names[p % len(socket_names)], socket_names[(p + 1) % len(socket_names)]}),
        "kubernetes": {"rules": [{"verbs": ["get", "list"], "resources": ["pods"], "namespaces": ["*"]}]},
    }


async def _time_page(http: aiohttp.ClientSession, url: str, repeat: int, *, warm_up: bool = True) -> dict[str, float]:
    times = []
    for attempt in range(repeat + warm_up):
        began = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status} {body[:300]!r}")
        if attempt or not warm_up:
            times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p95_ms": times[max(0, round(0.95 * len(times)) - 1)],
            "kb": len(body) / 1024}  # fmt: skip


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from connector.proxy.runtime import Connector

    results: dict[str, Any] = {"sessions": args.sessions}
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        sources = generate(root, args.sessions, args.audit_mb, args.sockets)
        results["audit_log_mb"] = sources.audit_log.stat().st_size / 1024 / 1024
        results["generate_s"] = time.perf_counter() - began

        index = SessionIndex(index_path(root / "state", sources), sources)
        began = time.perf_counter()
        warnings = index.catch_up()
        results["index_build_s"] = time.perf_counter() - began
        began = time.perf_counter()
        index.catch_up()
        results["catch_up_unchanged_ms"] = (time.perf_counter() - began) * 1000
        if warnings:
            print("warnings:", *warnings[:5], sep="\n  ", file=sys.stderr)

        config_path = root / "connector.yaml"
        config_path.write_text(yaml.safe_dump(config(root, sources, args.policies, args.sockets)))
        connector = Connector(config_path)
        await connector.start()
        try:
            assert connector.ctx is not None
            cookie = await connector.ctx.browser_sessions.create(Identity(user=REVIEWER, method="oidc"))
            headers = {"Cookie": f"{COOKIE}={cookie}"}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), headers=headers) as http:
                base = connector.url + "/console/"
                middle = _session_id(args.sessions // 2)
                since = (_started(args.sessions, args.sessions) - dt.timedelta(days=7)).strftime("%Y-%m-%d")
                pages = {
                    "sessions list, first page": "sessions",
                    "sessions list, page 1000": "sessions?page=1000",
                    "sessions list, user + socket + since filter": f"sessions?user={_user(3)}&socket="
                    f"{_socket(3, args.sockets)}&since={since}",
                    "session page (player + audit events)": f"sessions/{middle}",
                    "session .cast download": f"sessions/{middle}.cast",
                    f"access page ({args.policies + 1} policies x {args.sockets} sockets)": "access",
                    "access explain": f"access?user={_user(5)}&groups=team-005&socket={_socket(5, args.sockets)}"
                    "&method=GET&path=/api/v1/namespaces/shop/pods",
                }
                results["pages"] = {name: await _time_page(http, base + path, args.repeat) for name, path in
                                    pages.items()}  # fmt: skip
                # The first change after start also loads the names already indexed; later ones do not.
                for n, name in ((args.sessions, "first after start"), (args.sessions + 1, "later")):
                    with sources.audit_log.open("ab") as audit:
                        recording = write_recording(sources.directory, n, args.sessions, args.sockets)
                        audit.write(_session_events(n, args.sessions, args.sockets, recording))
                    results["pages"][f"sessions list after a new session ({name})"] = await _time_page(
                        http, base + "sessions", 1, warm_up=False
                    )
        finally:
            await connector.shutdown()
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['sessions']:,} sessions, audit log {results['audit_log_mb']:,.0f} MB "
        f"(generated in {results['generate_s']:.0f} s)",
        f"index built from nothing: {results['index_build_s']:.1f} s; catch-up with nothing new: "
        f"{results['catch_up_unchanged_ms']:.1f} ms",
        "",
        "| page | median ms | p95 ms | KB |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in results["pages"].items():
        lines.append(f"| {name} | {figures['median_ms']:.1f} | {figures['p95_ms']:.1f} | {figures['kb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--audit-mb", type=int, default=1024, help="audit log size to generate, in MB")
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20, help="fetches per page after one warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("sessions", "sockets", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.audit_mb < 0 or args.policies < 0:
        parser.error("--audit-mb and --policies cannot be negative")
    results = asyncio.run(measure(args))
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
