"""Reading IAM in bulk (``Aws.bulk_iam``, ``--eksid-iam-bulk``) against botocore's own client, stubbed.

botocore's Stubber checks each request's parameters and each answer against the IAM service model botocore
ships, and the paginator follows ``Marker``/``IsTruncated`` as botocore's iam paginators-1.json says: so these
tests hold the runner to the API's shapes, not to the sandbox's (moto answers GetAccountAuthorizationDetails in
one page whatever ``MaxItems`` asks: docs/sandbox.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.stub import Stubber

from pytest_eksid.aws import IAM_BULK_PAGE, Aws, AwsError
from pytest_eksid.connection import Connection
from pytest_eksid.engine import Engine
from pytest_eksid.profile import load_profile
from pytest_eksid.settings import Setting, Settings
from tests.helpers.profiles import demo_data, write_profile

ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
ACCOUNT = "111122223333"
AWS_MANAGED = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
LOCAL = f"arn:aws:iam::{ACCOUNT}:policy/queue-sender"
FILTER = ["Role", "LocalManagedPolicy"]


def encoded(doc: dict[str, Any]) -> str:
    """A policy document as IAM sends it: URL-encoded JSON (botocore decodes it after the call)."""
    return quote(json.dumps(doc))


def statement(action: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}


TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ],
}


def role_detail(name: str, inline: dict[str, Any], attached: list[str]) -> dict[str, Any]:
    return {
        "RoleName": name,
        "RoleId": "AROAEXAMPLE" + name.upper().replace("-", "")[:9],
        "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "Path": "/",
        "AssumeRolePolicyDocument": encoded(TRUST),
        "RolePolicyList": [{"PolicyName": k, "PolicyDocument": encoded(v)} for k, v in inline.items()],
        "AttachedManagedPolicies": [{"PolicyName": a.rsplit("/", 1)[1], "PolicyArn": a} for a in attached],
    }


def stubbed(aws: Aws) -> Stubber:
    stubber = Stubber(aws._client("iam"))
    stubber.activate()
    return stubber


def in_bulk() -> tuple[Aws, Stubber, list[str]]:
    """An Aws that reads IAM in bulk, its stubbed IAM client, and what it says."""
    said: list[str] = []
    aws = Aws(region="eu-west-1", env=ENV, bulk_iam=True, say=said.append)
    return aws, stubbed(aws), said


def expect_managed(stubber: Stubber, arn: str, doc: dict[str, Any]) -> None:
    stubber.add_response("get_policy", {"Policy": {"Arn": arn, "DefaultVersionId": "v3"}}, {"PolicyArn": arn})
    stubber.add_response(
        "get_policy_version",
        {"PolicyVersion": {"Document": encoded(doc), "VersionId": "v3", "IsDefaultVersion": True}},
        {"PolicyArn": arn, "VersionId": "v3"},
    )


def test_the_bulk_read_follows_every_page_once_and_answers_each_role_from_them():
    aws, stubber, said = in_bulk()
    # Page 1: a role attaching a customer managed policy that only page 2 lists, and an AWS managed one.
    stubber.add_response(
        "get_account_authorization_details",
        {
            "RoleDetailList": [
                role_detail("Invoice-Exporter", {"inline-read": statement("s3:GetObject")}, [LOCAL, AWS_MANAGED])
            ],
            "IsTruncated": True,
            "Marker": "page-2",
        },
        {"Filter": FILTER, "MaxItems": IAM_BULK_PAGE},
    )
    stubber.add_response(
        "get_account_authorization_details",
        {
            "RoleDetailList": [role_detail("billing-worker", {}, [AWS_MANAGED])],
            "Policies": [
                {
                    "PolicyName": "queue-sender",
                    "Arn": LOCAL,
                    "DefaultVersionId": "v2",
                    "PolicyVersionList": [  # an older version, the default, and a newer one not made default
                        {"Document": encoded(statement("sqs:*")), "VersionId": "v1", "IsDefaultVersion": False},
                        {
                            "Document": encoded(statement("sqs:SendMessage")),
                            "VersionId": "v2",
                            "IsDefaultVersion": True,
                        },
                        {"Document": encoded(statement("sqs:Delete*")), "VersionId": "v3", "IsDefaultVersion": False},
                    ],
                }
            ],
            "IsTruncated": False,
        },
        {"Filter": FILTER, "MaxItems": IAM_BULK_PAGE, "Marker": "page-2"},
    )
    # The AWS managed policy is not in the bulk read: read by itself, once for both roles that attach it.
    expect_managed(stubber, AWS_MANAGED, statement("s3:List*"))

    # IAM role names are unique regardless of case: the profile's spelling finds the account's.
    assert aws.role("invoice-exporter") == {"arn": f"arn:aws:iam::{ACCOUNT}:role/Invoice-Exporter", "trust": TRUST}
    assert aws.role_policies("Invoice-Exporter") == {
        "inline-read": statement("s3:GetObject"),
        LOCAL: statement("sqs:SendMessage"),  # the default version, neither the first nor the last
        AWS_MANAGED: statement("s3:List*"),
    }
    assert aws.role_policies("billing-worker") == {AWS_MANAGED: statement("s3:List*")}
    # A role the account does not have: as GetRole and ListRolePolicies answer it.
    assert aws.role("gone") is None
    with pytest.raises(AwsError, match=r"NoSuchEntity: The role with name gone cannot be found"):
        aws.role_policies("gone")
    stubber.assert_no_pending_responses()
    assert said == []


def test_a_refused_bulk_read_is_said_once_escaped_and_the_run_reads_role_by_role():
    aws, stubber, said = in_bulk()
    stubber.add_client_error(
        "get_account_authorization_details",
        service_error_code="AccessDenied",
        service_message="User: arn:aws:sts::111122223333:assumed-role/ci/x is not authorized \x1b[2J",
        http_status_code=403,
    )
    for name in ("a", "b"):
        stubber.add_response(
            "get_role",
            {
                "Role": {
                    "RoleName": name,
                    "RoleId": "AROAEXAMPLEROLE" + name.upper(),
                    "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
                    "Path": "/",
                    "CreateDate": "2026-12-01T00:00:00Z",
                    "AssumeRolePolicyDocument": encoded(TRUST),
                }
            },
            {"RoleName": name},
        )
    assert aws.role("a") == {"arn": f"arn:aws:iam::{ACCOUNT}:role/a", "trust": TRUST}
    assert aws.role("b") is not None  # the refusal is kept: the bulk read is not tried again
    stubber.assert_no_pending_responses()
    assert len(said) == 1, said
    assert "reading IAM role by role: iam:GetAccountAuthorizationDetails failed (AccessDenied: User:" in said[0]
    assert "\x1b" not in said[0]


def test_role_by_role_a_managed_policy_attached_to_two_roles_is_read_once():
    aws = Aws(region="eu-west-1", env=ENV)
    stubber = stubbed(aws)
    for name in ("a", "b"):
        stubber.add_response("list_role_policies", {"PolicyNames": [], "IsTruncated": False}, {"RoleName": name})
        stubber.add_response(
            "list_attached_role_policies",
            {"AttachedPolicies": [{"PolicyName": "AmazonS3ReadOnlyAccess", "PolicyArn": AWS_MANAGED}]},
            {"RoleName": name},
        )
        if name == "a":
            expect_managed(stubber, AWS_MANAGED, statement("s3:List*"))
    assert aws.role_policies("a") == aws.role_policies("b") == {AWS_MANAGED: statement("s3:List*")}
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("threshold", "bulk"), [(0, False), (1, True), (2, True), (3, False)])
def test_the_run_reads_in_bulk_from_the_number_of_distinct_roles_its_workloads_name(
    tmp_path: Path, threshold: int, bulk: bool
):
    """The demo's two workloads name two roles: --eksid-iam-bulk 2 reads them in bulk, 3 role by role, 0 never."""
    data = demo_data()
    del data["sandbox"]
    loaded = load_profile(str(write_profile(tmp_path, data, "two-roles")), tmp_path)
    settings = Settings(profiles=(Setting(loaded, "--profile"),), iam_bulk=Setting(threshold, "--eksid-iam-bulk"))
    engine = Engine(
        settings,
        tmp_path,
        selected=lambda _name: [target for w in loaded.profile.workloads for target in _targets(loaded, w.name)],
        connect=lambda _profile, _say: Connection(kubeconfig=None, context=None, env=ENV),
    )
    # (Not closed: closing gathers the run's facts from AWS, which is not there; nothing was started.)
    assert len({w.role_arn for w in loaded.profile.workloads}) == 2
    assert engine.aws(loaded).bulk_iam is bulk


def _targets(loaded: Any, name: str) -> list[Any]:
    from pytest_eksid.probe.pod import probe_target

    return [probe_target(loaded.profile, loaded.profile.workload(name))]
