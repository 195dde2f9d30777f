"""The real Pulumi engine for the tests: the `pulumi` CLI and `pulumi-resource-kubernetes`, built from Go modules.

Each program has a wrapper module of ours in `sandbox/pulumi_engine/gomod/` that requires the
published module at an exact version (go.sum committed); `go build` builds the program's main
package by path. No Pulumi source lives in this repository.

- `cli`: `github.com/pulumi/pulumi/pkg/v3/cmd/pulumi`, the version stamped as Pulumi's release does.
- `kubernetes`: `github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes`.
  Its main package embeds `schema-embed.json` and `terraform-mapping-embed.json`, which the
  provider's release process generates (`go generate`, running the module's own `generate.go`)
  and which the module zip therefore lacks. The build runs that generator on a copy of the module
  (outside the work tree) and points the wrapper at the copy with a `replace`.
- `pulumi-resource-pulumi-python`: the plugin the engine starts for Python dynamic resources
  (infra's aws-auth applier). A two-line launcher of ours running `python -m pulumi.dynamic` with
  `$PULUMI_PYTHON_CMD` (Pulumi's own variable for the program's Python), default `python3`.

No `pulumi-language-python` is built (its Go module is not served by the proxy): the tests run
the program as an Automation API *inline* program, whose language runtime is served by the Python
process itself (`--client`), so the CLI never starts a language host.

The result lives in `$XDG_CACHE_HOME/eks-access-connector/pulumi/<cli version>-<digest>/bin/`
(the digest covers both wrappers and the launcher), built under a lock and renamed into place when
complete, like the control plane's binaries (sandbox.controlplane.binaries, whose helpers this
reuses). Put that directory first on PATH: the engine then uses these plugins as "ambient" ones,
whatever version the Python SDK asks for, and with PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION
set it never tries to download one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sandbox.controlplane.binaries import GoBuildFailed, cache_base, can_build, go_build

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"
CLI_MODULE = "github.com/pulumi/pulumi/pkg/v3"
CLI_PACKAGE = f"{CLI_MODULE}/cmd/pulumi"
CLI_VERSION_VARIABLE = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"
KUBERNETES_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
KUBERNETES_MAIN = "cmd/pulumi-resource-kubernetes"
KUBERNETES_VERSION_VARIABLE = f"{KUBERNETES_MODULE}/pkg/version.Version"
PYTHON_PROVIDER = "pulumi-resource-pulumi-python"
PYTHON_PROVIDER_LAUNCHER = '#!/bin/sh\nexec "${PULUMI_PYTHON_CMD:-python3}" -m pulumi.dynamic "$@"\n'
PROGRAMS = ("pulumi", "pulumi-resource-kubernetes", PYTHON_PROVIDER)
GO_COMMAND_TIMEOUT_SECONDS = 1800.0


class EngineUnavailable(Exception):
    """The engine's binaries are neither cached nor buildable; the message says why."""


@dataclass(frozen=True)
class Engine:
    bin_dir: Path  # put first on PATH
    cli_version: str  # e.g. v3.274.0
    kubernetes_version: str  # the provider module's version, e.g. v4.0.0-20260115033456-f47bc2d6f199
    source: str  # "cache" or "build"

    @property
    def pulumi(self) -> Path:
        return self.bin_dir / "pulumi"

    @property
    def root(self) -> Path:
        """What the Automation API's PulumiCommand(root=...) takes: the directory holding bin/pulumi."""
        return self.bin_dir.parent


def _required_version(wrapper: str, module: str) -> str:
    path = GOMOD_DIR / wrapper / "go.mod"
    found = re.search(rf"^\s*{re.escape(module)} (v\S+)", path.read_text(), re.MULTILINE)
    if found is None:
        raise EngineUnavailable(f"{path} requires no {module}")
    return found.group(1)


def _digest() -> str:
    h = hashlib.sha256()
    for wrapper in ("cli", "kubernetes"):
        for name in ("go.mod", "go.sum"):
            h.update((GOMOD_DIR / wrapper / name).read_bytes())
    h.update(PYTHON_PROVIDER_LAUNCHER.encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return cache_base() / "pulumi"


def _cached() -> Path:
    return cache_root() / f"{_required_version('cli', CLI_MODULE)}-{_digest()}"


def _engine(directory: Path, source: str) -> Engine:
    return Engine(
        directory / "bin",
        _required_version("cli", CLI_MODULE),
        _required_version("kubernetes", KUBERNETES_MODULE),
        source,
    )


def _complete(directory: Path) -> bool:
    return all((directory / "bin" / name).is_file() for name in PROGRAMS)


def find() -> Engine | None:
    """The engine if it is built already (no build)."""
    directory = _cached()
    return _engine(directory, "cache") if _complete(directory) else None


def ensure(*, out: TextIO = sys.stderr) -> Engine:
    """The engine, building it when needed; raises EngineUnavailable."""
    found = find()
    if found is not None:
        return found
    if not can_build():
        raise EngineUnavailable("no Pulumi engine: `go` is not on PATH and none is cached")
    directory = _cached()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / "engine.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it: wait, then reuse its result
        if not _complete(directory):
            _build(directory, out)
    return _engine(directory, "build")


def _build(directory: Path, out: TextIO) -> None:
    started = time.monotonic()
    engine = _engine(directory, "build")
    print(
        f"pulumi engine: building pulumi {engine.cli_version} and pulumi-resource-kubernetes "
        f"{engine.kubernetes_version} from Go modules (the first build takes many minutes; later runs reuse "
        f"{directory.parent})",
        file=out,
        flush=True,
    )
    staging = Path(tempfile.mkdtemp(prefix=".engine-", dir=directory.parent))
    try:
        bin_dir = staging / "bin"
        bin_dir.mkdir()
        try:
            go_build(
                GOMOD_DIR / "cli",
                CLI_PACKAGE,
                bin_dir / "pulumi",
                ldflags=[f"-X {CLI_VERSION_VARIABLE}={engine.cli_version}"],
                label="pulumi engine: pulumi",
                out=out,
                started=started,
            )
            _build_kubernetes_provider(staging, engine.kubernetes_version, bin_dir, out, started)
        except GoBuildFailed as exc:
            raise EngineUnavailable(f"building the Pulumi engine failed {exc}") from None
        launcher = bin_dir / PYTHON_PROVIDER
        launcher.write_text(PYTHON_PROVIDER_LAUNCHER)
        launcher.chmod(0o755)
        shutil.rmtree(staging / "src")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        for stale in directory.parent.glob("v*-*"):
            if stale != directory and stale.is_dir():  # built from an earlier wrapper: never used again
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"pulumi engine: built in {time.monotonic() - started:.0f} s", file=out, flush=True)


def _go(args: list[str], cwd: Path, **env: str) -> str:
    """A short `go` command (download, mod edit); its stdout, or EngineUnavailable with its stderr."""
    environment = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "GOWORK": "off", **env}
    done = subprocess.run(["go", *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=GO_COMMAND_TIMEOUT_SECONDS, check=False)  # fmt: skip
    if done.returncode != 0:
        raise EngineUnavailable(f"`go {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _build_kubernetes_provider(staging: Path, version: str, bin_dir: Path, out: TextIO, started: float) -> None:
    """The provider from a copy of its module with the embeds its generator writes (see the module doc)."""
    wrapper = GOMOD_DIR / "kubernetes"
    # Downloaded through the wrapper, so the zip is checked against the committed go.sum.
    module_dir = Path(json.loads(_go(["mod", "download", "-json", KUBERNETES_MODULE], wrapper))["Dir"])
    source = staging / "src"
    copy = source / "provider"
    shutil.copytree(module_dir, copy)
    for path in [copy, *copy.rglob("*")]:  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    print("pulumi engine: generating the Kubernetes provider's embedded schema", file=out, flush=True)
    generator = source / "generate"
    _go(["build", "-o", str(generator), str(module_dir / KUBERNETES_MAIN / "generate.go")], wrapper)
    environment = {**os.environ, "VERSION": version.removeprefix("v")}
    generated = subprocess.run([str(generator)], cwd=copy / KUBERNETES_MAIN, env=environment,
                               capture_output=True, text=True, check=False)  # fmt: skip
    if generated.returncode != 0:
        raise EngineUnavailable(f"the Kubernetes provider's generate.go failed: {generated.stderr.strip()}")
    build_module = source / "wrapper"
    build_module.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy(wrapper / name, build_module / name)
    _go(["mod", "edit", f"-replace={KUBERNETES_MODULE}={copy}"], build_module)
    go_build(
        build_module,
        f"{KUBERNETES_MODULE}/{KUBERNETES_MAIN}",
        bin_dir / "pulumi-resource-kubernetes",
        ldflags=[f"-X {KUBERNETES_VERSION_VARIABLE}={version.removeprefix('v')}"],
        label="pulumi engine: pulumi-resource-kubernetes",
        out=out,
        started=started,
    )
