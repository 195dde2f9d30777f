"""`policy replay` and `policy suggest` on the sandbox's own audit log: bob reads pods in default
through the real kubectl, the developers policy is edited to drop `default`, and the replay names
exactly those reads as newly denied; the suggestion for bob replays without change."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.world import CLUSTERS
from tests.support.sandbox_process import REPO_ROOT, AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD = next(c.socket for c in CLUSTERS if c.exposed)
BOB = "bob@example.com"


def policy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", "policy", *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )


def test_replay_of_an_edited_policy_over_the_sandboxs_log(
    sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog, tmp_path: Path
) -> None:
    k = kubectl("1.33")
    since = audit.mark()
    done = k.run("get", "pods", "-n", "default", "-o", "name", context=f"bob@{PROD}")
    assert done.returncode == 0, done.stderr
    read = audit.wait(since, user=BOB, socket=PROD, verb="list", resource="pods", namespace="default")
    assert read["decision"] == "allow"

    config = yaml.safe_load(Path(sandbox["connector"]["config"]).read_text())
    (developers,) = (p for p in config["policies"] if p["name"] == "developers")
    for rule in developers["kubernetes"]["rules"]:
        rule["namespaces"] = [ns for ns in rule.get("namespaces", ["*"]) if ns != "default"] or ["dev"]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))

    replayed = policy("replay", "--audit", sandbox["audit_log"], "--config", str(edited), "--output", "json")
    assert replayed.returncode == 1, replayed.stderr
    changes = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert read["request_id"] in {c["request_id"] for c in changes}
    assert all(c["user"] == BOB and c["after"] == "deny" for c in changes), changes
    unchanged = policy("replay", "--audit", sandbox["audit_log"], "--config", sandbox["connector"]["config"])
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr

    suggestion = policy("suggest", "--audit", sandbox["audit_log"], "--user", BOB)
    assert suggestion.returncode == 0, suggestion.stderr
    config["policies"] = yaml.safe_load(suggestion.stdout)["policies"]
    # The sandbox's access_requests grant policies the suggestion does not have: the connector (and so
    # replay) refuses such a config.
    config.pop("access_requests", None)
    suggested = tmp_path / "suggested.yaml"
    suggested.write_text(yaml.safe_dump(config))
    again = policy("replay", "--audit", sandbox["audit_log"], "--config", str(suggested), "--user", BOB)
    assert again.returncode == 0, suggestion.stdout + again.stdout
