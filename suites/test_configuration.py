"""The configuration behind the identity: ServiceAccount, owner, binding, trust and permission policies."""

import pytest

from pytest_eksid.checks import configuration, policy
from pytest_eksid.fixtures import fail_on
from pytest_eksid.profile import role_arn_parts
from pytest_eksid.redact import redact_json

pytestmark = pytest.mark.configuration


def _role(eksid_workload):
    return role_arn_parts(eksid_workload.role_arn)[1]


def test_dedicated_service_account(eksid_workload, eksid_kube):
    """The workload's pods run as its own ServiceAccount, never `default` (token automount may be off)."""
    selector = eksid_workload.selector or f"app.kubernetes.io/name={eksid_workload.name}"
    templates = eksid_kube.workloads(eksid_workload.namespace, selector)
    fail_on(configuration.dedicated_service_account(eksid_workload, templates, selector))


def test_owner_label(eksid_profile, eksid_workload, eksid_kube):
    """The ServiceAccount names the team that owns the identity."""
    sa = eksid_kube.service_account(eksid_workload.namespace, eksid_workload.service_account)
    fail_on(configuration.owner_label(eksid_profile.profile, eksid_workload, sa))


def test_binding(eksid_profile, eksid_workload, eksid_kube, eksid_aws):
    """The annotation or the association binds exactly the expected role, by one mechanism."""
    sa = eksid_kube.service_account(eksid_workload.namespace, eksid_workload.service_account)
    associations = eksid_aws.associations(
        eksid_profile.profile.cluster.name, eksid_workload.namespace, eksid_workload.service_account
    )
    fail_on(configuration.binding(eksid_profile.profile, eksid_workload, sa, associations))


def test_trust_policy(eksid_profile, eksid_workload, eksid_aws, record_property, request):
    """The role's trust policy admits exactly this workload's mechanism, narrowly."""
    role = eksid_aws.role(_role(eksid_workload))
    if role is None:
        pytest.fail(
            f"role {eksid_workload.role_arn} does not exist: aws iam get-role --role-name {_role(eksid_workload)}"
        )
    request.node.add_report_section("call", "eksid trust policy", redact_json(role["trust"]))
    issuer = eksid_aws.oidc_issuer(eksid_profile.profile.cluster.name)
    session_tags = True
    if eksid_workload.mechanism == "pod-identity":
        # An association with disableSessionTags sends no aws:RequestTag keys to the role's trust.
        associations = eksid_aws.associations(
            eksid_profile.profile.cluster.name, eksid_workload.namespace, eksid_workload.service_account
        )
        session_tags = not any(a.get("disableSessionTags") is True for a in associations)
    notes = policy.trust_notes(
        eksid_profile.profile, eksid_workload, role["trust"], oidc_issuer=issuer, session_tags=session_tags
    )
    for note in notes:
        record_property("trust_note", note)
    if notes:
        request.node.add_report_section("call", "eksid trust notes", "\n".join(notes))
    fail_on(
        policy.trust_findings(
            eksid_profile.profile, eksid_workload, role["trust"], oidc_issuer=issuer, session_tags=session_tags
        )
    )


def test_permission_policy(eksid_workload, eksid_aws, request):
    """Least privilege: no wildcards, no Resource * on data actions, nothing destructive outside the contract."""
    policies = eksid_aws.role_policies(role_arn_parts(eksid_workload.final_role_arn)[1])
    request.node.add_report_section("call", "eksid permission policies", redact_json(policies))
    contract = [c.action for c in eksid_workload.allow]
    fail_on(policy.permission_findings(eksid_workload, policies, allowed_actions=contract))
