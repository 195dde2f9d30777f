"""The emulated API server's exec, attach and port-forward against real clients on 127.0.0.1.

The server is tests/support/stream_app.py (the streaming module behind a minimal API server).
Clients: the real kubectl 1.29 (SPDY) and 1.33 (websocket, and SPDY with websockets turned off),
the Python `kubernetes` client, and hand-made SPDY and websocket clients for protocol details
kubectl does not exercise (pings, refusals, malformed frames, old subprotocols).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import termios
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from kubernetes import client as kube_client
from kubernetes.stream import portforward as kube_portforward
from kubernetes.stream import stream as kube_stream

from connector.kube.spdy import (
    FLAG_FIN,
    DataFrame,
    Frame,
    GoAwayFrame,
    GoAwayStatus,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynReplyFrame,
    SynStreamFrame,
)
from sandbox.apiserver import remotecommand
from tests.support.stream_app import Served, StreamApp, kubectl_binary, make_pod

PODS = [
    make_pod("web", containers=[{"name": "main", "ports": [{"containerPort": 8080}],
                                 "env": [{"name": "GREETING", "value": "hello"}]}]),
    make_pod("multi", containers=[{"name": "a"}, {"name": "b"}]),
    make_pod("shell", containers=[{"name": "sh", "stdin": True, "stdinOnce": True}]),
    make_pod("ticker"),
]
EXEC_PATH = "/api/v1/namespaces/default/pods/web/exec"

KUBECTL_EXEC = [
    pytest.param(29, {}, Served("exec", "spdy", "v4.channel.k8s.io"), id="1.29-spdy"),
    pytest.param(33, {}, Served("exec", "websocket", "v5.channel.k8s.io"), id="1.33-websocket"),
    pytest.param(33, {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, Served("exec", "spdy", "v4.channel.k8s.io"),
                 id="1.33-spdy"),
]
KUBECTL_PORT_FORWARD = [
    pytest.param(29, {}, Served("portforward", "spdy", "portforward.k8s.io"), id="1.29-spdy"),
    pytest.param(33, {}, Served("portforward", "websocket", "SPDY/3.1+portforward.k8s.io"), id="1.33-tunnel"),
    pytest.param(33, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
                 Served("portforward", "spdy", "portforward.k8s.io"), id="1.33-spdy"),
]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[StreamApp]:
    async with StreamApp(tmp_path, PODS) as running:
        yield running


@dataclass
class Kubectl:
    """Runs one real kubectl version against the app, with a private HOME (discovery cache)."""

    binary: Path
    app: StreamApp
    home: Path

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        kubeconfig = self.app.kubeconfig(self.home / "kubeconfig")
        return {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(kubeconfig), **extra}

    async def run(self, *args: str, env: dict[str, str] | None = None,
                  stdin: bytes | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(self.binary), *args, env=self.env(env or {}),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def start(self, *args: str, env: dict[str, str] | None = None,
                    **kwargs: object) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(str(self.binary), *args, env=self.env(env or {}), **kwargs)


def kubectl_for(minor: int, app: StreamApp, tmp_path: Path) -> Kubectl:
    binary = kubectl_binary(minor)
    if binary is None:
        pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher")
    home = tmp_path / f"home-{minor}"
    home.mkdir(exist_ok=True)
    return Kubectl(binary=binary, app=app, home=home)


# -- kubectl exec -----------------------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env", "served"), KUBECTL_EXEC)
async def test_exec_streams_and_exit_code(app: StreamApp, tmp_path: Path, minor: int, env: dict[str, str],
                                          served: Served) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    code, out, err = await kubectl.run("exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3", env=env)
    assert (code, out) == (3, "out\n")
    assert err == "err\ncommand terminated with exit code 3\n"
    assert await app.served_requests(1) == [served]

    code, out, err = await kubectl.run("exec", "web", "--", "sh", "-c", 'echo "$HOSTNAME $GREETING $HOME"; pwd',
                                       env=env)
    home = str(tmp_path / "pods" / "default" / "web" / "main")
    assert (code, out, err) == (0, f"web hello {home}\n{home}\n", "")


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env", "served"), KUBECTL_EXEC)
async def test_exec_with_stdin(app: StreamApp, tmp_path: Path, minor: int, env: dict[str, str],
                               served: Served) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    data = b"".join(b"line %06d of the input\n" % n for n in range(20_000))  # ~480 KB: many frames each way
    code, out, err = await kubectl.run("exec", "-i", "web", "--", "cat", env=env, stdin=data)
    assert (code, err) == (0, "")
    assert out.encode() == data


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env", "served"), KUBECTL_EXEC)
async def test_exec_of_a_missing_command(app: StreamApp, tmp_path: Path, minor: int, env: dict[str, str],
                                         served: Served) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    code, out, err = await kubectl.run("exec", "web", "--", "no-such-command", "arg", env=env)
    assert (code, out) == (127, "")
    assert err == ('OCI runtime exec failed: exec failed: unable to start container process: exec: '
                   '"no-such-command": executable file not found in $PATH: unknown\n'
                   "command terminated with exit code 127\n")
    code, _, err = await kubectl.run("exec", "web", "--", str(tmp_path), env=env)  # a directory: not executable
    assert code == 126
    assert "permission denied" in err


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env"), [pytest.param(29, {}, id="1.29-spdy"),
                                            pytest.param(33, {}, id="1.33-websocket")])
async def test_exec_interactive_shell_with_resize(app: StreamApp, tmp_path: Path, minor: int,
                                                  env: dict[str, str]) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = await kubectl.start("exec", "-it", "web", "--", "sh", env=env, stdin=slave, stdout=slave,
                                  stderr=slave, start_new_session=True)
    os.close(slave)
    terminal = Terminal(master)
    try:
        await terminal.expect(rb"[$#] $")  # the shell's prompt: it runs on a terminal
        await terminal.type_until(b"stty size\r", rb"\r\n30 100\r\n")  # kubectl's initial size
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process.send_signal(signal.SIGWINCH)  # kubectl forwards its terminal's new size
        await terminal.type_until(b"stty size\r", rb"\r\n40 120\r\n")
        await terminal.type_until(b"echo $TERM; exit 7\r", rb"xterm\r\n")
        assert await asyncio.wait_for(process.wait(), 15) == 7
        await terminal.expect(rb"command terminated with exit code 7")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)


class Terminal:
    """The user's side of kubectl's terminal."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.output = b""
        os.set_blocking(master, False)

    async def expect(self, pattern: bytes, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while not re.search(pattern, self.output):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen in {self.output[-400:]!r}")
            try:
                self.output += os.read(self.master, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.02)
            except OSError:  # EIO: kubectl exited and closed the terminal
                await asyncio.sleep(0.02)

    async def type_until(self, keys: bytes, pattern: bytes, attempts: int = 30) -> None:
        # A resize and the keys typed after it travel on different streams: retry until it shows.
        for _ in range(attempts):
            seen = len(self.output)
            os.write(self.master, keys)
            try:
                await self.expect(pattern, seconds=0.5)
            except AssertionError:
                continue
            if re.search(pattern, self.output[seen:]):
                return
        raise AssertionError(f"{pattern!r} never answered {keys!r}: {self.output[-400:]!r}")


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env"), [pytest.param(29, {}, id="1.29-spdy"),
                                            pytest.param(33, {}, id="1.33-websocket")])
async def test_exec_process_is_killed_when_the_client_disconnects(app: StreamApp, tmp_path: Path, minor: int,
                                                                  env: dict[str, str]) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    marker = unique_seconds(minor)
    process = await kubectl.start("exec", "web", "--", "sleep", marker, env=env,
                                  stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await wait_for(lambda: processes_with_argument(marker), "the exec'd sleep to start")
    process.kill()
    await process.wait()
    await wait_for(lambda: not processes_with_argument(marker), "the exec'd sleep to be killed")


def unique_seconds(tag: int) -> str:
    """A `sleep` argument no other process has, even with other test runs on the machine."""
    return f"{tag}{os.getpid()}.5"


def processes_with_argument(argument: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def wait_for(condition: object, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- kubectl attach ----------------------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", [29, 33])
async def test_attach_to_an_interactive_main_process(app: StreamApp, tmp_path: Path, minor: int) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    # stdinOnce: the end of kubectl's input ends the shell, which ends the attach with success.
    code, out, _ = await kubectl.run("attach", "-i", "shell", stdin=b"echo attached to $HOSTNAME\n")
    assert (code, out) == (0, "attached to shell\n")
    # The shell exited: the next attach gets a new main process, as after a container restart.
    code, out, _ = await kubectl.run("attach", "-i", "shell", stdin=b"echo again\n")
    assert (code, out) == (0, "again\n")


@pytest.mark.kubectl
@pytest.mark.parametrize("minor", [29, 33])
async def test_attach_follows_a_running_main_process(app: StreamApp, tmp_path: Path, minor: int) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    ticks = []
    for _ in range(2):
        process = await kubectl.start("attach", "ticker", stdout=asyncio.subprocess.PIPE,
                                      stderr=asyncio.subprocess.DEVNULL)
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        process.terminate()
        await process.wait()
        match = re.fullmatch(r"ticker main tick (\d+)\n", line)
        assert match, line
        ticks.append(int(match.group(1)))
    assert ticks[1] > ticks[0]  # the same process kept running between the two attaches


# -- kubectl port-forward ----------------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize(("minor", "env", "served"), KUBECTL_PORT_FORWARD)
async def test_port_forward_moves_bytes(app: StreamApp, tmp_path: Path, minor: int, env: dict[str, str],
                                        served: Served) -> None:
    kubectl = kubectl_for(minor, app, tmp_path)
    process = await kubectl.start("port-forward", "pod/web", ":8080", env=env, stdout=asyncio.subprocess.PIPE,
                                  stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        local = int(match.group(1))
        payload = b"".join(b"chunk %05d\n" % n for n in range(5000))
        for _ in range(2):  # two connections: two stream pairs on the one SPDY session
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(payload)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 15)
            writer.close()
            assert answer == payload.replace(b"chunk", b"web:8080 chunk")
    finally:
        process.terminate()
        await process.wait()
    assert await app.served_requests(1) == [served]


@pytest.mark.kubectl
async def test_curl_through_port_forward_gets_an_http_answer(app: StreamApp, tmp_path: Path) -> None:
    """As found: the seeded pods' ports only echoed lines, so `curl` through `kubectl port-forward` got a
    line echo and "Received HTTP/0.9 when not allowed". They answer an HTTP request with HTTP now."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    kubectl = kubectl_for(33, app, tmp_path)
    process = await kubectl.start("port-forward", "pod/web", ":8080", stdout=asyncio.subprocess.PIPE,
                                  stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        local = int(re.search(r"127\.0\.0\.1:(\d+) ->", line).group(1))  # type: ignore[union-attr]
        fetched = await asyncio.create_subprocess_exec(
            curl, "-sS", "-i", f"http://127.0.0.1:{local}/healthz?x=1", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(fetched.communicate(), 15)
        assert fetched.returncode == 0, err.decode()
        head, _, body = out.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 OK") and body == "web:8080 GET /healthz?x=1\n"
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.kubectl
async def test_port_forward_to_an_undeclared_port_reports_the_error(app: StreamApp, tmp_path: Path) -> None:
    kubectl = kubectl_for(29, app, tmp_path)
    process = await kubectl.start("port-forward", "pod/web", ":9999", stdout=asyncio.subprocess.PIPE,
                                  stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    local = int(re.search(r"127\.0\.0\.1:(\d+) ->", line).group(1))  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    assert await asyncio.wait_for(reader.read(), 15) == b""
    writer.close()
    # kubectl reports what the error stream said, and gives up on the connection to the pod.
    await asyncio.wait_for(process.wait(), 15)
    err = (await process.stderr.read()).decode()
    assert "error forwarding port 9999 to pod uid-default-web, uid : failed to connect to localhost:9999" in err


# -- the Python kubernetes client -------------------------------------------------------------------


def python_api(app: StreamApp) -> kube_client.CoreV1Api:
    configuration = kube_client.Configuration(host=app.url)
    return kube_client.CoreV1Api(kube_client.ApiClient(configuration))


async def test_python_client_exec(app: StreamApp) -> None:
    api = python_api(app)

    def run() -> tuple[str, str, int | None]:
        response = kube_stream(api.connect_get_namespaced_pod_exec, "web", "default",
                               command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                               stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
        response.run_forever(timeout=20)
        return response.read_stdout(), response.read_stderr(), response.returncode

    assert await asyncio.to_thread(run) == ("out\n", "err\n", 3)
    assert await app.served_requests(1) == [Served("exec", "websocket", "v5.channel.k8s.io")]


async def test_python_client_port_forward(app: StreamApp) -> None:
    api = python_api(app)

    def run() -> bytes:
        forward = kube_portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports="8080")
        sock = forward.socket(8080)
        sock.settimeout(15)
        sock.sendall(b"from python\n")
        received = b""
        while not received.endswith(b"\n"):
            received += sock.recv(1024)
        sock.close()
        return received

    assert await asyncio.to_thread(run) == b"web:8080 from python\n"
    assert await app.served_requests(1) == [Served("portforward", "websocket", "v4.channel.k8s.io")]


# -- websocket protocol details ----------------------------------------------------------------------


async def ws_messages(ws: aiohttp.ClientWebSocketResponse) -> list[bytes | str]:
    messages: list[bytes | str] = []
    async for message in ws:
        messages.append(message.data)
    return messages


async def test_websocket_v5_close_signal_ends_stdin(app: StreamApp) -> None:
    query = "command=cat&stdin=true&stdout=true"
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{EXEC_PATH}?{query}", protocols=("v5.channel.k8s.io",)
    ) as ws:
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00first ")
        await ws.send_bytes(b"\x00second\n")
        await ws.send_bytes(bytes([255, 0]))  # v5: stdin is done
        messages = await asyncio.wait_for(ws_messages(ws), 15)
    assert messages[0] == b"\x01"  # "connection established": empty message on stdout
    assert b"".join(m[1:] for m in messages if m[0] == 1) == b"first second\n"  # type: ignore[index]
    assert [json.loads(m[1:]) for m in messages if m[0] == 3] == [{"metadata": {}, "status": "Success"}]  # type: ignore[index]


async def ws_exec(app: StreamApp, *command: str) -> tuple[bytes, dict[str, object]]:
    """Run `command` over v5 with stdout only: (stdout, status)."""
    query = urlencode([("command", part) for part in command] + [("stdout", "true")])
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{EXEC_PATH}?{query}", protocols=("v5.channel.k8s.io",)
    ) as ws:
        messages = await asyncio.wait_for(ws_messages(ws), 20)
    stdout = b"".join(m[1:] for m in messages if m[0] == 1)  # type: ignore[index,misc]
    statuses = [json.loads(m[1:]) for m in messages if m[0] == 3]  # type: ignore[index]
    assert len(statuses) == 1, messages
    return stdout, statuses[0]


async def test_exec_ends_background_children_that_hold_its_output(app: StreamApp) -> None:
    marker = unique_seconds(1)
    stdout, status = await ws_exec(app, "sh", "-c", f"sleep {marker} & echo started")
    assert (stdout, status["status"]) == (b"started\n", "Success")
    await wait_for(lambda: not processes_with_argument(marker), "the background sleep to be killed")


async def test_exec_killed_by_a_signal_exits_128_plus_the_signal(app: StreamApp) -> None:
    _, status = await ws_exec(app, "sh", "-c", "kill -9 $$")
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "137"}]}


async def test_websocket_v4_base64_protocol(app: StreamApp) -> None:
    query = "command=sh&command=-c&command=printf+x;+exit+2&stdout=true&stderr=true"
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{EXEC_PATH}?{query}", protocols=("v4.base64.channel.k8s.io",)
    ) as ws:
        assert ws.protocol == "v4.base64.channel.k8s.io"
        messages = await asyncio.wait_for(ws_messages(ws), 15)
    assert messages[:2] == ["1", "1eA=="]  # text: channel digit, then base64("x")
    status = json.loads(base64.b64decode(messages[-1][1:]))  # type: ignore[index]
    assert messages[-1][0] == "3"  # type: ignore[index]
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]


async def test_websocket_v1_reports_failure_as_text(app: StreamApp) -> None:
    query = "command=sh&command=-c&command=exit+4&stdout=true"
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{EXEC_PATH}?{query}", protocols=("channel.k8s.io",)
    ) as ws:
        messages = await asyncio.wait_for(ws_messages(ws), 15)
    assert messages == [b"\x01", b"\x03command terminated with non-zero exit code: command terminated with exit code 4"]


async def test_websocket_without_a_common_subprotocol_is_refused(app: StreamApp) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{app.url}{EXEC_PATH}?command=true&stdout=true",
                                     protocols=("v2.channel.k8s.io",))
    assert refused.value.status == 403


async def test_websocket_port_forward_channels(app: StreamApp) -> None:
    path = "/api/v1/namespaces/default/pods/web/portforward?ports=8080,9999"
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{path}", protocols=("v4.channel.k8s.io",)
    ) as ws:
        first = [await ws.receive_bytes() for _ in range(4)]
        # Each channel starts with its port, little endian: data 0 and error 1 for 8080, 2 and 3 for 9999.
        assert sorted(first) == sorted([b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02\x0f\x27", b"\x03\x0f\x27"])
        error = await asyncio.wait_for(ws.receive_bytes(), 15)
        assert error.startswith(b"\x03error forwarding port 9999 to pod uid-default-web")
        await ws.send_bytes(b"\x00over websocket\n")
        assert await asyncio.wait_for(ws.receive_bytes(), 15) == b"\x00web:8080 over websocket\n"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (EXEC_PATH + "?command=true&stdout=true", 400, "Upgrade request required"),
        ("/api/v1/namespaces/default/pods/multi/exec?command=true&stdout=true", 400,
         "a container name must be specified for pod multi, choose one of: [a b]"),
        (EXEC_PATH + "?command=true&stdout=true&container=nope", 400, "container nope is not valid for pod web"),
        (EXEC_PATH + "?stdout=true", 400, "you must specify at least one command for the container"),
        (EXEC_PATH + "?command=true", 400, "you must specify at least 1 of stdin, stdout, stderr"),
        ("/api/v1/namespaces/default/pods/web/portforward?ports=0", 400, 'port "0" must be > 0'),
    ],
)
async def test_requests_refused_before_any_upgrade(app: StreamApp, path: str, status: int, message: str) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
        if "Upgrade request required" in message:
            headers = {}
        async with session.post(f"{app.url}{path}", headers=headers) as response:
            assert response.status == status
            body = await response.json()
    assert (body["kind"], body["code"], body["message"]) == ("Status", status, message)


async def test_runtime_close_ends_live_sessions(app: StreamApp) -> None:
    marker = unique_seconds(2)
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{app.url}{EXEC_PATH}?command=sleep&command={marker}&stdout=true", protocols=("v5.channel.k8s.io",)
    ) as ws:
        await wait_for(lambda: processes_with_argument(marker), "the exec'd sleep to start")
        closing = asyncio.create_task(app.runtime.close())
        message = await asyncio.wait_for(ws.receive(), 15)
        while message.type is aiohttp.WSMsgType.BINARY:  # the "connection established" message
            message = await asyncio.wait_for(ws.receive(), 15)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.GOING_AWAY
        await asyncio.wait_for(closing, 15)
    assert not processes_with_argument(marker)
    async with aiohttp.ClientSession() as session, session.post(f"{app.url}{EXEC_PATH}?command=true") as refused:
        assert refused.status == 503


# -- SPDY protocol details ----------------------------------------------------------------------------


class SpdyClient:
    """A hand-made SPDY client on a raw connection, using the codec under test for framing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str) -> None:
        self._reader, self._writer = reader, writer
        self.head = head
        self._decoder, self._encoder = SpdyFrameReader(), SpdyFrameWriter()
        self._frames: list[Frame] = []

    @classmethod
    async def connect(cls, app: StreamApp, path: str, versions: str) -> SpdyClient:
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            f"X-Stream-Protocol-Version: {versions}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).decode()
        return cls(reader, writer, head)

    def send(self, *frames: Frame) -> None:
        for frame in frames:
            self._writer.write(self._encoder.encode(frame))

    def send_raw(self, data: bytes) -> None:
        self._writer.write(data)

    async def until(self, predicate: object) -> list[Frame]:
        """Frames received until one satisfies `predicate` (or the connection closes)."""
        async def read() -> list[Frame]:
            while not any(predicate(frame) for frame in self._frames):  # type: ignore[operator]
                data = await self._reader.read(65536)
                if not data:
                    break
                self._frames += self._decoder.feed(data)
            return self._frames

        return await asyncio.wait_for(read(), 15)

    async def closed(self) -> bool:
        async def drain() -> None:
            while data := await self._reader.read(65536):
                self._frames += self._decoder.feed(data)

        await asyncio.wait_for(drain(), 15)
        return True

    def close(self) -> None:
        self._writer.close()


async def test_spdy_exec_session_frame_by_frame(app: StreamApp) -> None:
    client = await SpdyClient.connect(app, f"{EXEC_PATH}?command=echo&command=hi&stdout=true",
                                      "v9.channel.k8s.io, v4.channel.k8s.io")
    assert client.head.startswith("HTTP/1.1 101")
    assert "X-Stream-Protocol-Version: v4.channel.k8s.io" in client.head
    client.send(PingFrame(ping_id=1),
                SynStreamFrame(stream_id=1, headers={"streamtype": "error"}),
                SynStreamFrame(stream_id=3, headers={"streamtype": "stdout"}))
    frames = await client.until(lambda f: isinstance(f, GoAwayFrame))
    client.close()  # as kubectl does once it has the outcome; the server then closes its side
    assert await app.served_requests(1) == [Served("exec", "spdy", "v4.channel.k8s.io")]
    assert frames[0] == PingFrame(ping_id=1)  # the client's ping comes back
    assert SynReplyFrame(stream_id=1, headers={}) in frames and SynReplyFrame(stream_id=3, headers={}) in frames
    stdout = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 3)
    error = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert (stdout, json.loads(error)) == (b"hi\n", {"metadata": {}, "status": "Success"})
    fins = [f.stream_id for f in frames if isinstance(f, DataFrame) and f.fin]
    assert fins.index(3) < fins.index(1)  # all output is closed before the outcome
    assert frames[-1] == GoAwayFrame(last_good_stream_id=3, status=GoAwayStatus.OK)


async def test_spdy_v2_reports_failure_as_text(app: StreamApp) -> None:
    client = await SpdyClient.connect(app, f"{EXEC_PATH}?command=sh&command=-c&command=exit+5&stdout=true",
                                      "v2.channel.k8s.io")
    assert "X-Stream-Protocol-Version: v2.channel.k8s.io" in client.head
    client.send(SynStreamFrame(stream_id=1, headers={"streamtype": "error"}),
                SynStreamFrame(stream_id=3, headers={"streamtype": "stdout"}))
    frames = await client.until(lambda f: isinstance(f, GoAwayFrame))
    client.close()
    error = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert error == b"command terminated with non-zero exit code: command terminated with exit code 5"


async def test_spdy_malformed_frame_ends_the_session_with_protocol_error(app: StreamApp) -> None:
    client = await SpdyClient.connect(app, f"{EXEC_PATH}?command=cat&stdin=true", "v4.channel.k8s.io")
    client.send_raw(struct.pack(">HHI", 0x8002, 6, 4) + b"\x00\x00\x00\x01")  # a SPDY/2 PING
    frames = await client.until(lambda f: isinstance(f, GoAwayFrame))
    assert frames[-1] == GoAwayFrame(last_good_stream_id=0, status=GoAwayStatus.PROTOCOL_ERROR)
    assert await client.closed()
    client.close()


async def test_spdy_stream_creation_timeout_closes_the_connection(app: StreamApp,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remotecommand, "STREAM_CREATION_TIMEOUT", 0.3)
    client = await SpdyClient.connect(app, f"{EXEC_PATH}?command=true&stdout=true", "v4.channel.k8s.io")
    client.send(SynStreamFrame(stream_id=1, headers={"streamtype": "error"}))  # never the stdout stream
    assert await client.closed()
    client.close()


async def test_spdy_version_negotiation_failure(app: StreamApp) -> None:
    client = await SpdyClient.connect(app, f"{EXEC_PATH}?command=true&stdout=true", "v9.channel.k8s.io")
    client.close()
    assert client.head.startswith("HTTP/1.1 403")
    assert "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in client.head


async def test_spdy_port_forward_refuses_invalid_streams(app: StreamApp) -> None:
    client = await SpdyClient.connect(app, "/api/v1/namespaces/default/pods/web/portforward", "portforward.k8s.io")
    assert "X-Stream-Protocol-Version: portforward.k8s.io" in client.head
    client.send(SynStreamFrame(stream_id=1, headers={"streamtype": "data"}),  # no port header
                SynStreamFrame(stream_id=3, headers={"streamtype": "error", "port": "8080", "requestid": "7"}),
                SynStreamFrame(stream_id=5, headers={"streamtype": "data", "port": "8080", "requestid": "7"}),
                DataFrame(stream_id=5, data=b"spdy\n", flags=FLAG_FIN))
    frames = await client.until(lambda f: isinstance(f, DataFrame) and f.stream_id == 3 and f.fin)
    client.close()
    assert RstStreamFrame(stream_id=1, status=RstStatus.CANCEL) in frames
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 5) == b"web:8080 spdy\n"
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 3) == b""
