"""The form of the connector's own error answers: Status JSON, or its message as plain text where
client-go can print nothing else.

client-go (kubectl 1.27 to 1.33 at least) reads `/api`, `/apis` and `/version` with `Result.Raw()`,
which never decodes a Status body. An error there becomes `NewGenericServerResponse`, whose message
is the body when the response's media type is `text/*` and "unknown" otherwise, so a 403 Status JSON
prints as `Error from server (Forbidden): unknown`. That is the first thing a user with an empty
discovery cache sees: `kubectl get pods` starts by asking `/api` with the aggregated discovery Accept
(`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...,application/json`), and
`kubectl version` asks `/version` with `application/json, */*`. `/api/v1` and `/apis/GROUP/VERSION`
are read with `Result.Into()`, which decodes a Status JSON, so they keep getting one. (For a 401 on
the `Raw()` paths client-go prints its own fixed text, "You must be logged in to the server", whatever
the body.)

So on those three paths the connector answers in plain text when the client is client-go asking for
aggregated discovery or accepts text anyway; a client that accepts only JSON (or YAML, protobuf), like
the Python `kubernetes` client, gets the Status JSON every other error is.

The OpenAPI documents (`/openapi/v2`, `/openapi/v3` and its group documents, and the old
`/swagger-2.0.0.pb-v1`) are read with `Raw()` too, by `apply`, `explain`, `diff` and client-side
validation, which ask for them as protobuf or as `application/json` (the document, not a Status):
a JSON denial there printed `Error from server (Forbidden): unknown` (1.27) or `failed to download
openapi: unknown` (1.33). Their error answers are always plain text.

client-go also replaces the message of a 404 on these paths with its own "the server could not find
the requested resource" (a 403's message is kept), so the refusal of an unknown socket is a 403 where
the answer is plain text (see `unknown_socket_status`).
"""

from __future__ import annotations

RAW_DISCOVERY_PATHS = frozenset({"/api", "/apis", "/version"})
OPENAPI_PATHS = frozenset({"/openapi/v2", "/openapi/v3", "/swagger-2.0.0.pb-v1"})
AGGREGATED_DISCOVERY_KIND = "APIGroupDiscoveryList"
_TEXT_RANGES = frozenset({"*/*", "text/*", "text/plain"})


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """`a/b;p=1, c/d` -> [("a/b", {"p": "1"}), ("c/d", {})]; type and parameter names lower-cased."""
    ranges = []
    for part in accept.split(","):
        media, *params = part.split(";")
        parsed: dict[str, str] = {}
        for param in params:
            name, _, value = param.partition("=")
            parsed[name.strip().lower()] = value.strip().strip('"')
        if media.strip():
            ranges.append((media.strip().lower(), parsed))
    return ranges


def _acceptable(params: dict[str, str]) -> bool:
    """False for a range the client ruled out with `q=0`."""
    try:
        return float(params.get("q", "1")) > 0
    except ValueError:
        return True  # a malformed weight is ignored, as Go's and most servers' parsers do


def wants_plain_text(k8s_path: str, accept: str) -> bool:
    """Whether an error answer to this Kubernetes path should be plain text rather than Status JSON."""
    if k8s_path in OPENAPI_PATHS or k8s_path.startswith("/openapi/v3/"):
        return True
    if k8s_path not in RAW_DISCOVERY_PATHS:
        return False
    ranges = _media_ranges(accept)
    if not ranges:
        return True  # no Accept: anything is acceptable
    for media, params in ranges:
        if params.get("as") == AGGREGATED_DISCOVERY_KIND:
            return True  # client-go's discovery request, which cannot show a JSON error
        if media in _TEXT_RANGES and _acceptable(params):
            return True
    return False


def unknown_socket_status(plain_text: bool) -> int:
    """404 for an unknown socket, except where client-go would print its own 404 text instead of ours."""
    return 403 if plain_text else 404
