"""Turn a socket's config (or a discovered EKS cluster) into an `Upstream`.

A standard socket takes each part from its own fields first and from the kubeconfig otherwise:
- target: `server` replaces the context's server; any of `certificate_authority(_data)` /
  `insecure_skip_tls_verify` replaces the context's TLS settings as a whole (client-go's override rule);
- authentication: any static credential field replaces the context's user as a whole.
The kubeconfig is read only when some part comes from it. Resolution also fetches the first
credential, so a socket that resolves can authenticate; every failure is a `SocketError` naming the
socket, the setting and the fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.secrets import SecretError, describe_secret, resolve_secret
from connector.upstream.config import (
    AwsEksSocketConfig,
    SocketConfig,
    StandardSocketConfig,
    normalize_server,
    socket_problems,
)
from connector.upstream.credentials import (
    BasicAuth,
    CredentialError,
    CredentialSource,
    EksBearerToken,
    ExecPlugin,
    NoHeaders,
    StaticToken,
    TokenFile,
)
from connector.upstream.kubeconfig import (
    SERVICE_ACCOUNT_DIR,
    AuthInfo,
    ClientConfig,
    KubeconfigError,
    load_client_config,
)
from connector.upstream.tls import TlsError, client_context, load_client_certificate, pem_from_data, read_pem_file
from connector.upstream.upstream import SocketError, Upstream

if TYPE_CHECKING:
    import ssl

    from connector.aws.credentials import AwsCredentials
    from connector.aws.discovery import EksCluster
    from connector.aws.token import EksTokenCache

log = logging.getLogger(__name__)


async def resolve_socket(
    name: str,
    cfg: SocketConfig,
    *,
    token_cache: EksTokenCache,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Upstream:
    """Resolve one socket, raising SocketError (one message, every problem) when it cannot be used.

    `environ` (default: the process environment) supplies KUBECONFIG, HOME and the in-cluster
    variables; `service_account_dir` is where a pod's service-account token and CA are mounted.
    """
    try:
        if isinstance(cfg, AwsEksSocketConfig):
            upstream = await _resolve_eks(name, cfg, token_cache)
        else:
            upstream = _resolve_standard(name, cfg, os.environ if environ is None else environ, service_account_dir)
        # Fetch the first credential now: a socket that resolves is one that can authenticate.
        await upstream.credentials.headers()
    except (KubeconfigError, TlsError, CredentialError, SecretError) as exc:
        raise SocketError(name, str(exc)) from None
    return upstream


def upstream_for_eks_cluster(
    cluster: EksCluster,
    credentials: AwsCredentials | None,
    token_cache: EksTokenCache,
    *,
    impersonation_enabled: bool = False,
) -> Upstream:
    """The Upstream of an EKS cluster (discovered, or described for an aws_eks socket)."""
    name = cluster.socket_name
    if not cluster.endpoint:
        reason = f": {cluster.error}" if cluster.error else ""
        raise SocketError(name, f"EKS cluster {cluster.cluster_name} ({cluster.region}) has no API endpoint{reason}")
    if not cluster.ca_data:
        raise SocketError(name, f"EKS cluster {cluster.cluster_name} ({cluster.region}) has no certificate authority")
    try:
        base_url = normalize_server(cluster.endpoint)
        ssl_context = client_context(
            ca_pem=pem_from_data(cluster.ca_data, "the cluster's certificateAuthority.data"), insecure=False
        )
    except (ValueError, TlsError) as exc:
        raise SocketError(name, f"EKS cluster {cluster.cluster_name} ({cluster.region}): {exc}") from None
    return Upstream(
        name=name,
        service_type="aws_eks",
        base_url=base_url,
        ssl_context=ssl_context,
        tags=dict(cluster.tags),
        impersonation_enabled=impersonation_enabled,
        credentials=EksBearerToken(cluster.cluster_name, cluster.region, credentials, token_cache),
        details={
            "source": f"eks:DescribeCluster {cluster.arn}",
            "tls": "verified against the cluster's CA (from eks:DescribeCluster)",
        },
    )


# ---- standard sockets


def _resolve_standard(
    name: str, cfg: StandardSocketConfig, environ: Mapping[str, str], service_account_dir: Path
) -> Upstream:
    problems = socket_problems(cfg)
    if problems:
        raise SocketError(name, "; ".join(problems))
    client: ClientConfig | None = None
    if cfg.kubeconfig_path is not None or cfg.context is not None or cfg.server is None or not cfg.has_static_auth:
        client = load_client_config(
            kubeconfig_path=cfg.kubeconfig_path,
            context=cfg.context,
            environ=environ,
            service_account_dir=service_account_dir,
        )
    details: dict[str, str] = {"source": client.source if client is not None else "socket config"}

    if cfg.server is not None:
        base_url = normalize_server(cfg.server)
    else:
        assert client is not None
        try:
            base_url = normalize_server(client.cluster.server)
        except ValueError as exc:
            raise KubeconfigError(f"{client.cluster.origin}: {exc}") from None

    ssl_context, tls_server_name, details["tls"] = _tls(name, cfg, client, plain_http=base_url.startswith("http://"))

    if cfg.has_static_auth:
        credentials = _static_auth(cfg, ssl_context, details)
    elif client is not None and client.user is not None:
        credentials = _kubeconfig_auth(client, ssl_context, details)
    else:
        credentials = NoHeaders("none (the kubeconfig context has no user)")

    return Upstream(
        name=name,
        service_type="standard",
        base_url=base_url,
        ssl_context=ssl_context,
        tags=dict(cfg.tags),
        impersonation_enabled=cfg.impersonation_enabled,
        credentials=credentials,
        tls_server_name=tls_server_name,
        details=details,
    )


def _tls(
    name: str, cfg: StandardSocketConfig, client: ClientConfig | None, *, plain_http: bool
) -> tuple[ssl.SSLContext | None, str | None, str]:
    """The SSLContext, the TLS server name override, and how verification is done (for describe)."""
    tls_server_name = None
    if cfg.has_static_tls or client is None:
        insecure = cfg.insecure_skip_tls_verify
        if cfg.certificate_authority is not None:
            ca_pem = read_pem_file(Path(cfg.certificate_authority).expanduser(), "certificate_authority")
            how = f"verified against certificate_authority {cfg.certificate_authority}"
        elif cfg.certificate_authority_data is not None:
            ca_pem = pem_from_data(cfg.certificate_authority_data, "certificate_authority_data")
            how = "verified against certificate_authority_data"
        else:
            ca_pem = None
            how = "verified against the system trust store"
        setting = "insecure_skip_tls_verify"
    else:
        cluster = client.cluster
        insecure = cluster.insecure_skip_tls_verify
        tls_server_name = cluster.tls_server_name
        if cluster.certificate_authority_data is not None:
            ca_pem = pem_from_data(cluster.certificate_authority_data, f"{cluster.origin}: certificate-authority-data")
            how = "verified against the kubeconfig cluster's certificate-authority-data"
        elif cluster.certificate_authority is not None:
            ca_pem = read_pem_file(cluster.certificate_authority, f"{cluster.origin}: certificate-authority")
            how = f"verified against {cluster.certificate_authority}"
        else:
            ca_pem = None
            how = "verified against the system trust store"
        setting = f"insecure-skip-tls-verify in {cluster.origin}"
        if insecure and ca_pem is not None:
            raise KubeconfigError(
                f"{cluster.origin}: the cluster sets both insecure-skip-tls-verify and a certificate authority; "
                "remove insecure-skip-tls-verify"
            )
    if plain_http:
        return None, None, "none (plain http: traffic and credentials are not encrypted)"
    if insecure:
        log.warning(
            "socket %s: TLS VERIFICATION IS DISABLED (%s): anyone on the network path can impersonate the "
            "API server and read the connector's credentials; configure the cluster's CA instead",
            name,
            setting,
        )
        how = f"NOT VERIFIED ({setting})"
    try:
        return client_context(ca_pem=ca_pem, insecure=insecure), tls_server_name, how
    except TlsError as exc:
        raise TlsError(f"{how.removeprefix('verified against ')}: {exc}") from None


def _static_auth(
    cfg: StandardSocketConfig, ssl_context: ssl.SSLContext | None, details: dict[str, str]
) -> CredentialSource:
    if cfg.client_certificate is not None or cfg.client_certificate_data is not None:
        if cfg.client_certificate is not None:
            cert = read_pem_file(Path(cfg.client_certificate).expanduser(), "client_certificate")
            cert_from = f"client_certificate {cfg.client_certificate}"
        else:
            assert cfg.client_certificate_data is not None
            value = cfg.client_certificate_data.get_secret_value()
            cert = pem_from_data(resolve_secret(value), "client_certificate_data")
            cert_from = f"client_certificate_data ({describe_secret(value)})"
        if cfg.client_key is not None:
            key = read_pem_file(Path(cfg.client_key).expanduser(), "client_key")
        else:
            assert cfg.client_key_data is not None
            key = pem_from_data(resolve_secret(cfg.client_key_data.get_secret_value()), "client_key_data")
        _load_certificate(ssl_context, cert, key, cert_from)
        details["client_certificate"] = cert_from
    if cfg.token is not None:
        value = cfg.token.get_secret_value()
        return StaticToken(resolve_secret(value), f"bearer token ({describe_secret(value)})")
    if cfg.token_file is not None:
        return TokenFile(Path(cfg.token_file).expanduser(), kind="token_file")
    return NoHeaders("client certificate")


def _kubeconfig_auth(
    client: ClientConfig, ssl_context: ssl.SSLContext | None, details: dict[str, str]
) -> CredentialSource:
    user: AuthInfo = client.user  # type: ignore[assignment]
    has_cert = user.client_certificate is not None or user.client_certificate_data is not None
    if has_cert:
        where = f"{user.origin}: "
        if user.client_certificate_data is not None:
            cert = pem_from_data(user.client_certificate_data, f"{where}client-certificate-data")
            cert_from = "the kubeconfig user's client-certificate-data"
        else:
            assert user.client_certificate is not None
            cert = read_pem_file(user.client_certificate, f"{where}client-certificate")
            cert_from = f"the kubeconfig user's client-certificate {user.client_certificate}"
        if user.client_key_data is not None:
            key = pem_from_data(user.client_key_data, f"{where}client-key-data")
        else:
            assert user.client_key is not None
            key = read_pem_file(user.client_key, f"{where}client-key")
        _load_certificate(ssl_context, cert, key, cert_from)
        details["client_certificate"] = cert_from
    # client-go's precedence: tokenFile over token; an exec plugin only when nothing else authenticates.
    if user.token_file is not None:
        return TokenFile(user.token_file, kind="in_cluster" if client.in_cluster else "token_file")
    if user.token is not None:
        return StaticToken(user.token, "bearer token from the kubeconfig user")
    if user.username is not None:
        return BasicAuth(user.username, user.password or "", f"basic auth as {user.username} (kubeconfig user)")
    if user.exec is not None and not has_cert:
        return ExecPlugin(user.exec, cluster=client.cluster, ssl_context=ssl_context)
    return NoHeaders("client certificate" if has_cert else "none (the kubeconfig user has no credentials)")


def _load_certificate(ssl_context: ssl.SSLContext | None, cert: bytes, key: bytes, cert_from: str) -> None:
    if ssl_context is None:
        raise TlsError(f"{cert_from}: a client certificate needs an https:// server")
    try:
        load_client_certificate(ssl_context, cert, key)
    except TlsError as exc:
        raise TlsError(f"{cert_from}: {exc}") from None


# ---- aws_eks sockets


async def _resolve_eks(name: str, cfg: AwsEksSocketConfig, token_cache: EksTokenCache) -> Upstream:
    cluster = await asyncio.to_thread(_describe_cluster, name, cfg)
    upstream = upstream_for_eks_cluster(
        cluster, cfg.credentials, token_cache, impersonation_enabled=cfg.impersonation_enabled
    )
    # The cluster's AWS tags, with the socket's own tags on top.
    return dataclasses.replace(upstream, tags={**cluster.tags, **cfg.tags})


def _describe_cluster(name: str, cfg: AwsEksSocketConfig) -> EksCluster:
    from botocore.exceptions import BotoCoreError, ClientError

    from connector.aws.credentials import make_session
    from connector.aws.discovery_scan import cluster_from_description, describe_error

    cluster_name, region = cfg.eks_cluster_name, cfg.eks_cluster_region
    where = f"eks:DescribeCluster {cluster_name} in {region}"
    try:
        client = make_session(cfg.credentials, region=region).client("eks", region_name=region)
        described: dict[str, Any] = client.describe_cluster(name=cluster_name)["cluster"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise SocketError(
                name, f"EKS cluster {cluster_name} not found in {region}; check eks_cluster_name and eks_cluster_region"
            ) from None
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            raise SocketError(
                name, f"{where}: {describe_error(exc)}; allow eks:DescribeCluster for the connector's AWS identity"
            ) from None
        raise SocketError(name, f"{where}: {describe_error(exc)}") from None
    except (BotoCoreError, SecretError) as exc:
        raise SocketError(name, f"{where}: {exc}") from None
    status = described.get("status")
    try:
        return cluster_from_description(name, region, described, cfg.credentials)
    except ValueError as exc:
        raise SocketError(name, f"EKS cluster {cluster_name} in {region} (status {status}): {exc}") from None
