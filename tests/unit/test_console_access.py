"""The Access page's pure parts: the subjects-by-sockets matrix from a PolicyEngine, the explain form's
checks, and the `access` console right."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.console.access_page import _explain, access_matrix
from connector.identity import Identity
from connector.policy.config_input import UsageError
from connector.policy.engine import PolicyEngine
from connector.policy.model import Policy
from tests.unit.test_config_errors import errors_of

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
POLICIES = [
    {"name": "dev-read", "subjects": {"groups": ["dev"], "users": ["bob"]}, "sockets": ["prod"],
     "kubernetes": {"rules": [{"verbs": ["get", "list"], "resources": ["pods"], "namespaces": ["*"]}]}},
    {"name": "tagged", "subjects": {"groups": ["ops"]}, "socket_tags": {"env": ["staging"]}, "kubernetes": {},
     "conditions": {"source_ips": ["10.0.0.0/8"]}},
    {"name": "break-glass", "subjects": {"groups": ["ops"]}, "sockets": ["*"], "kubernetes": {}, "grant_only": True},
    {"name": "everyone-discovery", "subjects": {"users": ["*"]}, "sockets": ["prod"], "kubernetes": {"rules": []}},
    {"name": "auditors", "subjects": {"users": ["alice"]}, "console": {"access": "read"}},
]  # fmt: skip
SOCKETS = [("prod", {}), ("staging-eu", {"env": "staging"})]


def _engine() -> PolicyEngine:
    return PolicyEngine([Policy.model_validate(p) for p in POLICIES])


def test_the_matrix_has_a_row_per_named_user_and_group_and_the_policies_per_socket():
    rows = {(r.kind, r.name): [[p.name for p in cell] for cell in r.cells] for r in access_matrix(_engine(), SOCKETS)}
    assert list(rows) == [("user", "alice"), ("user", "bob"), ("group", "dev"), ("group", "ops")]  # no `*` row
    assert rows[("user", "alice")] == [["everyone-discovery"], []]
    assert rows[("user", "bob")] == [["dev-read", "everyone-discovery"], []]
    assert rows[("group", "ops")] == [["break-glass", "everyone-discovery"], ["tagged", "break-glass"]]


def test_matrix_cells_say_which_policies_hold_only_under_conditions_or_with_a_grant():
    ops = next(r for r in access_matrix(_engine(), SOCKETS) if r.name == "ops")
    tagged, break_glass = ops.cells[1]
    assert (tagged.conditional, tagged.grant_only) == (True, False)
    assert (break_glass.conditional, break_glass.grant_only, break_glass.kubernetes) == (False, True, True)


def _form(**values: str) -> dict[str, str]:
    form = {"user": "bob", "groups": "", "socket": "prod", "method": "GET", "path": "/api/v1/namespaces/a/pods"}
    return {**form, **values}


def test_explain_decides_with_the_groups_given_and_names_the_policy():
    assert '"policy": "dev-read"' in _explain(_engine(), _form(), {}, NOW)
    denied = _explain(_engine(), _form(user="carol", method="delete"), {}, NOW)
    assert '"allowed": false' in denied and "everyone-discovery" in denied
    assert '"allowed": true' in _explain(_engine(), _form(user="carol", groups="x, dev"), {}, NOW)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"user": ""}, "user is required"),
        ({"path": "pods"}, "path must start with /"),
        ({"path": "/api/v1/namespaces/a/pods?watch=1&watch=0"}, "400 Bad Request"),
        ({"method": "G-ET"}, "is not an HTTP method"),
        ({"groups": "g" * 5000}, "groups is longer than"),
    ],
)
def test_explain_refuses_bad_input_with_what_was_wrong(values, said):
    with pytest.raises(UsageError, match=said):
        _explain(_engine(), _form(**values), {}, NOW)


def test_the_access_right_adds_up_and_is_validated(tmp_path):
    engine = _engine()
    assert engine.console_rights(Identity(user="alice"), "", NOW).access == "read"
    assert engine.console_rights(Identity(user="alice"), "", NOW).any
    assert engine.console_rights(Identity(user="bob"), "", NOW).access is None
    errors = errors_of(tmp_path, "policies:\n  - name: r\n    subjects: {users: [a]}\n    console: {access: write}\n")
    assert len(errors) == 1 and errors[0].startswith(":4:") and "access" in errors[0], errors
