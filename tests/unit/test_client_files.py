"""connector.client.files: a user's file is replaced whole, with the asked permissions, or left as it was."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from connector.client.files import replace_file


def test_writes_a_new_file_with_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    replace_file(path, '{"a": 1}', mode=0o600)
    assert path.read_text() == '{"a": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("old")
    replace_file(path, "new", mode=0o640)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        replace_file(path, "\udc80 cannot be encoded", mode=0o600)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]
