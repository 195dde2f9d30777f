"""The sandbox's policies seen through the real kubectl: bob (developers: read in default and dev, exec
in dev; in prod's default only with an approved request: test_tour_access.py) is refused with the
policy's reason, carol (no policy) everywhere, the `scratch` cluster is not
exposed at all, and `auth can-i` / `auth whoami` are answered by the connector, not the cluster (whose
RBAC lets the connector do anything). Every refusal is in the audit log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.world import CLUSTERS
from tests.support.sandbox_process import REPO_ROOT, AuditLog, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

PROD, STAGING = (c.socket for c in CLUSTERS if c.exposed)
(SCRATCH,) = (c.socket for c in CLUSTERS if not c.exposed)
BOB, CAROL = "bob@example.com", "carol@example.com"
WEB_POD = "web-7d4b9c-x2k4q"


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_bob_is_refused_delete_in_default_with_the_policys_reason(
    kubectl: Callable[..., Kubectl], audit: AuditLog, version: str
) -> None:
    k = kubectl(version)
    since = audit.mark()
    done = k.run("delete", "pod", WEB_POD, "-n", "default", context=f"bob@{PROD}")
    reason = f'socket {PROD}: policy developers: no rule allows delete pods "{WEB_POD}" in namespace default'
    assert (done.returncode, done.stderr) == (1, f"Error from server (Forbidden): {reason}\n")
    event = audit.wait(since, user=BOB, socket=PROD, verb="delete", resource="pods", name=WEB_POD)
    assert (event["decision"], event["code"], event["reason"]) == ("deny", 403, reason)
    assert "upstream_status" not in event  # refused before anything reached the cluster
    still_there = k.run("get", "pod", WEB_POD, "-n", "default", "-o", "name", context=f"bob@{PROD}")
    assert still_there.stdout == f"pod/{WEB_POD}\n", still_there.stderr


EXEC_TRANSPORTS = [
    pytest.param("1.29", {}, id="1.29-spdy"),
    pytest.param("1.33", {}, id="1.33-websocket"),
    pytest.param("1.33", {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, id="1.33-spdy"),
]


@pytest.mark.parametrize(("version", "env"), EXEC_TRANSPORTS)
def test_bob_is_refused_exec_in_default_and_allowed_in_dev(
    kubectl: Callable[..., Kubectl], audit: AuditLog, version: str, env: dict[str, str]
) -> None:
    k = kubectl(version)
    since = audit.mark()
    # In staging: in prod, exec in default is the sandbox's just-in-time access demo.
    done = k.run("exec", "-n", "default", WEB_POD, "--", "true", context=f"bob@{STAGING}", env=env)
    reason = f'socket {STAGING}: policy developers: no rule allows create pods/exec "{WEB_POD}" in namespace default'
    assert (done.returncode, done.stderr) == (1, f"Error from server (Forbidden): {reason}\n")
    denied = audit.wait(since, user=BOB, socket=STAGING, verb="create", subresource="exec", namespace="default")
    assert (denied["decision"], denied["code"], denied["reason"]) == ("deny", 403, reason)

    done = k.run("exec", "-n", "dev", "api-0", "--", "sh", "-c", "echo hello from $HOSTNAME", context=f"bob@{PROD}",
                 env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from api-0\n", "")
    allowed = audit.wait(since, user=BOB, socket=PROD, verb="create", subresource="exec", namespace="dev")
    assert (allowed["decision"], allowed["policy"], allowed["rule"]) == ("allow", "developers", 1)


@pytest.mark.parametrize(
    ("socket_name", "args"),
    [
        (PROD, ("get", "pods")),
        (PROD, ("get", "pods", "-A")),
        (STAGING, ("get", "configmaps", "-n", "dev")),
        (STAGING, ("exec", "-n", "dev", "api-0", "--", "true")),
    ],
)
def test_carol_is_refused_everywhere(
    kubectl: Callable[..., Kubectl], audit: AuditLog, socket_name: str, args: tuple[str, ...]
) -> None:
    since = audit.mark()
    # A fresh HOME: no discovery cached by an earlier user, so even discovery must be refused.
    done = kubectl("1.33", fresh_home=True).run(*args, context=f"carol@{socket_name}")
    assert done.returncode == 1
    assert "Error from server (Forbidden)" in done.stderr, done.stderr
    audit.wait(since, user=CAROL, socket=socket_name)
    refused = audit.find(since, user=CAROL, socket=socket_name)
    assert {(e["decision"], e["code"]) for e in refused} == {("deny", 403)}
    assert {e["reason"] for e in refused} == {f"no policy grants {CAROL} access to socket {socket_name}"}


def test_carol_reads_the_reason_once_discovery_is_cached(kubectl: Callable[..., Kubectl]) -> None:
    """kubectl reports a refused *discovery* request as `Forbidden: unknown` (it cannot read a Status
    from the discovery response); with discovery cached, the refusal of the request itself shows."""
    k = kubectl("1.33", fresh_home=True)
    assert k.run("get", "pods", context=f"alice@{PROD}").returncode == 0
    done = k.run("get", "pods", context=f"carol@{PROD}")
    assert (done.returncode, done.stderr) == (
        1, f"Error from server (Forbidden): no policy grants {CAROL} access to socket {PROD}\n"
    )


def test_scratch_is_not_exposed(sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog) -> None:
    # Not among the sockets alice may use (and she may use every socket there is).
    listed = subprocess.run(
        [sys.executable, "-m", "connector", "client", "sockets", "--connector", sandbox["connector"]["url"],
         "--ca-file", sandbox["connector"]["ca_file"], "--profile", "alice", "--cache-dir", sandbox["token_cache"],
         "--output", "json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert sorted(s["name"] for s in json.loads(listed.stdout)) == sorted([PROD, STAGING])
    # Asked for anyway, the connector refuses the socket, naming the ones alice may use: nothing reaches
    # the cluster. On discovery paths the refusal is a 403, whose message client-go prints (a 404's it
    # replaces with its own text); elsewhere it is a 404.
    since = audit.mark()
    server = f"{sandbox['connector']['url']}/sockets/{SCRATCH}"
    done = kubectl("dispatcher").run("--server", server, "get", "pods", context=f"alice@{PROD}")
    assert done.returncode == 1
    reason = f"socket {SCRATCH} not found; sockets you may use: {', '.join(sorted([PROD, STAGING]))}"
    assert f"Error from server (Forbidden): {reason}" in done.stderr, done.stderr
    rejected = audit.wait(since, socket=SCRATCH)
    assert (rejected["user"], rejected["decision"], rejected["code"]) == ("alice@example.com", "rejected", 403)
    assert rejected["reason"] == reason


def test_auth_whoami_is_answered_by_the_connector(kubectl: Callable[..., Kubectl], audit: AuditLog) -> None:
    since = audit.mark()
    done = kubectl("1.33").run("auth", "whoami", "-o", "json", context=f"bob@{PROD}")
    assert done.returncode == 0, done.stderr
    user = json.loads(done.stdout)["status"]["userInfo"]
    # The cluster would name the connector's own identity (eks-access-connector).
    assert (user["username"], user["groups"]) == (BOB, ["developers"])
    event = audit.wait(since, user=BOB, socket=PROD, verb="create", resource="selfsubjectreviews")
    assert (event["decision"], event["reason"]) == ("allow", "SelfSubjectReview answered by the connector")
    assert "upstream_status" not in event


# The cluster would say yes to all of these: its RBAC gives the connector everything.
CAN_I = [
    (("list", "pods", "-n", "default"), "yes"),
    (("create", "pods", "--subresource=exec", "-n", "dev"), "yes"),
    (("delete", "pods", "-n", "default"), "no - policy developers: no rule allows delete pods in namespace default"),
    (("get", "secrets", "-n", "default"), "no - policy developers: no rule allows get secrets in namespace default"),
    (
        ("create", "pods", "--subresource=exec", "-n", "default"),
        "no - no policy allows create pods/exec in namespace default: developers: no matching rule; "
        "prod-exec: applies only with an approved access request",
    ),
]


@pytest.mark.parametrize(("question", "answer"), CAN_I)
def test_auth_can_i_is_answered_by_the_connector(
    kubectl: Callable[..., Kubectl], audit: AuditLog, question: tuple[str, ...], answer: str
) -> None:
    since = audit.mark()
    done = kubectl("1.33").run("auth", "can-i", *question, context=f"bob@{PROD}")
    assert (done.returncode, done.stdout.strip()) == (0 if answer == "yes" else 1, answer), done.stderr
    event = audit.wait(since, user=BOB, socket=PROD, verb="create", resource="selfsubjectaccessreviews")
    assert (event["decision"], event["reason"]) == ("allow", "SelfSubjectAccessReview answered by the connector")
    assert "upstream_status" not in event
