"""The byte streams a streaming session moves, whatever carries them (SPDY streams, websocket channels).

`exec`, `attach` and `port-forward` logic is written once against `ByteSource` and `ByteSink`; the
SPDY session and the websocket channel demultiplexer each provide them. `InboundBuffer` is the
receiving half both use: the transport feeds it, a session task reads it, and the transport waits
while it is full, so a client can never make the server buffer more than a bounded amount.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

INBOUND_LIMIT = 1 << 20  # bytes a stream may hold unread before its transport stops reading


class ClientGone(Exception):
    """The client's connection is closed: nothing more can be written to it."""


class ByteSource(Protocol):
    async def read(self) -> bytes:
        """The next chunk the client sent; b"" once it has sent everything (or is gone)."""
        ...


class ByteSink(Protocol):
    async def write(self, data: bytes) -> None:
        """Send `data`, waiting while the connection is congested; raises ClientGone."""
        ...

    async def close(self) -> None:
        """Tell the client nothing more comes on this stream (a no-op where the protocol has no way)."""
        ...


@dataclass
class ClientStreams:
    """The streams of one exec/attach session; None for those the client did not ask for."""

    stdin: ByteSource | None
    stdout: ByteSink | None
    stderr: ByteSink | None
    resize: ByteSource | None


class InboundBuffer:
    """Chunks received for one stream, waiting to be read."""

    def __init__(self, limit: int = INBOUND_LIMIT) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._ended = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, data: bytes) -> None:
        if self._ended or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._readable.set()
        if self._size >= self._limit:
            self._room.clear()

    def end(self) -> None:
        """No more data will come (FIN, close signal, reset, or connection lost)."""
        self._ended = True
        self._readable.set()
        self._room.set()

    def discard(self) -> None:
        """Nobody will read any more: drop what is buffered and whatever still arrives."""
        self._chunks.clear()
        self._size = 0
        self.end()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._ended:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < self._limit:
            self._room.set()
        return data

    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_for_room(self) -> None:
        await self._room.wait()
