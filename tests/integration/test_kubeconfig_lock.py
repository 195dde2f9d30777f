"""Our kubeconfig writes and kubectl's exclude each other through client-go's `<file>.lock`, and
neither leaves the lock behind: found when `kubectl config use-context` failed with
"open .../config.lock: file exists" after `client kubeconfig set`."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from connector.client.kubeconfig_edit import SocketEntry, apply_entries, edit_kubeconfig
from connector.client.kubeconfig_lock import KubeconfigLocked, kubeconfig_lock, lock_path

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl on PATH")

ENTRY = SocketEntry(
    "connector-prod", "connector-prod@c:8443", "connector-default@c:8443", "https://c:8443/sockets/prod", None, ()
)


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(kubeconfig.parent), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=60)


def _write_ours(kubeconfig: Path) -> None:
    edit_kubeconfig(kubeconfig, lambda config: apply_entries(config, [ENTRY], set_current=None))


def test_kubectl_config_works_after_our_write(tmp_path: Path):
    kubeconfig = tmp_path / ".kube" / "config"
    _write_ours(kubeconfig)
    assert not lock_path(kubeconfig).exists()
    used = _kubectl(kubeconfig, "config", "use-context", "connector-prod")
    assert used.returncode == 0, used.stderr
    assert yaml.safe_load(kubeconfig.read_text())["current-context"] == "connector-prod"
    renamed = _kubectl(kubeconfig, "config", "set-context", "connector-prod", "--namespace", "team-a")
    assert renamed.returncode == 0, renamed.stderr


def test_kubectl_refuses_to_write_while_we_hold_the_lock(tmp_path: Path):
    kubeconfig = tmp_path / ".kube" / "config"
    _write_ours(kubeconfig)

    def kubectl_meanwhile(config: dict) -> subprocess.CompletedProcess:
        return _kubectl(kubeconfig, "config", "use-context", "connector-prod")

    meanwhile = edit_kubeconfig(kubeconfig, kubectl_meanwhile)
    assert meanwhile.returncode != 0 and "config.lock: file exists" in meanwhile.stderr
    after = _kubectl(kubeconfig, "config", "use-context", "connector-prod")
    assert after.returncode == 0, after.stderr


def test_we_wait_for_a_lock_held_the_way_kubectl_holds_it_then_write(tmp_path: Path):
    kubeconfig = tmp_path / ".kube" / "config"
    kubeconfig.parent.mkdir()
    lock = lock_path(kubeconfig)
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL, 0))  # exactly clientcmd.lockFile
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.5)
        released.set()
        lock.unlink()

    releaser = threading.Thread(target=release_later)
    releaser.start()

    def change(config: dict) -> bool:
        apply_entries(config, [ENTRY], set_current=None)
        return released.is_set()

    wrote_after_release = edit_kubeconfig(kubeconfig, change)
    releaser.join()
    assert wrote_after_release
    assert yaml.safe_load(kubeconfig.read_text())["contexts"][0]["name"] == "connector-prod"
    assert not lock.exists()


def test_a_stale_lock_is_reported_with_the_file_to_remove_and_left_alone(tmp_path: Path):
    kubeconfig = tmp_path / "config"
    lock = lock_path(kubeconfig)
    lock.touch()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.raises(KubeconfigLocked) as refused, kubeconfig_lock(kubeconfig, wait=0.2):
        pytest.fail("the lock was taken although the file exists")
    assert f"rm {lock}" in str(refused.value)
    assert lock.exists()


def test_the_lock_is_removed_when_the_change_fails(tmp_path: Path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="not a kubeconfig"):
        _write_ours(kubeconfig)
    assert not lock_path(kubeconfig).exists()
