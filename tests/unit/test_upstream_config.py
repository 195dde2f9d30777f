"""The `sockets:` config section, its combination checks, secret references and PEM settings."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.config import ConfigError, ConnectorConfig, load_model
from connector.pki import generate_ca
from connector.secrets import SecretError, describe_secret, resolve_secret
from connector.upstream.config import AwsEksSocketConfig, StandardSocketConfig, normalize_server, socket_problems
from connector.upstream.tls import TlsError, pem_from_data


def load(text: str) -> ConnectorConfig:
    return load_model(ConnectorConfig, text, "config.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.errors


def standard(**fields: object) -> StandardSocketConfig:
    return StandardSocketConfig.model_validate({"service_type": "standard", **fields})


# ---- loading


def test_an_empty_config_has_no_sockets():
    assert load("").sockets == {}


def test_both_socket_types_load_with_their_fields():
    cfg = load(
        """
sockets:
  prod:
    service_type: standard
    server: https://10.0.0.1:6443
    certificate_authority: /etc/ca.crt
    token: env:PROD_TOKEN
    impersonation_enabled: true
    tags: {env: prod}
  eks-dev:
    service_type: aws_eks
    eks_cluster_name: dev
    eks_cluster_region: eu-west-1
    credentials: {profile: dev-admin}
"""
    )
    prod, dev = cfg.sockets["prod"], cfg.sockets["eks-dev"]
    assert isinstance(prod, StandardSocketConfig)
    assert prod.server == "https://10.0.0.1:6443" and prod.impersonation_enabled and prod.tags == {"env": "prod"}
    assert prod.token is not None and prod.token.get_secret_value() == "env:PROD_TOKEN"
    assert isinstance(dev, AwsEksSocketConfig)
    assert (dev.eks_cluster_name, dev.eks_cluster_region) == ("dev", "eu-west-1")
    assert dev.credentials is not None and dev.credentials.profile == "dev-admin"
    assert not dev.impersonation_enabled and dev.tags == {}


def test_secrets_do_not_show_in_the_model_repr():
    cfg = standard(token="s3cr3t-token", client_certificate_data="c2VjcmV0", client_key_data="a2V5")
    assert "s3cr3t-token" not in repr(cfg) and "a2V5" not in repr(cfg) and "c2VjcmV0" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sockets:\n  prod:\n    server: https://x\n",
            "config.yaml:2: sockets.prod: service_type must be standard (any cluster: kubeconfig, in-cluster "
            "or static server) or aws_eks (an EKS cluster by name and region)",
        ),
        (
            "sockets:\n  prod:\n    service_type: gke\n",
            "config.yaml:2: sockets.prod: service_type must be standard",
        ),
        (
            "sockets:\n  prod:\n    service_type: standard\n    tokn: abc\n",
            "config.yaml:4: sockets.prod.tokn: unknown key",
        ),
        (
            "sockets:\n  prod:\n    service_type: aws_eks\n    eks_cluster_region: us-east-1\n",
            "config.yaml:2: sockets.prod.eks_cluster_name: required key is missing",
        ),
        (
            "sockets:\n  prod:\n    service_type: aws_eks\n    eks_cluster_name: a\n    eks_cluster_region: useast1\n",
            "config.yaml:5: sockets.prod.eks_cluster_region: 'useast1' is not an AWS region name",
        ),
        (
            "sockets:\n  prod:\n    service_type: aws_eks\n    eks_cluster_name: -bad\n"
            "    eks_cluster_region: us-east-1\n",
            "config.yaml:4: sockets.prod.eks_cluster_name: '-bad' is not an EKS cluster name",
        ),
        (
            "sockets:\n  Prod_1:\n    service_type: standard\n",
            "config.yaml:2: sockets.Prod_1: socket name 'Prod_1' must be 1-63 lowercase letters",
        ),
        (
            "sockets:\n  prod:\n    service_type: standard\n    token: ''\n",
            "config.yaml:4: sockets.prod.token: ",
        ),
        (
            "sockets:\n  prod:\n    service_type: standard\n    insecure_skip_tls_verify: maybe\n",
            "config.yaml:4: sockets.prod.insecure_skip_tls_verify: ",
        ),
    ],
)
def test_config_errors_name_the_line_and_key(text, expected):
    errors = errors_of(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]


# ---- combination checks (reported per socket at resolve time)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"client_certificate_data": "x"}, "client_certificate_data is set but client_key_data is missing"),
        ({"client_certificate": "/c.pem"}, "client_certificate is set but client_key is missing"),
        ({"client_key_data": "x"}, "client_key_data is set but client_certificate_data is missing"),
        ({"client_key": "/k.pem"}, "client_key is set but client_certificate is missing"),
        ({"token": "t", "token_file": "/t"}, "token and token_file are both set; keep only one"),
        (
            {"certificate_authority": "/ca", "certificate_authority_data": "x"},
            "certificate_authority and certificate_authority_data are both set; keep only one",
        ),
        (
            {"client_certificate": "/c", "client_certificate_data": "x", "client_key": "/k"},
            "client_certificate and client_certificate_data are both set; keep only one",
        ),
        (
            {"client_certificate": "/c", "client_key": "/k", "client_key_data": "x"},
            "client_key and client_key_data are both set; keep only one",
        ),
        (
            {"insecure_skip_tls_verify": True, "certificate_authority": "/ca"},
            "insecure_skip_tls_verify and certificate_authority are both set; remove insecure_skip_tls_verify "
            "to verify the server against the CA",
        ),
        ({"server": "ftp://h"}, "server 'ftp://h' must use https:// (or http:// for a plain-HTTP API server)"),
        ({"server": "https://h:99999"}, "server 'https://h:99999' is not a valid URL: Port out of range 0-65535"),
        (
            {"server": "https://u:p@h"},
            "server must not contain credentials (user:password@); use token or client certificates",
        ),
        (
            {"server": "http://h", "certificate_authority": "/ca"},
            "server uses http:// but certificate_authority need TLS; use https://",
        ),
    ],
)
def test_each_misconfiguration_has_its_message(fields, problem):
    assert socket_problems(standard(**fields)) == [problem]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"server": "https://h", "token": "t"},
        {"server": "https://h", "token_file": "/t", "certificate_authority_data": "x"},
        {"client_certificate": "/c", "client_key": "/k"},
        {"client_certificate_data": "x", "client_key": "/k"},
        {"client_certificate": "/c", "client_key_data": "x", "token": "t"},
        {"server": "https://h", "insecure_skip_tls_verify": True, "token": "t"},
        {"kubeconfig_path": "/k", "context": "c", "server": "https://h/prefix/"},
    ],
)
def test_consistent_sockets_have_no_problems(fields):
    assert socket_problems(standard(**fields)) == []


def test_static_auth_and_tls_flags():
    assert not standard().has_static_auth and not standard().has_static_tls
    assert standard(token_file="/t").has_static_auth
    assert standard(insecure_skip_tls_verify=True).has_static_tls
    assert not standard(server="https://h").has_static_tls


# ---- server URLs


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://10.0.0.1:6443", "https://10.0.0.1:6443"),
        ("https://api.example.com/", "https://api.example.com"),
        ("https://rancher.example.com/k8s/clusters/c-1/", "https://rancher.example.com/k8s/clusters/c-1"),
        ("10.0.0.1:6443", "https://10.0.0.1:6443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://[fd00::1]:443/", "https://[fd00::1]:443"),
        ("https://API.Example.com", "https://api.example.com"),
    ],
)
def test_normalize_server(url, normalized):
    assert normalize_server(url) == normalized


@pytest.mark.parametrize("url", ["https://", "https://h?x=1", "https://h#f", "unix:///sock", "https://h:port"])
def test_normalize_server_rejects(url):
    with pytest.raises(ValueError):
        normalize_server(url)


@given(st.text(max_size=60))
def test_normalize_server_only_raises_value_error_and_is_idempotent(url):
    try:
        out = normalize_server(url)
    except ValueError:
        return
    assert out.startswith(("https://", "http://")) and not out.endswith("/")
    assert normalize_server(out) == out


# ---- secret references


def test_resolve_secret_literal_env_and_file(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    assert resolve_secret("plain-value") == "plain-value"
    assert resolve_secret("env:MY_TOKEN", environ={"MY_TOKEN": "from-env"}) == "from-env"
    assert resolve_secret(f"file:{secret_file}") == "from-file"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("env:MISSING", "environment variable MISSING is not set (referenced as env:MISSING)"),
        ("env:", "env: is not a valid environment variable reference (expected env:NAME)"),
        ("env:BAD-NAME", "env:BAD-NAME is not a valid environment variable reference (expected env:NAME)"),
        ("file:", "file: needs a path (expected file:/path/to/secret)"),
        ("file:/nonexistent/secret", "cannot read file:/nonexistent/secret: file not found"),
    ],
)
def test_resolve_secret_errors(reference, message):
    with pytest.raises(SecretError) as info:
        resolve_secret(reference, environ={})
    assert str(info.value) == message


def test_secret_file_that_is_a_directory_or_binary(tmp_path):
    with pytest.raises(SecretError, match="it is a directory"):
        resolve_secret(f"file:{tmp_path}")
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SecretError, match="is not UTF-8 text"):
        resolve_secret(f"file:{binary}")


def test_describe_secret_never_shows_an_inline_value():
    assert describe_secret("hunter2") == "inline"
    assert describe_secret("env:TOKEN") == "env:TOKEN"
    assert describe_secret("file:/run/secrets/t") == "file:/run/secrets/t"


# ---- PEM settings


def test_pem_from_data_accepts_base64_and_plain_pem():
    pem = generate_ca("t").cert_pem
    assert pem_from_data(base64.b64encode(pem).decode(), "x") == pem
    assert pem_from_data(pem.decode(), "x") == pem
    # kubeconfigs and YAML block scalars wrap base64 over several lines
    encoded = base64.b64encode(pem).decode()
    wrapped = "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
    assert "\n" in wrapped and pem_from_data(wrapped, "x") == pem


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "certificate_authority_data is neither PEM nor base64-encoded PEM"),
        (base64.b64encode(b"hello").decode(), "certificate_authority_data does not decode to PEM"),
    ],
)
def test_pem_from_data_errors(value, message):
    with pytest.raises(TlsError) as info:
        pem_from_data(value, "certificate_authority_data")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("name", ["prod\n", "prod\n\n", "Prod", "-prod", "prod-", "a" * 64, ""])
def test_socket_names_are_matched_whole(name):
    from connector.upstream.config import _socket_name

    with pytest.raises(ValueError, match="must be 1-63 lowercase"):
        _socket_name(name)
