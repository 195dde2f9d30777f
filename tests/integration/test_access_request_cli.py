"""The whole just-in-time loop with the real kubectl and the real `access` CLI: bob's exec is refused
with the exact command, bob runs it, alice approves from her terminal, bob's next exec works without
logging in again, and after a revoke it is refused again. Streams that only a grant allowed end with
it: an open exec when the request is revoked, a watch when it expires."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from connector.client.token_store import StoredTokens, TokenStore
from tests.integration.test_proxy_kubectl import Kubectl, World, emulated_prod, read_until
from tests.support.oidc import running_issuer
from tests.support.proxy_harness import ProxyHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID = "eks-access-connector"
POLICIES = [
    {
        "name": "developers",
        "subjects": {"groups": ["developers"]},
        "sockets": ["prod"],
        "kubernetes": {
            "rules": [
                {"verbs": ["get", "list"], "resources": ["pods"], "namespaces": ["default"]},
                {"verbs": ["create"], "resources": ["pods/exec"], "namespaces": ["default"], "requires_approval": True},
                {"verbs": ["watch"], "resources": ["pods"], "namespaces": ["default"], "requires_approval": True},
            ]
        },
    }
]
ACCESS_REQUESTS = [
    {
        "name": "prod-exec",
        "requesters": {"groups": ["developers"]},
        "approvers": {"groups": ["platform-admins"]},
        "grants": ["developers"],
        "max_duration": "4h",
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("access-request-cli")
    async with emulated_prod(tmp, {"name": "main", "image": "busybox"}) as (cluster, target):
        async with running_issuer() as issuer:
            config = {
                "authentication": {"oidc": [{"issuer": issuer.url, "client_id": CLIENT_ID}]},
                "access_requests": ACCESS_REQUESTS,
                "access_store": {"file": str(tmp / "access-requests.json")},
            }
            async with ProxyHarness(tmp, policies=POLICIES, cluster=target, config=config) as harness:
                world = World(harness, cluster, tmp)
                tokens = {user: issuer.issue_id_token(user) for user in ("alice", "bob")}
                caches = {}
                for user, id_token in tokens.items():
                    caches[user] = tmp / f"cache-{user}"
                    stored = StoredTokens(harness.url, issuer.url, CLIENT_ID, id_token, None, issuer.url + "/token")
                    TokenStore(caches[user]).save(stored, "default")
                kubeconfig = tmp / "kubeconfig"
                kubeconfig.write_text(yaml.safe_dump(_kubeconfig(harness, tokens)))
                yield world, caches, kubeconfig


def _kubeconfig(harness: ProxyHarness, tokens: dict[str, str]) -> dict[str, Any]:
    cluster = {"server": f"{harness.url}/sockets/prod", "certificate-authority": str(harness.ca_file)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}} for user, token in tokens.items()],
        "contexts": [{"name": user, "context": {"cluster": "prod", "user": user}} for user in tokens],
    }


async def access(world: Any, user: str, *args: str) -> tuple[int, str, str]:
    """`python -m connector access ...` as `user` (their login cache), against the connector's CA."""
    w, caches, _ = world
    command = list(args)
    if "--connector" not in command:
        command[1:1] = ["--connector", w.harness.url]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "access", *command,
        "--cache-dir", str(caches[user]), "--ca-file", str(w.harness.ca_file),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def bob_exec(world: Any) -> tuple[int, str, str]:
    w, _, kubeconfig = world
    return await Kubectl(w, 33, env={"KUBECONFIG": str(kubeconfig)}).run("exec", "web", "--", "echo", "hi", user="bob")


@pytest.mark.kubectl
async def test_request_approve_exec_revoke(world: Any) -> None:
    code, _, err = await bob_exec(world)
    assert code == 1
    found = re.search(r'needs approval: run "(python -m connector access request [^"]+)"', err)
    assert found, err
    argv = shlex.split(found.group(1))
    assert argv[:5] == ["python", "-m", "connector", "access", "request"]
    argv = [("INC-7: stuck job" if a == "..." else a) for a in argv[5:]]

    code, out, err = await access(world, "bob", "request", *argv, "--output", "json")
    assert code == 0, err
    filed = json.loads(out)
    assert filed["state"] == "pending" and filed["requester"] == "bob@example.com" and filed["name"] == "prod-exec"
    assert (await bob_exec(world))[0] == 1, "pending grants nothing"

    code, _, err = await access(world, "bob", "approve", filed["id"])
    assert code == 1 and "may not approve" in err and len(err.strip().splitlines()) == 1, err

    code, out, err = await access(world, "alice", "list", "--pending")
    assert code == 0, err
    assert filed["id"] in out and "INC-7: stuck job" in out
    code, out, err = await access(world, "alice", "approve", filed["id"], "--reason", "go", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["state"] == "approved"

    code, out, err = await bob_exec(world)
    assert code == 0, err
    assert out.strip() == "hi"

    code, out, err = await access(world, "alice", "revoke", filed["id"], "--output", "json")
    assert code == 0 and json.loads(out)["state"] == "revoked", err
    code, _, err = await bob_exec(world)
    assert code == 1 and found.group(0) in err, err


@pytest.mark.kubectl
async def test_bad_input_is_one_line_and_exit_2(world: Any) -> None:
    code, _, err = await access(world, "bob", "request", "nope", "--reason", "x", "--for", "1h")
    assert code == 2 and err.strip().startswith('error: unknown access request "nope"') and "\n" not in err.strip()
    code, _, err = await access(world, "bob", "request", "prod-exec", "--reason", "x", "--for", "5h")
    assert code == 2 and "at most 4h" in err
    code, _, err = await access(world, "alice", "deny", "ar-000000000000")
    assert code == 2 and "--reason" in err
    code, _, err = await access(world, "alice", "show", "ar-000000000000")
    assert code == 1 and err.strip() == "error: no access request ar-000000000000"


async def approved_for_bob(world: Any, duration: str) -> str:
    """File a request as bob and have alice approve it; its id."""
    code, out, err = await access(world, "bob", "request", "prod-exec", "--reason", "INC-8", "--for", duration,
                                  "--output", "json")  # fmt: skip
    assert code == 0, err
    request_id = json.loads(out)["id"]
    code, _, err = await access(world, "alice", "approve", request_id)
    assert code == 0, err
    return request_id


async def stream_end(world: Any, request_id: str, stream: str) -> dict[str, Any]:
    """The ResponseComplete event of bob's `stream` allowed under `request_id`."""
    events = await world[0].harness.settled_audit()
    ends = [
        e for e in events
        if e["stage"] == "ResponseComplete" and e.get("stream") == stream and e.get("access_request") == request_id
    ]  # fmt: skip
    assert len(ends) == 1, ends
    return ends[0]


@pytest.mark.kubectl
async def test_open_exec_ends_when_its_grant_is_revoked(world: Any) -> None:
    w, _, kubeconfig = world
    request_id = await approved_for_bob(world, "1h")
    kubectl = Kubectl(w, 33, env={"KUBECONFIG": str(kubeconfig)})
    process = await kubectl.start("exec", "web", "--", "sh", "-c", "echo ready; sleep 300", user="bob")
    try:
        assert process.stdout is not None
        await read_until(process.stdout, "ready")
        code, _, err = await access(world, "alice", "revoke", request_id, "--reason", "done")
        assert code == 0, err
        await asyncio.wait_for(process.wait(), 30)  # the session would otherwise last 300 s
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    end = await stream_end(world, request_id, "exec")
    assert end["user"] == "bob@example.com" and end["decision"] == "allow"
    assert end["error"] == f"ended by the connector (access request {request_id} was revoked by alice@example.com)"


@pytest.mark.kubectl
async def test_watch_ends_at_the_expiry_of_its_grant(world: Any) -> None:
    w, _, kubeconfig = world
    request_id = await approved_for_bob(world, "8s")
    kubectl = Kubectl(w, 33, env={"KUBECONFIG": str(kubeconfig)})
    process = await kubectl.start("get", "pods", "--watch", user="bob")
    try:
        assert process.stdout is not None
        await read_until(process.stdout, r"(?m)^web\s")
        await asyncio.wait_for(process.wait(), 60)  # a watch of kubectl's lasts until the server ends it
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    end = await stream_end(world, request_id, "watch")
    assert end["error"].startswith(f"ended by the connector (access request {request_id} expired at "), end
    code, out, _ = await access(world, "bob", "show", request_id, "--output", "json")
    assert code == 0 and json.loads(out)["state"] == "expired"


@contextlib.asynccontextmanager
async def waiting_request(world: Any, *extra: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Bob's `access request --wait` running in the background, and the id it filed (read from stderr)."""
    w, caches, _ = world
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "access", "request", "--connector", w.harness.url,
        "prod-exec", "--reason", "INC-9", "--for", "1h", "--wait", *extra,
        "--cache-dir", str(caches["bob"]), "--ca-file", str(w.harness.ca_file),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        found = re.match(r"Filed access request (ar-[0-9a-f]{12}); waiting", first)
        assert found, first
        yield process, found.group(1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.kubectl
async def test_wait_blocks_until_approved_then_exits_0(world: Any) -> None:
    async with waiting_request(world, "--output", "json") as (process, request_id):
        code, _, err = await access(world, "alice", "approve", request_id, "--reason", "go")
        assert code == 0, err
        code, out, err = await finished(process)
    assert code == 0, err
    assert json.loads(out)["state"] == "approved" and json.loads(out)["id"] == request_id
    assert f"Access request {request_id} approved by alice@example.com; it grants access until " in err
    assert (await bob_exec(world))[0] == 0
    assert (await access(world, "bob", "revoke", request_id))[0] == 0


@pytest.mark.kubectl
async def test_wait_exits_1_when_denied(world: Any) -> None:
    async with waiting_request(world) as (process, request_id):
        code, _, err = await access(world, "alice", "deny", request_id, "--reason", "use the runbook")
        assert code == 0, err
        code, out, err = await finished(process)
    assert code == 1, err
    assert f"Access request {request_id} denied by alice@example.com: use the runbook." in err
    assert request_id in out and "denied" in out  # the table of the decided request
