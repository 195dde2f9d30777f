"""kubectl refused a step-up action sees the exact `access request` command to run, and no more."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.test_proxy_kubectl import Kubectl, World, emulated_prod
from tests.support.proxy_harness import ProxyHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLICIES = [
    {
        "name": "dev",
        "subjects": {"groups": ["dev"]},
        "sockets": ["prod"],
        "kubernetes": {
            "rules": [
                {"verbs": ["get", "list", "watch"], "resources": ["pods"], "namespaces": ["default"]},
                {
                    "verbs": ["create"],
                    "resources": ["pods/exec"],
                    "namespaces": ["default"],
                    "requires_approval": True,
                },
            ]
        },
    },
    {
        "name": "prod-delete",
        "subjects": {"groups": ["dev"]},
        "sockets": ["prod"],
        "grant_only": True,
        "kubernetes": {"rules": [{"verbs": ["delete"], "resources": ["pods"], "namespaces": ["default"]}]},
    },
]
ACCESS_REQUESTS = [
    {
        "name": "prod-break-glass",
        "requesters": {"groups": ["dev"]},
        "approvers": {"groups": ["ops"]},
        "grants": ["dev", "prod-delete"],
        "max_duration": "4h",
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("access-request-denial")
    async with emulated_prod(tmp, {"name": "main", "image": "busybox"}) as (cluster, target):
        config = {"access_requests": ACCESS_REQUESTS}
        async with ProxyHarness(tmp, policies=POLICIES, cluster=target, config=config) as harness:
            yield World(harness, cluster, tmp)


def next_step(world: World) -> str:
    return (
        f'needs approval: run "python -m connector access request --connector {world.harness.url} '
        'prod-break-glass --reason ... --for 1h"'
    )


@pytest.mark.kubectl
async def test_reads_stay_frictionless(world: World) -> None:
    code, out, err = await Kubectl(world, 33).run("get", "pods", user="alice")
    assert code == 0, err
    assert "web" in out


@pytest.mark.kubectl
async def test_exec_names_the_request_to_file(world: World) -> None:
    code, _, err = await Kubectl(world, 33).run("exec", "web", "--", "true", user="alice")
    assert code == 1
    assert 'socket prod: create pods/exec "web" in namespace default ' + next_step(world) in err, err


@pytest.mark.kubectl
async def test_grant_only_delete_names_the_request_to_file(world: World) -> None:
    code, _, err = await Kubectl(world, 33).run("delete", "pod", "web", user="alice")
    assert code == 1
    assert "Error from server (Forbidden): " in err
    assert next_step(world) in err, err


@pytest.mark.kubectl
async def test_someone_who_may_not_request_gets_the_plain_reason(world: World) -> None:
    code, _, err = await Kubectl(world, 33).run("get", "pods", user="carol")
    assert code == 1
    assert "access request" not in err and "no policy grants carol access to socket prod" in err
