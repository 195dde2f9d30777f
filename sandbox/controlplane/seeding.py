"""Putting a real cluster of the sandbox in its starting state, as the cluster creator would.

The seed objects are created with the `kubernetes` client as kubernetes-admin (`create_from_dict`:
the typed API for each kind); what a real cluster already has (the `default` and `kube-system`
namespaces) is left as it is. There is no kube-controller-manager, so the ServiceAccount
controller's part is done here: each namespace gets its `default` ServiceAccount, without which
the apiserver's ServiceAccount admission refuses pods. Then the harness waits until the node has
bound every seeded pod and reports it Running, so the first `kubectl get pods` shows what a
running cluster shows.

The connector's access is then granted by the caller with infra's own aws-auth applier
(`infra.aws_auth_resource.KubernetesConfigMapApi`, the one `pulumi up` runs) and RBAC builders.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kubernetes import client, config, utils

POD_RUNNING_TIMEOUT_SECONDS = 60.0


class SeedError(Exception):
    """The cluster did not accept its seed; the message names the object and the reason."""


def api_client(kubeconfig: dict[str, Any]) -> client.ApiClient:
    return config.new_client_from_config_dict(kubeconfig)


def create_objects(api: client.ApiClient, objects: Iterable[dict[str, Any]]) -> None:
    """Create each object; one that already exists is kept (a real cluster starts with some)."""
    for obj in objects:
        meta = obj.get("metadata") or {}
        try:
            utils.create_from_dict(api, obj, namespace=meta.get("namespace"))
        except utils.FailToCreateError as exc:
            failures = [e for e in exc.api_exceptions if e.status != 409]
            if failures:
                first = failures[0]
                raise SeedError(f"creating {obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}: "
                                f"HTTP {first.status} {first.reason}") from None


def wait_for_established(api: client.ApiClient, name: str, timeout: float = 60.0) -> None:
    """Wait until the CustomResourceDefinition `name` is served (its Established condition)."""
    extensions = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise SeedError(f"the CustomResourceDefinition {name} was not established within {timeout:.0f} s")


def service_account_token(api: client.ApiClient, namespace: str, name: str, seconds: int) -> str:
    """A token for the service account, from the apiserver's TokenRequest API (bound, expiring)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


def default_service_accounts(namespaces: Iterable[str]) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
            for ns in namespaces]


def wait_for_running_pods(api: client.ApiClient, pods: Iterable[tuple[str, str]]) -> None:
    core = client.CoreV1Api(api)
    waiting = set(pods)
    deadline = time.monotonic() + POD_RUNNING_TIMEOUT_SECONDS
    while waiting:
        for namespace, name in sorted(waiting):
            if core.read_namespaced_pod(name, namespace).status.phase == "Running":
                waiting.discard((namespace, name))
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise SeedError(f"pods not Running after {POD_RUNNING_TIMEOUT_SECONDS:.0f} s: {sorted(waiting)}")
        time.sleep(0.1)
