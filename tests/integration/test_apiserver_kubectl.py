"""The emulated EKS API server on 127.0.0.1 against real clients: kubectl 1.29 and 1.33, the Python
`kubernetes` client, kubernetes_asyncio, and raw HTTP for what those clients do not show (paging,
watch resumption, faults, impersonation, protobuf bodies)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import aiohttp
import kubernetes_asyncio.client as async_client
import pytest
from kubernetes import client as kube_client
from kubernetes import watch as kube_watch

from connector.kube import protobuf
from sandbox.apiserver import EmulatedApiServer, catalog
from tests.support.apiserver import (
    ADMIN_TOKEN,
    Kubectl,
    http_client,
    kubectl_binary,
    read_lines,
    read_lines_until,
    running_apiserver,
    stop,
)

RBAC = "rbac.authorization.k8s.io/v1"
PODS = catalog.lookup("", "v1", "pods")
DEPLOYMENT = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web}
    spec:
      replicas: 2
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          containers:
          - name: nginx
            image: nginx:1.27
            env:
            - {name: MODE, value: blue}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: web-1
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: settings
    data:
      color: blue
    """)


def pod(name: str, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                            "labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


# ----- kubectl ------------------------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize("version", ["1.29", "1.33"])
async def test_kubectl_workflow(version: str, tmp_path: Path) -> None:
    binary = kubectl_binary(version)
    if binary is None:
        pytest.skip(f"kubectl {version} is not installed beside the kubectl dispatcher")
    async with running_apiserver(tmp_path, log_interval=0.1) as server:
        kubectl = Kubectl(binary, server, tmp_path)
        manifest = tmp_path / "app.yaml"
        manifest.write_text(DEPLOYMENT)

        resources = await kubectl.ok("api-resources")
        assert "deployments" in resources and "selfsubjectreviews" in resources
        whoami = await kubectl.ok("auth", "whoami")
        assert "kubernetes-admin" in whoami and "system:masters" in whoami
        created = await kubectl.ok("apply", "-f", str(manifest))
        assert "deployment.apps/web created" in created and "configmap/settings created" in created
        assert "unchanged" in await kubectl.ok("apply", "-f", str(manifest))
        manifest.write_text(DEPLOYMENT.replace("value: blue", "value: green"))
        assert "deployment.apps/web configured" in await kubectl.ok("apply", "-f", str(manifest))
        deployment = json.loads(await kubectl.ok("get", "deployment", "web", "-o", "json"))
        assert deployment["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "green"}]
        assert deployment["metadata"]["generation"] == 2

        table = await kubectl.ok("get", "pods")
        assert table.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert table.split("\n")[1].split()[:3] == ["web-1", "1/1", "Running"]

        watcher = await kubectl.start("get", "configmaps", "-w", "--output-watch-events")
        assert watcher.stdout is not None
        await read_lines_until(watcher.stdout, lambda line: "settings" in line)
        await kubectl.ok("label", "configmap", "settings", "seen=yes")
        await kubectl.ok("create", "configmap", "later", "--from-literal=a=b")
        await read_lines_until(watcher.stdout, lambda line: line.startswith("ADDED") and "later" in line)
        await stop(watcher)

        assert "scaled" in await kubectl.ok("scale", "deployment", "web", "--replicas=4")
        ready = await kubectl.ok("get", "deployment", "web", "-o", "jsonpath={.status.readyReplicas}")
        assert ready == "4"

        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i 's/color: blue/color: red/' \"$1\"\n")
        editor.chmod(0o755)
        assert "edited" in await kubectl.ok("edit", "configmap", "settings", EDITOR=str(editor))
        labels = json.loads(await kubectl.ok("get", "configmap", "settings", "-o", "json"))
        assert labels["data"] == {"color": "red"} and labels["metadata"]["labels"] == {"seen": "yes"}

        follower = await kubectl.start("logs", "-f", "web-1", "--tail=1")
        assert follower.stdout is not None
        lines = await read_lines(follower.stdout, 3)
        numbers = [int(line.removeprefix("web-1 nginx line ")) for line in lines]
        assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]  # new lines arrive as they are logged
        await stop(follower)

        assert 'pod "web-1" deleted' in await kubectl.ok("delete", "pod", "web-1")
        missing = await kubectl.run("get", "pod", "web-1")
        assert missing.code == 1
        assert 'Error from server (NotFound): pods "web-1" not found' in missing.stderr


# ----- Python clients -----------------------------------------------------------------------------


async def test_python_clients_list_and_watch(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server:
        server.store.apply(pod("one"))
        config = kube_client.Configuration()
        config.host = server.url
        config.ssl_ca_cert = str(server.ca_path)
        config.api_key = {"authorization": f"Bearer {ADMIN_TOKEN}"}

        def sync_client() -> tuple[list[str], list[tuple[str, str]]]:
            api = kube_client.CoreV1Api(kube_client.ApiClient(config))
            names = [p.metadata.name for p in api.list_namespaced_pod("default").items]
            events = []
            for event in kube_watch.Watch().stream(api.list_namespaced_pod, "default", timeout_seconds=1):
                events.append((event["type"], event["object"].metadata.name))
            return names, events

        names, events = await asyncio.to_thread(sync_client)
        assert names == ["one"] and events == [("ADDED", "one")]

        aconfig = async_client.Configuration()
        aconfig.host = server.url
        aconfig.ssl_ca_cert = str(server.ca_path)
        aconfig.api_key = {"BearerToken": f"Bearer {ADMIN_TOKEN}"}
        async with async_client.ApiClient(aconfig) as api_client:
            namespaces = await async_client.CoreV1Api(api_client).list_namespace()
        assert [n.metadata.name for n in namespaces.items] == ["default", "kube-node-lease", "kube-public",
                                                              "kube-system"]


# ----- raw HTTP -----------------------------------------------------------------------------------


async def test_discovery_and_openapi(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path, version="v1.30.2") as server, http_client(server) as http:
        async with http.get("/version") as r:
            assert (await r.json())["gitVersion"] == "v1.30.2"
        aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        async with http.get("/apis", headers={"Accept": aggregated}) as r:
            assert r.headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            groups = {g["metadata"]["name"]: g for g in (await r.json())["items"]}
        deployments = next(x for x in groups["apps"]["versions"][0]["resources"] if x["resource"] == "deployments")
        assert {s["subresource"] for s in deployments["subresources"]} == {"scale", "status"}
        async with http.get("/apis", headers={"Accept": "application/json"}) as r:
            assert (await r.json())["kind"] == "APIGroupList"
        async with http.get("/api/v1") as r:
            names = {x["name"] for x in (await r.json())["resources"]}
        assert {"pods/exec", "pods/log", "pods/portforward", "serviceaccounts/token"} <= names
        async with http.get("/openapi/v3") as r:
            url = (await r.json())["paths"]["apis/apps/v1"]["serverRelativeURL"]
        async with http.get(url) as r:
            patch = (await r.json())["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
        assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
        async with http.get("/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0"
                                                               "+protobuf"}) as r:
            body = await r.read()
        first = next(protobuf.fields(body))
        assert first == (1, protobuf.LENGTH, b"2.0")  # Document.swagger


async def test_paging_is_consistent_and_expires(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path, history=20) as server, http_client(server) as http:
        for i in range(5):
            server.store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}})
        async with http.get("/api/v1/namespaces/default/configmaps", params={"limit": "2"}) as r:
            page = await r.json()
        assert [i["metadata"]["name"] for i in page["items"]] == ["c0", "c1"]
        assert page["metadata"]["remainingItemCount"] == 3
        server.store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2"}, "data": {"x": "y"}})
        async with http.get("/api/v1/namespaces/default/configmaps",
                            params={"limit": "10", "continue": page["metadata"]["continue"]}) as r:
            rest = await r.json()
        assert [i["metadata"]["name"] for i in rest["items"]] == ["c2", "c3", "c4"]
        assert "data" not in rest["items"][0]  # the snapshot of the first page, not the later write
        assert rest["metadata"]["resourceVersion"] == page["metadata"]["resourceVersion"]
        for i in range(25):  # push the snapshot out of the history
            server.store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn"},
                                "data": {"i": str(i)}})
        async with http.get("/api/v1/namespaces/default/configmaps",
                            params={"limit": "2", "continue": page["metadata"]["continue"]}) as r:
            assert r.status == 410
            gone = await r.json()
        assert gone["reason"] == "Expired" and gone["metadata"]["continue"]


async def watch_events(http: aiohttp.ClientSession, path: str, count: int, **params: str) -> list[dict]:
    events = []
    async with http.get(path, params={"watch": "true", **params}) as r:
        assert r.status == 200
        async for line in r.content:
            events.append(json.loads(line))
            if len(events) == count:
                break
    return events


async def test_watch_resumes_from_a_resource_version(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path, history=10, bookmark_interval=0.05) as server, \
            http_client(server) as http:
        first = server.store.apply(pod("a"))
        start = first["metadata"]["resourceVersion"]
        changed = pod("a")
        changed["metadata"]["labels"] = {"app": "other"}
        server.store.apply(changed)
        server.store.apply(pod("b"))
        path = "/api/v1/namespaces/default/pods"
        events = await watch_events(http, path, 1, resourceVersion=start, labelSelector="app=a")
        # a's label change takes it out of the selection: the watcher is told it is gone
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "a")]
        assert events[0]["object"]["metadata"]["labels"] == {"app": "other"}
        bookmarks = await watch_events(http, path, 2, resourceVersion=start, allowWatchBookmarks="true",
                                       fieldSelector="metadata.name=b")
        assert [e["type"] for e in bookmarks] == ["ADDED", "BOOKMARK"]
        assert bookmarks[1]["object"]["metadata"]["resourceVersion"] == str(server.store.resource_version)
        for i in range(15):
            server.store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn"},
                                "data": {"i": str(i)}})
        expired = await watch_events(http, path, 1, resourceVersion=start)
        assert expired[0]["type"] == "ERROR"
        assert expired[0]["object"]["code"] == 410 and expired[0]["object"]["reason"] == "Expired"


async def test_live_watch_and_table_watch(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server, http_client(server) as http:
        server.store.apply(pod("a"))
        table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        async with http.get("/api/v1/namespaces/default/pods", params={"watch": "1"},
                            headers={"Accept": table}) as r:
            initial = json.loads(await r.content.readline())
            assert initial["object"]["kind"] == "Table" and initial["object"]["columnDefinitions"]
            server.store.apply(pod("b"))
            added = json.loads(await r.content.readline())
        assert added["type"] == "ADDED" and added["object"]["columnDefinitions"] is None
        assert added["object"]["rows"][0]["cells"][0] == "b"


async def test_authentication_and_requests_seen(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server:
        async with http_client(server, token="wrong") as http, http.get("/api") as r:
            assert r.status == 401 and (await r.json())["message"] == "Unauthorized"
        async with http_client(server, token=None) as http, http.get("/api/v1/namespaces") as r:
            assert r.status == 403
            assert (await r.json())["message"] == ('namespaces is forbidden: User "system:anonymous" cannot list '
                                                   'resource "namespaces" in API group "" at the cluster scope')
        async with http_client(server) as http, http.get("/api/v1/namespaces") as r:
            assert r.status == 200
        assert [tuple(s) for s in server.requests_seen] == [
            ("GET", "/api", ""), ("GET", "/api/v1/namespaces", "system:anonymous"),
            ("GET", "/api/v1/namespaces", "kubernetes-admin")]


async def test_service_account_tokens_and_impersonation(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server, http_client(server) as admin:
        server.store.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci"}})
        async with admin.post("/api/v1/namespaces/default/serviceaccounts/ci/token",
                              json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                    "spec": {"expirationSeconds": 600}}) as r:
            assert r.status == 201
            token = (await r.json())["status"]["token"]
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        async with http_client(server, token=token) as ci, \
                ci.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review) as r:
            assert (await r.json())["status"]["userInfo"]["username"] == "system:serviceaccount:default:ci"
        async with http_client(server, token=token) as ci, ci.get("/api/v1/namespaces/default/pods",
                                                                 headers={"Impersonate-User": "admin"}) as r:
            assert r.status == 403
            assert (await r.json())["message"].startswith('users "admin" is forbidden: User '
                                                          '"system:serviceaccount:default:ci" cannot impersonate')
        async with admin.delete("/api/v1/namespaces/default/pods/x", headers={"Impersonate-User": "bob"}) as r:
            assert r.status == 403
            assert (await r.json())["message"] == ('pods "x" is forbidden: User "bob" cannot delete resource "pods" '
                                                   'in API group "" in the namespace "default"')
        assert server.requests_seen[-1].user == "bob"


async def test_protobuf_request_bodies(tmp_path: Path) -> None:
    """kubectl 1.32+ sends typed-client bodies as protobuf: k8s\\0 + runtime.Unknown{typeMeta, raw}."""
    type_meta = protobuf.string(1, "authorization.k8s.io/v1") + protobuf.string(2, "SelfSubjectAccessReview")
    attributes = protobuf.string(2, "delete") + protobuf.string(5, "nodes")
    raw = protobuf.message(2, protobuf.message(1, attributes))  # spec.resourceAttributes
    body = b"k8s\x00" + protobuf.message(1, type_meta) + protobuf.message(2, raw)
    headers = {"Content-Type": "application/vnd.kubernetes.protobuf",
               "Accept": "application/vnd.kubernetes.protobuf,application/json"}
    async with running_apiserver(tmp_path) as server, http_client(server) as http:
        async with http.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", data=body,
                             headers=headers) as r:
            assert r.status == 201 and r.headers["Content-Type"] == "application/json"
            result = await r.json()
        assert result["spec"]["resourceAttributes"] == {"verb": "delete", "resource": "nodes"}
        assert result["status"]["allowed"] is True
        deployment_type = protobuf.string(1, "apps/v1") + protobuf.string(2, "Deployment")
        unsupported = b"k8s\x00" + protobuf.message(1, deployment_type)
        async with http.post("/apis/apps/v1/namespaces/default/deployments", data=unsupported,
                             headers=headers) as r:
            assert r.status == 415


async def test_logs(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path, log_interval=0.05) as server, http_client(server) as http:
        server.store.apply(pod("app"))
        path = "/api/v1/namespaces/default/pods/app/log"
        async with http.get(path, params={"tailLines": "2", "timestamps": "true"}) as r:
            lines = (await r.text()).splitlines()
        assert len(lines) == 2 and lines[-1].endswith("app main line " + lines[-1].rsplit(" ", 1)[1])
        assert lines[0][:4].isdigit() and lines[0][29:31] == "Z "  # RFC 3339 with nanoseconds
        async with http.get(path, params={"follow": "true", "tailLines": "0"}) as r:
            first = (await r.content.readline()).decode()
            server.store.delete(PODS, "default", "app", grace_period_seconds=0)
            rest = await r.content.read()
        assert first.startswith("app main line ")
        assert len(rest.splitlines()) <= 2  # the stream ends once the pod is gone
        server.store.apply({**pod("two"), "spec": {"containers": [{"name": "a", "image": "x"},
                                                                  {"name": "b", "image": "y"}]}})
        async with http.get("/api/v1/namespaces/default/pods/two/log") as r:
            assert r.status == 400
            assert (await r.json())["message"] == ("a container name must be specified for pod two, choose one of: "
                                                   "[a b]")


async def test_exec_routing_checks_the_pod_and_the_create_verb(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server, http_client(server) as http:
        async with http.get("/api/v1/namespaces/default/pods/ghost/exec", params={"command": "ls"}) as r:
            assert r.status == 404
        done = pod("done")
        done["status"] = {"phase": "Succeeded"}
        server.store.apply(done)
        async with http.post("/api/v1/namespaces/default/pods/done/exec", params={"command": "ls"}) as r:
            assert r.status == 400 and "is not running" in (await r.json())["message"]
        server.store.apply({"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "bob-view"},
                            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                        "name": "view"},
                            "subjects": [{"kind": "User", "name": "bob"}]})
        server.store.apply(pod("live"))
        async with http.get("/api/v1/namespaces/default/pods/live/exec", params={"command": "ls"},
                            headers={"Impersonate-User": "bob"}) as r:
            assert r.status == 403
            assert 'cannot create resource "pods/exec"' in (await r.json())["message"]


async def test_fault_injection(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path) as server:
        server.store.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}})
        async with http_client(server) as http:
            server.faults.fail_requests(2, status=429)
            for _ in range(2):
                async with http.get("/api") as r:
                    assert r.status == 429 and r.headers["Retry-After"] == "1"
            async with http.get("/api") as r:
                assert r.status == 200
            server.faults.fail_requests(1, status=500)
            async with http.get("/api") as r:
                assert r.status == 500 and (await r.json())["reason"] == "InternalError"
        server.faults.drop_connections(1)
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        async with http_client(server) as http:
            with pytest.raises(aiohttp.ClientError):  # a POST is not retried by the client
                async with http.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review):
                    pass
            async with http.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review) as r:
                assert r.status == 201
        port = server.port
        await server.faults.restart()
        assert server.port == port
        async with http_client(server) as http, http.get("/api/v1/namespaces/default/configmaps/kept") as r:
            assert r.status == 200
        with pytest.raises(ValueError):
            server.faults.fail_requests(1, status=418)


async def test_two_servers_do_not_trust_each_others_tokens(tmp_path: Path) -> None:
    async with running_apiserver(tmp_path / "a", bootstrap_token="token-a") as a, \
            running_apiserver(tmp_path / "b", bootstrap_token="token-b") as b:
        assert isinstance(a, EmulatedApiServer) and a.ca_pem != b.ca_pem
        async with http_client(b, token="token-a") as http, http.get("/api") as r:
            assert r.status == 401


@pytest.mark.kubectl
@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_kubectl_debug_reads_the_missing_ephemeral_containers_like_the_apiserver_says(
    version: str, tmp_path: Path
) -> None:
    """As found: `kubectl debug` panicked (nil pointer) on the emulator's 404 for `ephemeralcontainers`,
    a Status without `details`; kube-apiserver writes `"details": {}` for a path it does not serve."""
    binary = kubectl_binary(version)
    if binary is None:
        pytest.skip(f"kubectl {version} is not installed")
    async with running_apiserver(tmp_path) as server:
        server.store.apply(pod("app"))
        home = tmp_path / "home"
        home.mkdir()
        result = await Kubectl(binary, server, home).run("debug", "app", "--image=busybox", "-n", "default")
        assert result.code == 1, result.stderr
        assert "panic" not in result.stderr and "ephemeral containers are disabled for this cluster" in result.stderr
