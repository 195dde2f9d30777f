"""A pseudo-terminal for driving an interactive program (`kubectl exec -it`) from an asyncio test.

    terminal = PtyTerminal(rows=30, cols=100)          # the size is set before the program starts
    process = await terminal.spawn([kubectl, "exec", "-it", "web", "--", "sh"], env=env)
    await terminal.wait_for_output()
    terminal.type(b"stty size\\r")
    await terminal.read_until(b"30 100")
    terminal.resize(process, rows=40, cols=132)          # TIOCSWINSZ, then SIGWINCH as a terminal would
    await terminal.read_to_end()                          # once the program and its children are gone

The program gets the pty's slave side as stdin, stdout and stderr, in a session of its own, so a
real terminal's behaviour is what it sees (raw mode, window size), and everything it writes collects
in `output`, read without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable, Sequence

DEFAULT_WAIT_SECONDS = 20.0


def set_window_size(fd: int, *, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyTerminal:
    def __init__(self, *, rows: int, cols: int) -> None:
        self.master, slave = os.openpty()
        self._slave: int | None = slave
        set_window_size(slave, rows=rows, cols=cols)
        os.set_blocking(self.master, False)
        self.output = b""
        self.ended = False
        self._changed = asyncio.Event()
        self._reading = False

    async def spawn(self, argv: Sequence[str], *, env: dict[str, str]) -> asyncio.subprocess.Process:
        """Start the program on the terminal (only one per terminal)."""
        assert self._slave is not None, "a PtyTerminal runs one program"
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=self._slave, stdout=self._slave, stderr=self._slave, env=env, start_new_session=True
        )
        # Only the program holds the slave side now: when it exits, reading the master ends.
        os.close(self._slave)
        self._slave = None
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        self._reading = True
        return process

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the slave side has gone
            data = b""
        if data:
            self.output += data
        else:
            self.ended = True
            self._stop_reading()
        self._changed.set()

    def _stop_reading(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    async def _until(self, what: str, done: Callable[[], bool], seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not done():
                    if self.ended:
                        raise AssertionError(f"the terminal closed before {what}; it showed {self.output!r}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {seconds:g} s; the terminal showed {self.output!r}") from None

    async def wait_for_output(self, seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        await self._until("output", lambda: bool(self.output), seconds)

    async def read_until(self, needle: bytes, seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        await self._until(repr(needle), lambda: needle in self.output, seconds)

    async def read_to_end(self, seconds: float = DEFAULT_WAIT_SECONDS) -> bytes:
        """Everything shown once the program closed the terminal."""
        try:
            async with asyncio.timeout(seconds):
                while not self.ended:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the program kept the terminal open past {seconds:g} s: {self.output!r}") from None
        return self.output

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def resize(self, process: asyncio.subprocess.Process, *, rows: int, cols: int) -> None:
        """Change the window size and tell the program, as a terminal emulator does."""
        set_window_size(self.master, rows=rows, cols=cols)
        process.send_signal(signal.SIGWINCH)

    def close(self) -> None:
        self._stop_reading()
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        os.close(self.master)
