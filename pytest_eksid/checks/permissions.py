"""Did each allowed action succeed and each denied action fail, as the probe measured it?"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_eksid.checks import Finding
from pytest_eksid.checks.identity import next_commands, wrong_caller
from pytest_eksid.probe.actions import probes_stand_in
from pytest_eksid.probe.result import ActionResult, IdentityResult
from pytest_eksid.profile import ActionCheck, Profile, Workload, role_arn_parts

AllowingStatements = Callable[[str, str | None], list[str]]


class PolicyUnavailable(Exception):
    """The role's policies, asked for by a check, could not be read (the runner's IAM access)."""


@dataclass(frozen=True)
class Inconclusive:
    """The probe could not tell; never a pass."""

    reason: str


def _expectation(w: Workload, check: ActionCheck, expect: str) -> str:
    target = f" on {check.resource}" if check.resource else ""
    return f"{w.name} ({w.namespace}/{w.service_account}): {check.action}{target} must be {expect}"


def _next(w: Workload, check: ActionCheck) -> tuple[str, ...]:
    # The calls run as the final role (a chained association's target): its policies decide.
    _, role = role_arn_parts(w.final_role_arn)
    return (
        f"aws iam list-role-policies --role-name {role}",
        f"aws iam list-attached-role-policies --role-name {role}",
        f"aws iam simulate-principal-policy --policy-source-arn {w.final_role_arn} --action-names {check.action}"
        + (f" --resource-arns {check.resource}" if check.resource else ""),
    )


_DENIED_ON = re.compile(r"perform: ([\w-]+:\w+) on (?:the )?resource:? \"?(arn:[^\s\"]+)")


def _resource_policy_help(check: ActionCheck, message: str, explicit: bool) -> tuple[str, tuple[str, ...]]:
    """What a resource-based-policy denial most likely means, and the commands that show that policy."""
    found = _DENIED_ON.search(message)
    action, resource = (found.group(1), found.group(2)) if found else (check.action, check.resource or "")
    how = "explicitly denies" if explicit else "does not allow"
    service = resource.split(":")[2] if resource.count(":") >= 5 else ""
    if service == "kms":
        through_s3 = check.action.lower().startswith("s3:") and action.lower() != check.action.lower()
        via = f" (S3 calls {action} on the caller's behalf: the object is SSE-KMS)" if through_s3 else ""
        likely = (
            f"the KMS key policy {how} {action} for this role{via}: a key policy must name the role, or "
            "delegate to IAM through the account root"
        )
        return likely, (f"aws kms get-key-policy --key-id {resource} --policy-name default --output text",)
    if service == "s3":
        bucket = resource.split(":::", 1)[-1].split("/", 1)[0]
        return f"the bucket policy {how} it", (f"aws s3api get-bucket-policy --bucket {bucket}",)
    if service == "sqs":
        _, _, _, region, account, name = resource.split(":", 5)
        url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
        return f"the queue policy {how} it", (
            f"aws sqs get-queue-attributes --queue-url {url} --attribute-names Policy",
        )
    return "the resource's own policy (bucket, queue or key policy) denies it", ()


def action_verdict(
    profile: Profile,
    w: Workload,
    check: ActionCheck,
    expect: str,
    result: ActionResult | None,
    allowing: AllowingStatements | None = None,
    identity: IdentityResult | None = None,
    denying: AllowingStatements | None = None,
) -> Finding | Inconclusive | None:
    """None when the probe saw what the contract says; else a Finding, or Inconclusive.

    ``identity`` is the probe's identity step: when the probe was not the workload's role, a failure
    says so and points at the binding, not at the role's policies, and a pass is inconclusive.
    ``allowing``/``denying`` name the role's Allow/Deny statements covering an action on a resource
    (raising PolicyUnavailable when they cannot be read); asked only when the probe cannot settle it."""
    if identity is not None and identity.get("proof_error"):  # a forged result must not pass, nor be inconclusive
        return Finding(
            "permissions",
            _expectation(w, check, expect),
            expect,
            str(identity["proof_error"]),
            "the probe's identity is not proven (see test_caller_role): its results are not attributable to the role",
            next_commands(profile, w),
        )
    found = _action_verdict(profile, w, check, expect, result, allowing, denying)
    problem = wrong_caller(w, identity)
    if isinstance(found, Finding) and problem is not None:
        return dataclasses.replace(found, likely=problem, next_steps=next_commands(profile, w) + found.next_steps)
    if found is None and problem is not None:  # the right outcome, measured as another principal
        return Inconclusive(f"{_expectation(w, check, expect)}: inconclusive: {problem}")
    return found


def _action_verdict(
    profile: Profile,
    w: Workload,
    check: ActionCheck,
    expect: str,
    result: Mapping[str, Any] | None,
    allowing: AllowingStatements | None,
    denying: AllowingStatements | None,
) -> Finding | Inconclusive | None:
    if result is None:
        return Finding(
            "permissions",
            _expectation(w, check, expect),
            expect,
            "the probe did not report this action",
            "the probe failed before its actions step; see the probe result",
            _next(w, check),
        )
    outcome = str(result.get("outcome"))
    form = f"{result.get('form')} form: {result.get('form_note')}"
    code = result.get("code")
    message = str(result.get("message") or "")
    details = {"probe": form}
    if outcome == "denied" and result.get("form") == "safe" and probes_stand_in(check.action) and allowing:
        # The safe form was denied on a stand-in beside the named resource; a grant on exactly that
        # resource would not show. The role's own statements say whether there is one.
        where = _expectation(w, check, expect)
        try:
            exact = allowing(check.action, check.resource)
            denied_too = denying(check.action, check.resource) if exact and denying is not None else []
        except PolicyUnavailable as exc:
            return Inconclusive(
                f"{where}: inconclusive: the safe form probes a stand-in beside the named resource and the "
                f"role's policies, which would show a grant on exactly it, could not be read: {exc}"
            )
        identity_denial = not result.get("explicit") and result.get("policy_type") in (
            None,
            "unspecified",  # a bare "Access Denied": most likely the role's own policies
            "identity-based-policy",
        )
        if exact and expect == "denied" and denied_too:
            return None  # the role's own Deny covers exactly this resource too
        if exact and expect == "denied" and not identity_denial:
            return Inconclusive(
                f"{where}: inconclusive: the stand-in beside it was denied by {result.get('policy_type')}"
                f"{' (explicit deny)' if result.get('explicit') else ''}, and {', '.join(exact)} allow "
                f"{check.action} on exactly this resource: whether that denial covers it too, only the live form "
                "(live: true) proves"
            )
        if exact and expect == "denied":
            return Finding(
                "permissions",
                _expectation(w, check, expect),
                "denied",
                f"denied on the safe form's stand-in beside it, but {', '.join(exact)} allow {check.action} "
                "on exactly this resource",
                "the role is broader than its contract: it grants the action on exactly the named resource, "
                "which the safe form cannot reach (live: true on this entry runs the real call)",
                _next(w, check),
                details,
            )
        if exact:
            return Inconclusive(
                f"{_expectation(w, check, expect)}: inconclusive: the safe form was denied on a stand-in beside it; "
                f"{', '.join(exact)} allow it on exactly this resource, which only the live form (live: true) proves"
            )
    if outcome == expect:
        return None
    if outcome == "inconclusive":
        return Inconclusive(f"{_expectation(w, check, expect)}: inconclusive: {result.get('why')}")
    if outcome not in ("allowed", "denied", "error"):
        return Finding(
            "permissions",
            _expectation(w, check, expect),
            expect,
            f"an outcome the plugin does not know: {result.get('outcome')!r}",
            "the probe and the plugin versions may differ; see the probe result",
            _next(w, check),
            details,
        )
    if outcome == "error":
        return Finding(
            "permissions",
            _expectation(w, check, expect),
            expect,
            f"error {code}: {message}",
            str(result.get("why") or "the call failed for a reason other than authorization"),
            _next(w, check),
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
        commands = _next(w, check)
        if policy == "resource-based-policy":
            likely, first = _resource_policy_help(check, message, bool(result.get("explicit")))
            commands = first + commands
        return Finding(
            "permissions",
            _expectation(w, check, expect),
            "allowed",
            f"denied by {policy}{explicit}: {code}: {message}",
            likely,
            commands,
            details,
        )
    try:
        statements = allowing(check.action, check.resource) if allowing is not None else []
    except PolicyUnavailable as exc:  # the violation stands; only its explanation is missing
        statements = [f"(the role's policies could not be read: {exc})"]
    return Finding(
        "permissions",
        _expectation(w, check, expect),
        "denied",
        "allowed (" + str(result.get("why")) + ")",
        "the role is broader than its contract: "
        + (
            f"allowed by {', '.join(statements)}"
            if statements
            else "no statement of the role allows it on its own: "
            "check resource policies, and whether the caller is the expected role"
        ),
        _next(w, check),
        details,
    )
