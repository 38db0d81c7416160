"""The sandbox's IAM evaluator on plain data: AWS's evaluation order, matching and condition operators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.sandbox.authorizer import parameter_arn
from pytest_eksid.sandbox.iam_eval import Decision, conditions_hold, evaluate

ACCT = "111122223333"
TABLE = f"arn:aws:dynamodb:eu-west-1:{ACCT}:table/reports"
SECRET = f"arn:aws:secretsmanager:eu-west-1:{ACCT}:secret:demo/db-AbCdEf"
PARAM = f"arn:aws:ssm:eu-west-1:{ACCT}:parameter/demo/db-host"


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def verdict(
    statements: list[dict[str, Any]],
    action: str,
    resource: str,
    context: dict[str, list[str]] | None = None,
    session: list[dict[str, Any]] | None = None,
) -> str:
    decided = evaluate(
        identity=[doc(*statements)],
        action=action,
        resource=resource,
        context=context or {},
        session=None if session is None else [doc(*session)],
    )
    return decided.verdict if decided.allowed else f"{decided.verdict}/{decided.policy_type}"


CASES = [
    # (id, statements, action, resource, context, expected)
    ("table grant", [allow(["dynamodb:GetItem", "dynamodb:Query"], TABLE)], "dynamodb:GetItem", TABLE, {}, "allowed"),
    (
        "other table",
        [allow("dynamodb:GetItem", TABLE)],
        "dynamodb:GetItem",
        TABLE + "x",
        {},
        "implicit-deny/identity-based",
    ),
    (
        "index not covered by table",
        [allow("dynamodb:Query", TABLE)],
        "dynamodb:Query",
        TABLE + "/index/by-month",
        {},
        "implicit-deny/identity-based",
    ),
    (
        "index wildcard",
        [allow("dynamodb:Query", TABLE + "/index/*")],
        "dynamodb:Query",
        TABLE + "/index/by-month",
        {},
        "allowed",
    ),
    (
        "action not granted",
        [allow("dynamodb:GetItem", TABLE)],
        "dynamodb:PutItem",
        TABLE,
        {},
        "implicit-deny/identity-based",
    ),
    ("action case-insensitive", [allow("DynamoDB:getitem", TABLE)], "dynamodb:GetItem", TABLE, {}, "allowed"),
    ("action wildcard ?", [allow("dynamodb:?etItem", TABLE)], "dynamodb:GetItem", TABLE, {}, "allowed"),
    (
        "resource case-sensitive",
        [allow("dynamodb:GetItem", TABLE.upper())],
        "dynamodb:GetItem",
        TABLE,
        {},
        "implicit-deny/identity-based",
    ),
    (
        "secret with suffix",
        [allow("secretsmanager:GetSecretValue", SECRET[:-7] + "-??????")],
        "secretsmanager:GetSecretValue",
        SECRET,
        {},
        "allowed",
    ),
    (
        "secret without suffix",
        [allow("secretsmanager:GetSecretValue", SECRET[:-7])],
        "secretsmanager:GetSecretValue",
        SECRET,
        {},
        "implicit-deny/identity-based",
    ),
    ("parameter", [allow("ssm:GetParameter", PARAM)], "ssm:GetParameter", PARAM, {}, "allowed"),
    (
        "deny beats allow",
        [allow("dynamodb:*", "*"), deny("dynamodb:PutItem", TABLE)],
        "dynamodb:PutItem",
        TABLE,
        {},
        "explicit-deny/identity-based",
    ),
    (
        "deny elsewhere",
        [allow("dynamodb:*", "*"), deny("dynamodb:PutItem", TABLE + "x")],
        "dynamodb:PutItem",
        TABLE,
        {},
        "allowed",
    ),
    (
        "NotAction allow",
        [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}],
        "ssm:GetParameter",
        PARAM,
        {},
        "allowed",
    ),
    (
        "NotAction excludes",
        [{"Effect": "Allow", "NotAction": "ssm:*", "Resource": "*"}],
        "ssm:GetParameter",
        PARAM,
        {},
        "implicit-deny/identity-based",
    ),
    (
        "NotResource allow",
        [{"Effect": "Allow", "Action": "ssm:*", "NotResource": PARAM}],
        "ssm:GetParameter",
        PARAM + "2",
        {},
        "allowed",
    ),
    (
        "NotResource excludes",
        [{"Effect": "Allow", "Action": "ssm:*", "NotResource": PARAM}],
        "ssm:GetParameter",
        PARAM,
        {},
        "implicit-deny/identity-based",
    ),
    (
        "NotResource deny",
        [allow("*"), {"Effect": "Deny", "Action": "ssm:*", "NotResource": PARAM}],
        "ssm:GetParameter",
        PARAM + "2",
        {},
        "explicit-deny/identity-based",
    ),
    ("no statements", [], "ssm:GetParameter", PARAM, {}, "implicit-deny/identity-based"),
    (
        "deny whose condition holds",
        [allow("*"), deny("dynamodb:*", Condition={"StringEquals": {"aws:RequestedRegion": "eu-west-1"}})],
        "dynamodb:GetItem",
        TABLE,
        {"aws:RequestedRegion": ["eu-west-1"]},
        "explicit-deny/identity-based",
    ),
    (
        "deny whose condition fails",
        [allow("*"), deny("dynamodb:*", Condition={"StringEquals": {"aws:RequestedRegion": "us-east-1"}})],
        "dynamodb:GetItem",
        TABLE,
        {"aws:RequestedRegion": ["eu-west-1"]},
        "allowed",
    ),
    (
        "deny on a missing key does not apply",
        [allow("*"), deny("*", Condition={"StringEquals": {"aws:SourceVpc": "vpc-1"}})],
        "dynamodb:GetItem",
        TABLE,
        {},
        "allowed",
    ),
    (
        "allow on a missing key does not apply",
        [allow("*", Condition={"StringEquals": {"aws:SourceVpc": "vpc-1"}})],
        "dynamodb:GetItem",
        TABLE,
        {},
        "implicit-deny/identity-based",
    ),
    (
        "unknown operator: allow never applies",
        [allow("*", Condition={"StringAbout": {"aws:RequestedRegion": "eu-west-1"}})],
        "dynamodb:GetItem",
        TABLE,
        {"aws:RequestedRegion": ["eu-west-1"]},
        "implicit-deny/identity-based",
    ),
    (
        "unknown operator: deny applies",
        [allow("*"), deny("*", Condition={"StringAbout": {"x": "y"}})],
        "dynamodb:GetItem",
        TABLE,
        {},
        "explicit-deny/identity-based",
    ),
    (
        "policy variable",
        [allow("s3:GetObject", "arn:aws:s3:::b/home/${aws:username}/*")],
        "s3:GetObject",
        "arn:aws:s3:::b/home/ana/x",
        {"aws:username": ["ana"]},
        "allowed",
    ),
    (
        "policy variable other user",
        [allow("s3:GetObject", "arn:aws:s3:::b/home/${aws:username}/*")],
        "s3:GetObject",
        "arn:aws:s3:::b/home/bob/x",
        {"aws:username": ["ana"]},
        "implicit-deny/identity-based",
    ),
    (
        "policy variable missing",
        [allow("s3:GetObject", "arn:aws:s3:::b/home/${aws:username}/*")],
        "s3:GetObject",
        "arn:aws:s3:::b/home/ana/x",
        {},
        "implicit-deny/identity-based",
    ),
    (
        "policy variable default",
        [allow("s3:GetObject", "arn:aws:s3:::b/home/${aws:username, 'guest'}/*")],
        "s3:GetObject",
        "arn:aws:s3:::b/home/guest/x",
        {},
        "allowed",
    ),
    (
        "${*} is a literal star",
        [allow("s3:GetObject", "arn:aws:s3:::b/${*}")],
        "s3:GetObject",
        "arn:aws:s3:::b/x",
        {},
        "implicit-deny/identity-based",
    ),
    ("session policy intersects", [allow("dynamodb:*", TABLE)], "dynamodb:PutItem", TABLE, {}, "allowed"),
]
SESSION_CASES = [
    ("session allows too", [allow("dynamodb:*", TABLE)], [allow("dynamodb:GetItem")], "dynamodb:GetItem", "allowed"),
    (
        "session does not allow",
        [allow("dynamodb:*", TABLE)],
        [allow("dynamodb:GetItem")],
        "dynamodb:PutItem",
        "implicit-deny/session",
    ),
    ("session alone does not grant", [], [allow("*")], "dynamodb:GetItem", "implicit-deny/identity-based"),
    (
        "session explicit deny",
        [allow("*")],
        [allow("*"), deny("dynamodb:PutItem")],
        "dynamodb:PutItem",
        "explicit-deny/session",
    ),
]


@pytest.mark.parametrize(
    ("statements", "action", "resource", "context", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision(
    statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, list[str]], expected: str
) -> None:
    assert verdict(statements, action, resource, context) == expected


@pytest.mark.parametrize(
    ("statements", "session", "action", "expected"), [c[1:] for c in SESSION_CASES], ids=[c[0] for c in SESSION_CASES]
)
def test_session_policy(
    statements: list[dict[str, Any]], session: list[dict[str, Any]], action: str, expected: str
) -> None:
    assert verdict(statements, action, TABLE, session=session) == expected


CONDITIONS = [
    # (operator, key, policy value, context values (None: key absent), holds)
    ("StringEquals", "k", "a", ["a"], True),
    ("StringEquals", "k", "a", ["A"], False),
    ("StringEquals", "k", "a", None, False),
    ("StringEquals", "k", ["a", "b"], ["b"], True),  # a key's values are ORed
    ("StringNotEquals", "k", "a", ["b"], True),
    ("StringNotEquals", "k", "a", None, True),  # negated operator on a missing key: true
    ("StringNotEquals", "k", ["a", "b"], ["b"], False),
    ("StringEqualsIgnoreCase", "k", "a", ["A"], True),
    ("StringLike", "k", "fin*", ["finance"], True),
    ("StringLike", "k", "fin?", ["finance"], False),
    ("StringNotLike", "k", "fin*", ["ops"], True),
    ("StringEqualsIfExists", "k", "a", None, True),
    ("StringEqualsIfExists", "k", "a", ["b"], False),
    ("NumericLessThan", "k", "5", ["4"], True),
    ("NumericLessThan", "k", "5", ["5"], False),
    ("NumericLessThanEquals", "k", "5", ["5"], True),
    ("NumericGreaterThan", "k", "5", ["x"], False),  # not a number: no match
    ("NumericNotEquals", "k", "5", ["6"], True),
    ("DateLessThan", "aws:CurrentTime", "2027-01-01T00:00:00Z", ["2026-12-07T12:00:00Z"], True),
    ("DateGreaterThan", "aws:CurrentTime", "2027-01-01T00:00:00Z", ["2026-12-07T12:00:00Z"], False),
    ("DateGreaterThanEquals", "aws:EpochTime", "1700000000", ["1800000000"], True),
    ("Bool", "aws:SecureTransport", "false", ["false"], True),
    ("Bool", "aws:SecureTransport", "true", ["false"], False),
    ("Bool", "aws:SecureTransport", "true", None, False),
    ("BoolIfExists", "aws:MultiFactorAuthPresent", "true", None, True),
    ("IpAddress", "aws:SourceIp", "10.0.0.0/8", ["10.1.2.3"], True),
    ("NotIpAddress", "aws:SourceIp", "10.0.0.0/8", ["10.1.2.3"], False),
    ("ArnLike", "aws:PrincipalArn", "arn:aws:iam::*:role/demo-*", [f"arn:aws:iam::{ACCT}:role/demo-x"], True),
    ("ArnEquals", "aws:PrincipalArn", "arn:aws:iam::*:role/demo-*", [f"arn:aws:iam::{ACCT}:user/demo-x"], False),
    ("ArnNotLike", "aws:PrincipalArn", "arn:aws:iam::*:role/ops-*", [f"arn:aws:iam::{ACCT}:role/demo-x"], True),
    ("Null", "aws:PrincipalTag/team", "true", None, True),
    ("Null", "aws:PrincipalTag/team", "true", ["x"], False),
    ("Null", "aws:PrincipalTag/team", "false", ["x"], True),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a", "b"], ["c", "b"], True),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a"], ["c"], False),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a"], None, False),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], ["a", "b"], True),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], ["a", "c"], False),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a"], None, True),  # an empty set: vacuously true
    ("ForAllValues:StringNotEquals", "aws:TagKeys", ["a"], ["b", "c"], True),
    ("ForAnyValue:StringNotEquals", "aws:TagKeys", ["a"], ["a", "c"], True),
    ("StringEquals", "k", "${aws:username}", ["ana"], False),  # variable absent: value matches nothing
    ("StringEquals", "dynamodb:LeadingKeys", "${aws:userid}", None, False),
]


@pytest.mark.parametrize(("operator", "key", "expected", "values", "holds"), CONDITIONS)
def test_condition_operator(operator: str, key: str, expected: Any, values: list[str] | None, holds: bool) -> None:
    context = {} if values is None else {key: values}
    assert conditions_hold({operator: {key: expected}}, context) is holds


def test_condition_keys_are_case_insensitive_and_clauses_anded() -> None:
    both = {"StringEquals": {"AWS:RequestedRegion": "eu-west-1"}, "Bool": {"aws:securetransport": "false"}}
    assert conditions_hold(both, {"aws:RequestedRegion": ["eu-west-1"], "aws:SecureTransport": ["false"]})
    assert not conditions_hold(both, {"aws:RequestedRegion": ["eu-west-1"], "aws:SecureTransport": ["true"]})


def test_denial_reasons_name_the_policy_type() -> None:
    action = "dynamodb:PutItem"
    assert Decision("implicit-deny", "identity-based").reason(action) == (
        "because no identity-based policy allows the dynamodb:PutItem action"
    )
    assert Decision("explicit-deny", "identity-based").reason(action) == (
        "with an explicit deny in an identity-based policy"
    )
    assert Decision("implicit-deny", "session").reason(action) == (
        "because no session policy allows the dynamodb:PutItem action"
    )


@pytest.mark.parametrize(
    ("name", "arn"),
    [
        ("/demo/db-host", PARAM),
        ("db-host", f"arn:aws:ssm:eu-west-1:{ACCT}:parameter/db-host"),
        (PARAM, PARAM),
    ],
)
def test_parameter_arn_drops_the_leading_slash(name: str, arn: str) -> None:
    assert parameter_arn("eu-west-1", ACCT, name) == arn


# --- end to end: the suites against a sandbox, as a new user tries it (issue #13 item 1) -------------

ROLE = f"arn:aws:iam::{ACCT}:role/demo-reports-reader"
REPORTS = "arn:aws:dynamodb:eu-west-1:111122223333:table/reports"
KEY = {"pk": {"S": "2026-11"}}


def _statement(effect: str, action: Any, resource: Any, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource}
    if condition:
        st["Condition"] = condition
    return st


def _profile(extra_statements: list[dict[str, Any]], admin_deny_region: str) -> dict[str, Any]:
    """One Pod Identity workload whose role reads one table, one secret and one parameter tree; a Deny on
    the admin parameters holds in ``admin_deny_region`` only, and one on the db parameter never holds."""
    from tests.helpers.profiles import demo_data

    data = demo_data()
    secret = f"arn:aws:secretsmanager:eu-west-1:{ACCT}:secret:demo/db"
    other = f"arn:aws:secretsmanager:eu-west-1:{ACCT}:secret:demo/other"
    params = f"arn:aws:ssm:eu-west-1:{ACCT}:parameter/demo"
    in_region = {"StringEquals": {"aws:RequestedRegion": admin_deny_region}}
    statements = [
        _statement("Allow", ["dynamodb:GetItem", "dynamodb:Query"], REPORTS),
        _statement("Allow", "secretsmanager:GetSecretValue", secret + "-??????"),
        _statement("Allow", "ssm:GetParameter", params + "/*"),
        _statement("Deny", "ssm:GetParameter", params + "/admin-*", in_region),
        _statement(
            "Deny", "ssm:GetParameter", params + "/db-*", {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}
        ),
        *extra_statements,
    ]
    data["workloads"] = [
        {
            "name": "reports-reader",
            "namespace": "reports-demo",
            "serviceAccount": "reports-reader",
            "mechanism": "pod-identity",
            "roleArn": ROLE,
            "owner": "reporting-team",
            "allow": [
                {"action": "dynamodb:GetItem", "resource": REPORTS, "params": {"Key": KEY}},
                {
                    "action": "dynamodb:Query",
                    "resource": REPORTS,
                    "params": {
                        "KeyConditionExpression": "pk = :pk",
                        "ExpressionAttributeValues": {":pk": {"S": "2026-11"}},
                    },
                },
                {"action": "secretsmanager:GetSecretValue", "resource": secret},
                {"action": "ssm:GetParameter", "resource": params + "/db-host"},
            ],
            "deny": [
                {"action": "dynamodb:PutItem", "resource": REPORTS, "params": {"Item": KEY}},
                {
                    "action": "dynamodb:GetItem",
                    "resource": REPORTS.replace("reports", "payroll"),
                    "params": {"Key": KEY},
                },
                {"action": "secretsmanager:GetSecretValue", "resource": other},
                {"action": "ssm:GetParameter", "resource": params + "/admin-password"},
            ],
        }
    ]
    data["sandbox"]["roles"] = [
        {"name": "demo-reports-reader", "policy": {"Version": "2012-10-17", "Statement": statements}}
    ]
    data["sandbox"]["tables"] = [{"name": "reports"}, {"name": "payroll"}]
    data["sandbox"]["secrets"] = [
        {"name": "demo/db", "value": "s3cr3t-db"},
        {"name": "demo/other", "value": "s3cr3t-o"},
    ]
    data["sandbox"]["parameters"] = [
        {"name": "/demo/db-host", "value": "db.internal"},
        {"name": "/demo/admin-password", "value": "adm1n-pw"},
    ]
    data["sandbox"]["faults"] = []
    return data


def _action_outcomes(data: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    from tests.helpers.profiles import write_profile
    from tests.helpers.runs import run_pytest

    tmp_path.mkdir()
    profile = write_profile(tmp_path, data)
    run = run_pytest(f"--profile={profile}", "suites/test_permissions.py", "-k", "test_action", tmp_path=tmp_path)
    prefix = "suites/test_permissions.py::test_action[variant/reports-reader/"
    outcomes = {k.removeprefix(prefix).rstrip("]"): v for k, v in run.outcomes.items() if k.startswith(prefix)}
    assert len(outcomes) == 8, (run.stdout[-3000:], run.stderr[-3000:])
    return outcomes


def test_resource_scoped_grants_and_conditional_denies_in_the_suites(tmp_path: Path) -> None:
    base = _action_outcomes(_profile([], admin_deny_region="eu-west-1"), tmp_path / "base")
    assert base == dict.fromkeys(base, "passed"), base
    # The role also gets PutItem on the table and every secret, and the admin Deny no longer holds
    # (its condition names another region): the three matching deny entries must now fail.
    widened = _profile(
        [
            _statement("Allow", "dynamodb:PutItem", REPORTS),
            _statement("Allow", "secretsmanager:GetSecretValue", "*"),
        ],
        admin_deny_region="us-east-1",
    )
    after = _action_outcomes(widened, tmp_path / "widened")
    failed = sorted(k for k, v in after.items() if v != "passed")
    assert failed == [
        "deny-0:dynamodb:PutItem",
        "deny-2:secretsmanager:GetSecretValue",
        "deny-3:ssm:GetParameter",
    ], after
