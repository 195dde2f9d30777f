"""`python -m connector` lists its subcommands, and each one explains itself with --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from connector.cli import SUBCOMMANDS, main


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert f"  {command.name}" in out and command.summary in out


def test_no_arguments_is_a_usage_error(capsys):
    assert main([]) == 2


def test_unknown_subcommand(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [c.name for c in SUBCOMMANDS])
def test_each_subcommand_has_help(command):
    proc = subprocess.run(
        [sys.executable, "-m", "connector", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m connector {command}")
