"""What a Kubernetes API request asks for, read exactly as kube-apiserver reads it.

`parse_request_info` mirrors `NewRequestInfo` in k8s.io/apiserver/pkg/endpoints/request/requestinfo.go
(with the `api`/`apis` prefixes of a real API server): the verb comes from the HTTP method and the
path (`watch`/`proxy` path prefixes, `?watch=`, deletecollection, list vs get), the namespace from
`namespaces/{ns}` (with the `status`/`finalize` namespace subresources), and a list or watch with the
field selector `metadata.name=X` is about the object named X. If we read a request differently from
the cluster, a policy would authorize one thing while the cluster did another; so this module copies
the apiserver's behaviour, including its quirks, rather than what would look tidier.

Percent-encoding: the apiserver works on Go's `req.URL.Path`, which is the *decoded* path, and splits
it on `/` after decoding. We do the same, so namespace, resource, name and parts hold decoded
segments; `path` keeps the raw path as received, for the audit log and non-resource rules. Decoding
first is only safe together with `reject_reason`, which refuses an encoded `/` (and everything else
that could make the cluster and us disagree) before any policy is consulted.

One documented difference: the apiserver decodes all list options before taking the name from the
field selector, and skips the name when the label selector is malformed. We check the options that
are cheap to check exactly (`limit`, `timeoutSeconds`, the field selector) but not the label selector
grammar; a request with a malformed label selector is refused with 400 by the cluster whatever we
decide, so naming its object here grants nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# A real kube-apiserver serves resources under these prefixes; only `apis` carries a group segment.
API_PREFIXES = frozenset({"api", "apis"})
GROUPLESS_API_PREFIXES = frozenset({"api"})
# Path verbs (deprecated, still served): /api/v1/watch/..., /api/v1/proxy/...
SPECIAL_VERBS = frozenset({"proxy", "watch"})
SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

# Every verb a resource request can get. Non-resource requests get the lowercased method instead.
RESOURCE_REQUEST_VERBS = frozenset(
    {"create", "get", "list", "watch", "update", "patch", "delete", "deletecollection", "proxy", ""}
)

MAX_PATH_BYTES = 8 * 1024
# Query parameters whose repetition the apiserver resolves by taking the first value, while other
# HTTP components (proxies, client libraries, our own upstream) might take the last.
SINGLE_VALUED_PARAMS = ("watch", "fieldSelector", "labelSelector")

_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_GO_INT64 = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The apiserver's RequestInfo for one request (field for field, snake_cased)."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for audit events and the `policy check` command."""
        out = asdict(self)
        out["parts"] = list(self.parts)
        return out


def parse_request_info(method: str, path: str, query: str = "") -> RequestInfo:
    """Read `METHOD path?query` as kube-apiserver does. Never raises.

    `path` is the raw path as received (still percent-encoded) and `query` the raw query string
    without the `?`.
    """
    decoded = _decode_path(path)
    segments = _split_path(decoded)
    if len(segments) < 3 or segments[0] not in API_PREFIXES:
        return RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    api_prefix, rest = segments[0], segments[1:]
    api_group = ""
    if api_prefix not in GROUPLESS_API_PREFIXES:
        # The prefix is consumed, so this asks "are there four segments?": /apis/{group}/{version}/{x}
        if len(rest) < 3:
            return RequestInfo(is_resource_request=False, path=path, verb=method.lower())
        api_group, rest = rest[0], rest[1:]
    api_version, rest = rest[0], rest[1:]

    if rest[0] in SPECIAL_VERBS:
        if len(rest) < 2:
            # The apiserver fails these (`/api/v1/watch`) with an error and answers 500; this is the
            # partial result it holds at that point. reject_reason refuses such requests.
            return RequestInfo(True, path, method.lower(), api_prefix, api_group, api_version)
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # `namespaces/{ns}/{resource}/...` is a namespaced resource; `namespaces/{ns}/status` is the
        # namespace's own subresource and keeps `namespaces` as the resource.
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]

    parts = tuple(rest)
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in SPECIAL_VERBS_NO_SUBRESOURCES else ""

    if not name and verb == "get":
        verb, name = _list_verb_and_name(query)
    if not name and verb == "delete":
        verb = "deletecollection"

    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=parts,
    )


def reject_reason(method: str, path: str, query: str) -> str | None:
    """Why the connector refuses this request outright (answered with 400), or None to go on.

    Refused: what kube-apiserver (or something between it and us) could read differently from
    `parse_request_info`, and shapes only an attack produces. Never raises.
    """
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"the request path is longer than {MAX_PATH_BYTES} bytes"
    if not path.startswith("/"):
        return "the request path must start with /"
    if _CONTROL.search(path) or _CONTROL.search(query):
        return "the request line contains a control character"
    if "\\" in path:
        return "the request path contains a backslash"
    if "#" in path:
        # A fragment is never sent; HTTP libraries disagree on whether a raw `#` ends the path.
        return "the request path contains '#'"
    raw_segments = path[1:].split("/")
    if raw_segments and raw_segments[-1] == "":
        raw_segments.pop()  # one trailing slash is harmless: the apiserver trims it
    for raw in raw_segments:
        if raw == "":
            return "the request path has an empty segment (//)"
        if "%" not in raw:
            if raw in (".", ".."):
                return f"the request path contains a dot segment ({raw!r})"
            continue
        decoded = _unescape(raw, plus=False)
        if decoded is None:
            return f"the request path has malformed percent-encoding in {raw!r}"
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return f"the request path segment {raw!r} is not UTF-8 once decoded"
        if "/" in text or "\\" in text:
            return f"the request path segment {raw!r} contains an encoded slash or backslash"
        if _CONTROL.search(text):
            return f"the request path segment {raw!r} contains an encoded NUL or control character"
        if text in (".", ".."):
            return f"the request path contains a dot segment ({raw!r})"

    if "#" in query:
        # Go keeps a raw `#` in the query; URL libraries (yarl, and so our own upstream client) cut the
        # query there, so the cluster would be asked less than the policy decided on, e.g. a list without
        # the `metadata.name` field selector that a `resource_names` rule allowed.
        return "the query contains '#'"
    if ";" in query:
        return "the query contains ';' (a parameter separator to some servers, not to Kubernetes)"
    counts: dict[str, int] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" not in pair:
            name = key.replace("+", " ")
        else:
            dkey, dvalue = _unescape(key, plus=True), _unescape(value, plus=True)
            if dkey is None or dvalue is None:
                return f"the query has malformed percent-encoding in {pair!r}"
            try:
                name = dkey.decode("utf-8")
                dvalue.decode("utf-8")
            except UnicodeDecodeError:
                return f"the query parameter {pair!r} is not UTF-8 once decoded"
        counts[name] = counts.get(name, 0) + 1
    for name in SINGLE_VALUED_PARAMS:
        if counts.get(name, 0) > 1:
            return f"the query repeats {name!r}"

    info = parse_request_info(method, path, query)
    if info.namespace in (".", ".."):
        return f"the namespace {info.namespace!r} is not a name"
    if info.is_resource_request and not info.parts:
        return "the apiserver cannot tell the resource of this request (a path verb with nothing after it)"
    return None


def _list_verb_and_name(query: str) -> tuple[str, str]:
    """For a GET without a name: `list` or `watch`, and the name a `metadata.name` selector pins.

    Mirrors the apiserver decoding ListOptions: when decoding fails, the name is not taken and only
    the `watch` parameter is read (with ToLower rather than EqualFold, as the apiserver does).
    """
    params = parse_query(query)
    options_ok = all(_is_go_int64(params[p][0]) for p in ("limit", "timeoutSeconds") if p in params)
    name = _field_selector_exact_name(params.get("fieldSelector", [""])[0]) if options_ok else None
    if name is None:
        watch_values = params.get("watch")
        watch = bool(watch_values) and watch_values[0].lower() not in ("false", "0")
        return ("watch" if watch else "list"), ""
    watch = query_flag(params, "watch")
    if not _is_valid_path_segment_name(name):
        name = ""
    return ("watch" if watch else "list"), name


def _field_selector_exact_name(selector: str) -> str | None:
    """`RequiresExactMatch("metadata.name")` of a parsed field selector; None if it does not parse."""
    terms = sorted(_split_selector_terms(selector))
    found = ""
    matched = False
    for term in terms:
        if term == "":
            continue
        split = _split_selector_term(term)
        if split is None:
            return None
        lhs, op, rhs = split
        value = _unescape_selector_value(rhs)
        if value is None:
            return None
        # The first equality term on metadata.name, in sorted order, is the one the apiserver uses.
        if not matched and op != "!=" and lhs == "metadata.name":
            found, matched = value, True
    return found


def _split_selector_terms(selector: str) -> list[str]:
    """Split on commas that are not backslash-escaped (escapes are kept for the value unescaper)."""
    if not selector:
        return []
    terms, start, escaped = [], 0, False
    for i, c in enumerate(selector):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _split_selector_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape_selector_value(value: str) -> str | None:
    out, escaped = [], False
    for c in value:
        if escaped:
            if c not in "\\,=":
                return None
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            return None
        else:
            out.append(c)
    return None if escaped else "".join(out)


def _is_valid_path_segment_name(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


def _is_go_int64(value: str) -> bool:
    return _GO_INT64.fullmatch(value) is not None and _INT64_MIN <= int(value) <= _INT64_MAX


def _split_path(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


def _decode_path(path: str) -> str:
    """Go's URL path decoding. Malformed escapes (which Go's server refuses) are kept as they are."""
    if "%" not in path:
        return path
    decoded = _unescape(path, plus=False)
    if decoded is None:
        return path
    return decoded.decode("utf-8", "replace")


def query_flag(params: dict[str, list[str]], name: str) -> bool:
    """A boolean query parameter as the apiserver converts it into its options (`watch`, `follow`,
    `stdin`, `stdout`, `stderr`, `tty`, ...): true when present and its first value is neither `0`
    nor `false` in any case, so `stdin=yes`, `follow=on`, `tty=` and a bare `stdin` are all true.

    One function for every reader (request info, stream classification, session recording), so the
    connector never sees a flag off that the cluster sees on. Go's EqualFold folds U+017F (long s)
    to "s", so "FAL\u017fE" means false; casefold() agrees on this word.
    """
    values = params.get(name)
    return bool(values) and not (values[0] == "0" or values[0].casefold() == "false")


def parse_query(query: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery: `&`-separated, `+` is a space, pairs with `;` or bad escapes are skipped."""
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        dkey, dvalue = _unescape(key, plus=True), _unescape(value, plus=True)
        if dkey is None or dvalue is None:
            continue
        params.setdefault(dkey.decode("utf-8", "replace"), []).append(dvalue.decode("utf-8", "replace"))
    return params


def _unescape(text: str, *, plus: bool) -> bytes | None:
    """Strict percent-decoding (two hex digits after every %), None when malformed."""
    chunks = text.split("%")
    out = bytearray(_literal(chunks[0], plus))
    for chunk in chunks[1:]:
        if len(chunk) < 2 or chunk[0] not in _HEX or chunk[1] not in _HEX:
            return None
        out.append(int(chunk[:2], 16))
        out += _literal(chunk[2:], plus)
    return bytes(out)


def _literal(text: str, plus: bool) -> bytes:
    if plus:
        text = text.replace("+", " ")
    return text.encode("utf-8", "surrogateescape")
