"""`python -m connector serve --config FILE [--workers N]`: run the connector until SIGTERM.

`--workers N` serves from N processes on one port (default: the CPUs this process may use); with
N = 1 the connector is one process, as it always was. See connector.proxy.workers.

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
from connector.proxy.worker import WorkerConnector
from connector.proxy.worker_count import usable_cpus
from connector.proxy.workers import Supervisor, WorkerStartError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the connector's YAML config file")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity (stderr)"
    )
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        metavar="N",
        help="serving processes sharing the port (default: the CPUs this process may use; 1: a single process)",
    )
    # How the supervisor starts a worker; not for people.
    parser.add_argument("--worker-link", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker-port", type=int, default=0, help=argparse.SUPPRESS)


MAX_WORKERS = 256


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WORKERS}, not {count}")
    return count


def _process_label(args: argparse.Namespace) -> str:
    """Which worker wrote a log line, when several share the log."""
    return f"worker {args.worker_index} (pid %(process)d) " if args.worker_link else ""


def _connector(args: argparse.Namespace) -> Connector:
    if args.worker_link:
        return WorkerConnector(args.config, link_path=args.worker_link, index=args.worker_index, port=args.worker_port)
    workers = args.workers if args.workers is not None else usable_cpus()
    if workers == 1:
        return Connector(args.config)
    return Supervisor(args.config, workers=workers, log_level=args.log_level)


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
        format=f"%(asctime)s %(levelname)s {_process_label(args)}%(name)s: %(message)s",
    )
    connector = _connector(args)
    try:
        with _event_loop_runner() as runner:
            return runner.run(connector.run())
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except (AuditSinkError, TlsSetupError, WorkerStartError) as exc:
        print(f"python -m connector serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"python -m connector serve: cannot listen: {exc}", file=sys.stderr)
        return EXIT_FAILED
