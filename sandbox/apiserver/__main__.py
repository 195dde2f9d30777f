"""`python -m sandbox.apiserver [--port 6443] [--dir DIR]`: one emulated EKS API server, for poking at.

Prints the URL, the CA file and the admin token, then serves until interrupted. For example:
`kubectl --server URL --certificate-authority CA --token TOKEN get pods -A`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from sandbox.apiserver.server import EmulatedApiServer


async def _serve(args: argparse.Namespace, scratch: Path) -> int:
    server = EmulatedApiServer(args.cluster, scratch_dir=scratch, version=args.version, port=args.port,
                               bootstrap_token=args.token)
    try:
        await server.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"URL:   {server.url}\nCA:    {server.ca_path}\nToken: {server.bootstrap_token}", flush=True)
    print(f"try:   kubectl --server {server.url} --certificate-authority {server.ca_path} "
          f"--token {server.bootstrap_token} get namespaces", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.apiserver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--cluster", default="sandbox", help="the EKS cluster name tokens must be for")
    parser.add_argument("--version", default="v1.31.4", help="the Kubernetes version to report")
    parser.add_argument("--token", default=None, help="the admin bearer token (default: a random one)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        scratch = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="apiserver-")))
        return asyncio.run(_serve(args, scratch))


if __name__ == "__main__":
    sys.exit(main())
