"""Every identity of the cluster accounted for (pytest_eksid/checks/identities.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pytest_eksid.checks.identities import (
    Identity,
    classify,
    describe,
    from_associations,
    from_roles,
    from_service_accounts,
    undeclared_findings,
    when,
)
from pytest_eksid.profile import Profile

ACCOUNT = "111122223333"
ISSUER_PATH = "oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
ISSUER = f"https://{ISSUER_PATH}"
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER_PATH}"
OWNER = "platform.mycompany.io/identity-owner"


def _profile(**extra: Any) -> Profile:
    return Profile.model_validate(
        {
            "cluster": {"name": "prod", "region": "eu-west-1", "accountId": ACCOUNT},
            "probe": {"image": "probe:test"},
            "workloads": [
                {
                    "name": "invoice",
                    "namespace": "finance",
                    "serviceAccount": "invoice-sa",
                    "mechanism": "pod-identity",
                    "roleArn": f"arn:aws:iam::{ACCOUNT}:role/invoice",
                },
                {
                    "name": "billing",
                    "namespace": "billing",
                    "serviceAccount": "billing-sa",
                    "mechanism": "irsa",
                    "roleArn": f"arn:aws:iam::{ACCOUNT}:role/billing",
                },
            ],
            **extra,
        }
    )


def _sa(ns: str, name: str, role: str | None = None, owner: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "creationTimestamp": "2026-12-01T10:00:00Z"}
    if role is not None:
        meta["annotations"] = {"eks.amazonaws.com/role-arn": role}
    if owner is not None:
        meta["labels"] = {OWNER: owner}
    return {"metadata": meta}


def _association(ns: str, sa: str, role: str, **more: Any) -> dict[str, Any]:
    return {
        "namespace": ns,
        "serviceAccount": sa,
        "roleArn": role,
        "associationId": f"a-{sa}",
        "createdAt": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        "modifiedAt": datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        **more,
    }


def _role(name: str, *statements: dict[str, Any]) -> dict[str, Any]:
    return {
        "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "CreateDate": datetime(2026, 11, 1, tzinfo=UTC),
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": list(statements)},
    }


def _pods_statement(**condition: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    }
    if condition:
        st["Condition"] = condition
    return st


def _irsa_statement(sub: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"Federated": PROVIDER},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{ISSUER_PATH}:sub": sub}},
    }


def test_declared_bindings_pass_and_others_are_undeclared() -> None:
    profile = _profile()
    found = from_service_accounts(
        [
            _sa("billing", "billing-sa", f"arn:aws:iam::{ACCOUNT}:role/billing", "billing-team"),
            _sa("billing", "plain-sa"),  # no annotation: no binding
            _sa("reports", "exporter-sa", f"arn:aws:iam::{ACCOUNT}:role/exporter", "data-team"),
        ],
        OWNER,
    )
    found += from_associations(
        [
            _association("finance", "invoice-sa", f"arn:aws:iam::{ACCOUNT}:role/invoice"),
            _association("finance", "debug-sa", f"arn:aws:iam::{ACCOUNT}:role/admin"),
        ]
    )
    c = classify(profile, found)
    assert [(i.mechanism, i.subject) for i in c.declared] == [
        ("irsa", "billing/billing-sa"),
        ("pod-identity", "finance/invoice-sa"),
    ]
    assert [(i.mechanism, i.subject, i.owner) for i in c.undeclared] == [
        ("irsa", "reports/exporter-sa", "data-team"),
        ("pod-identity", "finance/debug-sa", ""),
    ]
    findings = undeclared_findings(profile, c)
    assert [f.summary for f in findings] == [
        f"irsa binding reports/exporter-sa -> arn:aws:iam::{ACCOUNT}:role/exporter is not in the profile",
        f"pod-identity binding finance/debug-sa -> arn:aws:iam::{ACCOUNT}:role/admin is not in the profile",
    ]
    assert findings[0].seen == (
        f"irsa reports/exporter-sa -> arn:aws:iam::{ACCOUNT}:role/exporter, owner data-team, "
        "created 2026-12-01T10:00:00Z, from ServiceAccount annotation"
    )
    assert findings[1].seen.endswith(
        "no owner label, created 2026-12-01T09:00:00Z, changed 2026-12-02T09:00:00Z, from association a-debug-sa"
    )
    assert findings[0].next_steps == ("kubectl get serviceaccount -n reports exporter-sa -o yaml",)
    assert findings[1].next_steps == (
        "aws eks list-pod-identity-associations --cluster-name prod --namespace finance --service-account debug-sa",
    )


def test_a_declared_subject_counts_whatever_its_binding() -> None:
    # the binding checks judge a declared ServiceAccount bound by the other mechanism (both-mechanisms)
    found = from_service_accounts([_sa("finance", "invoice-sa", f"arn:aws:iam::{ACCOUNT}:role/other")], OWNER)
    assert classify(_profile(), found).undeclared == []


def test_ignore_rules_match_by_patterns_and_keep_their_reason() -> None:
    profile = _profile(
        ignore=[
            {"namespace": "kube-system", "reason": "EKS add-ons (vpc-cni, ebs-csi) own their identities"},
            {"role": "*-karpenter-*", "serviceAccount": "karpenter", "reason": "Karpenter, reviewed by platform"},
        ]
    )
    found = from_associations(
        [
            _association("kube-system", "aws-node", f"arn:aws:iam::{ACCOUNT}:role/vpc-cni"),
            _association("karpenter", "karpenter", f"arn:aws:iam::{ACCOUNT}:role/prod-karpenter-controller"),
            _association("karpenter", "other", f"arn:aws:iam::{ACCOUNT}:role/prod-karpenter-controller"),
        ]
    )
    c = classify(profile, found)
    assert [(i.subject, r.reason) for i, r in c.ignored] == [
        ("kube-system/aws-node", "EKS add-ons (vpc-cni, ebs-csi) own their identities"),
        ("karpenter/karpenter", "Karpenter, reviewed by platform"),
    ]
    assert [i.subject for i in c.undeclared] == ["karpenter/other"]  # every pattern given must match


def test_ignore_needs_a_pattern_and_a_reason() -> None:
    with pytest.raises(ValidationError, match="name what to ignore"):
        _profile(ignore=[{"reason": "because"}])
    with pytest.raises(ValidationError, match="reason"):
        _profile(ignore=[{"namespace": "kube-system"}])


def test_roles_trusting_this_cluster_but_declared_by_no_workload() -> None:
    profile = _profile()
    roles = [
        _role("invoice", _pods_statement()),  # declared (a workload's role)
        _role("orphan-pi", _pods_statement()),  # any association in this cluster can bind it
        _role("orphan-irsa", _irsa_statement("system:serviceaccount:finance:reports-sa")),
        # pinned to a declared ServiceAccount only: accounted for (that workload's own checks judge its binding)
        _role("pinned-to-declared", _irsa_statement("system:serviceaccount:finance:invoice-sa")),
        _role(
            "other-cluster",
            _pods_statement(ArnEquals={"aws:SourceArn": f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/staging"}),
        ),
        _role(
            "this-cluster",
            _pods_statement(StringEquals={"aws:RequestTag/eks-cluster-name": "prod"}),
        ),
        _role("ec2", {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}),
        _role(
            "other-issuer",
            {
                **_irsa_statement("system:serviceaccount:a:b"),
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.x/id/OTHER"},
            },
        ),
        {"Arn": "junk", "AssumeRolePolicyDocument": "not a document"},
    ]
    c = classify(profile, from_roles(profile, roles, oidc_issuer=ISSUER))
    assert [i.role_arn.rsplit("/", 1)[1] for i in c.declared] == ["invoice", "pinned-to-declared"]
    assert {i.role_arn.rsplit("/", 1)[1]: i.admits for i in c.undeclared} == {
        "orphan-pi": "Statement[0]: Pod Identity, any namespace, any ServiceAccount",
        "orphan-irsa": "Statement[0]: IRSA, ServiceAccount finance/reports-sa",
        "this-cluster": (
            "Statement[0]: Pod Identity, any namespace, any ServiceAccount, aws:RequestTag/eks-cluster-name prod"
        ),
    }
    finding = undeclared_findings(profile, c)[1]
    assert finding.summary == (
        f"role arn:aws:iam::{ACCOUNT}:role/orphan-irsa trusts this cluster's ServiceAccounts, and no workload "
        "declares it"
    )
    assert finding.next_steps == ("aws iam get-role --role-name orphan-irsa --query Role.AssumeRolePolicyDocument",)


def test_without_the_issuer_irsa_trusts_are_not_matched() -> None:
    roles = [_role("orphan-irsa", _irsa_statement("system:serviceaccount:finance:x"))]
    assert from_roles(_profile(), roles, oidc_issuer=None) == []


def test_hostile_values_are_escaped_and_never_reach_a_command() -> None:
    sa = _sa("finance", "x", "arn:aws:iam::1:role/\x1b[31mred")
    sa["metadata"]["name"] = "evil;rm -rf /"
    sa["metadata"]["labels"] = {OWNER: "\u202eeman"}
    [finding] = undeclared_findings(_profile(), classify(_profile(), from_service_accounts([sa], OWNER)))
    text = finding.message()
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert finding.next_steps == ("kubectl get serviceaccount -n finance <serviceaccount> -o yaml",)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-12-07T12:20:42Z", "2026-12-07T12:20:42Z"),
        ("2026-12-07T12:20:42+01:00", "2026-12-07T11:20:42Z"),
        (datetime(2026, 12, 7, 12, 20, 42, 123, tzinfo=UTC), "2026-12-07T12:20:42Z"),
        ("yesterday", "yesterday"),
        (None, ""),
    ],
)
def test_timestamps_read_the_same_from_both_apis(value: Any, shown: str) -> None:
    assert when(value) == shown


def test_describe_an_iam_trust_identity() -> None:
    i = Identity("iam-trust", f"arn:aws:iam::{ACCOUNT}:role/r", created="2026-01-01T00:00:00Z", source="role trust")
    assert describe(i) == (
        f"iam-trust (any the trust admits) -> arn:aws:iam::{ACCOUNT}:role/r, created 2026-01-01T00:00:00Z, "
        "from role trust"
    )


def test_an_ignore_by_namespace_covers_trust_only_roles_pinned_there_and_roles_of_ignored_bindings() -> None:
    profile = _profile(ignore=[{"namespace": "kube-system", "reason": "EKS add-ons"}])
    found = from_associations([_association("kube-system", "aws-node", f"arn:aws:iam::{ACCOUNT}:role/cni")])
    roles = [
        _role("cni", _pods_statement()),  # the role of an ignored binding, its trust admitting any namespace
        _role("ebs", _irsa_statement("system:serviceaccount:kube-system:ebs-csi-controller-sa")),
        _role(
            "half", _irsa_statement("system:serviceaccount:kube-system:a"), _irsa_statement("system:serviceaccount:x:b")
        ),
    ]
    c = classify(profile, found + from_roles(profile, roles, oidc_issuer=ISSUER))
    assert sorted(i.role_arn.rsplit("/", 1)[1] for i, _ in c.ignored) == ["cni", "cni", "ebs"]
    assert all(rule.reason == "EKS add-ons" for _, rule in c.ignored)
    assert [i.role_arn.rsplit("/", 1)[1] for i in c.undeclared] == ["half"]  # pins a subject outside kube-system


def test_an_association_an_eks_add_on_owns_is_the_platforms() -> None:
    addon = f"arn:aws:eks:eu-west-1:{ACCOUNT}:addon/prod/aws-ebs-csi-driver/1234"
    found = from_associations(
        [_association("kube-system", "ebs-csi-controller-sa", f"arn:aws:iam::{ACCOUNT}:role/ebs", ownerArn=addon)]
    )
    c = classify(_profile(), found)
    assert c.undeclared == []
    [(_, rule)] = c.ignored
    assert rule.reason == f"owned by the EKS add-on {addon}"


def test_principal_star_counts_only_without_conditions() -> None:
    star = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    pinned = {**star, "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::444455556666:role/ci-*"}}}
    found = from_roles(_profile(), [_role("open", star), _role("cross-account", pinned)], oidc_issuer=ISSUER)
    assert [i.role_arn.rsplit("/", 1)[1] for i in found] == ["open"]
