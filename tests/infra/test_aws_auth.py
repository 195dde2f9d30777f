"""Table and property tests of the aws-auth mapRoles helpers: other entries must keep their exact bytes."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.aws_auth import (
    AwsAuthError,
    RoleMapping,
    find_map_role,
    merge_map_roles,
    remove_map_role,
    role_arn_without_path,
)

OURS = RoleMapping("arn:aws:iam::123456789012:role/eks-access-connector", "eks-access-connector", ("connector",))
OURS_YAML = (
    "- rolearn: arn:aws:iam::123456789012:role/eks-access-connector\n"
    "  username: eks-access-connector\n"
    "  groups:\n"
    "  - connector\n"
)

# Node-role entries the way different tools write them.
BORDER0_STYLE = """- groups:
  - system:bootstrappers
  - system:nodes
  rolearn: arn:aws:iam::123456789012:role/my-eks-cluster-bootstrapper-role-arn
  username: system:node:{{EC2PrivateDNSName}}
"""
EKSCTL_STYLE = """- groups:
    - system:bootstrappers
    - system:nodes
  rolearn: arn:aws:iam::123456789012:role/eksctl-prod-nodegroup-ng-NodeInstanceRole-1ABCDEF
  username: system:node:{{EC2PrivateDNSName}}
"""
QUOTED_WITH_COMMENTS = """# managed by the platform team
- rolearn: "arn:aws:iam::123456789012:role/karpenter-node"   # karpenter
  username: 'system:node:{{EC2PrivateDNSName}}'
  groups: [system:bootstrappers, system:nodes]

# break-glass admins
-   rolearn: arn:aws:iam::123456789012:role/Admin
    username: admin:{{SessionName}}
    groups:
      - system:masters
    extra-key: kept as is
"""
INDENTED = """  - rolearn: arn:aws:iam::123456789012:role/fargate-pods
    username: system:node:{{SessionName}}
    groups:
    - system:bootstrappers
    - system:nodes
    - system:node-proxier
"""
JSON_ONE_LINE = (
    '[{"rolearn":"arn:aws:iam::123456789012:role/node","username":"system:node:{{EC2PrivateDNSName}}",'
    '"groups":["system:bootstrappers","system:nodes"]}]'
)
JSON_PRETTY = """[
  {
    "rolearn": "arn:aws:iam::123456789012:role/node",
    "username": "system:node:{{EC2PrivateDNSName}}",
    "groups": ["system:bootstrappers", "system:nodes"]
  },
  {"rolearn": "arn:aws:iam::123456789012:role/ops", "username": "ops", "groups": ["ops"]}
]
"""
NO_TRAILING_NEWLINE = "- rolearn: arn:aws:iam::123456789012:role/node\n  username: node\n  groups: [system:nodes]"
CRLF = "- rolearn: arn:aws:iam::123456789012:role/node\r\n  username: node\r\n  groups:\r\n  - system:nodes\r\n"
BLOCK_SCALAR = (
    "- rolearn: arn:aws:iam::123456789012:role/node\n  username: |-\n    node\n  groups:\n  - system:nodes\n\n\n"
)

EXISTING = [
    BORDER0_STYLE,
    EKSCTL_STYLE,
    QUOTED_WITH_COMMENTS,
    INDENTED,
    JSON_ONE_LINE,
    JSON_PRETTY,
    NO_TRAILING_NEWLINE,
    CRLF,
    BLOCK_SCALAR,
]


def entries(text: str) -> list:
    return yaml.safe_load(text) or []


def item_texts(text: str) -> list[str]:
    """Each entry's own text as written, found through the parser's marks (not through our code)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    return [text[node.start_mark.index : node.end_mark.index].rstrip() for node in root.value] if root else []


@pytest.mark.parametrize("existing", EXISTING, ids=lambda t: t[:25])
def test_merge_keeps_every_other_entry_byte_for_byte(existing: str) -> None:
    merged = merge_map_roles(existing, OURS)
    for text in item_texts(existing):
        assert text in merged
    assert entries(merged) == [*entries(existing), OURS.as_dict()]
    assert merged.startswith(existing.rstrip("]\n \r"))  # appended, nothing before it touched


@pytest.mark.parametrize("existing", EXISTING, ids=lambda t: t[:25])
def test_merge_is_idempotent_and_remove_restores_the_original(existing: str) -> None:
    merged = merge_map_roles(existing, OURS)
    assert merge_map_roles(merged, OURS) == merged
    # The one byte that may change: a newline ending the last line, before the appended entry.
    expected = existing + "\n" if existing is NO_TRAILING_NEWLINE else existing
    assert remove_map_role(merged, OURS.rolearn) == expected


@pytest.mark.parametrize("existing", [None, "", "\n", "# nothing mapped yet\n", "~", "[]", "[ ]\n"])
def test_merge_into_nothing(existing: str | None) -> None:
    merged = merge_map_roles(existing, OURS)
    assert entries(merged) == [OURS.as_dict()]
    if existing and existing.startswith("#"):
        assert merged.startswith(existing)


def test_merge_writes_block_style_readably() -> None:
    assert merge_map_roles("", OURS) == OURS_YAML
    assert merge_map_roles("[]", OURS) == "[" + json.dumps(OURS.as_dict()) + "]"
    indented = "".join("  " + line for line in OURS_YAML.splitlines(True))
    assert merge_map_roles(INDENTED, OURS) == INDENTED + indented


def test_an_equal_entry_in_another_formatting_is_left_alone() -> None:
    existing = BORDER0_STYLE + (
        "- username: eks-access-connector  # ours\n"
        "  groups: [connector]\n"
        "  rolearn: 'arn:aws:iam::123456789012:role/eks-access-connector'\n"
    )
    assert merge_map_roles(existing, OURS) == existing


@pytest.mark.parametrize(
    ("duplicate", "why"),
    [
        ("arn:aws:iam::123456789012:role/EKS-ACCESS-CONNECTOR", "other case"),
        ("arn:aws:iam::123456789012:role/team/apps/eks-access-connector", "with a path"),
        ("ARN:AWS:IAM::123456789012:ROLE/eks-access-connector", "upper-case prefix"),
    ],
)
def test_dedupe_on_the_lower_cased_arn(duplicate: str, why: str) -> None:
    existing = (
        f"- rolearn: {OURS.rolearn}\n  username: old-name\n  groups: [old]\n"
        + BORDER0_STYLE
        + f"- rolearn: {duplicate}\n  username: stale\n  groups: [stale]\n"
    )
    merged = merge_map_roles(existing, OURS)
    assert entries(merged) == [OURS.as_dict(), *entries(BORDER0_STYLE)], why
    assert BORDER0_STYLE in merged
    assert merged.startswith("- rolearn: arn:aws:iam::123456789012:role/eks-access-connector\n")  # first position kept


def test_changed_groups_are_updated_in_place() -> None:
    existing = EKSCTL_STYLE + OURS_YAML.replace("  - connector\n", "  - old-group\n") + QUOTED_WITH_COMMENTS
    merged = merge_map_roles(existing, OURS)
    assert merged == EKSCTL_STYLE + OURS_YAML + QUOTED_WITH_COMMENTS


def test_flow_duplicates_are_removed_with_their_commas() -> None:
    existing = (
        '[{"rolearn": "arn:aws:iam::123456789012:role/eks-access-connector", "username": "x", "groups": []},'
        ' {"rolearn": "arn:aws:iam::123456789012:role/node", "username": "n", "groups": ["system:nodes"]},'
        ' {"rolearn": "arn:aws:iam::123456789012:role/Eks-Access-Connector", "username": "y", "groups": []}]'
    )
    merged = merge_map_roles(existing, OURS)
    assert entries(merged) == [OURS.as_dict(), entries(existing)[1]]
    assert '{"rolearn": "arn:aws:iam::123456789012:role/node", "username": "n", "groups": ["system:nodes"]}' in merged


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        ("arn:aws:iam::123456789012:role/Name", "arn:aws:iam::123456789012:role/Name"),
        ("arn:aws:iam::123456789012:role/some/path/Name", "arn:aws:iam::123456789012:role/Name"),
        ("arn:aws:iam::123456789012:role/a/Name+=,.@-_", "arn:aws:iam::123456789012:role/Name+=,.@-_"),
        ("arn:aws-cn:iam::123456789012:role/p/Name", "arn:aws-cn:iam::123456789012:role/Name"),
        ("arn:aws-us-gov:iam::123456789012:role/Name", "arn:aws-us-gov:iam::123456789012:role/Name"),
        ("  arn:aws:iam::123456789012:role/x/Name ", "arn:aws:iam::123456789012:role/Name"),
    ],
)
def test_role_arn_path_stripping(arn: str, expected: str) -> None:
    assert role_arn_without_path(arn) == expected


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:user/Name",
        "arn:aws:sts::123456789012:assumed-role/Name/session",
        "arn:aws:iam::12345:role/Name",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/path/",
        "not an arn",
    ],
)
def test_not_a_role_arn(arn: str) -> None:
    with pytest.raises(ValueError, match="is not an IAM role ARN"):
        role_arn_without_path(arn)


def test_the_mapping_is_written_without_the_path() -> None:
    entry = RoleMapping("arn:aws:iam::123456789012:role/team/eks-access-connector", "u", ("g",))
    assert entry.rolearn == "arn:aws:iam::123456789012:role/eks-access-connector"
    assert "team/" not in merge_map_roles(BORDER0_STYLE, entry)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ("- rolearn: a\n  groups: [x\n", "line 3"),
        ("- rolearn: a\n username: b\n", "line 2"),
        ("- {rolearn: a\n", "line 2"),
        ("- a\n---\n- b\n", ""),
        ("\t- rolearn: a\n", "line 1"),
        ("- !!python/object:os.system {rolearn: a}\n", "line 1"),
    ],
)
def test_unparseable_yaml_is_refused_with_the_error(bad: str, where: str) -> None:
    with pytest.raises(AwsAuthError, match="not valid YAML") as err:
        merge_map_roles(bad, OURS)
    assert where in str(err.value)
    assert "refusing to write" in str(err.value)
    with pytest.raises(AwsAuthError):
        remove_map_role(bad, OURS.rolearn)


@pytest.mark.parametrize(("bad", "found"), [("rolearn: x\n", "a mapping"), ("just text\n", "a single value")])
def test_mapRoles_must_be_a_list(bad: str, found: str) -> None:
    with pytest.raises(AwsAuthError, match=f"must be a YAML list of role mappings, found {found}"):
        merge_map_roles(bad, OURS)


def test_malformed_entries_are_kept_like_eks_ignores_them() -> None:
    existing = "- just-a-string\n- rolearn: 42\n- groups: [x]\n"
    merged = merge_map_roles(existing, OURS)
    assert merged == existing + OURS_YAML


def test_remove_only_our_entry() -> None:
    existing = BORDER0_STYLE + OURS_YAML + QUOTED_WITH_COMMENTS
    assert remove_map_role(existing, OURS.rolearn) == BORDER0_STYLE + QUOTED_WITH_COMMENTS
    assert remove_map_role(existing, "arn:aws:iam::123456789012:role/path/eks-access-connector") == (
        BORDER0_STYLE + QUOTED_WITH_COMMENTS
    )
    assert remove_map_role(BORDER0_STYLE, OURS.rolearn) == BORDER0_STYLE  # nothing of ours: unchanged
    assert remove_map_role(OURS_YAML, OURS.rolearn) == ""
    assert remove_map_role(None, OURS.rolearn) == ""
    flow = "[" + json.dumps(OURS.as_dict()) + "]"
    assert remove_map_role(flow, OURS.rolearn) == "[]"


def test_find_map_role() -> None:
    merged = merge_map_roles(EKSCTL_STYLE, OURS)
    assert find_map_role(merged, "arn:aws:iam::123456789012:role/x/EKS-access-connector") == OURS.as_dict()
    assert find_map_role(EKSCTL_STYLE, OURS.rolearn) is None


@pytest.mark.parametrize(("username", "groups"), [("", ("g",)), ("a\nb", ("g",)), (" u", ("g",)), ("u", ("",))])
def test_mapping_identity_is_checked(username: str, groups: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"must be( a)? non-empty"):
        RoleMapping(OURS.rolearn, username, groups)


# --- property: any block list, any position, any formatting --------------------------------------

_names = st.from_regex(r"[A-Za-z][A-Za-z0-9+=,.@_-]{0,20}", fullmatch=True)
_arns = st.builds(lambda a, n: f"arn:aws:iam::{a}:role/{n}", st.from_regex(r"[0-9]{12}", fullmatch=True), _names)
_scalar_styles = st.sampled_from(["plain", "single", "double"])


def _scalar(value: str, style: str) -> str:
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    if style == "double":
        return json.dumps(value)
    return value


@st.composite
def _entry_text(draw: st.DrawFn, indent: str) -> tuple[str, dict]:
    arn = draw(_arns)
    username = draw(st.sampled_from(["system:node:{{EC2PrivateDNSName}}", "ops", "admin:{{SessionName}}"]))
    groups = draw(st.lists(st.sampled_from(["system:nodes", "system:bootstrappers", "ops", "view"]), max_size=3))
    fields = {
        "rolearn": f"rolearn: {_scalar(arn, draw(_scalar_styles))}",
        "username": f"username: {_scalar(username, draw(_scalar_styles))}",
    }
    group_style = draw(st.sampled_from(["flow", "block", "indentless"]))
    if group_style == "flow" or not groups:
        fields["groups"] = "groups: [" + ", ".join(groups) + "]"
    else:
        pad = "  " if group_style == "block" else ""
        fields["groups"] = "groups:\n" + "".join(f"{indent}  {pad}- {g}\n" for g in groups).rstrip("\n")
    order = draw(st.permutations(list(fields)))
    comment = draw(st.sampled_from(["", "  # note"]))
    lines = [fields[k] for k in order]
    text = f"{indent}- " + f"\n{indent}  ".join(lines) + comment + "\n"
    return text, {"rolearn": arn, "username": username, "groups": groups}


@st.composite
def _maproles(draw: st.DrawFn) -> tuple[str, list[str], list[dict], bool]:
    """A block mapRoles in varied formatting, with or without an entry of ours at a random place."""
    indent = draw(st.sampled_from(["", "  "]))
    items = draw(st.lists(_entry_text(indent), max_size=6))
    others = [t for t, _ in items]
    texts = list(others)
    ours_present = draw(st.booleans())
    if ours_present:
        ours = "".join(indent + line for line in OURS_YAML.replace("  - connector\n", "  - old\n").splitlines(True))
        texts.insert(draw(st.integers(min_value=0, max_value=len(texts))), ours)
    gaps = [draw(st.sampled_from(["", "\n", f"{indent}# comment\n"])) for _ in texts]
    text = "".join(gap + item for gap, item in zip(gaps, texts, strict=True))
    return text, others, [v for _, v in items], ours_present


@settings(max_examples=100, deadline=None)
@given(_maproles())
def test_property_other_entries_keep_their_bytes(data: tuple[str, list[str], list[dict], bool]) -> None:
    text, others, values, ours_present = data
    merged = merge_map_roles(text, OURS)
    expected = [v for v in values if v["rolearn"].lower() != OURS.rolearn.lower()]
    parsed = entries(merged)
    assert [e for e in parsed if e != OURS.as_dict()] == expected
    assert parsed.count(OURS.as_dict()) == 1
    for item in others:
        assert item in merged
    assert merge_map_roles(merged, OURS) == merged
    removed = remove_map_role(merged, OURS.rolearn)
    assert entries(removed) == expected
    for item in others:
        assert item in removed
    if not ours_present:
        assert removed == text
