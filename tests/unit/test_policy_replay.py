"""`policy replay` and `policy suggest` over synthetic audit logs, through the real CLI entry point."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ALICE_READ = """
policies:
  - name: dev-read
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes:
      rules:
        - {verbs: [get, list], resources: [pods], namespaces: [dev]}
"""
NOBODY = "policies: []\n"
ALL = """
policies:
  - name: all
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes: {}
"""
NONE = """
policies:
  - name: none
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes: {rules: []}
"""
OFFICE = """
policies:
  - name: office
    subjects: {users: [alice]}
    sockets: [prod]
    conditions: {source_ips: [10.0.0.0/24]}
    kubernetes: {}
"""


def event(decision: str, path: str, *, user: str = "alice", ip: str = "10.0.0.5", rid: str = "r1", **extra) -> str:
    return json.dumps(
        {
            "request_id": rid,
            "stage": "ResponseComplete",
            "decision": decision,
            "code": 200,
            "method": extra.pop("method", "GET"),
            "path": "/sockets/prod" + path,
            "query": extra.pop("query", ""),
            "source_ip": ip,
            "time": extra.pop("time", "2026-11-30T10:00:00.000000Z"),
            "user": user,
            "groups": [],
            "socket": "prod",
            **extra,
        }
    )


def run(tmp_path: Path, *args: str, config: str | None = None, log: list[str] | None = None):
    argv = [sys.executable, "-m", "connector", "policy", *args]
    if config is not None:
        (tmp_path / "new.yaml").write_text(config)
        argv += ["--config", str(tmp_path / "new.yaml")]
    if log is not None:
        (tmp_path / "audit.log").write_text("\n".join(log) + "\n")
        argv += ["--audit", str(tmp_path / "audit.log")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


POD_LIST = "/api/v1/namespaces/dev/pods"


@pytest.mark.parametrize(
    ("config", "logged", "path", "ip", "expected"),
    [
        (ALICE_READ, "allow", POD_LIST, "10.0.0.5", 0),
        (ALICE_READ, "deny", POD_LIST, "10.0.0.5", 1),
        (ALICE_READ, "allow", "/api/v1/namespaces/prod/pods", "10.0.0.5", 1),
        (NOBODY, "allow", POD_LIST, "10.0.0.5", 1),
        (ALL, "deny", "/api/v1/namespaces/prod/secrets", "10.0.0.5", 1),
        (NONE, "allow", POD_LIST, "10.0.0.5", 1),
        (NONE, "deny", POD_LIST, "10.0.0.5", 0),
        (OFFICE, "allow", POD_LIST, "10.0.0.255", 0),
        (OFFICE, "allow", POD_LIST, "10.0.1.0", 1),
    ],
)
def test_replay_table(tmp_path, config, logged, path, ip, expected):
    done = run(tmp_path, "replay", config=config, log=[event(logged, path, ip=ip)])
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr


def test_json_output_and_malformed_lines(tmp_path):
    log = [event("allow", "/api/v1/namespaces/prod/pods", rid="x1"), "{not json", event("rejected", "/api")]
    done = run(tmp_path, "replay", "--output", "json", config=ALICE_READ, log=log)
    assert done.returncode == 1
    change = json.loads(done.stdout.splitlines()[0])
    assert (change["request_id"], change["before"], change["after"]) == ("x1", "allow", "deny")
    assert "audit.log:2" in done.stderr
    summary = json.loads(done.stderr.splitlines()[-1])
    assert summary["malformed"] == 1 and summary["skipped"] == 1 and summary["newly_denied"] == 1


def test_rotated_gzip_file(tmp_path):
    rotated = tmp_path / "audit.log.1.gz"
    with gzip.open(rotated, "wt") as f:
        f.write(event("allow", "/api/v1/namespaces/prod/pods") + "\n")
    (tmp_path / "new.yaml").write_text(ALICE_READ)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "policy",
            "replay",
            "--config",
            str(tmp_path / "new.yaml"),
            "--audit",
            str(rotated),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "newly denied" in done.stdout


def test_bad_input_exits_2_in_one_line(tmp_path):
    done = run(tmp_path, "replay", "--audit", str(tmp_path / "missing.log"), config=ALICE_READ)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_suggestion_replays_without_change(tmp_path):
    log = [
        event("allow", "/api/v1/namespaces/dev/pods/web-1", rid="a"),
        event("allow", "/apis/apps/v1/namespaces/dev/deployments", rid="b"),
        event("allow", "/api/v1/pods", rid="c"),
        event("deny", "/api/v1/namespaces/dev/secrets", rid="d"),
    ]
    suggested = run(tmp_path, "suggest", "--user", "alice", log=log)
    assert suggested.returncode == 0, suggested.stderr
    assert "covers" in suggested.stdout
    done = run(tmp_path, "replay", config=suggested.stdout, log=log)
    assert done.returncode == 0, done.stdout + done.stderr
