"""Kubeconfigs through which the Pulumi program reaches EKS clusters, authenticated by `python -m connector token`.

The token comes from the connector's own signer (the same code the connector runs), so deploying
needs no `aws` CLI. The exec plugin is run by the Kubernetes provider plugin and by the aws-auth
applier, whose environment is not the program's virtualenv: the command is therefore the Python
that runs the program, with the repository on its PYTHONPATH. Both are looked up at run time,
never written into the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


def token_command(cluster_name: str, region: str, *, profile: str | None = None) -> list[str]:
    """argv of the exec credential plugin for one cluster."""
    argv = ["-m", "connector", "token", "--cluster-name", cluster_name, "--region", region]
    if profile:
        argv += ["--profile", profile]
    return argv


def eks_kubeconfig(
    cluster_name: str,
    region: str,
    endpoint: str,
    ca_data: str,
    *,
    profile: str | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig for one EKS cluster; `ca_data` is base64 PEM, as eks:DescribeCluster returns it."""
    if not endpoint.startswith("https://"):
        raise ValueError(f"cluster {cluster_name}: endpoint {endpoint!r} is not an https URL")
    if not ca_data:
        raise ValueError(f"cluster {cluster_name}: no certificate authority data")
    name = f"{region}/{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API_VERSION,
                        "command": python or sys.executable,
                        "args": token_command(cluster_name, region, profile=profile),
                        "env": [{"name": "PYTHONPATH", "value": REPO_ROOT}],
                        "interactiveMode": "Never",
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
