"""A botocore credential provider that assumes an IAM role with another session's credentials.

botocore assumes roles only from profiles in the shared config files; the connector's config names the
role directly, so this plugs the same machinery (AssumeRoleCredentialFetcher: cached, refreshed by
botocore before expiry, thread-safe) into a session's credential chain.
"""

from __future__ import annotations

import boto3
from botocore.credentials import AssumeRoleCredentialFetcher, CredentialProvider, DeferredRefreshableCredentials
from botocore.exceptions import CredentialRetrievalError


class AssumeRoleProvider(CredentialProvider):
    """Credentials of `role_arn`, assumed with `base`'s credentials on first use (network I/O)."""

    METHOD = "assume-role"
    CANONICAL_NAME = "custom-connector-assume-role"

    def __init__(
        self, base: boto3.Session, role_arn: str, *, session_name: str, sts_region: str, external_id: str | None = None
    ):
        super().__init__()
        self._base = base
        self._sts_region = sts_region
        self._role_arn = role_arn
        self._extra = {"RoleSessionName": session_name}
        if external_id is not None:
            self._extra["ExternalId"] = external_id

    def load(self) -> DeferredRefreshableCredentials:
        source = self._base.get_credentials()
        if source is None:
            raise CredentialRetrievalError(
                provider=self.METHOD, error_msg=f"no AWS credentials found to assume {self._role_arn} with"
            )
        def sts_client(service: str, **kwargs: object) -> object:
            # botocore asks for STS without a region; with none configured that is a NoRegionError.
            return self._base.client(service, **{"region_name": self._sts_region, **kwargs})

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=self._role_arn,
            extra_args=dict(self._extra),
        )
        return DeferredRefreshableCredentials(method=self.METHOD, refresh_using=fetcher.fetch_credentials)
