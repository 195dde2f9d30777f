"""`policy suggest`: the least-privilege policy that covers what a subject actually did.

From the subject's allowed requests in the audit log, one rule per (API group, resource): the
verbs and namespaces it used as lists, its object names as `resource_names` when there are few
and every request named one, and `*` only where a request needed it (a cluster-wide or
all-namespaces request needs `namespaces: ["*"]`, a list or create needs every name). Discovery
is open to every user of a socket, so it needs no rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from connector.policy.engine import is_discovery
from connector.policy.replay import AuditedRequest
from connector.policy.rules import effective_verb

MAX_RESOURCE_NAMES = 5


@dataclass
class _Usage:
    verbs: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    count: int = 0


def suggest_policy(requests: Iterable[AuditedRequest], name: str, subject: dict[str, list[str]]) -> str:
    """The YAML of one policy (under `policies:`) allowing every allowed request given."""
    resources: dict[tuple[str, str], _Usage] = {}
    urls: dict[str, _Usage] = {}
    sockets: set[str] = set()
    for req in requests:
        if req.decision != "allow" or is_discovery(req.info):
            continue
        sockets.add(req.socket)
        info = req.info
        if not info.is_resource_request:
            use = urls.setdefault(info.path, _Usage())
            use.verbs.add(req.method.lower())
        else:
            resource = info.resource + ("/" + info.subresource if info.subresource else "")
            use = resources.setdefault((info.api_group, resource), _Usage())
            use.verbs.add(effective_verb(info))
            use.namespaces.add(info.namespace or "*")
            use.names.add(info.name or "*")
        use.count += 1
    rules: list[tuple[dict, int]] = []
    for (group, resource), use in sorted(resources.items()):
        rule: dict = {"api_groups": [group], "resources": [resource], "verbs": sorted(use.verbs)}
        rule["namespaces"] = ["*"] if "*" in use.namespaces else sorted(use.namespaces)
        if "*" not in use.names and len(use.names) <= MAX_RESOURCE_NAMES:
            rule["resource_names"] = sorted(use.names)
        rules.append((rule, use.count))
    for url, use in sorted(urls.items()):
        rules.append(({"non_resource_urls": [url], "verbs": sorted(use.verbs)}, use.count))
    head = {"name": name, "subjects": subject, "sockets": sorted(sockets) or ["none-used"]}
    lines = ["policies:"]
    lines += _indent(yaml.safe_dump([head], sort_keys=False, default_flow_style=None).rstrip(), "  ")
    lines.append("    kubernetes:")
    if not rules:
        lines.append("      rules: []  # no allowed request in the log")
    else:
        lines.append("      rules:")
        for rule, count in rules:
            lines.append(f"        # covers {count} request{'s' if count != 1 else ''}")
            body = yaml.safe_dump([rule], sort_keys=False, default_flow_style=None).rstrip()
            lines += _indent(body, "        ")
    return "\n".join(lines) + "\n"


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in text.splitlines()]
