"""The connector's serving TLS: the configured certificate, or one it makes for itself.

With no `server.tls.cert_file`, the connector keeps a CA and a serving certificate (for the public
URL's host, localhost and 127.0.0.1) in its state directory, creating them on first start and
re-issuing the certificate when the host changes or expiry nears; users trust the CA file (the
client's `kubeconfig set` embeds it). When authentication accepts client certificates, the server
asks for one (optional, so SSO and token users are not refused) and verifies it against that CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509

from connector.pki import KeyPair, generate_ca, issue_certificate
from connector.proxy.config import ServerConfig

RENEW_BEFORE = dt.timedelta(days=30)
CA_FILE, CA_KEY_FILE = "ca.crt", "ca.key"
CERT_FILE, KEY_FILE = "server.crt", "server.key"


class TlsSetupError(Exception):
    """The serving certificate or the client CA cannot be loaded; the message names the file and the fix."""


@dataclass(frozen=True)
class ServerTls:
    context: ssl.SSLContext
    # The CA users must trust, when the connector made its own certificate.
    ca_file: Path | None
    client_ca_file: str | None


def default_state_dir() -> Path:
    return platformdirs.user_state_path("eks-access-connector")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _covers(cert_pem: bytes, hosts: tuple[str, ...], now: dt.datetime) -> bool:
    """Whether an existing certificate names every host and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    present = {n.lower() for n in names.get_values_for_type(x509.DNSName)}
    present |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    wanted = set()
    for host in hosts:
        try:
            wanted.add(str(ipaddress.ip_address(host)))
        except ValueError:
            wanted.add(host.lower())
    return wanted <= present and cert.not_valid_after_utc - now > RENEW_BEFORE


def ensure_self_signed(state_dir: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """CA and serving certificate in `state_dir` (made or renewed as needed): (ca, cert, key) paths."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_path, ca_key_path = state_dir / CA_FILE, state_dir / CA_KEY_FILE
        cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
        if ca_path.exists() and ca_key_path.exists():
            ca = KeyPair(ca_path.read_bytes(), ca_key_path.read_bytes())
        else:
            ca = generate_ca("EKS Access Connector CA")
            _write_private(ca_key_path, ca.key_pem)
            ca_path.write_bytes(ca.cert_pem)
        now = dt.datetime.now(dt.UTC)
        if not (cert_path.exists() and key_path.exists() and _covers(cert_path.read_bytes(), hosts, now)):
            leaf = issue_certificate(ca, hosts[0], hosts=hosts)
            _write_private(key_path, leaf.key_pem)
            cert_path.write_bytes(leaf.cert_pem + ca.cert_pem)
    except (OSError, ValueError) as exc:
        raise TlsSetupError(
            f"server.state_dir: cannot create the connector's certificate in {state_dir}: {exc} "
            "(set server.state_dir to a writable directory, or give server.tls.cert_file and key_file)"
        ) from None
    return ca_path, cert_path, key_path


def serving_hosts(public_host: str) -> tuple[str, ...]:
    hosts = [public_host, "localhost", "127.0.0.1", "::1"]
    return tuple(dict.fromkeys(h for h in hosts if h))


def build_server_tls(server: ServerConfig, public_host: str, client_ca_file: str | None) -> ServerTls:
    """The SSLContext to listen with; raises TlsSetupError with what to fix."""
    ca_file: Path | None = None
    if server.tls.cert_file is not None and server.tls.key_file is not None:
        cert_file, key_file = server.tls.cert_file, server.tls.key_file
    else:
        state_dir = Path(server.state_dir) if server.state_dir else default_state_dir()
        ca_file, cert_path, key_path = ensure_self_signed(state_dir, serving_hosts(public_host))
        cert_file, key_file = str(cert_path), str(key_path)
    # Not create_default_context(): that trusts the system CAs for client certificates, and a certificate
    # from any public CA would then authenticate. Only client_ca_file may vouch for a client.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/1.1 only: exec and port-forward upgrades need it, and aiohttp serves nothing else.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"server.tls: cannot load the certificate {cert_file} with key {key_file}: {exc}") from None
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"authentication.client_certificates.client_ca_file: cannot load {client_ca_file}: {exc}"
            ) from None
        # Optional: SSO and service-token users present no certificate and must still get in.
        context.verify_mode = ssl.CERT_OPTIONAL
    return ServerTls(context, ca_file, client_ca_file)
