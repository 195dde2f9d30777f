"""`python -m infra render`: the connector's in-cluster manifests as YAML, for `kubectl apply -f`.

Border0's quick start without Pulumi: one file with the namespace, a service account bound to a
ClusterRole (the connector reaches the cluster it runs in with its service account), the config
Secret, the hardened Deployment, its Service and PodDisruptionBudget. Built by the same functions
the Pulumi program uses, under names of their own: the RBAC objects are labelled
`app.kubernetes.io/managed-by: infra-render`, and with `--check-context` the render first reads the
cluster and refuses (exit 2) when its output would replace an object another manager (the Pulumi
program) owns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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
    access = rbac.in_cluster_manifests(rbac.FULL_ACCESS, settings.name, namespace)
    return manifests.to_yaml([*docs[:2], *access, *docs[2:]])


class ForeignObjects(Exception):
    """The cluster holds objects of the same kind and name that another manager owns."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return str(doc.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))


def _managed_by(doc: dict[str, Any]) -> str | None:
    return ((doc.get("metadata") or {}).get("labels") or {}).get(rbac.MANAGED_BY)


def foreign_objects(rendered: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[str]:
    """Pure: one line per rendered object that would replace an existing one labelled with another manager.

    An existing object without the label (a namespace made by hand) is not refused: nobody claims it."""
    ours = {_key(doc): doc for doc in rendered}
    problems = []
    for obj in existing:
        mine = ours.get(_key(obj))
        if mine is None:
            continue
        theirs, wanted = _managed_by(obj), _managed_by(mine)
        if theirs and theirs != wanted:
            kind, namespace, name = _key(obj)
            where = f" in namespace {namespace}" if namespace else ""
            problems.append(
                f"{kind} {name}{where} exists and is managed by {theirs} ({rbac.MANAGED_BY}); applying this "
                f"output would replace it. Remove it with its manager first, or leave this cluster to {theirs}."
            )
    return problems


def existing_objects(rendered: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
    """The cluster's objects with the kinds and names of `rendered` (the objects the render claims by its
    managed-by label), read with kubectl, the tool that applies them."""
    names = [f"{kind}/{name}" for kind, _, name in map(_key, rendered)]
    namespace = next((ns for _, ns, _ in map(_key, rendered) if ns), "default")
    argv = ["kubectl", "--context", context, "--namespace", namespace, "get", *names, "-o", "json",
            "--ignore-not-found"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ValueError("--check-context needs kubectl on PATH") from None
    if done.returncode != 0:
        raise ValueError(f"could not read the cluster of context {context!r}: {done.stderr.strip()}")
    if not done.stdout.strip():
        return []
    answer = json.loads(done.stdout)
    return list(answer.get("items", [])) if answer.get("kind") == "List" else [answer]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default="eks-access-connector", help="namespace to install into")
    parser.add_argument(
        "--image", default=manifests.DEFAULT_IMAGE, help="connector image, pinned by tag or digest (never latest)"
    )
    parser.add_argument("--config", type=Path, help="connector config file (default: a starter config)")
    parser.add_argument(
        "--check-context", metavar="CONTEXT",
        help="read the cluster of this kubectl context first; refuse if the output would replace an object "
        "another manager (the Pulumi program) owns",
    )


def run(args: argparse.Namespace) -> int:
    try:
        text = render(args.namespace, args.image, args.config)
        if args.check_context:
            rendered = [doc for doc in yaml.safe_load_all(text) if _managed_by(doc)]
            problems = foreign_objects(rendered, existing_objects(rendered, args.check_context))
            if problems:
                raise ForeignObjects(problems)
        sys.stdout.write(text)
    except ForeignObjects as exc:
        print("\n".join(f"python -m infra render: {p}" for p in exc.problems), file=sys.stderr)
        return EXIT_USAGE
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
