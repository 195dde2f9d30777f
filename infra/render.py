"""`python -m infra render`: the connector's in-cluster manifests as YAML, for `kubectl apply -f`.

Border0's quick start without Pulumi: one file with the namespace, a service account bound to a
ClusterRole (the connector reaches the cluster it runs in with its service account), the config
Secret, the hardened Deployment, its Service and PodDisruptionBudget. Built by the same functions
the Pulumi program uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from connector.config import ConfigError, load_config, read_config_text
from connector.configfile import parse_yaml
from infra import manifests, rbac
from infra.connector_config import ConnectorConfigConflict, config_yaml, in_cluster_config

EXIT_USAGE = 2

# Without --config: expose the cluster the connector runs in. No authentication and no policy is
# configured, so every request is refused until you add yours (see the README).
STARTER_CONFIG: dict[str, Any] = {"sockets": {"this-cluster": {"service_type": "standard"}}}


def render(namespace: str, image: str, config_path: Path | None) -> str:
    """The manifests as multi-document YAML; raises ConfigError, ConnectorConfigConflict or ValueError."""
    if config_path is None:
        user_config, source = STARTER_CONFIG, "starter config"
    else:
        load_config(config_path)  # every problem with its file and line
        user_config = parse_yaml(read_config_text(config_path), str(config_path)) or {}
        source = str(config_path)
    config = in_cluster_config(
        user_config, tls_from_secret=False, recordings=None, stack_manages_iam=False, source=source
    )
    settings = manifests.ConnectorManifestSettings(
        namespace=namespace,
        image=image,
        config_yaml=config_yaml(config, f"{source} (as deployed)"),
        # One replica: without a shared certificate each replica would serve its own CA. ClusterIP:
        # reach it with `kubectl port-forward`, which matches the certificate made for 127.0.0.1.
        replicas=1,
        service_type="ClusterIP",
        automount_service_account_token=True,
    )
    docs = manifests.connector_manifests(settings)
    access = rbac.rbac_manifests(rbac.FULL_ACCESS, rbac.service_account_subject(settings.name, namespace))
    return manifests.to_yaml([*docs[:2], *access, *docs[2:]])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default="eks-access-connector", help="namespace to install into")
    parser.add_argument(
        "--image", default=manifests.DEFAULT_IMAGE, help="connector image, pinned by tag or digest (never latest)"
    )
    parser.add_argument("--config", type=Path, help="connector config file (default: a starter config)")


def run(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(render(args.namespace, args.image, args.config))
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return EXIT_USAGE
    except ConnectorConfigConflict as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"python -m infra render: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
