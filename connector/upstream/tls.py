"""TLS for upstream connections: verify the cluster's CA, present a client certificate.

A CA, when given, is the only trust anchor (a cluster CA is private; trusting the system store as
well would let any public CA vouch for the API server). Without one, the system store is used, as
for a managed endpoint with a public certificate. Skipping verification is never a default.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
from pathlib import Path

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
MAX_PEM_FILE_BYTES = 1024 * 1024


class TlsError(Exception):
    """A certificate or key could not be used; the message names the setting, never its content."""


def pem_from_data(value: str | bytes, what: str) -> bytes:
    """PEM bytes from a `*_data` setting: base64 of PEM (as kubeconfigs hold it), or PEM itself."""
    raw = value.encode() if isinstance(value, str) else value
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    try:
        decoded = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise TlsError(f"{what} is neither PEM nor base64-encoded PEM") from None
    if not decoded.lstrip().startswith(b"-----BEGIN"):
        raise TlsError(f"{what} does not decode to PEM (expected base64 of a '-----BEGIN ...' block)")
    return decoded


def read_pem_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TlsError(f"{what} {path}: file not found") from None
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_FILE_BYTES or b"-----BEGIN" not in data:
        raise TlsError(f"{what} {path}: not a PEM file")
    return data


def client_context(*, ca_pem: bytes | None, insecure: bool) -> ssl.SSLContext:
    """A client context that verifies the server against `ca_pem` only, or the system store when None."""
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_pem is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        if PEM_CERTIFICATE not in ca_pem:
            raise TlsError("the certificate authority contains no PEM certificate")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
        except ssl.SSLError as exc:
            raise TlsError(f"the certificate authority is not a valid PEM certificate ({exc.reason})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def load_client_certificate(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Make `ctx` present this certificate on new connections (it can be called again to rotate it).

    The ssl module loads certificates only from files, so the pair goes through a private (0600)
    temporary file that is removed as soon as OpenSSL has read it.
    """
    if PEM_CERTIFICATE not in cert_pem:
        raise TlsError("the client certificate contains no PEM certificate")
    if b"PRIVATE KEY-----" not in key_pem:
        raise TlsError("the client key contains no PEM private key")
    if b"ENCRYPTED" in key_pem:
        raise TlsError("the client key is encrypted; give it unencrypted (protect it with file permissions)")
    fd, name = tempfile.mkstemp(prefix="connector-client-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem.rstrip(b"\n") + b"\n" + cert_pem)
        try:
            # A password (never used for unencrypted keys) keeps OpenSSL from prompting on a terminal.
            ctx.load_cert_chain(certfile=name, password=b"")
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise TlsError("the client certificate and the client key do not belong together") from None
            raise TlsError(f"the client certificate or key is not valid PEM ({exc.reason})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
