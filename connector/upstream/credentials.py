"""Where the connector's own credentials for a cluster come from, fresh for every request.

Each source returns the headers to add to an upstream request and stays cheap per call: a static
token is a constant; a token file is re-read only when it changed (projected service-account tokens
rotate underneath us); an exec plugin's output is cached until its `expirationTimestamp`; an EKS
token comes from the shared token cache. A client certificate lives in the socket's SSLContext, so
its source adds no header. Errors name the source (file, plugin command), never a credential.

When the cluster refuses the credentials (HTTP 401), `invalidate()` makes the next call fetch them
again instead of waiting for their normal refresh: the token file is re-read, the exec plugin runs
again (client-go does the same on a 401), the EKS token is signed anew.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from connector.aws.token import EksTokenCache, EksTokenError
from connector.metrics import TOKEN_REFRESHES
from connector.upstream.kubeconfig import ClusterInfo, ExecConfig, KubeconfigError, exec_cluster_info
from connector.upstream.tls import TlsError, load_client_certificate

if TYPE_CHECKING:
    from connector.aws.credentials import AwsCredentials

log = logging.getLogger(__name__)

# How often a token file may be stat()ed: rotation is noticed within this delay, at no cost per request.
FILE_RECHECK_SECONDS = 1.0
EXEC_TIMEOUT_SECONDS = 30.0
# Refresh an exec credential this long before it expires, so that no request leaves with a token
# that expires on the way.
EXEC_EXPIRY_MARGIN_SECONDS = 5.0
MAX_EXEC_OUTPUT_BYTES = 1024 * 1024
MAX_TOKEN_FILE_BYTES = 64 * 1024

# RFC 6750 tokens are visible ASCII; anything else (a newline above all) would corrupt the header.
_TOKEN = re.compile(r"^[\x21-\x7e]+$")


class CredentialError(Exception):
    """Credentials could not be obtained. The message names where they come from, never their value."""


class CredentialSource(Protocol):
    async def headers(self) -> dict[str, str]:
        """The headers that authenticate one upstream request ({} when TLS does it)."""
        ...

    def describe(self) -> str:
        """How this source authenticates, safe to print."""
        ...

    def invalidate(self) -> None:
        """The cluster refused these credentials: obtain them again at the next `headers()`."""
        ...


def bearer_header(token: str, what: str) -> dict[str, str]:
    if not _TOKEN.match(token):
        raise CredentialError(f"{what} is not a valid bearer token (empty, or contains spaces or control characters)")
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class NoHeaders:
    """Authentication by client certificate only, or none at all."""

    description: str

    async def headers(self) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        return self.description

    def invalidate(self) -> None:
        """Nothing to fetch again: the certificate comes from the configuration."""


@dataclass(frozen=True)
class StaticToken:
    token: str = field(repr=False)
    description: str

    def __post_init__(self) -> None:
        bearer_header(self.token, self.description)

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def describe(self) -> str:
        return self.description

    def invalidate(self) -> None:
        """Nothing to fetch again: the token comes from the configuration."""


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)
    description: str

    async def headers(self) -> dict[str, str]:
        pair = f"{self.username}:{self.password}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}

    def describe(self) -> str:
        return self.description

    def invalidate(self) -> None:
        """Nothing to fetch again: the password comes from the configuration."""


class TokenFile:
    """A bearer token read from a file, re-read when the file changes.

    Kubernetes rotates projected service-account tokens by swapping the file; stat() at most every
    FILE_RECHECK_SECONDS notices it without reading the file per request. If a re-read fails (the
    file is being rewritten), the last good token is kept and the failure logged.
    """

    def __init__(
        self,
        path: Path,
        *,
        kind: str = "token_file",
        recheck_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.kind = kind
        self._recheck = FILE_RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._clock = clock
        self._token: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at: float | None = None

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def describe(self) -> str:
        what = "in-cluster service account token" if self.kind == "in_cluster" else "bearer token from token_file"
        return f"{what} {self.path} (re-read when it changes)"

    def invalidate(self) -> None:
        """Re-read the file at the next use, even if it looks unchanged (a rewrite within the same
        mtime granularity, same size and inode, is otherwise missed). The last good token stays the
        fallback if the read fails."""
        self._checked_at = None
        self._stamp = None

    def token(self) -> str:
        now = self._clock()
        if self._token is not None and self._checked_at is not None and now - self._checked_at < self._recheck:
            return self._token
        self._checked_at = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp and self._token is not None:
                return self._token
            token = self._read()
        except (OSError, CredentialError) as exc:
            TOKEN_REFRESHES.labels(kind=self.kind, outcome="error").inc()
            message = (
                exc.args[0]
                if isinstance(exc, CredentialError)
                else f"cannot read token file {self.path}: {exc.strerror or exc}"
            )
            if self._token is None:
                raise CredentialError(message) from None
            log.warning("%s; still using the token read before", message)
            return self._token
        self._token, self._stamp = token, stamp
        TOKEN_REFRESHES.labels(kind=self.kind, outcome="ok").inc()
        return token

    def _read(self) -> str:
        with self.path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
        if len(data) > MAX_TOKEN_FILE_BYTES:
            raise CredentialError(f"token file {self.path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
        try:
            token = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise CredentialError(f"token file {self.path} is not ASCII text") from None
        bearer_header(token, f"token file {self.path}")
        return token


@dataclass(frozen=True)
class ExecCredential:
    """The `status` of an ExecCredential a plugin printed."""

    token: str | None = field(default=None, repr=False)
    client_certificate_pem: bytes | None = None
    client_key_pem: bytes | None = field(default=None, repr=False)
    expires_at: dt.datetime | None = None


def parse_exec_credential(stdout: bytes, api_version: str, command: str) -> ExecCredential:
    """Check and decode a plugin's output (client-go's rules: same apiVersion, a token or a cert/key pair)."""
    where = f"exec plugin {command}"
    try:
        doc = json.loads(stdout)
    except (ValueError, UnicodeDecodeError):
        raise CredentialError(f"{where} did not print an ExecCredential JSON object") from None
    if not isinstance(doc, dict):
        raise CredentialError(f"{where} did not print an ExecCredential JSON object")
    if doc.get("kind") != "ExecCredential":
        raise CredentialError(f"{where} printed kind {doc.get('kind')!r}, expected ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise CredentialError(
            f"{where} is configured to use API version {api_version}, plugin returned version {doc.get('apiVersion')!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise CredentialError(f"{where} didn't return a status field")
    token = _optional_str(status, "token", where)
    cert = _optional_str(status, "clientCertificateData", where)
    key = _optional_str(status, "clientKeyData", where)
    if not token and not cert and not key:
        raise CredentialError(f"{where} didn't return a token or cert/key pair")
    if bool(cert) != bool(key):
        raise CredentialError(f"{where} returned only certificate or key, not both")
    if token:
        bearer_header(token, f"the token from {where}")
    expires_at = None
    raw_exp = status.get("expirationTimestamp")
    if raw_exp is not None:
        if not isinstance(raw_exp, str):
            raise CredentialError(f"{where}: status.expirationTimestamp must be an RFC 3339 time string")
        try:
            expires_at = dt.datetime.fromisoformat(raw_exp)
        except ValueError:
            raise CredentialError(f"{where}: status.expirationTimestamp {raw_exp!r} is not an RFC 3339 time") from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
    return ExecCredential(
        token=token or None,
        client_certificate_pem=cert.encode() if cert else None,
        client_key_pem=key.encode() if key else None,
        expires_at=expires_at,
    )


def _optional_str(status: dict[str, Any], key: str, where: str) -> str:
    value = status.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CredentialError(f"{where}: status.{key} must be a string")
    return value


class ExecPlugin:
    """A client-go exec credential plugin, run as client-go runs it, without a terminal.

    The output is cached until its expirationTimestamp (forever when it has none, as client-go does);
    callers that arrive while the plugin runs wait for that run instead of starting their own. A
    client certificate in the output is loaded into the socket's SSLContext, which new connections
    then present.
    """

    def __init__(
        self,
        config: ExecConfig,
        *,
        cluster: ClusterInfo | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self._cluster = cluster
        self._ssl_context = ssl_context
        self._timeout = EXEC_TIMEOUT_SECONDS if timeout is None else timeout
        self._clock = clock
        self._inflight: asyncio.Future[ExecCredential] | None = None
        self._cached: ExecCredential | None = None
        self._loaded_cert: bytes | None = None

    def describe(self) -> str:
        return f"exec plugin {self.config.command} ({self.config.api_version})"

    def invalidate(self) -> None:
        """Run the plugin again at the next use, as client-go does after a 401: a credential without
        an expirationTimestamp would otherwise be used forever. A run under way is left to finish."""
        self._cached = None

    async def headers(self) -> dict[str, str]:
        cred = self._cached
        if cred is None or self._expired(cred):
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._refresh())
                self._inflight.add_done_callback(self._run_done)
            # shield: a caller that gives up must not cancel the run the others are waiting for.
            cred = await asyncio.shield(self._inflight)
        return {"Authorization": f"Bearer {cred.token}"} if cred.token else {}

    def _run_done(self, task: asyncio.Future[ExecCredential]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved, so that a failed run nobody waits for any more is not logged as lost

    def _expired(self, cred: ExecCredential) -> bool:
        if cred.expires_at is None:
            return False
        return self._clock() >= cred.expires_at.timestamp() - EXEC_EXPIRY_MARGIN_SECONDS

    async def _refresh(self) -> ExecCredential:
        try:
            cred = parse_exec_credential(await self._run(), self.config.api_version, self.config.command)
            if cred.client_certificate_pem is not None and cred.client_certificate_pem != self._loaded_cert:
                self._load_certificate(cred)
        except CredentialError:
            TOKEN_REFRESHES.labels(kind="exec", outcome="error").inc()
            raise
        TOKEN_REFRESHES.labels(kind="exec", outcome="ok").inc()
        self._cached = cred
        return cred

    def _load_certificate(self, cred: ExecCredential) -> None:
        assert cred.client_certificate_pem is not None and cred.client_key_pem is not None
        if self._ssl_context is None:
            raise CredentialError(
                f"exec plugin {self.config.command} returned a client certificate, but the server "
                "is plain http://; use https://"
            )
        try:
            load_client_certificate(self._ssl_context, cred.client_certificate_pem, cred.client_key_pem)
        except TlsError as exc:
            raise CredentialError(f"exec plugin {self.config.command}: {exc}") from None
        self._loaded_cert = cred.client_certificate_pem

    def _environment(self) -> dict[str, str]:
        spec: dict[str, Any] = {"interactive": False}
        if self.config.provide_cluster_info and self._cluster is not None:
            try:
                spec["cluster"] = exec_cluster_info(self._cluster)
            except KubeconfigError as exc:
                raise CredentialError(f"exec plugin {self.config.command}: {exc}") from None
        exec_info = {"apiVersion": self.config.api_version, "kind": "ExecCredential", "spec": spec}
        env = dict(os.environ)
        env.update(self.config.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(exec_info, separators=(",", ":"))
        return env

    async def _run(self) -> bytes:
        command = self.config.command
        try:
            proc = await asyncio.create_subprocess_exec(
                command,
                *self.config.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(),
            )
        except FileNotFoundError:
            hint = f" ({self.config.install_hint.strip()})" if self.config.install_hint.strip() else ""
            raise CredentialError(f"exec plugin {command}: executable not found{hint}") from None
        except PermissionError:
            raise CredentialError(f"exec plugin {command}: not executable (permission denied)") from None
        except OSError as exc:
            raise CredentialError(f"exec plugin {command}: cannot start: {exc.strerror or exc}") from None
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            await _kill(proc)
            raise CredentialError(f"exec plugin {command}: no answer within {self._timeout:g} s; killed") from None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        if proc.returncode != 0:
            raise CredentialError(f"exec plugin {command}: exited with code {proc.returncode}{_stderr_tail(stderr)}")
        if len(stdout) > MAX_EXEC_OUTPUT_BYTES:
            raise CredentialError(f"exec plugin {command}: printed more than {MAX_EXEC_OUTPUT_BYTES} bytes")
        return stdout


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


def _stderr_tail(stderr: bytes) -> str:
    """The plugin's last stderr line, which usually says what went wrong (e.g. expired AWS SSO session)."""
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return f": {last[:300]}{'...' if len(last) > 300 else ''}"


class EksBearerToken:
    """An EKS token (presigned STS GetCallerIdentity) from the shared, refreshing token cache."""

    def __init__(self, cluster_name: str, region: str, credentials: AwsCredentials | None, cache: EksTokenCache):
        self.cluster_name = cluster_name
        self.region = region
        self._credentials = credentials
        self._cache = cache

    def describe(self) -> str:
        aws = self._credentials.describe() if self._credentials is not None else "the default credential chain"
        return f"EKS token for {self.cluster_name} ({self.region}), AWS identity from {aws}"

    def invalidate(self) -> None:
        self._cache.invalidate(self.cluster_name, self.region, self._credentials)

    async def headers(self) -> dict[str, str]:
        try:
            token = await self._cache.get(self.cluster_name, self.region, self._credentials)
        except EksTokenError as exc:
            raise CredentialError(exc.reason) from None
        return bearer_header(token, "the EKS token")
