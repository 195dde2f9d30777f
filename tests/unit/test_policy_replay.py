"""`policy replay` and `policy suggest` over synthetic audit logs, through the real CLI entry point."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import gzip
import io
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bench.policy import make_callers, make_policies, make_requests
from connector.cli import main
from connector.identity import Identity
from connector.kube.requestinfo import parse_request_info
from connector.policy.engine import PolicyEngine

ALICE_READ = """
policies:
  - name: dev-read
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes:
      rules:
        - {verbs: [get, list], resources: [pods], namespaces: [dev]}
"""
NOBODY = "policies: []\n"
ALL = """
policies:
  - name: all
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes: {}
"""
NONE = """
policies:
  - name: none
    subjects: {users: [alice]}
    sockets: [prod]
    kubernetes: {rules: []}
"""
OFFICE = """
policies:
  - name: office
    subjects: {users: [alice]}
    sockets: [prod]
    conditions: {source_ips: [10.0.0.0/24]}
    kubernetes: {}
"""


def event(decision: str, path: str, *, user: str = "alice", ip: str = "10.0.0.5", rid: str = "r1", **extra) -> str:
    return json.dumps(
        {
            "request_id": rid,
            "stage": "ResponseComplete",
            "decision": decision,
            "code": 200,
            "method": extra.pop("method", "GET"),
            "path": "/sockets/prod" + path,
            "query": extra.pop("query", ""),
            "source_ip": ip,
            "time": extra.pop("time", "2026-11-30T10:00:00.000000Z"),
            "user": user,
            "groups": [],
            "socket": "prod",
            **extra,
        }
    )


def run(tmp_path: Path, *args: str, config: str | None = None, log: list[str] | None = None):
    """`connector policy ARGS` through the CLI's own `main`, in this process: a child `python -m
    connector` per case spent most of this file's time importing the connector again
    (test_rotated_gzip_file still runs the real command)."""
    argv = ["policy", *args]
    if config is not None:
        (tmp_path / "new.yaml").write_text(config)
        argv += ["--config", str(tmp_path / "new.yaml")]
    if log is not None:
        (tmp_path / "audit.log").write_text("\n".join(log) + "\n")
        argv += ["--audit", str(tmp_path / "audit.log")]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


POD_LIST = "/api/v1/namespaces/dev/pods"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
DEV_READ_ONLY = ALICE_READ


@pytest.mark.parametrize(
    ("config", "logged", "path", "ip", "expected"),
    [
        (ALICE_READ, "allow", POD_LIST, "10.0.0.5", 0),
        (ALICE_READ, "deny", POD_LIST, "10.0.0.5", 1),
        (ALICE_READ, "allow", "/api/v1/namespaces/prod/pods", "10.0.0.5", 1),
        (NOBODY, "allow", POD_LIST, "10.0.0.5", 1),
        (ALL, "deny", "/api/v1/namespaces/prod/secrets", "10.0.0.5", 1),
        (NONE, "allow", POD_LIST, "10.0.0.5", 1),
        (NONE, "deny", POD_LIST, "10.0.0.5", 0),
        (OFFICE, "allow", POD_LIST, "10.0.0.255", 0),
        (OFFICE, "allow", POD_LIST, "10.0.1.0", 1),
        # Self-reviews are answered by the connector for anyone who may use the socket, rules aside;
        # whoami (SelfSubjectReview) for every authenticated caller, socket or not.
        (NONE, "allow", SSAR, "10.0.0.5", 0),
        (DEV_READ_ONLY, "allow", SSR, "10.0.0.5", 0),
        (NOBODY, "allow", SSAR, "10.0.0.5", 1),
        (NOBODY, "allow", SSR, "10.0.0.5", 0),
        (OFFICE, "allow", SSAR, "10.0.1.0", 1),
        (OFFICE, "allow", SSR, "10.0.1.0", 0),
    ],
)
def test_replay_table(tmp_path, config, logged, path, ip, expected):
    method = "POST" if path in (SSAR, SSR) else "GET"
    done = run(tmp_path, "replay", config=config, log=[event(logged, path, ip=ip, method=method)])
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr


def test_json_output_and_malformed_lines(tmp_path):
    log = [event("allow", "/api/v1/namespaces/prod/pods", rid="x1"), "{not json", event("rejected", "/api")]
    done = run(tmp_path, "replay", "--output", "json", config=ALICE_READ, log=log)
    assert done.returncode == 1
    change = json.loads(done.stdout.splitlines()[0])
    assert (change["request_id"], change["before"], change["after"]) == ("x1", "allow", "deny")
    assert "audit.log:2" in done.stderr
    summary = json.loads(done.stderr.splitlines()[-1])
    assert summary["malformed"] == 1 and summary["skipped"] == 1 and summary["newly_denied"] == 1


def test_rotated_gzip_file(tmp_path):
    rotated = tmp_path / "audit.log.1.gz"
    with gzip.open(rotated, "wt") as f:
        f.write(event("allow", "/api/v1/namespaces/prod/pods") + "\n")
    (tmp_path / "new.yaml").write_text(ALICE_READ)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "policy",
            "replay",
            "--config",
            str(tmp_path / "new.yaml"),
            "--audit",
            str(rotated),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "newly denied" in done.stdout


def test_bad_input_exits_2_in_one_line(tmp_path):
    done = run(tmp_path, "replay", "--audit", str(tmp_path / "missing.log"), config=ALICE_READ)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_suggestion_replays_without_change(tmp_path):
    log = [
        event("allow", "/api/v1/namespaces/dev/pods/web-1", rid="a"),
        event("allow", "/apis/apps/v1/namespaces/dev/deployments", rid="b"),
        event("allow", "/api/v1/pods", rid="c"),
        event("deny", "/api/v1/namespaces/dev/secrets", rid="d"),
    ]
    suggested = run(tmp_path, "suggest", "--user", "alice", log=log)
    assert suggested.returncode == 0, suggested.stderr
    assert "covers" in suggested.stdout
    done = run(tmp_path, "replay", config=suggested.stdout, log=log)
    assert done.returncode == 0, done.stdout + done.stderr


WEEKDAYS_9_TO_5 = """
policies:
  - name: office-hours
    subjects: {users: [alice]}
    sockets: [prod]
    conditions: {time: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00", timezone: UTC}}
    kubernetes: {}
"""


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        ("2026-11-30T08:59:59.999999Z", False),  # a Monday
        ("2026-11-30T09:00:00.000000Z", True),
        ("2026-11-30T16:59:59.999999Z", True),
        ("2026-11-30T17:00:00.000000Z", False),
        ("2026-11-29T10:00:00.000000Z", False),  # a Sunday
    ],
)
def test_time_window_boundaries_at_each_events_own_time(tmp_path, when, allowed):
    # Logged as allowed: the replay reports a change exactly when the window excludes that instant.
    done = run(tmp_path, "replay", config=WEEKDAYS_9_TO_5, log=[event("allow", POD_LIST, time=when)])
    assert done.returncode == (0 if allowed else 1), done.stdout + done.stderr


def test_identical_requests_at_different_times_and_ips_are_decided_each(tmp_path):
    # The decision cache must not carry one event's time or source IP over to the next.
    log = [
        event("allow", POD_LIST, rid="in-hours", time="2026-11-30T10:00:00.000000Z"),
        event("allow", POD_LIST, rid="after-hours", time="2026-11-30T18:00:00.000000Z"),
    ]
    done = run(tmp_path, "replay", "--output", "json", config=WEEKDAYS_9_TO_5, log=log)
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["after-hours"]
    log = [event("allow", POD_LIST, rid="office", ip="10.0.0.9"), event("allow", POD_LIST, rid="home", ip="192.0.2.1")]
    done = run(tmp_path, "replay", "--output", "json", config=OFFICE, log=log)
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["home"]


def test_filters_and_baseline(tmp_path):
    log = [
        event("allow", "/api/v1/namespaces/prod/pods", rid="early", time="2026-11-30T10:00:00.000000Z"),
        event("allow", "/api/v1/namespaces/prod/pods", rid="late", time="2026-12-01T10:00:00.000000Z"),
    ]
    done = run(tmp_path, "replay", "--since", "2026-12-01T00:00:00Z", "--output", "json", config=ALICE_READ, log=log)
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["late"]
    (tmp_path / "old.yaml").write_text(NONE)
    # Against a baseline that allowed nothing, ALICE_READ's denial of these is no change.
    done = run(tmp_path, "replay", "--baseline", str(tmp_path / "old.yaml"), config=ALICE_READ, log=log)
    assert done.returncode == 0, done.stdout


def test_replaying_a_config_over_the_log_it_produced_changes_nothing(tmp_path):
    """Property, over a seeded random log: decide each event with the engine, log it, replay: no change."""
    rng = random.Random(7)
    policies = make_policies(rng)
    engine = PolicyEngine(policies)
    config = {"policies": [p.model_dump(mode="json", exclude_defaults=True) for p in policies]}
    config["sockets"] = {}
    requests, callers = make_requests(rng, 400), make_callers(rng, 300)
    lines = []
    for i in range(1500):
        method, path, query = rng.choice(requests)
        identity, socket, tags, ip = rng.choice(callers)
        when = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(seconds=rng.randrange(7 * 86400))
        config["sockets"][socket] = {"tags": tags}
        decision = engine.decide(identity, socket, tags, parse_request_info(method, path, query), ip, when)
        lines.append(
            json.dumps(
                {
                    "request_id": str(i),
                    "stage": "ResponseComplete",
                    "decision": "allow" if decision.allowed else "deny",
                    "method": method,
                    "path": f"/sockets/{socket}{path}",
                    "query": query,
                    "source_ip": ip,
                    "time": when.isoformat(),
                    "user": identity.user,
                    "groups": list(identity.groups),
                    "socket": socket,
                    "policy": decision.policy,
                }
            )
        )
    assert any('"allow"' in line for line in lines) and any('"deny"' in line for line in lines)
    done = run(tmp_path, "replay", config=json.dumps(config), log=lines)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "1500 requests replayed" in done.stdout


def test_connector_endpoints_and_stream_starts_are_skipped(tmp_path):
    listing = json.dumps(
        {
            "request_id": "l",
            "decision": "allow",
            "method": "GET",
            "path": "/v1/sockets",
            "user": "alice",
            "time": "2026-11-30T10:00:00Z",
        }
    )
    started = event("allow", "/api/v1/namespaces/prod/pods", stage="ResponseStarted")
    done = run(
        tmp_path,
        "replay",
        "--output",
        "json",
        config=ALICE_READ,
        log=[listing, started.replace('"ResponseComplete"', '"ResponseStarted"')],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stderr.splitlines()[-1])["skipped"] == 2


# Just-in-time grants: `prod-exec` applies only under an approved "exec-prod" access request, and
# deleting pods in dev needs one for "dev-delete". The log's own approvals and revokes are replayed.
GRANTS = (
    ALICE_READ
    + """        - {verbs: [delete], resources: [pods], namespaces: [dev], requires_approval: true}
  - name: prod-exec
    subjects: {users: [alice]}
    sockets: [prod]
    grant_only: true
    kubernetes:
      rules:
        - {verbs: [create], resources: [pods/exec], namespaces: [prod]}
access_requests:
  - name: exec-prod
    requesters: {users: [alice, carol]}
    approvers: {users: [bob]}
    grants: [prod-exec]
  - name: dev-delete
    requesters: {users: [alice]}
    approvers: {users: [bob]}
    approvals_required: 2
    grants: [dev-read]
"""
)
# NEW narrows what the grant permits: exec only in staging.
GRANTS_NARROWED = GRANTS.replace(
    "resources: [pods/exec], namespaces: [prod]", "resources: [pods/exec], namespaces: [staging]"
)
# NEW no longer offers the request at all (and so drops the policy only it granted).
GRANTS_REMOVED = (
    GRANTS.split("  - name: prod-exec")[0] + "access_requests:" + GRANTS.split("    grants: [prod-exec]")[1]
)
EXEC = "/api/v1/namespaces/prod/pods/web-1/exec"
DELETE = "/api/v1/namespaces/dev/pods/web-1"


def change(state: str, at: str, *, rid: str = "ar-1", name: str = "exec-prod", requester: str = "alice",
           expires: str | None = "2026-11-30T11:00:00+00:00", action: str = "approve") -> str:  # fmt: skip
    """The audit event of a `/v1/access-requests` call, as connector.proxy.access_api writes it."""
    return json.dumps(
        {
            "request_id": "c-" + at,
            "stage": "ResponseComplete",
            "decision": "allow",
            "code": 200,
            "method": "POST",
            "path": f"/v1/access-requests/{rid}/{action}",
            "source_ip": "10.0.0.7",
            "time": at,
            "user": "bob",
            "groups": [],
            "access_request": rid,
            "access_change": {
                "action": action,
                "name": name,
                "requester": requester,
                "state": state,
                "reason": "",
                "approvers": ["bob"],
                "expires_at": expires if state == "approved" else None,
            },
        }
    )


def exec_at(at: str, logged: str, *, user: str = "alice", grant: str | None = "ar-1") -> str:
    extra = {"access_request": grant} if grant and logged == "allow" else {}
    return event(logged, EXEC, method="POST", query="command=sh", time=at, user=user, rid="x-" + at, **extra)


APPROVED_10 = change("approved", "2026-11-30T10:00:00.000000Z")


@pytest.mark.parametrize(
    ("config", "log", "expected"),
    [
        # Approved, then used within its hour: the grant is replayed, nothing changes.
        (GRANTS, [APPROVED_10, exec_at("2026-11-30T10:30:00Z", "allow")], 0),
        # Used after it expired (the end is exclusive, as in the proxy): denied in the log too.
        (GRANTS, [APPROVED_10, exec_at("2026-11-30T11:00:00Z", "deny")], 0),
        (GRANTS, [APPROVED_10, exec_at("2026-11-30T11:00:00Z", "allow")], 1),
        (GRANTS, [APPROVED_10, exec_at("2026-11-30T10:59:59.999999Z", "allow")], 0),
        # Before its approval it granted nothing.
        (GRANTS, [exec_at("2026-11-30T09:59:00Z", "deny"), APPROVED_10], 0),
        # NEW narrows or removes what the request grants: what it allowed is newly denied.
        (GRANTS_NARROWED, [APPROVED_10, exec_at("2026-11-30T10:30:00Z", "allow")], 1),
        (GRANTS_REMOVED, [APPROVED_10, exec_at("2026-11-30T10:30:00Z", "allow")], 1),
        # Revoked: allowed before the revoke, denied after it.
        (
            GRANTS,
            [
                APPROVED_10,
                exec_at("2026-11-30T10:10:00Z", "allow"),
                change("revoked", "2026-11-30T10:20:00Z", action="revoke"),
                exec_at("2026-11-30T10:30:00Z", "deny"),
            ],
            0,
        ),
        (
            GRANTS,
            [
                APPROVED_10,
                change("revoked", "2026-11-30T10:20:00Z", action="revoke"),
                exec_at("2026-11-30T10:30:00Z", "allow"),
            ],
            1,
        ),
        # Somebody else's grant is not alice's.
        (
            GRANTS,
            [change("approved", "2026-11-30T10:00:00Z", requester="carol"), exec_at("2026-11-30T10:30:00Z", "deny")],
            0,
        ),
        # A `requires_approval` rule: one approval of the two required grants nothing; the second does.
        (
            GRANTS,
            [
                change("pending", "2026-11-30T10:00:00Z", name="dev-delete", rid="ar-2"),
                event("deny", DELETE, method="DELETE", time="2026-11-30T10:05:00Z"),
                change("approved", "2026-11-30T10:06:00Z", name="dev-delete", rid="ar-2"),
                event("allow", DELETE, method="DELETE", time="2026-11-30T10:07:00Z", access_request="ar-2"),
            ],
            0,
        ),
    ],
)
def test_replay_of_the_grants_in_the_log(tmp_path, config, log, expected):
    done = run(tmp_path, "replay", "--output", "json", config=config, log=log)
    assert done.returncode == expected, done.stdout + done.stderr
    summary = json.loads(done.stderr.splitlines()[-1])
    assert summary["access_requests_approved"] == sum('"state": "approved"' in line for line in log)


def test_a_narrowed_grant_reports_the_request_it_allowed_as_newly_denied(tmp_path):
    log = [APPROVED_10, exec_at("2026-11-30T10:30:00Z", "allow"), event("allow", POD_LIST, time="2026-11-30T10:31:00Z")]
    done = run(tmp_path, "replay", "--output", "json", config=GRANTS_NARROWED, log=log)
    changes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(c["path"], c["before"], c["after"]) for c in changes] == [(EXEC, "allow", "deny")]


def test_grants_apply_whatever_the_filters_and_under_a_baseline(tmp_path):
    # The approval is bob's and before --since; alice's use of it after --since is still granted.
    log = [APPROVED_10, exec_at("2026-11-30T10:30:00Z", "allow")]
    done = run(tmp_path, "replay", "--since", "2026-11-30T10:15:00Z", "--user", "alice", config=GRANTS, log=log)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "old.yaml").write_text(GRANTS)
    done = run(tmp_path, "replay", "--baseline", str(tmp_path / "old.yaml"), config=GRANTS_NARROWED, log=log)
    assert done.returncode == 1 and "newly denied" in done.stdout, done.stdout + done.stderr


def test_an_allow_under_an_access_request_the_log_does_not_hold_is_pointed_out(tmp_path):
    done = run(tmp_path, "replay", config=GRANTS, log=[exec_at("2026-11-30T10:30:00Z", "allow")])
    assert done.returncode == 1
    assert "1 logged allows depended on access requests whose approval is not in the files read" in done.stderr


def test_a_malformed_access_change_is_reported_and_skipped(tmp_path):
    bad = APPROVED_10.replace('"expires_at": "2026-11-30T11:00:00+00:00"', '"expires_at": null')
    done = run(tmp_path, "replay", config=GRANTS, log=[bad, exec_at("2026-11-30T10:30:00Z", "deny")])
    assert done.returncode == 0 and "audit.log:1: an approved access_change needs expires_at" in done.stderr


def test_replaying_a_config_over_a_log_with_grants_it_produced_changes_nothing(tmp_path):
    """Property, over a seeded random log of approvals, revokes and requests in time order: each request
    decided by the engine with the grants that were really active then, logged, replayed: no change."""
    from connector.policy import access
    from connector.policy.config_input import PolicyFile

    loaded = PolicyFile.model_validate(yaml.safe_load(GRANTS))
    engine = PolicyEngine(loaded.policies)
    rng = random.Random(11)
    truth: list[access.AccessRequest] = []
    when = datetime(2026, 11, 30, 9, tzinfo=UTC)
    lines, granted = [], 0
    for i in range(600):
        when += timedelta(seconds=rng.randrange(1, 240))
        at = when.isoformat()
        roll = rng.random()
        if roll < 0.08:
            name = rng.choice(("exec-prod", "dev-delete"))
            expires = when + timedelta(minutes=rng.randrange(1, 60))
            rid = f"ar-{i}"
            truth.append(
                access.AccessRequest(rid, name, "alice", "", expires - when, when, access.APPROVED, expires_at=expires)
            )
            lines.append(change("approved", at, rid=rid, name=name, expires=expires.isoformat()))
        elif roll < 0.12 and any(r.active_at(when) for r in truth):
            ended = rng.choice([r for r in truth if r.active_at(when)])
            truth[truth.index(ended)] = dataclasses.replace(ended, state=access.REVOKED)
            lines.append(change("revoked", at, rid=ended.id, name=ended.name, action="revoke"))
        else:
            method, path, query = rng.choice(
                [("POST", EXEC, "command=sh"), ("DELETE", DELETE, ""), ("GET", POD_LIST, ""), ("GET", DELETE, "")]
            )
            identity = Identity("alice", ())
            grants = access.grants_for(truth, loaded.access_requests, identity, when)
            decision = engine.decide(
                identity, "prod", {}, parse_request_info(method, path, query), "10.0.0.5", when, grants=grants
            )
            granted += decision.access_request is not None
            extra = {"access_request": decision.access_request} if decision.access_request else {}
            lines.append(
                event(
                    "allow" if decision.allowed else "deny",
                    path,
                    method=method,
                    query=query,
                    time=at,
                    rid=str(i),
                    **extra,
                )
            )
    assert granted > 20 and any('"deny"' in line for line in lines)
    done = run(tmp_path, "replay", config=GRANTS, log=lines)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def _cycles_left_by_a_replay(tmp_path: Path, repeats: int) -> int:
    """Reference cycles a whole `policy replay --output json` leaves for the cyclic collector, which
    the replay pauses while it streams: grants, refusals, self-reviews, malformed lines and changes."""
    block = [
        APPROVED_10,
        exec_at("2026-11-30T10:30:00Z", "allow"),
        exec_at("2026-11-30T10:31:00Z", "deny"),  # newly allowed under the grant: explained
        change("revoked", "2026-11-30T10:40:00Z", action="revoke"),
        event("allow", "/api/v1/namespaces/prod/pods"),  # newly denied
        event("allow", SSAR, method="POST"),
        event("rejected", "/api"),
        "{not json",
        '{"decision": "allow", "method": 7}',
        event("allow", "/api/v1/namespaces/dev/pods", time="not a time"),
    ]
    gc.collect()
    gc.disable()
    try:
        done = run(tmp_path, "replay", "--output", "json", config=GRANTS, log=block * repeats)
        left = gc.collect()
    finally:
        gc.enable()
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 2 * repeats, done.stderr[-500:]
    return left


def test_a_replay_makes_no_reference_cycles_per_event(tmp_path):
    """The replay runs with the cyclic collector paused: what it leaves must not grow with the log."""
    small = _cycles_left_by_a_replay(tmp_path, 10)
    large = _cycles_left_by_a_replay(tmp_path, 1000)
    assert large <= small + 10, (small, large)
