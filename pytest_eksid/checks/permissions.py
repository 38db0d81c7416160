"""Did each allowed action succeed and each denied action fail, as the probe measured it?"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_eksid.checks import Finding
from pytest_eksid.profile import ActionCheck, Profile, Workload, role_arn_parts

AllowingStatements = Callable[[str, str | None], list[str]]


@dataclass(frozen=True)
class Inconclusive:
    """The probe could not tell; never a pass."""

    reason: str


def _where(w: Workload, check: ActionCheck, expect: str) -> str:
    target = f" on {check.resource}" if check.resource else ""
    return f"{w.name} ({w.namespace}/{w.service_account}): {check.action}{target} must be {expect}"


def _next(profile: Profile, w: Workload, check: ActionCheck) -> tuple[str, ...]:
    _, role = role_arn_parts(w.role_arn)
    return (
        f"aws iam list-role-policies --role-name {role}",
        f"aws iam list-attached-role-policies --role-name {role}",
        f"aws iam simulate-principal-policy --policy-source-arn {w.role_arn} --action-names {check.action}"
        + (f" --resource-arns {check.resource}" if check.resource else ""),
    )


def action_verdict(
    profile: Profile,
    w: Workload,
    check: ActionCheck,
    expect: str,
    result: Mapping[str, Any] | None,
    allowing: AllowingStatements | None = None,
) -> Finding | Inconclusive | None:
    """None when the probe saw what the contract says; else a Finding, or Inconclusive."""
    if result is None:
        return Finding(
            "permissions",
            _where(w, check, expect),
            expect,
            "the probe did not report this action",
            "the probe failed before its actions step; see the probe result",
            _next(profile, w, check),
        )
    outcome = str(result.get("outcome"))
    form = f"{result.get('form')} form: {result.get('form_note')}"
    code = result.get("code")
    message = str(result.get("message") or "")
    details = {"probe": form}
    if outcome == expect:
        return None
    if outcome == "inconclusive":
        return Inconclusive(f"{_where(w, check, expect)}: inconclusive: {result.get('why')}")
    if outcome == "error":
        return Finding(
            "permissions",
            _where(w, check, expect),
            expect,
            f"error {code}: {message}",
            str(result.get("why") or "the call failed for a reason other than authorization"),
            _next(profile, w, check),
            details,
        )
    if expect == "allowed":  # seen: denied
        policy = result.get("policy_type", "unspecified")
        explicit = " (explicit deny)" if result.get("explicit") else ""
        likely = {
            "identity-based-policy": "Failure Mode 2 — IAM Permission Denied: no statement in the role's policies "
            "allows it (or one explicitly denies it)",
            "service-control-policy": "an SCP of the account's organization denies it",
            "resource-control-policy": "an RCP of the organization denies it",
            "permissions-boundary": "the role's permissions boundary does not allow it",
            "session-policy": "the session policy (association policy or AssumeRole policy) does not allow it",
            "resource-based-policy": "the resource's own policy (bucket, queue or key policy) denies it",
            "vpc-endpoint-policy": "the VPC endpoint's policy denies it",
        }.get(str(policy), "AWS denied it without naming the policy type")
        return Finding(
            "permissions",
            _where(w, check, expect),
            "allowed",
            f"denied by {policy}{explicit}: {code}: {message}",
            likely,
            _next(profile, w, check),
            details,
        )
    statements = allowing(check.action, check.resource) if allowing is not None else []
    return Finding(
        "permissions",
        _where(w, check, expect),
        "denied",
        "allowed (" + str(result.get("why")) + ")",
        "the role is broader than its contract: "
        + (
            f"allowed by {', '.join(statements)}"
            if statements
            else "no statement of the role allows it on its own: "
            "check resource policies, and whether the caller is the expected role"
        ),
        _next(profile, w, check),
        details,
    )
