"""The `access_requests` config key: what a caller may ask for, who may approve it, for how long.

A definition grants named policies while an access request for it is approved and unexpired. Those
policies are either `grant_only` (they apply to nobody otherwise) or carry rules with
`requires_approval` (the step-up for risky verbs). Cross-references to policies are checked here so
that a typo in `grants` is a `FILE:LINE` error instead of a request that silently grants nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from connector.durations import parse_duration
from connector.model import StrictModel
from connector.policy.model import Policy, PolicyName, Subjects, unique_names
from connector.upstream.config import NonEmpty


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]


class AccessRequestDefinition(StrictModel):
    """One kind of request: requesters ask, `approvals_required` distinct approvers decide."""

    name: PolicyName
    requesters: Subjects
    approvers: Subjects
    approvals_required: int = Field(default=1, ge=1, le=10)
    grants: tuple[PolicyName, ...]
    max_duration: Duration = "1h"
    require_reason: bool = True
    allow_self_approval: bool = False

    @model_validator(mode="after")
    def _grants_something(self) -> AccessRequestDefinition:
        if not self.grants:
            raise ValueError("grants lists no policy: an approved request would allow nothing")
        return self

    @property
    def max_timedelta(self) -> timedelta:
        return parse_duration(self.max_duration)


class KubernetesStoreConfig(StrictModel):
    """AccessRequest custom resources in one namespace of the cluster the connector runs in."""

    namespace: NonEmpty = Field(description="namespace of the AccessRequest objects (the connector's own)")
    kubeconfig: NonEmpty | None = Field(
        default=None, description="kubeconfig of that cluster; null: the pod's in-cluster service account"
    )


class AccessStoreConfig(StrictModel):
    """Where access requests are kept, exactly one of: `file`, one JSON file, for a single connector
    replica (several replicas need a shared store, which the file is not); `kubernetes`, the
    AccessRequest custom resource, shared by every replica."""

    file: str | None = Field(
        default=None, min_length=1, description="path of the JSON file (created 0600 on first request)"
    )
    kubernetes: KubernetesStoreConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AccessStoreConfig:
        if (self.file is None) == (self.kubernetes is None):
            raise ValueError("give exactly one of file or kubernetes")
        return self


AccessRequestList = Annotated[
    list[AccessRequestDefinition], AfterValidator(unique_names("access request", "access_requests"))
]


def check_grants(policies: list[Policy], definitions: list[AccessRequestDefinition]) -> None:
    """Every granted policy exists and needs a grant; every `grant_only` policy can be granted.

    Raises a ValidationError located at the offending key, so the config loader prints its line.
    """
    by_name = {p.name: (i, p) for i, p in enumerate(policies)}
    granted: set[str] = set()
    errors: list[InitErrorDetails] = []

    def error(loc: tuple[str | int, ...], message: str, value: object) -> None:
        errors.append(InitErrorDetails(type=PydanticCustomError("grant", message), loc=loc, input=[value]))

    for i, definition in enumerate(definitions):
        for j, name in enumerate(definition.grants):
            granted.add(name)
            found = by_name.get(name)
            if found is None:
                error(("access_requests", i, "grants", j), f'no policy is named "{name}"', name)
                continue
            policy = found[1]
            approval_rules = policy.kubernetes is not None and any(
                r.requires_approval for r in policy.kubernetes.rules or ()
            )
            if not policy.grant_only and not approval_rules:
                error(
                    ("access_requests", i, "grants", j),
                    f'policy "{name}" already applies without a request: set grant_only: true on it, '
                    "or requires_approval: true on the rules that need approval",
                    name,
                )
    for name, (i, policy) in by_name.items():
        if policy.grant_only and name not in granted:
            error(
                ("policies", i, "grant_only"),
                f'policy "{name}" is grant_only but no access_requests entry grants it: it would never apply',
                True,
            )
    if errors:
        raise ValidationError.from_exception_data("ConnectorConfig", errors)
