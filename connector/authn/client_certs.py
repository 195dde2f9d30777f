"""Client certificates: the TLS layer has already verified the chain against `client_ca_file`; here the
subject becomes the identity as Kubernetes reads it (CN = user, each O = a group)."""

from __future__ import annotations

import ssl
from typing import Any

from connector.identity import Identity


def identity_from_peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """The identity of a verified client certificate, or None when the client presented none.

    `getpeercert()` returns a non-empty dict only for a certificate that passed verification, which is
    what makes this safe: an unverified certificate never reaches here as an identity.
    """
    if ssl_object is None:
        return None
    cert: dict[str, Any] | None = ssl_object.getpeercert()
    if not cert:
        return None
    user = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and not user:
                user = value
            elif key == "organizationName":
                groups.append(value)
    if not user:
        return None
    return Identity(user=user, groups=tuple(groups), method="client-cert")
