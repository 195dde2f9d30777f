"""Label and field selectors of the emulated API server, against apimachinery's grammar and semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.apiserver import catalog
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.lists import object_filter
from sandbox.apiserver.selectors import (
    format_label_selector,
    label_selector_from_object,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),  # != matches objects without the label
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("version>2", True),
        ("version<3", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        (" app = web , tier in ( front ) ", True),
        ("app=", False),
    ],
)
def test_label_selector_matching(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("app web", "unable to parse requirement: found 'web', expected: '=', '!=', '==', 'in', notin'"),
        ("app=web,", "found '', expected: identifier"),
        ("app in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
        ("app in a", "unable to parse requirement: found 'a', expected: '('"),
        ("version>x", "the value must be an integer"),
        ("bad key!=x", "found 'key', expected:"),
        ("app=bad value!", "found 'value', expected: ',' or 'end of string'"),
        ("-bad=x", 'key: Invalid value: "-bad"'),
    ],
)
def test_label_selector_errors(selector: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_label_selector(selector)
    assert message in str(err.value)


def test_match_expressions_and_formatting() -> None:
    selector = {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "api"]},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    parsed = label_selector_from_object(selector)
    assert parsed.matches(LABELS)
    assert not parsed.matches({**LABELS, "legacy": "yes"})
    assert format_label_selector(selector) == "app=web,tier in (api,front),!legacy"
    assert format_label_selector({}) == "<none>"
    with pytest.raises(ValueError, match='"Near" is not a valid label selector operator'):
        label_selector_from_object({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def test_field_selectors_with_escapes() -> None:
    parsed = parse_field_selector(r"metadata.name=a\,b,status.phase!=Failed,spec.nodeName==n1")
    assert [(r.field, r.operator, r.value) for r in parsed.requirements] == [
        ("metadata.name", "=", "a,b"), ("status.phase", "!=", "Failed"), ("spec.nodeName", "=", "n1")]
    assert parsed.matches({"metadata.name": "a,b", "status.phase": "Running", "spec.nodeName": "n1"})
    assert not parsed.matches({"metadata.name": "a,b", "status.phase": "Failed", "spec.nodeName": "n1"})
    assert parsed.value_of("metadata.name") == "a,b"
    with pytest.raises(ValueError, match="invalid selector: 'nonsense'; can't understand 'nonsense'"):
        parse_field_selector("nonsense")


def test_object_filter_knows_each_resource_fields() -> None:
    pods = catalog.lookup("", "v1", "pods")
    assert pods is not None
    pod = {"metadata": {"name": "web-1", "namespace": "dev", "labels": {"app": "web"}},
           "spec": {"nodeName": "n1", "hostNetwork": False}, "status": {"phase": "Running"}}
    selection = object_filter(pods, {"fieldSelector": "status.phase=Running,spec.hostNetwork=false",
                                     "labelSelector": "app=web"})
    assert selection.matches(pod)
    assert not object_filter(pods, {"fieldSelector": "metadata.namespace=prod"}).matches(pod)
    configmaps = catalog.lookup("", "v1", "configmaps")
    assert configmaps is not None
    with pytest.raises(ApiError) as err:
        object_filter(configmaps, {"fieldSelector": "status.phase=Running"})
    assert (err.value.code, err.value.message) == (400, "field label not supported: status.phase")


label_values = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), label_values, max_size=4))
def test_formatted_match_labels_select_their_own_labels(labels: dict[str, str]) -> None:
    text = format_label_selector({"matchLabels": labels})
    parsed = parse_label_selector("" if text == "<none>" else text)
    assert parsed.matches(labels)


@given(st.text(max_size=40))
def test_label_selector_parser_only_raises_value_errors(text: str) -> None:
    try:
        parse_label_selector(text)
    except ValueError:
        pass


@given(st.text(max_size=40))
def test_field_selector_parser_only_raises_value_errors(text: str) -> None:
    try:
        parse_field_selector(text)
    except ValueError:
        pass
