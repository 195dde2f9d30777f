"""The real kubectl with an EMPTY discovery cache, refused by the connector: it must print our reason.

kubectl's first requests go to `/api` and `/apis` (client-go's aggregated discovery), whose error bodies
client-go never decodes as a Status: a JSON denial prints as `Error from server (Forbidden): unknown`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from connector.proxy.app import not_found_message
from tests.support.proxy_harness import ProxyHarness
from tests.support.stream_app import kubectl_binary

VERSIONS = [pytest.param(27, id="1.27"), pytest.param(29, id="1.29"), pytest.param(33, id="1.33")]
REASON = "no policy grants carol access to socket prod"


def fresh_home(h: ProxyHarness, home: Path, server_path: str = "/sockets/prod") -> dict[str, str]:
    """The environment for kubectl with a new HOME, so its discovery cache starts empty, and a kubeconfig
    whose server ends in `server_path`."""
    home.mkdir()
    kubeconfig = h.kubeconfig(home / "kubeconfig")
    kubeconfig.write_text(kubeconfig.read_text().replace("/sockets/prod", server_path))
    return {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}


async def kubectl(h: ProxyHarness, minor: int, home: Path, *args: str) -> tuple[int, str]:
    """Run kubectl 1.<minor> with `home` as a new HOME; (exit code, stderr)."""
    code, _, err = await kubectl_output(h, minor, home, *args)
    return code, err


async def kubectl_output(
    h: ProxyHarness, minor: int, home: Path, *args: str, server_path: str = "/sockets/prod"
) -> tuple[int, str, str]:
    """Run kubectl 1.<minor> with `home` as a new HOME and the kubeconfig's server ending in
    `server_path`; (exit code, stdout, stderr)."""
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    env = fresh_home(h, home, server_path)
    process = await asyncio.create_subprocess_exec(
        str(binary), *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


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


def on_socket(h: ProxyHarness, home: Path, socket: str) -> None:
    """Point every context of the kubeconfig in `home` at `socket`."""
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(kubeconfig.read_text().replace("/sockets/prod", f"/sockets/{socket}"))


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_a_mistyped_socket_is_named_with_the_sockets_the_user_may_use(tmp_path: Path, minor: int) -> None:
    """As found: a wrong socket name printed client-go's own "the server could not find the requested
    resource" five times; client-go replaces a 404's message on discovery paths with that text."""
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    async with ProxyHarness(tmp_path) as h:
        for args in (["get", "pods"], ["version"]):
            home = tmp_path / f"home-{args[0]}"
            env = fresh_home(h, home)
            on_socket(h, home, "prd")
            process = await asyncio.create_subprocess_exec(
                str(binary), "--context", "alice", *args, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err_bytes = await asyncio.wait_for(process.communicate(), 60)
            err = err_bytes.decode()
            assert process.returncode == 1
            assert "Error from server (Forbidden): socket prd not found; sockets you may use: prod" in err, err
            assert "could not find the requested resource" not in err
        # a client that reads Status JSON (the Python client, or any path client-go decodes) gets the 404
        status, _, body = await h.request("GET", "/sockets/prd/api/v1/pods", headers={"Accept": "application/json"})
        assert status == 404 and json.loads(body)["message"] == "socket prd not found; sockets you may use: prod"
        assert h.upstream.requests == []


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_openapi_denials_read_as_our_reason(tmp_path: Path, minor: int) -> None:
    """As found: carol's `apply`, `explain` and `diff` printed `Forbidden: unknown` (1.27) or `failed to
    download openapi: unknown` (1.33): client-go reads the OpenAPI documents with Raw() too."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\n"
        "spec: {containers: [{name: c, image: busybox}]}\n"
    )
    async with ProxyHarness(tmp_path) as h:
        for args in (["apply", "-f", str(manifest)], ["explain", "pods"], ["diff", "-f", str(manifest)]):
            code, err = await kubectl(h, minor, tmp_path / f"home-{args[0]}", "--context", "carol", *args)
            assert code != 0 and REASON in err, err
            assert "unknown" not in err, err
        openapi = [e for e in h.audit_events() if "/openapi/" in e["path"] or "swagger" in e["path"]]
        assert openapi and all(e["code"] == 403 and e["decision"] == "deny" for e in openapi)
        assert h.upstream.requests == []


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_auth_whoami_works_for_a_user_without_any_policy(tmp_path: Path, minor: int) -> None:
    """As found: carol (authenticated, no policy) got "the selfsubjectreviews API is not enabled in the
    cluster or you do not have permission to call it", the first command a lost user runs."""
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    async with ProxyHarness(tmp_path) as h:
        env = fresh_home(h, tmp_path / "home")
        process = await asyncio.create_subprocess_exec(
            str(binary), "--context", "carol", "auth", "whoami", "-o", "json", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert json.loads(out)["status"]["userInfo"]["username"] == "carol"
        assert h.upstream.requests == []


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_get_raw_metrics_names_where_a_clusters_api_is_and_a_whole_path_reaches_the_cluster(
    tmp_path: Path, minor: int
) -> None:
    """As found: `kubectl get --raw /metrics` printed the connector's own metrics, as if they were the
    cluster's: client-go sends a raw path to the root of the server, not under its /sockets/NAME."""
    async with ProxyHarness(tmp_path) as h:
        await h.request("GET", "/sockets/prod/api/v1/namespaces/default/pods")  # so there are metrics to leak
        code, out, err = await kubectl_output(
            h, minor, tmp_path / "home-root", "--context", "bob", "get", "--raw", "/metrics"
        )
        assert code == 1 and out == "", out
        assert f"Error from server (NotFound): {not_found_message('/metrics')}" in err, err
        assert "connector_" not in out + err
        # The whole path goes through the socket to the cluster, when the policy allows non-resource paths.
        code, out, err = await kubectl_output(
            h, minor, tmp_path / "home-bob", "--context", "bob", "get", "--raw", "/sockets/prod/healthz"
        )
        assert (code, out) == (0, "ok"), err
        assert h.upstream.requests[-1].path == "/healthz"
        forwarded = len(h.upstream.requests)
        code, err = await kubectl(
            h, minor, tmp_path / "home-alice", "--context", "alice", "get", "--raw", "/sockets/prod/healthz"
        )
        assert code == 1, err
        assert "Error from server (Forbidden): socket prod: policy dev-read: no rule allows get /healthz" in err, err
        assert len(h.upstream.requests) == forwarded


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", VERSIONS)
async def test_a_kubeconfig_without_a_socket_in_its_server_is_told_where_the_api_is(tmp_path: Path, minor: int) -> None:
    """client-go's discovery reads /api as text: the answer is a 403 that keeps our message (a 404's
    message would be replaced by client-go's "the server could not find the requested resource")."""
    async with ProxyHarness(tmp_path) as h:
        code, _, err = await kubectl_output(
            h, minor, tmp_path / "home", "--context", "bob", "get", "pods", server_path=""
        )
        assert code == 1 and f"Error from server (Forbidden): {not_found_message('/api')}" in err, err
        assert h.upstream.requests == []
