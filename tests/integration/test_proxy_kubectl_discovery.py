"""The real kubectl with an EMPTY discovery cache, refused by the connector: it must print our reason.

kubectl's first requests go to `/api` and `/apis` (client-go's aggregated discovery), whose error bodies
client-go never decodes as a Status: a JSON denial prints as `Error from server (Forbidden): unknown`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.support.proxy_harness import ProxyHarness
from tests.support.stream_app import kubectl_binary

VERSIONS = [pytest.param(27, id="1.27"), pytest.param(29, id="1.29"), pytest.param(33, id="1.33")]
REASON = "no policy grants carol access to socket prod"


def fresh_home(h: ProxyHarness, home: Path) -> dict[str, str]:
    """The environment for kubectl with a new HOME, so its discovery cache starts empty."""
    home.mkdir()
    return {**os.environ, "HOME": str(home), "KUBECONFIG": str(h.kubeconfig(home / "kubeconfig"))}


async def kubectl(h: ProxyHarness, minor: int, home: Path, *args: str) -> tuple[int, str]:
    """Run kubectl 1.<minor> with `home` as a new HOME; (exit code, stderr)."""
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    env = fresh_home(h, home)
    process = await asyncio.create_subprocess_exec(
        str(binary), *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_a_user_without_policy_reads_our_reason_with_an_empty_cache(tmp_path: Path, minor: int) -> None:
    async with ProxyHarness(tmp_path) as h:
        code, err = await kubectl(h, minor, tmp_path / "home-get", "--context", "carol", "get", "pods")
        assert code == 1
        assert f"Error from server (Forbidden): {REASON}" in err, err
        assert "unknown" not in err

        code, err = await kubectl(h, minor, tmp_path / "home-version", "--context", "carol", "version")
        assert code == 1 and f"Error from server (Forbidden): {REASON}" in err, err

        # client-go prints a fixed text for a 401 on discovery, whatever the body: it reads as it should
        h.tokens["carol"] = "not-a-valid-token"
        code, err = await kubectl(h, minor, tmp_path / "home-401", "--context", "carol", "get", "pods")
        assert code == 1 and "error: You must be logged in to the server" in err, err
        assert h.upstream.requests == []
