"""`python -m connector access` output: the table of `access list`, `--output json`, and the one
line `request --wait` prints when the request is decided."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from connector.access import cli

APPROVED: dict[str, Any] = {
    "id": "ar-0123456789ab",
    "name": "prod-break-glass",
    "requester": "bob@example.com",
    "reason": "INC-42 stuck pod",
    "state": "approved",
    "approvals": [{"user": "alice@example.com", "at": "2026-01-01T10:00:00+00:00", "reason": "ok"},
                  {"user": "carol", "at": "2026-01-01T10:01:00+00:00", "reason": ""}],
    "decided": None,
    "expires_at": "2026-01-01T11:01:00+00:00",
}  # fmt: skip
PENDING: dict[str, Any] = {
    "id": "ar-ba9876543210",
    "name": "ops",
    "requester": "dave",
    "reason": "",
    "state": "pending",
    "approvals": [],
    "decided": None,
    "expires_at": None,
}


def printed(capsys: pytest.CaptureFixture[str], output: str, payload: dict[str, Any]) -> str:
    cli._print(argparse.Namespace(output=output), payload)
    return capsys.readouterr().out


def test_list_table_has_aligned_columns_and_dashes_for_blanks(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(capsys, "table", {"requests": [APPROVED, PENDING]})
    assert out.splitlines() == [
        "ID               NAME              REQUESTER        STATE     APPROVED BY              EXPIRES                    REASON",  # noqa: E501
        "ar-0123456789ab  prod-break-glass  bob@example.com  approved  alice@example.com,carol  2026-01-01T11:01:00+00:00  INC-42 stuck pod",  # noqa: E501
        "ar-ba9876543210  ops               dave             pending   -                        -                          ",  # noqa: E501
    ]  # fmt: skip


def test_one_request_is_a_table_of_one_row(capsys: pytest.CaptureFixture[str]) -> None:
    lines = printed(capsys, "table", PENDING).splitlines()
    assert len(lines) == 2 and lines[0].startswith("ID ") and lines[1].startswith("ar-ba9876543210  ops  ")


def test_empty_list_is_the_header_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys, "table", {"requests": []}).splitlines() == [
        "ID  NAME  REQUESTER  STATE  APPROVED BY  EXPIRES  REASON"
    ]


@pytest.mark.parametrize("payload", [{"requests": [APPROVED, PENDING]}, APPROVED])
def test_json_output_is_the_api_answer_unchanged(capsys: pytest.CaptureFixture[str], payload: dict[str, Any]) -> None:
    assert json.loads(printed(capsys, "json", payload)) == payload


@pytest.mark.parametrize(
    ("request_", "line"),
    [
        (APPROVED, "Access request ar-0123456789ab approved by alice@example.com, carol; "
                   "it grants access until 2026-01-01T11:01:00+00:00."),
        ({**PENDING, "state": "denied", "decided": {"user": "alice", "at": "x", "reason": "use the runbook"}},
         "Access request ar-ba9876543210 denied by alice: use the runbook."),
        ({**PENDING, "state": "revoked", "decided": {"user": "dave", "at": "x", "reason": ""}},
         "Access request ar-ba9876543210 revoked by dave."),
        ({**APPROVED, "state": "expired"}, "Access request ar-0123456789ab expired."),
    ],
)  # fmt: skip
def test_wait_outcome_line(request_: dict[str, Any], line: str) -> None:
    assert cli.outcome(request_) == line
