"""The REST handlers of resource requests: routing a parsed request to get, list, watch, create,
update, patch, delete, deletecollection and the subresources, with kube-apiserver's answers.

Authentication and authorization have happened before (see `server`); this module only serves
what the caller may do. Bodies are JSON or YAML; unknown fields are dropped, warned about or
refused per `fieldValidation` (default Warn), as kube-apiserver does; `dryRun=All` validates and
answers without storing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from aiohttp import web

from connector.kube.requestinfo import RequestInfo
from sandbox.apiserver import catalog, kubeproto, logs, patches, reviews, strategy, tables
from sandbox.apiserver.authn import Authenticator, UserInfo
from sandbox.apiserver.authz import Authorizer
from sandbox.apiserver.catalog import ResourceType
from sandbox.apiserver.errors import (
    ApiError,
    FieldError,
    bad_request,
    invalid,
    method_not_allowed,
    path_not_found,
    unsupported_media_type,
)
from sandbox.apiserver.lists import list_objects, object_filter
from sandbox.apiserver.negotiation import Negotiated, negotiate
from sandbox.apiserver.responses import respond
from sandbox.apiserver.runtime import PodRuntime
from sandbox.apiserver.schemas import Schemas
from sandbox.apiserver.selectors import format_label_selector
from sandbox.apiserver.store import Store
from sandbox.apiserver.streaming import (
    StreamParams,
    StreamParamsError,
    serve_attach,
    serve_exec,
    serve_portforward,
)
from sandbox.apiserver.watch import serve_watch

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit on a request body
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
BODY_TYPES = ["application/json", "application/yaml", kubeproto.MEDIA_TYPE]
# Kinds whose DELETE answers with the object rather than a Status, as their registries do.
_RETURNS_DELETED = frozenset({"Pod", "Service", "Namespace"})
_STREAMS = {"exec": serve_exec, "attach": serve_attach, "portforward": serve_portforward}


@dataclass(frozen=True)
class Call:
    """One authorized resource request."""

    request: web.Request
    info: RequestInfo
    user: UserInfo

    @property
    def params(self) -> Mapping[str, str]:
        return self.request.rel_url.query

    @property
    def pretty(self) -> bool:
        return self.params.get("pretty", "").lower() in ("true", "1")

    @property
    def dry_run(self) -> bool:
        values = self.request.rel_url.query.getall("dryRun", [])
        for value in values:
            if value != "All":
                raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
        return bool(values)


def _without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _pod_type() -> ResourceType:
    rt = catalog.lookup("", "v1", "pods")
    assert rt is not None
    return rt


class ResourceHandlers:
    def __init__(
        self,
        *,
        store: Store,
        schemas: Schemas,
        authenticator: Authenticator,
        authorizer: Authorizer,
        runtime: PodRuntime,
        log_interval: float,
        bookmark_interval: float,
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.runtime = runtime
        self.log_interval = log_interval
        self.bookmark_interval = bookmark_interval

    # ----- routing -------------------------------------------------------------------------------

    async def handle(self, call: Call) -> web.StreamResponse:
        info = call.info
        rt = catalog.lookup(info.api_group, info.api_version, info.resource)
        if rt is None or len(info.parts) > 3:
            raise path_not_found()
        if rt.kind == "Namespace":
            namespace = ""
        elif info.namespace and not rt.namespaced:
            raise path_not_found()
        else:
            namespace = info.namespace
        name = info.parts[1] if len(info.parts) > 1 else ""
        sub = info.parts[2] if len(info.parts) > 2 else ""
        method = call.request.method
        if rt.namespaced and not namespace and (name or method not in ("GET", "HEAD")):
            raise path_not_found()  # only list and watch exist across all namespaces
        if not catalog.is_stored(rt):
            return await self._review(call, rt, name)
        if sub:
            return await self._subresource(call, rt, namespace, name, sub)
        if method in ("GET", "HEAD"):
            if name and info.verb == "watch":
                return await self._watch(call, rt, namespace, name)  # the legacy /watch/.../{name} path
            if name:
                return self._get(call, rt, namespace, name)
            if info.verb == "watch":
                return await self._watch(call, rt, namespace or None, "")
            return self._list(call, rt, namespace or None)
        if method == "POST" and not name:
            return await self._create(call, rt, namespace)
        if method == "PUT" and name:
            return await self._update(call, rt, namespace, name, "")
        if method == "PATCH" and name:
            return await self._patch(call, rt, namespace, name, "")
        if method == "DELETE" and name:
            return await self._delete(call, rt, namespace, name)
        if method == "DELETE" and "deletecollection" in rt.verbs:
            return await self._delete_collection(call, rt, namespace)
        raise method_not_allowed()

    # ----- reading -------------------------------------------------------------------------------

    def _negotiate(self, call: Call) -> Negotiated:
        return negotiate(call.request.headers.get("Accept"), allow=frozenset({"Table"}))

    def _table(self, rt: ResourceType, objects: list[dict[str, Any]], negotiated: Negotiated, call: Call, *,
               headers: bool = True, list_meta: dict[str, Any] | None = None) -> dict[str, Any]:
        include = call.params.get("includeObject", "Metadata") or "Metadata"
        if include not in tables.INCLUDE_OBJECT:
            raise bad_request(f'includeObject: Unsupported value: "{include}": supported values: "None", '
                              '"Metadata", "Object"')
        return tables.table(rt, objects, now=datetime.now(UTC), include_object=include, headers=headers,
                            api_version=negotiated.group_version, list_meta=list_meta)

    def _get(self, call: Call, rt: ResourceType, namespace: str, name: str) -> web.StreamResponse:
        negotiated = self._negotiate(call)
        obj = self.store.require(rt, namespace, name)
        if negotiated.as_kind == "Table":
            return respond(self._table(rt, [obj], negotiated, call,
                                       list_meta={"resourceVersion": obj["metadata"]["resourceVersion"]}),
                           negotiated=negotiated, pretty=call.pretty)
        return respond(obj, negotiated=negotiated, pretty=call.pretty)

    def _list(self, call: Call, rt: ResourceType, namespace: str | None) -> web.StreamResponse:
        negotiated = self._negotiate(call)
        result = list_objects(self.store, rt, namespace, call.params)
        if negotiated.as_kind == "Table":
            body = self._table(rt, result.items, negotiated, call, list_meta=result.list_meta())
        else:
            items = []
            for obj in result.items:
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                items.append(obj)
            body = {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": result.list_meta(),
                    "items": items}
        return respond(body, negotiated=negotiated, pretty=call.pretty)

    async def _watch(self, call: Call, rt: ResourceType, namespace: str | None, name: str) -> web.StreamResponse:
        negotiated = self._negotiate(call)
        params = dict(call.params)
        if name:
            selector = params.get("fieldSelector", "")
            params["fieldSelector"] = f"metadata.name={name}" + (f",{selector}" if selector else "")
        render = None
        if negotiated.as_kind == "Table":
            def render(obj: dict[str, Any], first: bool) -> dict[str, Any]:
                return self._table(rt, [obj], negotiated, call, headers=first,
                                   list_meta={"resourceVersion": obj["metadata"]["resourceVersion"]})
        return await serve_watch(call.request, self.store, rt, namespace, params, negotiated, render,
                                 bookmark_interval=self.bookmark_interval)

    # ----- bodies ------------------------------------------------------------------------------

    async def _body(self, call: Call, allowed: list[str]) -> tuple[Any, str]:
        content_type = call.request.content_type or "application/json"
        if content_type not in allowed:
            raise unsupported_media_type(allowed)
        try:
            raw = await call.request.read()  # the application caps bodies at MAX_BODY_BYTES
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"Request entity too large: limit is {MAX_BODY_BYTES}") from None
        try:
            if content_type == kubeproto.MEDIA_TYPE:
                return kubeproto.decode(raw), content_type
            if content_type == "application/yaml":
                body = yaml.safe_load(raw.decode())
            else:
                body = json.loads(raw)
            # In a patch, null means "remove"; in an object it means "unset", as Go's decoder reads it.
            return (body if content_type in PATCH_TYPES else _without_nulls(body)), content_type
        except kubeproto.UnsupportedKind as exc:
            supported = ", ".join(sorted(f"{k}" for _, k in kubeproto.DECODABLE))
            raise ApiError(415, f"the body of the request was in an unknown format - this emulated API server "
                                f"decodes {kubeproto.MEDIA_TYPE} only for {supported}, not {exc}; send "
                                "application/json") from None
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded as {content_type}: {exc}") from None

    def _field_validation(self, call: Call, rt: ResourceType, obj: dict[str, Any], kind: str | None = None,
                          version: tuple[str, str] | None = None) -> list[str]:
        """Drop unknown fields; Strict refuses them, Warn (the default) reports them as warnings."""
        directive = call.params.get("fieldValidation", "") or "Warn"
        if directive not in ("Ignore", "Warn", "Strict"):
            raise bad_request(f'fieldValidation: Unsupported value: "{directive}": supported values: "Ignore", '
                              '"Strict", "Warn"')
        group, ver = version or (rt.group, rt.version)
        kind = kind or rt.kind
        unknown = self.schemas.prune_unknown(self.schemas.for_kind(group, ver, kind), obj)
        messages = [f'unknown field "{path}"' for path in unknown]
        if messages and directive == "Strict":
            raise bad_request(f'{kind} in version "{ver}" cannot be handled as a {kind}: strict decoding error: '
                              + ", ".join(messages))
        return messages if directive == "Warn" else []

    def _check_identity(self, rt: ResourceType, obj: dict[str, Any], namespace: str, name: str) -> None:
        meta = obj.setdefault("metadata", {})
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        if name:
            if not meta.get("name"):
                meta["name"] = name
            elif meta["name"] != name:
                raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                  f"({name})")

    # ----- writing -------------------------------------------------------------------------------

    async def _create(self, call: Call, rt: ResourceType, namespace: str) -> web.StreamResponse:
        body, _ = await self._body(call, BODY_TYPES)
        strategy.check_kind(rt, body)
        self._check_identity(rt, body, namespace, "")
        warnings = self._field_validation(call, rt, body)
        created = self.store.create(rt, body, namespace=namespace, dry_run=call.dry_run)
        return respond(created, status=201, pretty=call.pretty, warnings=warnings)

    async def _update(self, call: Call, rt: ResourceType, namespace: str, name: str, sub: str) -> web.StreamResponse:
        body, _ = await self._body(call, BODY_TYPES)
        strategy.check_kind(rt, body)
        self._check_identity(rt, body, namespace, name)
        warnings = self._field_validation(call, rt, body)
        updated = self.store.update(rt, body, namespace=namespace, subresource=sub, dry_run=call.dry_run)
        return respond(updated, pretty=call.pretty, warnings=warnings)

    def _apply_patch(self, content_type: str, current: dict[str, Any], patch: Any,
                     schema: dict[str, Any] | None) -> dict[str, Any]:
        try:
            if content_type == JSON_PATCH:
                try:
                    result = patches.json_patch(current, patch)
                except patches.PatchError as exc:
                    raise ApiError(422, "the server rejected our request due to an error in our request",
                                   reason="Invalid", details={"causes": [{"reason": "UnexpectedServerResponse",
                                                                          "message": str(exc)}]}) from None
            elif content_type == MERGE_PATCH:
                if not isinstance(patch, dict):
                    raise patches.PatchError("a merge patch must be a JSON object")
                result = patches.json_merge_patch(current, patch)
            else:
                result = patches.strategic_merge_patch(current, patch, self.schemas, schema)
        except patches.PatchError as exc:
            raise bad_request(str(exc)) from None
        if not isinstance(result, dict):
            raise bad_request("the patched object is not a JSON object")
        return result

    async def _patch(self, call: Call, rt: ResourceType, namespace: str, name: str, sub: str) -> web.StreamResponse:
        patch, content_type = await self._body(call, PATCH_TYPES)
        current = self.store.require(rt, namespace, name)
        patched = self._apply_patch(content_type, current, patch, self.schemas.for_kind(rt.group, rt.version, rt.kind))
        strategy.check_kind(rt, patched)
        self._check_identity(rt, patched, namespace, name)
        patched["metadata"].setdefault("resourceVersion", current["metadata"]["resourceVersion"])
        warnings = self._field_validation(call, rt, patched)
        updated = self.store.update(rt, patched, namespace=namespace, subresource=sub, dry_run=call.dry_run)
        return respond(updated, pretty=call.pretty, warnings=warnings)

    async def _delete_options(self, call: Call) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if call.request.can_read_body:
            body, _ = await self._body(call, BODY_TYPES)
            if body is not None:
                if not isinstance(body, dict):
                    raise bad_request("the body of a DELETE must be a DeleteOptions object")
                options = body
        params = call.params
        propagation = params.get("propagationPolicy") or options.get("propagationPolicy")
        if propagation is None:
            orphan = params.get("orphanDependents", options.get("orphanDependents"))
            propagation = "Orphan" if str(orphan).lower() == "true" else "Background"
        if propagation not in ("Orphan", "Background", "Foreground"):
            raise invalid("DeleteOptions", "meta.k8s.io", "", [FieldError(
                "FieldValueNotSupported", "propagationPolicy", 'supported values: "Foreground", "Background", '
                '"Orphan"', propagation)])
        preconditions = options.get("preconditions") or {}
        dry_run = call.dry_run or options.get("dryRun") == ["All"]
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        try:
            grace = None if grace is None else int(grace)
        except (TypeError, ValueError):
            raise bad_request(f'gracePeriodSeconds: Invalid value: "{grace}": must be an integer') from None
        return {"propagation": propagation, "uid": preconditions.get("uid"),
                "resource_version": preconditions.get("resourceVersion"), "grace_period_seconds": grace,
                "dry_run": dry_run}

    def _deleted_response(self, rt: ResourceType, obj: dict[str, Any], gone: bool) -> dict[str, Any]:
        if rt.kind in _RETURNS_DELETED or not gone:
            return obj
        details: dict[str, Any] = {"name": obj["metadata"]["name"]}
        if rt.group:
            details["group"] = rt.group
        details.update(kind=rt.plural, uid=obj["metadata"]["uid"])
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    async def _delete(self, call: Call, rt: ResourceType, namespace: str, name: str) -> web.StreamResponse:
        options = await self._delete_options(call)
        obj, gone = self.store.delete(rt, namespace, name, **options)
        return respond(self._deleted_response(rt, obj, gone), pretty=call.pretty)

    async def _delete_collection(self, call: Call, rt: ResourceType, namespace: str) -> web.StreamResponse:
        options = await self._delete_options(call)
        selection = object_filter(rt, call.params)
        deleted = []
        for obj in self.store.list(rt, namespace or None):
            if selection.matches(obj):
                gone_obj, _ = self.store.delete(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"],
                                                propagation=options["propagation"],
                                                grace_period_seconds=options["grace_period_seconds"],
                                                dry_run=options["dry_run"])
                gone_obj.pop("kind", None)
                gone_obj.pop("apiVersion", None)
                deleted.append(gone_obj)
        return respond({"kind": rt.list_kind, "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": deleted},
                       pretty=call.pretty)

    # ----- subresources --------------------------------------------------------------------------

    async def _subresource(self, call: Call, rt: ResourceType, namespace: str, name: str, sub: str
                           ) -> web.StreamResponse:
        if rt.subresource(sub) is None:
            raise path_not_found()
        method = call.request.method
        if sub == "status":
            if method in ("GET", "HEAD"):
                return respond(self.store.require(rt, namespace, name), pretty=call.pretty)
            if method == "PUT":
                return await self._update(call, rt, namespace, name, "status")
            if method == "PATCH":
                return await self._patch(call, rt, namespace, name, "status")
        elif sub == "scale":
            if method in ("GET", "HEAD"):
                return respond(self._scale(rt, self.store.require(rt, namespace, name)), pretty=call.pretty)
            if method in ("PUT", "PATCH"):
                return await self._set_scale(call, rt, namespace, name)
        elif sub == "log" and method in ("GET", "HEAD"):
            return await self._log(call, namespace, name)
        elif sub == "token" and method == "POST":
            body, _ = await self._body(call, BODY_TYPES)
            if not isinstance(body, dict):
                raise bad_request("the body of the request is not a TokenRequest object")
            account = self.store.require(rt, namespace, name)
            return respond(reviews.token_request(body, account, self.authenticator), status=201, pretty=call.pretty)
        elif sub in _STREAMS and method in ("GET", "POST"):
            return await self._stream(call, namespace, name, sub)
        raise method_not_allowed()

    def _scale(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        scale_status: dict[str, Any] = {"replicas": int(status.get("replicas", 0))}
        if spec.get("selector"):
            scale_status["selector"] = format_label_selector(spec["selector"])
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": int(spec.get("replicas", 1))},
            "status": scale_status,
        }

    async def _set_scale(self, call: Call, rt: ResourceType, namespace: str, name: str) -> web.StreamResponse:
        current = self.store.require(rt, namespace, name)
        scale = self._scale(rt, current)
        if call.request.method == "PUT":
            body, _ = await self._body(call, BODY_TYPES)
        else:
            patch, content_type = await self._body(call, PATCH_TYPES)
            body = self._apply_patch(content_type, scale, patch,
                                     self.schemas.for_kind("autoscaling", "v1", "Scale"))
        if not isinstance(body, dict) or (body.get("kind") not in (None, "Scale")):
            raise bad_request("the body of the request is not a Scale object")
        self._check_identity(rt, body, namespace, name)
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", name, [FieldError(
                "FieldValueInvalid", "spec.replicas", "must be greater than or equal to 0", replicas)])
        asked_rv = (body.get("metadata") or {}).get("resourceVersion")
        updated = copy.deepcopy(current)
        updated["spec"]["replicas"] = replicas
        updated["metadata"]["resourceVersion"] = asked_rv or current["metadata"]["resourceVersion"]
        stored = self.store.update(rt, updated, namespace=namespace, dry_run=call.dry_run)
        return respond(self._scale(rt, stored), pretty=call.pretty)

    async def _log(self, call: Call, namespace: str, name: str) -> web.StreamResponse:
        pods = _pod_type()
        pod = self.store.require(pods, namespace, name)
        options = logs.parse_options(pod, call.params, self.store.now())
        status = pod.get("status") or {}
        if status.get("phase") == "Pending":
            raise bad_request(f'container "{options.container}" in pod "{name}" is waiting to start: '
                              "ContainerCreating")
        started = logs.started_at(pod)
        if started is None:
            raise bad_request(f'container "{options.container}" in pod "{name}" has not started')
        container_log = logs.ContainerLog(pod, options.container, started, self.log_interval)
        uid = pod["metadata"]["uid"]

        def running() -> bool:
            now = self.store.get(pods, namespace, name)
            return now is not None and now["metadata"]["uid"] == uid and (now.get("status") or {}).get(
                "phase") == "Running"

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(call.request)
        if call.request.method == "HEAD":
            return response
        try:
            await logs.stream(container_log, options, response.write, now=self.store.now, running=running)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client stopped reading (kubectl logs -f ended with Ctrl-C)
        return response

    async def _stream(self, call: Call, namespace: str, name: str, sub: str) -> web.StreamResponse:
        pod = self.store.require(_pod_type(), namespace, name)
        phase = (pod.get("status") or {}).get("phase")
        if not (pod.get("spec") or {}).get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        if phase != "Running":
            raise bad_request(f"pod {name} is not running (phase {phase}): cannot {sub} it")
        try:
            params = StreamParams.from_query(call.request.rel_url.query)
        except StreamParamsError as exc:
            raise bad_request(str(exc)) from None
        return await _STREAMS[sub](call.request, self.runtime, pod, params)

    # ----- reviews -------------------------------------------------------------------------------

    async def _review(self, call: Call, rt: ResourceType, name: str) -> web.StreamResponse:
        if call.request.method != "POST" or name:
            raise method_not_allowed()
        body, _ = await self._body(call, BODY_TYPES)
        strategy.check_kind(rt, body)
        if rt.kind == "SelfSubjectReview":
            result = reviews.self_subject_review(rt.api_version, call.user)
        elif rt.kind == "SelfSubjectAccessReview":
            result = reviews.self_subject_access_review(body, call.user, self.authorizer)
        else:
            result = reviews.self_subject_rules_review(body, call.user, self.authorizer)
        return respond(result, status=201, pretty=call.pretty)
