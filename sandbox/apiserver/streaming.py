"""pods/exec, pods/attach and pods/portforward of the emulated API server: the public entry points.

The REST side of the emulator authenticates and authorizes the request (verb `create` on the
subresource), checks that the pod exists and is Running, parses the query with
`StreamParams.from_query` (a `StreamParamsError` is a 400), then calls one of:

    await serve_exec(request, runtime, pod, params)
    await serve_attach(request, runtime, pod, params)
    await serve_portforward(request, runtime, pod, params)

and returns what it gets. From there on this module behaves like kube-apiserver plus the kubelet:
it picks the container as the apiserver does (errors are `Status` bodies), negotiates the
protocol (websocket subprotocol, or SPDY/3.1 with X-Stream-Protocol-Version), and runs the
session through `sandbox.apiserver.remotecommand` or `sandbox.apiserver.portforward`. A request
that is neither a websocket nor a SPDY upgrade gets kube-apiserver's 400 "Upgrade request required".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from connector.kube.status import status_json
from sandbox.apiserver import portforward, remotecommand
from sandbox.apiserver.channels import (
    KUBELET_EXEC_PROTOCOLS,
    KUBELET_PORTFORWARD_PROTOCOLS,
    PORTFORWARD_TUNNEL,
    SPDY_TUNNEL_PREFIX,
    V5,
    negotiate_exec,
    negotiate_portforward,
    requested_protocols,
)
from sandbox.apiserver.remotecommand import StreamOptions
from sandbox.apiserver.runtime import PodRuntime
from sandbox.apiserver.spdy_server import is_spdy_upgrade, negotiate_version


class StreamParamsError(ValueError):
    """A query parameter of exec/attach/portforward is invalid; the message is the 400's text."""


def query_bool(values: list[str]) -> bool:
    """kube-apiserver's query-to-bool conversion: absent, "0" or "false" (any case) is false; else true."""
    return bool(values) and values[0] != "0" and values[0].lower() != "false"


@dataclass(frozen=True, slots=True)
class StreamParams:
    """The query of exec/attach/portforward (PodExecOptions, PodAttachOptions, PodPortForwardOptions)."""

    command: tuple[str, ...] = ()
    container: str = ""
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    ports: tuple[int, ...] = ()

    @classmethod
    def from_query(cls, query: MultiMapping[str]) -> StreamParams:
        """Parse the query; raises StreamParamsError for a value no kubelet would accept."""
        command = tuple(query.getall("command", []))
        if any("\0" in part for part in command):
            raise StreamParamsError("command arguments must not contain NUL characters")
        port_values = query.getall("ports", [])
        try:
            ports = portforward.parse_ports(port_values) if port_values else ()
        except ValueError as exc:
            raise StreamParamsError(str(exc)) from exc
        return cls(
            command=command,
            container=query.get("container", ""),
            stdin=query_bool(query.getall("stdin", [])),
            stdout=query_bool(query.getall("stdout", [])),
            stderr=query_bool(query.getall("stderr", [])),
            tty=query_bool(query.getall("tty", [])),
            ports=ports,
        )


def _bad_request(message: str) -> web.Response:
    return web.Response(status=400, body=status_json(400, message), content_type="application/json")


def _shutting_down() -> web.Response:
    return web.Response(status=503, body=status_json(503, "the node's container runtime is shutting down"),
                        content_type="application/json")


def _resolve_container(pod: Mapping[str, Any], requested: str) -> str | web.Response:
    """The container a request is for, by kube-apiserver's rules, or the 400 it answers."""
    spec, name = pod.get("spec") or {}, (pod.get("metadata") or {}).get("name", "")
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    if not requested:
        if len(containers) == 1:
            return containers[0]
        if not containers:
            return _bad_request(f"a container name must be specified for pod {name}")
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        init = [c.get("name", "") for c in spec.get("initContainers") or []]
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        return _bad_request(message)
    every = containers + [c.get("name", "") for key in ("initContainers", "ephemeralContainers")
                          for c in spec.get(key) or []]
    if requested not in every:
        return _bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def _is_websocket(request: web.Request) -> bool:
    connection = ",".join(request.headers.getall("Connection", [])).lower()
    return request.headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection


def _refuse_websocket(offered: list[str], supported: tuple[str, ...]) -> web.Response:
    # The kubelet's websocket handshake fails with 403 when no subprotocol matches.
    return web.Response(status=403, text=f"requested protocol(s) are not supported: {offered}; supports {supported}")


def _session_container(runtime: PodRuntime, pod: Mapping[str, Any], params: StreamParams) -> str | web.Response:
    """The container an exec or attach session is for, or the answer refusing the session."""
    if runtime.closed:
        return _shutting_down()
    return _resolve_container(pod, params.container)


async def _serve_remote_command(
    request: web.Request, runtime: PodRuntime, params: StreamParams, session: remotecommand.Session,
    *, kubelet: bool,
) -> web.StreamResponse:
    options = StreamOptions(stdin=params.stdin, stdout=params.stdout,
                            stderr=params.stderr and not params.tty, tty=params.tty)
    if not (options.stdin or options.stdout or options.stderr):
        return _bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if _is_websocket(request):
        offered = requested_protocols(request.headers)
        protocol = negotiate_exec(offered, kubelet=kubelet)
        if protocol is None:
            return _refuse_websocket(offered, KUBELET_EXEC_PROTOCOLS if kubelet else (V5, *KUBELET_EXEC_PROTOCOLS))
        return await remotecommand.serve_websocket(request, runtime, protocol, options, session)
    if is_spdy_upgrade(request):
        version = negotiate_version(request, remotecommand.SPDY_PROTOCOLS)
        if isinstance(version, web.Response):
            return version
        return await remotecommand.serve_spdy(request, runtime, version, options, session)
    return _bad_request("Upgrade request required")


async def serve_exec(request: web.Request, runtime: PodRuntime, pod: dict[str, Any],
                     params: StreamParams, *, kubelet: bool = False) -> web.StreamResponse:
    """pods/exec: run `params.command` in the container over the client's streams."""
    container = _session_container(runtime, pod, params)
    if isinstance(container, web.Response):
        return container
    if not params.command:
        return _bad_request("you must specify at least one command for the container")

    async def session(streams: remotecommand.ClientStreams) -> remotecommand.Outcome:
        return await remotecommand.run_exec(runtime, pod, container, params.command, streams, tty=params.tty)

    return await _serve_remote_command(request, runtime, params, session, kubelet=kubelet)


async def serve_attach(request: web.Request, runtime: PodRuntime, pod: dict[str, Any],
                     params: StreamParams, *, kubelet: bool = False) -> web.StreamResponse:
    """pods/attach: connect the client's streams to the container's main process."""
    container = _session_container(runtime, pod, params)
    if isinstance(container, web.Response):
        return container

    async def session(streams: remotecommand.ClientStreams) -> remotecommand.Outcome:
        return await remotecommand.run_attach(runtime, pod, container, streams)

    return await _serve_remote_command(request, runtime, params, session, kubelet=kubelet)


async def serve_portforward(request: web.Request, runtime: PodRuntime, pod: dict[str, Any],
                            params: StreamParams, *, kubelet: bool = False) -> web.StreamResponse:
    """pods/portforward: SPDY, SPDY tunnelled in websocket, or websocket channels (see portforward)."""
    if runtime.closed:
        return _shutting_down()
    if _is_websocket(request):
        offered = requested_protocols(request.headers)
        tunnels = [p for p in offered if p.startswith(SPDY_TUNNEL_PREFIX) and p.endswith(".k8s.io")]
        if tunnels and kubelet:
            # SPDY tunnelled in websocket is kube-apiserver's (≥ 1.30); a kubelet refuses it, and
            # kubectl falls back to SPDY.
            return _refuse_websocket(offered, KUBELET_PORTFORWARD_PROTOCOLS)
        if tunnels:
            if PORTFORWARD_TUNNEL not in tunnels:
                return web.Response(status=403, text="unable to upgrade: unable to negotiate protocol: client "
                                    f"supports [{' '.join(tunnels)}], server accepts [{PORTFORWARD_TUNNEL}]")
            return await portforward.serve_tunnel(request, runtime, pod)
        protocol = negotiate_portforward(offered)
        if protocol is None:
            return _refuse_websocket(offered, KUBELET_PORTFORWARD_PROTOCOLS)
        if not params.ports:
            return _bad_request('query parameter "port" is required')
        return await portforward.serve_channels(request, protocol, runtime, pod, params.ports)
    if is_spdy_upgrade(request):
        version = negotiate_version(request, (portforward.PORTFORWARD_PROTOCOL,))
        if isinstance(version, web.Response):
            return version
        return await portforward.serve_upgraded(request, version, runtime, pod)
    return _bad_request("Upgrade request required")
