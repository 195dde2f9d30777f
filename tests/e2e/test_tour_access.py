"""The tour's just-in-time access step works as printed, with the real kubectl against the sandbox:
bob is refused exec in prod with the exact command to run, files the request with `--wait`, alice
sees and approves it, bob's next exec works without logging in again, alice's revoke ends bob's
open session, and a grant's expiry ends another; the audit log tells the whole story."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.world import PROD_SOCKET
from tests.e2e.test_tour import _tour_commands
from tests.support.sandbox_process import REPO_ROOT, AuditLog, Kubectl, SandboxProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

BOB = "bob@example.com"
COMMAND_SECONDS = 60


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)


def with_id(argv: list[str], request_id: str) -> list[str]:
    return [request_id if a == "REQUEST_ID" else a for a in argv]


def waiting(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """`access request --wait` in the background, and the id it filed (its first line on stderr)."""
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    first = process.stderr.readline()  # the CLI prints it before its first poll
    found = re.match(r"Filed access request (ar-[0-9a-f]{12}); waiting", first)
    if not found:
        process.kill()
        raise AssertionError(f"{argv!r} printed {first!r}: {process.communicate()}")
    return process, found.group(1)


def test_the_tours_request_approve_exec_revoke(
    sandbox_process: SandboxProcess, sandbox: dict[str, Any], kubectl: Callable[..., Kubectl], audit: AuditLog
) -> None:
    commands = _tour_commands(sandbox_process)
    refused_exec, granted_exec = commands["kubectl"][3:]
    request, pending, approve, revoke = commands["python"][2:]
    k = kubectl("1.33")
    since = audit.mark()

    done = k.run(*refused_exec[1:])
    assert done.returncode == 1
    found = re.search(r'needs approval: run "(python -m connector access request [^"]+)"', done.stderr)
    assert found, done.stderr
    step = shlex.split(found.group(1))[5:]
    assert step == ["--connector", sandbox["connector"]["url"], "prod-break-glass", "--reason", "...", "--for", "1h"]
    assert request[request.index("--connector") + 1] == sandbox["connector"]["url"] and "prod-break-glass" in request

    # The step-up rule of the same request: deleting a pod in dev needs it too.
    done = k.run("delete", "pod", "api-0", "-n", "dev", context=f"bob@{PROD_SOCKET}")
    assert done.returncode == 1 and f'needs approval: run "{found.group(1)}"' in done.stderr, done.stderr

    process, request_id = waiting(request)
    try:
        listed = run(pending)
        assert listed.returncode == 0, listed.stderr
        assert re.search(rf"^{request_id}\s+prod-break-glass\s+{BOB}\s+pending\s", listed.stdout, re.M), listed.stdout
        approved = run(with_id(approve, request_id))
        assert approved.returncode == 0, approved.stderr
        out, err = process.communicate(timeout=COMMAND_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"Access request {request_id} approved by alice@example.com" in err and "approved" in out

    done = k.run(*granted_exec[1:])
    assert (done.returncode, done.stdout) == (0, "hello from web-7d4b9c-x2k4q\n"), done.stderr
    allowed = audit.wait(since, user=BOB, socket=PROD_SOCKET, subresource="exec", stage="ResponseComplete",
                         access_request=request_id)  # fmt: skip
    assert (allowed["decision"], allowed["policy"]) == ("allow", "prod-exec")

    with k.running("exec", "web-7d4b9c-x2k4q", "--", "sh", "-c", "echo ready; sleep 300",
                   context=f"bob@{PROD_SOCKET}") as session:  # fmt: skip
        assert session.line() == "ready\n"
        revoked = run(with_id(revoke, request_id))
        assert revoked.returncode == 0, revoked.stderr
        # Ended by the connector, not after 300 s (over SPDY kubectl may still exit 0): else TimeoutExpired.
        session.process.wait(COMMAND_SECONDS)
    why = f"ended by the connector (access request {request_id} was revoked by alice@example.com)"
    ended = audit.wait(since, user=BOB, subresource="exec", stage="ResponseComplete", access_request=request_id,
                       error=why)  # fmt: skip
    assert ended["decision"] == "allow"
    assert k.run(*refused_exec[1:]).returncode == 1

    story = audit.find(since, access_request=request_id)
    changes = [e["access_change"]["action"] for e in story if "access_change" in e]
    assert changes == ["create", "approve", "revoke"]

    # On real clusters the request lives in the home cluster's etcd, as the AccessRequest it became.
    home = sandbox["clusters"]["prod"].get("admin_kubeconfig")
    if home is not None:
        admin = Kubectl(k.binary, Path(home), k.home, cwd=k.cwd, env={})
        got = admin.run("get", "accessrequests.access.eks-connector.io", request_id, "-n", "eks-access-connector",
                        "-o", "json")  # fmt: skip
        assert got.returncode == 0, got.stderr
        stored = json.loads(got.stdout)
        assert stored["spec"]["requester"] == BOB and stored["status"]["state"] == "revoked", stored


def test_an_open_exec_ends_when_its_grant_expires(
    sandbox_process: SandboxProcess, kubectl: Callable[..., Kubectl], audit: AuditLog
) -> None:
    request, _, approve, _ = _tour_commands(sandbox_process)["python"][2:]
    short = [a for a in request if a != "--wait"]
    short[short.index("--for") + 1] = "12s"  # long enough to open the exec, short to wait for
    filed = run([*short, "--output", "json"])
    assert filed.returncode == 0, filed.stderr
    request_id = json.loads(filed.stdout)["id"]
    since = audit.mark()
    approved = run(with_id(approve, request_id))
    assert approved.returncode == 0, approved.stderr
    with kubectl("1.33").running("exec", "web-7d4b9c-x2k4q", "--", "sh", "-c", "echo ready; sleep 300",
                                 context=f"bob@{PROD_SOCKET}") as session:  # fmt: skip
        assert session.line() == "ready\n", "".join(session.stderr)
        session.process.wait(COMMAND_SECONDS)  # ended at the expiry, not after 300 s: else TimeoutExpired
    why = f"ended by the connector (access request {request_id} expired at "
    # (Against a 1.29 apiserver kubectl first tries a websocket, which ends at once with no error.)
    audit.wait(since, user=BOB, subresource="exec", stage="ResponseComplete", access_request=request_id,
               error=lambda error: isinstance(error, str) and error.startswith(why))  # fmt: skip
