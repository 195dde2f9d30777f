"""`python -m connector client ...`: what a user runs on their laptop.

    client login --connector URL            SSO in the browser (or --device), tokens cached 0600
    client kubeconfig set --connector URL   a context per socket, authenticated by the exec plugin below
    client token --connector URL            the exec credential plugin kubectl runs (refreshes the login)
    client sockets --connector URL          the sockets you may use
    client whoami --connector URL           who the connector takes you for, and until when
    client logout --connector URL           forget the login (--kubeconfig-entries: and its contexts)

`client token` runs before every kubectl request: only what it needs is imported at the top (the SSO
flows, YAML and the kubeconfig editing are imported by the commands that use them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from connector.client import session as api
from connector.client.errors import SsoError
from connector.client.exec_credential import exec_credential, requested_api_version
from connector.client.token_store import StoredTokens, TokenStore

if TYPE_CHECKING:
    from connector.client.kubeconfig_edit import SocketEntry

EXIT_FAIL = 1
EXIT_USAGE = 2


def _connector_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"not a connector URL: {value!r} (expected https://host[:port])")
    return value.rstrip("/")


def _readable_file(value: str) -> str:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file" if not path.exists() else f"{value}: not a file")
    return value


def add_connector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connector", required=True, type=_connector_url, help="the connector's URL, https://host:port")
    p.add_argument(
        "--ca-file", type=_readable_file,
        help="the connector's CA certificate (PEM), when it is not in the system trust store",
    )
    p.add_argument("--profile", default="default", help="keep several logins to one connector apart")
    p.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    login = sub.add_parser("login", help="log in with your SSO and cache the tokens")
    add_connector_options(login)
    login.add_argument("--issuer", help="OIDC issuer URL (default: what the connector announces)")
    login.add_argument("--client-id", help="OIDC client id (default: what the connector announces)")
    login.add_argument("--device", action="store_true", help="use the device flow (no browser on this machine)")
    login.add_argument("--no-browser", action="store_true", help="print the login URL instead of opening a browser")

    token = sub.add_parser("token", help="exec credential plugin: print an ExecCredential for kubectl")
    add_connector_options(token)

    sockets = sub.add_parser("sockets", help="list the sockets you may use")
    add_connector_options(sockets)
    sockets.add_argument("--output", choices=("table", "json"), default="table")

    whoami = sub.add_parser("whoami", help="who the connector takes you for, and until when your login is valid")
    add_connector_options(whoami)
    whoami.add_argument("--output", choices=("text", "json"), default="text")

    logout = sub.add_parser("logout", help="forget this login's tokens")
    add_connector_options(logout)
    logout.add_argument(
        "--kubeconfig-entries", action="store_true", help="also remove the contexts `kubeconfig set` wrote for it"
    )
    logout.add_argument("--kubeconfig", type=Path, help="file to edit (default: $KUBECONFIG or ~/.kube/config)")

    kubeconfig = sub.add_parser("kubeconfig", help="write, print or remove kubeconfig entries for the sockets")
    kube_sub = kubeconfig.add_subparsers(dest="kubeconfig_action", required=True, metavar="ACTION")
    for name, summary in (
        ("set", "merge a context per socket into your kubeconfig"),
        ("get", "print the kubeconfig entries instead of writing them"),
        ("unset", "remove the sockets' entries from your kubeconfig"),
    ):
        p = kube_sub.add_parser(name, help=summary)
        add_connector_options(p)
        p.add_argument("--socket", action="append", default=[], help="only this socket (repeatable; default: all)")
        p.add_argument("--kubeconfig", type=Path, help="file to edit (default: first of $KUBECONFIG or ~/.kube/config)")
        if name == "set":
            p.add_argument("--set-current", action="store_true", help="make the (first) new context the current one")
        if name != "unset":
            p.add_argument(
                "--context-template",
                help="context name, with {socket} and {profile} "
                "(default: connector-{socket}, or connector-{socket}-{profile} with --profile)",
            )


def connector_ca(args: argparse.Namespace) -> str | None:
    """The connector's CA file: `--ca-file`, or the one `client login --ca-file` kept with the login."""
    if args.ca_file:
        return str(args.ca_file)
    kept = TokenStore(args.cache_dir).ca_path(args.connector, args.profile)
    return str(kept) if kept.is_file() else None


def verify_for(args: argparse.Namespace) -> bool | str:
    """What requests verifies the connector's certificate with: its CA file, or the system's trust store."""
    return connector_ca(args) or True


def _store(args: argparse.Namespace) -> TokenStore:
    return TokenStore(args.cache_dir)


def cmd_login(args: argparse.Namespace) -> int:
    from connector.client.sso import discover, login_with_browser, login_with_device_code

    verify = verify_for(args)
    if bool(args.issuer) != bool(args.client_id):
        print("client login: give both --issuer and --client-id, or neither", file=sys.stderr)
        return EXIT_USAGE
    issuer, client_id = args.issuer, args.client_id
    if not issuer:
        announced = api.login_config(args.connector, verify=verify)
        issuer, client_id = announced["issuer"], announced["client_id"]
    provider = discover(issuer)
    if args.device:
        def show(code: str, uri: str, complete: str | None) -> None:
            print(f"To log in, open {complete or uri} and enter the code {code}", file=sys.stderr)

        tokens = login_with_device_code(provider, client_id, show)
    else:
        def open_url(url: str) -> None:
            print(f"Log in at:\n\n  {url}\n", file=sys.stderr)
            if not args.no_browser:
                import webbrowser

                webbrowser.open(url)

        tokens = login_with_browser(provider, client_id, open_url)
    stored = StoredTokens(
        connector=args.connector, issuer=issuer, client_id=client_id, id_token=tokens.id_token,
        refresh_token=tokens.refresh_token, token_endpoint=provider.token_endpoint,
    )
    store = _store(args)
    store.save(stored, args.profile)
    if args.ca_file:  # kept with the login: later commands, and the kubeconfig, need no --ca-file
        store.save_ca(args.connector, args.profile, Path(args.ca_file).read_bytes())
    until = f"{stored.id_token_expiry():%Y-%m-%d %H:%M} UTC"
    try:
        who = f" as {_describe(api.whoami(args.connector, stored.id_token, verify=verify))}"
    except (ConnectionError, api.ApiRefused) as exc:
        who = f" (the connector did not say who you are: {exc})"
    print(
        f"Logged in to {args.connector}{who} (this token is valid until {until}; it renews itself).", file=sys.stderr
    )
    return 0


def _describe(identity: dict) -> str:
    groups = ", ".join(identity.get("groups") or []) or "none"
    return f"{identity.get('user')} (groups: {groups})"


def cmd_whoami(args: argparse.Namespace) -> int:
    tokens = api.fresh_tokens(_store(args), args.connector, args.profile, verify=verify_for(args))
    identity = api.whoami(args.connector, tokens.id_token, verify=verify_for(args))
    expires = tokens.id_token_expiry()
    if args.output == "json":
        out = {**identity, "connector": args.connector, "profile": args.profile, "expires": expires.isoformat()}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{_describe(identity)} on {args.connector}, profile {args.profile}")
    print(f"token valid until {expires:%Y-%m-%d %H:%M:%S} UTC (renewed by itself while your login lasts)")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    store = _store(args)
    had_login = store.load(args.connector, args.profile) is not None
    store.delete(args.connector, args.profile)
    said = "Logged out of" if had_login else "No login to forget for"
    print(f"{said} {args.connector} (profile {args.profile}).", file=sys.stderr)
    if args.kubeconfig_entries:
        from connector.client.kubeconfig_edit import default_kubeconfig_path, edit_kubeconfig, remove_entries

        path = args.kubeconfig or default_kubeconfig_path()
        args.socket = []  # every context of this login
        if path.is_file():
            removed = edit_kubeconfig(path, lambda config: remove_entries(config, _our_contexts(config, args))[1])
        else:
            removed = []
        print(f"Removed {len(removed)} context(s) from {path}: {', '.join(removed) or 'none'}", file=sys.stderr)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    api_version = requested_api_version()
    tokens = api.fresh_tokens(_store(args), args.connector, args.profile, verify=verify_for(args))
    print(exec_credential(tokens.id_token, tokens.id_token_expiry(), api_version))
    return 0


def _sockets(args: argparse.Namespace) -> list[dict]:
    tokens = api.fresh_tokens(_store(args), args.connector, args.profile, verify=verify_for(args))
    return api.list_sockets(args.connector, tokens.id_token, verify=verify_for(args))


def cmd_sockets(args: argparse.Namespace) -> int:
    sockets = _sockets(args)
    if args.output == "json":
        print(json.dumps(sockets, indent=2))
        return 0
    rows = [("NAME", "TYPE", "REGION", "TAGS")]
    for s in sockets:
        tags = ",".join(f"{k}={v}" for k, v in sorted((s.get("tags") or {}).items()))
        rows.append((s["name"], str(s.get("type", "")), str(s.get("region") or ""), tags))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    return 0


def socket_entries(args: argparse.Namespace, names: list[str]) -> list[SocketEntry]:
    from connector.client.kubeconfig_edit import connector_entries

    return connector_entries(
        args.connector, names, ca_file=connector_ca(args), profile=args.profile, cache_dir=args.cache_dir,
        context_template=args.context_template,
    )


def _chosen(args: argparse.Namespace) -> list[str]:
    available = [s["name"] for s in _sockets(args)]
    if not args.socket:
        return available
    unknown = [s for s in args.socket if s not in available]
    if unknown:
        offer = ", ".join(available) or "none"
        raise LookupError(f"you may not use socket(s) {', '.join(unknown)} on {args.connector}; available: {offer}")
    return list(args.socket)


def _our_contexts(config: dict, args: argparse.Namespace) -> list[str]:
    """Contexts this command wrote for the connector and this --profile (all, or the --socket ones).

    They are found by their user, which is the profile's own: another profile's entries never match."""
    from connector.client.kubeconfig_edit import named_entries, profile_user

    user = profile_user(args.connector, args.profile)
    servers = {c.get("name"): (c.get("cluster") or {}).get("server") for c in named_entries(config, "clusters")}
    wanted = {f"{args.connector}/sockets/{name}" for name in args.socket}
    return [
        str(ctx.get("name"))
        for ctx in named_entries(config, "contexts")
        if (ctx.get("context") or {}).get("user") == user
        and (not args.socket or servers.get((ctx.get("context") or {}).get("cluster")) in wanted)
    ]


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from connector.client.kubeconfig_edit import (
        apply_entries,
        default_kubeconfig_path,
        edit_kubeconfig,
        remove_entries,
        render,
    )

    path = args.kubeconfig or default_kubeconfig_path()
    if path.is_dir():
        origin = "--kubeconfig" if args.kubeconfig else "KUBECONFIG" if os.environ.get("KUBECONFIG") else "kubeconfig"
        print(f"error: {origin} {path} is a directory, not a kubeconfig file", file=sys.stderr)
        return EXIT_USAGE
    if args.kubeconfig_action == "unset":
        removed = edit_kubeconfig(path, lambda config: remove_entries(config, _our_contexts(config, args))[1])
        print(f"Removed {len(removed)} context(s) from {path}: {', '.join(removed) or 'none'}", file=sys.stderr)
        return 0
    names = _chosen(args)
    if not names:
        print(f"You may not use any socket on {args.connector}.", file=sys.stderr)
        return EXIT_FAIL
    entries = socket_entries(args, names)
    current = entries[0].context if getattr(args, "set_current", False) else None
    if args.kubeconfig_action == "get":
        print(render(apply_entries({}, entries, set_current=entries[0].context)))
        return 0
    edit_kubeconfig(path, lambda config: apply_entries(config, entries, set_current=current))
    print(f"Wrote {len(entries)} context(s) to {path}:", file=sys.stderr)
    for e in entries:
        print(f"  kubectl --context {e.context} get pods", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {
        "login": cmd_login,
        "token": cmd_token,
        "sockets": cmd_sockets,
        "kubeconfig": cmd_kubeconfig,
        "whoami": cmd_whoami,
        "logout": cmd_logout,
    }
    try:
        return handlers[args.action](args)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): connector.cli ends quietly
    except api.NotLoggedIn as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except api.ApiRefused as exc:
        print(f"error: the connector refused the request (HTTP {exc.status}): {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (SsoError, ConnectionError, PermissionError, LookupError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
