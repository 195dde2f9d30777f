"""Who is calling: the bearer tokens an EKS API server accepts, and anonymous requests.

- the bootstrap admin token (the cluster creator's access): `kubernetes-admin` in `system:masters`;
- service-account tokens (JWTs this server signed in answer to `serviceaccounts/token`), valid
  while unexpired, for one of this server's audiences, and while the ServiceAccount still exists;
- EKS tokens (`k8s-aws-v1.` + a presigned STS GetCallerIdentity URL), checked with
  `connector.aws.token.verify_eks_token` for this cluster's name and mapped through
  `kube-system/aws-auth` (see `aws_auth`); an unmapped identity is refused.

As in kube-apiserver, a request without a bearer token is `system:anonymous`, and a bearer token
that none of the authenticators accepts is 401 (never anonymous). Authenticated users all get the
`system:authenticated` group.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from connector.aws.token import AwsPrincipal, EksTokenError, verify_eks_token
from sandbox.apiserver import aws_auth, catalog
from sandbox.apiserver.errors import unauthorized
from sandbox.apiserver.store import Store

log = logging.getLogger(__name__)

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
MASTERS = "system:masters"
ADMIN_USER = "kubernetes-admin"
SA_ISSUER = "https://kubernetes.default.svc"
API_AUDIENCES = ("https://kubernetes.default.svc",)
EKS_TOKEN_PREFIX = "k8s-aws-v1."


@dataclass(frozen=True)
class UserInfo:
    """`user.Info`: the authenticated (or impersonated) user a request runs as."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def review_body(self) -> dict[str, Any]:
        """The `authentication.k8s.io` UserInfo shape (SelfSubjectReview, TokenReview)."""
        body: dict[str, Any] = {"username": self.name}
        if self.uid:
            body["uid"] = self.uid
        if self.groups:
            body["groups"] = list(self.groups)
        if self.extra:
            body["extra"] = {k: list(v) for k, v in self.extra.items()}
        return body


ANONYMOUS = UserInfo("system:anonymous", groups=(UNAUTHENTICATED,))


def with_authenticated(groups: tuple[str, ...]) -> tuple[str, ...]:
    return groups if AUTHENTICATED in groups else (*groups, AUTHENTICATED)


class EksRefused(Exception):
    """An EKS token that does not authenticate anyone; the message says why (for the log)."""


def eks_user(
    token: str,
    *,
    cluster_name: str,
    now: datetime,
    credentials_lookup: Callable[[str], AwsPrincipal | None],
    extra_sts_endpoints: Collection[str],
    aws_auth_data: Mapping[str, Any] | None,
    ec2_private_dns_name: Callable[[str], str | None] | None,
) -> UserInfo:
    """What aws-iam-authenticator answers for an EKS token: verify the presigned STS call for this
    cluster, then map the caller through `kube-system/aws-auth`'s data. Raises EksRefused.

    Shared by the emulated API server and the token webhook of the real control plane."""
    try:
        identity = verify_eks_token(token, cluster_name, now, credentials_lookup,
                                    extra_sts_endpoints=extra_sts_endpoints)
    except EksTokenError as exc:
        raise EksRefused(str(exc)) from None
    config = aws_auth.parse_aws_auth(aws_auth_data)
    try:
        mapped = aws_auth.map_identity(config, identity, ec2_private_dns_name=ec2_private_dns_name)
    except aws_auth.MappingError as exc:
        raise EksRefused(f"{identity.arn}: {exc}") from None
    if mapped is None or not mapped.username:
        raise EksRefused(f"{identity.canonical_arn} is not mapped in kube-system/aws-auth")
    extra = {
        "arn": (identity.arn,),
        "canonicalArn": (identity.canonical_arn,),
        "sessionName": (identity.session_name,),
    }
    if identity.access_key_id:
        extra["accessKeyId"] = (identity.access_key_id,)
    return UserInfo(mapped.username, groups=with_authenticated(mapped.groups), extra=extra)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


class Authenticator:
    def __init__(
        self,
        *,
        cluster_name: str,
        store: Store,
        bootstrap_token: str,
        credentials_lookup: Callable[[str], AwsPrincipal | None] | None,
        extra_sts_endpoints: Collection[str] = (),
        ec2_private_dns_name: Callable[[str], str | None] | None = None,
    ) -> None:
        self._cluster_name = cluster_name
        self._store = store
        self._bootstrap_token = bootstrap_token
        self._credentials_lookup = credentials_lookup
        self._extra_sts_endpoints = tuple(extra_sts_endpoints)
        self._ec2_private_dns_name = ec2_private_dns_name
        self._signing_key = ec.generate_private_key(ec.SECP256R1())

    def authenticate(self, authorization: str | None) -> UserInfo:
        """The caller of a request with this `Authorization` header; raises 401 for a bad token."""
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return ANONYMOUS  # kube's bearer authenticator ignores other schemes; anonymous follows
        if hmac.compare_digest(token.encode(), self._bootstrap_token.encode()):
            return UserInfo(ADMIN_USER, groups=(MASTERS, AUTHENTICATED))
        if token.startswith(EKS_TOKEN_PREFIX):
            return self._eks_user(token)
        if token.count(".") == 2:
            return self._service_account_user(token)
        log.info("refused a bearer token that is neither the bootstrap, an EKS nor a service-account token")
        raise unauthorized()

    # ----- EKS ---------------------------------------------------------------------------------

    def _eks_user(self, token: str) -> UserInfo:
        if self._credentials_lookup is None:
            log.warning("refused an EKS token: this API server has no AWS credentials lookup")
            raise unauthorized()
        configmaps = catalog.lookup("", "v1", "configmaps")
        assert configmaps is not None
        cm = self._store.get(configmaps, "kube-system", "aws-auth")
        try:
            return eks_user(
                token, cluster_name=self._cluster_name, now=self._store.now(),
                credentials_lookup=self._credentials_lookup, extra_sts_endpoints=self._extra_sts_endpoints,
                aws_auth_data=(cm or {}).get("data"), ec2_private_dns_name=self._ec2_private_dns_name,
            )
        except EksRefused as exc:
            log.info("refused an EKS token for cluster %s: %s", self._cluster_name, exc)
            raise unauthorized() from None

    # ----- service accounts ----------------------------------------------------------------------

    def issue_service_account_token(
        self, service_account: dict[str, Any], *, expiration_seconds: int, audiences: tuple[str, ...]
    ) -> IssuedToken:
        """What `serviceaccounts/token` returns: a signed JWT bound to the ServiceAccount's uid."""
        meta = service_account["metadata"]
        now = self._store.now()
        expires = now + timedelta(seconds=expiration_seconds)
        claims = {
            "iss": SA_ISSUER,
            "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
            "aud": list(audiences),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": meta["namespace"],
                "serviceaccount": {"name": meta["name"], "uid": meta["uid"]},
            },
        }
        return IssuedToken(jwt.encode(claims, self._signing_key, algorithm="ES256"), expires)

    def _service_account_user(self, token: str) -> UserInfo:
        try:
            claims = jwt.decode(
                token, self._signing_key.public_key(), algorithms=["ES256"], audience=list(API_AUDIENCES),
                issuer=SA_ISSUER,
                # Expiry is checked below against the store's clock, which tests may move.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refused a service-account token: %s", exc)
            raise unauthorized() from None
        if not isinstance(claims["exp"], int) or claims["exp"] < self._store.now().timestamp():
            log.info("refused an expired service-account token")
            raise unauthorized()
        info = claims.get("kubernetes.io") or {}
        namespace = str(info.get("namespace", ""))
        sa = info.get("serviceaccount") or {}
        sa_type = catalog.lookup("", "v1", "serviceaccounts")
        assert sa_type is not None
        stored = self._store.get(sa_type, namespace, str(sa.get("name", "")))
        if stored is None or stored["metadata"]["uid"] != sa.get("uid"):
            log.info("refused a token of service account %s/%s: it no longer exists", namespace, sa.get("name"))
            raise unauthorized()
        return UserInfo(
            f"system:serviceaccount:{namespace}:{sa['name']}",
            uid=str(sa["uid"]),
            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
            extra={"authentication.kubernetes.io/credential-id": (f"JTI={claims.get('jti', '')}",)},
        )
