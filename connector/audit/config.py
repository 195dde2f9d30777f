"""The `audit:` section of the connector config: where the one-line-per-request audit log goes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from connector.model import StrictModel


class AuditConfig(StrictModel):
    """Audit log destination and durability.

    With no `file` the events go to stdout (one JSON object per line), which is what a container
    log pipeline collects. With `file` they are appended to that path; SIGHUP reopens it, so
    logrotate's `postrotate kill -HUP` works.
    """

    file: str | None = Field(
        default=None, min_length=1, description="Append audit events to this file instead of stdout."
    )
    fsync: Literal["always", "interval", "never"] = Field(
        default="interval",
        description=(
            "When to force events to disk: always (before each response completes; slowest), "
            "interval (every fsync_interval_seconds), never (leave it to the OS)."
        ),
    )
    fsync_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    fail_closed: bool = Field(
        default=False,
        description="Refuse requests with 503 while audit events cannot be written, instead of only alerting.",
    )
