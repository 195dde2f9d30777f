"""The connector config as it runs in the cluster: the user's config plus what the Deployment fixes.

The pod's root filesystem is read-only and its ports (serving, and metrics for Prometheus), TLS
files and writable directories are set by the Deployment, so those settings are filled in here,
and a user value that would contradict them (another port, a state dir on the read-only
filesystem, a second TLS source) is refused with the key that conflicts, before anything is
deployed. The result is validated with the connector's own config loader: what goes into the
Secret is exactly what the connector will accept.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass
from typing import Any

import yaml

from connector.config import ConnectorConfig, load_model
from connector.proxy.config import parse_listen
from infra import manifests

RECORDINGS_DIR = f"{manifests.STATE_DIR}/recordings"
WRITABLE_DIRS = (manifests.STATE_DIR, "/tmp")  # noqa: S108 - emptyDir volumes of the pod
TLS_CERT_FILE = f"{manifests.TLS_DIR}/tls.crt"
TLS_KEY_FILE = f"{manifests.TLS_DIR}/tls.key"


class ConnectorConfigConflict(ValueError):
    """The user's connector config contradicts the deployment; `problems` names each key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class RecordingsTarget:
    """The S3 location the stack manages for session recordings."""

    bucket: str
    prefix: str
    region: str


def _writable(path: str) -> bool:
    normal = posixpath.normpath(path)
    return any(normal == d or normal.startswith(d + "/") for d in WRITABLE_DIRS)


def _metrics_port(value: object) -> int | None:
    """The port of a `server.metrics_listen` value; None when it is off or not an address at all (the
    connector's own validation then names what is wrong with it)."""
    if not isinstance(value, str) or value.strip().lower() in ("", "off"):
        return None
    try:
        return parse_listen(value).port
    except ValueError:
        return None


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if value is None:
        value = config[key] = {}
    return value


def in_cluster_config(
    user_config: dict[str, Any],
    *,
    tls_from_secret: bool,
    recordings: RecordingsTarget | None,
    stack_manages_iam: bool,
    source: str,
    key_prefix: str = "",
) -> dict[str, Any]:
    """The user's config with the deployment's settings filled in; ConnectorConfigConflict on a clash.

    `stack_manages_iam` is true under Pulumi, where the connector role may only write recordings to
    the bucket the stack knows (so a `recordings.s3` of the user's own would fail at run time).
    Problems read `SOURCE: KEY_PREFIXserver.listen: ...`.
    """
    where = f"{source}: {key_prefix}"
    config = copy.deepcopy(user_config)
    problems: list[str] = []
    server = _section(config, "server")
    listen = server.get("listen")
    if listen is not None and parse_listen(listen).port != manifests.PORT:
        problems.append(f"{where}server.listen: the Deployment serves on port {manifests.PORT}; remove listen")
    if "metrics_listen" not in server:
        # Reachable on the pod network, where Prometheus scrapes it; the Service does not expose it.
        server["metrics_listen"] = f"0.0.0.0:{manifests.METRICS_PORT}"
    elif _metrics_port(server["metrics_listen"]) not in (None, manifests.METRICS_PORT):
        problems.append(
            f"{where}server.metrics_listen: the Deployment declares the metrics port {manifests.METRICS_PORT}; "
            "remove metrics_listen, or set it to off"
        )
    state_dir = server["state_dir"] = server.get("state_dir") or manifests.STATE_DIR
    if not _writable(state_dir):
        problems.append(f"{where}server.state_dir: {state_dir} is on the read-only root filesystem; remove it")
    if tls_from_secret:
        if server.get("tls"):
            problems.append(f"{where}server.tls: connector.tls already gives the certificate; remove server.tls")
        server["tls"] = {"cert_file": TLS_CERT_FILE, "key_file": TLS_KEY_FILE}
    audit_file = (config.get("audit") or {}).get("file")
    if audit_file is not None and not _writable(audit_file):
        problems.append(
            f"{where}audit.file: {audit_file} is on the read-only root filesystem; leave it out (stdout) "
            f"or write under {manifests.STATE_DIR}"
        )
    recording = config.get("recordings") or {}
    if recordings is not None:
        if recording.get("s3") is not None:
            problems.append(f"{where}recordings.s3: the stack sets it from recordings.bucket; remove it")
        recording = _section(config, "recordings")
        recording.setdefault("dir", RECORDINGS_DIR)
        recording["s3"] = {"bucket": recordings.bucket, "prefix": recordings.prefix, "region": recordings.region}
    elif stack_manages_iam and recording.get("s3") is not None:
        problems.append(
            f"{where}recordings.s3: the connector role may only write to the stack's bucket; "
            "set recordings.bucket (create, or your bucket's name) instead"
        )
    if recording.get("dir") is not None and not _writable(str(recording["dir"])):
        problems.append(f"{where}recordings.dir: {recording['dir']} is on the read-only root filesystem")
    if problems:
        raise ConnectorConfigConflict(problems)
    return config


def config_yaml(config: dict[str, Any], source: str = "connector config") -> str:
    """The Secret's `config.yaml`, checked with the connector's own loader (raises ConfigError)."""
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1 << 16)
    load_model(ConnectorConfig, text, source)
    return text
