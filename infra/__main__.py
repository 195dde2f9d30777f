"""`python -m infra render [--namespace NS] [--image IMG] [--config FILE]`."""

import argparse
import sys

from infra import render


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description="EKS Access Connector deployment tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    render.configure(sub.add_parser("render", help="print the connector's in-cluster manifests as YAML"))
    args = parser.parse_args(argv)
    return render.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
