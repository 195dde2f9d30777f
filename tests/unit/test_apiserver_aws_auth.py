"""aws-auth mapping and bearer-token authentication of the emulated EKS API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.aws import sigv4
from connector.aws.token import AwsPrincipal, EksIdentity
from connector.aws.token_format import encode_token
from sandbox.apiserver import catalog
from sandbox.apiserver.authn import ANONYMOUS, Authenticator
from sandbox.apiserver.aws_auth import MappingError, map_identity, parse_aws_auth
from sandbox.apiserver.errors import ApiError
from sandbox.apiserver.store import Store

ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/Connector"
SESSION_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/Connector/alice@example.com"


def identity(canonical: str = ROLE_ARN, session: str = "alice@example.com", arn: str = SESSION_ARN) -> EksIdentity:
    return EksIdentity(arn=arn, canonical_arn=canonical, account_id=ACCOUNT, session_name=session,
                       access_key_id="ASIAEXAMPLE")


def test_roles_match_case_insensitively_and_render_templates() -> None:
    config = parse_aws_auth({"mapRoles": f"""
- rolearn: {ROLE_ARN.upper().replace("ARN:AWS:IAM", "arn:aws:iam")}
  username: "sso:{{{{SessionName}}}}:{{{{AccountID}}}}"
  groups: ["team:{{{{SessionNameRaw}}}}", "key:{{{{AccessKeyID}}}}"]
"""})
    mapped = map_identity(config, identity())
    assert mapped is not None
    assert mapped.username == f"sso:alice-example.com:{ACCOUNT}"
    assert mapped.groups == ("team:alice@example.com", "key:ASIAEXAMPLE")


def test_users_and_accounts() -> None:
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/ci"
    config = parse_aws_auth({
        "mapUsers": f"- userarn: {user_arn}\n  username: ci-bot\n  groups: [deployers]\n",
        "mapAccounts": "- '444455556666'\n",
    })
    ci = map_identity(config, identity(canonical=user_arn, arn=user_arn, session=""))
    assert ci is not None and (ci.username, ci.groups) == ("ci-bot", ("deployers",))
    other = EksIdentity(arn="arn:aws:iam::444455556666:user/x", canonical_arn="arn:aws:iam::444455556666:user/x",
                        account_id="444455556666", session_name="")
    by_account = map_identity(config, other)
    assert by_account is not None and (by_account.username, by_account.groups) == (other.canonical_arn, ())
    assert map_identity(config, identity()) is None


def test_keys_are_case_insensitive_and_the_last_duplicate_wins() -> None:
    config = parse_aws_auth({"mapRoles": f"""
- RoleArn: {ROLE_ARN}
  UserName: first
- ROLEARN: {ROLE_ARN}
  USERNAME: second
  GROUPS: [g]
"""})
    mapped = map_identity(config, identity())
    assert mapped is not None and (mapped.username, mapped.groups) == ("second", ("g",))


def test_malformed_entries_are_ignored_the_rest_still_applies() -> None:
    config = parse_aws_auth({
        "mapRoles": f"""
- username: no-arn
- just a string
- rolearn: {ROLE_ARN}
  username: good
  groups: not-a-list
- rolearn: {ROLE_ARN}
  username: kept
""",
        "mapUsers": "- userarn: [unclosed",
    })
    mapped = map_identity(config, identity())
    assert mapped is not None and mapped.username == "kept"
    assert config.users == ()
    assert len(config.problems) == 4
    assert any("value for rolearn must be supplied" in p for p in config.problems)
    assert any(p.startswith("mapUsers: not YAML") for p in config.problems)


def test_ec2_private_dns_name_template() -> None:
    config = parse_aws_auth({"mapRoles": f"- rolearn: {ROLE_ARN}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n"
                                         "  groups: [system:nodes]\n"})
    node = identity(session="i-0123456789abcdef0")
    mapped = map_identity(config, node, ec2_private_dns_name={"i-0123456789abcdef0": "ip-10-0-0-1.ec2.internal"}.get)
    assert mapped is not None and mapped.username == "system:node:ip-10-0-0-1.ec2.internal"
    with pytest.raises(MappingError, match="SessionName did not contain an instance id"):
        map_identity(config, identity(session="alice"), ec2_private_dns_name=lambda _: "x")
    with pytest.raises(MappingError, match="no private DNS name"):
        map_identity(config, node)


# ----- the authenticator ---------------------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
KEY_ID, SECRET = "AKIAEXAMPLEKEY000001", "secret/key"
PRINCIPALS = {KEY_ID: AwsPrincipal(SECRET, f"arn:aws:iam::{ACCOUNT}:user/alice")}
CMS = catalog.lookup("", "v1", "configmaps")
SAS = catalog.lookup("", "v1", "serviceaccounts")
NSS = catalog.lookup("", "v1", "namespaces")
assert CMS and SAS and NSS


def eks_token(cluster: str, when: datetime = NOW) -> str:
    url = sigv4.presign_get(
        "https://sts.us-east-1.amazonaws.com", params=[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        headers={"x-k8s-aws-id": cluster}, access_key=KEY_ID, secret_key=SECRET, session_token=None,
        region="us-east-1", service="sts", when=when, expires=60)
    return encode_token(url)


@pytest.fixture
def store() -> Store:
    store = Store()
    for ns in ("default", "kube-system"):
        store.create(NSS, {"metadata": {"name": ns}})
    return store


def authenticator(store: Store, **kwargs: object) -> Authenticator:
    return Authenticator(cluster_name="prod", store=store, bootstrap_token="boot", credentials_lookup=PRINCIPALS.get,
                         **kwargs)  # type: ignore[arg-type]


def map_alice(store: Store) -> None:
    store.create(CMS, {"metadata": {"name": "aws-auth"}, "data": {
        "mapUsers": f"- userarn: arn:aws:iam::{ACCOUNT}:user/alice\n  username: alice\n  groups: [devs]\n"}},
        namespace="kube-system")


def test_bootstrap_and_anonymous(store: Store) -> None:
    auth = authenticator(store)
    admin = auth.authenticate("Bearer boot")
    assert (admin.name, admin.groups) == ("kubernetes-admin", ("system:masters", "system:authenticated"))
    assert auth.authenticate(None) == ANONYMOUS
    assert auth.authenticate("Basic dXNlcjpwYXNz") == ANONYMOUS
    with pytest.raises(ApiError) as refused:
        auth.authenticate("Bearer not-a-token")
    assert (refused.value.code, refused.value.message) == (401, "Unauthorized")


def test_eks_tokens_are_mapped_through_aws_auth(store: Store) -> None:
    auth = authenticator(store)
    with pytest.raises(ApiError):  # valid token, but nobody mapped the user yet
        auth.authenticate(f"Bearer {eks_token('prod')}")
    map_alice(store)
    user = auth.authenticate(f"Bearer {eks_token('prod')}")
    assert (user.name, user.groups) == ("alice", ("devs", "system:authenticated"))
    assert user.extra["arn"] == (f"arn:aws:iam::{ACCOUNT}:user/alice",)
    assert user.extra["accessKeyId"] == (KEY_ID,)


@pytest.mark.parametrize("token", [
    lambda: eks_token("staging"),  # signed for another cluster
    lambda: eks_token("prod", NOW - timedelta(minutes=20)),  # expired
])
def test_eks_tokens_for_another_cluster_or_expired_are_refused(store: Store, token: object) -> None:
    map_alice(store)
    with pytest.raises(ApiError) as refused:
        authenticator(store).authenticate(f"Bearer {token()}")  # type: ignore[operator]
    assert refused.value.code == 401


def test_without_a_credentials_lookup_eks_tokens_are_refused(store: Store) -> None:
    map_alice(store)
    auth = Authenticator(cluster_name="prod", store=store, bootstrap_token="boot", credentials_lookup=None)
    with pytest.raises(ApiError):
        auth.authenticate(f"Bearer {eks_token('prod')}")


def test_service_account_tokens_live_as_long_as_their_account(store: Store) -> None:
    auth = authenticator(store)
    account = store.create(SAS, {"metadata": {"name": "ci"}}, namespace="default")
    issued = auth.issue_service_account_token(account, expiration_seconds=600,
                                              audiences=("https://kubernetes.default.svc",))
    user = auth.authenticate(f"Bearer {issued.token}")
    assert user.name == "system:serviceaccount:default:ci"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated")
    assert user.uid == account["metadata"]["uid"]
    other_audience = auth.issue_service_account_token(account, expiration_seconds=600, audiences=("vault",))
    with pytest.raises(ApiError):
        auth.authenticate(f"Bearer {other_audience.token}")
    store.delete(SAS, "default", "ci")
    with pytest.raises(ApiError):
        auth.authenticate(f"Bearer {issued.token}")
    store.create(SAS, {"metadata": {"name": "ci"}}, namespace="default")  # same name, new uid
    with pytest.raises(ApiError):
        auth.authenticate(f"Bearer {issued.token}")


def test_expired_service_account_tokens_are_refused() -> None:
    moments = [NOW]
    clocked = Store(now=lambda: moments[0])
    clocked.create(NSS, {"metadata": {"name": "default"}})
    auth = authenticator(clocked)
    account = clocked.create(SAS, {"metadata": {"name": "ci"}}, namespace="default")
    issued = auth.issue_service_account_token(account, expiration_seconds=600,
                                              audiences=("https://kubernetes.default.svc",))
    moments[0] = NOW + timedelta(seconds=601)
    with pytest.raises(ApiError):
        auth.authenticate(f"Bearer {issued.token}")
