"""`pip install eks-access-connector[...]` installs exactly what the requirements files pin."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)$")


def pins(path: Path) -> dict[str, str]:
    """name (lower case) -> version of every `name==version` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.split("#", 1)[0].strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def declared(requirements: list[str]) -> dict[str, str]:
    out = {}
    for requirement in requirements:
        match = PIN.match(requirement)
        assert match, f"{requirement!r} is not pinned with =="
        out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def test_the_package_declares_the_pins_the_requirements_files_hold() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = declared(project["dependencies"])
    server = declared(project["optional-dependencies"]["server"])
    pulumi = declared(project["optional-dependencies"]["pulumi"])
    assert not base.keys() & server.keys() and not base.keys() & pulumi.keys()
    assert base | server == pins(REPO / "requirements-connector.txt")
    assert pulumi == pins(REPO / "requirements.txt")
    constraints = pins(REPO / "constraints.txt")
    assert {n: v for n, v in (base | server | pulumi).items() if constraints.get(n) != v} == {}


def test_the_console_scripts_run_the_cli() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"eks-access-connector": "connector.cli:entry", "eksac": "connector.cli:entry"}
