"""Durations as people write them in config and on the command line: `4h`, `30m`, `1h30m`, `90s`.

A module of its own, with nothing but the standard library, because the client's `access request
--for` checks its argument too, and the client is installed without the server's dependencies.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: str) -> timedelta:
    """`"1h30m"` -> 90 minutes. Units h, m, s, largest first; used by config, CLI and API alike."""
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or not any(m.groups()):
        raise ValueError(f'bad duration {value!r}: write e.g. "4h", "30m", "1h30m" or "90s"')
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    duration = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if duration <= timedelta(0):
        raise ValueError(f"bad duration {value!r}: it must be longer than zero")
    return duration
