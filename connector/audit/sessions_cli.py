"""`python -m connector sessions`: list, play and export recorded exec/attach/port-forward sessions.

    sessions list   [--user U] [--socket S] [--since T] [--s3] [--json]
    sessions play   ID [--speed X]
    sessions export ID --format cast|txt [--output FILE]

Sessions are found in the audit log (the `audit.file` of `--config`, or `--audit-log`), in the
recordings directory (`recordings.dir`, or `--dir`) and, with `--s3`, in the recordings bucket.
ID is a session id (the request id the audit log shows) or a unique prefix of one (like a git
commit's), a recording file, or an `s3://` URI.
`play` prints the output with its original timing (markers go to stderr, so stdout is only what the
session printed); `export --format txt` gives the plain output without terminal control sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import math
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

from connector.audit.recording_config import RecordingConfig
from connector.audit.recording_sinks import PARTIAL_SUFFIX, RECORDING_SUFFIX, make_s3_client, recording_id_for

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

SESSION_SUBRESOURCES = ("exec", "attach", "portforward")
# A header line longer than this is not one of ours.
MAX_HEADER_BYTES = 1 << 20
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# CSI sequences, OSC strings (ended by BEL or ST), then any other escape: ESC, intermediates, a final byte.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


class UsageError(Exception):
    """Bad input from the command line or a file it names: exit 2 with this message."""


class NotFound(Exception):
    """The session or recording does not exist: exit 1 with this message."""


@dataclass
class SessionRow:
    """One session as `list` shows it, merged from the audit log and the recording's header."""

    session_id: str
    started: dt.datetime | None = None
    user: str = ""
    socket: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    kind: str = ""
    command: list[str] = field(default_factory=list)
    exit: str = ""
    recording: str = ""
    sources: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Sources:
    """Where this invocation looks for sessions."""

    audit_log: Path | None
    directory: Path | None
    s3: Any  # S3RecordingConfig | None


# -- argument handling -------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="connector config file (for recordings.dir, recordings.s3, audit.file)")
    common.add_argument("--dir", help="recordings directory (overrides the config's recordings.dir)")
    common.add_argument("--audit-log", help="audit log file, JSON lines (overrides the config's audit.file)")
    commands = parser.add_subparsers(dest="action", required=True, metavar="{list,play,export}")

    ls = commands.add_parser("list", parents=[common], help="list recorded sessions, newest last")
    ls.add_argument("--user", help="only this user's sessions")
    ls.add_argument("--socket", help="only sessions on this socket")
    ls.add_argument("--since", help="only sessions started since: 2024-05-01, 2024-05-01T12:00:00Z, or 90m, 12h, 7d")
    ls.add_argument("--s3", action="store_true", help="also list the recordings in the configured S3 bucket")
    ls.add_argument("--json", action="store_true", help="one JSON object per session instead of a table")

    play = commands.add_parser("play", parents=[common], help="replay a session's output with its timing")
    play.add_argument("id", metavar="ID", help="session id (or a unique prefix of one), recording file or s3:// URI")
    play.add_argument("--speed", default="1", help="playback speed factor (2 = twice as fast); default 1")

    export = commands.add_parser("export", parents=[common], help="write a session's recording")
    export.add_argument("id", metavar="ID", help="session id (or a unique prefix of one), recording file or s3:// URI")
    export.add_argument("--format", required=True, choices=("cast", "txt"), help="cast: asciicast v2; txt: output")
    export.add_argument("--output", "-o", help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    try:
        sources = _sources(args)
        if args.action == "list":
            return _list(args, sources)
        if args.action == "play":
            return _play(args, sources)
        return _export(args, sources)
    except UsageError as exc:
        print(f"sessions {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotFound as exc:
        print(f"sessions {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK  # e.g. `sessions play ID | head`


def _sources(args: argparse.Namespace) -> Sources:
    audit_log: str | None = None
    directory: str | None = None
    s3 = None
    if args.config:
        from connector.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise UsageError("the config is not valid:\n" + "\n".join(exc.errors)) from None
        recordings: RecordingConfig = cfg.recordings
        directory = str(recordings.dir) if recordings.dir is not None else None
        s3 = recordings.s3
        audit_log = cfg.audit.file
    if args.dir:
        directory = args.dir
    if args.audit_log:
        audit_log = args.audit_log
    return Sources(
        audit_log=Path(audit_log) if audit_log else None,
        directory=Path(directory) if directory else None,
        s3=s3,
    )


def parse_since(value: str, now: dt.datetime) -> dt.datetime:
    """`90m`, `12h`, `7d` (ago) or an ISO 8601 date or time (UTC unless it says otherwise)."""
    m = _DURATION.match(value.strip())
    if m:
        return now - dt.timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {value!r} is neither a duration (90m, 12h, 7d) nor a date or time (2024-05-01T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        raise UsageError(f"--speed must be a number, got {value!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise UsageError(f"--speed must be a positive number, got {value!r}")
    return speed


# -- list --------------------------------------------------------------------------------------------


def parse_event_time(value: Any) -> dt.datetime | None:
    """An audit event's `time` as an aware datetime (UTC when it names no zone), None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def sessions_from_audit(lines: Iterable[str]) -> tuple[dict[str, SessionRow], int]:
    """Exec/attach/port-forward sessions in audit log lines; also the count of unreadable lines."""
    rows: dict[str, SessionRow] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(event, dict):
            bad += 1
            continue
        request = event.get("request")
        if not isinstance(request, dict) or request.get("resource") != "pods":
            continue
        kind = request.get("subresource")
        session_id = event.get("request_id")
        if kind not in SESSION_SUBRESOURCES or event.get("decision") != "allow" or not isinstance(session_id, str):
            continue
        row = rows.setdefault(session_id, SessionRow(session_id))
        row.sources.add("audit")
        row.kind = kind
        when = parse_event_time(event.get("time"))
        if when is not None and (row.started is None or when < row.started):
            row.started = when
        for attr, key in (("user", "user"), ("socket", "socket")):
            if isinstance(event.get(key), str):
                setattr(row, attr, event[key])
        row.namespace = str(request.get("namespace") or row.namespace)
        row.pod = str(request.get("name") or row.pod)
        raw_query = event.get("query")
        query = parse_qs(raw_query, keep_blank_values=True) if isinstance(raw_query, str) else {}
        if query.get("command"):
            row.command = query["command"]
        if query.get("container"):
            row.container = query["container"][0]
        if isinstance(event.get("recording"), str):
            row.recording = event["recording"]
    return rows, bad


def read_header(stream: IO[bytes]) -> dict[str, Any]:
    """The asciicast v2 header line of a recording; raises UsageError when it is not one."""
    first = stream.readline(MAX_HEADER_BYTES)
    try:
        header = json.loads(first)
    except ValueError:
        raise UsageError("not an asciicast v2 recording: the first line is not JSON") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise UsageError('not an asciicast v2 recording: the header has no "version": 2')
    return header


def exit_from_tail(tail: bytes) -> str:
    """The EXIT column from a recording's last bytes: the code its final marker states, if any."""
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    try:
        event = json.loads(lines[-1])
    except ValueError:
        return "?"
    if not (isinstance(event, list) and len(event) == 3 and event[1] == "m" and isinstance(event[2], str)):
        return "?"
    m = re.match(r"exit status (\d+)", event[2])
    if m:
        return m.group(1)
    if event[2].startswith("session failed"):
        return "failed"
    return "-" if event[2].startswith("port-forward ended") else "?"


def _tail(f: IO[bytes], size: int = 8192) -> bytes:
    f.seek(0, io.SEEK_END)
    f.seek(max(0, f.tell() - size))
    return f.read()


def fill_from_header(row: SessionRow, header: dict[str, Any], location: str) -> None:
    """Complete a session's row with what its recording's header says (the audit log's values win)."""
    meta = header.get("connector")
    meta = meta if isinstance(meta, dict) else {}
    row.sources.add("recording")
    row.recording = row.recording or location
    if row.started is None and isinstance(header.get("timestamp"), int | float):
        row.started = dt.datetime.fromtimestamp(header["timestamp"], dt.UTC)
    for attr in ("user", "socket", "namespace", "pod", "container"):
        if not getattr(row, attr) and isinstance(meta.get(attr), str):
            setattr(row, attr, meta[attr])
    if not row.kind and isinstance(meta.get("subresource"), str):
        row.kind = meta["subresource"]
    command = meta.get("command")
    if not row.command and isinstance(command, list) and all(isinstance(c, str) for c in command):
        row.command = command


def _session_id_of(header: dict[str, Any], fallback: str) -> str:
    meta = header.get("connector")
    if isinstance(meta, dict) and isinstance(meta.get("session_id"), str):
        return meta["session_id"]
    return fallback


def read_local_recording(path: Path) -> tuple[str, dict[str, Any], str]:
    """(session id, header, exit) of a recording file, finished or still being written; raises
    OSError or UsageError."""
    partial = path.name.endswith(PARTIAL_SUFFIX)
    with path.open("rb") as f:
        header = read_header(f)
        tail = b"" if partial else _tail(f)
    stem = path.name[: -len(PARTIAL_SUFFIX if partial else RECORDING_SUFFIX)]
    return _session_id_of(header, stem), header, "running" if partial else exit_from_tail(tail)


def read_s3_recording(client: Any, bucket: str, key: str) -> tuple[str, dict[str, Any], str]:
    """(session id, header, exit) of a recording in S3, from two ranged reads (its head and its tail);
    raises UsageError when it is not a recording, botocore's errors when S3 fails."""
    head = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_HEADER_BYTES - 1}")
    header = read_header(io.BytesIO(head["Body"].read()))
    tail = client.get_object(Bucket=bucket, Key=key, Range="bytes=-8192")["Body"].read()
    stem = key.rsplit("/", 1)[-1][: -len(RECORDING_SUFFIX)]
    return _session_id_of(header, stem), header, exit_from_tail(tail)


def is_recording_name(name: str) -> bool:
    return name.endswith(RECORDING_SUFFIX) or name.endswith(PARTIAL_SUFFIX)


def _add_local_recordings(rows: dict[str, SessionRow], directory: Path, warnings: list[str]) -> None:
    if not directory.is_dir():
        warnings.append(f"recordings directory {directory} does not exist")
        return
    by_recording = {r.recording: r for r in rows.values() if r.recording}
    for path in sorted(directory.iterdir()):
        if not is_recording_name(path.name) or not path.is_file():
            continue
        try:
            session_id, header, exit_code = read_local_recording(path)
        except (OSError, UsageError) as exc:
            warnings.append(f"{path}: {exc}")
            continue
        row = by_recording.get(str(path)) or rows.setdefault(session_id, SessionRow(session_id))
        fill_from_header(row, header, str(path))
        row.exit = exit_code


def _add_s3_recordings(rows: dict[str, SessionRow], s3: Any, since: dt.datetime | None, warnings: list[str]) -> None:
    client = make_s3_client(s3.region)
    known = {r.recording for r in rows.values() if r.recording}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=s3.bucket, Prefix=s3.prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            uri = f"s3://{s3.bucket}/{key}"
            if not key.endswith(RECORDING_SUFFIX) or uri in known:
                continue
            if since is not None and obj["LastModified"] < since:
                continue  # uploaded at session end, so it started before `since` too
            try:
                session_id, header, exit_code = read_s3_recording(client, s3.bucket, key)
            except UsageError as exc:
                warnings.append(f"{uri}: {exc}")
                continue
            row = rows.setdefault(session_id, SessionRow(session_id))
            fill_from_header(row, header, uri)
            row.exit = exit_code


def collect_sessions(
    sources: Sources, *, include_s3: bool, since: dt.datetime | None, warnings: list[str]
) -> list[SessionRow]:
    rows: dict[str, SessionRow] = {}
    if sources.audit_log is not None:
        try:
            with sources.audit_log.open(encoding="utf-8", errors="replace") as f:
                rows, bad = sessions_from_audit(f)
        except OSError as exc:
            raise NotFound(f"cannot read the audit log: {exc}") from None
        if bad:
            warnings.append(f"{sources.audit_log}: skipped {bad} lines that are not JSON objects")
    if sources.directory is not None:
        _add_local_recordings(rows, sources.directory, warnings)
    if include_s3:
        if sources.s3 is None:
            raise UsageError("--s3 needs a config with recordings.s3")
        _add_s3_recordings(rows, sources.s3, since, warnings)
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(rows.values(), key=lambda r: (r.started or epoch, r.session_id))


def _list(args: argparse.Namespace, sources: Sources) -> int:
    if sources.audit_log is None and sources.directory is None and sources.s3 is None:
        raise UsageError("say where the sessions are: --config FILE, or --dir DIR and/or --audit-log FILE")
    since = parse_since(args.since, dt.datetime.now(dt.UTC)) if args.since else None
    warnings: list[str] = []
    rows = collect_sessions(sources, include_s3=args.s3, since=since, warnings=warnings)
    rows = [
        r
        for r in rows
        if (args.user is None or r.user == args.user)
        and (args.socket is None or r.socket == args.socket)
        and (since is None or (r.started is not None and r.started >= since))
    ]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        for r in rows:
            out = dataclasses.asdict(r)
            out["started"] = r.started.isoformat().replace("+00:00", "Z") if r.started else None
            out["sources"] = sorted(r.sources)
            print(json.dumps(out, ensure_ascii=False))
        return EXIT_OK
    table = [("STARTED", "ID", "USER", "SOCKET", "KIND", "TARGET", "COMMAND", "EXIT", "RECORDING")]
    for r in rows:
        target = f"{r.namespace}/{r.pod}" + (f" -c {r.container}" if r.container else "")
        started = r.started.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if r.started else "-"
        command = " ".join(r.command) or "-"
        table.append(
            (
                started,
                _printable(r.session_id),
                _printable(r.user),
                _printable(r.socket),
                r.kind,
                _printable(target),
                _printable(command),
                r.exit or "-",
                _printable(r.recording or "-", 200),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return EXIT_OK


def _printable(text: str, limit: int = 60) -> str:
    # Commands come from users: never let one put control characters on the operator's terminal.
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- finding and reading a recording ---------------------------------------------------------------


def open_recording(ident: str, sources: Sources) -> tuple[str, IO[bytes]]:
    """(where it was found, a binary stream of it) for a session id, file path or s3:// URI."""
    if ident.startswith("s3://"):
        return ident, _open_s3_uri(ident, sources)
    path = Path(ident)
    if path.is_file():
        return str(path), path.open("rb")
    # A whole id of a local recording needs neither the audit log nor a listing.
    found = _in_directory(ident, sources)
    if found is not None:
        return str(found), found.open("rb")
    audit_rows = _audit_sessions(sources)
    ident = _unique_session_id(ident, sources, audit_rows)
    looked: list[str] = []
    if sources.directory is not None:
        found = _in_directory(ident, sources)
        if found is not None:
            return str(found), found.open("rb")
        looked.append(str(sources.directory))
    if audit_rows is not None:
        named = audit_rows.get(ident)
        if named is not None and named.recording and named.recording != ident:
            if named.recording.startswith("s3://") or Path(named.recording).is_file():
                return open_recording(named.recording, sources)
        looked.append(str(sources.audit_log))
    if sources.s3 is not None:
        key = f"{sources.s3.prefix}{recording_id_for(ident)}{RECORDING_SUFFIX}"
        uri = f"s3://{sources.s3.bucket}/{key}"
        try:
            return uri, _open_s3_uri(uri, sources)
        except NotFound:
            looked.append(uri)
    if not looked:
        raise UsageError(f"{ident!r} is not a file: say where the sessions are with --config FILE or --dir DIR")
    raise NotFound(f"no recording found for {ident!r} (looked in: {', '.join(looked)})")


def _in_directory(session_id: str, sources: Sources) -> Path | None:
    """The session's recording in the recordings directory, looked up by the file name the recorder
    gives it (never as a path), finished or still being written."""
    if sources.directory is None:
        return None
    stem = recording_id_for(session_id)
    for name in (f"{stem}{RECORDING_SUFFIX}", f"{stem}{PARTIAL_SUFFIX}"):
        candidate = sources.directory / name
        if candidate.is_file():
            return candidate
    return None


def _audit_sessions(sources: Sources) -> dict[str, SessionRow] | None:
    """The sessions the audit log names (read once per command), or None without a readable log."""
    if sources.audit_log is None or not sources.audit_log.is_file():
        return None
    with sources.audit_log.open(encoding="utf-8", errors="replace") as f:
        rows, _ = sessions_from_audit(f)
    return rows


# How many of the matching ids an ambiguous prefix's error names.
_AMBIGUOUS_SHOWN = 5


def _unique_session_id(prefix: str, sources: Sources, audit_rows: dict[str, SessionRow] | None) -> str:
    """The session id `prefix` stands for, like a git commit prefix: itself when a session has exactly
    that id, else the one session whose id starts with it; an ambiguous prefix is a usage error.
    With no match it is returned as it is, and the lookup says where it looked."""
    ids: set[str] = set(audit_rows or ())
    if sources.directory is not None and sources.directory.is_dir():
        for path in sources.directory.iterdir():
            for suffix in (RECORDING_SUFFIX, PARTIAL_SUFFIX):
                if path.name.endswith(suffix) and path.name.startswith(prefix):
                    ids.add(path.name[: -len(suffix)])
    if prefix in ids:
        return prefix
    if sources.s3 is not None:
        ids.update(_s3_session_ids(sources, prefix))
    matches = sorted(i for i in ids if i.startswith(prefix))
    if len(matches) > 1:
        shown = ", ".join(matches[:_AMBIGUOUS_SHOWN]) + (", ..." if len(matches) > _AMBIGUOUS_SHOWN else "")
        raise UsageError(f"session id {prefix!r} is ambiguous: {len(matches)} sessions start with it ({shown})")
    return matches[0] if matches else prefix


def _s3_session_ids(sources: Sources, prefix: str) -> set[str]:
    """The recording ids under the S3 prefix that start with `prefix` (one listing page: enough to tell
    one match from several)."""
    assert sources.s3 is not None
    from botocore.exceptions import BotoCoreError, ClientError

    client = make_s3_client(sources.s3.region)
    try:
        page = client.list_objects_v2(Bucket=sources.s3.bucket, Prefix=f"{sources.s3.prefix}{prefix}", MaxKeys=100)
    except (BotoCoreError, ClientError):
        return set()  # the lookup by exact key below reports what S3 said
    names = (obj["Key"][len(sources.s3.prefix) :] for obj in page.get("Contents", []))
    return {name[: -len(RECORDING_SUFFIX)] for name in names if name.endswith(RECORDING_SUFFIX)}


def _open_s3_uri(uri: str, sources: Sources) -> IO[bytes]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise UsageError(f"{uri!r} is not an s3://BUCKET/KEY URI")
    from botocore.exceptions import ClientError

    client = make_s3_client(sources.s3.region if sources.s3 is not None else None)
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise NotFound(f"{uri} does not exist") from None
        raise NotFound(f"cannot read {uri}: {exc}") from None
    return io.BytesIO(obj["Body"].read())


def read_events(stream: IO[bytes], where: str) -> tuple[dict[str, Any], Iterator[tuple[float, str, str]]]:
    """The header and the events of an asciicast v2 recording, checked line by line."""
    try:
        header = read_header(stream)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None

    def events() -> Iterator[tuple[float, str, str]]:
        for number, raw in enumerate(stream, start=2):
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                raise UsageError(f"{where}:{number}: not a JSON event line") from None
            if (
                not isinstance(event, list)
                or len(event) != 3
                or not isinstance(event[0], int | float)
                or isinstance(event[0], bool)
                or not isinstance(event[1], str)
                or not isinstance(event[2], str)
            ):
                raise UsageError(f"{where}:{number}: an event is [seconds, code, data]")
            yield float(event[0]), event[1], event[2]

    return header, events()


def plain_text(output: str) -> str:
    """Terminal output as plain text: control sequences removed, CRLF line ends made LF."""
    return _ANSI.sub("", output).replace("\r\n", "\n")


def _play(args: argparse.Namespace, sources: Sources) -> int:
    speed = _speed(args.speed)
    where, stream = open_recording(args.id, sources)
    try:
        with stream:
            _, events = read_events(stream, where)
            started = time.monotonic()
            for at, code, data in events:
                delay = at / speed - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
                if code == "o":
                    sys.stdout.write(data)
                    sys.stdout.flush()
                elif code == "m":
                    print(f"[{_printable(data, 500)}]", file=sys.stderr)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130  # what a shell reports for a command ended by Ctrl-C
    return EXIT_OK


def _export(args: argparse.Namespace, sources: Sources) -> int:
    where, stream = open_recording(args.id, sources)
    with stream:
        if args.format == "cast":
            content = stream.read()
            read_events(io.BytesIO(content), where)[0]  # refuse to export something that is not a recording
        else:
            _, events = read_events(stream, where)
            content = plain_text("".join(data for _, code, data in events if code == "o")).encode("utf-8")
    if args.output:
        try:
            Path(args.output).write_bytes(content)
        except OSError as exc:
            raise NotFound(f"cannot write {args.output}: {exc}") from None
    else:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
    return EXIT_OK
