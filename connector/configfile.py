"""Read YAML files into typed models, with one clear error per problem.

Errors name the place in the file the way a user reads it, e.g.
`config.yaml:14: policies[2].kubernetes.rules[0].verbs[1]: unknown verb "gett"`, so that a bad file
never half-applies: `load_model` either returns a complete model or raises `ConfigError` with every
problem found. Used for the connector config (connector.config) and every other file it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from connector.model import StrictModel

M = TypeVar("M", bound=StrictModel)

class ConfigError(Exception):
    """The config could not be loaded. `errors` holds one human-readable line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__("\n".join(errors))


def format_location(loc: Iterable[str | int]) -> str:
    """`("policies", 2, "kubernetes")` -> `policies[2].kubernetes`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling and the documented keys)"
    if kind == "missing":
        return "required key is missing"
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if "input" in error and not isinstance(error["input"], (dict, list)):
        return f"{msg[0].lower()}{msg[1:]}, got {error['input']!r}"
    return f"{msg[0].lower()}{msg[1:]}"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch and tagged-union markers, which name no key in the file."""
    return tuple(p for p in loc if isinstance(p, int) or not (p.startswith("function-") or "[" in p))


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node | None, path: tuple[str | int, ...]) -> None:
        if node is None:
            return
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    walk(root, ())
    return lines


def validation_errors(error: ValidationError, source: str, text: str | None = None) -> list[str]:
    """One line per problem: `SOURCE:LINE: path.to[3].key: what is wrong`."""
    index = _line_index(text) if text is not None else {}
    out: list[tuple[int, str]] = []
    for e in error.errors():
        loc = _clean_loc(e["loc"])
        line = None
        for n in range(len(loc), -1, -1):
            line = index.get(loc[:n])
            if line is not None:
                break
        where = f"{source}:{line}" if line is not None else source
        out.append((line if line is not None else 1 << 30, f"{where}: {format_location(loc)}: {_message(e)}"))
    # In file order, as a user fixes them top to bottom (sorted() is stable for errors on one line).
    return [message for _, message in sorted(out, key=lambda item: item[0])]


# libyaml's loader when the wheel has it: a large file (thousands of service tokens) parses several
# times faster, and the result is the same safe subset of YAML.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, chosen above
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: not valid YAML: {problem}"]) from None


def load_model(model: type[M], text: str, source: str) -> M:
    """Validate YAML `text` into `model`, raising ConfigError with every problem found."""
    data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_errors(exc, source, text)) from None


def read_config_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [f"{path}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"{path}: cannot read config file: {exc}"]) from None
