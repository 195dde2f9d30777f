"""Header hygiene between the client and the cluster: what is refused, dropped, kept and added.

The rule is that nothing the client says about identity reaches the cluster: its credentials
(`Authorization`, `Cookie`, `Proxy-Authorization`), hop-by-hop headers (RFC 9110 7.6.1, plus any the
`Connection` header names), forwarding headers it could forge, and kube-apiserver's front-proxy
identity headers (`X-Remote-User` and friends) are dropped; `Impersonate-*` is refused outright. The
connector then sets its own upstream credentials, `Impersonate-User`/`-Group` when the socket asks
for it, `X-Forwarded-For` with the address it saw and `Audit-ID` with its own request id. Pure
functions, so they are table-tested.

Names are compared with `_` read as `-`: servers and gateways that map headers to CGI-style
variables (`HTTP_IMPERSONATE_USER`) cannot tell `Impersonate_User` from `Impersonate-User`, so a
cluster behind one would honour a header the connector had let through under another spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    }
)  # fmt: skip
CLIENT_CREDENTIALS: frozenset[str] = frozenset({"authorization", "cookie", "proxy-authorization"})
# Forwarding headers are set by the connector from what it saw; a client's own would be believed upstream.
FORWARDING: frozenset[str] = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
)
# kube-apiserver takes a client's Audit-ID as the id of its audit event. The cluster's audit log names the
# connector as the user of every request, so this id is the only link from it to the connector's audit
# event that names the person: the connector sets it to its own request id, never the client's value.
AUDIT_ID = "audit-id"
# kube-apiserver's request-header authentication; only honoured with a front-proxy client certificate,
# which the connector never presents, but a cluster misconfigured to trust them must not see the client's.
FRONT_PROXY_PREFIXES: tuple[str, ...] = ("x-remote-user", "x-remote-group", "x-remote-extra-", "x-remote-uid")
# `Expect: 100-continue` is answered by the connector's server; the cluster sees the whole body anyway.
# Host and Content-Length are set by the HTTP client for the upstream request.
REQUEST_ONLY: frozenset[str] = frozenset({"expect", "host"})
# A service reached through a proxy subresource may honour these and run another method than the one the
# policy decided on (a GET allowed by a read-only socket turned into a DELETE).
METHOD_OVERRIDE: frozenset[str] = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Websocket compression would hide the relayed frames from the session recorder.
WEBSOCKET_EXTENSIONS = "sec-websocket-extensions"
# How browsers (and some clients) pass a bearer token on websockets; a client credential like Authorization.
WEBSOCKET_BEARER_PROTOCOL_PREFIX = "base64url.bearer.authorization.k8s.io."
# A cookie set by something behind the cluster's proxy subresources would be scoped to the connector's origin,
# and an authentication challenge would ask the client for credentials that the connector, not the cluster,
# consumes (the cluster's challenge is about the connector's own credentials).
RESPONSE_DROPPED: frozenset[str] = frozenset({"set-cookie", "www-authenticate"})

UPGRADE_PROTOCOLS: dict[str, str] = {"websocket": "websocket", "spdy/3.1": "SPDY/3.1"}


def canonical_name(name: str) -> str:
    """A header name as this module compares it: lower-case, `_` read as `-`."""
    return name.lower().replace("_", "-")


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """The lower-cased options of every `Connection` header (`keep-alive, Upgrade` -> {keep-alive, upgrade})."""
    return {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",") if t.strip()}


def impersonation_headers(names: Iterable[str]) -> list[str]:
    """The `Impersonate-*` headers among `names`, however spelled (the client asked to act as someone else)."""
    return sorted({n for n in names if canonical_name(n).startswith("impersonate-")})


def requested_upgrade(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str | None:
    """The `Upgrade` value when the request asks for one (`Connection: upgrade` plus `Upgrade`), else None."""
    if "upgrade" not in connection_tokens(headers):
        return None
    values = headers.getall("Upgrade", [])
    return ", ".join(v.strip() for v in values) if values else None


def upgrade_protocol(value: str) -> str | None:
    """The canonical protocol name for a supported `Upgrade` value, None for anything else.

    Kubernetes streams use exactly one of websocket (exec/attach/port-forward for kubectl >= 1.30 and
    most libraries) and SPDY/3.1 (older kubectl); a list of several, h2c or anything else is refused.
    """
    return UPGRADE_PROTOCOLS.get(value.strip().lower())


def without_bearer_protocol(value: str) -> str:
    """A `Sec-WebSocket-Protocol` list without the client's `base64url.bearer.authorization.k8s.io.*` token."""
    protocols = (p.strip() for p in value.split(","))
    # Any case: a token in a spelling the authenticator does not read is still a credential.
    return ", ".join(p for p in protocols if p and not p.lower().startswith(WEBSOCKET_BEARER_PROTOCOL_PREFIX))


# The sets and prefixes above merged, so that each client header costs one set lookup and one startswith.
_DROPPED_NAMES: frozenset[str] = (
    HOP_BY_HOP | CLIENT_CREDENTIALS | FORWARDING | REQUEST_ONLY | METHOD_OVERRIDE | {WEBSOCKET_EXTENSIONS, AUDIT_ID}
)
_DROPPED_PREFIXES: tuple[str, ...] = (*FRONT_PROXY_PREFIXES, "impersonate-")


def _dropped_request_header(name: str, connection_named: set[str]) -> bool:
    canonical = canonical_name(name)
    return canonical in _DROPPED_NAMES or canonical in connection_named or canonical.startswith(_DROPPED_PREFIXES)


def upstream_request_headers(
    client: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    credentials: Mapping[str, str],
    client_ip: str,
    impersonate_user: str | None = None,
    impersonate_groups: Iterable[str] = (),
    upgrade: str | None = None,
    audit_id: str | None = None,
) -> CIMultiDict[str]:
    """The headers to send to the cluster for a client request.

    `credentials` are the socket's own (e.g. `Authorization: Bearer <EKS token>`). `upgrade` is the
    canonical protocol of an upgrade request, which keeps `Connection: Upgrade` + `Upgrade`.
    `audit_id` (the connector's request id) becomes the cluster's `Audit-ID`.
    The caller has already refused `Impersonate-*` headers; they are dropped here all the same.
    """
    connection_named = {canonical_name(t) for t in connection_tokens(client)} - {"upgrade", "close", "keep-alive"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in client.items():
        if _dropped_request_header(name, connection_named):
            continue
        if name.lower() == "sec-websocket-protocol":
            value = without_bearer_protocol(value)
            if not value:
                continue
        out.add(name, value)
    for name, value in credentials.items():
        out[name] = value
    if impersonate_user is not None:
        out["Impersonate-User"] = impersonate_user
        for group in impersonate_groups:
            out.add("Impersonate-Group", group)
    out["X-Forwarded-For"] = client_ip
    if audit_id is not None:
        out["Audit-ID"] = audit_id
    if upgrade is not None:
        out["Connection"] = "Upgrade"
        out["Upgrade"] = upgrade
    return out


def client_response_headers(
    upstream: CIMultiDictProxy[str] | CIMultiDict[str], *, upgrade: str | None = None
) -> CIMultiDict[str]:
    """The cluster's response headers as relayed to the client: hop-by-hop and cookies removed.

    For a 101, `upgrade` is the protocol switched to and `Connection: Upgrade` + `Upgrade` are kept.
    """
    connection_named = connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower in RESPONSE_DROPPED:
            continue
        out.add(name, value)
    if upgrade is not None:
        out["Connection"] = "Upgrade"
        out["Upgrade"] = upgrade
    return out


def header_bytes(raw_headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Size of a header block as sent (`name: value\\r\\n` per header), for the header size limit."""
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)
