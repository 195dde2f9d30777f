"""The whole just-in-time loop with the real kubectl and the real `access` CLI: bob's exec is refused
with the exact command, bob runs it, alice approves from her terminal, bob's next exec works without
logging in again, and after a revoke it is refused again."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from connector.client.token_store import StoredTokens, TokenStore
from tests.integration.test_proxy_kubectl import Kubectl, World, emulated_prod
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
