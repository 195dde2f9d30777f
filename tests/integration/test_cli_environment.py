"""Every `python -m connector` subcommand answers missing or odd input and environment in one line,
never with a traceback: exit 2 for what the user gave wrongly, 1 for what failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLOSED = "https://127.0.0.1:1"

CASES = [
    # (environment, arguments, exit code, what the last line says)
    ({}, ["serve", "--config", "{tmp}/missing.yaml"], 2, "config file not found"),
    ({}, ["serve", "--config", "{tmp}"], 2, "cannot read config file"),
    ({}, ["sockets", "--config", "{tmp}/missing.yaml"], 2, "config file not found"),
    ({}, ["policy", "check", "--config", "{tmp}/missing.yaml", "--user", "a", "--socket", "s", "GET", "/api"], 2,
     "config file not found"),
    ({}, ["discover", "--regions", "us east"], 2, "is not an AWS region name"),
    ({"AWS_PROFILE": "nope"}, ["discover", "--regions", "us-east-1"], 1, "profile (nope) could not be found"),
    ({}, ["discover", "--regions", "us-east-1", "--role-arn", "arn:aws:iam::123456789012:role/x"], 1,
     "cannot list EKS clusters in us-east-1"),
    ({"AWS_PROFILE": "nope"}, ["token", "--cluster-name", "x", "--region", "us-east-1"], 1, "could not be found"),
    ({}, ["sessions", "list"], 2, "say where the sessions are"),
    ({}, ["client", "token", "--connector", CLOSED], 1, "not logged in"),
    ({"KUBERNETES_EXEC_INFO": '{"apiVersion": "x"}'}, ["client", "token", "--connector", CLOSED], 1,
     "KUBERNETES_EXEC_INFO asks for 'x'"),
    ({}, ["client", "login", "--connector", CLOSED], 1, "cannot reach the connector"),
    ({}, ["client", "login", "--connector", CLOSED, "--ca-file", "{tmp}/missing.pem"], 2, "missing.pem: no such file"),
    ({"KUBECONFIG": "{tmp}"}, ["client", "kubeconfig", "unset", "--connector", CLOSED], 2,
     "is a directory, not a kubeconfig file"),
    ({}, ["client", "login", "--connector", "ftp://x"], 2, "not a connector URL"),
]


@pytest.mark.parametrize(("env", "argv", "code", "message"), CASES, ids=[" ".join(c[1][:3]) for c in CASES])
def test_one_line_and_no_traceback(tmp_path: Path, env: dict[str, str], argv: list[str], code: int, message: str):
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
            "AWS_CONFIG_FILE": str(tmp_path / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-creds"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    if env.get("AWS_PROFILE"):
        base = {k: v for k, v in base.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    full_env = {**base, **{k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}}
    done = subprocess.run(
        [sys.executable, "-m", "connector", *(a.replace("{tmp}", str(tmp_path)) for a in argv)],
        cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert message in done.stderr.strip().splitlines()[-1], done.stderr
