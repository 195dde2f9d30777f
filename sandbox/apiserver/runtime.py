"""The emulated kubelet's container runtime: what runs "inside" the emulated pods.

- `exec`: each command is a local process (argv as given, never a shell string) in a scratch
  directory per pod and container, with a minimal environment: PATH, HOME (the scratch directory),
  HOSTNAME (the pod name), TERM with a TTY, plus the container's literal `env` values.
- `attach`: each container has one main process, started at the first attach and shared by all
  attached clients. A container whose spec sets `stdin: true` runs `sh` (under a terminal when it
  also sets `tty: true`), so `kubectl attach -it` gets a shell; any other container runs a ticker
  that prints `<pod> <container> tick <n>` every `attach_tick_seconds`, so attach has output to
  show. When the main process exits (e.g. `exit` in the shell, or end of input with
  `stdinOnce: true`) the next attach starts a new one, as a container restart would.
- `port-forward`: each declared TCP `containerPort` is served by a small echo service on
  127.0.0.1 (ephemeral port) that answers every line with `<pod>:<port> <line>`; a port the pod
  does not declare refuses the connection, as an empty port in a pod's network namespace does.
  A connection whose first line is an HTTP/1.x request line gets one HTTP answer instead
  (`200`, text `<pod>:<port> METHOD TARGET`, then close), so `curl` through `kubectl port-forward`
  works as it would against a web server in a pod. That little HTTP is written by hand because the
  same port must keep its line echo, which no HTTP server library serves.

`close()` kills every process and stops every service; the API server calls it when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.kube.channels import TerminalSize
from sandbox.apiserver.names import dns1123_label, dns1123_subdomain
from sandbox.apiserver.processes import READ_CHUNK, ContainerProcess

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# An HTTP/1.x request line, as curl or a browser starts a connection.
_HTTP_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S+) HTTP/1\.[01]\r?\n")
ECHO_LINE_LIMIT = 64 * 1024  # longer lines are answered in pieces, so memory stays bounded
ATTACH_QUEUE_CHUNKS = 256  # output chunks an attached client may lag behind before it is cut off
SESSION_STOP_TIMEOUT = 10.0  # how long close() waits for sessions to wind down before killing everything

_TICKER = (
    "import sys, time\n"
    "pod, container, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    print(f'{pod} {container} tick {n}', flush=True)\n"
    "    time.sleep(interval)\n"
)


class PodRuntimeError(Exception):
    """The pod cannot do what was asked; the message is what the client is shown."""


@dataclass(frozen=True, slots=True)
class PodRef:
    """Which pod a request is about, from its stored object (names validated: they become paths)."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodRef:
        metadata = pod.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        if dns1123_label(namespace) or dns1123_subdomain(name):
            raise PodRuntimeError(f"pod {namespace!r}/{name!r} has no valid namespace and name")
        return cls(namespace=namespace, name=name, uid=str(metadata.get("uid") or ""))


def find_container(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The container spec called `name` among the pod's containers, init and ephemeral containers."""
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict) and container.get("name") == name:
                return container
    return None


class Attachment:
    """One attached client's view of a main process: its output from now on, then the end."""

    def __init__(self, main: MainProcess) -> None:
        self._main = main
        self._chunks: deque[tuple[str, bytes]] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self.overflowed = False

    async def next(self) -> tuple[str, bytes] | None:
        """("stdout"|"stderr", data), or None once the process has exited (or this client fell behind)."""
        while not self._chunks:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._chunks.popleft()

    def offer(self, name: str, chunk: bytes) -> None:
        """New output of the main process (the client is cut off once it lags too far behind)."""
        if self._ended:
            return
        if len(self._chunks) >= ATTACH_QUEUE_CHUNKS:
            # A client that does not read must not hold up the process or the other clients.
            self.overflowed = True
            self._chunks.clear()
            self.end()
            return
        self._chunks.append((name, chunk))
        self._ready.set()

    def end(self) -> None:
        """The main process exited: `next()` returns None once the buffered output is read."""
        self._ended = True
        self._ready.set()

    def detach(self) -> None:
        self._main.detach(self)

    async def write_stdin(self, data: bytes) -> None:
        await self._main.process.write_stdin(data)

    def end_input(self) -> None:
        """This client's input ended; with `stdinOnce` that ends the main process's input too."""
        if self._main.stdin_once:
            self._main.process.close_stdin()

    def resize(self, size: TerminalSize) -> None:
        self._main.process.resize(size)


class MainProcess:
    """A container's main process and the clients attached to it; output is fanned out to all."""

    def __init__(self, process: ContainerProcess, *, stdin_once: bool) -> None:
        self.process = process
        self.stdin_once = stdin_once
        self.exit_code: int | None = None
        self._attachments: set[Attachment] = set()
        self._pump = asyncio.create_task(self._run())

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    def attach(self) -> Attachment:
        attachment = Attachment(self)
        self._attachments.add(attachment)
        return attachment

    def detach(self, attachment: Attachment) -> None:
        self._attachments.discard(attachment)

    async def _run(self) -> None:
        readers = [(name, reader) for name, reader in (("stdout", self.process.stdout),
                                                       ("stderr", self.process.stderr)) if reader is not None]
        await asyncio.gather(*(self._fan_out(name, reader) for name, reader in readers))
        self.exit_code = await self.process.wait()
        self.process.release()
        for attachment in list(self._attachments):
            attachment.end()

    async def _fan_out(self, name: str, reader: asyncio.StreamReader) -> None:
        # Read even with nobody attached: a process blocked on a full pipe would stop ticking.
        while chunk := await reader.read(READ_CHUNK):
            for attachment in list(self._attachments):
                attachment.offer(name, chunk)

    async def stop(self) -> None:
        await self.process.kill()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class _EchoService:
    """The TCP service behind one declared container port of one pod."""

    def __init__(self, pod: PodRef, port: int) -> None:
        self._prefix = f"{pod.name}:{port} ".encode()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def address(self) -> tuple[str, int]:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        pending = b""
        try:
            while chunk := await reader.read(READ_CHUNK):
                if not pending and (request := _HTTP_REQUEST_LINE.match(chunk)):
                    await self._answer_http(request, chunk, reader, writer)
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    writer.write(self._prefix + line + b"\n")
                while len(pending) >= ECHO_LINE_LIMIT:
                    writer.write(self._prefix + pending[:ECHO_LINE_LIMIT])
                    pending = pending[ECHO_LINE_LIMIT:]
                await writer.drain()
            if pending:
                writer.write(self._prefix + pending)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._connections.discard(task)

    async def _answer_http(
        self, request: re.Match[bytes], head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One HTTP/1.x answer naming the pod, port and request, once the request head is complete."""
        while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < ECHO_LINE_LIMIT:
            more = await reader.read(READ_CHUNK)
            if not more:
                return
            head += more
        method, target = request.group(1), request.group(2)
        body = b"" if method == b"HEAD" else self._prefix + method + b" " + target + b"\n"
        length = len(self._prefix + method + b" " + target + b"\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()


class PodRuntime:
    """Processes and services of every emulated pod, under one scratch root."""

    def __init__(self, scratch_root: Path, *, attach_tick_seconds: float = 1.0) -> None:
        self.scratch_root = Path(scratch_root)
        self.attach_tick_seconds = attach_tick_seconds
        self._execs: set[ContainerProcess] = set()
        self._mains: dict[tuple[PodRef, str], MainProcess] = {}
        self._main_lock = asyncio.Lock()
        self._echo: dict[tuple[PodRef, int], _EchoService] = {}
        self._closed = False
        self.stopping = asyncio.Event()  # set by close(): every streaming session ends when it sees it
        self._sessions = 0
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Scope of one streaming session, so that close() can wait for it to end after `stopping`."""
        self._check_open()
        self._sessions += 1
        self._no_sessions.clear()
        try:
            yield
        finally:
            self._sessions -= 1
            if not self._sessions:
                self._no_sessions.set()

    def container_dir(self, pod: PodRef, container: str) -> Path:
        """The scratch directory of one container (created on demand): its HOME and working directory."""
        if dns1123_label(container):
            raise PodRuntimeError(f"container name {container!r} is not a valid container name")
        path = self.scratch_root / pod.namespace / pod.name / container
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def environment(pod: PodRef, container: dict[str, Any], *, home: Path, tty: bool) -> dict[str, str]:
        """The minimal environment of a process in `container` (see the module docstring)."""
        env = {"PATH": DEFAULT_PATH, "HOME": str(home)}
        for variable in container.get("env") or []:
            if not isinstance(variable, dict):
                continue
            name, value = variable.get("name"), variable.get("value")
            # Only literal values: valueFrom (secrets, field refs) is resolved by a real kubelet only.
            if isinstance(name, str) and name and "=" not in name and "\0" not in name and isinstance(value, str):
                if "\0" not in value:
                    env[name] = value
        env["HOSTNAME"] = pod.name
        if tty:
            env["TERM"] = "xterm"
        return env

    async def exec(
        self,
        pod: dict[str, Any],
        container: str,
        argv: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> ContainerProcess:
        """Start `argv` in the container; raises CommandNotRunnable or PodRuntimeError."""
        self._check_open()
        ref, spec = self._container(pod, container)
        home = self.container_dir(ref, container)
        process = await ContainerProcess.start(
            argv, cwd=home, env=self.environment(ref, spec, home=home, tty=tty),
            tty=tty, stdin=stdin, stdout=stdout, stderr=stderr,
        )
        self._execs.add(process)
        return process

    async def finished(self, process: ContainerProcess) -> None:
        """Kill what is left of an exec'd process (its background children too) and forget it."""
        self._execs.discard(process)
        await process.kill()

    async def attach(self, pod: dict[str, Any], container: str) -> Attachment:
        """Attach to the container's main process, starting it if it is not running."""
        self._check_open()
        ref, spec = self._container(pod, container)
        async with self._main_lock:
            main = self._mains.get((ref, container))
            if main is None or main.exited:
                main = await self._start_main(ref, spec)
                self._mains[(ref, container)] = main
            return main.attach()

    async def _start_main(self, pod: PodRef, spec: dict[str, Any]) -> MainProcess:
        name = str(spec.get("name"))
        interactive = spec.get("stdin") is True
        tty = interactive and spec.get("tty") is True
        if interactive:
            argv: list[str] = ["sh"]
        else:
            argv = [sys.executable, "-u", "-c", _TICKER, pod.name, name, repr(self.attach_tick_seconds)]
        home = self.container_dir(pod, name)
        process = await ContainerProcess.start(
            argv, cwd=home, env=self.environment(pod, spec, home=home, tty=tty),
            tty=tty, stdin=interactive, stdout=True, stderr=not tty,
        )
        return MainProcess(process, stdin_once=spec.get("stdinOnce") is True)

    async def open_port(self, pod: dict[str, Any], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to `port` of the pod; raises PodRuntimeError (worded like the kubelet) if nothing listens."""
        self._check_open()
        ref = PodRef.of(pod)
        if port not in declared_ports(pod):
            raise PodRuntimeError(
                f'failed to connect to localhost:{port} inside namespace "{ref.namespace}/{ref.name}", '
                f"IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused"
            )
        service = self._echo.get((ref, port))
        if service is None:
            service = self._echo[(ref, port)] = _EchoService(ref, port)
        host, local_port = await service.address()
        return await asyncio.open_connection(host, local_port)

    async def close(self) -> None:
        """End every session, kill every process, stop every service; the runtime refuses work afterwards."""
        self._closed = True
        self.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_sessions.wait(), SESSION_STOP_TIMEOUT)
        await asyncio.gather(*(process.kill() for process in self._execs), return_exceptions=True)
        self._execs.clear()
        await asyncio.gather(*(main.stop() for main in self._mains.values()), return_exceptions=True)
        self._mains.clear()
        await asyncio.gather(*(service.close() for service in self._echo.values()), return_exceptions=True)
        self._echo.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise PodRuntimeError("the node's container runtime is shutting down")

    def _container(self, pod: dict[str, Any], container: str) -> tuple[PodRef, dict[str, Any]]:
        ref = PodRef.of(pod)
        spec = find_container(pod, container)
        if spec is None:
            raise PodRuntimeError(f"container {container} is not valid for pod {ref.name}")
        return ref, spec


def declared_ports(pod: dict[str, Any]) -> set[int]:
    """The TCP container ports the pod declares (the ports its echo services answer on)."""
    ports = set()
    for container in (pod.get("spec") or {}).get("containers") or []:
        for entry in (container.get("ports") or []) if isinstance(container, dict) else []:
            port = entry.get("containerPort") if isinstance(entry, dict) else None
            if isinstance(port, int) and 0 < port < 65536 and entry.get("protocol", "TCP") == "TCP":
                ports.add(port)
    return ports
