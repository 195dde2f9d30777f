"""`python -m sandbox.controlplane build [MINOR ...]` (what `make control-plane` runs): build or find
kube-apiserver for each minor (default: all) and etcd, and print where they are."""

from __future__ import annotations

import argparse
import sys

from sandbox.controlplane.binaries import ETCD_MINOR, MINORS, ControlPlaneUnavailable, ensure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.controlplane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find) the control plane's binaries")
    build.add_argument("minors", nargs="*", metavar="MINOR",
                       help=f"Kubernetes minors to build: {', '.join(MINORS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.minors if m not in MINORS]
    if unknown:
        parser.error(f"unknown Kubernetes minor {unknown[0]!r}; choose from {', '.join(MINORS)}")
    minors = list(dict.fromkeys(args.minors or MINORS))
    if ETCD_MINOR not in minors:
        minors.append(ETCD_MINOR)  # the etcd every cluster shares comes with this minor's build
    try:
        for minor in minors:
            found = ensure(minor)
            print(f"kube-apiserver {minor}: {found.kube_apiserver} ({found.source})")
            if found.etcd is not None:
                print(f"etcd: {found.etcd} ({found.source})")
    except ControlPlaneUnavailable as exc:
        print(f"control plane: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("control plane: build interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
