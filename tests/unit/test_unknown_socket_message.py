"""The refusal of an unknown socket names the sockets the caller may use, a few of them (a table)."""

from __future__ import annotations

import pytest

from connector.proxy.handler import unknown_socket_message


@pytest.mark.parametrize(
    ("usable", "expected"),
    [
        ([], "socket stagin not found; no socket on this connector is open to bob"),
        (["staging"], "socket stagin not found; sockets you may use: staging"),
        (["prod", "dev", "staging"], "socket stagin not found; sockets you may use: dev, prod, staging"),
        (
            [f"s{n}" for n in range(7)],
            "socket stagin not found; sockets you may use: s0, s1, s2, s3, s4 and 2 more (see /v1/sockets)",
        ),
    ],
)
def test_unknown_socket_message(usable: list[str], expected: str) -> None:
    assert unknown_socket_message("stagin", "bob", usable) == expected
