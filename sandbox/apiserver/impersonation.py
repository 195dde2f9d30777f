"""`Impersonate-*` headers, handled as kube-apiserver's impersonation filter handles them.

The caller must be allowed the `impersonate` verb on each thing it asks to become: `users` (or
`serviceaccounts` in the account's namespace for `system:serviceaccount:<ns>:<name>`), `groups`,
`userextras/<key>` and `uids` (both in `authentication.k8s.io`). Any refusal is a 403 naming the
first thing refused; groups, extras or a uid without a user is a 500, as kube-apiserver answers it.
The impersonated user gets `system:authenticated` unless it asked for `system:unauthenticated`,
and a service account impersonated without groups gets its fixed service-account groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from sandbox.apiserver.authn import AUTHENTICATED, UNAUTHENTICATED, UserInfo
from sandbox.apiserver.authz import Attributes, Authorizer, forbidden_error
from sandbox.apiserver.errors import ApiError

USER = "impersonate-user"
GROUP = "impersonate-group"
UID = "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"
_AUTHN_GROUP = "authentication.k8s.io"
_SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ImpersonationHeaders:
    user: str | None
    groups: tuple[str, ...]
    uid: str | None
    extra: dict[str, tuple[str, ...]]

    @property
    def requested(self) -> bool:
        return self.user is not None or bool(self.groups) or self.uid is not None or bool(self.extra)


def read_headers(headers: Iterable[tuple[str, str]]) -> ImpersonationHeaders:
    user: str | None = None
    uid: str | None = None
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.lower()
        if key == USER:
            user = value
        elif key == GROUP:
            groups.append(value)
        elif key == UID:
            uid = value
        elif key.startswith(EXTRA_PREFIX):
            extra.setdefault(unquote(key[len(EXTRA_PREFIX):]), []).append(value)
    return ImpersonationHeaders(user, tuple(groups), uid, {k: tuple(v) for k, v in extra.items()})


def impersonate(requester: UserInfo, asked: ImpersonationHeaders, authorizer: Authorizer, uri: str) -> UserInfo:
    """The user to run the request as; raises 403 (not allowed) or 500 (malformed request)."""
    if asked.user is None:
        what = [f"{{Group {g}}}" for g in asked.groups] + [f"{{UserExtra {k}}}" for k in asked.extra] + \
            ([f"{{UID {asked.uid}}}"] if asked.uid is not None else [])
        raise ApiError(500, f'Internal Server Error: "{uri}": requested [{" ".join(what)}] without impersonating '
                            "a user")
    checks: list[Attributes] = []
    namespace = ""
    if asked.user.startswith(_SA_PREFIX) and asked.user.count(":") == 3:
        namespace, sa_name = asked.user[len(_SA_PREFIX):].split(":", 1)
        checks.append(Attributes(requester, "impersonate", True, namespace=namespace, resource="serviceaccounts",
                                 name=sa_name))
    else:
        checks.append(Attributes(requester, "impersonate", True, resource="users", name=asked.user))
    checks += [Attributes(requester, "impersonate", True, resource="groups", name=g) for g in asked.groups]
    for key, values in asked.extra.items():
        checks += [Attributes(requester, "impersonate", True, api_group=_AUTHN_GROUP, resource="userextras",
                              subresource=key, name=v) for v in values]
    if asked.uid is not None:
        checks.append(Attributes(requester, "impersonate", True, api_group=_AUTHN_GROUP, resource="uids",
                                 name=asked.uid))
    for attrs in checks:
        decision = authorizer.authorize(attrs)
        if not decision.allowed:
            raise forbidden_error(attrs, decision.reason)
    groups = list(asked.groups)
    if namespace and not groups:
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if asked.user != "system:anonymous":
        if AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return UserInfo(asked.user, uid=asked.uid or "", groups=tuple(groups), extra=asked.extra)
