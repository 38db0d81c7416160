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
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
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
        "RoleId": "AROAEXAMPLE" + (name.upper().replace("-", "") + "X" * 9)[:9],
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

    assert aws.role("Invoice-Exporter") == {"arn": f"arn:aws:iam::{ACCOUNT}:role/Invoice-Exporter", "trust": TRUST}
    # A name in another case is not the role (exactly as moto's GetRole: that IAM's would find it is undocumented).
    assert aws.role("invoice-exporter") is None
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


def expect_get_role(stubber: Stubber, name: str) -> None:
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


def test_a_refused_bulk_read_is_said_once_escaped_and_the_run_reads_role_by_role():
    aws, stubber, said = in_bulk()
    stubber.add_client_error(
        "get_account_authorization_details",
        service_error_code="AccessDenied",
        service_message="User: arn:aws:sts::111122223333:assumed-role/ci/x is not authorized \x1b[2J",
        http_status_code=403,
    )
    for name in ("a", "b"):
        expect_get_role(stubber, name)
    assert aws.role("a") == {"arn": f"arn:aws:iam::{ACCOUNT}:role/a", "trust": TRUST}
    assert aws.role("b") is not None  # the refusal is kept: the bulk read is not tried again
    stubber.assert_no_pending_responses()
    assert len(said) == 1, said
    assert "reading IAM role by role: iam:GetAccountAuthorizationDetails failed (AccessDenied: User:" in said[0]
    assert "\x1b" not in said[0]


def test_a_bulk_read_that_fails_on_a_later_page_is_dropped_whole():
    """Throttled past the retries on page 2: what page 1 held is not used (it is not the whole account: a role on
    page 2 would look absent); the run reads role by role."""
    aws, stubber, said = in_bulk()
    stubber.add_response(
        "get_account_authorization_details",
        {"RoleDetailList": [role_detail("a", {}, [])], "IsTruncated": True, "Marker": "page-2"},
        {"Filter": FILTER, "MaxItems": IAM_BULK_PAGE},
    )
    stubber.add_client_error(
        "get_account_authorization_details", service_error_code="Throttling", service_message="Rate exceeded"
    )
    expect_get_role(stubber, "b")
    assert aws.role("b") == {"arn": f"arn:aws:iam::{ACCOUNT}:role/b", "trust": TRUST}
    stubber.assert_no_pending_responses()
    assert said == ["reading IAM role by role: iam:GetAccountAuthorizationDetails failed (Throttling: Rate exceeded)"]


def _failing_with(monkeypatch: pytest.MonkeyPatch, aws: Aws, error: Exception) -> None:
    """The bulk read's paginator raises ``error`` at its first page (as botocore raises a transport error)."""
    client = aws._client("iam")
    paginator = client.get_paginator

    class Failing:
        def __init__(self, operation: str) -> None:
            assert operation == "get_account_authorization_details"

        def paginate(self, **_kwargs: Any) -> Any:
            raise error
            yield  # a generator, as botocore's pages are

    monkeypatch.setattr(client, "get_paginator", lambda op: Failing(op) if "authorization" in op else paginator(op))


def test_a_bulk_read_that_times_out_falls_back_but_aws_out_of_reach_is_the_runs(monkeypatch: pytest.MonkeyPatch):
    """A read timeout on the run's largest answer is the bulk read's own trouble: role by role may do. No
    connection at all is every call's: the read fails as any would, and later AWS calls are not tried."""
    aws, stubber, said = in_bulk()
    _failing_with(monkeypatch, aws, ReadTimeoutError(endpoint_url="https://iam.amazonaws.com/"))
    expect_get_role(stubber, "a")
    assert aws.role("a") is not None
    assert len(said) == 1, said
    assert "failed (ReadTimeoutError: Read timeout" in said[0]

    aws, stubber, said = in_bulk()
    _failing_with(monkeypatch, aws, EndpointConnectionError(endpoint_url="https://iam.amazonaws.com/"))
    with pytest.raises(AwsError, match=r"cannot reach AWS"):
        aws.role("a")
    with pytest.raises(AwsError, match=r"later AWS calls of this run are not tried"):
        aws.role_policies("a")
    assert said == []


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


@pytest.mark.parametrize(("threshold", "bulk"), [(0, False), (1, True), (3, True), (4, False)])
def test_the_run_reads_in_bulk_from_the_number_of_distinct_roles_its_workloads_name(
    tmp_path: Path, threshold: int, bulk: bool
):
    """The demo's two workloads, one of them chained to a target role, name three roles: --eksid-iam-bulk 3 reads
    them in bulk, 4 role by role, 0 never. What the bulk reader says is the run's progress."""
    data = demo_data()
    del data["sandbox"]
    pod_identity = next(w for w in data["workloads"] if w["mechanism"] == "pod-identity")
    pod_identity["targetRoleArn"] = f"arn:aws:iam::{ACCOUNT}:role/ledger-target"
    loaded = load_profile(str(write_profile(tmp_path, data, "three-roles")), tmp_path)
    settings = Settings(profiles=(Setting(loaded, "--profile"),), iam_bulk=Setting(threshold, "--eksid-iam-bulk"))
    said: list[str] = []
    engine = Engine(
        settings,
        tmp_path,
        progress=said.append,
        selected=lambda _name: [target for w in loaded.profile.workloads for target in _targets(loaded, w.name)],
        connect=lambda _profile, _say: Connection(kubeconfig=None, context=None, env=ENV),
    )
    # (Not closed: closing gathers the run's facts from AWS, which is not there; nothing was started.)
    aws = engine.aws(loaded)
    assert aws.bulk_iam is bulk
    aws.say("reading IAM role by role: ...")
    assert said == ["reading IAM role by role: ..."]


def _targets(loaded: Any, name: str) -> list[Any]:
    from pytest_eksid.probe.pod import probe_target

    return [probe_target(loaded.profile, loaded.profile.workload(name))]
