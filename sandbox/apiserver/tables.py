"""`meta.k8s.io/v1` Table responses: what `kubectl get` prints, computed server-side as kube does.

kubectl asks for `application/json;as=Table;g=meta.k8s.io;v=v1` and prints the rows it gets, so the
columns and cell values here are kube-apiserver's printers' (pkg/printers/internalversion) for pods,
deployments, namespaces and config maps, and the default `Name`/`Created At` table for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.selectors import format_label_selector
from sandbox.apiserver.times import parse_time

_NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, although some resources "
             "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
             "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_CREATED_DOC = ("CreationTimestamp is a timestamp representing the server time when this object was created. It is "
                "not guaranteed to be set in happens-before order across separate operations. Clients may not set "
                "this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. "
                "Null for lists. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


def _column(name: str, kind: str, description: str, *, fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": description, "priority": priority}


_NAME = _column("Name", "string", _NAME_DOC, fmt="name")
_AGE = _column("Age", "string", _CREATED_DOC)


def human_duration(seconds: float) -> str:
    """`duration.HumanDuration`: the AGE column's `5m`, `3h12m`, `2d4h`."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(obj: dict[str, Any], now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    return human_duration((now - created).total_seconds())


# ----- pods ---------------------------------------------------------------------------------------

_POD_COLUMNS = [
    _NAME,
    _column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    _column("Status", "string", "The aggregate status of the containers in this pod."),
    _column("Restarts", "string", "The number of times the containers in this pod have been restarted and when "
                                  "the last container in this pod has restarted."),
    _AGE,
    _column("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if "
                            "not yet allocated.", priority=1),
    _column("Node", "string", "NodeName indicates in which node this pod is scheduled.", priority=1),
    _column("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the "
                                        "node, but it cannot be scheduled right away as preemption victims receive "
                                        "their graceful termination periods.", priority=1),
    _column("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.",
            priority=1),
]


def _pod_status_reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    has_running = False
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
        elif "running" in state and cs.get("ready"):
            has_running = True
    if reason == "Completed" and has_running:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        reason = "Running" if ready else "NotReady"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_row(pod: dict[str, Any], now: datetime) -> list[Any]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready") and "running" in (c.get("state") or {}))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    last_restart = max((t for c in statuses
                        if (t := parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")))),
                       default=None)
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    if gates:
        true_conditions = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        gates_cell = f"{sum(1 for g in gates if g.get('conditionType') in true_conditions)}/{len(gates)}"
    else:
        gates_cell = "<none>"
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        _pod_status_reason(pod),
        restarts_cell,
        _age(pod, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# ----- deployments, namespaces, config maps --------------------------------------------------------

_DEPLOYMENT_COLUMNS = [
    _NAME,
    _column("Ready", "string", "Number of the pod with ready state"),
    _column("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the "
                                    "desired template spec."),
    _column("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted "
                                   "by this deployment."),
    _AGE,
    _column("Containers", "string", "Names of each container in the template.", priority=1),
    _column("Images", "string", "Images referenced by each container in the template.", priority=1),
    _column("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this "
                                  "will be the ones affected by this deployment.", priority=1),
]


def _deployment_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        _age(obj, now),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        format_label_selector(spec.get("selector")),
    ]


_NAMESPACE_COLUMNS = [_NAME, _column("Status", "string", "The status of the namespace"), _AGE]
_CONFIGMAP_COLUMNS = [_NAME, _column("Data", "string", "Number of data in configmap"), _AGE]
_DEFAULT_COLUMNS = [_NAME, _column("Created At", "date", _CREATED_DOC)]


def _namespace_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("status") or {}).get("phase", ""), _age(obj, now)]


def _configmap_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [obj["metadata"]["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), _age(obj, now)]


def _default_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return [obj["metadata"]["name"], created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else None]


_PRINTERS: dict[tuple[str, str], tuple[list[dict[str, Any]], Callable[[dict[str, Any], datetime], list[Any]]]] = {
    ("", "pods"): (_POD_COLUMNS, _pod_row),
    ("apps", "deployments"): (_DEPLOYMENT_COLUMNS, _deployment_row),
    ("", "namespaces"): (_NAMESPACE_COLUMNS, _namespace_row),
    ("", "configmaps"): (_CONFIGMAP_COLUMNS, _configmap_row),
}

INCLUDE_OBJECT = ("None", "Metadata", "Object")


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    *,
    now: datetime,
    include_object: str = "Metadata",
    headers: bool = True,
    api_version: str = "meta.k8s.io/v1",
    list_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Table of `objects`; `headers=False` leaves out the column definitions (watch events after
    the first carry none)."""
    columns, row = _PRINTERS.get((rt.group, rt.plural), (_DEFAULT_COLUMNS, _default_row))
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj, now)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            entry["object"] = embedded
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": dict(list_meta or {}),
        "columnDefinitions": columns if headers else None,
        "rows": rows,
    }
