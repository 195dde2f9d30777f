"""`python -m connector sockets`: show each configured socket, how it authenticates, and whether it works.

Every socket is resolved on its own, so one broken socket is reported by name next to the working
ones. `--check` also calls `GET /version` on each resolved socket with the connector's credentials.
Exit code 0 when every socket resolved (and answered, with --check), 1 otherwise, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from connector.aws.token import EksTokenCache
from connector.config import ConfigError, load_config
from connector.upstream.config import AwsEksSocketConfig, SocketConfig
from connector.upstream.resolve import resolve_socket
from connector.upstream.upstream import SocketError, Upstream

CHECK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    status: int | None = None
    version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SocketReport:
    name: str
    service_type: str
    server: str
    auth: str
    resolved: bool
    error: str | None = None
    details: dict[str, Any] | None = None
    check: CheckResult | None = None

    @property
    def ok(self) -> bool:
        return self.resolved and (self.check is None or self.check.ok)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the connector's YAML config file")
    parser.add_argument("--output", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.add_argument(
        "--check", action="store_true", help="also call GET /version on each socket and show the answer"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    reports = asyncio.run(inspect_sockets(config.sockets, check=args.check))
    if args.output == "json":
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        print(format_table(reports, check=args.check))
    return 0 if all(r.ok for r in reports) else 1


async def inspect_sockets(sockets: Mapping[str, SocketConfig], *, check: bool) -> list[SocketReport]:
    """Resolve (and optionally check) every socket concurrently; never raises for one socket's failure."""
    token_cache = EksTokenCache()
    return list(
        await asyncio.gather(*(_inspect(name, cfg, token_cache, check) for name, cfg in sorted(sockets.items())))
    )


async def _inspect(name: str, cfg: SocketConfig, token_cache: EksTokenCache, check: bool) -> SocketReport:
    try:
        upstream = await resolve_socket(name, cfg, token_cache=token_cache)
    except SocketError as exc:
        return SocketReport(name, cfg.service_type, _configured_server(cfg), "-", resolved=False, error=str(exc))
    described = upstream.describe()
    return SocketReport(
        name=name,
        service_type=upstream.service_type,
        server=upstream.base_url,
        auth=described["auth"],
        resolved=True,
        details=described,
        check=await check_version(upstream) if check else None,
    )


def _configured_server(cfg: SocketConfig) -> str:
    if isinstance(cfg, AwsEksSocketConfig):
        return f"EKS {cfg.eks_cluster_name} ({cfg.eks_cluster_region})"
    return cfg.server or "(from kubeconfig)"


async def check_version(upstream: Upstream) -> CheckResult:
    """GET /version as the connector: proves the address, the TLS trust and the credentials."""
    try:
        headers = {"Accept": "application/json", **await upstream.auth_headers()}
    except SocketError as exc:
        return CheckResult(ok=False, error=exc.message)
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(
                f"{upstream.base_url}/version",
                headers=headers,
                ssl=upstream.ssl_context if upstream.ssl_context is not None else True,
                server_hostname=upstream.tls_server_name,
                allow_redirects=False,
            ) as response,
        ):
            body = await response.content.read(64 * 1024)
    except TimeoutError:
        return CheckResult(ok=False, error=f"no answer within {CHECK_TIMEOUT_SECONDS:g} s")
    except aiohttp.ClientConnectorCertificateError as exc:
        return CheckResult(ok=False, error=f"TLS verification failed: {exc.certificate_error}")
    except aiohttp.ClientConnectorError as exc:
        return CheckResult(
            ok=False, error=f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
        )
    except aiohttp.ClientError as exc:
        return CheckResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if response.status == 200 and isinstance(doc, dict) and isinstance(doc.get("gitVersion"), str):
        return CheckResult(ok=True, status=200, version=doc["gitVersion"])
    message = doc.get("message") if isinstance(doc, dict) and isinstance(doc.get("message"), str) else None
    detail = message or body[:200].decode("utf-8", errors="replace").strip() or response.reason or ""
    return CheckResult(ok=False, status=response.status, error=f"HTTP {response.status}: {detail}")


def format_table(reports: list[SocketReport], *, check: bool) -> str:
    if not reports:
        return "no sockets configured (add them under `sockets:` in the config)"
    header = ["SOCKET", "TYPE", "SERVER", "AUTH", "STATUS"] + (["CHECK"] if check else [])
    rows = [header]
    for r in reports:
        row = [r.name, r.service_type, r.server, r.auth, "resolved" if r.resolved else "ERROR"]
        if check:
            if r.check is None:
                row.append("-")
            else:
                row.append(r.check.version if r.check.ok else "FAILED")  # type: ignore[arg-type]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    problems = [r.error for r in reports if r.error]
    problems += [f"socket {r.name}: GET /version: {r.check.error}" for r in reports if r.check and not r.check.ok]
    if problems:
        lines += ["", *problems]
    return "\n".join(lines)
