"""Which error answers are plain text rather than Status JSON (connector.proxy.status_form), as tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.proxy.status_form import wants_plain_text

# What kubectl sends, as captured from kubectl 1.27, 1.29 and 1.33.
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
AGGREGATED_V2 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
CLIENT_GO_DEFAULT = "application/json, */*"
# The Python kubernetes client's discovery calls.
PYTHON_CLIENT = "application/json, application/yaml, application/vnd.kubernetes.protobuf"


@pytest.mark.parametrize(
    ("path", "accept", "text"),
    [
        # client-go reads these three with Result.Raw(): only a text body becomes the printed message
        ("/api", AGGREGATED_V2, True),
        ("/apis", AGGREGATED_V2, True),
        ("/api", AGGREGATED_V2BETA1, True),
        ("/version", CLIENT_GO_DEFAULT, True),
        ("/api", "", True),
        ("/api", "text/plain", True),
        ("/apis", "TEXT/*;q=0.5", True),
        ("/api", 'application/json;g=apidiscovery.k8s.io;v=v2;as="APIGroupDiscoveryList"', True),
        # a client that takes only structured forms keeps getting the Status JSON
        ("/api", "application/json", False),
        ("/version", "application/json", False),
        ("/apis", PYTHON_CLIENT, False),
        ("/api", "application/json, */*;q=0", False),
        ("/api", "application/json, text/plain;q=0.0", False),
        # read with Result.Into(), which decodes a Status JSON: no reason to leave the Kubernetes error shape
        ("/api/v1", CLIENT_GO_DEFAULT, False),
        ("/apis/apps/v1", AGGREGATED_V2, False),
        ("/api/v1/namespaces/default/pods", "*/*", False),
        ("/apis/", AGGREGATED_V2, False),
        # the OpenAPI documents are read with Result.Raw() as protobuf or JSON documents: always text
        ("/openapi/v2", "*/*", True),
        ("/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf", True),
        ("/openapi/v3", "application/json", True),
        ("/openapi/v3/api/v1", "application/json", True),
        ("/swagger-2.0.0.pb-v1", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf", True),
        ("/openapi/v3x", "application/json", False),
        ("", "*/*", False),
    ],
)
def test_plain_text_only_where_client_go_cannot_read_a_status(path: str, accept: str, text: bool) -> None:
    assert wants_plain_text(path, accept) is text


@given(st.text(max_size=300))
def test_any_accept_header_is_answered_without_error(accept: str) -> None:
    assert wants_plain_text("/api", accept) in (True, False)
    assert wants_plain_text("/api/v1", accept) is False
