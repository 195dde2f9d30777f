"""The image gets the console's session player the way `make console-player` makes it: `npm ci` on
the same lock file, the same bundle files copied into the served static dir, and never a local copy.
(No Docker engine runs the tests; this reads the Dockerfile, the Makefile and .dockerignore.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from connector.console.render import PLAYER_SCRIPT, STATIC_DIR

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str, list[str]]]:
    """(stage, instruction, arguments) of each Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    found, stage = [], ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        args = shlex.split(rest)
        if word == "FROM":
            stage = args[2] if len(args) == 3 and args[1].upper() == "AS" else "final"
        found.append((stage, word, args))
    return found


def make_variables() -> dict[str, str]:
    values = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Z_]+) := (\S+)$", line)
        if match:
            values[match.group(1)] = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], match.group(2))
    return values


def test_the_player_stage_runs_npm_ci_on_the_lock_file_the_makefile_uses() -> None:
    player = [(word, args) for stage, word, args in instructions() if stage == "player"]
    player_dir = make_variables()["PLAYER_DIR"]
    assert ("COPY", [f"{player_dir}/package.json", f"{player_dir}/package-lock.json", "./"]) in player
    runs = [" ".join(args) for word, args in player if word == "RUN"]
    assert runs == ["npm ci --ignore-scripts --no-audit --no-fund"]
    makefile = (REPO / "Makefile").read_text()
    assert f"cd $(PLAYER_DIR) && {runs[0]}" in makefile


def test_the_image_copies_the_files_make_copies_into_the_served_static_dir() -> None:
    variables = make_variables()
    bundle = variables["PLAYER_BUNDLE"].removeprefix(variables["PLAYER_DIR"] + "/")
    copies = [args for stage, word, args in instructions() if stage == "build" and word == "COPY"]
    from_player = [args[1:] for args in copies if args[0] == "--from=player"]
    assert from_player == [[
        f"/player/{bundle}/asciinema-player.min.js", f"/player/{bundle}/asciinema-player.css",
        "/app/" + str(PLAYER_SCRIPT.parent.relative_to(REPO)) + "/",
    ]]  # fmt: skip
    assert "cp $(PLAYER_BUNDLE)/asciinema-player.min.js $(PLAYER_BUNDLE)/asciinema-player.css $(PLAYER_STATIC)/" in (
        REPO / "Makefile"
    ).read_text()
    assert variables["PLAYER_STATIC"] == str(STATIC_DIR.relative_to(REPO) / "player")
    # After `COPY connector/`, so the stage's bundle is what the image serves.
    assert copies.index(["connector/", "/app/connector/"]) < copies.index(["--from=player", *from_player[0]])


def test_a_locally_built_player_never_enters_the_image() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    variables = make_variables()
    assert variables["PLAYER_STATIC"] in ignored and variables["PLAYER_DIR"] + "/node_modules" in ignored
