"""Read kubeconfig files the way client-go does, and pick the cluster and user of a context.

client-go's default loading rules, which users expect because kubectl follows them:
- an explicit path is the only file read, and must exist;
- otherwise the `KUBECONFIG` list (missing files skipped), or `~/.kube/config` when it is unset;
- files are merged: for clusters, users and contexts the first file to define a name wins (as a
  whole entry), and so does the first file that sets `current-context`;
- relative paths in a file (certificate-authority, client-certificate, client-key, tokenFile, and an
  exec command containing a `/`) are relative to that file's directory;
- when no context is selected at all, and the process runs in a pod, the in-cluster service
  account is used.

Parsing is lenient about keys we do not use (kubeconfigs carry extensions and preferences) but
refuses settings that would change how the connection authenticates if ignored (auth-provider,
impersonation, proxy-url).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.configfile import ConfigError, parse_yaml, validation_errors

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")

# A kubeconfig is a few KB; a multi-MB file is not one (and is not worth holding in memory).
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024


class KubeconfigError(Exception):
    """The kubeconfig could not be used; the message says which file, entry and field, and what to do."""


# ---- the kubeconfig file format (only what we read; unknown keys are ignored, as client-go does)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Cluster(_Lenient):
    server: str = ""
    certificate_authority: str = Field(default="", alias="certificate-authority")
    certificate_authority_data: str = Field(default="", alias="certificate-authority-data")
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecure-skip-tls-verify")
    tls_server_name: str = Field(default="", alias="tls-server-name")
    proxy_url: str = Field(default="", alias="proxy-url")


class _ExecEnv(_Lenient):
    name: str
    value: str = ""


class _Exec(_Lenient):
    command: str = ""
    args: list[str] | None = None
    env: list[_ExecEnv] | None = None
    api_version: str = Field(default="", alias="apiVersion")
    install_hint: str = Field(default="", alias="installHint")
    provide_cluster_info: bool = Field(default=False, alias="provideClusterInfo")
    interactive_mode: str = Field(default="", alias="interactiveMode")


class _AuthProvider(_Lenient):
    name: str = ""


class _User(_Lenient):
    client_certificate: str = Field(default="", alias="client-certificate")
    client_certificate_data: str = Field(default="", alias="client-certificate-data")
    client_key: str = Field(default="", alias="client-key")
    client_key_data: str = Field(default="", alias="client-key-data")
    token: str = ""
    token_file: str = Field(default="", alias="tokenFile")
    username: str = ""
    password: str = ""
    impersonate: str = Field(default="", alias="as")
    impersonate_uid: str = Field(default="", alias="as-uid")
    impersonate_groups: list[str] | None = Field(default=None, alias="as-groups")
    auth_provider: _AuthProvider | None = Field(default=None, alias="auth-provider")
    exec: _Exec | None = None


class _Context(_Lenient):
    cluster: str = ""
    user: str = ""
    namespace: str = ""


class _NamedCluster(_Lenient):
    name: str
    cluster: _Cluster | None = None


class _NamedUser(_Lenient):
    name: str
    user: _User | None = None


class _NamedContext(_Lenient):
    name: str
    context: _Context | None = None


class _File(_Lenient):
    clusters: list[_NamedCluster] | None = None
    users: list[_NamedUser] | None = None
    contexts: list[_NamedContext] | None = None
    current_context: str = Field(default="", alias="current-context")


# ---- what the rest of the connector uses


@dataclass(frozen=True)
class ClusterInfo:
    """Where a cluster's API is and how to verify it. `certificate_authority_data` is PEM bytes."""

    server: str
    certificate_authority: Path | None = None
    certificate_authority_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    origin: str = ""


@dataclass(frozen=True)
class ExecConfig:
    """A client-go exec credential plugin (e.g. `aws eks get-token`)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "Never"


@dataclass(frozen=True)
class AuthInfo:
    """A kubeconfig user. `*_data` fields are PEM bytes (already base64-decoded)."""

    client_certificate: Path | None = None
    client_certificate_data: bytes | None = None
    client_key: Path | None = None
    client_key_data: bytes | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec: ExecConfig | None = None
    impersonates: bool = False
    auth_provider: str | None = None
    origin: str = ""


@dataclass(frozen=True)
class KubeContext:
    cluster: str
    user: str
    namespace: str = ""
    origin: str = ""


@dataclass(frozen=True)
class Kubeconfig:
    """One kubeconfig file, or several merged with client-go's rules. `files` are those actually read."""

    files: tuple[Path, ...] = ()
    current_context: str = ""
    clusters: Mapping[str, ClusterInfo] = field(default_factory=dict)
    users: Mapping[str, AuthInfo] = field(default_factory=dict)
    contexts: Mapping[str, KubeContext] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.clusters or self.users or self.contexts or self.current_context)

    def describe_files(self) -> str:
        return ", ".join(str(f) for f in self.files) if self.files else "(no kubeconfig file)"


@dataclass(frozen=True)
class ClientConfig:
    """What a socket connects with: the selected context's cluster and user (None: anonymous)."""

    source: str
    cluster: ClusterInfo
    user: AuthInfo | None
    in_cluster: bool = False


class NoContextSelected(KubeconfigError):
    """The kubeconfig names no context to use; client-go then falls back to the in-cluster config."""


# ---- parsing (pure)


def _decode_data(value: str, where: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{where} is not valid base64 (it holds base64-encoded PEM)") from None


def _resolve(path: str, base: Path) -> Path | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _duplicates(names: Sequence[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def parse_kubeconfig(text: str, path: Path) -> Kubeconfig:
    """Parse one kubeconfig file's text. Relative paths are resolved against `path`'s directory."""
    source = str(path)
    try:
        data = parse_yaml(text, source)
    except ConfigError as exc:
        raise KubeconfigError("; ".join(exc.errors)) from None
    if data is None:
        return Kubeconfig(files=(path,))
    if not isinstance(data, dict):
        raise KubeconfigError(f"{source}: a kubeconfig must be a mapping (kind: Config), got {type(data).__name__}")
    try:
        raw = _File.model_validate(data)
    except ValidationError as exc:
        raise KubeconfigError("; ".join(validation_errors(exc, source, text))) from None

    base = path.parent.absolute()
    errors: list[str] = []
    for kind, entries in (("clusters", raw.clusters), ("users", raw.users), ("contexts", raw.contexts)):
        for dup in _duplicates([e.name for e in entries or ()]):
            errors.append(f"{source}: {kind}: the name {dup!r} is defined more than once")
    if errors:
        raise KubeconfigError("; ".join(errors))

    clusters = {}
    for c in raw.clusters or ():
        cl = c.cluster or _Cluster()
        where = f"{source}: cluster {c.name!r}"
        clusters[c.name] = ClusterInfo(
            server=cl.server,
            certificate_authority=_resolve(cl.certificate_authority, base),
            certificate_authority_data=_decode_data(
                cl.certificate_authority_data, f"{where}: certificate-authority-data"
            ),
            insecure_skip_tls_verify=cl.insecure_skip_tls_verify,
            tls_server_name=cl.tls_server_name or None,
            proxy_url=cl.proxy_url or None,
            origin=source,
        )
    users = {}
    for u in raw.users or ():
        us = u.user or _User()
        where = f"{source}: user {u.name!r}"
        users[u.name] = AuthInfo(
            client_certificate=_resolve(us.client_certificate, base),
            client_certificate_data=_decode_data(us.client_certificate_data, f"{where}: client-certificate-data"),
            client_key=_resolve(us.client_key, base),
            client_key_data=_decode_data(us.client_key_data, f"{where}: client-key-data"),
            token=us.token or None,
            token_file=_resolve(us.token_file, base),
            username=us.username or None,
            password=us.password or None,
            exec=_parse_exec(us.exec, base, where) if us.exec is not None else None,
            impersonates=bool(us.impersonate or us.impersonate_uid or us.impersonate_groups),
            auth_provider=(us.auth_provider.name or "(unnamed)") if us.auth_provider is not None else None,
            origin=source,
        )
    contexts = {
        c.name: KubeContext(
            cluster=(c.context or _Context()).cluster,
            user=(c.context or _Context()).user,
            namespace=(c.context or _Context()).namespace,
            origin=source,
        )
        for c in raw.contexts or ()
    }
    return Kubeconfig(
        files=(path,), current_context=raw.current_context, clusters=clusters, users=users, contexts=contexts
    )


def _parse_exec(raw: _Exec, base: Path, where: str) -> ExecConfig:
    where = f"{where}: exec"
    if not raw.command:
        raise KubeconfigError(f"{where}: command is missing")
    if not raw.api_version:
        raise KubeconfigError(f"{where}: apiVersion is missing (use {EXEC_API_VERSIONS[0]})")
    if raw.api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{where}: apiVersion {raw.api_version!r} is not supported; use one of {', '.join(EXEC_API_VERSIONS)}"
        )
    mode = raw.interactive_mode
    if not mode:
        # client-go defaults only the beta version; v1 must say whether it wants a terminal.
        if raw.api_version.endswith("/v1"):
            raise KubeconfigError(f"{where}: interactiveMode must be set for apiVersion {raw.api_version} (use Never)")
        mode = "IfAvailable"
    if mode not in EXEC_INTERACTIVE_MODES:
        raise KubeconfigError(f"{where}: interactiveMode {mode!r} must be one of {', '.join(EXEC_INTERACTIVE_MODES)}")
    env = []
    for i, item in enumerate(raw.env or ()):
        if not item.name:
            raise KubeconfigError(f"{where}: env[{i}].name is empty")
        env.append((item.name, item.value))
    # PATH-based commands stay as they are; a command with a separator is a path relative to the file.
    command = raw.command
    if os.sep in command:
        command = str(_resolve(command, base))
    return ExecConfig(
        command=command,
        args=tuple(raw.args or ()),
        env=tuple(env),
        api_version=raw.api_version,
        install_hint=raw.install_hint,
        provide_cluster_info=raw.provide_cluster_info,
        interactive_mode=mode,
    )


def merge_kubeconfigs(configs: Sequence[Kubeconfig]) -> Kubeconfig:
    """Merge in precedence order: the first file to define a name, or current-context, wins."""
    clusters: dict[str, ClusterInfo] = {}
    users: dict[str, AuthInfo] = {}
    contexts: dict[str, KubeContext] = {}
    current = ""
    files: list[Path] = []
    for cfg in configs:
        files.extend(cfg.files)
        current = current or cfg.current_context
        for name, cluster in cfg.clusters.items():
            clusters.setdefault(name, cluster)
        for name, user in cfg.users.items():
            users.setdefault(name, user)
        for name, ctx in cfg.contexts.items():
            contexts.setdefault(name, ctx)
    return Kubeconfig(files=tuple(files), current_context=current, clusters=clusters, users=users, contexts=contexts)


def default_kubeconfig_paths(environ: Mapping[str, str]) -> list[Path]:
    """The `KUBECONFIG` list (empty entries dropped, duplicates removed), or `~/.kube/config`."""
    listed = environ.get("KUBECONFIG", "")
    if listed:
        out: list[Path] = []
        for entry in listed.split(os.pathsep):
            if entry and Path(entry) not in out:
                out.append(Path(entry))
        return out
    home = environ.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


def select_context(config: Kubeconfig, context: str | None) -> ClientConfig:
    """The cluster and user of `context`, or of the current context when `context` is None."""
    files = config.describe_files()
    name = context or config.current_context
    if not name:
        available = ", ".join(sorted(config.contexts)) or "none"
        raise NoContextSelected(f"kubeconfig {files} has no current-context; set `context` to one of: {available}")
    ctx = config.contexts.get(name)
    if ctx is None:
        available = ", ".join(sorted(config.contexts)) or "none"
        raise KubeconfigError(f"context {name!r} not found in kubeconfig {files} (available: {available})")
    if not ctx.cluster:
        raise KubeconfigError(f"{ctx.origin}: context {name!r} names no cluster")
    cluster = config.clusters.get(ctx.cluster)
    if cluster is None:
        raise KubeconfigError(f"cluster {ctx.cluster!r} (of context {name!r}) not found in kubeconfig {files}")
    if not cluster.server:
        raise KubeconfigError(f"{cluster.origin}: cluster {ctx.cluster!r} has no server")
    if cluster.proxy_url:
        raise KubeconfigError(
            f"{cluster.origin}: cluster {ctx.cluster!r} sets proxy-url, which the connector does not support; "
            "connect directly (set `server`) or remove proxy-url"
        )
    user = None
    if ctx.user:
        user = config.users.get(ctx.user)
        if user is None:
            raise KubeconfigError(f"user {ctx.user!r} (of context {name!r}) not found in kubeconfig {files}")
        check_user(user, ctx.user)
    return ClientConfig(source=f"kubeconfig {files}, context {name}", cluster=cluster, user=user)


def check_user(user: AuthInfo, name: str) -> None:
    """Refuse user settings the connector cannot honour, rather than connect as someone else."""
    where = f"{user.origin}: user {name!r}"
    if user.auth_provider is not None:
        raise KubeconfigError(
            f"{where} uses auth-provider {user.auth_provider!r}, which the connector does not support; "
            "use an exec credential plugin (e.g. kubelogin, gke-gcloud-auth-plugin) instead"
        )
    if user.impersonates:
        raise KubeconfigError(
            f"{where} sets as/as-groups/as-uid (impersonation); remove them, and use the socket's "
            "impersonation_enabled to act as each caller"
        )
    if user.token and user.username:
        raise KubeconfigError(f"{where} sets both token and username/password; keep only one")
    if (user.client_certificate or user.client_certificate_data) and not (user.client_key or user.client_key_data):
        raise KubeconfigError(f"{where} has a client certificate but no client-key or client-key-data")
    if (user.client_key or user.client_key_data) and not (user.client_certificate or user.client_certificate_data):
        raise KubeconfigError(f"{where} has a client key but no client-certificate or client-certificate-data")
    if user.exec is not None and user.exec.interactive_mode == "Always":
        raise KubeconfigError(
            f"{where}: exec plugin {user.exec.command} requires an interactive terminal (interactiveMode: Always), "
            "which a server has not; use a plugin mode that works without one"
        )


# ---- loading (I/O)


def read_kubeconfig(path: Path) -> Kubeconfig | None:
    """Parse the file at `path`; None when it does not exist."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KUBECONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise KubeconfigError(f"{path}: is a directory, not a kubeconfig file") from None
    except OSError as exc:
        raise KubeconfigError(f"{path}: cannot read kubeconfig: {exc.strerror or exc}") from None
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise KubeconfigError(f"{path}: larger than {MAX_KUBECONFIG_BYTES} bytes; is it a kubeconfig?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KubeconfigError(f"{path}: not UTF-8 text") from None
    return parse_kubeconfig(text, path)


def load_kubeconfig(explicit_path: str | None, environ: Mapping[str, str]) -> Kubeconfig:
    """Load the explicit file, or merge the default files (client-go's loading rules)."""
    if explicit_path is not None:
        path = Path(explicit_path).expanduser()
        config = read_kubeconfig(path)
        if config is None:
            raise KubeconfigError(f"kubeconfig_path {explicit_path}: file not found")
        return config
    configs = []
    errors = []
    for path in default_kubeconfig_paths(environ):
        try:
            config = read_kubeconfig(path)
        except KubeconfigError as exc:
            errors.append(str(exc))
            continue
        if config is not None:
            configs.append(config)
    if errors:
        raise KubeconfigError("; ".join(errors))
    return merge_kubeconfigs(configs)


def in_cluster_config(environ: Mapping[str, str], service_account_dir: Path) -> ClientConfig | None:
    """The pod's service account, or None when not running in a pod (client-go's InClusterConfig)."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    token = service_account_dir / "token"
    if not host or not port or not token.exists():
        return None
    ca = service_account_dir / "ca.crt"
    if not ca.exists():
        raise KubeconfigError(f"in-cluster: {ca} is missing, so the API server cannot be verified")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ClientConfig(
        source=f"in-cluster service account ({service_account_dir})",
        cluster=ClusterInfo(server=f"https://{netloc}", certificate_authority=ca, origin="in-cluster"),
        user=AuthInfo(token_file=token, origin="in-cluster"),
        in_cluster=True,
    )


def load_client_config(
    *,
    kubeconfig_path: str | None,
    context: str | None,
    environ: Mapping[str, str],
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ClientConfig:
    """Apply client-go's loading rules: explicit file, or default files, then the in-cluster config."""
    config = load_kubeconfig(kubeconfig_path, environ)
    try:
        return select_context(config, context)
    except NoContextSelected as exc:
        if kubeconfig_path is None:
            in_cluster = in_cluster_config(environ, service_account_dir)
            if in_cluster is not None:
                return in_cluster
            if config.is_empty:
                tried = ", ".join(str(p) for p in default_kubeconfig_paths(environ))
                raise KubeconfigError(
                    f"no kubeconfig found (looked at {tried}) and not running in a pod "
                    "(KUBERNETES_SERVICE_HOST is not set); set kubeconfig_path, or server with a token or "
                    "client certificate"
                ) from None
        raise KubeconfigError(str(exc)) from None


def exec_cluster_info(cluster: ClusterInfo) -> dict[str, Any]:
    """The `spec.cluster` an exec plugin receives when the kubeconfig sets provideClusterInfo."""
    info: dict[str, Any] = {"server": cluster.server}
    ca = cluster.certificate_authority_data
    if ca is None and cluster.certificate_authority is not None:
        try:
            ca = cluster.certificate_authority.read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"cannot read certificate-authority {cluster.certificate_authority}: {exc}") from None
    if ca is not None:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    if cluster.insecure_skip_tls_verify:
        info["insecure-skip-tls-verify"] = True
    if cluster.tls_server_name:
        info["tls-server-name"] = cluster.tls_server_name
    return info
