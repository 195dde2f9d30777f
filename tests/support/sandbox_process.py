"""Drive a running `python -m sandbox` from tests: start and stop the process, read what it wrote
(sandbox.json, the audit log, recordings), and run the real kubectl against its kubeconfig.

The sandbox runs as a child process rather than in the test process because moto's state is global
to a process (EmbeddedAws allows one per process, and other test modules start their own), because
the servers then never wait on the test's blocking calls for the GIL, and because it exercises the
very command a newcomer runs, SIGTERM shutdown included.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
COMMAND_TIMEOUT_SECONDS = 60.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class SandboxProcess:
    """`python -m sandbox --dir DIR --port 0 ARGS...` in a child process; `info` is its sandbox.json."""

    def __init__(self, state_dir: Path, args: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.args = args
        self.env = dict(env) if env is not None else None
        self.output = state_dir.parent / f"{state_dir.name}.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "--dir", str(self.state_dir), "--port", "0", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ready = self.state_dir / "sandbox.json"

        def probe() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"python -m sandbox exited with {self.process.returncode} before it was ready:\n{self.log()}"
                )
            try:
                return json.loads(ready.read_text()) if ready.exists() else None
            except ValueError:
                return None  # caught mid-write

        try:
            self.info = wait_for("the sandbox's sandbox.json", probe, START_TIMEOUT_SECONDS, interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self.info

    def log(self) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        connector_log = self.state_dir / "connector.log"
        if connector_log.exists():
            text += "\n--- connector.log (tail) ---\n" + connector_log.read_text(errors="replace")[-4000:]
        return text

    def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C or a service manager would; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"python -m sandbox did not stop within {STOP_TIMEOUT_SECONDS:.0f} s") from None
        return self.process.returncode


class AuditLog:
    """The connector's audit log (JSON lines), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        # Only newline-terminated lines: the last one may be caught half-written, and counting it
        # later than the others would shift every `since` index.
        *complete, _partial = self.path.read_text().split("\n")
        return [json.loads(line) for line in complete]

    def mark(self) -> int:
        """How many events there are now: pass it as `since` to look only at what comes after."""
        return len(self.events())

    def find(self, since: int = 0, **wanted: Any) -> list[dict[str, Any]]:
        """Events after `since` matching every `wanted` field; `verb=`, `resource=`, `subresource=`,
        `namespace=` and `name=` match inside the parsed request, anything else at the top level."""
        return [e for e in self.events()[since:] if _matches(e, wanted)]

    def wait(self, since: int = 0, timeout: float = 20.0, **wanted: Any) -> dict[str, Any]:
        """The first event after `since` matching `wanted`, waiting for it to be written."""
        described = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
        return wait_for(f"an audit event with {described}", lambda: next(iter(self.find(since, **wanted)), None),
                        timeout)


_REQUEST_FIELDS = ("verb", "resource", "subresource", "namespace", "name", "api_group")


def _matches(event: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    request = event.get("request") or {}
    for key, value in wanted.items():
        actual = request.get(key) if key in _REQUEST_FIELDS else event.get(key)
        if callable(value):
            if not value(actual):
                return False
        elif actual != value:
            return False
    return True


@dataclass
class Kubectl:
    """One kubectl binary with its own HOME (so its discovery cache is its own) and a kubeconfig."""

    binary: Path
    kubeconfig: Path
    home: Path
    cwd: Path
    env: Mapping[str, str]

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECTL_")}
        env.update({"HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig), **self.env, **(extra or {})})
        return env

    def run(
        self,
        *args: str,
        context: str | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *(("--context", context) if context else ()), *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, env=self._env(env), cwd=self.cwd, timeout=timeout, check=False
        )
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())

    @contextmanager
    def running(self, *args: str, context: str | None = None) -> Iterator[RunningCommand]:
        """A long-running kubectl (logs -f, port-forward), stopped when the block ends."""
        argv = [str(self.binary), *(("--context", context) if context else ()), *args]
        process = subprocess.Popen(
            argv, env=self._env(None), cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        command = RunningCommand(process)
        try:
            yield command
        finally:
            command.stop()


class RunningCommand:
    """A child process whose output lines are read by threads, so a test can wait for a line with a
    timeout instead of blocking forever on a pipe. Give it stdout as a pipe, and stderr as a pipe
    (collected in `stderr`) or merged into stdout."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert process.stdout is not None
        self._readers = [threading.Thread(target=self._pump, args=(process.stdout, self._lines.put, True), daemon=True)]
        if process.stderr is not None:
            self._readers.append(
                threading.Thread(target=self._pump, args=(process.stderr, self.stderr.append, False), daemon=True)
            )
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(pipe: IO[bytes], sink: Callable[[Any], None], mark_end: bool) -> None:
        for line in pipe:
            sink(line.decode(errors="replace"))
        if mark_end:
            sink(None)

    def line(self, timeout: float = 20.0) -> str:
        """The next line of stdout; fails if none comes within `timeout` s or the output ends."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.process.args!r} printed no line for {timeout:.0f} s") from None
        if line is None:
            raise AssertionError(f"{self.process.args!r} ended (exit {self.process.wait()}): {''.join(self.stderr)}")
        return line

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(10)
