"""The `discovery:` section of the connector config: which AWS accounts and regions to scan for EKS
clusters, which clusters to expose, and what to name their sockets.

    discovery:
      aws_eks:
        - regions: [eu-west-1, us-east-1]     # or: all (the account's enabled regions)
          credentials: {role_arn: arn:aws:iam::123456789012:role/connector}
          scan_interval_minutes: 5
          include_with_tags: {expose: []}     # tag -> allowed values; [] = any value
          exclude_with_tags: {env: [sandbox]}
          socket_name_template: eks-{region}-{cluster}

Field names are Border0's. Everything here is pure: the scan itself is in discovery_scan.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator

from connector.aws.credentials import AwsCredentials
from connector.aws.names import aws_region
from connector.model import StrictModel

DEFAULT_SOCKET_NAME_TEMPLATE = "eks-{region}-{cluster}"
TEMPLATE_FIELDS = ("region", "cluster")
# Socket names appear in URLs, kubeconfig context names and metric labels: one DNS label.
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

Region = Annotated[str, AfterValidator(aws_region)]
TagKey = Annotated[str, Field(min_length=1, max_length=128)]
TagValue = Annotated[str, Field(max_length=256)]
TagFilter = dict[TagKey, list[TagValue]]


def _regions_branch(value: Any) -> str:
    return "[all]" if isinstance(value, str) else "[list]"


def socket_name(template: str, region: str, cluster: str) -> str:
    """The socket name for a cluster. EKS allows upper case and `_` in cluster names and DNS labels do
    not, so the result is lower-cased and `_` becomes `-`. Raises ValueError if it is still no label."""
    name = template.format(region=region, cluster=cluster).lower().replace("_", "-")
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"socket name {name!r} (from {template!r}) is not a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _check_template(template: str) -> str:
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"socket_name_template {template!r} is not a valid template: {exc}") from None
    for name, spec, conv in fields:
        if name not in TEMPLATE_FIELDS or spec or conv:
            raise ValueError(
                f"socket_name_template {template!r} may only use {{region}} and {{cluster}}, found {{{name}}}"
            )
    if "cluster" not in (name for name, _, _ in fields):
        raise ValueError(f"socket_name_template {template!r} must contain {{cluster}}, or every cluster gets one name")
    socket_name(template, "us-east-1", "c")
    return template


class EksDiscoveryConfig(StrictModel):
    """One discovery source: an AWS identity and the regions it scans."""

    regions: Annotated[
        Annotated[list[Region], Field(min_length=1), Tag("[list]")] | Annotated[Literal["all"], Tag("[all]")],
        Discriminator(_regions_branch),
    ] = Field(description="Regions to scan, or `all` for the account's enabled regions.")
    credentials: AwsCredentials | None = None
    scan_interval_minutes: int = Field(default=5, ge=1, le=24 * 60)
    include_with_tags: TagFilter = Field(default_factory=dict)
    exclude_with_tags: TagFilter = Field(default_factory=dict)
    socket_name_template: Annotated[str, AfterValidator(_check_template)] = DEFAULT_SOCKET_NAME_TEMPLATE

    @field_validator("regions")
    @classmethod
    def _no_duplicate_regions(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            dupes = sorted({r for r in value if value.count(r) > 1})
            if dupes:
                raise ValueError(f"regions lists {', '.join(dupes)} more than once")
        return value

    def selects(self, tags: dict[str, str]) -> bool:
        """Whether a cluster with `tags` is exposed: no include filter or one of its tags matches,
        and no exclude tag matches. A filter's empty value list matches any value of the tag."""
        return (not self.include_with_tags or _any_tag_matches(self.include_with_tags, tags)) and not _any_tag_matches(
            self.exclude_with_tags, tags
        )

    def socket_name(self, region: str, cluster: str) -> str:
        return socket_name(self.socket_name_template, region, cluster)


def _any_tag_matches(tag_filter: TagFilter, tags: dict[str, str]) -> bool:
    return any(key in tags and (not values or tags[key] in values) for key, values in tag_filter.items())


class DiscoveryConfig(StrictModel):
    """The `discovery:` section: one entry per AWS identity to scan with."""

    aws_eks: list[EksDiscoveryConfig] = Field(default_factory=list)
