"""sandbox.controlplane.binaries: where kube-apiserver and etcd come from (KUBEBUILDER_ASSETS, the
cache, a build), with a stand-in `go` on PATH so that no test here needs Go: what the build is
asked for, the cache reused, a failed build reported with its last lines, no `go` said plainly."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from sandbox.controlplane import binaries

FAKE_GO = """#!/bin/sh
# Stands in for `go build -o TARGET ... PACKAGE`: records the call, prints package lines like -v,
# and writes a TARGET that answers --version like the binary it stands for.
echo "$*" >> "$GO_CALLS"
if [ -n "$GO_FAIL" ]; then echo "k8s.io/kubernetes/pkg/a"; echo "$GO_FAIL" >&2; exit 2; fi
while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then out="$2"; fi; shift; done
echo "k8s.io/kubernetes/pkg/a"; echo "k8s.io/kubernetes/pkg/b"
printf '#!/bin/sh\\necho Kubernetes %s\\n' "$GO_VERSION" > "$out"
chmod +x "$out"
"""


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    calls = tmp_path / "go-calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("GO_CALLS", str(calls))
    monkeypatch.setenv("GO_VERSION", "v1.33.13")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("GO_FAIL", raising=False)
    return calls


def test_a_build_stamps_the_version_and_a_second_call_reuses_the_cache(fake_go: Path) -> None:
    progress = io.StringIO()
    built = binaries.ensure("1.33", out=progress)
    assert built.source == "build"
    assert binaries.apiserver_minor(built.kube_apiserver) == "1.33"
    assert built.etcd is not None and built.etcd.is_file()
    calls = fake_go.read_text().splitlines()
    assert len(calls) == 2  # kube-apiserver, then etcd
    assert "k8s.io/component-base/version.gitVersion=v1.33.13" in calls[0]
    assert calls[0].endswith("k8s.io/kubernetes/cmd/kube-apiserver")
    assert calls[1].endswith("go.etcd.io/etcd/server/v3")
    assert "Kubernetes 1.33 built in" in progress.getvalue()

    again = binaries.ensure("1.33", out=io.StringIO())
    assert (again.source, again.kube_apiserver) == ("cache", built.kube_apiserver)
    assert len(fake_go.read_text().splitlines()) == 2  # nothing rebuilt


def test_1_29_is_built_without_the_in_tree_cloud_providers_and_without_etcd(fake_go: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GO_VERSION", "v1.29.6")
    built = binaries.ensure("1.29", out=io.StringIO())
    assert built.etcd is None  # every cluster shares the etcd built with 1.33
    (call,) = fake_go.read_text().splitlines()
    assert "-tags=providerless" in call and "gitVersion=v1.29.6" in call


def test_a_failed_build_says_so_with_its_last_lines_and_leaves_no_half_cache(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GO_FAIL", "verifying module: checksum mismatch")
    with pytest.raises(binaries.ControlPlaneUnavailable) as failed:
        binaries.ensure("1.33", out=io.StringIO())
    assert "building kube-apiserver 1.33 failed (go build exited 2)" in str(failed.value)
    assert "verifying module: checksum mismatch" in str(failed.value)
    assert binaries.find("1.33") is None
    monkeypatch.delenv("GO_FAIL")
    assert binaries.ensure("1.33", out=io.StringIO()).source == "build"


def test_kubebuilder_assets_of_the_wanted_minor_are_used_as_they_are(
    fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("kube-apiserver", "etcd"):
        (assets / name).write_text("#!/bin/sh\necho Kubernetes v1.33.2\n")
        (assets / name).chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = binaries.ensure("1.33", out=io.StringIO())
    assert (found.source, found.kube_apiserver, found.etcd) == (
        "KUBEBUILDER_ASSETS", assets / "kube-apiserver", assets / "etcd")
    assert not fake_go.exists()  # nothing was built
    # Assets of another minor do not stand in for 1.29: that one is built.
    monkeypatch.setenv("GO_VERSION", "v1.29.6")
    assert binaries.ensure("1.29", out=io.StringIO()).source == "build"


def test_without_go_and_nothing_cached_the_reason_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(binaries.ControlPlaneUnavailable) as missing:
        binaries.ensure("1.29")
    assert str(missing.value) == (
        "no kube-apiserver 1.29: `go` is not on PATH, none is cached, and KUBEBUILDER_ASSETS holds none of that minor")


def test_an_unknown_minor_is_refused() -> None:
    with pytest.raises(binaries.ControlPlaneUnavailable, match=r"no wrapper module for Kubernetes 1\.30"):
        binaries.ensure("1.30")
