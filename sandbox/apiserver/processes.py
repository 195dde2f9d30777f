"""Local processes standing in for a container's processes: pipes, or a pseudo-terminal for a TTY.

The emulated kubelet runs `exec` commands and each pod's main process (for `attach`) as plain local
processes. With a TTY the process gets a pty as its controlling terminal, so `kubectl exec -it -- sh`
is a real interactive shell (prompt, line editing, Ctrl-C) and resizes reach it as SIGWINCH.
Each process leads its own session, so everything it starts can be killed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path

from connector.kube.channels import TerminalSize

READ_CHUNK = 32 * 1024


DEFAULT_TERMINAL_SIZE = TerminalSize(width=80, height=24)


class CommandNotRunnable(Exception):
    """The command could not be started; `exit_code` follows the shell's 126/127 convention."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_status_of(returncode: int) -> int:
    """A process's exit status as a container runtime reports it: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """A running local process with its stdio as asyncio streams; create it with `start`."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: _ProcessProtocol,
        *,
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        stdin: _StdinWriter | None,
        terminal_fd: int | None,
        cleanup: list[asyncio.BaseTransport],
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self.stdout = stdout
        self.stderr = stderr  # None with a TTY: the terminal merges stderr into stdout
        self._stdin = stdin
        self._terminal_fd = terminal_fd
        self._cleanup = cleanup

    @property
    def pid(self) -> int:
        return self._transport.get_pid()

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> ContainerProcess:
        """Start `argv` (never through a shell); raises CommandNotRunnable if it cannot be executed.

        With a TTY the terminal starts at 80x24, like a container's; the client's size follows
        as a resize (kubectl sends its terminal's size first thing).
        """
        if tty:
            return await cls._start_with_terminal(argv, cwd=cwd, env=env)
        loop = asyncio.get_running_loop()
        pipe, discard = subprocess.PIPE, subprocess.DEVNULL
        try:
            transport, protocol = await loop.subprocess_exec(
                _ProcessProtocol,
                *argv,
                stdin=pipe if stdin else discard,
                stdout=pipe if stdout else discard,
                stderr=pipe if stderr else discard,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise _not_runnable(argv, exc) from exc
        stdin_pipe = transport.get_pipe_transport(0)
        stdin_writer = (_StdinWriter(stdin_pipe, protocol, end_of_input=None)  # type: ignore[arg-type]
                        if stdin_pipe is not None else None)
        return cls(transport, protocol, stdout=protocol.readers.get(1), stderr=protocol.readers.get(2),
                   stdin=stdin_writer, terminal_fd=None, cleanup=[])

    @classmethod
    async def _start_with_terminal(cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> ContainerProcess:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            _set_window_size(slave, DEFAULT_TERMINAL_SIZE)
            try:
                transport, protocol = await loop.subprocess_exec(
                    _ProcessProtocol,
                    *argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=cwd,
                    env=dict(env),
                    start_new_session=True,
                    # only an ioctl in the child, after setsid(): safe even with other threads around
                    preexec_fn=_take_controlling_terminal,
                )
            except OSError as exc:
                raise _not_runnable(argv, exc) from exc
            except subprocess.SubprocessError as exc:  # the ioctl failed in the child
                raise CommandNotRunnable(f"cannot give {argv[0]!r} a terminal: {exc}", 126) from exc
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        output = asyncio.StreamReader()
        # Two transports on two descriptors of the same terminal: each closes its own.
        read_transport, _ = await loop.connect_read_pipe(
            lambda: _TerminalOutput(output), os.fdopen(os.dup(master), "rb", buffering=0)
        )
        write_transport, write_protocol = await loop.connect_write_pipe(
            _DrainableProtocol, os.fdopen(os.dup(master), "wb", buffering=0)
        )
        stdin_writer = _StdinWriter(write_transport, write_protocol, end_of_input=b"\x04")
        return cls(transport, protocol, stdout=output, stderr=None, stdin=stdin_writer, terminal_fd=master,
                   cleanup=[read_transport, write_transport])

    async def write_stdin(self, data: bytes) -> bool:
        """Give the process input; False once it no longer reads any (the data is then dropped)."""
        return self._stdin is not None and await self._stdin.write(data)

    def close_stdin(self) -> None:
        """End the input: closes the pipe, or types the terminal's end-of-file character (Ctrl-D)."""
        if self._stdin is not None:
            self._stdin.close()

    def resize(self, size: TerminalSize) -> None:
        """Apply a terminal size; the kernel sends SIGWINCH to the foreground process group."""
        if self._terminal_fd is not None and size.width > 0 and size.height > 0:
            with contextlib.suppress(OSError):
                _set_window_size(self._terminal_fd, size)

    async def wait(self) -> int:
        """Wait for the process to exit (not for its output to end); its exit status, 128+N for signal N."""
        await self._protocol.exited.wait()
        returncode = self._transport.get_returncode()
        assert returncode is not None
        return exit_status_of(returncode)

    async def kill(self) -> None:
        """Kill the process and its session if it still runs, reap it and release its descriptors.

        A process that has exited and been reaped is not signalled: its pid may belong to another
        process by now (use `kill_leftovers` for children that outlive it).
        """
        if self._transport.get_returncode() is None:
            kill_session(self.pid)
        await self._protocol.exited.wait()
        self.release()

    def kill_leftovers(self) -> None:
        """Kill what remains of the process's session after it exited (background children).

        Safe only while such children exist: they keep the session id, and so the pid, in use.
        """
        kill_session(self.pid)

    def release(self) -> None:
        """Close this side's pipes and terminal (idempotent)."""
        for transport in self._cleanup:
            transport.close()
        self._cleanup = []
        self._transport.close()
        if self._terminal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._terminal_fd)
            self._terminal_fd = None


def kill_session(session_id: int) -> None:
    """SIGKILL the process group `session_id` leads and any other process left in its session.

    A shell with job control moves background jobs into process groups of their own, so killing
    the group alone would leave them running; /proc tells which processes are in the session.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session_id, signal.SIGKILL)
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[3] == str(session_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _not_runnable(argv: Sequence[str], exc: OSError) -> CommandNotRunnable:
    # Worded like runc's errors, which kubectl users know from real clusters.
    command = argv[0]
    if isinstance(exc, FileNotFoundError):
        if "/" in command:
            reason = f"stat {command}: no such file or directory"
        else:
            reason = "executable file not found in $PATH"
        code = 127
    elif isinstance(exc, PermissionError):
        reason, code = "permission denied", 126
    else:
        reason, code = exc.strerror or str(exc), 126
    message = f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{command}": {reason}'
    return CommandNotRunnable(message + ": unknown", code)


def _set_window_size(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


def _take_controlling_terminal() -> None:
    # Runs in the child after setsid(): make the terminal on fd 0 the session's controlling terminal,
    # so job control and Ctrl-C work as in a container started with a TTY.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _TerminalOutput(asyncio.Protocol):
    """Feeds a pty's output into a StreamReader; EIO (the last writer closed the terminal) is EOF."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._reader.set_transport(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._reader.feed_data(data)

    def eof_received(self) -> None:
        self._reader.feed_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        if not (exc is None or (isinstance(exc, OSError) and exc.errno == errno.EIO)):
            self._reader.set_exception(exc)
            return
        self._reader.feed_eof()


class _Drainable:
    """Write-side flow control: `drain()` waits while the transport reports it is full."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.write_closed = False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()


class _DrainableProtocol(_Drainable, asyncio.Protocol):
    """The protocol of the write side of a terminal."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.write_closed = True
        self._writable.set()


class _ProcessProtocol(_Drainable, asyncio.SubprocessProtocol):
    """A process's pipes as StreamReaders, its exit as an event (independent of its pipes closing)."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: dict[int, asyncio.StreamReader] = {}
        self.exited = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        for fd in (1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                reader = self.readers[fd] = asyncio.StreamReader()
                reader.set_transport(pipe)  # lets the reader pause the pipe while its buffer is full

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.readers[fd].feed_data(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self.readers:
            self.readers[fd].feed_eof()
        elif fd == 0:
            self.write_closed = True
            self._writable.set()

    def process_exited(self) -> None:
        self.exited.set()


class _StdinWriter:
    """The process's input side, with backpressure and a notion of "no longer accepting input"."""

    def __init__(self, transport: asyncio.WriteTransport, flow: _Drainable, *, end_of_input: bytes | None) -> None:
        self._transport = transport
        self._flow = flow
        self._end_of_input = end_of_input
        self._closed = False

    async def write(self, data: bytes) -> bool:
        if self._closed or self._flow.write_closed or self._transport.is_closing():
            return False
        try:
            self._transport.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        await self._flow.drain()
        return not self._flow.write_closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._end_of_input is not None:
            # A terminal has no half-close: Ctrl-D at the start of a line is what ends input.
            if not self._transport.is_closing():
                self._transport.write(self._end_of_input)
        else:
            self._transport.close()
