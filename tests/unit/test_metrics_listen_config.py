"""`server.metrics_listen`: where the Prometheus metrics are served, or off; bad values name their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConfigError, load_config
from connector.hosts import is_loopback
from connector.proxy.config import DEFAULT_METRICS_LISTEN, ListenAddress


def server_of(tmp_path: Path, server: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text("policies: []\nserver:\n" + server)
    return load_config(path).server


def error_of(tmp_path: Path, server: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text("policies: []\nserver:\n" + server)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.errors
    assert line.startswith(f"{path}:")
    return line[len(str(path)) :]


def test_the_default_is_loopback_only_on_a_port_of_its_own(tmp_path: Path) -> None:
    server = server_of(tmp_path, "  listen: 0.0.0.0:8443\n")
    assert server.metrics_listen == DEFAULT_METRICS_LISTEN
    assert server.metrics_address == ListenAddress("127.0.0.1", 8442)
    assert is_loopback(server.metrics_address.host)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:0", ListenAddress("127.0.0.1", 0)),  # any free port: the connector logs the one it got
        ("0.0.0.0:9000", ListenAddress("0.0.0.0", 9000)),
        (":9000", ListenAddress("0.0.0.0", 9000)),
        ('"[::1]:9000"', ListenAddress("::1", 9000)),
        ("off", None),  # YAML reads a bare off as false
        ('"off"', None),
        ("OFF", None),
        ('""', None),
        ("null", None),
    ],
)
def test_good_values(tmp_path: Path, value: str, address: ListenAddress | None) -> None:
    assert server_of(tmp_path, f"  metrics_listen: {value}\n").metrics_address == address


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "  metrics_listen: nowhere\n",
            ':3: server.metrics_listen: listen "nowhere": write HOST:PORT, e.g. 0.0.0.0:8443',
        ),
        (
            "  metrics_listen: 127.0.0.1:70000\n",
            ':3: server.metrics_listen: listen "127.0.0.1:70000": the port must be a number from 0 to 65535',
        ),
        (
            "  metrics_listen: true\n",
            ":3: server.metrics_listen: metrics_listen True: write HOST:PORT, e.g. 127.0.0.1:8442, or off",
        ),
        (
            "  metrics_listen: 9000\n",
            ":3: server.metrics_listen: metrics_listen 9000: write HOST:PORT, e.g. 127.0.0.1:8442, or off",
        ),
        (
            "  listen: 127.0.0.1:9000\n  metrics_listen: :9000\n",
            ':2: server: metrics_listen ":9000" takes the port of listen "127.0.0.1:9000": give it another port',
        ),
    ],
)
def test_bad_values_are_one_line_with_file_and_line(tmp_path: Path, server: str, expected: str) -> None:
    assert error_of(tmp_path, server) == expected


def test_the_same_port_on_another_address_is_allowed(tmp_path: Path) -> None:
    server = server_of(tmp_path, "  listen: 10.0.0.1:9000\n  metrics_listen: 127.0.0.1:9000\n")
    assert server.metrics_address == ListenAddress("127.0.0.1", 9000)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("metrics.example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
