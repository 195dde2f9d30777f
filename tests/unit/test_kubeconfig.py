"""Kubeconfig loading (client-go's rules), context selection, exec plugin settings and ExecCredential output."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.upstream.credentials import CredentialError, parse_exec_credential
from connector.upstream.kubeconfig import (
    ClusterInfo,
    KubeconfigError,
    NoContextSelected,
    default_kubeconfig_paths,
    exec_cluster_info,
    in_cluster_config,
    load_client_config,
    load_kubeconfig,
    merge_kubeconfigs,
    parse_kubeconfig,
    select_context,
)

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
B64_PEM = base64.b64encode(PEM).decode()


def kubeconfig(
    *,
    clusters: dict[str, dict] | None = None,
    users: dict[str, dict] | None = None,
    contexts: dict[str, tuple[str, str]] | None = None,
    current: str | None = None,
) -> str:
    doc: dict = {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    doc["clusters"] = [{"name": n, "cluster": c} for n, c in (clusters or {}).items()]
    doc["users"] = [{"name": n, "user": u} for n, u in (users or {}).items()]
    doc["contexts"] = [{"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in (contexts or {}).items()]
    if current is not None:
        doc["current-context"] = current
    return yaml.safe_dump(doc)


def one_context(server: str = "https://a:6443", user: dict | None = None, name: str = "a") -> str:
    return kubeconfig(
        clusters={name: {"server": server}},
        users={name: user if user is not None else {"token": "t"}},
        contexts={name: (name, name)},
        current=name,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- parsing


def test_relative_paths_are_resolved_against_the_file_directory(tmp_path):
    text = kubeconfig(
        clusters={"c": {"server": "https://c", "certificate-authority": "certs/ca.crt"}},
        users={
            "u": {
                "client-certificate": "certs/u.crt",
                "client-key": "/abs/u.key",
                "tokenFile": "tok",
                "exec": {"command": "./bin/plugin", "apiVersion": "client.authentication.k8s.io/v1beta1"},
            },
            "path-plugin": {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1beta1"}},
        },
    )
    cfg = parse_kubeconfig(text, tmp_path / "dir" / "config")
    base = (tmp_path / "dir").absolute()
    assert cfg.clusters["c"].certificate_authority == base / "certs/ca.crt"
    user = cfg.users["u"]
    assert user.client_certificate == base / "certs/u.crt"
    assert user.client_key == Path("/abs/u.key")
    assert user.token_file == base / "tok"
    assert user.exec is not None and user.exec.command == str(base / "bin/plugin")
    # a command without a separator is looked up on PATH, as client-go does
    assert cfg.users["path-plugin"].exec.command == "aws"  # type: ignore[union-attr]


def test_data_fields_are_base64_decoded():
    text = kubeconfig(
        clusters={"c": {"server": "https://c", "certificate-authority-data": B64_PEM}},
        users={"u": {"client-certificate-data": B64_PEM, "client-key-data": base64.b64encode(b"KEY").decode()}},
    )
    cfg = parse_kubeconfig(text, Path("/k/config"))
    assert cfg.clusters["c"].certificate_authority_data == PEM
    assert cfg.users["u"].client_certificate_data == PEM and cfg.users["u"].client_key_data == b"KEY"


def test_exec_settings_are_read():
    text = kubeconfig(
        users={
            "u": {
                "exec": {
                    "command": "aws",
                    "args": ["eks", "get-token", "--cluster-name", "prod"],
                    "env": [{"name": "AWS_PROFILE", "value": "admin"}],
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "interactiveMode": "Never",
                    "provideClusterInfo": True,
                    "installHint": "install the AWS CLI",
                }
            }
        }
    )
    ex = parse_kubeconfig(text, Path("/k/config")).users["u"].exec
    assert ex is not None
    assert ex.args == ("eks", "get-token", "--cluster-name", "prod")
    assert ex.env == (("AWS_PROFILE", "admin"),)
    assert (ex.api_version, ex.interactive_mode, ex.provide_cluster_info) == (
        "client.authentication.k8s.io/v1",
        "Never",
        True,
    )
    assert ex.install_hint == "install the AWS CLI"


def test_unknown_keys_are_ignored_like_client_go():
    text = yaml.safe_dump(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://c", "extensions": [{"name": "x"}]}}],
            "users": [{"name": "u", "user": {"token": "t", "something-new": 1}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
            "current-context": "x",
            "preferences": {"colors": True},
        }
    )
    cfg = parse_kubeconfig(text, Path("/k/config"))
    assert select_context(cfg, None).cluster.server == "https://c"


def test_an_empty_file_is_an_empty_config():
    assert parse_kubeconfig("", Path("/k/config")).is_empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "/k/config: a kubeconfig must be a mapping (kind: Config), got list"),
        ("clusters: [\n", "/k/config:2: not valid YAML"),
        (
            "users:\n- name: u\n  user:\n    token: [1]\n",
            "/k/config:4: users[0].user.token: input should be a valid string",
        ),
        (
            "clusters:\n- name: c\n  cluster: {server: x}\n- name: c\n  cluster: {server: y}\n",
            "/k/config: clusters: the name 'c' is defined more than once",
        ),
        (
            "clusters:\n- name: c\n  cluster: {certificate-authority-data: '%%%'}\n",
            "/k/config: cluster 'c': certificate-authority-data is not valid base64 (it holds base64-encoded PEM)",
        ),
        (
            "users:\n- name: u\n  user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1}}\n",
            "/k/config: user 'u': exec: command is missing",
        ),
        (
            "users:\n- name: u\n  user: {exec: {command: x}}\n",
            "/k/config: user 'u': exec: apiVersion is missing (use client.authentication.k8s.io/v1)",
        ),
        (
            "users:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1alpha1}}\n",
            "/k/config: user 'u': exec: apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported",
        ),
        (
            "users:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1}}\n",
            "/k/config: user 'u': exec: interactiveMode must be set for apiVersion client.authentication.k8s.io/v1",
        ),
        (
            "users:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1beta1, "
            "interactiveMode: Sometimes}}\n",
            "/k/config: user 'u': exec: interactiveMode 'Sometimes' must be one of Never, IfAvailable, Always",
        ),
        (
            "users:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1beta1, "
            "env: [{name: '', value: v}]}}\n",
            "/k/config: user 'u': exec: env[0].name is empty",
        ),
    ],
)
def test_parse_errors_name_the_file_and_entry(text, message):
    with pytest.raises(KubeconfigError) as info:
        parse_kubeconfig(text, Path("/k/config"))
    assert str(info.value).startswith(message), str(info.value)


def test_beta_exec_without_interactive_mode_defaults_to_if_available():
    text = "users:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1beta1}}\n"
    assert parse_kubeconfig(text, Path("/k/config")).users["u"].exec.interactive_mode == "IfAvailable"  # type: ignore[union-attr]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
kubeconfig_keys = st.sampled_from(
    [
        "clusters",
        "users",
        "contexts",
        "current-context",
        "name",
        "cluster",
        "user",
        "context",
        "server",
        "token",
        "exec",
        "command",
        "apiVersion",
        "env",
        "certificate-authority-data",
        "client-key-data",
        "tokenFile",
    ]
)
kubeconfig_like = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.sampled_from(["client.authentication.k8s.io/v1", B64_PEM]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(kubeconfig_keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.one_of(yaml_values, kubeconfig_like))
def test_any_document_parses_or_fails_with_a_kubeconfig_error(doc):
    try:
        cfg = parse_kubeconfig(yaml.safe_dump(doc), Path("/k/config"))
    except KubeconfigError:
        return
    try:
        select_context(cfg, None)
    except KubeconfigError:
        pass


# ---- merging and the loading rules


def test_merge_first_file_wins_per_name_and_for_current_context():
    first = parse_kubeconfig(
        kubeconfig(
            clusters={"shared": {"server": "https://first"}},
            users={"u": {"token": "first-token"}},
            contexts={"a": ("shared", "u")},
        ),
        Path("/k/first"),
    )
    second = parse_kubeconfig(
        kubeconfig(
            clusters={
                "shared": {"server": "https://second", "insecure-skip-tls-verify": True},
                "b": {"server": "https://b"},
            },
            users={"u": {"token": "second-token", "username": "x"}},
            contexts={"b": ("b", "u")},
            current="b",
        ),
        Path("/k/second"),
    )
    merged = merge_kubeconfigs([first, second])
    assert merged.files == (Path("/k/first"), Path("/k/second"))
    assert merged.current_context == "b"  # the first file sets none, so the second's applies
    # the whole entry comes from the first file: nothing of the second "shared" leaks in
    assert merged.clusters["shared"].server == "https://first"
    assert not merged.clusters["shared"].insecure_skip_tls_verify
    assert merged.users["u"].token == "first-token" and merged.users["u"].username is None
    chosen = select_context(merged, None)
    assert chosen.cluster.server == "https://b" and chosen.user is not None and chosen.user.token == "first-token"
    assert merge_kubeconfigs([second, first]).clusters["shared"].server == "https://second"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"KUBECONFIG": "/a:/b::/a", "HOME": "/home/u"}, ["/a", "/b"]),
        ({"KUBECONFIG": "", "HOME": "/home/u"}, ["/home/u/.kube/config"]),
        ({"HOME": "/home/u"}, ["/home/u/.kube/config"]),
    ],
)
def test_default_kubeconfig_paths(environ, expected):
    assert default_kubeconfig_paths(environ) == [Path(p) for p in expected]


def test_kubeconfig_list_skips_missing_files_and_merges_the_rest(tmp_path):
    a = write(tmp_path / "a", one_context("https://a", name="a"))
    b = write(tmp_path / "b", one_context("https://b", name="b"))
    environ = {"KUBECONFIG": f"{tmp_path / 'missing'}:{a}:{b}", "HOME": str(tmp_path)}
    cfg = load_kubeconfig(None, environ)
    assert cfg.files == (a, b) and cfg.current_context == "a"
    assert select_context(cfg, "b").cluster.server == "https://b"


def test_home_kubeconfig_is_used_without_kubeconfig_variable(tmp_path):
    write(tmp_path / ".kube" / "config", one_context("https://home"))
    client = load_client_config(kubeconfig_path=None, context=None, environ={"HOME": str(tmp_path)})
    assert client.cluster.server == "https://home" and not client.in_cluster
    assert client.source == f"kubeconfig {tmp_path / '.kube' / 'config'}, context a"


def test_a_broken_file_in_the_list_is_an_error(tmp_path):
    a = write(tmp_path / "a", one_context())
    bad = write(tmp_path / "bad", "clusters: {not: a list}\n")
    with pytest.raises(KubeconfigError, match=rf"{bad}:1: clusters: input should be a valid list"):
        load_kubeconfig(None, {"KUBECONFIG": f"{a}:{bad}"})


def test_explicit_path_must_exist_and_is_the_only_file_read(tmp_path):
    with pytest.raises(KubeconfigError) as info:
        load_kubeconfig(str(tmp_path / "nope"), {})
    assert str(info.value) == f"kubeconfig_path {tmp_path / 'nope'}: file not found"
    write(tmp_path / ".kube" / "config", one_context("https://home", name="home"))
    explicit = write(tmp_path / "explicit", one_context("https://explicit", name="x"))
    cfg = load_kubeconfig(str(explicit), {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / ".kube" / "config")})
    assert set(cfg.contexts) == {"x"}


def test_in_cluster_is_the_fallback_when_no_context_is_selected(tmp_path):
    sa = tmp_path / "sa"
    write(sa / "token", "sa-token")
    write(sa / "ca.crt", PEM.decode())
    environ = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    client = load_client_config(kubeconfig_path=None, context=None, environ=environ, service_account_dir=sa)
    assert client.in_cluster
    assert client.cluster.server == "https://10.96.0.1:443" and client.cluster.certificate_authority == sa / "ca.crt"
    assert client.user is not None and client.user.token_file == sa / "token"
    # a kubeconfig with a current context wins over the in-cluster config, as in client-go
    write(tmp_path / ".kube" / "config", one_context("https://home"))
    client = load_client_config(kubeconfig_path=None, context=None, environ=environ, service_account_dir=sa)
    assert not client.in_cluster and client.cluster.server == "https://home"


def test_in_cluster_ipv6_host_and_missing_pieces(tmp_path):
    sa = tmp_path / "sa"
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_config(environ, sa) is None  # no token: not in a pod
    write(sa / "token", "t")
    with pytest.raises(KubeconfigError, match=r"ca\.crt is missing"):
        in_cluster_config(environ, sa)
    write(sa / "ca.crt", PEM.decode())
    assert in_cluster_config(environ, sa).cluster.server == "https://[fd00::1]:443"  # type: ignore[union-attr]
    assert in_cluster_config({"KUBERNETES_SERVICE_HOST": "h"}, sa) is None


def test_nothing_to_load_says_where_it_looked(tmp_path):
    with pytest.raises(KubeconfigError) as info:
        load_client_config(kubeconfig_path=None, context=None, environ={"HOME": str(tmp_path)})
    assert str(info.value) == (
        f"no kubeconfig found (looked at {tmp_path / '.kube' / 'config'}) and not running in a pod "
        "(KUBERNETES_SERVICE_HOST is not set); set kubeconfig_path, or server with a token or client certificate"
    )


# ---- selecting a context


def parsed(text: str) -> object:
    return parse_kubeconfig(text, Path("/k/config"))


@pytest.mark.parametrize(
    ("text", "context", "message"),
    [
        (
            kubeconfig(clusters={"c": {"server": "s"}}, contexts={"a": ("c", ""), "b": ("c", "")}),
            None,
            "kubeconfig /k/config has no current-context; set `context` to one of: a, b",
        ),
        (
            kubeconfig(contexts={"a": ("c", "")}, current="a"),
            "zz",
            "context 'zz' not found in kubeconfig /k/config (available: a)",
        ),
        (
            kubeconfig(contexts={"a": ("c", "")}, current="a"),
            None,
            "cluster 'c' (of context 'a') not found in kubeconfig /k/config",
        ),
        (
            kubeconfig(contexts={"a": ("", "")}, current="a"),
            None,
            "/k/config: context 'a' names no cluster",
        ),
        (
            kubeconfig(clusters={"c": {}}, contexts={"a": ("c", "")}, current="a"),
            None,
            "/k/config: cluster 'c' has no server",
        ),
        (
            kubeconfig(clusters={"c": {"server": "s"}}, contexts={"a": ("c", "u")}, current="a"),
            None,
            "user 'u' (of context 'a') not found in kubeconfig /k/config",
        ),
        (
            kubeconfig(
                clusters={"c": {"server": "s", "proxy-url": "http://p"}}, contexts={"a": ("c", "")}, current="a"
            ),
            None,
            "/k/config: cluster 'c' sets proxy-url, which the connector does not support",
        ),
        (
            one_context(user={"auth-provider": {"name": "gcp"}}),
            None,
            "/k/config: user 'a' uses auth-provider 'gcp', which the connector does not support; use an exec",
        ),
        (
            one_context(user={"token": "t", "as": "admin"}),
            None,
            "/k/config: user 'a' sets as/as-groups/as-uid (impersonation); remove them",
        ),
        (
            one_context(user={"token": "t", "username": "u", "password": "p"}),
            None,
            "/k/config: user 'a' sets both token and username/password; keep only one",
        ),
        (
            one_context(user={"client-certificate": "/c"}),
            None,
            "/k/config: user 'a' has a client certificate but no client-key or client-key-data",
        ),
        (
            one_context(user={"client-key-data": B64_PEM}),
            None,
            "/k/config: user 'a' has a client key but no client-certificate or client-certificate-data",
        ),
        (
            one_context(
                user={
                    "exec": {
                        "command": "x",
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "interactiveMode": "Always",
                    }
                }
            ),
            None,
            "/k/config: user 'a': exec plugin x requires an interactive terminal (interactiveMode: Always)",
        ),
    ],
)
def test_select_context_errors(text, context, message):
    with pytest.raises(KubeconfigError) as info:
        select_context(parsed(text), context)  # type: ignore[arg-type]
    assert str(info.value).startswith(message), str(info.value)


def test_no_current_context_is_the_in_cluster_signal():
    with pytest.raises(NoContextSelected):
        select_context(parsed(kubeconfig()), None)  # type: ignore[arg-type]


def test_a_context_without_user_is_anonymous():
    text = kubeconfig(clusters={"c": {"server": "https://c"}}, contexts={"a": ("c", "")}, current="a")
    assert select_context(parsed(text), None).user is None  # type: ignore[arg-type]


def test_exec_cluster_info(tmp_path):
    ca = write(tmp_path / "ca.crt", PEM.decode())
    info = exec_cluster_info(ClusterInfo(server="https://c", certificate_authority=ca, tls_server_name="api"))
    assert info == {"server": "https://c", "certificate-authority-data": B64_PEM, "tls-server-name": "api"}
    assert exec_cluster_info(ClusterInfo(server="https://c", insecure_skip_tls_verify=True)) == {
        "server": "https://c",
        "insecure-skip-tls-verify": True,
    }


# ---- ExecCredential output


V1 = "client.authentication.k8s.io/v1"


def cred(status: object, api_version: str = V1, kind: str = "ExecCredential") -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": kind, "status": status}).encode()


def test_parse_exec_credential_token_and_expiry():
    out = parse_exec_credential(cred({"token": "abc", "expirationTimestamp": "2030-01-02T03:04:05Z"}), V1, "plugin")
    assert out.token == "abc" and out.client_certificate_pem is None
    assert out.expires_at is not None and out.expires_at.isoformat() == "2030-01-02T03:04:05+00:00"
    assert parse_exec_credential(cred({"token": "abc"}), V1, "plugin").expires_at is None


def test_parse_exec_credential_certificate_pair():
    out = parse_exec_credential(cred({"clientCertificateData": "CERT", "clientKeyData": "KEY"}), V1, "plugin")
    assert (out.token, out.client_certificate_pem, out.client_key_pem) == (None, b"CERT", b"KEY")


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"not json", "exec plugin p did not print an ExecCredential JSON object"),
        (b"[1]", "exec plugin p did not print an ExecCredential JSON object"),
        (cred({"token": "t"}, kind="Secret"), "exec plugin p printed kind 'Secret', expected ExecCredential"),
        (
            cred({"token": "t"}, api_version="client.authentication.k8s.io/v1beta1"),
            "exec plugin p is configured to use API version client.authentication.k8s.io/v1, plugin returned "
            "version 'client.authentication.k8s.io/v1beta1'",
        ),
        (cred(None), "exec plugin p didn't return a status field"),
        (cred({}), "exec plugin p didn't return a token or cert/key pair"),
        (cred({"clientKeyData": "K"}), "exec plugin p returned only certificate or key, not both"),
        (cred({"token": 5}), "exec plugin p: status.token must be a string"),
        (cred({"token": "two words"}), "the token from exec plugin p is not a valid bearer token"),
        (
            cred({"token": "t", "expirationTimestamp": "soon"}),
            "exec plugin p: status.expirationTimestamp 'soon' is not",
        ),
        (cred({"token": "t", "expirationTimestamp": 5}), "exec plugin p: status.expirationTimestamp must be"),
    ],
)
def test_parse_exec_credential_errors(stdout, message):
    with pytest.raises(CredentialError) as info:
        parse_exec_credential(stdout, V1, "p")
    assert str(info.value).startswith(message), str(info.value)


@given(st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), yaml_values))
def test_parse_exec_credential_only_raises_credential_error(stdout):
    try:
        parse_exec_credential(stdout, V1, "p")
    except CredentialError:
        pass
