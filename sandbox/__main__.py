"""`python -m sandbox [--dir DIR] [--port PORT] [--cluster real|emulated] [--kubernetes MINOR]` (what
`make sandbox` runs): see sandbox.run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path

from sandbox.controlplane.binaries import MINORS
from sandbox.run import CLUSTER_KINDS, Sandbox, SandboxError, tour


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("sandbox-state"), help="state directory (wiped at start)")
    parser.add_argument("--port", type=int, default=8443, help="the connector's port on 127.0.0.1 (0: any free)")
    parser.add_argument("--cluster", choices=CLUSTER_KINDS, default="auto",
                        help="real kube-apiservers, emulated API servers, or auto (default): real when their "
                             "binaries are cached, in KUBEBUILDER_ASSETS or buildable with go, else emulated")
    parser.add_argument("--kubernetes", choices=MINORS, default=None, metavar="MINOR",
                        help=f"run every real cluster on this kube-apiserver minor ({', '.join(MINORS)}); "
                             "default: prod and scratch 1.33, staging 1.29")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if shutil.which("kubectl") is None:
        print("note: kubectl is not on PATH; the sandbox runs, but the tour needs kubectl.", file=sys.stderr)
    sandbox = Sandbox(args.dir.resolve(), args.port, cluster_kind=args.cluster, kubernetes_minor=args.kubernetes)
    return asyncio.run(_serve(sandbox))


async def _serve(sandbox: Sandbox) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = await sandbox.start()
    except (SandboxError, OSError) as exc:  # OSError: a server could not listen, a file not be written
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    for note in sandbox.notes:
        print(note, file=sys.stderr)
    print(tour(info), flush=True)
    waiter = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        await asyncio.wait([waiter], timeout=1.0)
        if sandbox.connector is not None and sandbox.connector.poll() is not None:
            print(f"sandbox: the connector exited ({sandbox.connector.returncode}); stopping.", file=sys.stderr)
            await sandbox.stop()
            return 1
    print("Stopping the sandbox...", file=sys.stderr)
    await sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
