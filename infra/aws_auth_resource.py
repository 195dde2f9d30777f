"""Apply the connector's mapRoles entry to `kube-system/aws-auth`: read, merge, write, retry on conflict.

A `ConfigMapPatch` of `mapRoles` would replace the whole string (and hand the field back on
delete), so this is a Pulumi dynamic resource instead. Each operation reads the ConfigMap, edits
its `mapRoles` text with `infra.aws_auth` (every other entry kept byte-for-byte), and writes it back
with the resourceVersion it read: a concurrent edit makes the write fail with 409 and the whole
read-merge-write starts again, so nobody's change is lost. Nothing is written when the existing
text does not parse, and destroy removes only the connector's own entry.

The API calls go through the `kubernetes` client with a kubeconfig (in the stack, one that
authenticates with `python -m connector token`; see infra.kubeconfig).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi
import pulumi.dynamic

from infra.aws_auth import (
    RoleMapping,
    check_username_and_groups,
    merge_map_roles,
    remove_map_role,
    role_arn_without_path,
)

NAMESPACE = "kube-system"
NAME = "aws-auth"
MAX_ATTEMPTS = 8


class Conflict(Exception):
    """The write lost a race (HTTP 409): read again and redo the merge."""


class AwsAuthApiError(Exception):
    """The API server refused a request for another reason than a conflict."""


class ConfigMapApi(Protocol):
    """The three calls the applier makes on kube-system/aws-auth."""

    def read(self) -> dict[str, Any] | None: ...

    def create(self, body: dict[str, Any]) -> None: ...

    def replace(self, body: dict[str, Any]) -> None: ...


class KubernetesConfigMapApi:
    """ConfigMapApi over the `kubernetes` client, from a kubeconfig dict.

    Objects travel as raw JSON (`_preload_content=False`), so fields the client's models do not
    know survive the round trip.
    """

    def __init__(self, kubeconfig: dict[str, Any], cluster: str):
        from kubernetes import client, config  # imported here: only the applier's process needs it

        self.cluster = cluster
        self._errors = client.exceptions.ApiException
        self._api = client.CoreV1Api(config.new_client_from_config_dict(kubeconfig))

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args, _preload_content=False)
        except self._errors as exc:
            if exc.status == 409:
                raise Conflict(what) from None
            if exc.status == 404 and what == "read":
                return None
            raise AwsAuthApiError(
                f"cluster {self.cluster}: {what} {NAMESPACE}/{NAME} failed: HTTP {exc.status} {exc.reason}: "
                f"{_status_message(exc.body)}"
            ) from None

    def read(self) -> dict[str, Any] | None:
        response = self._call("read", self._api.read_namespaced_config_map, NAME, NAMESPACE)
        return None if response is None else json.loads(response.data)

    def create(self, body: dict[str, Any]) -> None:
        self._call("create", self._api.create_namespaced_config_map, NAMESPACE, body)

    def replace(self, body: dict[str, Any]) -> None:
        self._call("replace", self._api.replace_namespaced_config_map, NAME, NAMESPACE, body)


def _status_message(body: Any) -> str:
    try:
        return str(json.loads(body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(body or "")[:300]


def _backoff(attempt: int) -> float:
    return min(2.0, 0.05 * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True)
class Outcome:
    """What one apply did: `created`, `updated`, `unchanged` (the ConfigMap was right) or `absent`."""

    action: str
    attempts: int


def _read_modify_write(
    api: ConfigMapApi,
    edit: Callable[[str], str],
    *,
    create_missing: bool,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    for attempt in range(1, attempts + 1):
        current = api.read()
        if current is None:
            if not create_missing:
                return Outcome("absent", attempt)
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "data": {"mapRoles": edit("")},
            }
            try:
                api.create(body)
                return Outcome("created", attempt)
            except Conflict:
                sleep(_backoff(attempt))
                continue
        data = current.get("data") or {}
        text = data.get("mapRoles") or ""
        new_text = edit(text)
        if new_text == text:
            return Outcome("unchanged", attempt)
        current["data"] = {**data, "mapRoles": new_text}
        try:
            api.replace(current)
            return Outcome("updated", attempt)
        except Conflict:
            sleep(_backoff(attempt))
    raise AwsAuthApiError(f"{NAMESPACE}/{NAME} changed under every one of {attempts} attempts; try again")


def apply_role_mapping(
    api: ConfigMapApi,
    entry: RoleMapping,
    *,
    replaces: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Make `entry` the mapping of its role, removing the entry of role `replaces` in the same write."""

    def edit(text: str) -> str:
        if replaces is not None and role_arn_without_path(replaces).lower() != entry.rolearn.lower():
            text = remove_map_role(text, replaces)
        return merge_map_roles(text, entry)

    return _read_modify_write(api, edit, create_missing=True, sleep=sleep)


def remove_role_mapping(api: ConfigMapApi, rolearn: str, *, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Remove the entry of `rolearn` (and only it); a missing ConfigMap or entry is already done."""
    outcome = _read_modify_write(api, lambda text: remove_map_role(text, rolearn), create_missing=False, sleep=sleep)
    return Outcome("absent", outcome.attempts) if outcome.action == "unchanged" else outcome


def _entry(props: dict[str, Any]) -> RoleMapping:
    return RoleMapping(props["rolearn"], props["username"], tuple(props["groups"]))


def _api(props: dict[str, Any]) -> KubernetesConfigMapApi:
    return KubernetesConfigMapApi(json.loads(props["kubeconfig"]), props["cluster"])


class AwsAuthProvider(pulumi.dynamic.ResourceProvider):
    """The dynamic provider; runs in Pulumi's provider process, so it holds no state of its own."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        apply_role_mapping(_api(props), _entry(props))
        return pulumi.dynamic.CreateResult(f"{props['cluster']}/{NAMESPACE}/{NAME}/{props['rolearn']}", props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [k for k in ("cluster", "kubeconfig", "rolearn", "username", "groups") if olds.get(k) != news.get(k)]
        return pulumi.dynamic.DiffResult(
            changes=bool(changed),
            replaces=["cluster"] if "cluster" in changed else [],
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        apply_role_mapping(_api(news), _entry(news), replaces=olds.get("rolearn"))
        return pulumi.dynamic.UpdateResult(news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        remove_role_mapping(_api(props), props["rolearn"])


@dataclass
class AwsAuthRoleMappingArgs:
    """One cluster's mapRoles entry for the connector role."""

    cluster: pulumi.Input[str]
    kubeconfig: pulumi.Input[str]  # JSON kubeconfig
    rolearn: pulumi.Input[str]  # any IAM role ARN; written without its path
    username: str
    groups: Sequence[str]


class AwsAuthRoleMapping(pulumi.dynamic.Resource, module="eks-access-connector", name="AwsAuthRoleMapping"):
    """The connector role's entry in one cluster's kube-system/aws-auth mapRoles."""

    def __init__(self, name: str, args: AwsAuthRoleMappingArgs, opts: pulumi.ResourceOptions | None = None):
        check_username_and_groups(args.username, args.groups)
        super().__init__(
            AwsAuthProvider(),
            name,
            {
                "cluster": args.cluster,
                "kubeconfig": args.kubeconfig,
                "rolearn": pulumi.Output.from_input(args.rolearn).apply(role_arn_without_path),
                "username": args.username,
                "groups": list(args.groups),
            },
            opts,
        )
