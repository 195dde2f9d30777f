"""Search the audit log a page at a time: the events that match a query, oldest first, streamed over
the log's files (connector.audit.log_files), with the position to resume from.

A page ends after `limit` matches or after `byte_budget` bytes of log were read, whichever comes
first, so a page costs the same on a 1 GB log as on a small one; the next page starts where this one
stopped. A line that does not contain a filter's value is skipped before it is parsed (a user's or a
socket's name in printable ASCII appears in the JSON as it is), which keeps a narrow search
over a big log cheap. A rotated file last written before `since` is not opened at all: its mtime is
at or after every event in it; in a plain file the search for `since` starts at an offset found by
bisecting the file (events are appended in time order), so "the last hour" of a 1 GB log is one
page too. A gzip file cannot be entered in the middle and is read from its start.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from connector.audit.log_files import is_gzip, lines_from, offset_before
from connector.audit.sessions_cli import UsageError, parse_event_time, parse_since

DECISIONS = ("allow", "deny", "unauthenticated", "rejected")
# How far out of time order events may reach the file (the workers of `serve --workers N` write
# through the supervisor): a `since` search of a plain file starts where events this much older begin.
ORDER_SLACK = dt.timedelta(minutes=1)
# The query's text fields and where each is found in an event.
TEXT_FIELDS = ("user", "group", "socket", "verb", "resource", "namespace")


@dataclass(frozen=True)
class AuditQuery:
    """What to look for; an empty field matches everything."""

    user: str = ""
    group: str = ""
    socket: str = ""
    verb: str = ""
    resource: str = ""  # `pods`, or `pods/exec` for a subresource
    namespace: str = ""
    decision: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, str], now: dt.datetime) -> AuditQuery:
        """The query from a search form; UsageError with one line naming the bad field."""
        values = {name: form.get(name, "").strip() for name in (*TEXT_FIELDS, "decision")}
        if values["decision"] and values["decision"] not in DECISIONS:
            raise UsageError(f"decision {values['decision']!r} is not one of {', '.join(DECISIONS)}")
        times: dict[str, dt.datetime | None] = {}
        for name in ("since", "until"):
            text = form.get(name, "").strip()
            try:
                times[name] = parse_since(text, now) if text else None
            except UsageError as exc:
                raise UsageError(str(exc).replace("--since", name, 1)) from None
        since, until = times["since"], times["until"]
        if since is not None and until is not None and until <= since:
            raise UsageError("until must be later than since")
        return cls(**values, since=since, until=until)

    @property
    def needles(self) -> tuple[bytes, ...]:
        """Byte strings every matching line contains: the filter values that JSON writes unescaped."""
        values = (self.user, self.group, self.socket, self.verb, self.namespace, self.decision,
                  *self.resource.split("/"))  # fmt: skip
        return tuple(v.encode() for v in values if v and _unescaped(v))

    def matches(self, event: dict[str, Any]) -> bool:
        request = event.get("request")
        request = request if isinstance(request, dict) else {}
        resource = resource_of(request)
        groups = event.get("groups")
        checks = (
            (self.user, event.get("user")),
            (self.socket, event.get("socket")),
            (self.decision, event.get("decision")),
            (self.verb, request.get("verb")),
            (self.namespace, request.get("namespace")),
            (self.resource, resource),
        )
        if any(wanted and wanted != found for wanted, found in checks):
            return False
        if self.group and not (isinstance(groups, list) and self.group in groups):
            return False
        if self.since is None and self.until is None:
            return True
        when = event_time(event)
        return (
            when is not None
            and (self.since is None or when >= self.since)
            and (self.until is None or when < self.until)
        )


def resource_of(request: dict[str, Any]) -> str:
    """`pods`, or `pods/exec` for a subresource, from an event's parsed request."""
    resource, subresource = str(request.get("resource") or ""), str(request.get("subresource") or "")
    return f"{resource}/{subresource}" if subresource else resource


def _unescaped(value: str) -> bool:
    # Printable ASCII other than a quote or a backslash: written as it is by any JSON encoder.
    return all(" " <= c <= "~" and c not in '"\\' for c in value)


def event_time(event: dict[str, Any]) -> dt.datetime | None:
    return parse_event_time(event.get("time"))


@dataclass(frozen=True)
class Position:
    """Where a search resumes: a file of the log (by name, in its directory) and a byte offset in it."""

    file: str
    offset: int

    @property
    def token(self) -> str:
        return f"{self.file}:{self.offset}"

    @classmethod
    def parse(cls, token: str, files: list[Path]) -> Position:
        """The position a next-page link carries; UsageError when it names no file of the log now."""
        name, _, offset = token.rpartition(":")
        if not offset.isdigit() or len(offset) > 15:
            raise UsageError(f"the page position {token!r} is not FILE:OFFSET: start the search again")
        if name not in {f.name for f in files}:
            raise UsageError(
                f"the page position names {name!r}, which is not a file of the audit log (now rotated?): "
                "start the search again"
            )
        return cls(name, int(offset))


@dataclass
class SearchPage:
    events: list[dict[str, Any]] = field(default_factory=list)
    next: Position | None = None  # None: the end of the log was reached
    bytes_read: int = 0
    malformed: int = 0
    files: int = 0


def search(files: list[Path], query: AuditQuery, start: Position | None, *, limit: int, byte_budget: int) -> SearchPage:
    """Up to `limit` matching events from `start` (the oldest event when None), reading at most about
    `byte_budget` bytes; `next` is where the next page begins."""
    result = SearchPage()
    needles = query.needles
    begin = 0 if start is None else [f.name for f in files].index(start.file)
    for index in range(begin, len(files)):
        path = files[index]
        offset = start.offset if start is not None and index == begin else 0
        last = index == len(files) - 1
        if not last and query.since is not None and _modified(path) < query.since:
            continue
        if offset == 0 and query.since is not None and not is_gzip(path):
            offset = offset_before(path, functools.partial(_written_since, query.since - ORDER_SLACK))
        result.files += 1
        for line, after in lines_from(path, offset):
            result.bytes_read += len(line)
            if all(n in line for n in needles) and line.strip():
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    result.malformed += 1
                    event = None
                if isinstance(event, dict) and query.matches(event):
                    result.events.append(event)
            if len(result.events) >= limit or result.bytes_read >= byte_budget:
                result.next = Position(path.name, after)
                return result
    return result


def _written_since(since: dt.datetime, line: bytes) -> bool | None:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    when = event_time(event) if isinstance(event, dict) else None
    return None if when is None else when >= since


def _modified(path: Path) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except OSError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
