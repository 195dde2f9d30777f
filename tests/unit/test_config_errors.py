"""Config errors of the `policies` section: one `FILE:LINE: path: message` line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConfigError, load_config

HEAD = """\
policies:
  - name: dev
    subjects: {users: [alice]}
    sockets: [prod]
"""


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    prefix = f"{path}:"
    assert all(line.startswith(prefix) for line in info.value.errors)
    return [line[len(str(path)) :] for line in info.value.errors]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (  # wrong key
            "    kubernetes:\n      rules:\n        - verbs: [get]\n          resource: [pods]\n",
            ":8: policies[0].kubernetes.rules[0].resource: unknown key (check its spelling and the documented keys)",
        ),
        (  # wrong type
            "    kubernetes:\n      rules:\n        - verbs: get\n",
            ":7: policies[0].kubernetes.rules[0].verbs: input should be a valid tuple, got 'get'",
        ),
        (  # unknown verb, at its index
            "    kubernetes:\n      rules:\n        - verbs:\n            - get\n            - gett\n",
            ':9: policies[0].kubernetes.rules[0].verbs[1]: unknown verb "gett" (known: get, list, watch, create, '
            "update, patch, delete, deletecollection, proxy, impersonate, escalate, bind, use, approve, sign, "
            'attest, or "*")',
        ),
        (  # malformed CIDR, named
            "    conditions:\n      source_ips: [10.0.0.0/8, 10.0.0.0/33]\n",
            ':6: policies[0].conditions.source_ips[1]: malformed CIDR "10.0.0.0/33": '
            "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
        ),
        (  # bad glob in a rule
            "    kubernetes:\n      rules:\n        - namespaces: [team-*-dev]\n",
            ':7: policies[0].kubernetes.rules[0].namespaces[0]: bad glob "team-*-dev": use "*" alone or once at '
            'the end ("prefix*")',
        ),
        (  # bad glob in sockets
            "    kubernetes: {}\n  - name: other\n    subjects: {users: [bob]}\n    sockets: ['eks-?']\n"
            "    kubernetes: {}\n",
            ":8: policies[1].sockets[0]: bad glob \"eks-?\": '?' is not allowed, only \"*\" is a wildcard",
        ),
        (  # bad timezone
            "    conditions:\n      time:\n        hours: 08:00-18:00\n        timezone: Europe/Berlim\n",
            ':8: policies[0].conditions.time.timezone: unknown timezone "Europe/Berlim": use an IANA name such as '
            '"Europe/Berlin" or "UTC"',
        ),
        (  # bad time window
            "    conditions:\n      time: {hours: '8am-6pm'}\n",
            ':6: policies[0].conditions.time.hours: bad time window "8am-6pm": write "HH:MM-HH:MM", e.g. "08:00-18:00"',
        ),
        (  # bad day
            "    conditions:\n      time: {days: [mon, fri, funday]}\n",
            ':6: policies[0].conditions.time.days[2]: unknown day "funday" (use mon, tue, wed, thu, fri, sat, sun)',
        ),
        (  # naive datetime
            "    conditions:\n      not_after: 2027-01-01T00:00:00\n",
            ":6: policies[0].conditions.not_after: 2027-01-01T00:00:00 has no timezone: add one, e.g. "
            "2027-01-01T00:00:00Z or +02:00",
        ),
        (  # missing key
            "  - sockets: [x]\n    subjects: {users: [a]}\n",
            ":5: policies[1].name: required key is missing",
        ),
    ],
)
def test_one_error_line(tmp_path, body, expected):
    assert errors_of(tmp_path, HEAD + body) == [expected]


def test_every_problem_is_reported(tmp_path):
    text = HEAD + (
        "    conditions:\n"
        "      source_ips: [nonsense]\n"
        "    kubernetes:\n"
        "      rules:\n"
        "        - verbs: [get, gett]\n"
        "          colour: red\n"
    )
    lines = errors_of(tmp_path, text)
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [":6", "policies[0].conditions.source_ips[0]"],
        [":9", "policies[0].kubernetes.rules[0].verbs[1]"],
        [":10", "policies[0].kubernetes.rules[0].colour"],
    ]


def test_the_whole_config_loads_with_only_policies(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + "    kubernetes: {}\n")
    config = load_config(path)
    assert [p.name for p in config.policies] == ["dev"]
