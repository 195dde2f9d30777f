"""`python -m connector policy check`: exit codes, JSON output and error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import main

CONFIG = """\
server: {ignored: by policy check}
policies:
  - name: dev-read
    subjects: {users: [alice@example.com], groups: [developers]}
    sockets: [prod]
    conditions:
      source_ips: [10.0.0.0/8]
    kubernetes:
      rules:
        - namespaces: [dev]
          verbs: [create]
          resources: [pods/exec]
          resource_names: ["api-*"]
  - name: ops
    subjects: {groups: [ops]}
    socket_tags: {env: [staging]}
    conditions:
      time: {hours: "08:00-18:00", timezone: UTC}
    kubernetes: {}
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "connector.yaml"
    path.write_text(CONFIG)
    return str(path)


def check(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["policy", "check", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_allowed_exits_0_with_the_decision_and_the_request(capsys, config):
    code, out, err = check(
        capsys, "--config", config, "--user", "alice@example.com", "--socket", "prod", "--source-ip", "10.1.1.1",
        "GET", "/api/v1/namespaces/dev/pods/api-1/exec?command=sh&stdin=true",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == {
        "allowed": True,
        "policy": "dev-read",
        "rule": 0,
        "reason": "allowed by policy dev-read rule 0",
        "request": {
            "is_resource_request": True,
            "path": "/api/v1/namespaces/dev/pods/api-1/exec",
            "verb": "get",
            "api_prefix": "api",
            "api_group": "",
            "api_version": "v1",
            "namespace": "dev",
            "resource": "pods",
            "subresource": "exec",
            "name": "api-1",
            "parts": ["pods", "api-1", "exec"],
        },
    }


def test_denied_exits_1_with_the_reason(capsys, config):
    code, out, err = check(
        capsys, "--config", config, "--user", "alice@example.com", "--socket", "prod", "--source-ip", "10.1.1.1",
        "post", "/api/v1/namespaces/dev/pods/web/exec",
    )  # fmt: skip
    assert (code, err) == (1, "")
    assert out is not None and out["allowed"] is False and out["policy"] is None and out["rule"] is None
    assert out["reason"] == 'policy dev-read: no rule allows create pods/exec "web" in namespace dev'
    assert out["request"]["verb"] == "create"


def test_source_ip_and_time_options(capsys, config):
    base = ["--config", config, "--user", "bob", "--group", "ops", "--socket", "s1", "--socket-tag", "env=staging"]
    code, out, _ = check(capsys, *base, "--at", "2026-05-04T12:00:00+02:00", "DELETE", "/api/v1/nodes/n1")
    assert code == 0 and out["policy"] == "ops"
    code, out, _ = check(capsys, *base, "--at", "2026-05-04T21:00:00Z", "DELETE", "/api/v1/nodes/n1")
    assert code == 1 and "it is mon 21:00 there" in out["reason"]
    code, out, _ = check(capsys, *base[:-1], "env=prod", "--at", "2026-05-04T09:00:00Z", "GET", "/api")
    assert code == 1 and out["reason"] == "no policy grants bob access to socket s1"
    code, out, _ = check(
        capsys, "--config", config, "--user", "alice@example.com", "--socket", "prod", "GET", "/api"
    )  # no --source-ip: a source_ips condition cannot hold
    assert code == 1 and "is not an IP address" in out["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["GET", "/api/v1/namespaces/%2e%2e/secrets"], "refuses this request with 400 Bad Request: "),
        (["GET", "/api/v1/pods?watch=0&watch=1"], "the query repeats 'watch'"),
        (["G-T", "/api"], "'G-T' is not an HTTP method"),
        (["--source-ip", "10.0.0.300", "GET", "/api"], "--source-ip '10.0.0.300' is not an IP address"),
        (["--at", "tomorrow", "GET", "/api"], "--at 'tomorrow' is not an ISO 8601 time"),
        (["--at", "2026-05-04T09:00:00", "GET", "/api"], "has no timezone"),
        (["--socket-tag", "env", "GET", "/api"], "--socket-tag 'env': write KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_the_reason_on_stderr(capsys, config, args, message):
    code, out, err = check(capsys, "--config", config, "--user", "u", "--socket", "prod", *args)
    assert (code, out) == (2, None)
    assert err.startswith("policy check: ") and message in err


def test_a_bad_config_exits_2_with_one_line_per_problem(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "policies:\n  - name: x\n    subjects: {users: [a]}\n    sockets: [s]\n"
        "    kubernetes:\n      rules:\n        - verbs: [gett]\n          namespaces: ['a*b']\n"
    )
    code, out, err = check(capsys, "--config", str(path), "--user", "a", "--socket", "s", "GET", "/api")
    assert (code, out) == (2, None)
    assert sorted(err.splitlines()) == [
        f'{path}:7: policies[0].kubernetes.rules[0].verbs[0]: unknown verb "gett" (known: get, list, watch, create, '
        "update, patch, delete, deletecollection, proxy, impersonate, escalate, bind, use, approve, sign, attest, "
        'or "*")',
        f'{path}:8: policies[0].kubernetes.rules[0].namespaces[0]: bad glob "a*b": use "*" alone or once at the end '
        '("prefix*")',
    ]


def test_duplicate_policy_names_are_a_config_error(capsys, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(CONFIG + "  - {name: ops, subjects: {users: [a]}, sockets: [s]}\n")
    code, _, err = check(capsys, "--config", str(path), "--user", "a", "--socket", "s", "GET", "/api")
    assert code == 2
    assert 'policy name "ops" is used by policies[1] and policies[2]' in err


def test_missing_config_and_missing_policies_key(capsys, tmp_path):
    code, _, err = check(capsys, "--config", str(tmp_path / "nope.yaml"), "--user", "a", "--socket", "s", "GET", "/")
    assert code == 2 and "config file not found" in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("server: {}\n")
    code, out, err = check(capsys, "--config", str(empty), "--user", "a", "--socket", "s", "GET", "/api")
    assert code == 1 and out["reason"] == "no policy grants a access to socket s"
    assert "has no `policies` key" in err


def test_missing_required_option_is_a_usage_error(capsys, config):
    with pytest.raises(SystemExit) as info:
        main(["policy", "check", "--config", config, "--socket", "s", "GET", "/api"])
    assert info.value.code == 2
    assert "--user" in capsys.readouterr().err


def test_runs_as_a_module(config):
    result = subprocess.run(
        [sys.executable, "-m", "connector", "policy", "check", "--config", config, "--user", "x", "--group", "ops",
         "--socket", "any", "--socket-tag", "env=staging", "--at", "2026-01-05T12:00:00Z", "GET", "/api/v1/pods"],
        capture_output=True, text=True, timeout=60, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["policy"] == "ops"
