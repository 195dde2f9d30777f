"""`python -m sandbox [--dir DIR] [--port PORT]` (what `make sandbox` runs): see sandbox.run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path

from sandbox.run import Sandbox, SandboxError, tour


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("sandbox-state"), help="state directory (wiped at start)")
    parser.add_argument("--port", type=int, default=8443, help="the connector's port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if shutil.which("kubectl") is None:
        print("note: kubectl is not on PATH; the sandbox runs, but the tour needs kubectl.", file=sys.stderr)
    return asyncio.run(_serve(Sandbox(args.dir.resolve(), args.port)))


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
