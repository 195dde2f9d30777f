"""The `python -m connector` command line.

Each subcommand lives in the module that owns its feature and exposes two functions:
`configure(parser: argparse.ArgumentParser) -> None` and `run(args: argparse.Namespace) -> int`.
Modules are imported only when their subcommand runs, so that `python -m connector token` (run by
kubectl before every request as an exec credential plugin) does not pay for importing the server.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from connector import __version__


class Subcommand(NamedTuple):
    name: str
    module: str
    summary: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("serve", "connector.proxy.cli", "run the connector (HTTPS proxy in front of the sockets)"),
    Subcommand("policy", "connector.policy.cli", "check what the policies allow, without a cluster"),
    Subcommand("sockets", "connector.upstream.cli", "show the configured sockets and how they authenticate"),
    Subcommand("discover", "connector.aws.discovery_cli", "scan AWS for EKS clusters and print the sockets"),
    Subcommand("token", "connector.aws.token_cli", "print an EKS bearer token as a kubeconfig ExecCredential"),
    Subcommand("sessions", "connector.audit.sessions_cli", "list, play and export recorded exec sessions"),
    Subcommand("client", "connector.client.cli", "user side: login, kubeconfig set, exec credential plugin"),
    Subcommand("access", "connector.access.cli", "just-in-time access: request, list, approve, deny, revoke"),
)

EXIT_USAGE = 2

# The console scripts `pip install` / `pipx install` put on PATH (pyproject.toml [project.scripts]).
SCRIPT_NAMES = ("eks-access-connector", "eksac")


def command_name() -> str:
    """How the user ran us, for the commands we print: the console script's name, or `python -m connector`.

    A hint is only useful if it works verbatim: after `pipx install` there is no `python` that can
    import `connector`, and in a checkout there may be no console script."""
    invoked = sys.argv[0].rsplit("/", 1)[-1] if sys.argv else ""
    return invoked if invoked in SCRIPT_NAMES else "python -m connector"


def _top_level_help() -> str:
    width = max(len(s.name) for s in SUBCOMMANDS)
    lines = [
        f"usage: {command_name()} [--version] <command> [<args>]",
        "",
        "EKS Access Connector: expose Kubernetes clusters to your people with SSO, policies and audit.",
        "",
        "commands:",
    ]
    lines += [f"  {s.name.ljust(width)}  {s.summary}" for s in SUBCOMMANDS]
    lines += ["", f"Run `{command_name()} <command> --help` for the command's options."]
    return "\n".join(lines)


def build_parser(command: Subcommand) -> argparse.ArgumentParser:
    """Import the subcommand's module and let it declare its arguments."""
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"{command_name()} {command.name}", description=command.summary)
    module.configure(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_level_help())
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        print(__version__)
        return 0
    by_name = {s.name: s for s in SUBCOMMANDS}
    command = by_name.get(argv[0])
    if command is None:
        print(f"{command_name()}: unknown command {argv[0]!r}\n", file=sys.stderr)
        print(_top_level_help(), file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(command).parse_args(argv[1:])
    try:
        code = int(args._run(args))
        sys.stdout.flush()
    except BrokenPipeError:
        return _quiet_after_broken_pipe()
    return code


def entry() -> None:
    """The console scripts' entry point."""
    sys.exit(main(sys.argv[1:]))


def _quiet_after_broken_pipe() -> int:
    """`... | head` closed our stdout: stop quietly, as cat does. Point stdout at /dev/null so that the
    interpreter's final flush does not report the broken pipe again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0
