"""A running emulated EKS API server for tests, and clients pointed at it (kubectl, aiohttp, Python)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sandbox.apiserver import EmulatedApiServer, bootstrap
from sandbox.apiserver.authn import UserInfo
from sandbox.apiserver.authz import Attributes, Authorizer
from sandbox.apiserver.store import Store

ADMIN_TOKEN = "test-admin-token"
RBAC = "rbac.authorization.k8s.io/v1"
BOB = UserInfo("bob", groups=("developers", "system:authenticated"))


def rbac_store() -> Store:
    """A new cluster's objects, plus RBAC for bob (group `developers`): get pods and exec in `dev`,
    get the `settings` ConfigMap there, and the `view` ClusterRole in `default`."""
    store = Store()
    for obj in bootstrap.initial_objects("v1.31.4"):
        store.apply(obj)
    store.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}})
    store.apply({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "exec", "namespace": "dev"},
                 "rules": [{"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get", "create"]},
                           {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"],
                            "verbs": ["get"]}]})
    store.apply({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "devs-exec", "namespace": "dev"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
                 "subjects": [{"kind": "Group", "name": "developers"}]})
    store.apply({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "view", "namespace": "default"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                 "subjects": [{"kind": "User", "name": "bob"}]})
    return store


def can(store: Store, user: UserInfo, verb: str, resource: str, namespace: str = "", *, sub: str = "",
        name: str = "", group: str = "") -> bool:
    """What the emulated API server's authorizer decides for a resource request."""
    attrs = Attributes(user, verb, True, namespace=namespace, api_group=group, resource=resource, subresource=sub,
                       name=name)
    return Authorizer(store).authorize(attrs).allowed


@asynccontextmanager
async def running_apiserver(tmp_path: Path, **kwargs: Any) -> AsyncIterator[EmulatedApiServer]:
    kwargs.setdefault("bootstrap_token", ADMIN_TOKEN)
    server = EmulatedApiServer(kwargs.pop("cluster_name", "test"), scratch_dir=tmp_path / "apiserver", **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def ssl_context(server: EmulatedApiServer) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=server.ca_pem.decode())


@asynccontextmanager
async def http_client(
    server: EmulatedApiServer, token: str | None = ADMIN_TOKEN
) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with the server's base URL and (by default) the admin token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context(server))
    async with aiohttp.ClientSession(server.url, headers=headers, connector=connector) as session:
        yield session


def kubectl_binary(version: str) -> str | None:
    """The real kubectl of a minor version (`1.29`), found beside the `kubectl` dispatcher."""
    dispatcher = shutil.which("kubectl")
    if dispatcher is None:
        return None
    candidate = Path(os.path.realpath(dispatcher)).parent / f"kubectl.{version}"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


class Kubectl:
    """Runs one kubectl binary against the server with the admin token, without blocking the loop
    (the server answers on the same loop)."""

    def __init__(self, binary: str, server: EmulatedApiServer, home: Path, token: str = ADMIN_TOKEN) -> None:
        self.binary = binary
        self.server = server
        self.home = home  # kubectl caches discovery under $HOME/.kube
        self.token = token

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--server", self.server.url, "--certificate-authority", str(self.server.ca_path),
                "--token", self.token, *args]

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", ""), **extra}

    async def run(self, *args: str, stdin: bytes | None = None, **env: str) -> Result:
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env(**env))
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, stdin: bytes | None = None, **env: str) -> str:
        result = await self.run(*args, stdin=stdin, **env)
        assert result.code == 0, f"kubectl {' '.join(args)} failed ({result.code}): {result.stderr}"
        return result.stdout

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        """A long-running kubectl (`logs -f`, `get -w`) whose output the test reads line by line."""
        return await asyncio.create_subprocess_exec(
            *self.argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env())


async def read_lines(stream: asyncio.StreamReader, count: int) -> list[str]:
    """The next `count` lines of `stream`."""
    lines = [await asyncio.wait_for(stream.readline(), 30) for _ in range(count)]
    assert all(lines), f"the stream ended early: {lines}"
    return [line.decode().rstrip("\n") for line in lines]


async def read_lines_until(stream: asyncio.StreamReader, predicate: Any) -> list[str]:
    """Lines from `stream` up to and including the first for which `predicate(line)` holds."""
    lines: list[str] = []

    async def collect() -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"stream ended before the expected line; got {lines}")
            lines.append(raw.decode().rstrip("\n"))
            if predicate(lines[-1]):
                return

    await asyncio.wait_for(collect(), 30)
    return lines


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await process.wait()
