"""reject_reason: requests the connector refuses with 400 before any policy is consulted."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.kube.requestinfo import MAX_PATH_BYTES, reject_reason

ACCEPTED = [
    ("GET", "/api/v1/namespaces/default/pods", ""),
    ("GET", "/api/v1/namespaces/default/pods", "watch=1&resourceVersion=10&allowWatchBookmarks=true"),
    ("GET", "/api/v1/namespaces/default/pods", "fieldSelector=metadata.name%3Dweb&labelSelector=app%3Dx"),
    ("POST", "/api/v1/namespaces/dev/pods/web-1/exec", "command=sh&command=-c&command=ls&stdin=true&tty=true"),
    ("GET", "/api/v1/namespaces/dev/pods/web-1/log", "follow=true&container=app"),
    ("GET", "/apis/apps/v1/namespaces/web/deployments/api", ""),
    ("GET", "/api", ""),
    ("GET", "/apis", ""),
    ("GET", "/version", "timeout=32s"),
    ("GET", "/openapi/v3/apis/apps/v1", "hash=ABC"),
    ("GET", "/", ""),
    ("GET", "/api/v1/namespaces/default/pods/", ""),  # one trailing slash: the apiserver trims it too
    ("GET", "/api/v1/namespaces/default/configmaps/a.b", ""),
    ("GET", "/api/v1/namespaces/default/configmaps/...", ""),  # three dots are a name, not a dot segment
    ("GET", "/api/v1/namespaces/default/services/https:web:443/proxy/x", "q=%2F..%2F"),  # query values are data
    ("GET", "/api/v1/namespaces/d%65v/pods", ""),
    ("GET", "/api/v1/pods", "watch=1&&limit=5"),  # an empty pair is skipped by Go too
    ("GET", "/api/v1/pods", "labelSelector=a+in+(x,y)"),
    ("GET", "/api/v1/namespaces/%C3%A9t%C3%A9/pods", ""),
    ("GET", "/api/v1/namespaces/default/pods", "x=1&x=2"),  # repeating other parameters is fine
]


@pytest.mark.parametrize(("method", "path", "query"), ACCEPTED)
def test_accepted(method, path, query):
    assert reject_reason(method, path, query) is None


REFUSED = [
    # dot segments, raw or encoded, any case
    ("/api/v1/namespaces/default/pods/..", "", "dot segment"),
    ("/api/v1/namespaces/default/pods/.", "", "dot segment"),
    ("/api/v1/namespaces/default/../kube-system/secrets", "", "dot segment"),
    ("/api/v1/namespaces/default/pods/%2e%2e", "", "dot segment"),
    ("/api/v1/namespaces/default/pods/%2E%2E", "", "dot segment"),
    ("/api/v1/namespaces/default/pods/.%2E", "", "dot segment"),
    ("/api/v1/namespaces/default/pods/%2e", "", "dot segment"),
    ("/api/v1/namespaces/%2e%2e/secrets", "", "dot segment"),
    ("/api/v1/namespaces/../secrets", "", "dot segment"),
    ("/./api/v1/pods", "", "dot segment"),
    # encoded separators and NUL
    ("/api/v1/namespaces/default/pods/a%2Fb", "", "encoded slash"),
    ("/api/v1/namespaces/default/pods/a%2fb", "", "encoded slash"),
    ("/api/v1/namespaces/default/pods/a%5Cb", "", "encoded slash or backslash"),
    ("/api/v1/namespaces/default/pods/a%5cb", "", "encoded slash or backslash"),
    ("/api/v1/namespaces/default/pods/a%00", "", "NUL"),
    ("/api/v1/namespaces/default/pods/a%0a", "", "control character"),
    ("/api/v1/namespaces/default/pods/a\\b", "", "backslash"),
    ("/api/v1/namespaces/default/pods/a\x00", "", "control character"),
    ("/api/v1/namespaces/default/pods/a#b", "", "'#'"),
    # empty segments
    ("//api/v1/pods", "", "empty segment"),
    ("/api//v1/pods", "", "empty segment"),
    ("/api/v1/namespaces/default/pods//", "", "empty segment"),
    # malformed encodings
    ("/api/v1/namespaces/default/pods/%zz", "", "malformed percent-encoding"),
    ("/api/v1/namespaces/default/pods/%4", "", "malformed percent-encoding"),
    ("/api/v1/namespaces/default/pods/%ff", "", "not UTF-8"),
    ("/api/v1/pods", "watch=%zz", "malformed percent-encoding"),
    ("/api/v1/pods", "fieldSelector=metadata.name%3D%C0", "not UTF-8"),
    # duplicated parameters that decide the verb or the name
    ("/api/v1/pods", "watch=0&watch=1", "repeats 'watch'"),
    ("/api/v1/pods", "watch=0&wat%63h=1", "repeats 'watch'"),
    ("/api/v1/pods", "fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db", "repeats 'fieldSelector'"),
    ("/api/v1/pods", "labelSelector=a&labelSelector=b", "repeats 'labelSelector'"),
    # `;` is a separator to some servers
    ("/api/v1/pods", "watch=0;watch=1", "';'"),
    ("/api/v1/pods", "a=b;c", "';'"),
    # shape
    ("api/v1/pods", "", "must start with /"),
    ("", "", "must start with /"),
    ("/api/v1/watch", "", "cannot tell the resource"),
    ("/apis/apps/v1/proxy", "", "cannot tell the resource"),
    ("/api/v1/" + "a" * MAX_PATH_BYTES, "", "longer than"),
    ("/api/v1/pods", "a=\x7f", "control character"),
]


@pytest.mark.parametrize(("path", "query", "fragment"), REFUSED)
def test_refused(path, query, fragment):
    reason = reject_reason("GET", path, query)
    assert reason is not None
    assert fragment in reason


def test_path_at_the_limit_is_accepted():
    path = "/api/v1/namespaces/default/configmaps/"
    path += "a" * (MAX_PATH_BYTES - len(path))
    assert len(path) == MAX_PATH_BYTES
    assert reject_reason("GET", path, "") is None
    assert reject_reason("GET", path + "b", "") is not None


NAME = st.text(
    alphabet=st.characters(min_codepoint=0x21, blacklist_categories=("Cs",), blacklist_characters="/\\\x7f"),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", ".."))


@given(segments=st.lists(NAME, min_size=1, max_size=6), method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_any_encoded_path_of_plain_names_is_accepted(segments, method):
    path = "/api/v1/namespaces/x/" + "/".join(quote(s, safe="") for s in segments)
    assert reject_reason(method, path, "") is None


DOTS = st.sampled_from([".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2E."])


@given(before=st.lists(NAME, max_size=3), dots=DOTS, after=st.lists(NAME, max_size=3))
def test_any_dot_segment_is_refused(before, dots, after):
    segments = [quote(s, safe="") for s in before] + [dots] + [quote(s, safe="") for s in after]
    reason = reject_reason("GET", "/" + "/".join(segments), "")
    assert reason is not None and "dot segment" in reason


@given(method=st.text(max_size=6), path=st.text(max_size=60), query=st.text(max_size=60))
def test_never_raises(method, path, query):
    result = reject_reason(method, path, query)
    assert result is None or (isinstance(result, str) and result)
