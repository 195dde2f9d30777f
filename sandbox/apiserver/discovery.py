"""Discovery documents: `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]` and `/version`.

Both forms kube-apiserver serves: the legacy per-group-version documents (APIVersions, APIGroupList,
APIGroup, APIResourceList) and aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1
APIGroupDiscoveryList at `/api` and `/apis`), which kubectl 1.27+ asks for first.
"""

from __future__ import annotations

from typing import Any

from sandbox.apiserver import catalog
from sandbox.apiserver.catalog import ResourceType


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}" if group else version, "version": version}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group(info: catalog.GroupInfo) -> dict[str, Any]:
    versions = [_group_version(info.name, v) for v in info.versions]
    return {"name": info.name, "versions": versions, "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in catalog.GROUPS]}


def api_group_document(info: catalog.GroupInfo) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **api_group(info)}


def _resource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                             "kind": rt.kind, "verbs": list(rt.verbs)}
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if catalog.is_stored(rt):
        entry["storageVersionHash"] = rt.storage_version_hash
    entries = [entry]
    for sub in rt.subresources:
        sub_entry: dict[str, Any] = {"name": f"{rt.plural}/{sub.name}", "singularName": "",
                                     "namespaced": rt.namespaced}
        if sub.group is not None:
            sub_entry["group"] = sub.group
            sub_entry["version"] = sub.version
        sub_entry.update(kind=sub.kind, verbs=list(sub.verbs))
        entries.append(sub_entry)
    return entries


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    types = catalog.resources_in(group, version)
    if not types:
        return None
    resources = [e for rt in types for e in _resource_entries(rt)]
    resources.sort(key=lambda e: e["name"])
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


# ----- aggregated discovery -----------------------------------------------------------------------


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.subresources:
        entry["subresources"] = [
            {"subresource": s.name,
             "responseKind": {"group": s.group if s.group is not None else rt.group,
                              "version": s.version or rt.version, "kind": s.kind},
             "verbs": list(s.verbs)}
            for s in rt.subresources
        ]
    return entry


def _aggregated_group(name: str, versions: tuple[str, ...]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"creationTimestamp": None}
    if name:
        metadata = {"name": name, **metadata}
    return {
        "metadata": metadata,
        "versions": [
            {"version": v, "resources": [_aggregated_resource(rt) for rt in catalog.resources_in(name, v)],
             "freshness": "Current"}
            for v in versions
        ],
    }


def aggregated(api_version: str, *, legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList of `/api` (legacy) or `/apis`."""
    items = [_aggregated_group("", ("v1",))] if legacy else [_aggregated_group(g.name, g.versions)
                                                             for g in catalog.GROUPS]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


def version_info(git_version: str) -> dict[str, Any]:
    """`/version`, as an EKS control plane of that version reports it."""
    core = git_version.lstrip("v").split("-")[0]
    major, minor = [*core.split("."), "0", "0"][:2]
    return {
        "major": major,
        "minor": f"{minor}+",
        "gitVersion": git_version,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2024-10-01T00:00:00Z",
        "goVersion": "go1.22.7",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
