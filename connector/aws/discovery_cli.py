"""`python -m connector discover`: run one EKS discovery scan and print the sockets it would expose.

    python -m connector discover --regions eu-west-1,us-east-1 --include-tag expose --exclude-tag env=sandbox

Like the connector, it uses the default AWS credential chain (or --profile / --role-arn) and honours
AWS_ENDPOINT_URL, so it runs against moto as well as AWS. Exit status: 0 when every region and cluster
answered, 1 when something failed (what did answer is still printed; the failures go to stderr),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from pydantic import ValidationError

from connector.aws.discovery_config import DEFAULT_SOCKET_NAME_TEMPLATE, DiscoveryConfig, EksDiscoveryConfig
from connector.aws.discovery_scan import EksCluster, scan_once
from connector.configfile import validation_errors

EXIT_FAILED = 1
EXIT_USAGE = 2

_TABLE_COLUMNS = ("SOCKET", "CLUSTER", "REGION", "VERSION", "PLATFORM", "AUTH MODE", "VPC", "ENDPOINT", "TAGS")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regions", required=True, help="comma-separated regions, or `all` (the enabled ones)")
    parser.add_argument(
        "--include-tag",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="expose only clusters with this tag (any value when no =VALUE); repeatable, any match includes",
    )
    parser.add_argument(
        "--exclude-tag",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="never expose clusters with this tag (any value when no =VALUE); repeatable",
    )
    parser.add_argument(
        "--socket-name-template",
        default=DEFAULT_SOCKET_NAME_TEMPLATE,
        help="socket names from {region} and {cluster} (default: %(default)s)",
    )
    parser.add_argument("--output", choices=("table", "json"), default="table")
    parser.add_argument("--show-ca", action="store_true", help="include the clusters' CA data in json output")
    parser.add_argument("--profile", help="use this profile of the shared AWS config instead of the default chain")
    parser.add_argument("--role-arn", help="assume this IAM role to scan")
    parser.add_argument("--external-id", help="external id for --role-arn")
    parser.add_argument("--session-name", help="role session name for --role-arn")


def tag_filter(options: list[str]) -> dict[str, list[str]]:
    """`["env=prod", "env=staging", "team"]` -> `{"env": ["prod", "staging"], "team": []}` (a bare key
    matches any value, so it wins over values given for the same key)."""
    out: dict[str, list[str]] = {}
    bare: set[str] = set()
    for option in options:
        key, sep, value = option.partition("=")
        if not key:
            raise ValueError(f"tag filter {option!r} has no key (expected KEY or KEY=VALUE)")
        if sep:
            out.setdefault(key, []).append(value)
        else:
            bare.add(key)
            out[key] = []
    return {key: ([] if key in bare else values) for key, values in out.items()}


def source_from_args(args: argparse.Namespace) -> EksDiscoveryConfig:
    """The discovery source the flags describe. Raises ValueError with one line per problem, each
    naming the setting as the config file would (`regions[1]`, `credentials.role_arn`)."""
    regions: Any = "all" if args.regions.strip() == "all" else [r.strip() for r in args.regions.split(",")]
    credentials = {
        k: v
        for k, v in {
            "profile": args.profile,
            "role_arn": args.role_arn,
            "external_id": args.external_id,
            "session_name": args.session_name,
        }.items()
        if v is not None
    }
    data = {
        "regions": regions,
        "credentials": credentials or None,
        "include_with_tags": tag_filter(args.include_tag),
        "exclude_with_tags": tag_filter(args.exclude_tag),
        "socket_name_template": args.socket_name_template,
    }
    try:
        return EksDiscoveryConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError("\n".join(validation_errors(exc, "discover"))) from None


def render_table(clusters: list[EksCluster]) -> str:
    rows = [
        (
            c.socket_name,
            c.cluster_name,
            c.region,
            c.version,
            c.platform_version,
            c.authentication_mode,
            c.vpc_id,
            c.endpoint,
            ",".join(f"{k}={v}" for k, v in sorted(c.tags.items())),
        )
        for c in clusters
    ]
    lines = [_TABLE_COLUMNS, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(_TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def run(args: argparse.Namespace) -> int:
    try:
        source = source_from_args(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    # Only our own warnings, one line each: botocore logs a failed credential refresh with its traceback,
    # and the scan reports the same failure per region in words.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("discover: %(message)s"))
    ours = logging.getLogger("connector")
    ours.addHandler(handler)
    ours.setLevel(logging.WARNING)
    result = asyncio.run(scan_once(DiscoveryConfig(aws_eks=[source])))
    clusters = [result.clusters[name] for name in sorted(result.clusters)]
    if args.output == "json":
        print(json.dumps([c.to_dict(include_ca=args.show_ca) for c in clusters], indent=2))
    else:
        print(render_table(clusters))
    return 0 if result.outcome == "ok" else EXIT_FAILED
