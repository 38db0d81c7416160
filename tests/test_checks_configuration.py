"""pytest_eksid.checks.configuration over hand-made ServiceAccounts, pod templates and associations."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.configuration import IRSA_ANNOTATION, binding, dedicated_service_account, owner_label
from pytest_eksid.profile import Workload
from tests.helpers.profiles import unit_profile

ACCOUNT = "111122223333"
OWNER_LABEL = "platform.mycompany.io/identity-owner"


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def workload(name: str, mechanism: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "finance-prod",
        "serviceAccount": f"{name}-aws-sa",
        "mechanism": mechanism,
        "roleArn": role(f"eks-prod-{name}"),
        **extra,
    }


WORKLOADS = [
    workload("invoice-exporter", "pod-identity", owner="finance-team"),
    workload("billing-worker", "irsa", owner="billing-team"),
    workload("ledger-sync", "pod-identity", targetRoleArn=role("eks-prod-ledger-sync-target")),
    workload("payments-api", "pod-identity", migration=True),
    workload("refunds-api", "irsa", migration=True),
    {**workload("legacy-cron", "irsa"), "serviceAccount": "default"},
]
PROFILE = unit_profile(WORKLOADS)
CUSTOM_LABEL_PROFILE = unit_profile(WORKLOADS, ownerLabel="example.com/team")
PI: Workload = PROFILE.workload("invoice-exporter")
IRSA: Workload = PROFILE.workload("billing-worker")
CHAINED: Workload = PROFILE.workload("ledger-sync")
PI_MIGRATING: Workload = PROFILE.workload("payments-api")
IRSA_MIGRATING: Workload = PROFILE.workload("refunds-api")
DEFAULT_SA: Workload = PROFILE.workload("legacy-cron")

PI_WHERE = "invoice-exporter (finance-prod/invoice-exporter-aws-sa, pod-identity)"
IRSA_WHERE = "billing-worker (finance-prod/billing-worker-aws-sa, irsa)"
PI_SA_CMD = "kubectl -n finance-prod get sa invoice-exporter-aws-sa -o yaml"
IRSA_SA_CMD = "kubectl -n finance-prod get sa billing-worker-aws-sa -o yaml"


def list_cmd(w: Workload) -> str:
    return (
        "aws eks list-pod-identity-associations --cluster-name prod-platform-a --region eu-west-1 "
        f"--namespace finance-prod --service-account {w.service_account}"
    )


def template(name: str, service_account: str | None, kind: str = "Deployment", **pod_spec: Any) -> dict[str, Any]:
    """A Deployment/StatefulSet as Kube.workloads returns it (plain dict, kind set)."""
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app:1"}], **pod_spec}
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "finance-prod", "labels": {"app.kubernetes.io/name": name}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {}}, "spec": spec}},
    }


def service_account(
    w: Workload, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **top: Any
) -> dict[str, Any]:
    """A ServiceAccount as Kube.service_account returns it."""
    metadata: dict[str, Any] = {"name": w.service_account, "namespace": w.namespace}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata, **top}


def association(w: Workload, ident: str, role_arn: str | None = None, target: str | None = None) -> dict[str, Any]:
    """One association as eks describe-pod-identity-association returns it."""
    out: dict[str, Any] = {
        "clusterName": "prod-platform-a",
        "namespace": w.namespace,
        "serviceAccount": w.service_account,
        "roleArn": role_arn or w.role_arn,
        "associationArn": f"arn:aws:eks:eu-west-1:{ACCOUNT}:podidentityassociation/prod-platform-a/{ident}",
        "associationId": ident,
        "tags": {},
    }
    if target is not None:
        out["targetRoleArn"] = target
    return out


def _one(found: list[Finding], fragment: str) -> Finding:
    matching = [f for f in found if fragment in f.summary]
    assert len(matching) == 1, f"expected one finding with {fragment!r}, got {[f.summary for f in found]}"
    return matching[0]


# --- dedicated_service_account -----------------------------------------------------------------

SELECTOR = "app.kubernetes.io/name=invoice-exporter"


def test_dedicated_service_account_passes() -> None:
    templates = [
        template("invoice-exporter", "invoice-exporter-aws-sa"),
        template("invoice-exporter-batch", "invoice-exporter-aws-sa", kind="StatefulSet"),
    ]
    assert dedicated_service_account(PI, templates, SELECTOR) == []


def test_deprecated_service_account_field_counts() -> None:
    templates = [template("invoice-exporter", None, serviceAccount="invoice-exporter-aws-sa")]
    assert dedicated_service_account(PI, templates, SELECTOR) == []


def test_profile_binding_the_default_service_account() -> None:
    templates = [template("legacy-cron", "default")]
    found = dedicated_service_account(DEFAULT_SA, templates, "app.kubernetes.io/name=legacy-cron")
    assert len(found) == 1
    f = found[0]
    assert f.check == "configuration"
    assert f.summary == (
        "legacy-cron (finance-prod/default, irsa): the profile binds the namespace's default ServiceAccount"
    )
    assert f.expected == "a dedicated ServiceAccount (e.g. <app>-aws-sa)"
    assert f.seen == "default"
    assert f.likely.startswith("Failure Mode 1 — Pod Uses default ServiceAccount")
    assert f.next_steps == ("kubectl -n finance-prod get sa default -o yaml",)


@pytest.mark.parametrize("pod_spec", [{}, {"serviceAccountName": "default"}], ids=["unset", "explicit"])
def test_pods_run_as_default(pod_spec: dict[str, Any]) -> None:
    obj = template("invoice-exporter", None, **pod_spec)
    found = dedicated_service_account(PI, [obj], SELECTOR)
    f = _one(found, "runs as ServiceAccount")
    assert len(found) == 1
    assert f.summary == f"{PI_WHERE}: Deployment invoice-exporter runs as ServiceAccount 'default'"
    assert f.expected == "invoice-exporter-aws-sa"
    assert f.seen == "default"
    assert f.likely == "Failure Mode 1 — Pod Uses default ServiceAccount"
    assert f.next_steps == (
        "kubectl -n finance-prod get deployment invoice-exporter "
        "-o jsonpath='{.spec.template.spec.serviceAccountName}'",
    )


def test_pods_run_as_another_service_account() -> None:
    templates = [
        template("invoice-exporter", "invoice-exporter-aws-sa"),
        template("invoice-exporter-db", "reporting-aws-sa", kind="StatefulSet"),
    ]
    found = dedicated_service_account(PI, templates, SELECTOR)
    f = _one(found, "runs as ServiceAccount")
    assert len(found) == 1
    assert f.summary == f"{PI_WHERE}: StatefulSet invoice-exporter-db runs as ServiceAccount 'reporting-aws-sa'"
    assert f.expected == "invoice-exporter-aws-sa"
    assert f.seen == "reporting-aws-sa"
    assert f.likely == "the pods run as another ServiceAccount than the one bound to the role"
    assert f.next_steps == (
        "kubectl -n finance-prod get statefulset invoice-exporter-db "
        "-o jsonpath='{.spec.template.spec.serviceAccountName}'",
    )


def test_no_matching_templates() -> None:
    found = dedicated_service_account(PI, iter([]), "app=invoice-exporter")
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{PI_WHERE}: no Deployment or StatefulSet matches 'app=invoice-exporter'"
    assert f.expected == "the workload's pod templates, found with 'app=invoice-exporter'"
    assert f.seen == "none"
    assert "set 'selector' in the profile" in f.likely
    assert f.next_steps == ("kubectl -n finance-prod get deploy,sts --show-labels",)


def test_default_service_account_and_no_templates_are_both_reported() -> None:
    found = dedicated_service_account(DEFAULT_SA, [], "app.kubernetes.io/name=legacy-cron")
    assert [f.seen for f in found] == ["default", "none"]


@pytest.mark.parametrize("automount", [False, True], ids=["automount-off", "automount-on"])
def test_pod_template_automount_plays_no_part(automount: bool) -> None:
    # The webhooks add their own projected token volume whatever automountServiceAccountToken says
    # (EKS_FACTS.md, IRSA): a hardened template that disables it must pass.
    obj = template("invoice-exporter", "invoice-exporter-aws-sa", automountServiceAccountToken=automount)
    assert dedicated_service_account(PI, [obj], SELECTOR) == []


# --- owner_label -------------------------------------------------------------------------------


def test_owner_label_present() -> None:
    assert owner_label(PROFILE, PI, service_account(PI, labels={OWNER_LABEL: "finance-team"})) is None


def test_owner_label_any_value_when_the_profile_names_no_owner() -> None:
    assert owner_label(PROFILE, CHAINED, service_account(CHAINED, labels={OWNER_LABEL: "ledger-team"})) is None


@pytest.mark.parametrize(
    ("labels", "seen"),
    [
        (None, f"no {OWNER_LABEL} label"),
        ({"app.kubernetes.io/name": "invoice-exporter"}, f"no {OWNER_LABEL} label"),
        ({OWNER_LABEL: ""}, f"no {OWNER_LABEL} label"),
        ({OWNER_LABEL: "reporting-team"}, f"{OWNER_LABEL}=reporting-team"),
    ],
    ids=["no-labels", "other-labels", "empty-value", "other-owner"],
)
def test_owner_label_missing_or_wrong(labels: dict[str, str] | None, seen: str) -> None:
    f = owner_label(PROFILE, PI, service_account(PI, labels=labels))
    assert f is not None
    assert f.check == "configuration"
    other = labels is not None and bool(labels.get(OWNER_LABEL))
    wording = "names another owner" if other else "does not name its owner"
    assert f.summary == f"{PI_WHERE}: the ServiceAccount {wording}"
    assert ("disagree" in f.likely) is other
    assert f.expected == f"{OWNER_LABEL}=finance-team"
    assert f.seen == seen
    assert f.next_steps == (
        PI_SA_CMD,
        f"kubectl -n finance-prod label sa invoice-exporter-aws-sa {OWNER_LABEL}=finance-team",
    )


def test_owner_label_without_owner_in_the_profile_suggests_a_placeholder() -> None:
    f = owner_label(PROFILE, CHAINED, service_account(CHAINED, labels={}))
    assert f is not None
    assert f.expected == f"{OWNER_LABEL}=<team>"
    assert f.next_steps[1] == f"kubectl -n finance-prod label sa ledger-sync-aws-sa {OWNER_LABEL}=<team>"


def test_owner_label_on_a_missing_service_account() -> None:
    f = owner_label(PROFILE, PI, None)
    assert f is not None
    assert f.seen == "the ServiceAccount does not exist"
    assert f.expected == f"{OWNER_LABEL}=finance-team"


def test_owner_label_key_is_configurable() -> None:
    assert (
        owner_label(CUSTOM_LABEL_PROFILE, PI, service_account(PI, labels={"example.com/team": "finance-team"})) is None
    )
    f = owner_label(CUSTOM_LABEL_PROFILE, PI, service_account(PI, labels={OWNER_LABEL: "finance-team"}))
    assert f is not None
    assert f.expected == "example.com/team=finance-team"
    assert f.seen == "no example.com/team label"
    assert f.next_steps[1] == "kubectl -n finance-prod label sa invoice-exporter-aws-sa example.com/team=finance-team"


# --- binding: common ---------------------------------------------------------------------------


@pytest.mark.parametrize("w", [PI, IRSA], ids=["pod-identity", "irsa"])
def test_binding_missing_service_account(w: Workload) -> None:
    found = binding(PROFILE, w, None, [association(w, "a-1")])
    assert len(found) == 1
    f = found[0]
    assert f.summary.endswith(": the ServiceAccount does not exist")
    assert f.expected == f"ServiceAccount finance-prod/{w.service_account}"
    assert f.seen == "not found"
    assert f.next_steps == ("kubectl -n finance-prod get sa",)


@pytest.mark.parametrize("w", [PI, IRSA], ids=["pod-identity", "irsa"])
def test_binding_service_account_without_automount_passes(w: Workload) -> None:
    # A hardened ServiceAccount (automountServiceAccountToken: false) still gets identity from both
    # webhooks: nothing to report.
    pi = w.mechanism == "pod-identity"
    annotations = None if pi else {IRSA_ANNOTATION: w.role_arn}
    sa = service_account(w, annotations=annotations, automountServiceAccountToken=False)
    associations = [association(w, "a-1")] if pi else []
    assert binding(PROFILE, w, sa, associations) == []


# --- binding: Pod Identity ---------------------------------------------------------------------


def test_pod_identity_binding_passes() -> None:
    assert binding(PROFILE, PI, service_account(PI), [association(PI, "a-1")]) == []


def test_pod_identity_association_missing() -> None:
    found = binding(PROFILE, PI, service_account(PI), [])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{PI_WHERE}: no Pod Identity association"
    assert f.expected == (
        "an association finance-prod/invoice-exporter-aws-sa -> "
        "arn:aws:iam::111122223333:role/eks-prod-invoice-exporter"
    )
    assert f.seen == "none"
    assert f.likely == "missing association: pods get no credentials from EKS Pod Identity"
    assert f.next_steps == (list_cmd(PI),)


def test_pod_identity_association_duplicated() -> None:
    found = binding(PROFILE, PI, service_account(PI), [association(PI, "a-1"), association(PI, "a-2")])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{PI_WHERE}: 2 associations"
    assert f.expected == "exactly one association"
    assert f.seen == "a-1, a-2"
    assert "ambiguous" in f.likely
    assert f.next_steps == (list_cmd(PI),)


def test_pod_identity_association_binds_another_role() -> None:
    found = binding(PROFILE, PI, service_account(PI), [association(PI, "a-1", role("eks-prod-reporting"))])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{PI_WHERE}: the association binds another role"
    assert f.expected == role("eks-prod-invoice-exporter")
    assert f.seen == f"a-1: {role('eks-prod-reporting')}"
    assert f.likely == "wrong role bound: eks-prod-reporting"
    assert f.next_steps == (list_cmd(PI),)


def test_an_association_with_a_malformed_role_arn_is_a_finding_not_a_crash() -> None:
    """What the EKS API returns is input: an ARN that is no role ARN is shown (escaped), never raised on."""
    found = binding(PROFILE, PI, service_account(PI), [association(PI, "a-1", "arn:aws:iam::bad\x1b[31m")])
    f = _one(found, "binds another role")
    assert f.likely.startswith("wrong role bound: arn:aws:iam::bad")
    assert "\x1b" not in f.message()


def test_pod_identity_unexpected_target_role() -> None:
    found = binding(
        PROFILE, PI, service_account(PI), [association(PI, "a-1", target=role("eks-prod-reporting-target"))]
    )
    f = _one(found, "binds another role")
    assert f.expected == role("eks-prod-invoice-exporter")
    assert f.seen == f"a-1: {role('eks-prod-invoice-exporter')} -> target {role('eks-prod-reporting-target')}"
    assert f.likely == "wrong role bound: eks-prod-reporting-target"


def test_pod_identity_target_role_passes() -> None:
    a = association(CHAINED, "a-1", target=role("eks-prod-ledger-sync-target"))
    assert binding(PROFILE, CHAINED, service_account(CHAINED), [a]) == []


def test_pod_identity_wrong_target_role() -> None:
    a = association(CHAINED, "a-1", target=role("eks-prod-reporting"))
    f = _one(binding(PROFILE, CHAINED, service_account(CHAINED), [a]), "binds another role")
    assert f.expected == f"{role('eks-prod-ledger-sync')} -> target {role('eks-prod-ledger-sync-target')}"
    assert f.seen == f"a-1: {role('eks-prod-ledger-sync')} -> target {role('eks-prod-reporting')}"
    assert f.likely == "wrong role bound: eks-prod-reporting"


def test_pod_identity_target_role_missing() -> None:
    a = association(CHAINED, "a-1")
    f = _one(binding(PROFILE, CHAINED, service_account(CHAINED), [a]), "binds another role")
    assert f.expected == f"{role('eks-prod-ledger-sync')} -> target {role('eks-prod-ledger-sync-target')}"
    assert f.seen == f"a-1: {role('eks-prod-ledger-sync')}"


def test_pod_identity_wrong_source_role_with_right_target_names_the_source() -> None:
    a = association(CHAINED, "a-1", role("eks-prod-reporting"), target=role("eks-prod-ledger-sync-target"))
    f = _one(binding(PROFILE, CHAINED, service_account(CHAINED), [a]), "binds another role")
    assert "eks-prod-reporting" in f.likely


def test_pod_identity_also_annotated_for_irsa() -> None:
    sa = service_account(PI, annotations={IRSA_ANNOTATION: role("irsa-prod-invoice-exporter")})
    found = binding(PROFILE, PI, sa, [association(PI, "a-1")])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{PI_WHERE}: also annotated for IRSA"
    assert f.expected == "one mechanism (Pod Identity), unless the profile declares a migration"
    assert f.seen == f"{IRSA_ANNOTATION}: {role('irsa-prod-invoice-exporter')}"
    assert "both mechanisms" in f.likely
    assert f.next_steps == (PI_SA_CMD,)


def test_pod_identity_annotation_is_accepted_during_a_migration() -> None:
    sa = service_account(PI_MIGRATING, annotations={IRSA_ANNOTATION: role("irsa-prod-payments-api")})
    assert binding(PROFILE, PI_MIGRATING, sa, [association(PI_MIGRATING, "a-1")]) == []


def test_pod_identity_migration_still_needs_the_association() -> None:
    sa = service_account(PI_MIGRATING, annotations={IRSA_ANNOTATION: role("irsa-prod-payments-api")})
    found = binding(PROFILE, PI_MIGRATING, sa, [])
    assert [f.summary.split(": ", 1)[1] for f in found] == ["no Pod Identity association"]


def test_pod_identity_missing_association_and_annotation_are_both_reported() -> None:
    sa = service_account(PI, annotations={IRSA_ANNOTATION: role("irsa-prod-invoice-exporter")})
    found = binding(PROFILE, PI, sa, [])
    assert [f.summary.split(": ", 1)[1] for f in found] == ["no Pod Identity association", "also annotated for IRSA"]


# --- binding: IRSA ------------------------------------------------------------------------------


def test_irsa_binding_passes() -> None:
    sa = service_account(IRSA, annotations={IRSA_ANNOTATION: IRSA.role_arn})
    assert binding(PROFILE, IRSA, sa, []) == []


@pytest.mark.parametrize("annotations", [None, {}, {"other/annotation": "x"}], ids=["none", "empty", "other"])
def test_irsa_annotation_missing(annotations: dict[str, str] | None) -> None:
    found = binding(PROFILE, IRSA, service_account(IRSA, annotations=annotations), [])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{IRSA_WHERE}: the IRSA annotation does not name the expected role"
    assert f.expected == f"{IRSA_ANNOTATION}: {role('eks-prod-billing-worker')}"
    assert f.seen == "no eks.amazonaws.com/role-arn annotation"
    assert f.likely == "missing annotation: the webhook injects nothing"
    assert f.next_steps == (IRSA_SA_CMD,)


def test_irsa_annotation_names_another_role() -> None:
    sa = service_account(IRSA, annotations={IRSA_ANNOTATION: role("eks-prod-reporting")})
    found = binding(PROFILE, IRSA, sa, [])
    assert len(found) == 1
    f = found[0]
    assert f.expected == f"{IRSA_ANNOTATION}: {role('eks-prod-billing-worker')}"
    assert f.seen == f"{IRSA_ANNOTATION}: {role('eks-prod-reporting')}"
    assert f.likely == "wrong role bound"
    assert f.next_steps == (IRSA_SA_CMD,)


def test_irsa_also_bound_by_pod_identity() -> None:
    sa = service_account(IRSA, annotations={IRSA_ANNOTATION: IRSA.role_arn})
    a = association(IRSA, "a-9", role("eks-prod-billing-worker-pi"))
    found = binding(PROFILE, IRSA, sa, [a])
    assert len(found) == 1
    f = found[0]
    assert f.summary == f"{IRSA_WHERE}: also bound by EKS Pod Identity"
    assert f.expected == "one mechanism (IRSA), unless the profile declares a migration"
    assert f.seen == f"a-9 -> {role('eks-prod-billing-worker-pi')}"
    assert "the pods no longer use IRSA at all" in f.likely
    assert f.next_steps == (list_cmd(IRSA),)


def test_irsa_association_is_accepted_during_a_migration() -> None:
    sa = service_account(IRSA_MIGRATING, annotations={IRSA_ANNOTATION: IRSA_MIGRATING.role_arn})
    assert binding(PROFILE, IRSA_MIGRATING, sa, [association(IRSA_MIGRATING, "a-1")]) == []


def test_irsa_migration_still_needs_the_annotation() -> None:
    found = binding(PROFILE, IRSA_MIGRATING, service_account(IRSA_MIGRATING), [association(IRSA_MIGRATING, "a-1")])
    assert [f.seen for f in found] == ["no eks.amazonaws.com/role-arn annotation"]
