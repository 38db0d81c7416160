"""Every identity of the cluster accounted for: bindings the profile does not declare, and who can
become each declared one."""

import json

import pytest

from pytest_eksid import inventory
from pytest_eksid.checks import Finding, become, identities, workload_label
from pytest_eksid.fixtures import fail_on
from pytest_eksid.kube import KubeError
from pytest_eksid.report import IDENTITY_PROPERTY, SCAN_PROPERTY

pytestmark = pytest.mark.configuration


def _classified(eksid_cluster, eksid_kube, eksid_aws, eksid_settings):
    """Every identity of the cluster, classified against the profile (the reads are cached per run)."""
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
    return identities.classify(profile, found)


def _who_can_become_undeclared(kube, found):
    """Who can run code as the ServiceAccount of each identity no workload declares (the inventory's canBecome
    columns); left unknown where the runner may not read RBAC objects."""
    try:
        rbac = become.RbacObjects(**kube.rbac_objects())
        runner = kube.whoami()
    except KubeError:
        return
    for record in found:
        ns, sa = record["namespace"], record["serviceAccount"]
        if record["status"] == "declared" or not (ns and sa):
            continue
        pods = [
            (p.get("metadata") or {}).get("name", "")
            for p in kube.namespace_pods(ns)
            if (p.get("spec") or {}).get("serviceAccountName") == sa
        ]
        people = become.subjects_of(become.as_the_gates(become.who_can_become(ns, sa, rbac, pod_names=pods), runner))
        record["canBecomeCount"] = str(len(people))
        record["canBecome"] = ", ".join(s.label() for s in people)


def test_undeclared_identities(eksid_cluster, eksid_kube, eksid_aws, eksid_settings, record_property, request):
    """Once per cluster: every IRSA annotation, every Pod Identity association and (unless
    --eksid-skip-iam-scan) every IAM role trusting this cluster's ServiceAccounts is declared by a
    workload of the profile or ignored under ``ignore:`` with a reason."""
    profile = eksid_cluster.profile
    classified = _classified(eksid_cluster, eksid_kube, eksid_aws, eksid_settings)
    # Each identity found as data, for the inventory (--eksid-inventory), also from an xdist worker.
    found = identities.records(classified)
    _who_can_become_undeclared(eksid_kube, found)
    for record in found:
        record_property(IDENTITY_PROPERTY, json.dumps(record, sort_keys=True))
    scan = {"count": len(found), "iam": not eksid_settings.skip_iam_scan.value}
    record_property(SCAN_PROPERTY, json.dumps(scan, sort_keys=True))
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
    grants = become.as_the_gates(
        become.who_can_become(w.namespace, w.service_account, rbac, pod_names=pods), eksid_kube.whoami()
    )
    expected = eksid_profile.profile.deployers_of(w)
    subjects = None if expected is None else [become.Subject(d.kind, d.name, d.namespace or "") for d in expected]
    people = become.subjects_of(grants)
    record_property("can_become_count", str(len(people)))
    record_property("can_become", ", ".join(s.label() for s in people))
    notes = become.become_notes(grants, subjects)
    lines = [*notes, *(f"{g.subject.label()}: {g.how()}" for g in grants)]
    request.node.add_report_section("call", "eksid who can become this identity", "\n".join(lines))
    fail_on(become.become_findings(workload_label(w), w.namespace, w.service_account, grants, subjects))


def _who_can_become(eksid_cluster, eksid_kube):
    """Workload name -> (count, names) of the subjects that can become its ServiceAccount (RBAC reads)."""
    rbac = become.RbacObjects(**eksid_kube.rbac_objects())
    out = {}
    for w in eksid_cluster.profile.workloads:
        pods = [
            (p.get("metadata") or {}).get("name", "")
            for p in eksid_kube.namespace_pods(w.namespace)
            if (p.get("spec") or {}).get("serviceAccountName") == w.service_account
        ]
        grants = become.who_can_become(w.namespace, w.service_account, rbac, pod_names=pods)
        people = become.subjects_of(become.as_the_gates(grants, eksid_kube.whoami()))
        out[w.name] = (str(len(people)), ", ".join(s.label() for s in people))
    return out


@pytest.mark.eksid_baseline
def test_inventory_changes(eksid_cluster, eksid_kube, eksid_aws, eksid_settings, record_property, request):
    """Once per cluster, with --eksid-inventory-baseline: the identities new, removed and changed since that
    earlier inventory. Fails on the kinds of change the profile lists under ``inventory.failOnChanges``;
    without any listed, reports them. Computed from the cluster, not from other tests (works under xdist)."""
    setting = eksid_settings.inventory_baseline
    assert setting is not None  # deselected without --eksid-inventory-baseline (plugin.py)
    path = inventory.baseline_path(setting, request.config.rootpath, request.config.invocation_params.dir)
    baseline = inventory.read_baseline(path)  # checked when the run started: a bad file is a usage error there
    policy = eksid_cluster.profile.inventory.fail_on_changes
    classified = _classified(eksid_cluster, eksid_kube, eksid_aws, eksid_settings)
    become_rows = _who_can_become(eksid_cluster, eksid_kube) if "subjects" in policy else None
    current = inventory.identity_rows(
        eksid_cluster,
        {},
        {},
        identities.records(classified),
        become_rows,
        iam_scanned=not eksid_settings.skip_iam_scan.value,
    )
    changes = inventory.compare(baseline, current, scanned=[eksid_cluster.profile.cluster.name])
    for change in changes:
        record_property("inventory_change", change.line())
    lines = [change.line() for change in changes] or ["no change"]
    request.node.add_report_section("call", f"eksid inventory changes since {path}", "\n".join(lines))
    fail_on(
        Finding(
            "inventory_changes",
            change.summary(),
            f"no {change.kind} change since {path} (inventory.failOnChanges lists {change.kind})",
            change.detail,
            inventory.LIKELY[change.kind],
            (inventory.next_command(change, eksid_cluster.profile.cluster.name),),
        )
        for change in changes
        if change.kind in policy
    )
