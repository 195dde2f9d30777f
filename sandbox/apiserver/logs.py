"""`pods/log`: each container's log, deterministic and growing with time as a real container's would.

A container prints `BOOT_LINES` lines when it starts, then one line every `interval` seconds for as
long as its pod runs: line `n` of container `c` in pod `p` is `<p> <c> line <n>` (n from 1). So a
log is the same on every read, `follow` has something new to show every `interval`, and tests can
predict every byte. Options as the kubelet reads them: `container`, `follow`, `previous`,
`tailLines`, `sinceSeconds`, `sinceTime`, `timestamps` (RFC 3339 with nanoseconds), `limitBytes`;
errors worded as kube-apiserver/kubelet word them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandbox.apiserver.errors import ApiError, bad_request
from sandbox.apiserver.times import parse_time

BOOT_LINES = 10
BOOT_SPACING = timedelta(milliseconds=1)


@dataclass(frozen=True)
class LogOptions:
    container: str
    follow: bool = False
    tail_lines: int | None = None
    since: datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def _int(params: dict[str, str], key: str, minimum: int) -> int | None:
    if key not in params:
        return None
    try:
        value = int(params[key])
    except ValueError:
        raise bad_request(f'{key}: Invalid value: "{params[key]}": must be an integer') from None
    if value < minimum:
        bound = "greater than or equal to 0" if minimum == 0 else "greater than 0"
        raise ApiError(422, f'PodLogOptions "" is invalid: {key}: Invalid value: {value}: must be {bound}',
                       reason="Invalid")
    return value


def _bool(params: dict[str, str], key: str) -> bool:
    return params.get(key, "false").lower() in ("true", "1")


def container_names(pod: dict[str, Any]) -> tuple[list[str], list[str]]:
    spec = pod.get("spec") or {}
    containers = [str(c.get("name")) for c in spec.get("containers") or [] if isinstance(c, dict)]
    init = [str(c.get("name")) for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    return containers, init


def resolve_container(pod: dict[str, Any], asked: str) -> str:
    """The container a log/exec/attach request is about; 400 when it is ambiguous or unknown."""
    name = pod["metadata"]["name"]
    containers, init = container_names(pod)
    if not asked:
        if len(containers) == 1 and not init:
            return containers[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise bad_request(message)
    if asked not in containers and asked not in init:
        raise bad_request(f"container {asked} is not valid for pod {name}")
    return asked


def parse_options(pod: dict[str, Any], params: dict[str, str], now: datetime) -> LogOptions:
    container = resolve_container(pod, params.get("container", ""))
    if _bool(params, "previous"):
        raise bad_request(f'previous terminated container "{container}" in pod "{pod["metadata"]["name"]}" '
                          "not found")
    since: datetime | None = None
    since_seconds = _int(params, "sinceSeconds", 1)
    if since_seconds is not None:
        since = now - timedelta(seconds=since_seconds)
    if "sinceTime" in params:
        if since is not None:
            raise ApiError(422, 'PodLogOptions "" is invalid: : Forbidden: at most one of `sinceTime` or '
                                "`sinceSeconds` may be specified", reason="Invalid")
        try:
            since = datetime.fromisoformat(params["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise bad_request(f'sinceTime: Invalid value: "{params["sinceTime"]}": must be RFC 3339') from None
    return LogOptions(
        container=container,
        follow=_bool(params, "follow"),
        tail_lines=_int(params, "tailLines", 0),
        since=since,
        timestamps=_bool(params, "timestamps"),
        limit_bytes=_int(params, "limitBytes", 1),
    )


class ContainerLog:
    """The log of one container, as a function of time."""

    def __init__(self, pod: dict[str, Any], container: str, started: datetime, interval: float) -> None:
        self.pod_name = pod["metadata"]["name"]
        self.container = container
        self.started = started
        self.interval = interval

    def time_of(self, n: int) -> datetime:
        if n <= BOOT_LINES:
            return self.started + BOOT_SPACING * n
        return self.started + timedelta(seconds=self.interval * (n - BOOT_LINES))

    def count_at(self, moment: datetime) -> int:
        elapsed = (moment - self.started).total_seconds()
        if elapsed < 0:
            return 0
        return BOOT_LINES + int(elapsed / self.interval)

    def line(self, n: int, timestamps: bool) -> bytes:
        text = f"{self.pod_name} {self.container} line {n}\n"
        if timestamps:
            moment = self.time_of(n)
            text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 1000:09d}Z " + text
        return text.encode()

    def first_line(self, options: LogOptions, upto: int) -> int:
        """The first line to send: honours `tailLines` and `since`."""
        first = 1
        if options.tail_lines is not None:
            first = max(1, upto - options.tail_lines + 1)
        if options.since is not None:
            while first <= upto and self.time_of(first) < options.since:
                first += 1
        return first


def started_at(pod: dict[str, Any]) -> datetime | None:
    """When the containers started (their logs begin then): status.startTime, else creation."""
    status = pod.get("status") or {}
    return parse_time(status.get("startTime")) or parse_time((pod.get("metadata") or {}).get("creationTimestamp"))


async def stream(
    log: ContainerLog,
    options: LogOptions,
    write: Callable[[bytes], Awaitable[None]],
    *,
    now: Callable[[], datetime],
    running: Callable[[], bool],
) -> None:
    """Write the log; with `follow`, keep writing each new line when it is due, while `running()`."""
    upto = log.count_at(now())
    n = log.first_line(options, upto)
    budget = options.limit_bytes
    while True:
        while n <= upto:
            data = log.line(n, options.timestamps)
            if budget is not None:
                data = data[:budget]
                budget -= len(data)
            await write(data)
            if budget == 0:
                return
            n += 1
        if not options.follow:
            return
        await asyncio.sleep(max((log.time_of(n) - now()).total_seconds(), 0.0))
        if not running():
            return  # the kubelet ends the stream when the container goes away
        upto = log.count_at(now())
