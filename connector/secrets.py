"""Secret references in the config: `env:NAME`, `file:/path`, or the literal value.

Keeping secrets out of the config file itself (a Kubernetes Secret mounted as a file or exposed as an
environment variable) is what lets the config live in git. Errors name the reference, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

ENV_PREFIX = "env:"
FILE_PREFIX = "file:"

# Secrets are tokens, keys and certificates: anything larger is a wrong path (a log, a disk image).
MAX_SECRET_FILE_BYTES = 1024 * 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretError(ValueError):
    """A secret reference could not be resolved. The message names the reference, never a value."""


def resolve_secret(value: str, *, environ: Mapping[str, str] | None = None) -> str:
    """Return the secret `value` refers to.

    `env:NAME` reads the environment variable NAME, `file:/path` reads the file (without its trailing
    newline, as `$(cat file)` would), anything else is the secret itself.
    """
    if value.startswith(ENV_PREFIX):
        return _from_env(value[len(ENV_PREFIX) :], os.environ if environ is None else environ)
    if value.startswith(FILE_PREFIX):
        return _from_file(value[len(FILE_PREFIX) :])
    return value


def describe_secret(value: str) -> str:
    """How a secret is given, safe to print: `env:NAME`, `file:/path` or `inline`."""
    if value.startswith((ENV_PREFIX, FILE_PREFIX)):
        return value
    return "inline"


def _from_env(name: str, environ: Mapping[str, str]) -> str:
    if not _ENV_NAME.match(name):
        raise SecretError(f"env:{name} is not a valid environment variable reference (expected env:NAME)")
    try:
        return environ[name]
    except KeyError:
        raise SecretError(f"environment variable {name} is not set (referenced as env:{name})") from None


def _from_file(raw_path: str) -> str:
    if not raw_path:
        raise SecretError("file: needs a path (expected file:/path/to/secret)")
    path = Path(raw_path).expanduser()
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SecretError(f"cannot read file:{raw_path}: file not found") from None
    except IsADirectoryError:
        raise SecretError(f"cannot read file:{raw_path}: it is a directory") from None
    except PermissionError:
        raise SecretError(f"cannot read file:{raw_path}: permission denied") from None
    except OSError as exc:
        raise SecretError(f"cannot read file:{raw_path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretError(f"file:{raw_path} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"file:{raw_path} is not UTF-8 text") from None
    return text.rstrip("\r\n")
