"""Session recordings made from what the real kubectl does through the real connector.

kubectl 1.33 (exec and attach over websocket, v5.channel.k8s.io) and 1.29 (SPDY/3.1) talk to a
connector (tests.support.proxy_harness) in front of tests.support.stream_app, which runs the
emulator's exec/attach/port-forward code. Every session's recording is found through the audit
event of the session's end (which must name it) and checked event by event; the real
`asciinema cat` replays it to what kubectl showed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.proxy_harness import Cluster, ProxyHarness
from tests.support.pty_terminal import PtyTerminal
from tests.support.stream_app import StreamApp, kubectl_binary, make_pod

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.kubectl]

ASCIINEMA = Path(sys.executable).parent / "asciinema"
WAIT_SECONDS = 30
# kubectl 1.33 runs exec and attach over websocket, 1.29 over SPDY/3.1 (the protocol the recording names).
VERSIONS = [
    pytest.param(33, "v5.channel.k8s.io", id="1.33-websocket"),
    pytest.param(29, "v4.channel.k8s.io", id="1.29-spdy"),
]
PORT_FORWARD_VERSIONS = [
    pytest.param(33, "SPDY/3.1+portforward.k8s.io", id="1.33-websocket"),
    pytest.param(29, "portforward.k8s.io", id="1.29-spdy"),
]
WEB = "web-0"
CLOCK = "clock"


@dataclass
class World:
    tmp: Path
    plain: ProxyHarness  # recordings without stdin (the default)
    with_stdin: ProxyHarness  # recordings.stdin: true


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("recording-kubectl")
    pods = [
        make_pod(WEB, containers=[{"name": "main", "image": "busybox", "ports": [{"containerPort": 8080}]}]),
        make_pod(CLOCK, containers=[{"name": "ticker", "image": "busybox"}]),  # attach shows its ticks
    ]
    (tmp / "app").mkdir()
    async with StreamApp(tmp / "app", pods, tls=True, attach_tick_seconds=0.1) as app:
        assert app.ca is not None
        cluster = Cluster(app.url, app.ca.cert_pem, "unchecked")  # the stream app checks no token
        harnesses = []
        for name, stdin in (("plain", False), ("stdin", True)):
            (tmp / name).mkdir()
            config = {"recordings": {"dir": str(tmp / name / "recordings"), "stdin": stdin}}
            harnesses.append(ProxyHarness(tmp / name, cluster=cluster, config=config))
        async with harnesses[0] as plain, harnesses[1] as with_stdin:
            yield World(tmp, plain, with_stdin)


class Kubectl:
    """One real kubectl build on one connector, as alice (who may exec, attach and port-forward in default)."""

    def __init__(self, world: World, minor: int, harness: ProxyHarness | None = None):
        binary = kubectl_binary(minor)
        if binary is None:
            pytest.skip(f"kubectl 1.{minor} is not installed beside the kubectl dispatcher (kubectl.1.{minor})")
        if not ASCIINEMA.exists():
            pytest.skip(f"asciinema is not installed in this virtualenv ({ASCIINEMA}); it replays the recordings")
        self.harness = harness or world.plain
        home = world.tmp / f"home-1.{minor}"  # kubectl caches discovery here; one per build for the module
        home.mkdir(exist_ok=True)
        self.home = home
        self.binary = str(binary)
        kubeconfig = self.harness.kubeconfig(self.harness.tmp / "kubeconfig")
        self.env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
        self.env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", None)
        self.audit_mark = len(self.harness.audit_events())

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--context", "alice", *args]

    async def run(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        process = await self.start(*args, stdin=asyncio.subprocess.PIPE if stdin is not None else None)
        out, err = await asyncio.wait_for(process.communicate(stdin), WAIT_SECONDS)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def start(self, *args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv(*args), env=self.env,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def session(self, stream: str) -> Recording:
        """The recording of the one `stream` session run since the last call, found through its audit event."""
        event = await ended_session(self.harness, stream, self.audit_mark)
        self.audit_mark = len(self.harness.audit_events())
        return Recording.named_by(event, self.harness)

    async def replay(self, recording: Recording) -> str:
        """What the real `asciinema cat` prints for the recording."""
        process = await asyncio.create_subprocess_exec(
            str(ASCIINEMA), "cat", str(recording.path),
            env={"HOME": str(self.home), "PATH": os.environ.get("PATH", "")},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), WAIT_SECONDS)
        assert process.returncode == 0, err.decode()
        return out.decode()


async def ended_session(harness: ProxyHarness, stream: str, since: int) -> dict[str, Any]:
    """The audit event of the end of the one `stream` session logged after the first `since` events.

    It is written once the recording is finished, possibly just after kubectl has exited: wait for it."""
    for _ in range(WAIT_SECONDS * 50):
        ended = [
            e for e in harness.audit_events()[since:] if e["stage"] == "ResponseComplete" and e.get("stream") == stream
        ]
        if ended:
            assert len(ended) == 1, ended
            return ended[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no end of a {stream} session in the audit log: {harness.audit_events()[since:]}")


@dataclass(frozen=True)
class Recording:
    path: Path
    header: dict[str, Any]
    events: list[list[Any]]

    @classmethod
    def named_by(cls, event: dict[str, Any], harness: ProxyHarness) -> Recording:
        """The recording the audit event names, checked to be this session's file in the recordings dir."""
        assert event["recording"], f"the audit event names no recording: {event}"
        path = Path(event["recording"])
        assert path == harness.tmp / "recordings" / f"{event['request_id']}.cast"
        header_line, *lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(header_line)
        assert header["version"] == 2 and header["connector"]["session_id"] == event["request_id"]
        events = [json.loads(line) for line in lines]
        assert all(isinstance(e, list) and len(e) == 3 for e in events), events
        times = [e[0] for e in events]
        assert times == sorted(times), "event times must not go backwards"
        return cls(path, header, events)

    @property
    def meta(self) -> dict[str, Any]:
        return self.header["connector"]

    def codes(self) -> set[str]:
        return {code for _, code, _ in self.events}

    def text(self, code: str) -> str:
        return "".join(data for _, c, data in self.events if c == code)

    def values(self, code: str) -> list[str]:
        return [data for _, c, data in self.events if c == code]

    def final_marker(self) -> str:
        _, code, data = self.events[-1]
        assert code == "m", f"the last event is not the closing marker: {self.events[-1]}"
        return data


def expected_meta(**values: Any) -> dict[str, Any]:
    return {
        "user": "alice", "groups": ["dev"], "source_ip": "127.0.0.1", "socket": "prod", "namespace": "default",
        **values,
    }  # fmt: skip


def assert_meta(recording: Recording, **values: Any) -> None:
    expected = expected_meta(**values)
    assert {key: recording.meta.get(key) for key in expected} == expected


@pytest.mark.parametrize(("minor", "protocol"), VERSIONS)
async def test_exec_records_stdout_stderr_and_the_exit_status(world: World, minor: int, protocol: str) -> None:
    kubectl = Kubectl(world, minor)
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    code, out, err = await kubectl.run("exec", WEB, "--", *command)
    assert (code, out, err) == (3, "out\n", "err\ncommand terminated with exit code 3\n")

    recording = await kubectl.session("exec")
    assert_meta(
        recording, pod=WEB, container="main", command=command, tty=False, stdin=False, protocol=protocol,
        subresource="exec",
    )  # fmt: skip
    assert (recording.header["width"], recording.header["height"]) == (80, 24)
    assert recording.codes() == {"o", "m"}
    # stdout and stderr are separate streams: their relative order is the server's.
    assert sorted(recording.text("o").splitlines()) == ["err", "out"]
    assert recording.final_marker().startswith("exit status 3")
    assert sorted((await kubectl.replay(recording)).splitlines()) == ["err", "out"]


@pytest.mark.parametrize(("minor", "protocol"), VERSIONS)
async def test_tty_exec_records_the_window_size_and_a_resize(world: World, minor: int, protocol: str) -> None:
    kubectl = Kubectl(world, minor)
    terminal = PtyTerminal(rows=30, cols=100)
    process: asyncio.subprocess.Process | None = None
    try:
        process = await terminal.spawn(
            kubectl.argv("exec", "-it", WEB, "--", "sh"), env={**kubectl.env, "TERM": "xterm"}
        )
        await terminal.wait_for_output()  # the shell's prompt: kubectl has put the terminal in raw mode
        terminal.type(b"stty size\r")
        await terminal.read_until(b"\r\n30 100\r\n")
        terminal.resize(process, rows=40, cols=132)
        # The resize travels on its own channel and may reach the shell after the next keystrokes: the
        # shell waits (boundedly) until it sees the new size, then shows it.
        terminal.type(
            b'n=0; while [ "$(stty size)" = "30 100" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; '
            b"stty size; exit 7\r"
        )
        shown = (await terminal.read_to_end()).decode()
        code = await asyncio.wait_for(process.wait(), WAIT_SECONDS)
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        terminal.close()
    assert code == 7, shown
    # The shell's prompt may come before or after the echo of the line typed ahead of it.
    assert re.search(r"(\r\n|# )40 132\r\n", shown), shown
    kubectls_own = "command terminated with exit code 7\r\n"
    assert shown.endswith(kubectls_own)

    recording = await kubectl.session("exec")
    assert_meta(
        recording, pod=WEB, container="main", command=["sh"], tty=True, stdin=True, protocol=protocol,
        subresource="exec",
    )  # fmt: skip
    assert (recording.header["width"], recording.header["height"]) == (100, 30)
    assert recording.values("r") == ["100x30", "132x40"]
    assert recording.codes() == {"r", "o", "m"}  # stdin is not recorded by default
    assert recording.final_marker().startswith("exit status 7")
    # Everything the terminal showed came from the container, except kubectl's own last line.
    assert recording.text("o") == shown.removesuffix(kubectls_own)
    assert await kubectl.replay(recording) == shown.removesuffix(kubectls_own)


@pytest.mark.parametrize(("minor", "protocol"), VERSIONS)
async def test_attach_records_the_containers_output(world: World, minor: int, protocol: str) -> None:
    kubectl = Kubectl(world, minor)
    process = await kubectl.start("attach", CLOCK)
    assert process.stdout is not None
    seen: list[str] = []
    try:
        while len(seen) < 3:
            line = await asyncio.wait_for(process.stdout.readline(), WAIT_SECONDS)
            assert line, f"kubectl attach ended after {seen!r}"
            seen.append(line.decode().rstrip("\n"))
    finally:
        process.terminate()
        await process.wait()
    assert all(re.fullmatch(rf"{CLOCK} ticker tick \d+", line) for line in seen), seen

    recording = await kubectl.session("attach")
    assert_meta(
        recording, pod=CLOCK, container="ticker", command=[], tty=False, stdin=False, protocol=protocol,
        subresource="attach",
    )  # fmt: skip
    assert recording.codes() == {"o", "m"}
    # The recording holds what kubectl printed, and maybe ticks that came after it stopped reading.
    assert recording.text("o").splitlines()[: len(seen)] == seen
    assert (await kubectl.replay(recording)).splitlines()[: len(seen)] == seen
    assert recording.final_marker() == "session ended without an exit status"


@pytest.mark.parametrize(("minor", "protocol"), VERSIONS)
async def test_stdin_is_recorded_only_when_enabled(world: World, minor: int, protocol: str) -> None:
    # Enough to take many websocket frames / SPDY data frames each way, split as the endpoints like.
    typed = "typed secret\n" + "".join(f"line {n:05d} of what the user pasted\n" for n in range(8000))
    for harness, recorded in ((world.plain, False), (world.with_stdin, True)):
        kubectl = Kubectl(world, minor, harness)
        code, out, err = await kubectl.run("exec", "-i", WEB, "--", "cat", stdin=typed.encode())
        assert (code, out, err) == (0, typed, "")

        recording = await kubectl.session("exec")
        assert_meta(recording, pod=WEB, command=["cat"], tty=False, stdin=True, protocol=protocol, subresource="exec")
        assert recording.text("o") == typed
        assert recording.text("i") == (typed if recorded else "")
        assert recording.codes() == ({"i", "o", "m"} if recorded else {"o", "m"})
        assert recording.final_marker() == "exit status 0"
        assert await kubectl.replay(recording) == typed  # `asciinema cat` shows output, never input


@pytest.mark.parametrize(("minor", "protocol"), PORT_FORWARD_VERSIONS)
async def test_port_forward_records_metadata_and_byte_counts_only(world: World, minor: int, protocol: str) -> None:
    kubectl = Kubectl(world, minor, world.with_stdin)  # even with stdin recorded, no data is
    process = await kubectl.start("port-forward", f"pod/{WEB}", ":8080")
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), WAIT_SECONDS)).decode()
        found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert found, line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(found.group(1)))
        writer.write(b"hello through the tunnel\n")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        writer.close()
        assert answer == f"{WEB}:8080 hello through the tunnel\n".encode()
    finally:
        process.terminate()
        await process.wait()

    event = await ended_session(kubectl.harness, "portforward", kubectl.audit_mark)
    recording = Recording.named_by(event, kubectl.harness)
    assert_meta(recording, pod=WEB, protocol=protocol, subresource="portforward", tty=False)
    assert [code for _, code, _ in recording.events] == ["m"]
    assert recording.final_marker() == (
        f"port-forward ended: {event['bytes_in']} bytes from the client, {event['bytes_out']} bytes to the client"
    )
    assert event["bytes_in"] > 0 and event["bytes_out"] > len(answer)
    assert "hello" not in recording.path.read_text()
