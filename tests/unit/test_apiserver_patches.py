"""JSON merge patch, JSON patch and strategic merge patch as kube-apiserver applies them."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.apiserver import schemas
from sandbox.apiserver.patches import PatchError, json_merge_patch, json_patch, strategic_merge_patch

SCHEMAS = schemas.load(1, 31)
POD = SCHEMAS.for_kind("", "v1", "Pod")
DEPLOYMENT = SCHEMAS.for_kind("apps", "v1", "Deployment")


# RFC 7386, appendix A.
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_rfc7386_examples(target: object, patch: object, result: object) -> None:
    assert json_merge_patch(target, patch) == result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)


@given(json_values, json_values)
def test_json_merge_patch_is_idempotent(target: object, patch: object) -> None:
    once = json_merge_patch(target, patch)
    assert json_merge_patch(once, patch) == once


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2, 3]}}
    ops = [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
        {"op": "remove", "path": "/spec/list/0"},
        {"op": "add", "path": "/spec/list/-", "value": 4},
        {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
        {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/moved"},
        {"op": "test", "path": "/spec/list/0", "value": 2},
    ]
    assert json_patch(doc, ops) == {"metadata": {"labels": {"b/c": "2"}, "moved": "x"},
                                    "spec": {"list": [2, 3, 4], "copy": [2, 3, 4]}}
    assert doc["spec"]["list"] == [1, 2, 3]  # the target is left alone


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{"op": "test", "path": "/a", "value": 2}], "testing value /a failed"),
        ([{"op": "remove", "path": "/missing"}], "Unable to remove nonexistent key: missing"),
        ([{"op": "replace", "path": "/b/9", "value": 1}], "out of bounds"),
        ([{"op": "add", "path": "/x/y", "value": 1}], 'doc is missing path: "/x/y"'),
        ([{"op": "jump", "path": "/a"}], "Unexpected kind: jump"),
        ([{"path": "/a"}], 'operation 0 has no "op"'),
        ({"op": "add"}, "a JSON patch must be a list of operations"),
    ],
)
def test_json_patch_errors(ops: object, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        json_patch({"a": 1, "b": [0]}, ops)


def pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
        "spec": {"containers": [
            {"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "proxy:1"},
        ]},
    }


def smp(patch: dict, target: dict | None = None) -> dict:
    return strategic_merge_patch(target or pod(), patch, SCHEMAS, POD)


def test_containers_merge_by_name_and_env_by_name() -> None:
    patched = smp({"spec": {"containers": [{"name": "app", "image": "app:2",
                                            "env": [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}]}]}})
    app, sidecar = patched["spec"]["containers"]
    assert app["image"] == "app:2" and sidecar == {"name": "sidecar", "image": "proxy:1"}
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "changed"}, {"name": "C", "value": "3"}]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_ports_merge_by_container_port() -> None:
    patched = smp({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"},
                                                                      {"containerPort": 443}]}]}})
    assert patched["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]


def test_patch_directives() -> None:
    deleted = smp({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["app"]
    replaced = smp({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}})
    assert replaced["spec"]["containers"] == [{"name": "only", "image": "x"}]
    labels_replaced = smp({"metadata": {"labels": {"new": "1", "$patch": "replace"}}})
    assert labels_replaced["metadata"]["labels"] == {"new": "1"}
    no_labels = smp({"metadata": {"labels": {"$patch": "delete"}}})
    assert "labels" not in no_labels["metadata"]
    pruned = smp({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert pruned["metadata"]["finalizers"] == []
    unioned = smp({"metadata": {"finalizers": ["a", "b"]}})  # finalizers merge as a set
    assert unioned["metadata"]["finalizers"] == ["a", "b"]
    ordered = smp({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                            "containers": [{"name": "app", "image": "app:3"}]}})
    assert [c["name"] for c in ordered["spec"]["containers"]] == ["sidecar", "app"]
    nulls = smp({"metadata": {"labels": {"app": None}}})
    assert nulls["metadata"]["labels"] == {}
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        smp({"spec": {"containers": [{"image": "nameless"}]}})


def test_lists_without_a_strategy_are_replaced() -> None:
    target = pod()
    target["spec"]["containers"][0]["command"] = ["a", "b"]
    patched = smp({"spec": {"containers": [{"name": "app", "command": ["c"]}]}}, target)
    assert patched["spec"]["containers"][0]["command"] == ["c"]


def test_retain_keys_drops_what_the_patch_does_not_keep() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patched = strategic_merge_patch(deployment, {"spec": {"strategy": {"$retainKeys": ["type"],
                                                                       "type": "Recreate"}}}, SCHEMAS, DEPLOYMENT)
    assert patched["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_does_not_modify_the_original() -> None:
    original = pod()
    before = copy.deepcopy(original)
    smp({"spec": {"containers": [{"name": "app", "image": "z"}]}}, original)
    assert original == before
