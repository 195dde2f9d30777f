"""The `recordings:` section of the connector's config: where exec/attach session recordings go.

    recordings:
      dir: /var/lib/connector/recordings   # required to record; one file per session
      stdin: false                          # also record what the user typed (may hold secrets)
      max_bytes: 67108864                   # per-session cap; past it the recording notes truncation
      s3:                                   # optional: upload each recording at session end
        bucket: my-recordings
        prefix: sessions/
        region: eu-west-1

Without `dir` nothing is recorded. S3 needs `dir` too: the local file is the staging copy that is
kept until the upload succeeds, so a session is never lost while S3 is unreachable.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from connector.model import StrictModel

# A file smaller than this could not hold the header, a truncation note and the exit status.
MIN_MAX_BYTES = 16 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class S3RecordingConfig(StrictModel):
    bucket: str
    prefix: str = ""
    region: str | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value or re.match(r"^\d+\.\d+\.\d+\.\d+$", value):
            raise ValueError(
                f"{value!r} is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, "
                "dots and hyphens, starting and ending with a letter or digit)"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(f"the S3 key prefix must not start with '/', got {value!r} (write 'sessions/')")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"the S3 key prefix must not contain control characters, got {value!r}")
        if len(value.encode()) > 512:
            raise ValueError("the S3 key prefix is longer than 512 bytes")
        return value

    @field_validator("region")
    @classmethod
    def _region_name(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region name (like 'eu-west-1')")
        return value


class RecordingConfig(StrictModel):
    dir: Path | None = None
    stdin: bool = False
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES)
    s3: S3RecordingConfig | None = None

    @field_validator("max_bytes")
    @classmethod
    def _cap(cls, value: int) -> int:
        if value < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES} (16 KiB), got {value}")
        return value

    @field_validator("dir", mode="before")
    @classmethod
    def _directory(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "":
            raise ValueError("the recordings dir must not be empty (leave the key out to disable recordings)")
        return value

    @model_validator(mode="after")
    def _s3_needs_dir(self) -> RecordingConfig:
        if self.s3 is not None and self.dir is None:
            raise ValueError(
                "recordings.s3 needs recordings.dir: recordings are written there first and kept until "
                "the upload succeeds"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.dir is not None
