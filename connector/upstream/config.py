"""The `sockets:` section of the connector config: one entry per exposed cluster.

Field names are Border0's so that users can move their sockets over. The models check types and
formats when the config loads; `socket_problems` checks how the fields combine. The combination
checks run per socket when it is resolved, so that one misconfigured socket is reported by name
while the others keep serving.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Discriminator, Field, SecretStr, Tag

from connector.aws import names as aws_names
from connector.aws.credentials import AwsCredentials
from connector.model import StrictModel

# Socket names appear in URLs, kubeconfig context names and metric labels.
_SOCKET_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _socket_name(value: str) -> str:
    if not _SOCKET_NAME.fullmatch(value):
        raise ValueError(
            f"socket name {value!r} must be 1-63 lowercase letters, digits or '-', starting and ending "
            "with a letter or digit (it becomes part of URLs and kubeconfig context names)"
        )
    return value


SocketName = Annotated[str, AfterValidator(_socket_name)]
NonEmpty = Annotated[str, Field(min_length=1)]
Secret = Annotated[SecretStr, Field(min_length=1)]


class _SocketBase(StrictModel):
    impersonation_enabled: bool = Field(
        default=False,
        description="Send Impersonate-User/Group for the caller, so the cluster's RBAC checks each request too.",
    )
    tags: dict[NonEmpty, str] = Field(default_factory=dict, description="Labels that policies can match sockets on.")


class StandardSocketConfig(_SocketBase):
    """Any Kubernetes API: explicit fields first, then the kubeconfig (client-go's loading rules)."""

    service_type: Literal["standard"]
    # Configuration source
    kubeconfig_path: NonEmpty | None = None
    context: NonEmpty | None = None
    # Target selection
    server: NonEmpty | None = None
    certificate_authority: NonEmpty | None = None
    certificate_authority_data: NonEmpty | None = None
    insecure_skip_tls_verify: bool = False
    # Authentication
    client_certificate: NonEmpty | None = None
    client_certificate_data: Secret | None = None
    client_key: NonEmpty | None = None
    client_key_data: Secret | None = None
    token: Secret | None = None
    token_file: NonEmpty | None = None

    @property
    def has_static_auth(self) -> bool:
        """Whether the authentication strategy is static (the kubeconfig's user is then not used)."""
        return any(
            v is not None
            for v in (
                self.client_certificate,
                self.client_certificate_data,
                self.client_key,
                self.client_key_data,
                self.token,
                self.token_file,
            )
        )

    @property
    def has_static_tls(self) -> bool:
        """Whether TLS settings are given here (they then replace the kubeconfig cluster's, as a whole)."""
        return (
            self.certificate_authority is not None
            or self.certificate_authority_data is not None
            or self.insecure_skip_tls_verify
        )


class AwsEksSocketConfig(_SocketBase):
    """An EKS cluster by name and region: endpoint and CA from eks:DescribeCluster, EKS bearer tokens."""

    service_type: Literal["aws_eks"]
    eks_cluster_name: Annotated[str, AfterValidator(aws_names.eks_cluster_name)]
    eks_cluster_region: Annotated[str, AfterValidator(aws_names.aws_region)]
    credentials: AwsCredentials | None = None


def _service_type(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("service_type")
    return getattr(value, "service_type", None)


# The tags are bracketed because pydantic puts them in error locations, and connector.config drops
# bracketed parts there: `sockets.prod.token` reads better than `sockets.prod.standard.token`.
SocketConfig = Annotated[
    Annotated[StandardSocketConfig, Tag("[standard]")] | Annotated[AwsEksSocketConfig, Tag("[aws_eks]")],
    Discriminator(
        lambda v: f"[{_service_type(v)}]",
        custom_error_type="service_type",
        custom_error_message=(
            "service_type must be standard (any cluster: kubeconfig, in-cluster or static server) "
            "or aws_eks (an EKS cluster by name and region)"
        ),
    ),
]

Sockets = dict[SocketName, SocketConfig]


def normalize_server(url: str) -> str:
    """Check an API server URL and return it without a trailing slash, keeping any path prefix.

    Like client-go, a bare `host:port` means https.
    """
    if "://" not in url:
        url = "https://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"server {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"server {url!r} must use https:// (or http:// for a plain-HTTP API server)")
    if not parts.hostname:
        raise ValueError(f"server {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("server must not contain credentials (user:password@); use token or client certificates")
    if parts.query or parts.fragment:
        raise ValueError(f"server {url!r} must not have a query or fragment")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def socket_problems(cfg: StandardSocketConfig) -> list[str]:
    """Every way the fields of a standard socket contradict each other, each with its fix."""
    problems: list[str] = []

    def exclusive(a: str, b: str) -> None:
        if getattr(cfg, a) is not None and getattr(cfg, b) is not None:
            problems.append(f"{a} and {b} are both set; keep only one")

    def requires(a: str, b: str, b_alt: str) -> None:
        if getattr(cfg, a) is not None and getattr(cfg, b) is None and getattr(cfg, b_alt) is None:
            problems.append(f"{a} is set but {b} is missing")

    exclusive("certificate_authority", "certificate_authority_data")
    exclusive("client_certificate", "client_certificate_data")
    exclusive("client_key", "client_key_data")
    exclusive("token", "token_file")
    for ca_field in ("certificate_authority", "certificate_authority_data"):
        if cfg.insecure_skip_tls_verify and getattr(cfg, ca_field) is not None:
            problems.append(
                f"insecure_skip_tls_verify and {ca_field} are both set; remove insecure_skip_tls_verify "
                "to verify the server against the CA"
            )
    requires("client_certificate_data", "client_key_data", "client_key")
    requires("client_certificate", "client_key", "client_key_data")
    requires("client_key_data", "client_certificate_data", "client_certificate")
    requires("client_key", "client_certificate", "client_certificate_data")
    if cfg.server is not None:
        try:
            server = normalize_server(cfg.server)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if server.startswith("http://"):
                tls_fields = [
                    "certificate_authority",
                    "certificate_authority_data",
                    "client_certificate",
                    "client_certificate_data",
                ]
                tls_fields = [f for f in tls_fields if getattr(cfg, f) is not None]
                if cfg.insecure_skip_tls_verify:
                    tls_fields.append("insecure_skip_tls_verify")
                if tls_fields:
                    problems.append(f"server uses http:// but {', '.join(tls_fields)} need TLS; use https://")
    return problems
