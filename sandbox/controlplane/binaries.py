"""The real control plane's programs: kube-apiserver 1.29 and 1.33, and etcd, built from Go modules.

Each minor has a wrapper module of ours in `sandbox/controlplane/gomod/k8s-1.XX`: `require
k8s.io/kubernetes`, `replace` of every `k8s.io/*` staging module with its published release (the
documented way to consume k8s.io/kubernetes), and the programs as `tool` lines. No Kubernetes
source lives in this repository; `go build` fetches the published modules.

Where binaries come from, first match wins:
1. `KUBEBUILDER_ASSETS` (the directory envtest users have: `kube-apiserver`, `etcd`), when its
   kube-apiserver is of the wanted minor;
2. the cache, `$XDG_CACHE_HOME/eks-access-connector/controlplane/` (default `~/.cache/...`), one
   directory per wrapper module named after a digest of its go.mod and go.sum, so editing a
   wrapper rebuilds and an unchanged one is reused in milliseconds;
3. a build with `go`, when it is on PATH: progress on stderr every few seconds, the total time at
   the end, an exclusive lock so that two test runs never build the same thing at once, and the
   result renamed into place only when complete.

This is a small driver around `go build` rather than a build tool's plugin because what it adds
(the cache key, the lock, progress for a minutes-long first build) is specific to this harness.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"
MINORS = ("1.29", "1.33")
# The etcd every cluster of a sandbox shares (one process, one key prefix per cluster).
ETCD_MINOR = "1.33"
PROGRESS_SECONDS = 15.0
BUILD_TIMEOUT_SECONDS = 3600.0


class ControlPlaneUnavailable(Exception):
    """No binaries for a wanted minor: neither supplied, cached, nor buildable. The message says why."""


@dataclass(frozen=True)
class Binaries:
    minor: str
    kube_apiserver: Path
    etcd: Path | None  # None when this minor's wrapper builds no etcd (the shared one is used)
    source: str  # "KUBEBUILDER_ASSETS", "cache" or "build"


@dataclass(frozen=True)
class _Wrapper:
    minor: str
    directory: Path
    programs: dict[str, str]  # binary name -> Go package
    tags: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            h.update((self.directory / name).read_bytes())
        h.update(self.tags.encode())
        h.update(" ".join(self.ldflags).encode())
        return h.hexdigest()[:16]

    @property
    def version(self) -> str:
        """The k8s.io/kubernetes release the wrapper requires, e.g. `v1.33.13`."""
        found = re.search(r"^(?:require)?\s*k8s\.io/kubernetes (v\d+\.\d+\.\d+)\b",
                          (self.directory / "go.mod").read_text(), re.MULTILINE)
        if found:
            return found.group(1)
        raise ControlPlaneUnavailable(f"{self.directory / 'go.mod'} requires no k8s.io/kubernetes release")

    @property
    def ldflags(self) -> list[str]:
        """What Kubernetes' own build stamps into its binaries (hack/lib/version.sh): without it,
        /version says v0.0.0-master and version-sensitive clients (the kubectl dispatcher) misjudge."""
        version = self.version
        major, minor = version.lstrip("v").split(".")[:2]
        stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean",
                  "gitCommit": "", "buildDate": "1970-01-01T00:00:00Z"}
        return [f"-X {package}.{name}={value}" for package in ("k8s.io/component-base/version",
                                                               "k8s.io/client-go/pkg/version")
                for name, value in stamps.items()]


def _wrapper(minor: str) -> _Wrapper:
    if minor not in MINORS:
        raise ControlPlaneUnavailable(f"no wrapper module for Kubernetes {minor}; known: {', '.join(MINORS)}")
    programs = {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver"}
    if minor == ETCD_MINOR:
        programs["etcd"] = "go.etcd.io/etcd/server/v3"
    # 1.29's in-tree cloud providers live in a module release that cannot be fetched; they are not
    # needed by a control plane without a cloud, and providerless is the build tag that drops them.
    tags = "providerless" if minor == "1.29" else ""
    return _Wrapper(minor, GOMOD_DIR / f"k8s-{minor}", programs, tags)


def cache_base() -> Path:
    """`$XDG_CACHE_HOME/eks-access-connector` (default `~/.cache/...`): where built Go programs are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eks-access-connector"


def cache_root() -> Path:
    return cache_base() / "controlplane"


def apiserver_minor(binary: Path) -> str | None:
    """`1.33` for a kube-apiserver that says `Kubernetes v1.33.13`, None if it does not run."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = out.strip().rpartition(" ")[2].lstrip("v")
    parts = version.split(".")
    return f"{parts[0]}.{parts[1]}" if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else None


def _from_assets(minor: str) -> Binaries | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    apiserver, etcd = Path(assets) / "kube-apiserver", Path(assets) / "etcd"
    if not (apiserver.is_file() and os.access(apiserver, os.X_OK)) or apiserver_minor(apiserver) != minor:
        return None
    return Binaries(minor, apiserver, etcd if etcd.is_file() else None, "KUBEBUILDER_ASSETS")


def _cached(wrapper: _Wrapper) -> Path:
    return cache_root() / f"k8s-{wrapper.minor}-{wrapper.digest}"


def _complete(directory: Path, wrapper: _Wrapper) -> bool:
    return all((directory / name).is_file() for name in wrapper.programs)


def _binaries(directory: Path, wrapper: _Wrapper, source: str) -> Binaries:
    etcd = directory / "etcd"
    return Binaries(wrapper.minor, directory / "kube-apiserver", etcd if "etcd" in wrapper.programs else None, source)


def find(minor: str) -> Binaries | None:
    """The binaries of `minor` if they can be had without building."""
    found = _from_assets(minor)
    if found is not None:
        return found
    wrapper = _wrapper(minor)
    directory = _cached(wrapper)
    return _binaries(directory, wrapper, "cache") if _complete(directory, wrapper) else None


def can_build() -> bool:
    return shutil.which("go") is not None


def ensure(minor: str, *, out: TextIO = sys.stderr) -> Binaries:
    """The binaries of `minor`, building them when needed; raises ControlPlaneUnavailable."""
    found = find(minor)
    if found is not None:
        return found
    if not can_build():
        raise ControlPlaneUnavailable(
            f"no kube-apiserver {minor}: `go` is not on PATH, none is cached, and KUBEBUILDER_ASSETS "
            "holds none of that minor"
        )
    wrapper = _wrapper(minor)
    directory = _cached(wrapper)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f"k8s-{minor}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it: wait, then reuse its result
        if not _complete(directory, wrapper):
            _build(wrapper, directory, out)
    return _binaries(directory, wrapper, "build")


def _build(wrapper: _Wrapper, directory: Path, out: TextIO) -> None:
    started = time.monotonic()
    names = ", ".join(wrapper.programs)
    print(f"control plane: building {names} for Kubernetes {wrapper.minor} from Go modules "
          f"(the first build takes minutes; later runs reuse {directory.parent})", file=out, flush=True)
    staging = Path(tempfile.mkdtemp(prefix=f".k8s-{wrapper.minor}-", dir=directory.parent))
    try:
        for name, package in wrapper.programs.items():
            _go_build(wrapper, package, staging / name, out, started)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        for stale in directory.parent.glob(f"k8s-{wrapper.minor}-*"):
            if stale != directory and stale.is_dir():  # built from an earlier wrapper: never used again
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"control plane: Kubernetes {wrapper.minor} built in {time.monotonic() - started:.0f} s",
          file=out, flush=True)


def _go_build(wrapper: _Wrapper, package: str, target: Path, out: TextIO, started: float) -> None:
    try:
        go_build(wrapper.directory, package, target, ldflags=wrapper.ldflags, tags=wrapper.tags,
                 label=f"control plane: {target.name} {wrapper.minor}", out=out, started=started)
    except GoBuildFailed as exc:
        raise ControlPlaneUnavailable(f"building {target.name} {wrapper.minor} failed {exc}") from None


class GoBuildFailed(Exception):
    """`go build` exited non-zero; the message is `(go build exited N):` and its last lines."""


def go_build(
    module: Path,
    package: str,
    target: Path,
    *,
    ldflags: list[str],
    label: str,
    out: TextIO,
    started: float,
    tags: str = "",
) -> None:
    """`go build` of `package` in the wrapper module `module` into `target`, reproducibly (-trimpath,
    no VCS stamp, go.mod never edited), printing `label: N packages compiled, T s` every few seconds."""
    command = ["go", "build", "-v", "-trimpath", f"-ldflags=-s -w {' '.join(ldflags)}", "-o", str(target)]
    if tags:
        command.append(f"-tags={tags}")
    command.append(package)
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "GOWORK": "off"}
    process = subprocess.Popen(command, cwd=module, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert process.stdout is not None
    tail: deque[str] = deque(maxlen=30)
    compiled = 0
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_SECONDS):
            print(f"{label}: {compiled} packages compiled, {time.monotonic() - started:.0f} s", file=out, flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            compiled += 1
        code = process.wait(timeout=BUILD_TIMEOUT_SECONDS)
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
    if code != 0:
        last = "\n".join(tail)
        raise GoBuildFailed(f"(go build exited {code}):\n{last}")
