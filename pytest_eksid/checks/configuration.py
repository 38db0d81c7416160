"""The Kubernetes and EKS configuration behind a workload identity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytest_eksid.checks import Finding, command_label_key, command_label_value, command_name, workload_label
from pytest_eksid.profile import Profile, Workload, role_arn_parts

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def _sa_cmd(w: Workload) -> str:
    return f"kubectl -n {w.namespace} get sa {w.service_account} -o yaml"


def dedicated_service_account(w: Workload, templates: Iterable[Mapping[str, Any]], selector: str) -> list[Finding]:
    """The workload's pods run as its own ServiceAccount, never ``default``.

    ``automountServiceAccountToken`` is not looked at, here or in :func:`binding`: both webhooks add
    their own projected token volume and never read it (amazon-eks-pod-identity-webhook
    handler.go; EKS_FACTS.md), so a hardened workload that disables automount keeps its identity.
    """
    out: list[Finding] = []
    if w.service_account == "default":
        out.append(
            Finding(
                "configuration",
                f"{workload_label(w)}: the profile binds the namespace's default ServiceAccount",
                "a dedicated ServiceAccount (e.g. <app>-aws-sa)",
                "default",
                "Failure Mode 1 — Pod Uses default ServiceAccount: every pod in the namespace would share the role",
                (_sa_cmd(w),),
            )
        )
    found = list(templates)
    if not found:
        out.append(
            Finding(
                "configuration",
                f"{workload_label(w)}: no Deployment or StatefulSet matches {selector!r}",
                f"the workload's pod templates, found with {selector!r}",
                "none",
                "the selector does not match the workload's objects: set 'selector' in the profile",
                (f"kubectl -n {w.namespace} get deploy,sts --show-labels",),
            )
        )
    for obj in found:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if sa != w.service_account:
            kind, name = obj.get("kind", "Deployment"), (obj.get("metadata") or {}).get("name")
            out.append(
                Finding(
                    "configuration",
                    f"{workload_label(w)}: {kind} {name} runs as ServiceAccount {sa!r}",
                    w.service_account,
                    sa,
                    "Failure Mode 1 — Pod Uses default ServiceAccount"
                    if sa == "default"
                    else "the pods run as another ServiceAccount than the one bound to the role",
                    (
                        f"kubectl -n {w.namespace} get {command_name(str(kind).lower(), '<kind>')} "
                        f"{command_name(name, '<name>')} "
                        "-o jsonpath='{.spec.template.spec.serviceAccountName}'",
                    ),
                )
            )
    return out


def owner_label(profile: Profile, w: Workload, sa: Mapping[str, Any] | None) -> Finding | None:
    key = profile.cluster.owner_label
    labels = ((sa or {}).get("metadata") or {}).get("labels") or {}
    value = labels.get(key)
    if sa is not None and value and (w.owner is None or value == w.owner):
        return None
    seen = "the ServiceAccount does not exist" if sa is None else (f"{key}={value}" if value else f"no {key} label")
    other = sa is not None and bool(value)
    return Finding(
        "configuration",
        f"{workload_label(w)}: "
        + ("the ServiceAccount names another owner" if other else "the ServiceAccount does not name its owner"),
        f"{key}={w.owner or '<team>'}",
        seen,
        "the owner on the cluster and in the profile disagree: fix whichever is stale"
        if other
        else "ownership metadata is missing: nobody is accountable for this identity in reviews and incidents",
        (
            _sa_cmd(w),
            f"kubectl -n {w.namespace} label sa {w.service_account} "
            f"{command_label_key(key, '<label>')}={command_label_value(w.owner or '<team>', '<team>')}",
        ),
    )


def binding(
    profile: Profile, w: Workload, sa: Mapping[str, Any] | None, associations: list[Mapping[str, Any]]
) -> list[Finding]:
    """The mechanism binds exactly the expected role; not both mechanisms unless migrating."""
    out: list[Finding] = []
    cluster = profile.cluster
    list_cmd = (
        f"aws eks list-pod-identity-associations --cluster-name {cluster.name} --region {cluster.region} "
        f"--namespace {w.namespace} --service-account {w.service_account}"
    )
    if sa is None:
        return [
            Finding(
                "configuration",
                f"{workload_label(w)}: the ServiceAccount does not exist",
                f"ServiceAccount {w.namespace}/{w.service_account}",
                "not found",
                "the workload's pods cannot be created with it (admission refuses them)",
                (f"kubectl -n {w.namespace} get sa",),
            )
        ]
    meta = sa.get("metadata") or {}
    annotation = (meta.get("annotations") or {}).get(IRSA_ANNOTATION)
    if w.mechanism == "irsa":
        if annotation != w.role_arn:
            out.append(
                Finding(
                    "configuration",
                    f"{workload_label(w)}: the IRSA annotation does not name the expected role",
                    f"{IRSA_ANNOTATION}: {w.role_arn}",
                    f"{IRSA_ANNOTATION}: {annotation}" if annotation else "no eks.amazonaws.com/role-arn annotation",
                    "wrong role bound" if annotation else "missing annotation: the webhook injects nothing",
                    (_sa_cmd(w),),
                )
            )
        if associations and not w.migration:
            out.append(
                Finding(
                    "configuration",
                    f"{workload_label(w)}: also bound by EKS Pod Identity",
                    "one mechanism (IRSA), unless the profile declares a migration",
                    ", ".join(f"{a.get('associationId')} -> {a.get('roleArn')}" for a in associations),
                    "both mechanisms, a migration left half done: the webhook injects only the association's "
                    "container credentials (they take precedence), so the pods no longer use IRSA at all",
                    (list_cmd,),
                )
            )
        return out
    if not associations:
        out.append(
            Finding(
                "configuration",
                f"{workload_label(w)}: no Pod Identity association",
                f"an association {w.namespace}/{w.service_account} -> {w.role_arn}",
                "none",
                "missing association: pods get no credentials from EKS Pod Identity",
                (list_cmd,),
            )
        )
    elif len(associations) > 1:
        out.append(
            Finding(
                "configuration",
                f"{workload_label(w)}: {len(associations)} associations",
                "exactly one association",
                ", ".join(str(a.get("associationId")) for a in associations),
                "duplicate associations make the bound role ambiguous",
                (list_cmd,),
            )
        )
    else:
        a = associations[0]
        if a.get("roleArn") != w.role_arn or a.get("targetRoleArn") != w.target_role_arn:
            # Name the role that differs: the association's own role first, else its target.
            bound = a.get("roleArn") if a.get("roleArn") != w.role_arn else a.get("targetRoleArn")
            wrong = f"wrong role bound: {_role_name(str(bound))}" if bound else "the target role is missing"
            out.append(
                Finding(
                    "configuration",
                    f"{workload_label(w)}: the association binds another role",
                    w.role_arn + (f" -> target {w.target_role_arn}" if w.target_role_arn else ""),
                    f"{a.get('associationId')}: {a.get('roleArn')}"
                    + (f" -> target {a.get('targetRoleArn')}" if a.get("targetRoleArn") else ""),
                    wrong,
                    (list_cmd,),
                )
            )
    if annotation and not w.migration:
        out.append(
            Finding(
                "configuration",
                f"{workload_label(w)}: also annotated for IRSA",
                "one mechanism (Pod Identity), unless the profile declares a migration",
                f"{IRSA_ANNOTATION}: {annotation}",
                "both mechanisms, a migration left half done: the webhook injects only container credentials, "
                "so the annotation is dead weight and the role's IRSA trust still admits web-identity tokens",
                (_sa_cmd(w),),
            )
        )
    return out


def _role_name(arn: str) -> str:
    """The role's name for a message; an ARN read from the cluster may be anything, so never raise on it."""
    try:
        return role_arn_parts(arn)[1]
    except ValueError:
        return arn
