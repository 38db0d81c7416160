"""pytest_eksid.checks.permissions.action_verdict over hand-made probe results (the probe's own shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.checks import Finding, policy
from pytest_eksid.checks.permissions import Inconclusive, PolicyUnavailable, action_verdict
from pytest_eksid.probe.program import classify
from pytest_eksid.profile import ActionCheck, Workload
from tests.helpers.profiles import unit_profile

ACCOUNT = "111122223333"
ROLE = "eks-prod-invoice-exporter"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/eks-prod-plat-invoice-ex-5f1b"
KMS_ARN = "arn:aws:kms:eu-west-1:111122223333:key/5e1f0c2a-7b3d-4c9e-8a61-2f4d9b0e7c13"
OBJECT_ARN = "arn:aws:s3:::company-prod-finance/invoices/2026/11/29/eksid-probe.pdf"
PAYROLL_ARN = "arn:aws:s3:::company-prod-finance/payroll/2026-11.csv"
QUEUE_ARN = f"arn:aws:sqs:eu-west-1:{ACCOUNT}:invoice-exported-prod"
QUEUE_URL = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/invoice-exported-prod"
SECRET_ARN = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:finance/db-AbCdEf"

KMS_MESSAGE = (
    "User: arn:aws:sts::111122223333:assumed-role/r/s is not authorized to perform: kms:Decrypt on resource: "
    "arn:aws:kms:eu-west-1:111122223333:key/5e1f0c2a-7b3d-4c9e-8a61-2f4d9b0e7c13 because no resource-based "
    "policy allows the kms:Decrypt action"
)

PROFILE = unit_profile(
    [
        {
            "name": "invoice-exporter",
            "namespace": "finance-prod",
            "serviceAccount": "invoice-exporter-aws-sa",
            "mechanism": "pod-identity",
            "roleArn": ROLE_ARN,
        },
        {
            "name": "ledger-sync",
            "namespace": "finance-prod",
            "serviceAccount": "ledger-sync-aws-sa",
            "mechanism": "pod-identity",
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/eks-prod-ledger-sync-source",
            "targetRoleArn": f"arn:aws:iam::{ACCOUNT}:role/eks-prod-ledger-sync-target",
        },
    ]
)
W: Workload = PROFILE.workload("invoice-exporter")
CHAINED: Workload = PROFILE.workload("ledger-sync")

DECRYPT = ActionCheck.model_validate({"action": "kms:Decrypt", "resource": KMS_ARN})
PUT = ActionCheck.model_validate({"action": "s3:PutObject", "resource": OBJECT_ARN})
GET_PAYROLL = ActionCheck.model_validate({"action": "s3:GetObject", "resource": PAYROLL_ARN})
SEND = ActionCheck.model_validate({"action": "sqs:SendMessage", "resource": QUEUE_ARN})
SECRET = ActionCheck.model_validate({"action": "secretsmanager:GetSecretValue", "resource": SECRET_ARN})
METRIC = ActionCheck.model_validate(
    {
        "action": "cloudwatch:PutMetricData",
        "live": True,
        "call": {"service": "cloudwatch", "operation": "PutMetricData", "params": {"Namespace": "eksid"}},
    }
)


def iam_next(check: ActionCheck, role: str = ROLE, role_arn: str = ROLE_ARN) -> tuple[str, ...]:
    simulate = f"aws iam simulate-principal-policy --policy-source-arn {role_arn} --action-names {check.action}"
    return (
        f"aws iam list-role-policies --role-name {role}",
        f"aws iam list-attached-role-policies --role-name {role}",
        simulate + (f" --resource-arns {check.resource}" if check.resource else ""),
    )


def where(check: ActionCheck, expect: str) -> str:
    target = f" on {check.resource}" if check.resource else ""
    return f"invoice-exporter (finance-prod/invoice-exporter-aws-sa): {check.action}{target} must be {expect}"


def measured(check: ActionCheck, expect: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of the probe's 'actions' step, built the way run_actions builds it."""
    item = check.plan_item("allow-0" if expect == "allowed" else "deny-0", expect)
    entry: dict[str, Any] = {k: item.get(k) for k in ("id", "expect", "action", "form", "form_note")}
    entry.update(classify(item, error))
    if error is not None:
        entry["code"] = error.get("code") or error.get("type")
        entry["message"] = error.get("message")
        entry["http_status"] = error.get("http_status")
    entry["seconds"] = 0.042
    return entry


def denial(code: str, message: str, status: int = 400) -> dict[str, Any]:
    return {"type": "ClientError", "code": code, "message": message, "http_status": status}


def denied(check: ActionCheck, policy_type: str | None, explicit: bool = False, **extra: Any) -> dict[str, Any]:
    """A probe entry for a denied call, with the classification given directly."""
    entry: dict[str, Any] = {
        "id": "allow-0",
        "expect": "allowed",
        "action": check.action,
        "form": "live",
        "form_note": "live call; side effect: none",
        "outcome": "denied",
        "why": "denied" + (" by an explicit deny" if explicit else ""),
        "explicit": explicit,
        "code": "AccessDenied",
        "message": "the message",
        "http_status": 403,
    }
    if policy_type is not None:
        entry["policy_type"] = policy_type
    entry.update(extra)
    return entry


def _finding(value: Finding | Inconclusive | None) -> Finding:
    assert value is not None, "expected a finding"
    assert isinstance(value, Finding), f"expected a Finding, got {value!r}"
    return value


# --- no result, matching result -------------------------------------------------------------


def test_no_result_is_a_finding_that_points_at_the_probe() -> None:
    f = _finding(action_verdict(PROFILE, W, DECRYPT, "allowed", None))
    assert f.check == "permissions"
    assert f.summary == where(DECRYPT, "allowed")
    assert f.expected == "allowed"
    assert f.seen == "the probe did not report this action"
    assert f.likely == "the probe failed before its actions step; see the probe result"
    assert f.next_steps == iam_next(DECRYPT)
    assert f.details == {}


def test_no_result_for_a_denied_action() -> None:
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", None))
    assert f.expected == "denied"
    assert f.summary.endswith(f"s3:GetObject on {PAYROLL_ARN} must be denied")


@pytest.mark.parametrize(
    ("check", "expect", "error"),
    [
        pytest.param(PUT, "allowed", None, id="allowed-succeeded"),
        pytest.param(PUT, "allowed", denial("BadDigest", "The Content-MD5 you specified did not match"), id="safe"),
        pytest.param(
            GET_PAYROLL,
            "denied",
            denial("AccessDenied", "not authorized because no identity-based policy allows the s3:GetObject action"),
            id="denied-s3",
        ),
        pytest.param(DECRYPT, "denied", denial("AccessDeniedException", KMS_MESSAGE), id="denied-kms"),
    ],
)
def test_outcome_as_expected_passes(check: ActionCheck, expect: str, error: dict[str, Any] | None) -> None:
    result = measured(check, expect, error)
    assert result["outcome"] == expect
    assert action_verdict(PROFILE, W, check, expect, result) is None


def test_matching_outcome_does_not_ask_for_allowing_statements() -> None:
    def allowing(action: str, resource: str | None) -> list[str]:
        raise AssertionError("allowing() must only be asked when a denied action was allowed")

    result = measured(PUT, "allowed", None)
    assert action_verdict(PROFILE, W, PUT, "allowed", result, allowing) is None


# --- inconclusive and error -----------------------------------------------------------------


@pytest.mark.parametrize("expect", ["allowed", "denied"])
def test_inconclusive_never_passes(expect: str) -> None:
    check = ActionCheck.model_validate({"action": "s3:GetObject", "resource": OBJECT_ARN})
    result = measured(check, expect, denial("AccessDenied", "Access Denied", 403))
    assert result["outcome"] == "inconclusive"
    verdict = action_verdict(PROFILE, W, check, expect, result)
    assert verdict is not None
    assert isinstance(verdict, Inconclusive)
    assert not isinstance(verdict, Finding)
    assert verdict.reason == f"{where(check, expect)}: inconclusive: {result['why']}"
    assert "probe a key that exists" in verdict.reason


def test_error_outcome_reports_code_message_and_why() -> None:
    error = {"type": "ClientError", "code": "ExpiredTokenException", "message": "token expired", "http_status": 400}
    result = measured(DECRYPT, "allowed", error)
    assert result["outcome"] == "error"
    f = _finding(action_verdict(PROFILE, W, DECRYPT, "allowed", result))
    assert f.summary == where(DECRYPT, "allowed")
    assert f.expected == "allowed"
    assert f.seen == "error ExpiredTokenException: token expired"
    assert f.likely == "the credentials were refused (ExpiredTokenException), so nothing was decided"
    assert f.next_steps == iam_next(DECRYPT)
    assert f.details == {"probe": f"{result['form']} form: {result['form_note']}"}


def test_error_when_the_pod_had_no_credentials() -> None:
    # run_actions' shape when the identity step found no credentials: nothing was called.
    result = {
        "id": "deny-0",
        "expect": "denied",
        "action": "s3:GetObject",
        "form": "live",
        "form_note": "live call; side effect: none",
        "outcome": "error",
        "why": "not run: the pod has no working AWS credentials",
        "code": "NoCredentialsError",
        "message": "Unable to locate credentials",
        "http_status": None,
    }
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", result))
    assert f.expected == "denied"
    assert f.seen == "error NoCredentialsError: Unable to locate credentials"
    assert f.likely == "not run: the pod has no working AWS credentials"
    assert f.details["probe"] == "live form: live call; side effect: none"


def test_error_without_why_or_message_has_a_fallback() -> None:
    result = {"outcome": "error", "code": "Throttling", "form": "safe", "form_note": "n"}
    f = _finding(action_verdict(PROFILE, W, DECRYPT, "allowed", result))
    assert f.seen == "error Throttling: "
    assert f.likely == "the call failed for a reason other than authorization"


# --- allowed, but denied ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_type", "likely"),
    [
        (
            "identity-based-policy",
            "Failure Mode 2 — IAM Permission Denied: no statement in the role's policies allows it "
            "(or one explicitly denies it)",
        ),
        ("service-control-policy", "an SCP of the account's organization denies it"),
        ("resource-control-policy", "an RCP of the organization denies it"),
        ("permissions-boundary", "the role's permissions boundary does not allow it"),
        ("session-policy", "the session policy (association policy or AssumeRole policy) does not allow it"),
        ("vpc-endpoint-policy", "the VPC endpoint's policy denies it"),
        ("unspecified", "AWS denied it without naming the policy type"),
        (None, "AWS denied it without naming the policy type"),
    ],
)
def test_allowed_but_denied_by_policy_type(policy_type: str | None, likely: str) -> None:
    result = denied(PUT, policy_type, message="User: x is not authorized to perform: s3:PutObject")
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result))
    assert f.check == "permissions"
    assert f.summary == where(PUT, "allowed")
    assert f.expected == "allowed"
    assert f.seen == (
        f"denied by {policy_type or 'unspecified'}: AccessDenied: User: x is not authorized to perform: s3:PutObject"
    )
    assert f.likely == likely
    assert f.next_steps == iam_next(PUT)
    assert f.details == {"probe": "live form: live call; side effect: none"}


def test_explicit_deny_is_named_in_seen() -> None:
    result = denied(PUT, "service-control-policy", explicit=True)
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result))
    assert f.seen == "denied by service-control-policy (explicit deny): AccessDenied: the message"


def test_identity_policy_denial_measured_by_the_probe() -> None:
    message = (
        f"User: {SESSION} is not authorized to perform: sqs:sendmessage on resource: {QUEUE_ARN} "
        "because no identity-based policy allows the sqs:sendmessage action"
    )
    result = measured(SEND, "allowed", denial("AccessDenied", message))
    f = _finding(action_verdict(PROFILE, W, SEND, "allowed", result))
    assert f.seen == f"denied by identity-based-policy: AccessDenied: {message}"
    assert f.likely.startswith("Failure Mode 2 — IAM Permission Denied")
    assert f.next_steps == (
        f"aws iam list-role-policies --role-name {ROLE}",
        f"aws iam list-attached-role-policies --role-name {ROLE}",
        f"aws iam simulate-principal-policy --policy-source-arn {ROLE_ARN} --action-names sqs:SendMessage "
        f"--resource-arns {QUEUE_ARN}",
    )
    assert f"  next:     aws iam list-role-policies --role-name {ROLE}" in f.message()


def test_action_without_resource_names_no_resource() -> None:
    result = denied(METRIC, "identity-based-policy")
    f = _finding(action_verdict(PROFILE, W, METRIC, "allowed", result))
    assert (
        f.summary == "invoice-exporter (finance-prod/invoice-exporter-aws-sa): cloudwatch:PutMetricData must be allowed"
    )
    assert f.next_steps[-1] == (
        f"aws iam simulate-principal-policy --policy-source-arn {ROLE_ARN} --action-names cloudwatch:PutMetricData"
    )


def test_chained_association_next_steps_name_the_target_role() -> None:
    f = _finding(action_verdict(PROFILE, CHAINED, PUT, "allowed", denied(PUT, "identity-based-policy")))
    assert f.next_steps[0] == "aws iam list-role-policies --role-name eks-prod-ledger-sync-target"


# --- allowed, but denied by a resource-based policy -----------------------------------------


def test_kms_key_policy_denial() -> None:
    result = measured(DECRYPT, "allowed", denial("AccessDeniedException", KMS_MESSAGE))
    assert result["policy_type"] == "resource-based-policy"
    f = _finding(action_verdict(PROFILE, W, DECRYPT, "allowed", result))
    assert f.expected == "allowed"
    assert f.seen == f"denied by resource-based-policy: AccessDeniedException: {KMS_MESSAGE}"
    assert f.likely == (
        "the KMS key policy does not allow kms:Decrypt for this role: a key policy must name the role, "
        "or delegate to IAM through the account root"
    )
    assert "SSE-KMS" not in f.likely
    assert f.next_steps[0] == f"aws kms get-key-policy --key-id {KMS_ARN} --policy-name default --output text"
    assert f.next_steps[1:] == iam_next(DECRYPT)
    assert f"  next:     aws kms get-key-policy --key-id {KMS_ARN}" in f.message()


def test_kms_key_policy_explicit_deny() -> None:
    message = (
        f"User: {SESSION} is not authorized to perform: kms:Decrypt on resource: {KMS_ARN} "
        "with an explicit deny in a resource-based policy"
    )
    result = measured(DECRYPT, "allowed", denial("AccessDeniedException", message))
    assert result["explicit"] is True
    f = _finding(action_verdict(PROFILE, W, DECRYPT, "allowed", result))
    assert f.seen.startswith("denied by resource-based-policy (explicit deny): AccessDeniedException: ")
    assert f.likely.startswith("the KMS key policy explicitly denies kms:Decrypt for this role")
    assert f.next_steps[0] == f"aws kms get-key-policy --key-id {KMS_ARN} --policy-name default --output text"


def test_s3_write_denied_by_the_bucket_key() -> None:
    message = (
        f"User: {SESSION} is not authorized to perform: kms:GenerateDataKey on resource: {KMS_ARN} "
        "because no resource-based policy allows the kms:GenerateDataKey action"
    )
    result = measured(PUT, "allowed", denial("AccessDenied", message, 403))
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result))
    assert f.summary == where(PUT, "allowed")
    assert "the KMS key policy does not allow kms:GenerateDataKey for this role" in f.likely
    assert "(S3 calls kms:GenerateDataKey on the caller's behalf: the object is SSE-KMS)" in f.likely
    # The key, not the object: the command shows the policy that denied.
    assert f.next_steps[0] == f"aws kms get-key-policy --key-id {KMS_ARN} --policy-name default --output text"
    assert f.next_steps[1:] == iam_next(PUT)
    assert f.next_steps[-1].endswith(f"--action-names s3:PutObject --resource-arns {OBJECT_ARN}")


@pytest.mark.parametrize(
    ("explicit_phrase", "how"),
    [
        ("because no resource-based policy allows the s3:GetObject action", "does not allow"),
        ("with an explicit deny in a resource-based policy", "explicitly denies"),
    ],
)
def test_bucket_policy_denial(explicit_phrase: str, how: str) -> None:
    message = (
        f'User: {SESSION} is not authorized to perform: s3:GetObject on resource: "{PAYROLL_ARN}" {explicit_phrase}'
    )
    result = measured(GET_PAYROLL, "allowed", denial("AccessDenied", message, 403))
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "allowed", result))
    assert f.likely == f"the bucket policy {how} it"
    assert f.next_steps[0] == "aws s3api get-bucket-policy --bucket company-prod-finance"
    assert f.next_steps[1:] == iam_next(GET_PAYROLL)


def test_bucket_policy_denial_without_an_arn_in_the_message_uses_the_checked_resource() -> None:
    result = denied(PUT, "resource-based-policy", message="Access Denied by a resource-based policy")
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result))
    assert f.likely == "the bucket policy does not allow it"
    assert f.next_steps[0] == "aws s3api get-bucket-policy --bucket company-prod-finance"


def test_queue_policy_denial() -> None:
    message = (
        f"User: {SESSION} is not authorized to perform: sqs:sendmessage on resource: {QUEUE_ARN} "
        "because no resource-based policy allows the sqs:sendmessage action"
    )
    result = measured(SEND, "allowed", denial("AccessDenied", message))
    f = _finding(action_verdict(PROFILE, W, SEND, "allowed", result))
    assert f.likely == "the queue policy does not allow it"
    assert f.next_steps[0].startswith("aws sqs get-queue-attributes --queue-url https://sqs.")
    assert f.next_steps[0].endswith(" --attribute-names Policy")
    assert f.next_steps[1:] == iam_next(SEND)


def test_queue_policy_denial_names_the_queue_url() -> None:
    message = f"User: {SESSION} is not authorized to perform: sqs:sendmessage on resource: {QUEUE_ARN}"
    f = _finding(action_verdict(PROFILE, W, SEND, "allowed", denied(SEND, "resource-based-policy", message=message)))
    assert f.next_steps[0] == f"aws sqs get-queue-attributes --queue-url {QUEUE_URL} --attribute-names Policy"


def test_resource_policy_of_another_service_has_no_extra_command() -> None:
    message = f"User: {SESSION} is not authorized to perform: secretsmanager:GetSecretValue on resource: {SECRET_ARN}"
    f = _finding(
        action_verdict(PROFILE, W, SECRET, "allowed", denied(SECRET, "resource-based-policy", message=message))
    )
    assert f.likely == "the resource's own policy (bucket, queue or key policy) denies it"
    assert f.next_steps == iam_next(SECRET)


def test_resource_policy_without_any_resource_has_no_extra_command() -> None:
    f = _finding(action_verdict(PROFILE, W, METRIC, "allowed", denied(METRIC, "resource-based-policy")))
    assert f.likely == "the resource's own policy (bucket, queue or key policy) denies it"
    assert f.next_steps == iam_next(METRIC)


# --- denied, but allowed ----------------------------------------------------------------------


def test_denied_but_allowed_names_the_allowing_statements() -> None:
    asked: list[tuple[str, str | None]] = []

    def allowing(action: str, resource: str | None) -> list[str]:
        asked.append((action, resource))
        return ["finance-inline#ReadFinanceBucket", "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess#0"]

    result = measured(GET_PAYROLL, "denied", None)
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", result, allowing))
    assert asked == [("s3:GetObject", PAYROLL_ARN)]
    assert f.check == "permissions"
    assert f.summary == where(GET_PAYROLL, "denied")
    assert f.expected == "denied"
    assert f.seen == "allowed (the call succeeded)"
    assert f.likely == (
        "the role is broader than its contract: allowed by finance-inline#ReadFinanceBucket, "
        "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess#0"
    )
    assert f.next_steps == iam_next(GET_PAYROLL)
    assert f.details == {"probe": f"{result['form']} form: {result['form_note']}"}


def test_denied_but_authorized_safe_call() -> None:
    result = measured(PUT, "denied", denial("BadDigest", "The Content-MD5 you specified did not match", 400))
    assert result["outcome"] == "allowed"
    f = _finding(action_verdict(PROFILE, W, PUT, "denied", result, lambda action, resource: ["inline#0"]))
    assert f.seen == "allowed (authorized, then refused on purpose with BadDigest)"
    assert f.likely == "the role is broader than its contract: allowed by inline#0"


FALLBACK = (
    "the role is broader than its contract: no statement of the role allows it on its own: "
    "check resource policies, and whether the caller is the expected role"
)


def test_denied_but_allowed_without_allowing_statements() -> None:
    result = measured(GET_PAYROLL, "denied", None)
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", result, lambda action, resource: []))
    assert f.likely == FALLBACK
    assert f.seen == "allowed (the call succeeded)"


def test_denied_but_allowed_without_a_callback() -> None:
    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", measured(GET_PAYROLL, "denied", None)))
    assert f.likely == FALLBACK
    assert f.next_steps == iam_next(GET_PAYROLL)


@pytest.mark.parametrize("outcome", [None, "weird"])
def test_unknown_outcome_is_never_read_as_the_opposite(outcome: Any) -> None:
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", {"outcome": outcome, "form": "safe", "form_note": "x"}))
    assert f.seen == f"an outcome the plugin does not know: {outcome!r}"
    assert "denied" not in f.seen


# --- a safe form that probes a stand-in beside the named resource ---------------------------

DELETE = ActionCheck.model_validate({"action": "s3:DeleteObject", "resource": OBJECT_ARN})
S3_DENIED = denial("AccessDenied", "Access Denied", 403)


def test_delete_denied_on_the_stand_in_but_granted_on_exactly_the_key_fails() -> None:
    result = measured(DELETE, "denied", S3_DENIED)
    assert result["form"] == "safe"
    assert result["outcome"] == "denied"
    asked: list[tuple[str, str | None]] = []

    def allowing(action: str, resource: str | None) -> list[str]:
        asked.append((action, resource))
        return ["cleanup#DeleteProbeObject"]

    f = _finding(action_verdict(PROFILE, W, DELETE, "denied", result, allowing))
    assert asked == [("s3:DeleteObject", OBJECT_ARN)]
    assert f.seen == (
        "denied on the safe form's stand-in beside it, but cleanup#DeleteProbeObject allow s3:DeleteObject "
        "on exactly this resource"
    )
    assert f.likely.startswith("the role is broader than its contract: it grants the action on exactly")
    assert "live: true" in f.likely


def test_delete_denied_on_the_stand_in_without_a_grant_passes() -> None:
    result = measured(DELETE, "denied", S3_DENIED)
    assert action_verdict(PROFILE, W, DELETE, "denied", result, lambda action, resource: []) is None


def test_delete_that_must_be_allowed_but_only_the_exact_key_is_granted_is_inconclusive() -> None:
    result = measured(DELETE, "allowed", S3_DENIED)
    verdict = action_verdict(PROFILE, W, DELETE, "allowed", result, lambda action, resource: ["cleanup#0"])
    assert isinstance(verdict, Inconclusive)
    assert "stand-in" in verdict.reason
    assert "live: true" in verdict.reason


def test_live_delete_is_read_as_measured() -> None:
    live = ActionCheck.model_validate({"action": "s3:DeleteObject", "resource": OBJECT_ARN, "live": True})

    def allowing(action: str, resource: str | None) -> list[str]:
        raise AssertionError("a live call on the named key needs no second opinion")

    result = measured(live, "denied", S3_DENIED)
    assert result["form"] == "live"
    assert action_verdict(PROFILE, W, live, "denied", result, allowing) is None


# --- the probe was not the workload's role ---------------------------------------------------

OTHER = f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-reporting/eks-prod-plat-invoice-ex-5f1b"
PI_NEXT = (
    "aws eks list-pod-identity-associations --cluster-name prod-platform-a --region eu-west-1 "
    "--namespace finance-prod --service-account invoice-exporter-aws-sa"
)


def test_permission_failure_under_another_caller_points_at_the_binding() -> None:
    identity = {"method": "container-role", "caller": {"arn": OTHER}}
    result = denied(PUT, "identity-based-policy")
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result, None, identity))
    assert f.likely == (
        f"the probe ran as {OTHER}, not as role {ROLE_ARN} (see test_caller_role): fix the binding first; "
        "these are another principal's permissions"
    )
    assert f.next_steps[0] == PI_NEXT
    assert f.next_steps[-3:] == iam_next(PUT)


def test_permission_failure_without_an_identity_says_so() -> None:
    identity = {"method": None, "caller": None, "error": {"type": "NoCredentialsError"}}
    result = measured(PUT, "allowed", {"type": "NoCredentialsError", "code": "", "message": "no credentials"})
    f = _finding(action_verdict(PROFILE, W, PUT, "allowed", result, None, identity))
    assert f.likely.startswith("the probe has no AWS identity (see test_caller_role)")


def test_the_expected_caller_changes_nothing() -> None:
    identity = {"method": "container-role", "caller": {"arn": SESSION}}
    result = denied(PUT, "identity-based-policy")
    with_identity = _finding(action_verdict(PROFILE, W, PUT, "allowed", result, None, identity))
    assert with_identity == _finding(action_verdict(PROFILE, W, PUT, "allowed", result, None))


def test_delete_granted_on_the_key_but_also_denied_there_by_the_role_passes() -> None:
    result = measured(DELETE, "denied", S3_DENIED)
    verdict = action_verdict(
        PROFILE,
        W,
        DELETE,
        "denied",
        result,
        lambda action, resource: ["broad#ReadWrite"],
        None,
        lambda action, resource: ["guard#NoDeletes"],
    )
    assert verdict is None


def test_stand_in_denied_by_something_else_than_the_role_is_inconclusive() -> None:
    result = measured(
        DELETE,
        "denied",
        denial(
            "AccessDenied",
            "User: x is not authorized to perform: s3:DeleteObject with an explicit deny in a service control policy",
            403,
        ),
    )
    assert (result["policy_type"], result["explicit"]) == ("service-control-policy", True)
    verdict = action_verdict(PROFILE, W, DELETE, "denied", result, lambda action, resource: ["cleanup#0"])
    assert isinstance(verdict, Inconclusive)
    assert "denied by service-control-policy (explicit deny)" in verdict.reason


def test_unreadable_policies_make_the_stand_in_inconclusive_not_a_failure() -> None:
    def unreadable(action: str, resource: str | None) -> list[str]:
        raise PolicyUnavailable("iam.RolePolicies: AccessDenied: not authorized to perform iam:ListRolePolicies")

    verdict = action_verdict(PROFILE, W, DELETE, "denied", measured(DELETE, "denied", S3_DENIED), unreadable)
    assert isinstance(verdict, Inconclusive)
    assert "could not be read: iam.RolePolicies: AccessDenied" in verdict.reason


def test_a_right_outcome_measured_as_another_principal_is_inconclusive() -> None:
    identity = {"method": "container-role", "caller": {"arn": OTHER}}
    result = denied(SEND, "identity-based-policy")
    verdict = action_verdict(PROFILE, W, SEND, "denied", result, None, identity)
    assert isinstance(verdict, Inconclusive)
    assert f"the probe ran as {OTHER}" in verdict.reason


def test_a_conditional_deny_of_the_role_settles_nothing() -> None:
    policies = {
        "p": {
            "Statement": [
                {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": OBJECT_ARN},
                {
                    "Effect": "Deny",
                    "Action": "s3:DeleteObject",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}},
                },
            ]
        }
    }
    assert policy.denying_statements(policies, "s3:DeleteObject", OBJECT_ARN) == []
    result = measured(DELETE, "denied", S3_DENIED)
    verdict = action_verdict(
        PROFILE,
        W,
        DELETE,
        "denied",
        result,
        lambda a, r: policy.allowing_statements(policies, a, r),
        None,
        lambda a, r: policy.denying_statements(policies, a, r),
    )
    assert isinstance(verdict, Finding)  # through that endpoint the pod can delete


def test_an_allowed_action_that_must_be_denied_fails_even_when_the_policies_cannot_be_read() -> None:
    def unreadable(action: str, resource: str | None) -> list[str]:
        raise PolicyUnavailable("iam.RolePolicies: AccessDenied")

    f = _finding(action_verdict(PROFILE, W, GET_PAYROLL, "denied", measured(GET_PAYROLL, "denied", None), unreadable))
    assert f.seen == "allowed (the call succeeded)"
    assert "(the role's policies could not be read: iam.RolePolicies: AccessDenied)" in f.likely
