"""The kubeconfig exec credential plugin protocol (client.authentication.k8s.io), shared by
`python -m connector client token` and `python -m connector token` (EKS)."""

from __future__ import annotations

import datetime as dt
import json
import os

SUPPORTED_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


def requested_api_version(default: str = "client.authentication.k8s.io/v1") -> str:
    """The apiVersion kubectl asked for in KUBERNETES_EXEC_INFO; it must be answered in kind."""
    raw = os.environ.get("KUBERNETES_EXEC_INFO", "")
    if not raw:
        return default
    try:
        version = json.loads(raw).get("apiVersion", default)
    except (ValueError, AttributeError):
        return default
    if version not in SUPPORTED_API_VERSIONS:
        raise ValueError(f"KUBERNETES_EXEC_INFO asks for {version!r}; supported: {', '.join(SUPPORTED_API_VERSIONS)}")
    return version


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exec_credential(token: str, expires_at: dt.datetime, api_version: str) -> str:
    return json.dumps(
        {
            "kind": "ExecCredential",
            "apiVersion": api_version,
            "spec": {},
            "status": {"expirationTimestamp": rfc3339(expires_at), "token": token},
        }
    )
