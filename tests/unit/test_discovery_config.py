"""The `discovery:` config section: parsing with errors that point at the line, tag filters, socket
names, and the `discover` command's flags."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.aws import discovery_cli
from connector.aws.discovery_config import DiscoveryConfig, EksDiscoveryConfig, socket_name
from connector.config import ConfigError, ConnectorConfig, load_model


def load(text: str) -> ConnectorConfig:
    return load_model(ConnectorConfig, text, "connector.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value.errors


def test_an_empty_config_has_no_discovery() -> None:
    assert load("").discovery == DiscoveryConfig(aws_eks=[])


def test_a_full_source_parses() -> None:
    cfg = load(
        """
discovery:
  aws_eks:
    - regions: [eu-west-1, us-east-1]
      credentials:
        role_arn: arn:aws:iam::123456789012:role/connector
        external_id: shared-secret
      scan_interval_minutes: 10
      include_with_tags: {expose: [], team: [payments, risk]}
      exclude_with_tags: {env: [sandbox]}
      socket_name_template: "k-{cluster}-{region}"
    - regions: all
"""
    )
    first, second = cfg.discovery.aws_eks
    assert first.regions == ["eu-west-1", "us-east-1"]
    assert first.credentials is not None and first.credentials.external_id == "shared-secret"
    assert first.scan_interval_minutes == 10
    assert first.include_with_tags == {"expose": [], "team": ["payments", "risk"]}
    assert first.socket_name("eu-west-1", "Prod_1") == "k-prod-1-eu-west-1"
    assert second.regions == "all"
    assert second.scan_interval_minutes == 5
    assert second.socket_name_template == "eks-{region}-{cluster}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{}", "connector.yaml:4: discovery.aws_eks[0].regions: required key is missing"),
        ("{regions: al}", "connector.yaml:4: discovery.aws_eks[0].regions: input should be 'all', got 'al'"),
        ("{regions: []}", "discovery.aws_eks[0].regions: list should have at least 1 item"),
        ("{regions: [eu-west-1, europe]}", "discovery.aws_eks[0].regions[1]: 'europe' is not an AWS region name"),
        ("{regions: [eu-west-1, eu-west-1]}", "discovery.aws_eks[0].regions: regions lists eu-west-1 more than once"),
        ("{regions: all, scan_interval_minutes: 0}", "scan_interval_minutes: input should be greater than or equal"),
        ("{regions: all, include_with_tags: {env: prod}}", "include_with_tags.env: input should be a valid list"),
        ("{regions: all, exclude_with_tags: {'': [x]}}", "exclude_with_tags"),
        ("{regions: all, socket_name_template: '{region}'}", "must contain {cluster}"),
        ("{regions: all, socket_name_template: '{cluster}-{account}'}", "found {account}"),
        ("{regions: all, socket_name_template: '{cluster!r}'}", "may only use {region} and {cluster}"),
        ("{regions: all, socket_name_template: '{cluster'}", "is not a valid template"),
        ("{regions: all, socket_name_template: 'eks.{cluster}'}", "is not a DNS label"),
        ("{regions: all, credentials: {session_name: xy}}", "external_id and session_name only apply with role_arn"),
        ("{regions: all, interval: 5}", "discovery.aws_eks[0].interval: unknown key"),
    ],
)
def test_mistakes_are_reported_where_they_are(source: str, expected: str) -> None:
    text = f"policies: []\ndiscovery:\n  aws_eks:\n    - {source}\n"
    errors = errors_of(text)
    assert any(expected in e for e in errors), errors
    assert all(e.startswith("connector.yaml:4: ") for e in errors), errors


@pytest.mark.parametrize(
    ("include", "exclude", "tags", "selected"),
    [
        ({}, {}, {}, True),
        ({}, {}, {"env": "prod"}, True),
        ({"expose": []}, {}, {"expose": "anything"}, True),
        ({"expose": []}, {}, {"other": "x"}, False),
        ({"env": ["prod", "staging"]}, {}, {"env": "staging"}, True),
        ({"env": ["prod"]}, {}, {"env": "dev"}, False),
        ({"env": ["prod"], "team": ["risk"]}, {}, {"env": "dev", "team": "risk"}, True),  # any include tag
        ({}, {"env": ["sandbox"]}, {"env": "sandbox"}, False),
        ({}, {"env": ["sandbox"]}, {"env": "prod"}, True),
        ({}, {"private": []}, {"private": ""}, False),
        ({"env": []}, {"env": ["dev"]}, {"env": "dev"}, False),  # exclude wins
        ({"env": ["Prod"]}, {}, {"env": "prod"}, False),  # values are case-sensitive, as in AWS
    ],
)
def test_tag_filters(
    include: dict[str, list[str]], exclude: dict[str, list[str]], tags: dict[str, str], selected: bool
) -> None:
    source = EksDiscoveryConfig(regions="all", include_with_tags=include, exclude_with_tags=exclude)
    assert source.selects(tags) is selected


@pytest.mark.parametrize(
    ("template", "region", "cluster", "name"),
    [
        ("eks-{region}-{cluster}", "eu-west-1", "prod", "eks-eu-west-1-prod"),
        ("eks-{region}-{cluster}", "eu-west-1", "Prod_Cluster", "eks-eu-west-1-prod-cluster"),
        ("{cluster}", "us-east-1", "a", "a"),
        ("{cluster}-{region}", "us-east-1", "x" * 50, "x" * 50 + "-us-east-1"),
    ],
)
def test_socket_names(template: str, region: str, cluster: str, name: str) -> None:
    assert socket_name(template, region, cluster) == name


@pytest.mark.parametrize(
    ("template", "cluster"),
    [
        ("eks-{region}-{cluster}", "x" * 60),  # longer than 63
        ("{cluster}", "trailing_"),  # ends with '-'
        ("{cluster}-", "a"),
    ],
)
def test_socket_names_that_are_no_dns_label(template: str, cluster: str) -> None:
    with pytest.raises(ValueError, match="is not a DNS label"):
        socket_name(template, "eu-west-1", cluster)


@given(st.from_regex(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}", fullmatch=True))
def test_any_eks_cluster_name_gives_a_dns_label_or_a_clear_error(cluster: str) -> None:
    try:
        name = socket_name("eks-{region}-{cluster}", "ap-southeast-2", cluster)
    except ValueError as exc:
        assert "is not a DNS label" in str(exc)
        return
    assert len(name) <= 63
    assert name == name.lower()
    assert name[0].isalnum() and name[-1].isalnum()


# --- the `discover` command's flags -----------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    discovery_cli.configure(parser)
    return parser.parse_args(argv)


def test_tag_flags_become_filters() -> None:
    assert discovery_cli.tag_filter(["env=prod", "env=staging", "team", "team=x", "empty="]) == {
        "env": ["prod", "staging"],
        "team": [],
        "empty": [""],
    }
    with pytest.raises(ValueError, match="has no key"):
        discovery_cli.tag_filter(["=x"])


def test_flags_become_a_discovery_source() -> None:
    source = discovery_cli.source_from_args(
        parse(["--regions", "eu-west-1, us-east-1", "--include-tag", "expose", "--role-arn", _ROLE, "--show-ca"])
    )
    assert source.regions == ["eu-west-1", "us-east-1"]
    assert source.include_with_tags == {"expose": []}
    assert source.credentials is not None and source.credentials.role_arn == _ROLE
    assert discovery_cli.source_from_args(parse(["--regions", "all"])).regions == "all"


_ROLE = "arn:aws:iam::123456789012:role/connector"


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--regions", "eu-west-1,nowhere"], "discover: regions[1]: 'nowhere' is not an AWS region name"),
        (["--regions", "eu-west-1", "--role-arn", "x"], "discover: credentials.role_arn: 'x' is not an IAM role ARN"),
        (["--regions", "eu-west-1", "--socket-name-template", "{region}"], "must contain {cluster}"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(capsys: pytest.CaptureFixture[str], argv: list[str], why: str) -> None:
    assert discovery_cli.run(parse(argv)) == 2
    assert why in capsys.readouterr().err
