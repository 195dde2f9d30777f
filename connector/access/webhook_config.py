"""The `access_requests_webhook` config key: where each access request transition is POSTed, signed."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from connector.model import StrictModel


class AccessRequestsWebhookConfig(StrictModel):
    url: str = Field(description="http(s) URL that receives one JSON POST per transition")
    # The HMAC-SHA256 key: `env:NAME`, `file:/path` or the value itself (connector.secrets).
    secret: Annotated[SecretStr, Field(min_length=1)]

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value
