"""Definition of done, points 2 and 3: allowed actions succeed, denied actions fail."""

import pytest

from pytest_eksid.aws import AwsError
from pytest_eksid.checks import policy
from pytest_eksid.checks.permissions import Inconclusive, PolicyUnavailable, action_verdict
from pytest_eksid.fixtures import fail_on, inconclusive, unproven
from pytest_eksid.profile import role_arn_parts
from pytest_eksid.redact import redact_json
from pytest_eksid.report import missing_contract

pytestmark = pytest.mark.permissions


def test_action(
    eksid_settings, eksid_profile, eksid_workload, eksid_action, eksid_probe, eksid_aws, record_property, request
):
    """One allow/deny entry of the workload, as the probe measured it running as the workload."""
    expect, ident, check = eksid_action
    result = eksid_probe.action(ident)
    record_property("probe_form", (result or {}).get("form"))

    def statements(select):
        # Asked only when the probe alone cannot settle it: the role's statements about the action.
        def find(action, resource):
            try:
                policies = eksid_aws.role_policies(role_arn_parts(eksid_workload.final_role_arn)[1])
            except AwsError as exc:
                raise PolicyUnavailable(str(exc)) from None
            return select(policies, action, resource)

        return find

    identity = eksid_probe.identity if eksid_probe.result is not None else None
    verdict = action_verdict(
        eksid_profile.profile,
        eksid_workload,
        check,
        expect,
        result,
        statements(policy.allowing_statements),
        identity,
        statements(policy.denying_statements),
    )
    if isinstance(verdict, Inconclusive):
        inconclusive(eksid_settings, verdict.reason)
    if verdict is not None:  # the role's policies beside the failure (redacted); reading them must not hide it
        try:
            policies = eksid_aws.role_policies(role_arn_parts(eksid_workload.final_role_arn)[1])
        except AwsError as exc:
            policies = {"unavailable": str(exc)}
        request.node.add_report_section("call", "eksid permission policies", redact_json(policies))
    fail_on(verdict)


def test_contract_declared(eksid_settings, eksid_workload):
    """The profile says what the workload must be able to do (allow) and what it must not (deny): a half left
    empty proves nothing and is shown as unproven, never as passed (a failure with --eksid-require-contract)."""
    missing = missing_contract(eksid_workload)
    if missing:
        halves = " and no ".join(missing)
        unproven(
            eksid_settings,
            f"{eksid_workload.name}: the profile lists no {halves} entries, so nothing proves what its role "
            f"{'may' if 'allow' in missing else 'may not'} do; add them under workloads[{eksid_workload.name}]"
            f".{missing[0]} (docs/profiles.md)",
        )
