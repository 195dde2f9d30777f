"""parse_request_info against the apiserver's own test table (requestinfo_test.go) and our additions."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.kube.requestinfo import RESOURCE_REQUEST_VERBS, RequestInfo, parse_request_info, reject_reason

# (method, url, verb, api_prefix, api_group, api_version, namespace, resource, subresource, name, parts)
# First block: every success case of TestGetAPIRequestInfo in requestinfo_test.go. The Go test calls
# its "api"/"apis" resolver and expects prefix "api" for /apis paths because it never checks the
# prefix; we state the real value.
APISERVER_SUCCESS_CASES = [
    ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other",
     ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("PATCH", "/api/v1/namespaces/new-namespace", "patch", "api", "", "v1", "new-namespace", "namespaces", "",
     "new-namespace", ["namespaces", "new-namespace"]),
    # special verbs
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo",
     ["pods", "foo"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other",
     "pods", "", "foo", ["pods", "foo", "subpath", "not", "a", "subresource"]),
    ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # subresource identification
    ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo",
     ["pods", "foo", "status"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo",
     ["pods", "foo", "proxy", "subpath"]),
    ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other",
     ["namespaces", "other", "finalize"]),
    ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other",
     ["namespaces", "other", "status"]),
    # verb identification
    ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo",
     ["pods", "foo"]),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo",
     ["pods", "foo"]),
    ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # deletecollection verb identification
    ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", ["nodes"]),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other",
     "pods", "", "", ["pods"]),
    # api group identification
    ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "",
     ["pods"]),
    # api version identification
    ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other",
     "pods", "", "", ["pods"]),
]  # fmt: skip

OUR_SUCCESS_CASES = [
    # groups and subresources as kubectl sends them
    ("GET", "/apis/apps/v1/namespaces/web/deployments/api", "get", "apis", "apps", "v1", "web", "deployments", "",
     "api", ["deployments", "api"]),
    ("PUT", "/apis/apps/v1/namespaces/web/deployments/api/scale", "update", "apis", "apps", "v1", "web", "deployments",
     "scale", "api", ["deployments", "api", "scale"]),
    ("GET", "/apis/apps/v1/deployments", "list", "apis", "apps", "v1", "", "deployments", "", "", ["deployments"]),
    ("POST", "/api/v1/namespaces/dev/pods/web-1/exec?command=sh&stdin=true", "create", "api", "", "v1", "dev", "pods",
     "exec", "web-1", ["pods", "web-1", "exec"]),
    ("GET", "/api/v1/namespaces/dev/pods/web-1/exec?command=sh", "get", "api", "", "v1", "dev", "pods", "exec", "web-1",
     ["pods", "web-1", "exec"]),
    ("GET", "/api/v1/namespaces/dev/pods/web-1/attach?stdout=true", "get", "api", "", "v1", "dev", "pods", "attach",
     "web-1", ["pods", "web-1", "attach"]),
    ("POST", "/api/v1/namespaces/dev/pods/web-1/portforward", "create", "api", "", "v1", "dev", "pods", "portforward",
     "web-1", ["pods", "web-1", "portforward"]),
    ("GET", "/api/v1/namespaces/dev/pods/web-1/log?follow=true", "get", "api", "", "v1", "dev", "pods", "log", "web-1",
     ["pods", "web-1", "log"]),
    ("GET", "/api/v1/namespaces/dev/services/https:web:443/proxy/metrics", "get", "api", "", "v1", "dev", "services",
     "proxy", "https:web:443", ["services", "https:web:443", "proxy", "metrics"]),
    ("GET", "/api/v1/nodes/n1/proxy/stats", "get", "api", "", "v1", "", "nodes", "proxy", "n1",
     ["nodes", "n1", "proxy", "stats"]),
    ("GET", "/api/v1/proxy/nodes/n1/stats", "proxy", "api", "", "v1", "", "nodes", "", "n1", ["nodes", "n1", "stats"]),
    ("GET", "/api/v1/watch/namespaces/other/pods/foo", "watch", "api", "", "v1", "other", "pods", "", "foo",
     ["pods", "foo"]),
    ("POST", "/api/v1/namespaces", "create", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other", "delete", "api", "", "v1", "other", "namespaces", "", "other",
     ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/status", "get", "api", "", "v1", "other", "namespaces", "status", "other",
     ["namespaces", "other", "status"]),
    ("GET", "/api/v1/namespaces/other/configmaps/finalize", "get", "api", "", "v1", "other", "configmaps", "",
     "finalize", ["configmaps", "finalize"]),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "create", "apis", "authorization.k8s.io", "v1",
     "", "selfsubjectaccessreviews", "", "", ["selfsubjectaccessreviews"]),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", "create", "apis", "authorization.k8s.io", "v1",
     "", "selfsubjectrulesreviews", "", "", ["selfsubjectrulesreviews"]),
    ("DELETE", "/apis/batch/v1/namespaces/ci/jobs?labelSelector=app%3Dx", "deletecollection", "apis", "batch", "v1",
     "ci", "jobs", "", "", ["jobs"]),
    # watch query: empty value is watch, false/0 in any case are not, the first value wins
    ("GET", "/api/v1/pods?watch", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=FALSE", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=False", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=no", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=0&watch=1", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=1&watch=0", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?wat%63h=1", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=%zz", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    # Go's EqualFold folds U+017F LATIN SMALL LETTER LONG S to "s": "FAL\u017fE" reads as false
    ("GET", "/api/v1/pods?watch=FAL%C5%BFE", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    # ...but with undecodable list options the apiserver falls back to ToLower, which does not fold it
    ("GET", "/api/v1/pods?watch=FAL%C5%BFE&limit=x", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true&resourceVersion=10&allowWatchBookmarks=true", "watch", "api", "", "v1", "", "pods",
     "", "", ["pods"]),
    # watch only matters without a name
    ("GET", "/api/v1/namespaces/a/pods/foo?watch=true", "get", "api", "", "v1", "a", "pods", "", "foo",
     ["pods", "foo"]),
    # field selector pins the name of lists and watches
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb", "list", "api", "", "v1", "a", "pods", "",
     "web", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3D%3Dweb", "list", "api", "", "v1", "a", "pods", "",
     "web", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name!%3Dweb", "list", "api", "", "v1", "a", "pods", "",
     "", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dweb&watch=1", "watch",
     "api", "", "v1", "a", "pods", "", "web", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Db,metadata.name%3Da", "list", "api", "", "v1", "a",
     "pods", "", "a", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3D..", "list", "api", "", "v1", "a", "pods", "", "",
     ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Da%25b", "list", "api", "", "v1", "a", "pods", "",
     "", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Da%5C%3Db", "list", "api", "", "v1", "a", "pods",
     "", "a=b", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Da%5Cxb", "list", "api", "", "v1", "a", "pods",
     "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&limit=500", "list", "api", "", "v1", "a",
     "pods", "", "web", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&limit=five", "list", "api", "", "v1", "a",
     "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&timeoutSeconds=9223372036854775808", "list",
     "api", "", "v1", "a", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&timeoutSeconds=%2B30", "list", "api", "", "v1",
     "a", "pods", "", "web", ["pods"]),
    # a selector never turns a delete into a named delete
    ("DELETE", "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb", "deletecollection", "api", "", "v1", "a",
     "pods", "", "", ["pods"]),
    # methods the apiserver does not map give no verb; the method is case-sensitive as in Go
    ("OPTIONS", "/api/v1/pods", "", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("get", "/api/v1/pods", "", "api", "", "v1", "", "pods", "", "", ["pods"]),
    # percent-encoded segments are decoded like Go's URL.Path before splitting
    ("GET", "/api/v1/namespaces/d%65v/pods/web%2D1", "get", "api", "", "v1", "dev", "pods", "", "web-1",
     ["pods", "web-1"]),
    ("GET", "/api/v1/namespaces/a/pods/foo%2Fexec", "get", "api", "", "v1", "a", "pods", "exec", "foo",
     ["pods", "foo", "exec"]),
    ("GET", "/api/v1/namespaces/a/configmaps/x+y", "get", "api", "", "v1", "a", "configmaps", "", "x+y",
     ["configmaps", "x+y"]),
    # Go trims every leading and trailing slash before splitting
    ("GET", "/api/v1/namespaces/a/pods/", "list", "api", "", "v1", "a", "pods", "", "", ["pods"]),
    ("GET", "//api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "url", "verb", "prefix", "group", "version", "namespace", "resource", "subresource", "name", "parts"),
    APISERVER_SUCCESS_CASES + OUR_SUCCESS_CASES,
)
def test_resource_requests(method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts):
    path, _, query = url.partition("?")
    info = parse_request_info(method, path, query)
    assert info == RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(parts),
    )


# TestGetAPIRequestInfo's error cases and TestGetNonAPIRequestInfo, plus our own.
NON_RESOURCE_PATHS = [
    "/",
    "/api/version/",
    "/apis/group/version/",
    "/badprefix/version/resource",
    "/apis/version/resource",
    "/not-api/version/resource",
    "/apis/extensions/v1beta1",
    "/apis/extensions/v1beta1/",
    "/api/version",
    "/api",
    "",
    "/apis",
    "/version",
    "/healthz",
    "/livez/etcd",
    "/openapi/v3/apis/apps/v1",
    "/metrics",
    "/.well-known/openid-configuration",
]


@pytest.mark.parametrize("path", NON_RESOURCE_PATHS)
@pytest.mark.parametrize("method", ["GET", "POST", "Delete"])
def test_non_resource_requests(path, method):
    assert parse_request_info(method, path, "watch=1") == RequestInfo(
        is_resource_request=False, path=path, verb=method.lower()
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/version/resource", True),
        ("/apis/group/version/resource/name/subresource", True),
        ("/api/version/resource/name/subresource", True),
        ("/apis/batch/v1/job", True),
        ("/apis/batch/v1/job/foo", True),
        ("/apis/batch/v1/job/foo/scale", True),
    ],
)
def test_resource_detection(path, expected):
    """TestGetNonAPIRequestInfo's positive rows."""
    assert parse_request_info("GET", path).is_resource_request is expected


# TestFieldSelectorParsing, row for row.
@pytest.mark.parametrize(
    ("url", "name", "verb"),
    [
        ("/apis/group/version/resource", "", "list"),
        ("/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list"),
        ("/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch"),
        ("/apis/group/version/resource?fieldSelector=foo=bar", "", "list"),
        ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list"),
        ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch"),
        ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list"),
    ],
)
def test_field_selector_parsing(url, name, verb):
    path, _, query = url.partition("?")
    info = parse_request_info("GET", path, query)
    assert (info.name, info.verb) == (name, verb)


def test_path_verb_without_resource_keeps_the_partial_result_of_the_apiserver():
    # The apiserver errors (500) here; reject_reason refuses these before anything else.
    info = parse_request_info("GET", "/api/v1/watch")
    assert info == RequestInfo(True, "/api/v1/watch", "get", "api", "", "v1")
    info = parse_request_info("POST", "/apis/apps/v1/proxy")
    assert info == RequestInfo(True, "/apis/apps/v1/proxy", "post", "apis", "apps", "v1")


def test_to_dict_is_json_ready():
    info = parse_request_info("GET", "/api/v1/namespaces/a/pods/b/log")
    assert info.to_dict() == {
        "is_resource_request": True,
        "path": "/api/v1/namespaces/a/pods/b/log",
        "verb": "get",
        "api_prefix": "api",
        "api_group": "",
        "api_version": "v1",
        "namespace": "a",
        "resource": "pods",
        "subresource": "log",
        "name": "b",
        "parts": ["pods", "b", "log"],
    }


# ---- properties -------------------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "get", ""])
SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1, max_size=12
)


@given(method=st.text(max_size=8), path=st.text(max_size=80), query=st.text(max_size=80))
def test_never_raises_and_keeps_the_raw_path(method, path, query):
    info = parse_request_info(method, path, query)
    assert info.path == path
    if info.is_resource_request:
        assert info.verb in RESOURCE_REQUEST_VERBS | {method.lower()}
    else:
        assert info.verb == method.lower()
        assert info.parts == ()
    assert reject_reason(method, path, query) is None or isinstance(reject_reason(method, path, query), str)


@given(method=METHODS, segments=st.lists(st.sampled_from(["api", "apis", "v1", "namespaces", "watch", "proxy", "pods",
                                                          "status", "finalize", "x", "exec"]) | SEGMENT, max_size=8),
       query=st.sampled_from(["", "watch=1", "watch=0", "fieldSelector=metadata.name%3Dx", "limit=a"]))  # fmt: skip
def test_resource_fields_are_consistent_with_the_parts(method, segments, query):
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    info = parse_request_info(method, path, query)
    assert info.path == path
    if not info.is_resource_request:
        return
    assert info.verb in RESOURCE_REQUEST_VERBS | {method.lower()}
    if info.parts:
        assert info.resource == info.parts[0]
        assert tuple(segments[-len(info.parts) :]) == info.parts
        if len(info.parts) >= 2:
            assert info.name == info.parts[1]
        if info.subresource:
            assert info.subresource == info.parts[2]
            assert info.verb != "proxy"
    if info.verb in ("list", "deletecollection"):
        assert len(info.parts) == 1
    if info.namespace:
        assert "namespaces" in segments


@given(segments=st.lists(SEGMENT.filter(lambda s: s not in (".", "..")), min_size=1, max_size=6))
def test_percent_encoding_decodes_to_the_segments(segments):
    """Any segment, fully percent-encoded, parses to the same value as the apiserver's decoded path."""
    path = "/api/v1/namespaces/" + "/".join(quote(s, safe="") for s in segments)
    info = parse_request_info("GET", path)
    assert info.namespace == segments[0]
    unsafe = any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in "".join(segments))
    assert (reject_reason("GET", path, "") is None) is not unsafe
