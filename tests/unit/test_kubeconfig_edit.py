"""The kubeconfig merge is pure and conservative: it adds or replaces only its own entries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from connector.client.kubeconfig_edit import PLUGIN_SCRIPT, SocketEntry, apply_entries, exec_user, remove_entries

ENTRY = SocketEntry(
    "connector-prod",
    "connector-prod@c:8443",
    "connector-default@c:8443",
    "https://c:8443/sockets/prod",
    b"PEM",
    ("client", "token"),
)


def test_apply_to_an_empty_config_creates_a_complete_kubeconfig():
    config = apply_entries({}, [ENTRY], set_current="connector-prod")
    assert config["apiVersion"] == "v1" and config["kind"] == "Config"
    assert config["clusters"] == [
        {
            "name": "connector-prod@c:8443",
            "cluster": {"server": "https://c:8443/sockets/prod", "certificate-authority-data": "UEVN"},
        }
    ]
    assert config["contexts"][0]["context"] == {"cluster": "connector-prod@c:8443", "user": "connector-default@c:8443"}
    assert config["users"][0]["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert config["current-context"] == "connector-prod"


def test_the_plugin_is_the_console_script_on_path_or_else_this_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As found: the kubeconfig ran the absolute path of the repository's virtualenv's python, whatever
    was installed; a `pipx install` puts the console script on PATH, and the kubeconfig names it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert exec_user(("client", "token"))["exec"] | {"apiVersion": None} == {
        "apiVersion": None,
        "command": sys.executable,
        "args": ["-m", "connector", "client", "token"],
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
    }
    script = tmp_path / PLUGIN_SCRIPT
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    plugin = exec_user(("client", "token"))["exec"]
    assert (plugin["command"], plugin["args"]) == (PLUGIN_SCRIPT, ["client", "token"])


def test_apply_twice_is_idempotent_and_replaces_in_place():
    once = apply_entries({}, [ENTRY], set_current=None)
    twice = apply_entries(once, [ENTRY], set_current=None)
    assert len(twice["clusters"]) == len(twice["users"]) == len(twice["contexts"]) == 1


@pytest.mark.parametrize("broken", [{"clusters": None}, {"clusters": "oops"}, {"users": {}}])
def test_apply_repairs_non_list_sections(broken):
    assert apply_entries(dict(broken), [ENTRY], set_current=None)["clusters"][0]["name"] == "connector-prod@c:8443"


def test_remove_keeps_users_still_used_by_other_contexts():
    other = SocketEntry("connector-dev", "connector-dev@c:8443", ENTRY.user, "https://c:8443/sockets/dev", None, ())
    config = apply_entries({"current-context": "connector-prod"}, [ENTRY, other], set_current=None)
    config, removed = remove_entries(config, ["connector-prod"])
    assert removed == ["connector-prod"]
    assert [c["name"] for c in config["clusters"]] == ["connector-dev@c:8443"]
    assert [u["name"] for u in config["users"]] == [ENTRY.user]  # still used by connector-dev
    assert config["current-context"] == ""
