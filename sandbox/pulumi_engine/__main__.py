"""`python -m sandbox.pulumi_engine build` (what `make pulumi-engine` runs): build or find the `pulumi`
CLI and the Kubernetes provider, and print where they are."""

from __future__ import annotations

import argparse
import sys

from sandbox.pulumi_engine.binaries import EngineUnavailable, ensure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.pulumi_engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find) the Pulumi engine's binaries")
    parser.parse_args(argv)
    try:
        engine = ensure()
    except KeyboardInterrupt:
        parser.exit(130, "pulumi engine: build interrupted\n")
    except EngineUnavailable as exc:
        parser.exit(1, f"pulumi engine: {exc}\n")
    print(
        f"pulumi {engine.cli_version}, pulumi-resource-kubernetes {engine.kubernetes_version}: "
        f"{engine.bin_dir} ({engine.source})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
