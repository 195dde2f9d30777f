"""Every way a socket reaches a cluster, against real HTTPS servers on 127.0.0.1 with their own CAs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from connector.aws.discovery import EksCluster
from connector.aws.token import EksTokenCache, verify_eks_token
from connector.pki import KeyPair, generate_ca, issue_certificate
from connector.upstream import SocketError, Upstream, resolve_socket, upstream_for_eks_cluster
from connector.upstream import credentials as credentials_module
from connector.upstream import upstream as upstream_module
from connector.upstream.cli import check_version
from connector.upstream.config import AwsEksSocketConfig, StandardSocketConfig
from sandbox.aws import ACCOUNT_ID, EmbeddedAws
from tests.support.https_server import RecordingHttpsServer

EXEC_V1 = "client.authentication.k8s.io/v1"


def refreshes(kind: str, outcome: str = "ok") -> float:
    return REGISTRY.get_sample_value("connector_token_refreshes_total", {"kind": kind, "outcome": outcome}) or 0.0


def socket_config(**fields: object) -> StandardSocketConfig:
    return StandardSocketConfig.model_validate({"service_type": "standard", **fields})


async def resolve(cfg: StandardSocketConfig, *, name: str = "prod", **kwargs: object) -> Upstream:
    kwargs.setdefault("environ", {})
    return await resolve_socket(name, cfg, token_cache=EksTokenCache(), **kwargs)  # type: ignore[arg-type]


async def resolve_error(cfg: StandardSocketConfig, **kwargs: object) -> str:
    with pytest.raises(SocketError) as info:
        await resolve(cfg, **kwargs)
    return str(info.value)


async def get_version(upstream: Upstream) -> str:
    result = await check_version(upstream)
    assert result.ok, result.error
    return result.version  # type: ignore[return-value]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_text(
    *, clusters: dict[str, dict], users: dict[str, dict], contexts: dict[str, tuple[str, str]], current: str | None
) -> str:
    doc: dict = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in contexts.items()],
    }
    if current:
        doc["current-context"] = current
    return yaml.safe_dump(doc)


@pytest.fixture
async def server():
    async with RecordingHttpsServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def client_ca() -> KeyPair:
    return generate_ca("test-client-ca")


@pytest.fixture
async def mtls_server(client_ca):
    async with RecordingHttpsServer(require_client_cert_ca=client_ca.cert_pem) as srv:
        yield srv


# ---- static server + token


async def test_static_server_with_inline_token_and_ca_file(server, tmp_path):
    ca = server.write_ca(tmp_path)
    up = await resolve(socket_config(server=server.url + "/", certificate_authority=str(ca), token="t0k3n"))
    assert up.base_url == server.url and up.service_type == "standard"
    assert await up.auth_headers() == {"Authorization": "Bearer t0k3n"}
    assert await get_version(up) == "v1.30.2"
    assert server.requests[-1].headers["Authorization"] == "Bearer t0k3n"
    described = up.describe()
    assert described["auth"] == "bearer token (inline)" and "t0k3n" not in json.dumps(described)
    assert described["tls"] == f"verified against certificate_authority {ca}"
    assert described["source"] == "socket config"


async def test_token_from_env_and_file_references(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PROD_TOKEN", "from-env")
    up = await resolve(
        socket_config(server=server.url, certificate_authority_data=b64(server.ca_pem), token="env:PROD_TOKEN")
    )
    assert await up.auth_headers() == {"Authorization": "Bearer from-env"}
    assert up.describe()["auth"] == "bearer token (env:PROD_TOKEN)"
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    up = await resolve(
        socket_config(server=server.url, certificate_authority_data=b64(server.ca_pem), token=f"file:{secret}")
    )
    await get_version(up)
    assert server.requests[-1].headers["Authorization"] == "Bearer from-file"


async def test_path_prefix_is_kept(server):
    up = await resolve(
        socket_config(
            server=f"{server.url}/k8s/clusters/c-1/", certificate_authority_data=b64(server.ca_pem), token="t"
        )
    )
    assert up.base_url == f"{server.url}/k8s/clusters/c-1"
    await get_version(up)
    assert server.requests[-1].path == "/k8s/clusters/c-1/version"


async def test_without_a_ca_the_system_store_is_used_and_rejects_a_private_ca(server):
    up = await resolve(socket_config(server=server.url, token="t"))
    assert up.describe()["tls"] == "verified against the system trust store"
    result = await check_version(up)
    assert not result.ok and "TLS verification failed" in (result.error or "")
    assert server.requests == []


async def test_a_ca_that_did_not_sign_the_server_is_refused(server):
    other = generate_ca("someone-else")
    up = await resolve(socket_config(server=server.url, certificate_authority_data=b64(other.cert_pem), token="t"))
    result = await check_version(up)
    assert not result.ok and "TLS verification failed" in (result.error or "")


async def test_insecure_skip_tls_verify_only_when_set_and_loudly(server, caplog):
    with caplog.at_level(logging.WARNING, logger="connector.upstream.resolve"):
        up = await resolve(socket_config(server=server.url, insecure_skip_tls_verify=True, token="t"))
    assert await get_version(up) == "v1.30.2"
    assert up.describe()["tls"] == "NOT VERIFIED (insecure_skip_tls_verify)"
    assert any(
        "TLS VERIFICATION IS DISABLED" in r.getMessage() and "socket prod" in r.getMessage() for r in caplog.records
    )


# ---- client certificates


async def test_client_certificate_files_are_verified_by_the_server(mtls_server, client_ca, tmp_path):
    pair = issue_certificate(client_ca, "connector", organizations=("connectors",), client=True)
    (tmp_path / "c.crt").write_bytes(pair.cert_pem)
    (tmp_path / "c.key").write_bytes(pair.key_pem)
    up = await resolve(
        socket_config(
            server=mtls_server.url,
            certificate_authority_data=b64(mtls_server.ca_pem),
            client_certificate=str(tmp_path / "c.crt"),
            client_key=str(tmp_path / "c.key"),
        )
    )
    assert await up.auth_headers() == {}
    assert up.describe()["auth"] == "client certificate"
    assert up.describe()["client_certificate"] == f"client_certificate {tmp_path / 'c.crt'}"
    await get_version(up)
    assert mtls_server.requests[-1].client_cert_subject == {"commonName": "connector", "organizationName": "connectors"}
    assert "Authorization" not in mtls_server.requests[-1].headers


async def test_client_certificate_data_base64_and_pem_from_env(mtls_server, client_ca, monkeypatch):
    pair = issue_certificate(client_ca, "from-data", client=True)
    monkeypatch.setenv("CLIENT_KEY_PEM", pair.key_pem.decode())
    up = await resolve(
        socket_config(
            server=mtls_server.url,
            certificate_authority_data=b64(mtls_server.ca_pem),
            client_certificate_data=b64(pair.cert_pem),
            client_key_data="env:CLIENT_KEY_PEM",
            token="and-a-token",
        )
    )
    await get_version(up)
    assert mtls_server.requests[-1].client_cert_subject == {"commonName": "from-data"}
    assert mtls_server.requests[-1].headers["Authorization"] == "Bearer and-a-token"


async def test_without_a_client_certificate_the_handshake_fails(mtls_server):
    up = await resolve(
        socket_config(server=mtls_server.url, certificate_authority_data=b64(mtls_server.ca_pem), token="t")
    )
    assert not (await check_version(up)).ok
    assert mtls_server.requests == []


async def test_client_certificate_and_key_that_do_not_match(client_ca, tmp_path):
    a = issue_certificate(client_ca, "a", client=True)
    b = issue_certificate(client_ca, "b", client=True)
    message = await resolve_error(
        socket_config(
            server="https://127.0.0.1:1", client_certificate_data=b64(a.cert_pem), client_key_data=b64(b.key_pem)
        )
    )
    assert message == (
        "socket prod: client_certificate_data (inline): "
        "the client certificate and the client key do not belong together"
    )
    # the private temp file used to load them is gone
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("connector-client-")]


# ---- kubeconfig: several contexts, KUBECONFIG with two files


async def test_kubeconfig_with_several_contexts(tmp_path, mtls_server, client_ca):
    async with RecordingHttpsServer() as other:
        pair = issue_certificate(client_ca, "kube-user", client=True)
        (tmp_path / "ca-other.crt").write_bytes(other.ca_pem)
        path = tmp_path / "kube" / "config"
        path.parent.mkdir()
        path.write_text(
            kubeconfig_text(
                clusters={
                    "mtls": {"server": mtls_server.url, "certificate-authority-data": b64(mtls_server.ca_pem)},
                    # relative to the kubeconfig's directory
                    "other": {"server": other.url + "/prefix", "certificate-authority": "../ca-other.crt"},
                },
                users={
                    "cert-user": {"client-certificate-data": b64(pair.cert_pem), "client-key-data": b64(pair.key_pem)},
                    "token-user": {"token": "kube-token"},
                },
                contexts={"mtls-ctx": ("mtls", "cert-user"), "other-ctx": ("other", "token-user")},
                current="other-ctx",
            )
        )
        current = await resolve(socket_config(kubeconfig_path=str(path)))
        assert current.base_url == other.url + "/prefix"
        assert current.describe()["source"] == f"kubeconfig {path}, context other-ctx"
        await get_version(current)
        assert other.requests[-1].headers["Authorization"] == "Bearer kube-token"
        assert other.requests[-1].path == "/prefix/version"

        chosen = await resolve(socket_config(kubeconfig_path=str(path), context="mtls-ctx"))
        await get_version(chosen)
        assert mtls_server.requests[-1].client_cert_subject == {"commonName": "kube-user"}

        # static fields win over the context: a static token replaces the kubeconfig user as a whole
        override = await resolve(socket_config(kubeconfig_path=str(path), token="static"))
        await get_version(override)
        assert other.requests[-1].headers["Authorization"] == "Bearer static"

        missing = await resolve_error(socket_config(kubeconfig_path=str(path), context="nope"))
        assert missing == f"socket prod: context 'nope' not found in kubeconfig {path} (available: mtls-ctx, other-ctx)"


async def test_kubeconfig_variable_with_two_files(tmp_path, server):
    first = tmp_path / "first.yaml"
    second = tmp_path / "second.yaml"
    first.write_text(
        kubeconfig_text(
            clusters={"c": {"server": server.url, "certificate-authority-data": b64(server.ca_pem)}},
            users={"shared": {"token": "first-wins"}},
            contexts={"one": ("c", "shared")},
            current=None,
        )
    )
    second.write_text(
        kubeconfig_text(
            clusters={"c2": {"server": server.url + "/two", "certificate-authority-data": b64(server.ca_pem)}},
            users={"shared": {"token": "second-loses"}},
            contexts={"two": ("c2", "shared")},
            current="two",
        )
    )
    environ = {"KUBECONFIG": f"{first}{os.pathsep}{second}", "HOME": str(tmp_path)}
    up = await resolve(socket_config(), environ=environ)
    assert up.base_url == server.url + "/two"  # current-context from the second file (the first sets none)
    await get_version(up)
    assert server.requests[-1].headers["Authorization"] == "Bearer first-wins"  # user "shared" from the first file
    assert up.describe()["source"] == f"kubeconfig {first}, {second}, context two"
    up = await resolve(socket_config(context="one"), environ=environ)
    assert up.base_url == server.url


async def test_static_server_with_the_context_user(tmp_path, server):
    path = tmp_path / "config"
    path.write_text(
        kubeconfig_text(
            clusters={"c": {"server": "https://unreachable.invalid", "certificate-authority-data": b64(server.ca_pem)}},
            users={"u": {"token": "ctx-token"}},
            contexts={"x": ("c", "u")},
            current="x",
        )
    )
    # server replaces the context's server; the context's CA still applies (client-go's override rule)
    up = await resolve(socket_config(kubeconfig_path=str(path), server=server.url))
    await get_version(up)
    assert server.requests[-1].headers["Authorization"] == "Bearer ctx-token"


# ---- token files rotate


async def test_token_file_is_reread_when_it_changes(server, tmp_path, monkeypatch):
    monkeypatch.setattr(credentials_module, "FILE_RECHECK_SECONDS", 0.0)
    token = tmp_path / "token"
    token.write_text("first\n")
    up = await resolve(
        socket_config(server=server.url, certificate_authority_data=b64(server.ca_pem), token_file=str(token))
    )
    await get_version(up)
    # rotate the way the kubelet does: a new file swapped in
    (tmp_path / "token.new").write_text("second")
    os.replace(tmp_path / "token.new", token)
    await get_version(up)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer first", "Bearer second"]
    # a rewrite that fails (empty file mid-write) keeps the last good token
    token.write_text("")
    assert await up.auth_headers() == {"Authorization": "Bearer second"}


async def test_token_file_is_not_stat_more_than_once_per_interval(tmp_path):
    token = tmp_path / "token"
    token.write_text("a")
    now = [100.0]
    source = credentials_module.TokenFile(token, recheck_seconds=1.0, clock=lambda: now[0])
    assert source.token() == "a"
    (tmp_path / "token.new").write_text("b")
    os.replace(tmp_path / "token.new", token)
    now[0] += 0.5
    assert source.token() == "a"
    now[0] += 0.6
    assert source.token() == "b"


async def test_missing_token_file_is_a_socket_error(tmp_path):
    message = await resolve_error(socket_config(server="https://127.0.0.1:1", token_file=str(tmp_path / "none")))
    assert message == f"socket prod: cannot read token file {tmp_path / 'none'}: No such file or directory"


# ---- in-cluster


async def test_in_cluster_service_account(server, tmp_path, monkeypatch):
    monkeypatch.setattr(credentials_module, "FILE_RECHECK_SECONDS", 0.0)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token-1")
    (sa / "ca.crt").write_bytes(server.ca_pem)
    environ = {
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.port),
    }
    before = refreshes("in_cluster")
    up = await resolve(socket_config(), environ=environ, service_account_dir=sa)
    assert up.base_url == server.url
    assert up.describe()["auth"] == f"in-cluster service account token {sa / 'token'} (re-read when it changes)"
    await get_version(up)
    (sa / "token").write_text("sa-token-2")
    await get_version(up)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer sa-token-1", "Bearer sa-token-2"]
    assert refreshes("in_cluster") - before == 2


# ---- exec credential plugins

PLUGIN = textwrap.dedent(
    """\
    #!{python}
    import datetime, json, os, sys, time
    state = os.environ["PLUGIN_STATE"]
    runs = len([n for n in os.listdir(state) if n.startswith("run-")]) + 1
    with open(os.path.join(state, f"run-{{runs}}.json"), "w") as f:
        json.dump({{"argv": sys.argv[1:], "exec_info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
                   "stdin_is_tty": sys.stdin.isatty()}}, f)
    mode = os.environ.get("PLUGIN_MODE", "token")
    if mode == "fail":
        print("error: the SSO session has expired; run aws sso login", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    time.sleep(float(os.environ.get("PLUGIN_DELAY", "0")))
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=float(os.environ.get("PLUGIN_EXPIRES_IN", "3600")))
    status = {{"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    if mode == "cert":
        status["clientCertificateData"] = open(os.environ["PLUGIN_CERT"]).read()
        status["clientKeyData"] = open(os.environ["PLUGIN_KEY"]).read()
    else:
        status["token"] = f"exec-token-{{runs}}"
    print(json.dumps({{"apiVersion": "{api_version}", "kind": "ExecCredential", "status": status}}))
    """
)


def write_plugin(directory: Path, api_version: str = EXEC_V1) -> Path:
    plugin = directory / "bin" / "get-token"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text(PLUGIN.format(python=sys.executable, api_version=api_version))
    plugin.chmod(0o755)
    return plugin


def plugin_kubeconfig(
    directory: Path, server: RecordingHttpsServer, env: dict[str, str], **exec_fields: object
) -> Path:
    state = directory / "state"
    state.mkdir(exist_ok=True)
    write_plugin(directory)
    exec_cfg = {
        "apiVersion": EXEC_V1,
        "interactiveMode": "Never",
        "command": "./bin/get-token",  # relative to the kubeconfig's directory
        "args": ["--cluster", "prod"],
        "env": [{"name": "PLUGIN_STATE", "value": str(state)}] + [{"name": k, "value": v} for k, v in env.items()],
        **exec_fields,
    }
    path = directory / "config"
    path.write_text(
        kubeconfig_text(
            clusters={"c": {"server": server.url, "certificate-authority-data": b64(server.ca_pem)}},
            users={"plugin-user": {"exec": exec_cfg}},
            contexts={"ctx": ("c", "plugin-user")},
            current="ctx",
        )
    )
    return path


def plugin_runs(directory: Path) -> list[dict]:
    state = directory / "state"
    return [json.loads((state / f"run-{i}.json").read_text()) for i in range(1, len(list(state.iterdir())) + 1)]


async def test_exec_plugin_token_is_cached_until_it_expires(server, tmp_path):
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_EXPIRES_IN": "3600"}, provideClusterInfo=True)
    before = refreshes("exec")
    up = await resolve(socket_config(kubeconfig_path=str(path)))
    assert up.describe()["auth"] == f"exec plugin {tmp_path / 'bin' / 'get-token'} ({EXEC_V1})"
    await get_version(up)
    await get_version(up)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer exec-token-1"] * 2
    runs = plugin_runs(tmp_path)
    assert len(runs) == 1 and refreshes("exec") - before == 1
    assert runs[0]["argv"] == ["--cluster", "prod"] and runs[0]["stdin_is_tty"] is False
    info = runs[0]["exec_info"]
    assert info["apiVersion"] == EXEC_V1 and info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"] == {"server": server.url, "certificate-authority-data": b64(server.ca_pem)}


async def test_expired_exec_credential_runs_the_plugin_again(server, tmp_path):
    # expires within the refresh margin: every use needs a new one
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_EXPIRES_IN": "1"})
    up = await resolve(socket_config(kubeconfig_path=str(path)))
    await get_version(up)
    await get_version(up)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer exec-token-2", "Bearer exec-token-3"]
    assert "cluster" not in plugin_runs(tmp_path)[0]["exec_info"]["spec"]  # provideClusterInfo is off


async def test_concurrent_callers_share_one_plugin_run(server, tmp_path):
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_EXPIRES_IN": "1", "PLUGIN_DELAY": "0.2"})
    up = await resolve(socket_config(kubeconfig_path=str(path)))
    headers = await asyncio.gather(*(up.auth_headers() for _ in range(8)))
    assert headers == [{"Authorization": "Bearer exec-token-2"}] * 8
    assert len(plugin_runs(tmp_path)) == 2


async def test_a_refused_exec_credential_makes_the_plugin_run_again_at_most_once_per_interval(server, tmp_path):
    """client-go re-runs the plugin after a 401; a credential valid for an hour would otherwise be
    sent, and refused, for that hour. A cluster refusing every credential costs one run per interval."""
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_EXPIRES_IN": "3600"})
    up = await resolve(socket_config(kubeconfig_path=str(path)))
    assert await up.auth_headers() == {"Authorization": "Bearer exec-token-1"}
    assert up.invalidate_credentials(now=1000.0)
    assert await up.auth_headers() == {"Authorization": "Bearer exec-token-2"}
    assert await up.auth_headers() == {"Authorization": "Bearer exec-token-2"}
    interval = upstream_module.INVALIDATE_INTERVAL_SECONDS
    assert not up.invalidate_credentials(now=1000.0 + interval - 0.5)
    assert await up.auth_headers() == {"Authorization": "Bearer exec-token-2"}
    assert up.invalidate_credentials(now=1000.0 + interval)
    assert await up.auth_headers() == {"Authorization": "Bearer exec-token-3"}
    assert len(plugin_runs(tmp_path)) == 3


async def test_exec_plugin_certificate_is_presented(mtls_server, client_ca, tmp_path):
    pair = issue_certificate(client_ca, "from-plugin", client=True)
    (tmp_path / "p.crt").write_bytes(pair.cert_pem)
    (tmp_path / "p.key").write_bytes(pair.key_pem)
    path = plugin_kubeconfig(
        tmp_path,
        mtls_server,
        {"PLUGIN_MODE": "cert", "PLUGIN_CERT": str(tmp_path / "p.crt"), "PLUGIN_KEY": str(tmp_path / "p.key")},
    )
    up = await resolve(socket_config(kubeconfig_path=str(path)))
    assert await up.auth_headers() == {}
    await get_version(up)
    assert mtls_server.requests[-1].client_cert_subject == {"commonName": "from-plugin"}


async def test_failing_exec_plugin_names_socket_and_command(server, tmp_path):
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_MODE": "fail"})
    before = refreshes("exec", "error")
    message = await resolve_error(socket_config(kubeconfig_path=str(path)))
    assert refreshes("exec", "error") - before == 1
    assert message == (
        f"socket prod: exec plugin {tmp_path / 'bin' / 'get-token'}: exited with code 3: "
        "error: the SSO session has expired; run aws sso login"
    )


async def test_exec_plugin_that_hangs_is_killed(server, tmp_path, monkeypatch):
    monkeypatch.setattr(credentials_module, "EXEC_TIMEOUT_SECONDS", 0.5)
    path = plugin_kubeconfig(tmp_path, server, {"PLUGIN_MODE": "hang"})
    message = await resolve_error(socket_config(kubeconfig_path=str(path)))
    assert message == f"socket prod: exec plugin {tmp_path / 'bin' / 'get-token'}: no answer within 0.5 s; killed"


async def test_exec_plugin_not_installed(server, tmp_path):
    path = plugin_kubeconfig(tmp_path, server, {}, command="no-such-plugin-xyz", installHint="brew install xyz")
    message = await resolve_error(socket_config(kubeconfig_path=str(path)))
    assert message == "socket prod: exec plugin no-such-plugin-xyz: executable not found (brew install xyz)"


async def test_exec_plugin_answering_another_api_version(server, tmp_path):
    path = plugin_kubeconfig(tmp_path, server, {})
    write_plugin(tmp_path, api_version="client.authentication.k8s.io/v1beta1")
    message = await resolve_error(socket_config(kubeconfig_path=str(path)))
    assert "is configured to use API version client.authentication.k8s.io/v1, plugin returned version" in message


# ---- misconfiguration is per socket


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"server": "https://127.0.0.1:1", "client_certificate_data": "eA=="},
            "socket prod: client_certificate_data is set but client_key_data is missing",
        ),
        (
            {"server": "https://127.0.0.1:1", "token": "a", "token_file": "/t", "client_key": "/k"},
            "socket prod: token and token_file are both set; keep only one; "
            "client_key is set but client_certificate is missing",
        ),
        (
            {"server": "https://127.0.0.1:1", "token": "env:UNSET_TOKEN_VARIABLE"},
            "socket prod: environment variable UNSET_TOKEN_VARIABLE is not set "
            "(referenced as env:UNSET_TOKEN_VARIABLE)",
        ),
        (
            {"server": "https://127.0.0.1:1", "token": "has space"},
            "socket prod: bearer token (inline) is not a valid bearer token (empty, or contains spaces or control "
            "characters)",
        ),
        (
            {"server": "https://127.0.0.1:1", "token": "t", "certificate_authority": "/nonexistent/ca.crt"},
            "socket prod: certificate_authority /nonexistent/ca.crt: file not found",
        ),
        (
            {
                "server": "https://127.0.0.1:1",
                "token": "t",
                "certificate_authority_data": b64(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            },
            "socket prod: certificate_authority_data: the certificate authority is not a valid PEM certificate",
        ),
        (
            {"kubeconfig_path": "/nonexistent/kubeconfig"},
            "socket prod: kubeconfig_path /nonexistent/kubeconfig: file not found",
        ),
    ],
)
async def test_misconfigurations_are_reported_per_socket(fields, message):
    assert (await resolve_error(socket_config(**fields))).startswith(message)


async def test_no_secret_appears_in_errors_or_descriptions(tmp_path, server):
    secret = "super-secret-value-123"
    message = await resolve_error(socket_config(server="ftp://x", token=secret))
    assert secret not in message
    up = await resolve(socket_config(server=server.url, certificate_authority_data=b64(server.ca_pem), token=secret))
    assert secret not in json.dumps(up.describe()) and secret not in repr(up)


# ---- the CLI: every socket, working or not


async def test_sockets_cli_reports_each_socket_and_checks_them(server, tmp_path):
    config = tmp_path / "connector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sockets": {
                    "good": {
                        "service_type": "standard",
                        "server": server.url,
                        "certificate_authority_data": b64(server.ca_pem),
                        "token": "env:GOOD_TOKEN",
                    },
                    "broken": {
                        "service_type": "standard",
                        "server": server.url,
                        "client_certificate_data": "eA==",
                    },
                }
            }
        )
    )
    env = {**os.environ, "GOOD_TOKEN": "cli-secret-token", "HOME": str(tmp_path)}

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            "sockets",
            "--config",
            str(config),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await cli("--check")
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].split() == ["SOCKET", "TYPE", "SERVER", "AUTH", "STATUS", "CHECK"]
    assert lines[1].split()[:3] == ["broken", "standard", server.url] and lines[1].split()[-2:] == ["ERROR", "-"]
    assert lines[2].split()[:3] == ["good", "standard", server.url] and lines[2].split()[-2:] == ["resolved", "v1.30.2"]
    assert "socket broken: client_certificate_data is set but client_key_data is missing" in out
    assert "cli-secret-token" not in out
    assert server.requests[-1].headers["Authorization"] == "Bearer cli-secret-token"

    code, out = await cli("--output", "json")
    reports = {r["name"]: r for r in json.loads(out)}
    assert code == 1
    assert reports["good"]["resolved"] and reports["good"]["auth"] == "bearer token (env:GOOD_TOKEN)"
    assert reports["good"]["check"] is None
    assert not reports["broken"]["resolved"]
    assert reports["broken"]["error"] == "socket broken: client_certificate_data is set but client_key_data is missing"

    config.write_text("sockets:\n  bad:\n    service_type: nope\n")
    code, out = await cli()
    assert code == 2 and "sockets.bad: service_type must be standard" in out


# ---- aws_eks: DescribeCluster against the embedded AWS (moto), EKS tokens the cluster can verify


@pytest.fixture(scope="module")
def embedded_aws():
    with EmbeddedAws() as aws:
        yield aws


@pytest.fixture
def aws_env(embedded_aws, monkeypatch):
    for key, value in embedded_aws.env("eu-west-1").items():
        monkeypatch.setenv(key, value)
    return embedded_aws


def eks_socket(**fields: object) -> AwsEksSocketConfig:
    return AwsEksSocketConfig.model_validate({"service_type": "aws_eks", **fields})


async def test_aws_eks_socket_describes_the_cluster_and_sends_eks_tokens(aws_env, server):
    arn = await asyncio.to_thread(
        aws_env.create_eks_cluster,
        "prod",
        "eu-west-1",
        tags={"env": "prod", "team": "a"},
        endpoint=server.url,
        ca_pem=server.ca_pem,
    )
    creds = await asyncio.to_thread(aws_env.create_user_credentials, "eks-connector")
    cfg = eks_socket(
        eks_cluster_name="prod",
        eks_cluster_region="eu-west-1",
        credentials=creds,
        impersonation_enabled=True,
        tags={"team": "platform"},
    )
    up = await resolve(cfg, name="eks-prod")  # type: ignore[arg-type]
    assert (up.name, up.service_type, up.base_url) == ("eks-prod", "aws_eks", server.url)
    assert up.impersonation_enabled and up.tags == {"env": "prod", "team": "platform"}
    assert up.describe()["source"] == f"eks:DescribeCluster {arn}"
    assert up.describe()["auth"].startswith("EKS token for prod (eu-west-1), AWS identity from static key")
    assert await get_version(up) == "v1.30.2"
    token = server.requests[-1].headers["Authorization"].removeprefix("Bearer ")
    identity = verify_eks_token(
        token, "prod", datetime.now(UTC), aws_env.credentials_lookup, extra_sts_endpoints=[aws_env.endpoint_url]
    )
    assert identity.arn == f"arn:aws:iam::{ACCOUNT_ID}:user/eks-connector"
    secret = creds.secret_access_key.get_secret_value()  # type: ignore[union-attr]
    assert secret not in json.dumps(up.describe()) and secret not in repr(up)


async def test_aws_eks_socket_for_a_missing_cluster(aws_env):
    message = await resolve_error(eks_socket(eks_cluster_name="nope", eks_cluster_region="eu-west-1"))  # type: ignore[arg-type]
    assert message == (
        "socket prod: EKS cluster nope not found in eu-west-1; check eks_cluster_name and eks_cluster_region"
    )


async def test_upstream_for_a_discovered_cluster(aws_env, server):
    cluster = EksCluster(
        socket_name="eks-found",
        cluster_name="found",
        region="eu-west-1",
        arn="arn:aws:eks:eu-west-1:1:cluster/found",
        endpoint=server.url + "/",
        ca_data=b64(server.ca_pem),
        version="1.31",
        platform_version="eks.1",
        tags={"env": "dev"},
        authentication_mode="API",
        vpc_id="vpc-1",
    )
    up = upstream_for_eks_cluster(cluster, None, EksTokenCache())
    assert (up.name, up.base_url, up.tags, up.impersonation_enabled) == ("eks-found", server.url, {"env": "dev"}, False)
    await get_version(up)
    assert server.requests[-1].headers["Authorization"].startswith("Bearer k8s-aws-v1.")
    broken = dataclasses.replace(cluster, endpoint="", error="DescribeCluster failed: AccessDenied")
    with pytest.raises(SocketError) as info:
        upstream_for_eks_cluster(broken, None, EksTokenCache())
    assert str(info.value) == (
        "socket eks-found: EKS cluster found (eu-west-1) has no API endpoint: DescribeCluster failed: AccessDenied"
    )
