"""`python -m connector serve --config FILE`: run the connector until SIGTERM.

Logs go to stderr; audit events go to stdout unless `audit.file` is set. Exit codes: 0 after a clean
shutdown, 2 when the config does not validate (every problem printed with its file and line), 1 when
the connector cannot start (certificate, audit file, address in use).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from connector.audit.sinks import AuditSinkError
from connector.config import ConfigError
from connector.proxy.runtime import Connector
from connector.proxy.server_tls import TlsSetupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the connector's YAML config file")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity (stderr)"
    )


def _event_loop_runner() -> asyncio.Runner:
    """uvloop when installed: it relays exec streams and serves small requests faster (see bench/proxy.py)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    connector = Connector(args.config)
    try:
        with _event_loop_runner() as runner:
            return runner.run(connector.run())
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except (AuditSinkError, TlsSetupError) as exc:
        print(f"python -m connector serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"python -m connector serve: cannot listen: {exc}", file=sys.stderr)
        return EXIT_FAILED
