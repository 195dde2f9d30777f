"""EKS bearer tokens per (credentials, region, cluster), refreshed ahead of time, never handed out stale.

A token is handed out for at most 14 minutes after its X-Amz-Date (the cluster accepts it for 15;
the minute is margin for clock skew and a request in flight). From 10 minutes on, the next caller
starts a refresh in the background and still gets the current token; at 14 minutes callers wait for
the new one. Concurrent callers share one refresh. After a failed refresh the cache waits a few
seconds before trying again, so an STS outage is not multiplied by the request rate. When a cluster
refuses a token (HTTP 401), `invalidate` drops it, so the next caller gets a freshly signed one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connector.aws.credentials import AwsCredentials, make_session
from connector.aws.token_format import CLIENT_VALIDITY, EksTokenError
from connector.aws.token_sign import EksToken, EksTokenSigner
from connector.metrics import TOKEN_REFRESHES

log = logging.getLogger(__name__)

REFRESH_AFTER = timedelta(minutes=10)
RETRY_AFTER_FAILURE = timedelta(seconds=5)

SignerFactory = Callable[[AwsCredentials | None, str], EksTokenSigner]
_Key = tuple[AwsCredentials | None, str, str]


def default_signer_factory(credentials: AwsCredentials | None, region: str) -> EksTokenSigner:
    return EksTokenSigner(make_session(credentials, region=region), region)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Failure:
    at: datetime
    error: EksTokenError


class EksTokenCache:
    """Bearer tokens for EKS upstreams. `clock` and `signer_factory` are there for tests and benchmarks."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = _utcnow,
        signer_factory: SignerFactory = default_signer_factory,
        refresh_after: timedelta = REFRESH_AFTER,
    ):
        if not timedelta(0) <= refresh_after < CLIENT_VALIDITY:
            raise ValueError(f"refresh_after must be between 0 and {CLIENT_VALIDITY}")
        self._clock = clock
        self._signer_factory = signer_factory
        self._refresh_after = refresh_after
        self._tokens: dict[_Key, EksToken] = {}
        self._refreshing: dict[_Key, asyncio.Task[EksToken]] = {}
        self._failures: dict[_Key, _Failure] = {}
        self._signers: dict[tuple[AwsCredentials | None, str], EksTokenSigner] = {}
        self._signer_locks: dict[tuple[AwsCredentials | None, str], asyncio.Lock] = {}

    async def get(self, cluster_name: str, region: str, credentials: AwsCredentials | None) -> str:
        """A bearer token for the cluster. Raises EksTokenError when none can be had."""
        key = (credentials, region, cluster_name)
        now = self._clock()
        current = self._tokens.get(key)
        age = now - current.issued_at if current is not None else None
        usable = age is not None and age < CLIENT_VALIDITY
        if usable and age < self._refresh_after:
            return current.token
        task = self._refreshing.get(key)
        if task is None or task.done():
            failure = self._failures.get(key)
            if failure is not None and now - failure.at < RETRY_AFTER_FAILURE:
                if usable:
                    return current.token
                raise failure.error
            task = asyncio.create_task(self._refresh(key), name=f"eks-token {region}/{cluster_name}")
            self._refreshing[key] = task
            task.add_done_callback(self._refresh_done)
        if usable:
            return current.token
        # shield: a caller that gives up (client disconnect) must not cancel the shared refresh.
        return (await asyncio.shield(task)).token

    def invalidate(self, cluster_name: str, region: str, credentials: AwsCredentials | None) -> None:
        """Forget the cluster's token and the signer of its credentials: the cluster refused the token.

        The next `get` signs anew with a new boto3 session, which reads the credential chain again
        (keys rotated in the environment or a profile file are picked up). A refresh already under way
        is left to finish; callers rate-limit this, since a cluster that refuses every token would
        otherwise make us re-sign for every request.
        """
        self._tokens.pop((credentials, region, cluster_name), None)
        self._signers.pop((credentials, region), None)

    async def _refresh(self, key: _Key) -> EksToken:
        try:
            return await self._sign(key)
        finally:
            # Here rather than in a done-callback, which runs a loop iteration later: a caller in
            # between must not be handed this finished refresh's token as if it were new.
            if self._refreshing.get(key) is asyncio.current_task():
                del self._refreshing[key]

    async def _sign(self, key: _Key) -> EksToken:
        credentials, region, cluster_name = key
        try:
            signer = await self._signer(credentials, region)
            if signer.credentials_fresh:
                token = signer.sign(cluster_name, self._clock())
            else:
                # Refreshing the credentials is an STS call (assumed role): keep it off the event loop.
                token = await asyncio.to_thread(lambda: signer.sign(cluster_name, self._clock()))
        except Exception as exc:
            reason = exc.reason if isinstance(exc, EksTokenError) else f"{type(exc).__name__}: {exc}"
            source = (credentials or AwsCredentials()).describe()
            error = EksTokenError(
                f"cannot sign an EKS token for cluster {cluster_name} in {region} with {source}: {reason}"
            )
            TOKEN_REFRESHES.labels(kind="eks", outcome="error").inc()
            self._failures[key] = _Failure(self._clock(), error)
            log.warning("%s", error.reason)
            raise error from exc
        TOKEN_REFRESHES.labels(kind="eks", outcome="ok").inc()
        self._failures.pop(key, None)
        self._tokens[key] = token
        return token

    @staticmethod
    def _refresh_done(task: asyncio.Task[EksToken]) -> None:
        if not task.cancelled():
            task.exception()  # logged in _sign; retrieved so asyncio does not report it again

    async def _signer(self, credentials: AwsCredentials | None, region: str) -> EksTokenSigner:
        skey = (credentials, region)
        signer = self._signers.get(skey)
        if signer is not None:
            return signer
        async with self._signer_locks.setdefault(skey, asyncio.Lock()):
            signer = self._signers.get(skey)
            if signer is None:
                signer = await asyncio.to_thread(self._signer_factory, credentials, region)
                self._signers[skey] = signer
        return signer
