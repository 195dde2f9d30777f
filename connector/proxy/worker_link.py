"""The link between the `serve --workers N` supervisor and one worker: calls and notices both ways.

One Unix stream socket per worker, in a directory only the connector's uid can enter. A frame is a
4-byte big-endian length and a pickled tuple: `("call", id, method, args)`, `("reply", id, ok, value)`
or `("notify", 0, method, args)`. Pickle is safe here because only the same uid can connect, and that
uid could read the other process's memory anyway; it carries discovered clusters (with their
credentials) without a second schema. A call's handler may be a plain function or return an awaitable;
an awaitable runs as its own task, so one slow answer (an audit fsync) holds up no other, while
tasks start in arrival order, so audit lines from one worker keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
CLOSE_FLUSH_SECONDS = 5.0
Handler = Callable[..., Any]


class LinkClosed(ConnectionError):
    """The other side of the link is gone (its process exited)."""


class WorkerLink:
    """One end of a link. `serve()` reads frames until the other side closes; `call` and `notify` send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handlers: dict[str, Handler]):
        self._reader, self._writer = reader, writer
        self._handlers = handlers
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def _send(self, frame: tuple[Any, ...]) -> None:
        if self.closed:
            raise LinkClosed("the link is closed")
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_LENGTH.pack(len(data)) + data)

    async def call(self, method: str, *args: Any) -> Any:
        """Run `method` on the other side and return its answer; raises LinkClosed when the link goes."""
        call_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._send(("call", call_id, method, args))
        self._waiting[call_id] = answer
        return await answer

    def notify(self, method: str, *args: Any) -> None:
        """Send a notice that has no answer; a closed link drops it (its process is gone)."""
        if not self.closed:
            self._send(("notify", 0, method, args))

    async def serve(self) -> None:
        """Handle frames until EOF, then fail every call still waiting with LinkClosed."""
        try:
            while True:
                try:
                    head = await self._reader.readexactly(_LENGTH.size)
                    frame = pickle.loads(await self._reader.readexactly(_LENGTH.unpack(head)[0]))  # noqa: S301 (same uid only)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self._dispatch(*frame)
        finally:
            self.closed = True
            # What the other side sent before it went (its last audit lines) is still handled.
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(LinkClosed("the other process closed the link"))
            self._waiting.clear()
            self._writer.close()

    def _dispatch(self, kind: str, frame_id: int, method: Any, value: Any) -> None:
        if kind == "reply":
            answer = self._waiting.pop(frame_id, None)
            if answer is not None and not answer.done():
                if method:  # ok
                    answer.set_result(value)
                else:
                    answer.set_exception(RuntimeError(value))
            return
        try:
            outcome = self._handlers[method](*value)
        except Exception as exc:
            log.exception("worker link: %s failed", method)
            if kind == "call":
                self._reply(frame_id, False, f"{method} failed: {exc}")
            return
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(self._finish(kind, frame_id, method, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "call":
            self._reply(frame_id, True, outcome)

    async def _finish(self, kind: str, frame_id: int, method: str, outcome: Any) -> None:
        try:
            value = await outcome
        except Exception as exc:
            log.exception("worker link: %s failed", method)
            if kind == "call":
                self._reply(frame_id, False, f"{method} failed: {exc}")
            return
        if kind == "call":
            self._reply(frame_id, True, value)

    def _reply(self, frame_id: int, ok: bool, value: Any) -> None:
        if not self.closed:
            self._send(("reply", frame_id, ok, value))

    async def close(self) -> None:
        """Close after the frames already written are sent (a worker's last audit lines)."""
        self.closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_FLUSH_SECONDS)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
