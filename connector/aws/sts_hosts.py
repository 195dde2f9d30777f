"""Which hosts are real AWS STS endpoints of a partition, and the region a request to each is signed for.

A token verifier must only trust presigned URLs aimed at STS itself: a URL pointing anywhere else
would let its author answer "yes, this is the admin role". The hosts come from botocore's endpoint
data (the same data the SDKs resolve endpoints with): `sts.REGION.DOMAIN`, the FIPS and dual-stack
variants, the global `sts.amazonaws.com` (commercial partition only), and any region the partition's
region pattern admits (so a new region works before the endpoint list knows it), as
aws-iam-authenticator accepts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from connector.aws.names import is_region

_SERVICE = "sts"


@dataclass(frozen=True)
class _Partition:
    region_pattern: re.Pattern[str]
    regions: frozenset[str]
    labels: frozenset[str]  # first DNS label: sts, sts-fips
    suffixes: frozenset[str]  # amazonaws.com, api.aws, ...
    explicit: dict[str, str]  # host -> signing region, for hosts named outright (sts.amazonaws.com)


def partitions() -> frozenset[str]:
    """The partition names botocore knows: aws, aws-cn, aws-us-gov, aws-iso, ..."""
    return _partition_names()


@lru_cache(maxsize=1)
def _partition_names() -> frozenset[str]:
    return frozenset(_load())


def sts_signing_region(host: str, partition: str = "aws") -> str | None:
    """The region a request to STS `host` is signed for, or None if `host` is not an STS endpoint of
    `partition`. `host` is compared exactly (no port, no case folding), as aws-iam-authenticator does."""
    data = _load().get(partition)
    if data is None:
        raise ValueError(f"unknown AWS partition {partition!r} (known: {', '.join(sorted(_load()))})")
    if host in data.explicit:
        return data.explicit[host]
    label, _, rest = host.partition(".")
    region, _, suffix = rest.partition(".")
    if label not in data.labels or suffix not in data.suffixes:
        return None
    if is_region(region) and (region in data.regions or data.region_pattern.fullmatch(region)):
        return region
    return None


def _label(template: str) -> str | None:
    """`{service}-fips.{region}.{dnsSuffix}` -> `sts-fips`."""
    head, sep, _ = template.partition(".{region}.")
    return head.replace("{service}", _SERVICE) if sep else None


@lru_cache(maxsize=1)
def _load() -> dict[str, _Partition]:
    import botocore.loaders

    endpoints: dict[str, Any] = botocore.loaders.create_loader().load_data("endpoints")
    out: dict[str, _Partition] = {}
    for p in endpoints["partitions"]:
        defaults = p.get("defaults", {})
        service = p.get("services", {}).get(_SERVICE, {})
        variants = list(defaults.get("variants", [])) + list(service.get("defaults", {}).get("variants", []))
        templates = [defaults.get("hostname", "{service}.{region}.{dnsSuffix}")]
        templates += [v["hostname"] for v in variants if "hostname" in v]
        suffixes = {p["dnsSuffix"]} | {v["dnsSuffix"] for v in variants if "dnsSuffix" in v}
        if p.get("dualStackDnsSuffix"):
            suffixes.add(p["dualStackDnsSuffix"])
        explicit: dict[str, str] = {}
        for name, ep in service.get("endpoints", {}).items():
            region = ep.get("credentialScope", {}).get("region", name)
            if "hostname" in ep:
                explicit[ep["hostname"]] = region
            for variant in ep.get("variants", []):
                if "hostname" in variant:
                    explicit[variant["hostname"]] = region
        out[p["partition"]] = _Partition(
            region_pattern=re.compile(p["regionRegex"]),
            regions=frozenset(p.get("regions", {})),
            labels=frozenset(label for label in map(_label, templates) if label),
            suffixes=frozenset(suffixes),
            explicit=explicit,
        )
    return out
