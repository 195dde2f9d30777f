"""The user's side end to end against a real identity provider and a real HTTP endpoint serving the
connector's /v1 API: `client login` (browser and device flows, driven over HTTP as a browser would),
the exec plugin with refresh and revocation, `kubeconfig set/get/unset` merging into a real file.
The same commands against the real connector and kubectl are in tests/e2e."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from aiohttp import web

from connector.authn.authenticator import Authenticator, login_config
from connector.authn.config import AuthenticationConfig
from connector.authn.errors import AuthenticationError
from connector.client.kubeconfig_edit import plugin_command
from sandbox.logins import complete_browser_login
from sandbox.oidc import OidcIssuer
from tests.support.oidc import DEMO_USERS, LoopThread

REPO = Path(__file__).resolve().parents[2]


class Harness:
    """An OIDC issuer and a stand-in for the connector's /v1 endpoints, both on 127.0.0.1."""

    def __init__(self, id_token_lifetime: int = 3600):
        self.thread = LoopThread()
        self.issuer = OidcIssuer(users=dict(DEMO_USERS), id_token_lifetime=id_token_lifetime)
        self.thread.run(self.issuer.start())
        cfg = AuthenticationConfig.model_validate(
            {"oidc": [{"issuer": self.issuer.url, "client_id": "eks-access-connector"}]}
        )
        self.auth = Authenticator.from_config(cfg)

        async def login_cfg(_: web.Request) -> web.Response:
            return web.json_response(login_config(cfg))

        async def sockets(request: web.Request) -> web.Response:
            try:
                who = await self.auth.authenticate(request)
            except AuthenticationError as exc:
                return web.json_response({"kind": "Status", "message": exc.public_message}, status=401)
            names = ["eks-us-east-1-prod", "eks-eu-west-1-staging"] if "platform-admins" in who.groups else ["dev"]
            return web.json_response({"sockets": [{"name": n, "type": "aws_eks", "tags": {"env": n}} for n in names]})

        async def start() -> str:
            app = web.Application()
            app.router.add_get("/v1/login-config", login_cfg)
            app.router.add_get("/v1/sockets", sockets)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

        self.connector = self.thread.run(start())

    def close(self) -> None:
        self.thread.run(self.auth.close())
        self.thread.run(self.runner.cleanup())
        self.thread.run(self.issuer.stop())
        self.thread.close()


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def _cli(*args: str, cache: Path, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "client", *args, "--cache-dir", str(cache)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def _login(h: Harness, cache: Path, user: str = "alice", profile: str = "default") -> None:
    proc = _cli("login", "--connector", h.connector, "--no-browser", "--profile", profile, cache=cache)
    url = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.strip().startswith("http"):
            url = line.strip()
            break
    assert url is not None, "login printed no URL"
    complete_browser_login(url, user)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Logged in to" in err


def _token(h: Harness, cache: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "connector", "client", "token", "--connector", h.connector, "--cache-dir", str(cache)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_browser_login_then_exec_plugin(harness: Harness, tmp_path: Path):
    cache = tmp_path / "cache"
    _login(harness, cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600

    v1 = _token(harness, cache)
    assert v1.returncode == 0, v1.stderr
    cred = json.loads(v1.stdout)
    assert cred["apiVersion"] == "client.authentication.k8s.io/v1" and cred["kind"] == "ExecCredential"
    assert cred["status"]["expirationTimestamp"].endswith("Z")
    who = harness.thread.run(harness.auth.authenticate_token(cred["status"]["token"]))
    assert who.user == "alice@example.com" and who.groups == ("platform-admins",)

    beta = _token(
        harness,
        cache,
        {
            "KUBERNETES_EXEC_INFO": json.dumps(
                {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "kind": "ExecCredential",
                    "spec": {"interactive": False},
                }
            )
        },
    )
    assert json.loads(beta.stdout)["apiVersion"] == "client.authentication.k8s.io/v1beta1"


def test_device_login(harness: Harness, tmp_path: Path):
    cache = tmp_path / "cache"
    proc = _cli("login", "--connector", harness.connector, "--device", cache=cache)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "enter the code" not in line:
        line += proc.stderr.read()
    match = re.search(r"open (\S+) and enter the code (\S+)", line)
    assert match, line
    r = requests.post(f"{harness.issuer.url}/device", data={"user_code": match.group(2), "user": "bob"}, timeout=10)
    assert r.status_code == 200
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    cred = json.loads(_token(harness, cache).stdout)
    assert harness.thread.run(harness.auth.authenticate_token(cred["status"]["token"])).user == "bob@example.com"


def test_expired_token_is_refreshed_and_revocation_asks_for_login(harness: Harness, tmp_path: Path):
    cache = tmp_path / "cache"
    harness.issuer.id_token_lifetime = 30  # shorter than the refresh margin: every call refreshes
    _login(harness, cache)
    before = json.loads(next(cache.iterdir()).read_text())
    first = _token(harness, cache)
    assert first.returncode == 0, first.stderr
    after = json.loads(next(cache.iterdir()).read_text())
    assert after["refresh_token"] != before["refresh_token"]
    assert json.loads(first.stdout)["status"]["token"] == after["id_token"] != before["id_token"]

    harness.issuer.revoke_refresh_tokens("alice")
    refused = _token(harness, cache)
    assert refused.returncode == 1
    assert f"run `python -m connector client login --connector {harness.connector}`" in refused.stderr
    assert refused.stdout == ""


def test_token_without_login_says_what_to_run(harness: Harness, tmp_path: Path):
    result = _token(harness, tmp_path / "empty")
    assert result.returncode == 1
    assert "not logged in" in result.stderr and "client login" in result.stderr


def test_kubeconfig_set_merges_and_unset_removes_only_ours(harness: Harness, tmp_path: Path):
    cache = tmp_path / "cache"
    _login(harness, cache)
    kubeconfig = tmp_path / "config"
    unrelated = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "other",
        "clusters": [{"name": "other", "cluster": {"server": "https://other.example.com"}}],
        "users": [{"name": "other", "user": {"token": "keep-me"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
    }
    kubeconfig.write_text(yaml.safe_dump(unrelated))
    kubeconfig.chmod(0o640)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")

    common = ["--connector", harness.connector, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache)]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "client",
            "kubeconfig",
            "set",
            *common,
            "--ca-file",
            str(ca),
            "--set-current",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(kubeconfig.read_text())
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o640
    assert {c["name"] for c in config["contexts"]} == {
        "other",
        "connector-eks-us-east-1-prod",
        "connector-eks-eu-west-1-staging",
    }
    assert config["current-context"] == "connector-eks-us-east-1-prod"
    assert config["users"][0] == unrelated["users"][0]
    cluster = next(c for c in config["clusters"] if c["name"].startswith("connector-eks-us-east-1-prod@"))
    assert cluster["cluster"]["server"] == f"{harness.connector}/sockets/eks-us-east-1-prod"
    user = next(u for u in config["users"] if u["name"].startswith("connector-"))
    command, leading = plugin_command()  # this interpreter, unless the console script is on PATH
    assert user["user"]["exec"]["command"] == command
    assert user["user"]["exec"]["args"][: len(leading) + 3] == [*leading, "client", "token", "--connector"]

    denied = subprocess.run(
        [sys.executable, "-m", "connector", "client", "kubeconfig", "set", *common, "--socket", "secret-cluster"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1 and "you may not use socket(s) secret-cluster" in denied.stderr

    subprocess.run(
        [sys.executable, "-m", "connector", "client", "kubeconfig", "unset", *common],
        cwd=REPO,
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert yaml.safe_load(kubeconfig.read_text())["contexts"] == unrelated["contexts"]
    assert yaml.safe_load(kubeconfig.read_text())["clusters"] == unrelated["clusters"]


def _contexts_by_kubectl(home: Path) -> dict[str, tuple[str, str]]:
    """`kubectl config get-contexts` of the kubeconfig in `home`: context name -> (cluster, user)."""
    listed = subprocess.run(
        ["kubectl", "config", "get-contexts", "--no-headers"],
        capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "HOME": str(home), "KUBECONFIG": ""},
    )  # fmt: skip
    rows = [line.lstrip("* ").split() for line in listed.stdout.splitlines()]
    return {row[0]: (row[1], row[2]) for row in rows}


def test_two_profiles_keep_their_own_contexts_and_unset_removes_only_its_own(harness: Harness, tmp_path: Path):
    """Both logins may use socket `dev`: each gets its own context, cluster and user, and neither
    `set` nor `unset` of one profile touches the other's (they used to share `connector-dev`)."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    home.mkdir()
    _login(harness, cache, "bob", profile="dev-bob")
    _login(harness, cache, "carol", profile="nb-carol")
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": ""}

    def kubeconfig(action: str, profile: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "connector", "client", "kubeconfig", action, "--connector", harness.connector,
             "--cache-dir", str(cache), "--profile", profile, *extra],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    host = harness.connector.removeprefix("http://")
    assert kubeconfig("set", "dev-bob").returncode == 0
    assert kubeconfig("set", "nb-carol").returncode == 0
    bob = ("connector-dev-dev-bob", (f"connector-dev-dev-bob@{host}", f"connector-dev-bob@{host}"))
    carol = ("connector-dev-nb-carol", (f"connector-dev-nb-carol@{host}", f"connector-nb-carol@{host}"))
    assert _contexts_by_kubectl(home) == dict([bob, carol])

    # A template that names carol's context like bob's is refused, and the file is left as it was.
    before = (home / ".kube" / "config").read_text()
    clash = kubeconfig("set", "nb-carol", "--context-template", "connector-{socket}-dev-bob")
    assert clash.returncode == 1
    assert clash.stderr == (
        f"error: context connector-dev-dev-bob already exists for user connector-dev-bob@{host}, not "
        f"connector-nb-carol@{host}; nothing was written: "
        "choose other names with --context-template (e.g. with {profile})\n"
    )
    assert (home / ".kube" / "config").read_text() == before

    removed = kubeconfig("unset", "dev-bob")
    assert removed.returncode == 0
    assert removed.stderr == f"Removed 1 context(s) from {home}/.kube/config: connector-dev-dev-bob\n"
    assert _contexts_by_kubectl(home) == dict([carol])
    assert kubeconfig("unset", "nb-carol", "--socket", "dev").returncode == 0
    assert _contexts_by_kubectl(home) == {}


def test_sockets_listing(harness: Harness, tmp_path: Path):
    cache = tmp_path / "cache"
    _login(harness, cache, user="bob")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "client",
            "sockets",
            "--connector",
            harness.connector,
            "--cache-dir",
            str(cache),
            "--output",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [s["name"] for s in json.loads(out.stdout)] == ["dev"]


def test_login_refuses_half_given_issuer(harness: Harness, tmp_path: Path):
    proc = _cli("login", "--connector", harness.connector, "--issuer", harness.issuer.url, cache=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "both --issuer and --client-id" in err
