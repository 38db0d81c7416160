"""Every identity of the cluster accounted for: bindings the profile does not declare, and who can
become each declared one."""

import pytest

from pytest_eksid.checks import become, identities, workload_label
from pytest_eksid.fixtures import fail_on

pytestmark = pytest.mark.configuration


def test_undeclared_identities(eksid_cluster, eksid_kube, eksid_aws, eksid_settings, record_property, request):
    """Once per cluster: every IRSA annotation, every Pod Identity association and (unless
    --eksid-skip-iam-scan) every IAM role trusting this cluster's ServiceAccounts is declared by a
    workload of the profile or ignored under ``ignore:`` with a reason."""
    profile = eksid_cluster.profile
    service_accounts = eksid_kube.all_service_accounts()
    owners = {
        ((sa.get("metadata") or {}).get("namespace", ""), (sa.get("metadata") or {}).get("name", "")): str(
            ((sa.get("metadata") or {}).get("labels") or {}).get(profile.cluster.owner_label, "")
        )
        for sa in service_accounts
    }
    found = identities.from_service_accounts(service_accounts, profile.cluster.owner_label)
    found += identities.from_associations(eksid_aws.all_associations(profile.cluster.name), owners)
    if not eksid_settings.skip_iam_scan.value:
        issuer = eksid_aws.oidc_issuer(profile.cluster.name)
        found += identities.from_roles(profile, eksid_aws.roles(), oidc_issuer=issuer)
    classified = identities.classify(profile, found)
    lines = [f"declared: {identities.describe(i)}" for i in classified.declared]
    for i, rule in classified.ignored:
        note = f"ignored: {identities.describe(i)} — {rule.reason}"
        record_property("ignored_identity", note)
        lines.append(note)
    lines += [f"UNDECLARED: {identities.describe(i)}" for i in classified.undeclared]
    request.node.add_report_section("call", "eksid identities of the cluster", "\n".join(lines) or "none found")
    fail_on(identities.undeclared_findings(profile, classified))


def test_who_can_become(eksid_profile, eksid_workload, eksid_kube, record_property, request):
    """The Kubernetes subjects that can run code as the workload's ServiceAccount (create pods or pod
    controllers, tokens, impersonation, exec) are the profile's ``deployers``; without deployers declared
    they are reported, not judged."""
    w = eksid_workload
    rbac = become.RbacObjects(**eksid_kube.rbac_objects())
    pods = [
        (p.get("metadata") or {}).get("name", "")
        for p in eksid_kube.namespace_pods(w.namespace)
        if (p.get("spec") or {}).get("serviceAccountName") == w.service_account
    ]
    grants = become.who_can_become(w.namespace, w.service_account, rbac, pod_names=pods)
    expected = eksid_profile.profile.deployers_of(w)
    subjects = None if expected is None else [become.Subject(d.kind, d.name, d.namespace or "") for d in expected]
    people = become.subjects_of(grants)
    record_property("can_become_count", str(len(people)))
    record_property("can_become", ", ".join(s.label() for s in people))
    notes = become.become_notes(grants, subjects)
    lines = [*notes, *(f"{g.subject.label()}: {g.how()}" for g in grants)]
    request.node.add_report_section("call", "eksid who can become this identity", "\n".join(lines))
    fail_on(become.become_findings(workload_label(w), w.namespace, w.service_account, grants, subjects))
