"""Per-type rules: defaults, validation, and the status the cluster's controllers would write.

kube-apiserver's registry strategies default and validate objects; the scheduler, kubelet and
controllers then fill in status. The emulator has no nodes or controllers, so this module plays
their part synchronously: a pod is Running on the one node with a pod IP and ready containers (so
exec, logs and port-forward accept it), a Deployment reports all replicas ready, a new namespace
gets its `default` ServiceAccount.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from typing import TYPE_CHECKING, Any

from sandbox.apiserver import catalog, names
from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.errors import FieldError, bad_request, invalid
from sandbox.apiserver.selectors import label_selector_from_object
from sandbox.apiserver.times import rfc3339

if TYPE_CHECKING:
    from sandbox.apiserver.store import Store

NODE_NAME = "ip-10-0-1-10.ec2.internal"
NODE_IP = "10.0.1.10"

_WORKLOADS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"})
_WITH_SELECTOR = _WORKLOADS


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("/".join(parts).encode()).digest()


def _pod_ip(namespace: str, name: str) -> str:
    """A stable pod IP in 10.0.128.0/17 (stable so that tests and logs can name it)."""
    d = _digest(namespace, name)
    return f"10.0.{128 + d[0] % 127}.{1 + d[1] % 253}"


def _now(store: Store) -> str:
    return rfc3339(store.now())


# ----- names ------------------------------------------------------------------------------------


def validate_name(rt: ResourceType, obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise invalid(rt.kind, rt.group, "", [
            FieldError("FieldValueRequired", "metadata.name", "name or generateName is required")])
    if not isinstance(name, str):
        raise bad_request(f"metadata.name: expected a string, got {type(name).__name__}")
    if rt.kind == "Namespace":
        problems = names.dns1123_label(name)
    elif rt.kind == "Service":
        problems = names.dns1035_label(name)
    elif rt.group == "rbac.authorization.k8s.io":
        problems = names.path_segment_name(name)
    else:
        problems = names.dns1123_subdomain(name)
    if problems:
        raise invalid(rt.kind, rt.group, name, [
            FieldError("FieldValueInvalid", "metadata.name", p, name) for p in problems])


# ----- create -----------------------------------------------------------------------------------


def prepare_create(rt: ResourceType, obj: dict[str, Any], store: Store) -> None:
    """Defaults and the status the cluster would report once the object is settled."""
    spec = obj.get("spec")
    if rt.subresource("status") and rt.kind != "Node":
        obj.pop("status", None)  # kube ignores a status sent on create
    kind = rt.kind
    if kind == "Namespace":
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "Pod":
        _pod_spec_defaults(_dict(obj, "spec"), pod=True)
        obj["spec"].setdefault("nodeName", NODE_NAME)
        obj["status"] = _pod_status(obj, store)
    elif kind == "Service":
        _service_defaults(obj)
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
        _merge_string_data(obj)
    elif kind == "Node" and "status" not in obj:
        ready = _condition("Ready", _now(store), "KubeletReady", "kubelet is posting ready status")
        obj["status"] = {"conditions": [ready]}
    elif kind in _WORKLOADS and isinstance(spec, dict):
        if kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if kind == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _pod_spec_defaults(template["spec"], pod=False)
        refresh_status(rt, obj, store)


def after_create(rt: ResourceType, obj: dict[str, Any], store: Store) -> None:
    """What controllers add after an object appears: a namespace's `default` ServiceAccount."""
    if rt.kind == "Namespace":
        sa = catalog.lookup("", "v1", "serviceaccounts")
        assert sa is not None
        name = obj["metadata"]["name"]
        if store.get(sa, name, "default") is None:
            store.create(sa, {"metadata": {"name": "default"}}, namespace=name)


def _dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        value = obj[key] = {}
    if not isinstance(value, dict):
        raise bad_request(f"{key}: expected an object, got {type(value).__name__}")
    return value


def _pod_spec_defaults(spec: dict[str, Any], *, pod: bool) -> None:
    """PodSpec defaults; `pod` adds what the ServiceAccount admission plugin sets on pods only."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if pod:
        if "serviceAccountName" not in spec:
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            last = image.rsplit("/", 1)[-1]
            latest = "@" not in last and (":" not in last or last.endswith(":latest"))
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _condition(kind: str, when: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": when}
    if kind == "Ready" and reason:  # the Node shape
        cond = {"type": kind, "status": "True", "lastHeartbeatTime": when, "lastTransitionTime": when}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _pod_status(pod: dict[str, Any], store: Store) -> dict[str, Any]:
    when = _now(store)
    meta = pod["metadata"]
    ip = _pod_ip(meta.get("namespace", ""), meta["name"])
    spec = pod.get("spec") or {}
    statuses = []
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            statuses.append(_container_status(container, meta, when))
    return {
        "phase": "Running",
        "conditions": [_condition(t, when) for t in
                       ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": when,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }


def _container_status(container: dict[str, Any], meta: dict[str, Any], when: str) -> dict[str, Any]:
    name = str(container.get("name", ""))
    image = str(container.get("image", ""))
    return {
        "name": name,
        "state": {"running": {"startedAt": when}},
        "lastState": {},
        "ready": True,
        "restartCount": 0,
        "image": image,
        "imageID": f"{image.split(':')[0]}@sha256:{_digest(image).hex()}",
        "containerID": "containerd://" + _digest(meta.get("uid", ""), name).hex(),
        "started": True,
    }


def _service_defaults(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    meta = obj["metadata"]
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        d = _digest(meta.get("namespace", ""), meta["name"])
        spec.setdefault("clusterIP", f"10.100.{d[0]}.{1 + d[1] % 253}")
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    for i, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, dict):
            continue
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
        if spec["type"] in ("NodePort", "LoadBalancer"):
            port.setdefault("nodePort", 30000 + int.from_bytes(_digest(meta["name"], str(i))[:2], "big") % 2768)
    obj["status"] = {"loadBalancer": {}}


def _merge_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad_request("data: expected an object of base64 strings")
    for key, value in (data or {}).items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]: {exc}'
            ) from None
    if isinstance(string_data, dict) and string_data:
        merged = dict(data or {})
        for key, value in string_data.items():
            merged[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = merged


# ----- update -----------------------------------------------------------------------------------


def prepare_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str) -> dict[str, Any]:
    """The object to store for an update: status and spec each come from where they may change."""
    if subresource == "status":
        merged = copy.deepcopy(old)
        merged["status"] = copy.deepcopy(new.get("status") or {})
        return merged
    has_status = rt.subresource("status") is not None
    if has_status:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    kind = rt.kind
    if kind == "Namespace":
        new["spec"] = copy.deepcopy(old.get("spec") or {})
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = old["metadata"]["name"]
    elif kind == "Secret":
        new.setdefault("type", old.get("type", "Opaque"))
        _merge_string_data(new)
    elif kind == "Service":
        spec = _dict(new, "spec")
        old_spec = old.get("spec") or {}
        for owned in ("clusterIP", "clusterIPs"):
            if owned in old_spec and owned not in spec:
                spec[owned] = copy.deepcopy(old_spec[owned])
        _service_defaults(new)
        new["status"] = copy.deepcopy(old.get("status") or {"loadBalancer": {}})
    elif kind == "Pod":
        spec = _dict(new, "spec")
        _pod_spec_defaults(spec, pod=True)
        spec.setdefault("nodeName", (old.get("spec") or {}).get("nodeName", NODE_NAME))
        _refresh_pod_images(new)
    elif kind in _WORKLOADS:
        spec = _dict(new, "spec")
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _pod_spec_defaults(template["spec"], pod=False)
    return new


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return old.get("spec") != new.get("spec")


def _refresh_pod_images(pod: dict[str, Any]) -> None:
    """The kubelet restarts a container whose image changed; its status then names the new image."""
    images = {c.get("name"): c.get("image") for c in (pod.get("spec") or {}).get("containers") or []
              if isinstance(c, dict)}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        image = images.get(status.get("name"))
        if image and status.get("image") != image:
            status["image"] = image
            status["restartCount"] = int(status.get("restartCount", 0)) + 1


def refresh_status(rt: ResourceType, obj: dict[str, Any], store: Store | None = None) -> None:
    """The workload controllers' verdict: every desired replica is up to date, ready and available."""
    if rt.kind not in _WORKLOADS:
        return
    spec = obj.get("spec") or {}
    generation = obj["metadata"].get("generation", 1)
    if rt.kind == "DaemonSet":
        nodes = 1
        if store is not None:
            node_type = catalog.lookup("", "v1", "nodes")
            assert node_type is not None
            nodes = len(store.list(node_type))
        status = {"currentNumberScheduled": nodes, "desiredNumberScheduled": nodes, "numberAvailable": nodes,
                  "numberMisscheduled": 0, "numberReady": nodes, "observedGeneration": generation,
                  "updatedNumberScheduled": nodes}
        obj["status"] = {k: v for k, v in status.items() if v or k in ("numberMisscheduled",
                                                                        "currentNumberScheduled",
                                                                        "desiredNumberScheduled", "numberReady")}
        return
    replicas = spec.get("replicas", 1)
    replicas = replicas if isinstance(replicas, int) else 1
    counts = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
    if rt.kind == "Deployment":
        counts["updatedReplicas"] = replicas
    elif rt.kind == "ReplicaSet":
        counts["fullyLabeledReplicas"] = replicas
    elif rt.kind == "StatefulSet":
        counts.update(currentReplicas=replicas, updatedReplicas=replicas)
    # Go's omitempty: zero counts are absent, as kube-apiserver serializes them.
    status: dict[str, Any] = {"observedGeneration": generation, **{k: v for k, v in counts.items() if v}}
    if rt.kind == "StatefulSet":
        revision = f"{obj['metadata']['name']}-{_digest(str(spec.get('template')))[:5].hex()[:10]}"
        status.update(currentRevision=revision, updateRevision=revision, collisionCount=0)
    if rt.kind == "Deployment":
        when = (obj.get("status") or {}).get("conditions", [{}])[0].get("lastTransitionTime") \
            or obj["metadata"].get("creationTimestamp")
        name = obj["metadata"]["name"]
        template_hash = _digest(str(spec.get("template")))[:5].hex()[:10]
        status["conditions"] = [
            {"type": "Available", "status": "True", "lastUpdateTime": when, "lastTransitionTime": when,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": when, "lastTransitionTime": when,
             "reason": "NewReplicaSetAvailable",
             "message": f'ReplicaSet "{name}-{template_hash}" has successfully progressed.'},
        ]
    obj["status"] = status


# ----- validation -------------------------------------------------------------------------------


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise 422 Invalid with every problem found, as kube-apiserver's validation does."""
    errors = _metadata_errors(obj)
    kind = rt.kind
    if kind == "Pod":
        errors += _pod_spec_errors(obj.get("spec"), "spec")
        if old is not None:
            errors += _pod_update_errors(old, obj)
    elif kind in _WITH_SELECTOR:
        errors += _workload_errors(rt, obj, old)
    elif kind in ("ConfigMap", "Secret"):
        errors += _data_errors(obj, old)
    elif kind == "Service" and old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        new_ip = (obj.get("spec") or {}).get("clusterIP")
        if old_ip and new_ip != old_ip:
            errors.append(FieldError("FieldValueInvalid", "spec.clusterIPs[0]", "may not change once set", new_ip))
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        errors += _binding_errors(obj, old)
    elif kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(obj.get("rules") or []):
            if not isinstance(rule, dict) or not rule.get("verbs"):
                errors.append(FieldError("FieldValueRequired", f"rules[{i}].verbs",
                                         "verbs must contain at least one value"))
    if errors:
        raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), errors)


def _metadata_errors(obj: dict[str, Any]) -> list[FieldError]:
    errors = []
    meta = obj["metadata"]
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return [FieldError("FieldValueInvalid", "metadata.labels", "must be a map of strings", labels)]
    for key, value in labels.items():
        errors += [FieldError("FieldValueInvalid", "metadata.labels", p, key) for p in names.qualified_name(key)]
        if not isinstance(value, str):
            errors.append(FieldError("FieldValueInvalid", "metadata.labels", "must be a string", value))
            continue
        errors += [FieldError("FieldValueInvalid", "metadata.labels", p, value) for p in names.label_value(value)]
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        return [*errors, FieldError("FieldValueInvalid", "metadata.annotations", "must be a map of strings",
                                    annotations)]
    for key in annotations:
        errors += [FieldError("FieldValueInvalid", "metadata.annotations", p, key) for p in names.qualified_name(key)]
    return errors


def _pod_spec_errors(spec: Any, path: str) -> list[FieldError]:
    if not isinstance(spec, dict):
        return [FieldError("FieldValueRequired", path)]
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        return [FieldError("FieldValueRequired", f"{path}.containers")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not isinstance(container, dict):
            errors.append(FieldError("FieldValueInvalid", where, "must be an object", container))
            continue
        name = container.get("name")
        if not name:
            errors.append(FieldError("FieldValueRequired", f"{where}.name"))
        else:
            errors += [FieldError("FieldValueInvalid", f"{where}.name", p, name)
                       for p in names.dns1123_label(str(name))]
            if name in seen:
                errors.append(FieldError("FieldValueDuplicate", f"{where}.name", value=name))
            seen.add(str(name))
        if not container.get("image"):
            errors.append(FieldError("FieldValueRequired", f"{where}.image"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errors.append(FieldError("FieldValueInvalid", f"{where}.ports[{j}].containerPort",
                                         "must be between 1 and 65535, inclusive", number))
    return errors


_POD_MUTABLE = ("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                "previously negative)")


def _pod_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    def comparable(spec: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(spec)
        for key in ("containers", "initContainers"):
            for container in spec.get(key) or []:
                if isinstance(container, dict):
                    container.pop("image", None)
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(key, None)
        return spec

    if comparable(old.get("spec") or {}) != comparable(new.get("spec") or {}):
        return [FieldError("FieldValueForbidden", "spec", _POD_MUTABLE.split("Forbidden: ", 1)[1])]
    return []


def _workload_errors(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("FieldValueRequired", "spec")]
    errors: list[FieldError] = []
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(FieldError("FieldValueRequired", "spec.selector"))
    template = spec.get("template")
    if not isinstance(template, dict):
        errors.append(FieldError("FieldValueRequired", "spec.template"))
    else:
        labels = (template.get("metadata") or {}).get("labels") or {}
        if isinstance(selector, dict) and not errors:
            try:
                matches = label_selector_from_object(selector).matches(labels)
            except ValueError as exc:
                errors.append(FieldError("FieldValueInvalid", "spec.selector", str(exc), selector))
                matches = True
            if not matches:
                errors.append(FieldError("FieldValueInvalid", "spec.template.metadata.labels",
                                         "`selector` does not match template `labels`", labels))
        errors += _pod_spec_errors(template.get("spec"), "spec.template.spec")
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        errors.append(FieldError("FieldValueInvalid", "spec.replicas", "must be greater than or equal to 0", replicas))
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        errors.append(FieldError("FieldValueInvalid", "spec.selector", "field is immutable", spec.get("selector")))
    return errors


def _data_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    for field_name in ("data", "binaryData"):
        data = obj.get(field_name) or {}
        if not isinstance(data, dict):
            errors.append(FieldError("FieldValueInvalid", field_name, "must be a map", data))
            continue
        for key in data:
            errors += [FieldError("FieldValueInvalid", f"{field_name}[{key}]", p, key) for p in names.config_key(key)]
    if old is not None and old.get("immutable"):
        for field_name in ("data", "binaryData"):
            if old.get(field_name) != obj.get(field_name):
                errors.append(FieldError("FieldValueForbidden", field_name,
                                         "field is immutable when `immutable` is set"))
        if not obj.get("immutable"):
            errors.append(FieldError("FieldValueForbidden", "immutable", "field is immutable when `immutable` is set"))
    return errors


def _binding_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    ref = obj.get("roleRef")
    if not isinstance(ref, dict) or not ref.get("name"):
        errors.append(FieldError("FieldValueRequired", "roleRef.name"))
    elif ref.get("kind") not in ("Role", "ClusterRole"):
        errors.append(FieldError("FieldValueNotSupported", "roleRef.kind",
                                 'supported values: "ClusterRole", "Role"', ref.get("kind")))
    elif obj["kind"] == "ClusterRoleBinding" and ref.get("kind") != "ClusterRole":
        errors.append(FieldError("FieldValueNotSupported", "roleRef.kind", 'supported values: "ClusterRole"',
                                 ref.get("kind")))
    if old is not None and old.get("roleRef") != ref:
        errors.append(FieldError("FieldValueInvalid", "roleRef", "cannot change roleRef", ref))
    for i, subject in enumerate(obj.get("subjects") or []):
        if not isinstance(subject, dict) or not subject.get("name"):
            errors.append(FieldError("FieldValueRequired", f"subjects[{i}].name"))
            continue
        if subject.get("kind") not in ("User", "Group", "ServiceAccount"):
            errors.append(FieldError("FieldValueNotSupported", f"subjects[{i}].kind",
                                     'supported values: "Group", "ServiceAccount", "User"', subject.get("kind")))
    return errors


def check_kind(rt: ResourceType, obj: Any) -> None:
    """The request body must be an object of the endpoint's group, version and kind (kube's decode)."""
    if not isinstance(obj, dict):
        raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the expected API version "
                          f"({rt.api_version})")
    if kind and kind != rt.kind:
        raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): "
                          f'the kind in the data ("{kind}") is not "{rt.kind}"')
    if "metadata" in obj and not isinstance(obj["metadata"], dict):
        raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                          "metadata must be an object")
