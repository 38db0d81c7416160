"""Every workload identity of a cluster, declared or not: what binds a ServiceAccount to an IAM role.

Three sources, each read in full (all namespaces, every page):

- ServiceAccounts annotated ``eks.amazonaws.com/role-arn`` (IRSA: the webhook injects that role);
- EKS Pod Identity associations (the EKS API; the association's ``roleArn`` and ``targetRoleArn``);
- IAM roles of the account whose trust policy admits this cluster's ServiceAccounts (its OIDC
  provider, or ``pods.eks.amazonaws.com`` not pinned to another cluster) but that no workload of
  the profile uses: a binding waiting to happen — one annotation, or one association, away.

A binding is *declared* when a workload of the profile names its namespace and ServiceAccount (the
binding checks then judge it), or its role; *ignored* when an ``ignore:`` entry of the profile
matches it (with the entry's reason); otherwise it is *undeclared* and fails the gate.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pytest_eksid.checks import Finding, command_iam_name, command_name, shown
from pytest_eksid.checks.trust import cluster_admissions
from pytest_eksid.profile import IgnoredIdentity, Profile, role_arn_parts

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"

__all__ = [
    "Identity",
    "as_record",
    "classify",
    "from_associations",
    "from_roles",
    "from_service_accounts",
    "records",
    "undeclared_findings",
]


@dataclass(frozen=True)
class Identity:
    """One binding of a ServiceAccount (or, for ``iam-trust``, of any ServiceAccount the trust admits) to a role."""

    mechanism: str  # "irsa" | "pod-identity" | "iam-trust"
    role_arn: str
    namespace: str = ""
    service_account: str = ""
    target_role_arn: str = ""
    owner: str = ""
    created: str = ""
    changed: str = ""
    source: str = ""  # where it was found: "ServiceAccount annotation", "association a-123", "role trust"
    admits: str = ""  # iam-trust: what the trust admits of this cluster
    # iam-trust: the exact (namespace, ServiceAccount) pairs its admitting statements name; None when any of them
    # admits more than a list (a pattern, no condition)
    subjects: tuple[tuple[str, str], ...] | None = None
    # Pod Identity: the association's ownerArn — set when an EKS add-on owns it (botocore eks model,
    # PodIdentityAssociation.ownerArn: "If defined, the EKS Pod Identity association is owned by an Amazon EKS add-on")
    owner_arn: str = ""

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.service_account}" if self.namespace else "(any the trust admits)"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value) if value is not None else ""


def when(value: Any) -> str:
    """A timestamp (a datetime from botocore, an RFC 3339 string from Kubernetes) as ``YYYY-MM-DDTHH:MM:SSZ``
    in UTC; any other text as it came (escaped where shown)."""
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if moment is None:
        return _text(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def from_service_accounts(service_accounts: Iterable[Mapping[str, Any]], owner_label: str) -> list[Identity]:
    """The IRSA bindings: ServiceAccounts with a role annotation (whatever its value: shown, not trusted)."""
    out: list[Identity] = []
    for sa in service_accounts:
        meta = _meta(sa)
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), Mapping) else {}
        labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
        role = annotations.get(IRSA_ANNOTATION) if isinstance(annotations, Mapping) else None
        if not isinstance(role, str):
            continue
        out.append(
            Identity(
                "irsa",
                role,
                _text(meta.get("namespace")),
                _text(meta.get("name")),
                owner=_text(labels.get(owner_label)) if isinstance(labels, Mapping) else "",
                created=when(meta.get("creationTimestamp")),
                source="ServiceAccount annotation",
            )
        )
    return out


def from_associations(
    associations: Iterable[Mapping[str, Any]], owners: Mapping[tuple[str, str], str] | None = None
) -> list[Identity]:
    """The Pod Identity bindings, from described associations (``owners``: (namespace, SA) -> owner label)."""
    out: list[Identity] = []
    for a in associations:
        ns, sa = _text(a.get("namespace")), _text(a.get("serviceAccount"))
        out.append(
            Identity(
                "pod-identity",
                _text(a.get("roleArn")),
                ns,
                sa,
                target_role_arn=_text(a.get("targetRoleArn")),
                owner=(owners or {}).get((ns, sa), ""),
                created=when(a.get("createdAt")),
                changed=when(a.get("modifiedAt")),
                source=f"association {shown(_text(a.get('associationId')), 80)}",
                owner_arn=_text(a.get("ownerArn")),
            )
        )
    return out


def from_roles(profile: Profile, roles: Iterable[Mapping[str, Any]], *, oidc_issuer: str | None) -> list[Identity]:
    """Roles (as IAM ListRoles returns them, trust decoded) whose trust admits this cluster's ServiceAccounts."""
    out: list[Identity] = []
    for role in roles:
        trust = role.get("AssumeRolePolicyDocument")
        if not isinstance(trust, Mapping):
            continue
        admits = cluster_admissions(profile, trust, oidc_issuer=oidc_issuer)
        if admits:
            pinned = [a.subjects for a in admits]
            out.append(
                Identity(
                    "iam-trust",
                    _text(role.get("Arn")),
                    created=when(role.get("CreateDate")),
                    source="role trust",
                    admits="; ".join(a.text for a in admits),
                    subjects=None if any(p is None for p in pinned) else tuple(x for p in pinned if p for x in p),
                )
            )
    return out


def _role_matches(pattern: str, arn: str) -> bool:
    if not arn:
        return False
    try:
        name = role_arn_parts(arn)[1]
    except ValueError:
        name = arn
    return fnmatch.fnmatchcase(arn, pattern) or fnmatch.fnmatchcase(name, pattern)


def _ignored_by(rule: IgnoredIdentity, i: Identity) -> bool:
    """Every pattern the rule gives matches. A trust-only role has no ServiceAccount of its own: its namespace and
    ServiceAccount patterns must match every subject its trust pins (a trust admitting more pins none)."""
    if rule.role is not None and not (
        _role_matches(rule.role, i.role_arn) or _role_matches(rule.role, i.target_role_arn)
    ):
        return False
    if rule.namespace is None and rule.service_account is None:
        return True
    pairs = [(i.namespace, i.service_account)] if i.mechanism != "iam-trust" else list(i.subjects or ())
    return bool(pairs) and all(
        (rule.namespace is None or fnmatch.fnmatchcase(ns, rule.namespace))
        and (rule.service_account is None or fnmatch.fnmatchcase(sa, rule.service_account))
        for ns, sa in pairs
    )


@dataclass(frozen=True)
class Classified:
    declared: list[Identity]
    ignored: list[tuple[Identity, IgnoredIdentity]]
    undeclared: list[Identity]


def classify(profile: Profile, identities: Sequence[Identity]) -> Classified:
    """Split the identities found into declared, ignored (with the matching rule) and undeclared."""
    subjects = {(w.namespace, w.service_account) for w in profile.workloads}
    roles = {arn.lower() for w in profile.workloads for arn in (w.role_arn, w.target_role_arn) if arn}
    declared: list[Identity] = []
    ignored: list[tuple[Identity, IgnoredIdentity]] = []
    undeclared: list[Identity] = []
    bindings = [i for i in identities if i.mechanism != "iam-trust"]
    for i in bindings:  # bindings first: a trust-only role is accounted for by the bindings that use it
        if (i.namespace, i.service_account) in subjects:
            declared.append(i)
        elif i.owner_arn:  # an EKS add-on's association: the platform's, like its RBAC bindings
            ignored.append((i, IgnoredIdentity(reason=f"owned by the EKS add-on {shown(i.owner_arn, 200)}", role="*")))
        elif (rule := next((r for r in profile.ignore if _ignored_by(r, i)), None)) is not None:
            ignored.append((i, rule))
        else:
            undeclared.append(i)
    roles_of = {arn.lower(): (i, r) for i, r in ignored for arn in (i.role_arn, i.target_role_arn) if arn}
    for i in identities:
        if i.mechanism != "iam-trust":
            continue
        # Declared: a workload's role, or a trust pinned to declared ServiceAccounts only (issue: "without a
        # condition pinning it to declared subjects"; the trust lint of those workloads' own roles judges them).
        if i.role_arn.lower() in roles or (i.subjects and all(p in subjects for p in i.subjects)):
            declared.append(i)
        elif i.role_arn.lower() in roles_of:  # the role of an ignored binding is ignored with it
            ignored.append((i, roles_of[i.role_arn.lower()][1]))
        elif (rule := next((r for r in profile.ignore if _ignored_by(r, i)), None)) is not None:
            ignored.append((i, rule))
        else:
            undeclared.append(i)
    return Classified(declared, ignored, undeclared)


def _subject_text(i: Identity) -> str:
    return f"{shown(i.namespace)}/{shown(i.service_account, 253)}" if i.namespace else i.subject


def _role_text(i: Identity) -> str:
    role = shown(i.role_arn, 200)
    return f"{role} (then {shown(i.target_role_arn, 200)})" if i.target_role_arn else role


def show_command(mechanism: str, namespace: str, service_account: str, role_arn: str, cluster: str) -> str:
    """The command that shows a binding as it is now: the annotated ServiceAccount, the associations of one
    ServiceAccount, or a trust-only role's trust (cluster-sourced names that are not safe in a command become
    placeholders)."""
    ns = command_name(namespace, "<namespace>")
    sa = command_name(service_account, "<serviceaccount>")
    if mechanism == "irsa":
        return f"kubectl get serviceaccount -n {ns} {sa} -o yaml"
    if mechanism == "pod-identity":
        return (
            f"aws eks list-pod-identity-associations --cluster-name {command_name(cluster, '<cluster>')} "
            f"--namespace {ns} --service-account {sa}"
        )
    try:
        name = command_iam_name(role_arn_parts(role_arn)[1], "<role>")
    except ValueError:
        name = "<role>"
    return f"aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument"


def _next(i: Identity, cluster: str) -> str:
    return show_command(i.mechanism, i.namespace, i.service_account, i.role_arn, cluster)


def describe(i: Identity) -> str:
    """One line naming everything a reader needs to find and judge the binding."""
    parts = [f"{i.mechanism} {_subject_text(i)} -> {_role_text(i)}"]
    if i.admits:
        parts.append(f"admits {i.admits}")
    if i.mechanism != "iam-trust":
        parts.append(f"owner {shown(i.owner, 100)}" if i.owner else "no owner label")
    if i.created:
        parts.append(f"created {shown(i.created, 40)}")
    if i.changed and i.changed != i.created:
        parts.append(f"changed {shown(i.changed, 40)}")
    parts.append(f"from {i.source}")
    return ", ".join(parts)


def as_record(i: Identity, status: str) -> dict[str, str]:
    """An identity as plain data for the inventory (a report property, so it travels from an xdist worker):
    ``status`` is ``declared``, ``undeclared`` or ``ignored: <reason>``. Values as the cluster wrote them: the
    inventory escapes them per format."""
    return {
        "mechanism": i.mechanism,
        "role": i.role_arn,
        "namespace": i.namespace,
        "serviceAccount": i.service_account,
        "targetRole": i.target_role_arn,
        "owner": i.owner,
        "created": i.created,
        "changed": i.changed,
        "source": i.source,
        "admits": i.admits,
        "status": status,
    }


def records(classified: Classified) -> list[dict[str, str]]:
    """Every identity of a classification as :func:`as_record` data, declared first, then ignored, undeclared."""
    return [
        *(as_record(i, "declared") for i in classified.declared),
        *(as_record(i, f"ignored: {rule.reason}") for i, rule in classified.ignored),
        *(as_record(i, "undeclared") for i in classified.undeclared),
    ]


def undeclared_findings(profile: Profile, classified: Classified) -> list[Finding]:
    """One finding per undeclared identity: what it is, and the two ways out (declare or ignore)."""
    cluster = profile.cluster.name
    out: list[Finding] = []
    for i in classified.undeclared:
        if i.mechanism == "iam-trust":
            summary = (
                f"role {shown(i.role_arn, 200)} trusts this cluster's ServiceAccounts, and no workload declares it"
            )
            likely = (
                "a role left behind by a removed workload, made for one nobody declared, or another cluster's in the "
                "same account (a Pod Identity trust without aws:SourceArn admits every cluster's associations): one "
                "annotation or one association binds it here, and its permissions go with it; pin it to its cluster "
                "with aws:SourceArn, or list it under ignore: by role"
            )
        else:
            summary = f"{i.mechanism} binding {_subject_text(i)} -> {shown(i.role_arn, 200)} is not in the profile"
            likely = (
                "a workload identity nobody declared: its role, trust and permissions are not checked by this gate "
                "(created outside the reviewed path, or a workload the profile has not caught up with)"
            )
        out.append(
            Finding(
                "undeclared_identities",
                summary,
                "every workload identity of the cluster declared under workloads:, or under ignore: with a reason",
                describe(i),
                likely,
                (_next(i, cluster),),
            )
        )
    return out
