"""The policy file format: who (subjects) may do what (Kubernetes rules) on which sockets, when.

These models are the `policies` key of the connector config. They only validate and hold values;
`connector.policy.engine` compiles them into fast matchers. Every validator's message is written
for the person editing the YAML: `connector.config` prints it after `FILE:LINE: path:`.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from connector.model import StrictModel
from connector.policy.matchers import check_name_glob, check_socket_glob

# Verbs that kube-apiserver's authorizers see on resource requests (RequestInfo verbs plus the
# special verbs of RBAC, certificates, PodSecurityPolicy-style `use` and admission `attest`).
RESOURCE_VERBS: tuple[str, ...] = (
    "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy",
    "impersonate", "escalate", "bind", "use", "approve", "sign", "attest",
)  # fmt: skip
# Non-resource requests (`/healthz`, `/metrics`) carry the lowercased HTTP method as their verb.
NON_RESOURCE_VERBS: tuple[str, ...] = ("get", "head", "post", "put", "patch", "delete", "options")
# Verbs that turn one permission into more: a `*` in a rule must not hand them out by accident.
PRIVILEGED_VERBS: frozenset[str] = frozenset({"impersonate", "escalate", "bind"})
DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")


def _check_policy_name(value: str) -> str:
    if not _POLICY_NAME.fullmatch(value):
        raise ValueError(
            f"bad policy name {value!r}: use letters, digits, '.', '_' and '-' (at most 128), starting with a "
            "letter or digit"
        )
    return value


def _check_subject(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError(f"bad subject {value!r}: it must be non-empty with no surrounding spaces")
    return value


def _check_verb(value: str, info: ValidationInfo) -> str:
    non_resource = bool(info.data.get("non_resource_urls"))
    known = NON_RESOURCE_VERBS if non_resource else RESOURCE_VERBS
    if value == "*" or value in known:
        return value
    if not non_resource and value in NON_RESOURCE_VERBS:
        raise ValueError(
            f'verb "{value}" is an HTTP method, valid only in a rule with non_resource_urls '
            "(Kubernetes verbs are: " + ", ".join(RESOURCE_VERBS) + ")"
        )
    if non_resource and value in RESOURCE_VERBS:
        raise ValueError(
            f'verb "{value}" is a Kubernetes verb: a rule with non_resource_urls takes HTTP methods ('
            + ", ".join(NON_RESOURCE_VERBS)
            + ")"
        )
    raise ValueError(f'unknown verb "{value}" (known: ' + ", ".join(known) + ', or "*")')


def _check_api_group(value: str) -> str:
    # "" is the core group (pods, services, ...), written `""` in YAML as in RBAC.
    return value if value == "" else check_name_glob(value)


def _check_resource(value: str) -> str:
    parts = value.split("/")
    if len(parts) > 2:
        raise ValueError(f'bad resource "{value}": write "resource" or "resource/subresource"')
    for part in parts:
        check_name_glob(part)
    return value


def _check_non_resource_url(value: str) -> str:
    if value == "*":
        return value
    if not value.startswith("/"):
        raise ValueError(f'bad non-resource URL "{value}": it must start with "/" (or be "*")')
    if "*" in value[:-1] or any(c.isspace() for c in value):
        raise ValueError(f'bad non-resource URL "{value}": only a trailing "*" (prefix match) is allowed')
    return value


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f'malformed CIDR "{value}": {exc}') from None


def _check_day(value: str) -> str:
    if value not in DAYS:
        raise ValueError(f'unknown day "{value}" (use {", ".join(DAYS)})')
    return value


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown timezone "{value}": use an IANA name such as "Europe/Berlin" or "UTC"') from None
    return value


def parse_hours(value: str) -> tuple[int, int]:
    """`"08:00-18:00"` -> (480, 1080): minutes after midnight, start inclusive, end exclusive.

    The end may be `24:00`; an end before the start means the window wraps past midnight.
    """
    m = _HOURS.fullmatch(value)
    if m is None:
        raise ValueError(f'bad time window "{value}": write "HH:MM-HH:MM", e.g. "08:00-18:00"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ValueError(f'bad time window "{value}": hours go from 00:00 to 23:59 (24:00 only as an end)')
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end or (start == 0 and end == 24 * 60):
        raise ValueError(f'bad time window "{value}": it must not be empty or the whole day (omit "hours" instead)')
    return start, end % (24 * 60)


def _check_hours(value: str) -> str:
    parse_hours(value)
    return value


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no timezone: add one, e.g. 2027-01-01T00:00:00Z or +02:00")
    return value


PolicyName = Annotated[str, AfterValidator(_check_policy_name)]
Subject = Annotated[str, AfterValidator(_check_subject)]
SocketGlob = Annotated[str, AfterValidator(check_socket_glob)]
NameGlob = Annotated[str, AfterValidator(check_name_glob)]
ApiGroup = Annotated[str, AfterValidator(_check_api_group)]
Resource = Annotated[str, AfterValidator(_check_resource)]
Verb = Annotated[str, AfterValidator(_check_verb)]
NonResourceUrl = Annotated[str, AfterValidator(_check_non_resource_url)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
Day = Annotated[str, AfterValidator(_check_day)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Hours = Annotated[str, AfterValidator(_check_hours)]
AwareDatetime = Annotated[datetime, AfterValidator(_check_aware)]


def _non_empty(value: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if not value:
        raise ValueError(f"an empty list matches no {what}: omit the key to mean every {what}")
    return value


class Subjects(StrictModel):
    """Who a policy applies to: any listed user, or anyone in a listed group. `*` means everyone."""

    users: tuple[Subject, ...] = ()
    groups: tuple[Subject, ...] = ()

    @model_validator(mode="after")
    def _some(self) -> Subjects:
        if not self.users and not self.groups:
            raise ValueError("name at least one user or group (use users: ['*'] for every authenticated user)")
        return self

    def includes(self, user: str, groups: tuple[str, ...]) -> bool:
        """Whether this user (or one of their groups) is listed, `*` counting for everyone."""
        return "*" in self.users or "*" in self.groups or user in self.users or any(g in self.groups for g in groups)


class TimeWindow(StrictModel):
    """Recurring access hours. A window that wraps midnight belongs to the day it starts on."""

    days: tuple[Day, ...] = DAYS
    hours: Hours | None = None
    timezone: Timezone = "UTC"

    @field_validator("days")
    @classmethod
    def _days_non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _non_empty(value, "day")

    @model_validator(mode="after")
    def _restricts(self) -> TimeWindow:
        if not {"days", "hours"} & self.model_fields_set:
            raise ValueError("a time condition needs days and/or hours")
        return self


class Conditions(StrictModel):
    """Extra requirements a request must meet for the policy to apply; all given ones must hold."""

    source_ips: tuple[Cidr, ...] | None = None
    time: TimeWindow | None = None
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None

    @field_validator("source_ips")
    @classmethod
    def _ips_non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("an empty list allows no address: omit source_ips to allow every address")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Conditions:
        if self.not_before is not None and self.not_after is not None and self.not_before >= self.not_after:
            raise ValueError("not_before must be earlier than not_after")
        return self


class Rule(StrictModel):
    """One allow rule: RBAC's PolicyRule plus the namespaces it holds in. Omitted lists mean `["*"]`.

    A rule with `non_resource_urls` is about non-resource paths only (`/healthz`, `/metrics`) and
    takes HTTP-method verbs; it may not also name resources.
    """

    # Declared first so that the verb validator can see which kind of rule it is checking.
    non_resource_urls: tuple[NonResourceUrl, ...] = ()
    api_groups: tuple[ApiGroup, ...] = ("*",)
    namespaces: tuple[NameGlob, ...] = ("*",)
    verbs: tuple[Verb, ...] = ("*",)
    resources: tuple[Resource, ...] = ("*",)
    resource_names: tuple[NameGlob, ...] = ("*",)
    allow_privileged_verbs: bool = Field(
        default=False, description="let a `*` verb grant impersonate, escalate and bind"
    )
    requires_approval: bool = Field(
        default=False,
        description="allow only while the caller holds an approved access request granting this policy",
    )

    @field_validator("api_groups", "namespaces", "verbs", "resources", "resource_names")
    @classmethod
    def _lists_non_empty(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _non_empty(value, (info.field_name or "value").rstrip("s").replace("_", " "))

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        if self.non_resource_urls:
            mixed = sorted({"api_groups", "namespaces", "resources", "resource_names"} & self.model_fields_set)
            if mixed:
                raise ValueError(f"a rule with non_resource_urls cannot also set {', '.join(mixed)}: write two rules")
        return self

    @property
    def is_non_resource(self) -> bool:
        return bool(self.non_resource_urls)


class KubernetesAccess(StrictModel):
    """Kubernetes API access on the policy's sockets: everything without `rules`, nothing with `[]`."""

    rules: tuple[Rule, ...] | None = None

    @field_validator("rules", mode="before")
    @classmethod
    def _explicit(cls, value: Any) -> Any:
        # `rules:` with no value is too easy to mean either "all" or "none": make the author choose.
        if value is None:
            raise ValueError("rules is empty: omit the key to allow everything, or write rules: [] to allow nothing")
        return value


class ConsoleRights(StrictModel):
    """What a policy's subjects may do in the web console; an omitted key grants nothing there."""

    sessions: Literal["read"] | None = None
    audit: Literal["read"] | None = None
    access_requests: Literal["read", "approve"] | None = None
    # Who may use what: the access matrix and the explain form (it reveals the policies, not the clusters).
    access: Literal["read"] | None = None

    def union(self, other: ConsoleRights) -> ConsoleRights:
        """Rights from several policies add up, `approve` including `read`."""
        requests = "approve" if "approve" in (self.access_requests, other.access_requests) else (
            self.access_requests or other.access_requests)  # fmt: skip
        return ConsoleRights(
            sessions=self.sessions or other.sessions,
            audit=self.audit or other.audit,
            access_requests=requests,
            access=self.access or other.access,
        )

    @property
    def any(self) -> bool:
        return bool(self.sessions or self.audit or self.access_requests or self.access)


class Policy(StrictModel):
    """A named grant: these subjects may use these sockets under these conditions, with this access."""

    name: PolicyName
    subjects: Subjects
    sockets: tuple[SocketGlob, ...] = ()
    socket_tags: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    conditions: Conditions = Field(default_factory=Conditions)
    kubernetes: KubernetesAccess | None = None
    grant_only: bool = Field(
        default=False, description="apply only to a caller with an approved, unexpired access request granting it"
    )
    console: ConsoleRights | None = None

    @field_validator("kubernetes", mode="before")
    @classmethod
    def _explicit(cls, value: Any) -> Any:
        if value is None:
            raise ValueError(
                "kubernetes is empty: write kubernetes: {} to allow everything, or give rules; "
                "omit the key to grant no Kubernetes access"
            )
        return value

    @field_validator("socket_tags")
    @classmethod
    def _tags(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key, values in value.items():
            if not key:
                raise ValueError("a socket tag key must not be empty")
            if not values:
                raise ValueError(f'socket tag "{key}" lists no value: a socket would never match it')
        return value

    @model_validator(mode="after")
    def _selects_sockets(self) -> Policy:
        if self.console is not None and self.grant_only:
            raise ValueError("console rights cannot be grant_only: give them in a policy of their own")
        console_only = self.console is not None and self.kubernetes is None
        if not self.sockets and not self.socket_tags and not console_only:
            raise ValueError('name the sockets this policy applies to: sockets (names, "*" globs) and/or socket_tags')
        return self


def unique_names(what: str, key: str) -> Callable[[list[Any]], list[Any]]:
    """A list validator: the items' `name`s are unique (`what` and `key` word the error)."""

    def check(items: list[Any]) -> list[Any]:
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in first:
                raise ValueError(
                    f'{what} name "{item.name}" is used by {key}[{first[item.name]}] and {key}[{i}]: '
                    "names must be unique"
                )
            first[item.name] = i
        return items

    return check


# The type of a config's `policies` key: decisions and audit events name policies, so names are unique.
PolicyList = Annotated[list[Policy], AfterValidator(unique_names("policy", "policies"))]
