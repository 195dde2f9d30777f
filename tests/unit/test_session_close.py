"""What the end-of-session audit event says about a recording comes from how the recording ended."""

from __future__ import annotations

from typing import Any

import pytest

from connector.audit.recording import RecordingSummary
from connector.proxy.handler import Call, _close_tap


class _EndedTap:
    """A tap whose recording already ended the given way (close() is what the relay calls last)."""

    recording = "/recordings/abc.cast"  # where it was going to be written

    def __init__(self, summary: RecordingSummary):
        self.summary = summary

    def client_bytes(self, data: bytes) -> None: ...

    def upstream_bytes(self, data: bytes) -> None: ...

    async def close(self) -> Any:
        return self.summary


def _summary(**overrides: Any) -> RecordingSummary:
    base = dict(
        recording="/recordings/abc.cast",
        exit_code=0,
        exit_message="",
        bytes_from_client=1,
        bytes_from_upstream=2,
        truncated=False,
    )
    return RecordingSummary(**{**base, **overrides})


@pytest.mark.parametrize(
    ("summary", "recording", "error"),
    [
        (_summary(), "/recordings/abc.cast", None),
        (
            _summary(recording=None, write_error="/recordings/abc.cast.part: No space left on device"),
            None,
            "recording not written: /recordings/abc.cast.part: No space left on device",
        ),
        (
            _summary(decode_error="websocket: reserved bits set"),
            "/recordings/abc.cast",
            "recording incomplete: websocket: reserved bits set",
        ),
    ],
    ids=["written", "write-failed", "decode-stopped"],
)
async def test_the_audit_event_names_only_a_recording_that_exists(summary, recording, error):
    call = Call(ctx=None, request=None)  # type: ignore[arg-type]
    await _close_tap(call, _EndedTap(summary))
    assert (call.recording, call.error) == (recording, error)
