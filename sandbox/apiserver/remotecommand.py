"""exec and attach sessions: a process's stdio moved over the client's streams, then the outcome.

The session logic (`run_exec`, `run_attach`) only sees `ClientStreams`; two drivers carry it:
`serve_websocket` (channel protocols v5/v4/v1, what kubectl >= 1.30 and the Python client use) and
`serve_spdy` (SPDY/3.1 with X-Stream-Protocol-Version v4/v3/v2/v1, kubectl < 1.30 or with
KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false). Both end a session as the kubelet and kube-apiserver do:
all output first, then the outcome on the error stream, then the end of the connection, waiting a
little for the client to close first so no output still in flight is lost to a reset.

Outcomes follow k8s.io/kubelet's remotecommand: success is `{"status": "Success"}`; a non-zero exit
is `reason: NonZeroExitCode` with an `ExitCode` cause (kubectl exits with that code and prints
"command terminated with exit code N"); anything else is an InternalError. A command that cannot
be started prints the runtime's error and exits 126/127, as with Docker's runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

from connector.kube.channels import (
    ERROR,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    ChannelProtocol,
    TerminalSize,
    TerminalSizeDecoder,
)
from connector.kube.status import status_body
from sandbox.apiserver.channels import WebSocketChannels, websocket_response
from sandbox.apiserver.pipes import ByteSink, ByteSource, ClientGone, ClientStreams
from sandbox.apiserver.processes import READ_CHUNK, CommandNotRunnable, ContainerProcess
from sandbox.apiserver.runtime import Attachment, PodRuntime, PodRuntimeError
from sandbox.apiserver.spdy_server import SpdySession, SpdyStream, accept_upgrade

log = logging.getLogger(__name__)

SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
_SPDY_RESIZE_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io")

# Timeouts in seconds; module-level so tests can shorten them.
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's default for the client to open its SPDY streams
OUTPUT_GRACE = 1.0  # after the process exits, how long its children may hold stdout open
FINISH_GRACE = 10.0  # after the outcome, how long the client has to close the connection
# Between the websocket handshake and the first message, kube-apiserver always spends a round trip
# to the kubelet. client-go up to 1.33 starts reading before it has registered its streams and drops
# messages that arrive in that gap ("Unknown stream id 1, discarding message"), so leave a gap too.
WEBSOCKET_SETUP_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Which streams a session has (the kubelet drops stderr when a TTY is asked for)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ended: an exit code, or an internal error message."""

    exit_code: int = 0
    error: str | None = None


def status_for(outcome: Outcome) -> dict[str, Any]:
    """The metav1.Status the v4/v5 protocols put on the error stream (as the kubelet marshals it)."""
    if outcome.error is not None:
        return status_body(500, f"Internal error occurred: {outcome.error}",
                           details={"causes": [{"message": outcome.error}]})
    if outcome.exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: command terminated with exit code {outcome.exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(outcome.exit_code)}]},
    }


def status_message(outcome: Outcome, *, json_status: bool) -> bytes | None:
    """What goes on the error stream: JSON for v4/v5; older protocols send text, and only on failure."""
    status = status_for(outcome)
    if json_status:
        return json.dumps(status, separators=(",", ":")).encode()
    return None if status["status"] == "Success" else str(status["message"]).encode()


async def terminal_sizes(source: ByteSource) -> AsyncIterator[TerminalSize]:
    """Decode the resize stream: JSON objects {"Width": w, "Height": h}, one after another.

    Like the kubelet's json.Decoder loop, the first malformed message ends resize handling.
    """
    decoder = TerminalSizeDecoder()
    while chunk := await source.read():
        for size in decoder.feed(chunk):
            yield size
        if decoder.failed is not None:
            log.info("resize stream: %s; ignoring further resizes", decoder.failed)
            return


async def _apply_resizes(source: ByteSource | None, apply: Callable[[TerminalSize], None]) -> None:
    if source is None:
        return
    async for size in terminal_sizes(source):
        apply(size)
    while await source.read():  # keep consuming, so an unread stream never stalls the connection
        pass


async def _copy_output(reader: asyncio.StreamReader | None, sink: ByteSink | None) -> None:
    """Process output to the client until EOF; then half-close the client's stream."""
    if reader is None:
        return
    client_gone = sink is None
    while chunk := await reader.read(READ_CHUNK):
        if client_gone:
            continue  # keep draining: a process blocked on a full pipe would never exit
        try:
            await sink.write(chunk)  # type: ignore[union-attr]
        except ClientGone:
            client_gone = True
    if not client_gone:
        with contextlib.suppress(ClientGone):
            await sink.close()  # type: ignore[union-attr]


async def _copy_input(source: ByteSource | None, write: Callable[[bytes], Awaitable[object]],
                      end: Callable[[], None]) -> None:
    if source is None:
        return
    while data := await source.read():
        await write(data)
    end()


async def run_exec(
    runtime: PodRuntime, pod: dict[str, Any], container: str, argv: Sequence[str], streams: ClientStreams, *,
    tty: bool,
) -> Outcome:
    """Run `argv` in the container with the client's streams; returns when it has exited and its output is sent."""
    try:
        process = await runtime.exec(pod, container, argv, tty=tty, stdin=streams.stdin is not None,
                                     stdout=streams.stdout is not None, stderr=streams.stderr is not None)
    except CommandNotRunnable as exc:
        newline = "\r\n" if tty else "\n"  # with a TTY nothing translates \n for the client's terminal
        sink = streams.stderr or streams.stdout
        if sink is not None:
            with contextlib.suppress(ClientGone):
                await sink.write(f"{exc}{newline}".encode())
        return Outcome(exit_code=exc.exit_code)
    except PodRuntimeError as exc:
        return Outcome(error=f"error executing command in container: {exc}")
    return await _supervise(runtime, process, streams)


async def _supervise(runtime: PodRuntime, process: ContainerProcess, streams: ClientStreams) -> Outcome:
    outputs = [asyncio.create_task(_copy_output(process.stdout, streams.stdout)),
               asyncio.create_task(_copy_output(process.stderr, streams.stderr))]
    inputs = [asyncio.create_task(_copy_input(streams.stdin, process.write_stdin, process.close_stdin)),
              asyncio.create_task(_apply_resizes(streams.resize, process.resize))]
    try:
        exit_code = await process.wait()
        _, pending = await asyncio.wait(outputs, timeout=OUTPUT_GRACE)
        if pending:
            # Children still hold the output open: end them, as the runtime ends the exec's processes.
            process.kill_leftovers()
            await asyncio.wait(pending, timeout=OUTPUT_GRACE)
        return Outcome(exit_code=exit_code)
    finally:
        for task in outputs + inputs:
            task.cancel()
        await asyncio.gather(*outputs, *inputs, return_exceptions=True)
        await runtime.finished(process)


async def run_attach(
    runtime: PodRuntime, pod: dict[str, Any], container: str, streams: ClientStreams
) -> Outcome:
    """Attach the client's streams to the container's main process until it exits (or the client leaves)."""
    try:
        attachment = await runtime.attach(pod, container)
    except (CommandNotRunnable, PodRuntimeError) as exc:
        return Outcome(error=f"error attaching to container: {exc}")
    inputs = [asyncio.create_task(_copy_input(streams.stdin, attachment.write_stdin, attachment.end_input)),
              asyncio.create_task(_apply_resizes(streams.resize, attachment.resize))]
    try:
        await _copy_attached_output(attachment, streams)
        if attachment.overflowed:
            return Outcome(error="error attaching to container: the client read output too slowly")
        return Outcome()
    finally:
        attachment.detach()
        for task in inputs:
            task.cancel()
        await asyncio.gather(*inputs, return_exceptions=True)


async def _copy_attached_output(attachment: Attachment, streams: ClientStreams) -> None:
    sinks = {"stdout": streams.stdout, "stderr": streams.stderr}
    while (item := await attachment.next()) is not None:
        sink = sinks[item[0]]
        if sink is not None:
            try:
                await sink.write(item[1])
            except ClientGone:
                return
    for sink in sinks.values():
        if sink is not None:
            with contextlib.suppress(ClientGone):
                await sink.close()


Session = Callable[[ClientStreams], Awaitable[Outcome]]


def _outcome_of(running: asyncio.Task[Outcome]) -> Outcome:
    """The session's outcome; a bug in it becomes an InternalError for the client, and a log entry."""
    exc = running.exception()
    if exc is None:
        return running.result()
    log.error("streaming session failed", exc_info=exc)
    return Outcome(error=f"the session failed: {exc}")


async def serve_websocket(request: web.Request, runtime: PodRuntime, protocol: ChannelProtocol,
                          options: StreamOptions, session: Session) -> web.WebSocketResponse:
    """Accept the websocket and run `session` over its channels."""
    ws = websocket_response(protocol.name)
    async with runtime.session():
        await ws.prepare(request)
        channels = WebSocketChannels(ws, protocol, readable={STDIN, RESIZE} if options.stdin else {RESIZE})
        await asyncio.sleep(WEBSOCKET_SETUP_DELAY)
        try:
            # The kubelet's "connection established": an empty message on the lowest writable channel.
            await channels.send(STDOUT if options.stdout else STDERR if options.stderr else ERROR, b"")
        except ClientGone:
            return ws
        streams = ClientStreams(
            stdin=channels.inbound(STDIN) if options.stdin else None,
            stdout=channels.output(STDOUT) if options.stdout else None,
            stderr=channels.output(STDERR) if options.stderr else None,
            resize=channels.inbound(RESIZE),
        )
        reader = asyncio.create_task(channels.run())
        running = asyncio.create_task(session(streams))
        stopping = asyncio.create_task(runtime.stopping.wait())
        try:
            await asyncio.wait({reader, running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                message = status_message(_outcome_of(running), json_status=protocol.status_errors)
                with contextlib.suppress(ClientGone):
                    if message is not None:
                        await channels.send(ERROR, message)
                    await channels.finish(reader)
            elif stopping.done():
                await channels.finish(reader, code=WSCloseCode.GOING_AWAY, message=b"the node is shutting down")
        finally:
            for task in (running, reader, stopping):
                task.cancel()
            await asyncio.gather(running, reader, stopping, return_exceptions=True)
    return ws


async def serve_spdy(request: web.Request, runtime: PodRuntime, protocol: str, options: StreamOptions,
                     session: Session) -> web.StreamResponse:
    """Upgrade to SPDY/3.1, wait for the client's streams, run `session`, report its outcome."""
    async with runtime.session():
        # Like the kubelet, every stream is accepted and replied to; unexpected types are just unused.
        connection = await accept_upgrade(request, protocol, lambda stream: None)
        expected = {"error"}
        expected |= {name for name, wanted in (("stdin", options.stdin), ("stdout", options.stdout),
                                                ("stderr", options.stderr)) if wanted}
        if options.tty and protocol in _SPDY_RESIZE_PROTOCOLS:
            expected.add("resize")
        collecting = asyncio.create_task(_collect_streams(connection.session, expected))
        stopping = asyncio.create_task(runtime.stopping.wait())
        running: asyncio.Task[Outcome] | None = None
        try:
            await asyncio.wait({collecting, stopping}, timeout=STREAM_CREATION_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            if not collecting.done() or collecting.exception() is not None:
                log.info("exec/attach over SPDY: no session (%s)",
                         "timed out waiting for client to create streams" if not collecting.done()
                         else collecting.exception())
                await connection.close(grace=0)
                return connection.response
            streams = collecting.result()
            running = asyncio.create_task(session(ClientStreams(
                stdin=streams.get("stdin"), stdout=streams.get("stdout"), stderr=streams.get("stderr"),
                resize=streams.get("resize"))))
            gone = asyncio.create_task(connection.session.closed.wait())
            try:
                await asyncio.wait({running, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if running.done():
                message = status_message(_outcome_of(running), json_status=protocol == "v4.channel.k8s.io")
                with contextlib.suppress(ClientGone):
                    if message is not None:
                        await streams["error"].write(message)
                    for stream in streams.values():
                        await stream.close()
                await connection.close(grace=FINISH_GRACE)
            else:
                await connection.close(grace=0)
        finally:
            for task in (collecting, stopping, running):
                if task is not None:
                    task.cancel()
            await asyncio.gather(collecting, stopping, *([running] if running else []), return_exceptions=True)
    return connection.response


async def _collect_streams(session: SpdySession, expected: set[str]) -> dict[str, SpdyStream]:
    """The client's streams by type, once it has opened all of `expected`; raises ClientGone if it leaves."""
    streams: dict[str, SpdyStream] = {}
    gone = asyncio.create_task(session.closed.wait())
    try:
        while set(streams) != expected:
            arrival = asyncio.create_task(session.new_streams.get())
            await asyncio.wait({arrival, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not arrival.done():
                arrival.cancel()
                raise ClientGone("the client closed the connection before opening its streams")
            stream = arrival.result()
            kind = stream.header("streamtype") or ""
            if kind in expected and kind not in streams:
                streams[kind] = stream
            else:
                log.info("exec/attach over SPDY: unexpected stream type %r", kind)
        return streams
    finally:
        gone.cancel()
