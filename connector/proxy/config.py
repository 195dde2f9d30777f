"""The `server:` section of the connector config: where it listens, its TLS, its limits and timeouts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from connector.model import StrictModel


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def is_wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")  # noqa: S104 - a server is meant to be reachable


def parse_listen(value: str) -> ListenAddress:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` (every interface)."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f'listen "{value}": write an IPv6 address as [ADDRESS]:PORT, e.g. [::]:8443')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'listen "{value}": {host!r} is not an IPv6 address') from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f'listen "{value}": write HOST:PORT, e.g. 0.0.0.0:8443')
        if ":" in host:
            raise ValueError(f'listen "{value}": put an IPv6 address in brackets, e.g. [::]:8443')
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'listen "{value}": the port must be a number from 0 to 65535')
    return ListenAddress(host or "0.0.0.0", int(port))  # noqa: S104 - `:PORT` means every interface


# The connector's Prometheus metrics, plain HTTP and unauthenticated, so loopback only unless the config
# says otherwise. 8442 is next to the main port and outside Prometheus' exporter range (9100-9999), which
# is allocated to the last port.
DEFAULT_METRICS_LISTEN = "127.0.0.1:8442"
_METRICS_OFF = ("", "off")


class TlsConfig(StrictModel):
    """The serving certificate. Leave both unset to have the connector make its own CA and certificate."""

    cert_file: str | None = Field(default=None, min_length=1)
    key_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "set both cert_file and key_file, or neither (the connector then creates its own CA and certificate)"
            )
        return self


class LimitsConfig(StrictModel):
    """Request limits: requests over the size limits get 413 before anything reaches a cluster, a
    long-lived stream over the stream limits gets 429, and a connection over the connection bounds
    is closed."""

    # Go's http.DefaultMaxHeaderBytes, which kube-apiserver uses.
    max_header_bytes: int = Field(default=1 << 20, ge=8 << 10, le=16 << 20)
    # The request target (path and query). aiohttp's parser refuses a longer one while reading it, so
    # an unauthenticated client cannot make the connector split and audit megabytes of query pairs.
    # 16 KiB is far above any Kubernetes client's URL (the longest are label and field selectors).
    max_request_line_bytes: int = Field(default=16 << 10, ge=1 << 10, le=1 << 20)
    max_header_count: int = Field(default=256, ge=32, le=4096)
    # kube-apiserver refuses write bodies over 3 MiB; a bigger body could only fail upstream.
    max_body_bytes: int = Field(default=3 << 20, ge=1 << 10, le=1 << 30)
    # Each open watch, `logs -f`, exec, attach or port-forward holds a client connection, a cluster
    # connection and buffers for as long as it lasts: one user (or a runaway script) must not be able to
    # take them all. 64 is far above what a person's kubectl sessions and a controller's informers use.
    max_streams_per_user: int = Field(default=64, ge=1, le=100_000)
    max_streams: int = Field(default=2048, ge=1, le=1_000_000)
    # Connection bounds, before any request is known (kube-apiserver has the same: Go's ReadHeaderTimeout,
    # IdleTimeout). They never apply while a request is with the handler, so quiet streams stay open.
    # At most asyncio's own 60 s handshake bound, which stays behind ours.
    tls_handshake_seconds: float = Field(default=10.0, gt=0, le=60)
    header_read_seconds: float = Field(default=30.0, gt=0, le=3600)
    keepalive_idle_seconds: float = Field(default=90.0, gt=0, le=3600)
    max_connections: int = Field(default=10_000, ge=1, le=1_000_000)
    max_connections_per_ip: int = Field(default=500, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _per_ip_within_total(self) -> LimitsConfig:
        if self.max_connections_per_ip > self.max_connections:
            raise ValueError(
                f"max_connections_per_ip ({self.max_connections_per_ip}) is over max_connections "
                f"({self.max_connections}); lower it or raise max_connections"
            )
        return self


class UpstreamTimeoutsConfig(StrictModel):
    """How long to wait for a cluster. Streams (watch, logs -f, exec) have no total time limit."""

    connect_seconds: float = Field(default=10.0, gt=0, le=300)
    response_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Until the response headers arrive (kube-apiserver's own limit is 60 s).",
    )


class ServerConfig(StrictModel):
    listen: str = "0.0.0.0:8443"
    public_url: str | None = Field(
        default=None,
        description="https://HOST[:PORT] clients use; kubeconfig servers are PUBLIC_URL/sockets/NAME. "
        "Default: https://<listen host, or 127.0.0.1 for a wildcard>:<port>.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    state_dir: str | None = Field(
        default=None,
        min_length=1,
        description="Where the self-made CA and serving certificate are kept (default: the user state directory).",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    upstream: UpstreamTimeoutsConfig = Field(default_factory=UpstreamTimeoutsConfig)
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=3600)
    config_poll_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="How often the config file is checked for changes."
    )
    metrics_listen: str | None = Field(
        default=DEFAULT_METRICS_LISTEN,
        description="HOST:PORT of the plain-HTTP Prometheus `/metrics` listener (port 0: any free port, "
        "logged); `off`, empty or null: no metrics listener.",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("metrics_listen", mode="before")
    @classmethod
    def _check_metrics_listen(cls, value: object) -> str | None:
        # YAML reads a bare `off` as false.
        if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _METRICS_OFF):
            return None
        if not isinstance(value, str):
            raise ValueError(f"metrics_listen {value!r}: write HOST:PORT, e.g. {DEFAULT_METRICS_LISTEN}, or off")
        parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f'public_url "{value}" is not a valid URL: {exc}') from None
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f'public_url "{value}" must be https://HOST[:PORT]')
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f'public_url "{value}" must be only https://HOST[:PORT] (no path, query or user)')
        return value.rstrip("/")

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> ServerConfig:
        metrics, listen = self.metrics_address, self.listen_address
        if metrics is None or metrics.port == 0 or metrics.port != listen.port:
            return self
        if metrics.host == listen.host or metrics.is_wildcard or listen.is_wildcard:
            raise ValueError(
                f'metrics_listen "{self.metrics_listen}" takes the port of listen "{self.listen}": give it another port'
            )
        return self

    @property
    def listen_address(self) -> ListenAddress:
        return parse_listen(self.listen)

    @property
    def metrics_address(self) -> ListenAddress | None:
        """Where `/metrics` is served; None when it is off."""
        return parse_listen(self.metrics_listen) if self.metrics_listen is not None else None
