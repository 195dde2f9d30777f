"""Add and remove the connector's entries in a user's kubeconfig without touching anything else.

The file is locked the way kubectl locks it while it is read, changed and replaced (kubectl itself
may be writing it), replaced atomically, and keeps its permissions. Entries are named after the socket
(and the profile, when one is given), so running `kubeconfig set` again updates them in place and two
profiles' logins never share, repoint or remove each other's entries.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from connector.client.files import replace_file
from connector.client.kubeconfig_lock import kubeconfig_lock


@dataclass(frozen=True)
class SocketEntry:
    """What one socket needs in a kubeconfig."""

    context: str
    cluster: str
    user: str
    server: str
    ca_pem: bytes | None
    exec_args: tuple[str, ...]
    namespace: str | None = None


# The console script kubectl runs as the exec credential plugin when it is on PATH.
PLUGIN_SCRIPT = "eks-access-connector"


def plugin_command() -> tuple[str, tuple[str, ...]]:
    """(command, leading args) of the exec credential plugin: the console script by name when it is on
    PATH (a `pipx install`: the kubeconfig keeps working across upgrades and reinstalls), otherwise
    this interpreter with `-m connector` (a checkout or a venv nobody put on PATH)."""
    if shutil.which(PLUGIN_SCRIPT):
        return PLUGIN_SCRIPT, ()
    return sys.executable, ("-m", "connector")


def exec_user(args: tuple[str, ...], api_version: str = "client.authentication.k8s.io/v1") -> dict[str, Any]:
    """A kubeconfig user whose credentials come from `client token ARGS...`."""
    command, leading = plugin_command()
    return {
        "exec": {
            "apiVersion": api_version,
            "command": command,
            "args": [*leading, *args],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": False,
        }
    }


DEFAULT_PROFILE = "default"


def default_context_template(profile: str) -> str:
    """`connector-{socket}`, with the profile appended when one is given, so that each login has its own."""
    return "connector-{socket}" if profile == DEFAULT_PROFILE else "connector-{socket}-{profile}"


def profile_user(connector: str, profile: str) -> str:
    """The kubeconfig user of one login (connector and profile): it marks which entries are whose."""
    return f"connector-{profile}@{urlsplit(connector).netloc}"


def connector_entries(
    connector: str,
    sockets: Iterable[str],
    *,
    ca_file: str | Path | None,
    profile: str = DEFAULT_PROFILE,
    cache_dir: Path | None = None,
    context_template: str | None = None,
) -> list[SocketEntry]:
    """The kubeconfig entries for `sockets` on `connector`, authenticated by `client token` (exec plugin)."""
    ca_pem = Path(ca_file).read_bytes() if ca_file else None
    plugin = ["client", "token", "--connector", connector]
    if ca_file:
        plugin += ["--ca-file", str(Path(ca_file).resolve())]
    if profile != DEFAULT_PROFILE:
        plugin += ["--profile", profile]
    if cache_dir:
        plugin += ["--cache-dir", str(cache_dir)]
    host = urlsplit(connector).netloc
    template = context_template or default_context_template(profile)
    suffix = "" if profile == DEFAULT_PROFILE else f"-{profile}"
    return [
        SocketEntry(
            context=template.format(socket=name, profile=profile),
            cluster=f"connector-{name}{suffix}@{host}",
            user=profile_user(connector, profile),
            server=f"{connector}/sockets/{name}",
            ca_pem=ca_pem,
            exec_args=tuple(plugin),
        )
        for name in sockets
    ]


def _upsert(items: list[dict[str, Any]], name: str, key: str, value: dict[str, Any]) -> None:
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            item[key] = value
            return
    items.append({"name": name, key: value})


def named_entries(config: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The well-formed items of a kubeconfig list (`clusters`, `users`, `contexts`); hand edits may leave others."""
    items = config.get(field)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _refuse_foreign_contexts(config: dict[str, Any], entries: Iterable[SocketEntry]) -> None:
    """A context of the same name that another user (another profile's login, or the user's own entry)
    owns is never repointed: the whole change is refused, naming it."""
    users = {c.get("name"): (c.get("context") or {}).get("user") for c in named_entries(config, "contexts")}
    for e in entries:
        owner = users.get(e.context, e.user)
        if owner != e.user:
            raise ValueError(
                f"context {e.context} already exists for user {owner}, not {e.user}; nothing was written: "
                "choose other names with --context-template (e.g. with {profile})"
            )


def apply_entries(config: dict[str, Any], entries: Iterable[SocketEntry], *, set_current: str | None) -> dict[str, Any]:
    """Pure: `config` with each entry's cluster, user and context added or replaced. Raises ValueError,
    changing nothing, when an entry's context belongs to another user."""
    entries = list(entries)
    _refuse_foreign_contexts(config, entries)
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    config.setdefault("preferences", {})
    for field in ("clusters", "users", "contexts"):
        if not isinstance(config.get(field), list):
            config[field] = []
    for e in entries:
        cluster: dict[str, Any] = {"server": e.server}
        if e.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(e.ca_pem).decode()
        _upsert(config["clusters"], e.cluster, "cluster", cluster)
        _upsert(config["users"], e.user, "user", exec_user(e.exec_args))
        context: dict[str, Any] = {"cluster": e.cluster, "user": e.user}
        if e.namespace:
            context["namespace"] = e.namespace
        _upsert(config["contexts"], e.context, "context", context)
    if set_current:
        config["current-context"] = set_current
    return config


def remove_entries(config: dict[str, Any], contexts: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Pure: remove the named contexts and the clusters/users only they used. Returns what was removed."""
    wanted = set(contexts)
    removed: list[str] = []
    kept_contexts = []
    doomed_clusters, doomed_users = set(), set()
    for ctx in config.get("contexts") or []:
        if isinstance(ctx, dict) and ctx.get("name") in wanted:
            removed.append(ctx["name"])
            doomed_clusters.add((ctx.get("context") or {}).get("cluster"))
            doomed_users.add((ctx.get("context") or {}).get("user"))
        else:
            kept_contexts.append(ctx)
    still_used_clusters = {(c.get("context") or {}).get("cluster") for c in kept_contexts if isinstance(c, dict)}
    still_used_users = {(c.get("context") or {}).get("user") for c in kept_contexts if isinstance(c, dict)}
    config["contexts"] = kept_contexts
    config["clusters"] = [
        c for c in config.get("clusters") or []
        if not (isinstance(c, dict) and c.get("name") in doomed_clusters - still_used_clusters)
    ]
    config["users"] = [
        u for u in config.get("users") or []
        if not (isinstance(u, dict) and u.get("name") in doomed_users - still_used_users)
    ]
    if config.get("current-context") in removed:
        config["current-context"] = ""
    return config, removed


def default_kubeconfig_path() -> Path:
    """The file kubectl writes to: the first entry of KUBECONFIG, else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first) if first else Path.home() / ".kube" / "config"


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def edit_kubeconfig(path: Path, change: Any) -> Any:
    """Lock `path`, load it (missing = empty), apply `change(config) -> result`, write it back atomically
    with the same permissions (0600 for a new file), and return the result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with kubeconfig_lock(path):
        try:
            text = path.read_text()
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            text, mode = "", 0o600
        config = yaml.safe_load(text) if text.strip() else {}
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a kubeconfig (its top level is not a mapping); it was left untouched")
        result = change(config)
        replace_file(path, render(config), mode=mode)
        return result
