"""Content negotiation: which representation a client asked for with its `Accept` header.

kubectl asks for Tables (`application/json;as=Table;g=meta.k8s.io;v=v1`), clients with
aggregated discovery for `APIGroupDiscoveryList` (`g=apidiscovery.k8s.io;v=v2` or `v2beta1`), and
everyone else for plain JSON. Alternatives are tried in the client's order (by `q` first); protobuf
is not served, so a client that offers only protobuf gets 406, while one that offers JSON after
protobuf gets JSON, as from a server without protobuf support.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.apiserver.errors import not_acceptable

JSON = "application/json"
YAML = "application/yaml"
SUPPORTED = [JSON, YAML]


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]
    q: float


@dataclass(frozen=True)
class Negotiated:
    """`format` is json or yaml; `as_kind` names a transformation (`Table`, `PartialObjectMetadata`,
    `PartialObjectMetadataList`, `APIGroupDiscoveryList`) and `group_version` its apiVersion."""

    format: str = "json"
    as_kind: str = ""
    group_version: str = ""

    @property
    def content_type(self) -> str:
        base = YAML if self.format == "yaml" else JSON
        if not self.as_kind:
            return base
        group, _, version = self.group_version.rpartition("/")
        return f"{base};g={group};v={version};as={self.as_kind}"


def parse_accept(header: str | None) -> list[MediaRange]:
    ranges: list[MediaRange] = []
    for index, part in enumerate((header or "").split(",")):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append(MediaRange(pieces[0].lower(), params, q - index * 1e-9))
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


_TRANSFORMS = {
    ("meta.k8s.io", "Table"): ("v1", "v1beta1"),
    ("meta.k8s.io", "PartialObjectMetadata"): ("v1", "v1beta1"),
    ("meta.k8s.io", "PartialObjectMetadataList"): ("v1", "v1beta1"),
}
_DISCOVERY_VERSIONS = ("v2", "v2beta1")


def negotiate(header: str | None, *, allow: frozenset[str] = frozenset(), discovery: bool = False) -> Negotiated:
    """Pick the first acceptable representation; `allow` lists the transformations the endpoint
    supports, `discovery` that it can answer aggregated discovery."""
    ranges = parse_accept(header) or [MediaRange("*/*", {}, 1.0)]
    for r in ranges:
        if r.type in (JSON, "application/*", "*/*"):
            fmt = "json"
        elif r.type == YAML:
            fmt = "yaml"
        else:
            continue
        as_kind, group, version = r.params.get("as", ""), r.params.get("g", ""), r.params.get("v", "")
        if not as_kind:
            return Negotiated(fmt)
        if discovery and as_kind == "APIGroupDiscoveryList" and group == "apidiscovery.k8s.io" \
                and version in _DISCOVERY_VERSIONS:
            return Negotiated(fmt, as_kind, f"{group}/{version}")
        if as_kind in allow and version in _TRANSFORMS.get((group, as_kind), ()):
            return Negotiated(fmt, as_kind, f"{group}/{version}")
    raise not_acceptable(SUPPORTED)
