"""pytest_eksid.checks.policy over plain policy documents (the reference article's, and broken variants)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.policy import (
    allowing_statements,
    permission_findings,
    statements,
    trust_findings,
    trust_notes,
)
from pytest_eksid.profile import Profile, Workload

ACCOUNT = "111122223333"
ISSUER_PATH = "oidc.eks.ap-southeast-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
ISSUER = f"https://{ISSUER_PATH}"
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER_PATH}"
SUB = f"{ISSUER_PATH}:sub"
AUD = f"{ISSUER_PATH}:aud"
SUBJECT = "system:serviceaccount:checkout-prod:checkout-api-aws-sa"
IRSA_NEXT = "aws iam get-role --role-name irsa-prod-checkout-api-s3-read --query Role.AssumeRolePolicyDocument"
PI_NEXT = "aws iam get-role --role-name eks-prod-checkout-api-s3-read --query Role.AssumeRolePolicyDocument"

PROFILE = Profile.model_validate(
    {
        "cluster": {"name": "prod-platform-a", "region": "ap-southeast-1", "accountId": ACCOUNT},
        "probe": {"image": "probe:test"},
        "workloads": [
            {
                "name": "checkout-api",
                "namespace": "checkout-prod",
                "serviceAccount": "checkout-api-aws-sa",
                "mechanism": "pod-identity",
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/eks-prod-checkout-api-s3-read",
            },
            {
                "name": "checkout-api-irsa",
                "namespace": "checkout-prod",
                "serviceAccount": "checkout-api-aws-sa",
                "mechanism": "irsa",
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/irsa-prod-checkout-api-s3-read",
            },
        ],
    }
)
PI: Workload = PROFILE.workload("checkout-api")
IRSA: Workload = PROFILE.workload("checkout-api-irsa")

# --- the reference article's documents ----------------------------------------------------

ARTICLE_PI_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ],
}
ARTICLE_IRSA_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Federated": PROVIDER},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {AUD: "sts.amazonaws.com", SUB: SUBJECT}},
        }
    ],
}
ARTICLE_BAD_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
ARTICLE_BETTER_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ListOnlyCheckoutPrefix",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": "arn:aws:s3:::company-prod-app-data",
            "Condition": {"StringLike": {"s3:prefix": ["checkout-api/*"]}},
        },
        {
            "Sid": "ReadCheckoutObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": "arn:aws:s3:::company-prod-app-data/checkout-api/*",
        },
    ],
}
ARTICLE_SQS_PRODUCER: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            "Resource": "arn:aws:sqs:ap-southeast-1:111122223333:checkout-events-prod",
        }
    ],
}
ARTICLE_DYNAMODB_READ: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:DescribeTable"],
            "Resource": [
                "arn:aws:dynamodb:ap-southeast-1:111122223333:table/product-catalog-prod",
                "arn:aws:dynamodb:ap-southeast-1:111122223333:table/product-catalog-prod/index/*",
            ],
        }
    ],
}
ARTICLE_KMS: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": "arn:aws:kms:ap-southeast-1:111122223333:key/12345678-1234-1234-1234-123456789012",
            "Condition": {"StringEquals": {"kms:ViaService": "s3.ap-southeast-1.amazonaws.com"}},
        }
    ],
}


def _irsa_trust(statement: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ARTICLE_IRSA_TRUST)
    doc["Statement"][0].update(changes)
    if statement is not None:
        doc["Statement"].append(statement)
    return doc


def _pi_trust(statement: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ARTICLE_PI_TRUST)
    doc["Statement"][0].update(changes)
    if statement is not None:
        doc["Statement"].append(statement)
    return doc


def _one(findings: list[Finding], needle: str) -> Finding:
    hits = [f for f in findings if needle in f.summary]
    assert len(hits) == 1, f"expected one finding with {needle!r} in its summary, got: {[f.summary for f in findings]}"
    return hits[0]


# --- statements -----------------------------------------------------------------------------


def test_statements_normalises_dict_and_strings() -> None:
    doc = {"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/*"}}
    assert statements(doc) == [{"Effect": "Allow", "Action": ["s3:GetObject"], "NotResource": ["arn:aws:s3:::b/*"]}]
    assert doc["Statement"]["Action"] == "s3:GetObject"  # input untouched


def test_statements_list_and_junk() -> None:
    doc = {"Statement": [{"Effect": "Deny", "NotAction": ["iam:*"], "Resource": "*"}, "junk"]}
    assert statements(doc) == [{"Effect": "Deny", "NotAction": ["iam:*"], "Resource": ["*"]}]
    assert statements({}) == []


# --- trust: the article's good policies ------------------------------------------------------


def test_article_irsa_trust_is_clean() -> None:
    assert trust_findings(PROFILE, IRSA, ARTICLE_IRSA_TRUST, oidc_issuer=ISSUER) == []
    assert trust_notes(PROFILE, IRSA, ARTICLE_IRSA_TRUST, oidc_issuer=ISSUER) == []


def test_irsa_trust_with_unknown_issuer_lints_the_account_provider() -> None:
    assert trust_findings(PROFILE, IRSA, ARTICLE_IRSA_TRUST, oidc_issuer=None) == []
    bad = _irsa_trust(
        Condition={"StringLike": {AUD: "sts.amazonaws.com", SUB: "system:serviceaccount:checkout-prod:*"}}
    )
    assert "wildcard subject widens trust" in trust_findings(PROFILE, IRSA, bad, oidc_issuer=None)[0].summary


def test_article_pod_identity_trust_is_clean_but_noted() -> None:
    assert trust_findings(PROFILE, PI, ARTICLE_PI_TRUST, oidc_issuer=ISSUER) == []
    notes = trust_notes(PROFILE, PI, ARTICLE_PI_TRUST, oidc_issuer=ISSUER)
    assert len(notes) == 3
    assert notes[0].startswith("no aws:RequestTag/kubernetes-namespace condition")
    assert "kubernetes-namespace = checkout-prod" in notes[0]
    assert "kubernetes-service-account = checkout-api-aws-sa" in notes[1]
    assert "aws:SourceOrgId" in notes[2]


def test_narrowed_pod_identity_trust_has_no_notes() -> None:
    trust = _pi_trust(
        Condition={
            "StringEquals": {
                "aws:RequestTag/kubernetes-namespace": "checkout-prod",
                "aws:RequestTag/kubernetes-service-account": "checkout-api-aws-sa",
                "aws:SourceAccount": ACCOUNT,
            },
            "ArnLike": {"aws:SourceArn": f"arn:aws:eks:ap-southeast-1:{ACCOUNT}:cluster/prod-*"},
        }
    )
    assert trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER) == []
    assert trust_notes(PROFILE, PI, trust, oidc_issuer=ISSUER) == []


def test_pod_identity_notes_name_the_lacking_statement() -> None:
    second = {
        "Sid": "Narrow",
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:SourceOrgId": "o-abc"}},
    }
    notes = trust_notes(PROFILE, PI, _pi_trust(second), oidc_issuer=ISSUER)
    assert len(notes) == 3
    assert notes[2].startswith("Statement[0]: no aws:SourceAccount")
    assert notes[0].startswith("Statement[0], statement 'Narrow': ")


def test_pod_identity_sts_star_covers_both_actions() -> None:
    assert trust_findings(PROFILE, PI, _pi_trust(Action="sts:*"), oidc_issuer=ISSUER) == []


# --- trust: IRSA failures --------------------------------------------------------------------

RISKY = {"StringLike": {SUB: "system:serviceaccount:checkout-prod:*"}, "StringEquals": {AUD: "sts.amazonaws.com"}}

IRSA_BAD = [
    pytest.param(_irsa_trust(Condition=RISKY), "wildcard subject widens trust", "Anti-Pattern 1", id="article-risky"),
    pytest.param(
        _irsa_trust(
            Condition={"StringEquals": {SUB: "system:serviceaccount:checkout-prod:*", AUD: "sts.amazonaws.com"}}
        ),
        "is literal",
        "no real ServiceAccount matches",
        id="wildcard-under-stringequals",
    ),
    pytest.param(
        _irsa_trust(Condition={"StringLike": {SUB: SUBJECT}, "StringEquals": {AUD: "sts.amazonaws.com"}}),
        "sub condition uses StringLike",
        "invites one",
        id="stringlike-exact",
    ),
    pytest.param(
        _irsa_trust(
            Condition={
                "StringNotEquals": {SUB: "system:serviceaccount:x:y"},
                "StringEquals": {AUD: "sts.amazonaws.com"},
            }
        ),
        "sub condition uses StringNotEquals",
        "negated",
        id="negated-sub",
    ),
    pytest.param(
        _irsa_trust(Condition={"StringEquals": {AUD: "sts.amazonaws.com"}}),
        "has no sub condition",
        "every ServiceAccount of every namespace",
        id="no-sub",
    ),
    pytest.param(
        _irsa_trust(Condition={"StringEquals": {SUB: SUBJECT}}), "has no aud condition", "any audience", id="no-aud"
    ),
    pytest.param(_irsa_trust(Condition=None), "has no sub condition", "every ServiceAccount", id="no-condition"),
    pytest.param(
        _irsa_trust(Condition={"StringEquals": {SUB: SUBJECT, AUD: "vault"}}),
        "aud does not admit sts.amazonaws.com",
        "Failure Mode 3 — Trust Policy Denied",
        id="wrong-aud",
    ),
    pytest.param(
        _irsa_trust(Condition={"StringEquals": {SUB: SUBJECT, AUD: ["sts.amazonaws.com", "vault"]}}),
        "aud admits other audiences",
        "replayed",
        id="extra-aud",
    ),
    pytest.param(
        _irsa_trust(Condition={"StringLike": {SUB: SUBJECT, AUD: "sts.*"}}),
        "aud condition uses StringLike",
        "does not pin",
        id="stringlike-aud",
    ),
    pytest.param(
        _irsa_trust(
            Condition={"StringEquals": {SUB: "system:serviceaccount:checkout-prod:other-sa", AUD: "sts.amazonaws.com"}}
        ),
        "sub does not admit checkout-prod/checkout-api-aws-sa",
        "Failure Mode 3 — Trust Policy Denied",
        id="wrong-subject",
    ),
    pytest.param(
        _irsa_trust(
            Condition={
                "StringEquals": {SUB: [SUBJECT, "system:serviceaccount:billing-prod:worker"], AUD: "sts.amazonaws.com"}
            }
        ),
        "sub admits other ServiceAccounts too",
        "Anti-Pattern 3 — One Shared app-role-prod",
        id="shared-subject",
    ),
    pytest.param(
        _irsa_trust(
            Principal={"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/OTHER"}
        ),
        "trusts another OIDC provider (issuer oidc.eks.eu-west-1.amazonaws.com/id/OTHER)",
        "copied from another cluster",
        id="other-issuer",
    ),
    pytest.param(
        _irsa_trust(
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "sts:AssumeRole"}
        ),
        "extra principal in Statement[1]: AWS arn:aws:iam::999988887777:root",
        "outside Kubernetes",
        id="other-account",
    ),
    pytest.param(
        _irsa_trust(
            {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ),
        "extra principal in Statement[1]: Service pods.eks.amazonaws.com",
        "also trusts EKS Pod Identity",
        id="service-principal",
    ),
    pytest.param(
        _irsa_trust({"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}),
        "statement 'Open' trusts Principal \"*\"",
        "any AWS principal",
        id="principal-star",
    ),
    pytest.param(
        _irsa_trust({"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "sts:AssumeRole"}),
        'trusts Principal "*"',
        "any account",
        id="aws-star",
    ),
    pytest.param(
        _irsa_trust({"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "sts:AssumeRole"}),
        "allows with NotPrincipal",
        "every principal except",
        id="not-principal",
    ),
    pytest.param(
        _irsa_trust(Action="sts:AssumeRole"),
        "the cluster's OIDC provider may not call sts:AssumeRoleWithWebIdentity",
        "Failure Mode 3 — Trust Policy Denied",
        id="wrong-action",
    ),
    pytest.param(
        ARTICLE_PI_TRUST,
        "does not trust the cluster's OIDC provider",
        "Failure Mode 3 — Trust Policy Denied",
        id="pod-identity-trust-for-irsa",
    ),
]


@pytest.mark.parametrize(("trust", "summary", "likely"), IRSA_BAD)
def test_irsa_trust_failures(trust: dict[str, Any], summary: str, likely: str) -> None:
    found = trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER)
    f = _one(found, summary)
    assert f.check == "trust_policy"
    assert likely in f.likely
    assert f.next_steps == (IRSA_NEXT,)
    assert f.summary.startswith("checkout-api-irsa (checkout-prod/checkout-api-aws-sa, irsa): role irsa-prod-")
    assert f"next:     {IRSA_NEXT}" in f.message()


def test_irsa_wildcard_finding_quotes_the_condition() -> None:
    f = _one(trust_findings(PROFILE, IRSA, _irsa_trust(Condition=RISKY), oidc_issuer=ISSUER), "wildcard")
    assert f.seen == f'StringLike {{"{SUB}": "system:serviceaccount:checkout-prod:*"}}'
    assert f.expected == f'StringEquals {{"{SUB}": "{SUBJECT}"}}'
    assert f.details == {"statement": "Statement[0]"}


def test_irsa_other_issuer_also_reports_missing_trust() -> None:
    other = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/OTHER"
    found = trust_findings(PROFILE, IRSA, _irsa_trust(Principal={"Federated": other}), oidc_issuer=ISSUER)
    _one(found, "does not trust the cluster's OIDC provider")
    assert len(found) == 2


def test_irsa_sub_key_of_another_issuer_is_named() -> None:
    other = "oidc.eks.eu-west-1.amazonaws.com/id/OTHER"
    trust = _irsa_trust(Condition={"StringEquals": {f"{other}:sub": SUBJECT, f"{other}:aud": "sts.amazonaws.com"}})
    f = _one(trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER), "no sub condition")
    assert f"{other}:sub" in f.seen
    assert "another issuer's keys" in f.seen


def test_irsa_provider_of_another_account_when_issuer_unknown() -> None:
    foreign = f"arn:aws:iam::999988887777:oidc-provider/{ISSUER_PATH}"
    found = trust_findings(PROFILE, IRSA, _irsa_trust(Principal={"Federated": foreign}), oidc_issuer=None)
    _one(found, "trusts another OIDC provider (account 999988887777)")


def test_irsa_condition_keys_match_case_insensitively() -> None:
    trust = _irsa_trust(Condition={"StringEquals": {SUB.upper(): SUBJECT, AUD: "sts.amazonaws.com"}})
    assert trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER + "/") == []


# --- trust: Pod Identity failures ------------------------------------------------------------

PI_BAD = [
    pytest.param(
        _pi_trust(Action="sts:AssumeRole"),
        "pods.eks.amazonaws.com may not call sts:TagSession",
        "without sts:TagSession AssumeRoleForPodIdentity fails",
        id="no-tagsession",
    ),
    pytest.param(
        _pi_trust(Action=["sts:TagSession"]),
        "pods.eks.amazonaws.com may not call sts:AssumeRole",
        "AssumeRoleForPodIdentity fails",
        id="no-assumerole",
    ),
    pytest.param(
        ARTICLE_IRSA_TRUST,
        "does not trust pods.eks.amazonaws.com",
        "written for IRSA",
        id="irsa-trust-for-pod-identity",
    ),
    pytest.param(
        _pi_trust(Principal="*"),
        'trusts Principal "*"',
        "any AWS principal",
        id="principal-star",
    ),
    pytest.param(
        _pi_trust(Principal={"Service": "pods.eks.amazonaws.com", "AWS": f"arn:aws:iam::{ACCOUNT}:role/ci"}),
        f"extra principal in Statement[0]: AWS arn:aws:iam::{ACCOUNT}:role/ci",
        "outside EKS Pod Identity",
        id="extra-aws",
    ),
    pytest.param(
        _pi_trust({"Effect": "Allow", "Principal": {"Federated": PROVIDER}, "Action": "sts:AssumeRoleWithWebIdentity"}),
        "extra principal in Statement[1]: Federated",
        "left over from a migration",
        id="leftover-irsa",
    ),
    pytest.param(
        _pi_trust(Condition={"StringEquals": {"aws:RequestTag/kubernetes-namespace": "billing-prod"}}),
        "conditions exclude checkout-prod/checkout-api-aws-sa",
        "name another namespace",
        id="other-namespace",
    ),
    pytest.param(
        _pi_trust(Condition={"StringLike": {"aws:RequestTag/kubernetes-service-account": "billing-*"}}),
        "conditions exclude",
        "AssumeRoleForPodIdentity is denied",
        id="other-sa-pattern",
    ),
    pytest.param(
        _pi_trust(Condition={"StringEquals": {"aws:SourceAccount": "999988887777"}}),
        "conditions exclude",
        "account",
        id="other-account",
    ),
]


@pytest.mark.parametrize(("trust", "summary", "likely"), PI_BAD)
def test_pod_identity_trust_failures(trust: dict[str, Any], summary: str, likely: str) -> None:
    f = _one(trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER), summary)
    assert f.check == "trust_policy"
    assert likely in f.likely
    assert f.next_steps == (PI_NEXT,)


def test_pod_identity_exclusion_names_the_condition() -> None:
    trust = _pi_trust(Condition={"StringEquals": {"aws:RequestTag/kubernetes-namespace": "billing-prod"}})
    f = _one(trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER), "conditions exclude")
    assert 'aws:RequestTag/kubernetes-namespace": "billing-prod"' in f.seen
    assert "(this workload: checkout-prod)" in f.seen


def test_pod_identity_one_admitting_statement_is_enough() -> None:
    # The other statement does not make the workload fail admission; it is a shared role, reported as one.
    other = copy.deepcopy(ARTICLE_PI_TRUST["Statement"][0])
    other["Condition"] = {"StringEquals": {"aws:RequestTag/kubernetes-namespace": "billing-prod"}}
    found = trust_findings(PROFILE, PI, _pi_trust(other), oidc_issuer=ISSUER)
    f = _one(found, "conditions admit other ServiceAccounts too")
    assert len(found) == 1
    assert "namespace billing-prod, any ServiceAccount (Statement[1])" in f.seen


def test_deny_statements_are_not_linted() -> None:
    deny = {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole", "Condition": {"Bool": {"x": "y"}}}
    assert trust_findings(PROFILE, PI, _pi_trust(deny), oidc_issuer=ISSUER) == []


# --- trust: several statements, shared roles, other clusters --------------------------------

OTHER_ISSUER_PATH = "oidc.eks.eu-west-1.amazonaws.com/id/C0FFEE0123456789ABCDEF0123456789"
OTHER_PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OTHER_ISSUER_PATH}"
CLUSTER_ARN = f"arn:aws:eks:ap-southeast-1:{ACCOUNT}:cluster/prod-platform-a"


def _irsa_statement(ns: str, sa: str, path: str = ISSUER_PATH, sid: str | None = None) -> dict[str, Any]:
    """One statement per ServiceAccount, as the AWS console, eksctl and the sandbox write them."""
    st: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{path}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {f"{path}:sub": f"system:serviceaccount:{ns}:{sa}", f"{path}:aud": "sts.amazonaws.com"}
        },
    }
    return {"Sid": sid, **st} if sid else st


def _pi_statement(ns: str, sa: str, **more: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {
            "StringEquals": {
                "aws:RequestTag/kubernetes-namespace": ns,
                "aws:RequestTag/kubernetes-service-account": sa,
                "aws:SourceAccount": ACCOUNT,
                **more,
            }
        },
    }


def _with(base: Workload, **changes: Any) -> tuple[Profile, Workload]:
    """The test profile with one workload replaced (validated like a loaded profile)."""
    data = PROFILE.model_dump(by_alias=True, exclude_none=True)
    w = {**base.model_dump(by_alias=True, exclude_none=True), **changes}
    data["workloads"] = [w]
    profile = Profile.model_validate(data)
    return profile, profile.workloads[0]


def _fleet(*, declared: bool) -> tuple[Profile, dict[str, dict[str, Any]]]:
    """40 workloads sharing two roles: 20 IRSA on one, 20 Pod Identity on the other, each role's
    trust holding one statement per ServiceAccount (how a real shared role looks)."""
    teams = [(f"team-{n:02d}", f"app-{n:02d}-sa") for n in range(20)]
    roles = {"irsa": "shared-irsa", "pod-identity": "shared-pod-identity"}
    workloads = [
        {
            "name": f"{mechanism}-{n:02d}",
            "namespace": ns,
            "serviceAccount": sa,
            "mechanism": mechanism,
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/{roles[mechanism]}",
            "trustSharedWith": [
                {"namespace": o_ns, "serviceAccount": o_sa, "reason": "one batch role for the nightly jobs"}
                for o_ns, o_sa in teams
                if o_ns != ns
            ]
            if declared
            else [],
        }
        for mechanism in roles
        for n, (ns, sa) in enumerate(teams)
    ]
    profile = Profile.model_validate({**PROFILE.model_dump(by_alias=True, exclude_none=True), "workloads": workloads})
    trusts = {
        "irsa": {"Version": "2012-10-17", "Statement": [_irsa_statement(ns, sa) for ns, sa in teams]},
        "pod-identity": {"Version": "2012-10-17", "Statement": [_pi_statement(ns, sa) for ns, sa in teams]},
    }
    return profile, trusts


def test_forty_workloads_on_two_declared_shared_roles_all_pass() -> None:
    profile, trusts = _fleet(declared=True)
    for w in profile.workloads:
        assert trust_findings(profile, w, trusts[w.mechanism], oidc_issuer=ISSUER) == [], w.name
        notes = trust_notes(profile, w, trusts[w.mechanism], oidc_issuer=ISSUER)
        shared = [n for n in notes if "declared in trustSharedWith: one batch role for the nightly jobs" in n]
        assert len(shared) == 19, (w.name, notes)
        assert not any("no statement of role" in n for n in notes)


def test_forty_workloads_on_two_undeclared_shared_roles_fail_once_each_for_sharing() -> None:
    # Before: every IRSA workload got 19 "sub does not admit <this SA>" failures, one per other statement.
    profile, trusts = _fleet(declared=False)
    for w in profile.workloads:
        found = trust_findings(profile, w, trusts[w.mechanism], oidc_issuer=ISSUER)
        assert len(found) == 1, (w.name, [f.summary for f in found])
        f = found[0]
        assert "does not admit" not in f.summary
        assert "exclude" not in f.summary
        assert "other ServiceAccounts too: " in f.summary
        assert "and 16 more" in f.summary
        others = [f"team-{n:02d}/app-{n:02d}-sa" for n in range(20) if f"team-{n:02d}" != w.namespace]
        assert all(o in f.seen for o in others)
        assert f"{w.namespace}/{w.service_account}" not in f.seen
        assert AP_SHARED in f.likely


AP_SHARED = "Anti-Pattern 3 — One Shared app-role-prod"


def test_one_statement_listing_several_subjects_admits_each_of_them() -> None:
    subjects = [SUBJECT, "system:serviceaccount:billing-prod:worker"]
    trust = _irsa_trust(Condition={"StringEquals": {SUB: subjects, AUD: "sts.amazonaws.com"}})
    profile, w = _with(
        IRSA, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "worker", "reason": "same job"}]
    )
    assert trust_findings(profile, w, trust, oidc_issuer=ISSUER) == []
    assert trust_notes(profile, w, trust, oidc_issuer=ISSUER) == [
        "role irsa-prod-checkout-api-s3-read trust admits billing-prod/worker (Statement[0]), "
        "declared in trustSharedWith: same job"
    ]


def test_undeclared_shared_irsa_role_fails_naming_the_other_subjects() -> None:
    trust = _irsa_trust(_irsa_statement("billing-prod", "worker", sid="Billing"))
    trust["Statement"].append(_irsa_statement("reports-prod", "nightly"))
    found = trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER)
    f = _one(found, "sub admits other ServiceAccounts too: billing-prod/worker, reports-prod/nightly")
    assert len(found) == 1
    assert f.seen == "billing-prod/worker (statement 'Billing'); reports-prod/nightly (Statement[2])"
    assert f.details == {"statement": "Statement[2], statement 'Billing'"}
    assert f.next_steps == (IRSA_NEXT,)


def test_partly_declared_shared_role_fails_for_the_rest_only() -> None:
    trust = _irsa_trust(_irsa_statement("billing-prod", "worker"))
    trust["Statement"].append(_irsa_statement("reports-prod", "nightly"))
    profile, w = _with(
        IRSA, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "worker", "reason": "batch"}]
    )
    found = trust_findings(profile, w, trust, oidc_issuer=ISSUER)
    f = _one(found, "sub admits other ServiceAccounts too: reports-prod/nightly")
    assert "billing-prod" not in f.seen
    assert len(trust_notes(profile, w, trust, oidc_issuer=ISSUER)) == 1


def test_no_admitting_statement_fails_naming_what_each_admits() -> None:
    trust = {"Statement": [_irsa_statement("checkout-prod", "other-sa"), _irsa_statement("billing-prod", "worker")]}
    # declaring the others does not make the workload admitted
    profile, w = _with(
        IRSA, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "worker", "reason": "batch"}]
    )
    found = trust_findings(profile, w, trust, oidc_issuer=ISSUER)
    assert len(found) == 1
    f = _one(found, "sub does not admit checkout-prod/checkout-api-aws-sa (Statement[0], Statement[1])")
    assert f.seen == "Statement[0] admits checkout-prod/other-sa; Statement[1] admits billing-prod/worker"
    assert "Failure Mode 3 — Trust Policy Denied" in f.likely


def test_wildcard_statement_beside_an_admitting_one_is_still_reported() -> None:
    wild = _irsa_statement("billing-prod", "worker", sid="Billing")
    wild["Condition"] = {"StringLike": {SUB: "system:serviceaccount:billing-prod:*"}, "StringEquals": {AUD: STS}}
    found = trust_findings(PROFILE, IRSA, _irsa_trust(wild), oidc_issuer=ISSUER)
    f = _one(found, "wildcard subject widens trust (statement 'Billing')")
    assert len(found) == 1
    assert "Anti-Pattern 1" in f.likely


STS = "sts.amazonaws.com"


def test_narrowness_is_linted_on_the_admitting_statement_only() -> None:
    # The other workload's statement lacks an aud condition: that is its own workload's finding.
    other = _irsa_statement("billing-prod", "worker")
    del other["Condition"]["StringEquals"][AUD]
    admitting = _irsa_statement("checkout-prod", "checkout-api-aws-sa")
    del admitting["Condition"]["StringEquals"][AUD]
    profile, w = _with(
        IRSA, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "worker", "reason": "batch"}]
    )
    found = trust_findings(profile, w, {"Statement": [other, admitting]}, oidc_issuer=ISSUER)
    assert [f.summary.split(": ", 1)[1] for f in found] == [
        "role irsa-prod-checkout-api-s3-read trust: Statement[1] has no aud condition"
    ]


def test_same_service_account_in_another_cluster_fails_unless_declared() -> None:
    trust = _irsa_trust(_irsa_statement("checkout-prod", "checkout-api-aws-sa", path=OTHER_ISSUER_PATH))
    f = _one(trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER), "trusts another OIDC provider")
    assert "it admits checkout-prod/checkout-api-aws-sa" in f.seen
    profile, w = _with(
        IRSA, trustSharedWith=[{"oidcIssuer": f"https://{OTHER_ISSUER_PATH}", "reason": "DR cluster in eu-west-1"}]
    )
    for issuer in (ISSUER, None):  # also when the cluster's own issuer could not be read
        assert trust_findings(profile, w, trust, oidc_issuer=issuer) == []
        assert trust_notes(profile, w, trust, oidc_issuer=issuer) == [
            "role irsa-prod-checkout-api-s3-read trust admits checkout-prod/checkout-api-aws-sa in the cluster of "
            f"issuer {OTHER_ISSUER_PATH} (Statement[1]), declared in trustSharedWith: DR cluster in eu-west-1"
        ]


def test_declared_other_cluster_does_not_excuse_a_wildcard_there() -> None:
    st = _irsa_statement("checkout-prod", "checkout-api-aws-sa", path=OTHER_ISSUER_PATH)
    st["Condition"] = {"StringLike": {f"{OTHER_ISSUER_PATH}:sub": "system:serviceaccount:checkout-prod:*"}}
    profile, w = _with(IRSA, trustSharedWith=[{"oidcIssuer": f"https://{OTHER_ISSUER_PATH}/", "reason": "DR"}])
    f = _one(trust_findings(profile, w, _irsa_trust(st), oidc_issuer=ISSUER), "trusts another OIDC provider")
    assert 'it admits StringLike "system:serviceaccount:checkout-prod:*"' in f.seen


def test_stale_declaration_is_noted() -> None:
    profile, w = _with(
        IRSA, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "worker", "reason": "batch"}]
    )
    assert trust_findings(profile, w, ARTICLE_IRSA_TRUST, oidc_issuer=ISSUER) == []
    assert trust_notes(profile, w, ARTICLE_IRSA_TRUST, oidc_issuer=ISSUER) == [
        "trustSharedWith[0] declares billing-prod/worker, but no statement of role irsa-prod-checkout-api-s3-read's "
        "trust admits it: remove the entry, or restore the statement it was written for"
    ]


def test_aud_for_another_audience_beside_an_sts_statement_widens_rather_than_denies() -> None:
    vault = _irsa_statement("checkout-prod", "checkout-api-aws-sa")
    vault["Condition"]["StringEquals"][AUD] = "vault"
    f = _one(trust_findings(PROFILE, IRSA, _irsa_trust(vault), oidc_issuer=ISSUER), "aud admits other audiences")
    assert "replayed" in f.likely
    assert "Failure Mode 3" not in f.likely


def test_subjects_from_the_policy_are_escaped() -> None:
    evil = "system:serviceaccount:x:\x1b]0;owned\x07"
    trust = _irsa_trust(Condition={"StringEquals": {SUB: [SUBJECT, evil], AUD: STS}})
    f = _one(trust_findings(PROFILE, IRSA, trust, oidc_issuer=ISSUER), "other ServiceAccounts too")
    assert "\x1b" not in f.message()
    assert "\x07" not in f.message()
    assert "\\u001b" in f.message()


def test_pod_identity_shared_role_declared_or_not() -> None:
    trust = {"Statement": [_pi_statement("checkout-prod", "checkout-api-aws-sa"), _pi_statement("billing-prod", "w")]}
    f = _one(trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER), "conditions admit other ServiceAccounts too: ")
    assert f.seen == "billing-prod/w (Statement[1])"
    profile, w = _with(PI, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "w", "reason": "batch"}])
    assert trust_findings(profile, w, trust, oidc_issuer=ISSUER) == []
    notes = trust_notes(profile, w, trust, oidc_issuer=ISSUER)
    assert notes == [
        "role eks-prod-checkout-api-s3-read trust admits namespace billing-prod, ServiceAccount w, "
        "aws:SourceAccount 111122223333 (Statement[1]), declared in trustSharedWith: batch"
    ]


def test_pod_identity_same_service_account_in_another_cluster() -> None:
    other = _pi_statement("checkout-prod", "checkout-api-aws-sa", **{"aws:RequestTag/eks-cluster-name": "prod-b"})
    mine = _pi_statement(
        "checkout-prod", "checkout-api-aws-sa", **{"aws:RequestTag/eks-cluster-name": "prod-platform-a"}
    )
    trust = {"Statement": [mine, other]}
    found = trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER)
    f = _one(found, "Statement[1] admits checkout-prod/checkout-api-aws-sa in another cluster")
    assert len(found) == 1
    assert "eks-cluster-name" in f.seen
    assert "prod-b" in f.seen
    for cluster in ("prod-b", f"arn:aws:eks:ap-southeast-1:{ACCOUNT}:cluster/prod-b"):
        profile, w = _with(PI, trustSharedWith=[{"cluster": cluster, "reason": "blue/green"}])
        assert trust_findings(profile, w, trust, oidc_issuer=ISSUER) == [], cluster
        assert trust_notes(profile, w, trust, oidc_issuer=ISSUER)[-1].endswith(
            "declared in trustSharedWith: blue/green"
        )
    # a declared cluster elsewhere does not cover a statement pinned to a third one
    profile, w = _with(PI, trustSharedWith=[{"cluster": "prod-c", "reason": "blue/green"}])
    _one(trust_findings(profile, w, trust, oidc_issuer=ISSUER), "in another cluster")


def test_pod_identity_no_admitting_statement_names_what_each_admits() -> None:
    trust = {"Statement": [_pi_statement("billing-prod", "w"), _pi_statement("checkout-prod", "other")]}
    profile, w = _with(PI, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "w", "reason": "batch"}])
    found = trust_findings(profile, w, trust, oidc_issuer=ISSUER)
    f = _one(found, "conditions exclude checkout-prod/checkout-api-aws-sa")
    assert len(found) == 1
    assert "it admits namespace billing-prod, ServiceAccount w" in f.seen
    assert "it admits namespace checkout-prod, ServiceAccount other" in f.seen


def test_pod_identity_tag_session_is_needed_on_the_admitting_statement() -> None:
    mine = _pi_statement("checkout-prod", "checkout-api-aws-sa")
    mine["Action"] = ["sts:AssumeRole"]
    trust = {"Statement": [mine, _pi_statement("billing-prod", "w")]}
    profile, w = _with(PI, trustSharedWith=[{"namespace": "billing-prod", "serviceAccount": "w", "reason": "batch"}])
    _one(trust_findings(profile, w, trust, oidc_issuer=ISSUER), "may not call sts:TagSession")


def test_pod_identity_notes_look_at_the_admitting_statement() -> None:
    trust = {"Statement": [_pi_statement("checkout-prod", "checkout-api-aws-sa"), ARTICLE_PI_TRUST["Statement"][0]]}
    # Statement[1] (no conditions) admits the workload too and lacks every narrowing condition
    notes = trust_notes(PROFILE, PI, trust, oidc_issuer=ISSUER)
    assert len(notes) == 3
    assert all(n.startswith("Statement[1]: no ") for n in notes)
    other = {"Statement": [_pi_statement("checkout-prod", "checkout-api-aws-sa"), _pi_statement("billing-prod", "w")]}
    assert [n for n in trust_notes(PROFILE, PI, other, oidc_issuer=ISSUER) if "no aws:" in n] == []


# --- permission policies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(ARTICLE_BETTER_POLICY, id="article-better"),
        pytest.param(ARTICLE_SQS_PRODUCER, id="article-sqs-producer"),
        pytest.param(ARTICLE_DYNAMODB_READ, id="article-dynamodb-read"),
        pytest.param(ARTICLE_KMS, id="article-kms"),
        pytest.param(
            {
                "Statement": {
                    "Effect": "Allow",
                    "Action": ["s3:ListAllMyBuckets", "sqs:ListQueues", "kms:ListKeys"],
                    "Resource": "*",
                }
            },
            id="list-only-on-star",
        ),
        pytest.param(
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::company-prod-app-data/*"}
                ]
            },
            id="narrow-wildcard",
        ),
        pytest.param({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}, id="deny-star"),
        pytest.param(
            {"Statement": [{"Effect": "Allow", "Action": ["iam:GetRole", "iam:ListRoles"], "Resource": "*"}]},
            id="iam-read",
        ),
        pytest.param(
            {"Statement": [{"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}]},
            id="non-data-service-on-star",
        ),
    ],
)
def test_permission_good(document: dict[str, Any]) -> None:
    assert permission_findings(PI, {"app": document}) == []


PERMISSION_BAD = [
    pytest.param(ARTICLE_BAD_POLICY, "allows s3:*", "every current and future action of s3", id="article-bad-action"),
    pytest.param(
        ARTICLE_BAD_POLICY,
        "allows data-plane actions on every resource: s3:*",
        "every team's data",
        id="article-bad-resource",
    ),
    pytest.param(
        ARTICLE_BAD_POLICY,
        "allows destructive actions: s3:DeleteObject (via s3:*), s3:DeleteObjectVersion (via s3:*), "
        "s3:DeleteBucket (via s3:*), s3:PutBucketPolicy (via s3:*)",
        "separate, rarely used role",
        id="article-bad-destructive",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
        "allows *",
        "every service",
        id="admin",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]},
        "allows data-plane actions on every resource: s3:Get*",
        'Resource "*"',
        id="get-star-on-star",
    ),
    pytest.param(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": "arn:aws:secretsmanager:ap-southeast-1:111122223333:secret:*",
                }
            ]
        },
        "data-plane actions on every resource: secretsmanager:GetSecretValue",
        "secret:*",
        id="all-secrets-arn",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/*"}]},
        "data-plane actions on every resource: s3:GetObject",
        "arn:aws:s3:::*/*",
        id="all-buckets-arn",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "arn:aws:ssm:*:*:parameter/*"}]},
        "data-plane actions on every resource: ssm:GetParameter",
        "parameter/*",
        id="all-parameters-arn",
    ),
    pytest.param(
        {
            "Statement": [
                {"Effect": "Allow", "Action": "sqs:SendMessage", "NotResource": "arn:aws:sqs:*:*:secret-queue"}
            ]
        },
        "data-plane actions on every resource: sqs:SendMessage",
        "NotResource",
        id="not-resource",
    ),
    pytest.param(
        {"Statement": [{"Sid": "Everything", "Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]},
        "statement 'Everything' allows with NotAction",
        "except the listed ones",
        id="not-action",
    ),
    pytest.param(
        {
            "Statement": [
                {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::company-prod-app-data/*"}
            ]
        },
        "allows destructive actions: s3:DeleteObject",
        "delete data",
        id="delete-object",
    ),
    pytest.param(
        {
            "Statement": [
                {"Effect": "Allow", "Action": "s3:Delete*", "Resource": "arn:aws:s3:::company-prod-app-data/*"}
            ]
        },
        "s3:DeleteObject (via s3:Delete*), s3:DeleteObjectVersion (via s3:Delete*), s3:DeleteBucket (via s3:Delete*)",
        "delete data",
        id="delete-wildcard",
    ),
    pytest.param(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["sqs:PurgeQueue", "kms:ScheduleKeyDeletion"],
                    "Resource": "arn:aws:sqs:ap-southeast-1:111122223333:q",
                }
            ]
        },
        "allows destructive actions: sqs:PurgeQueue, kms:ScheduleKeyDeletion",
        "delete data",
        id="purge-and-schedule",
    ),
    pytest.param(
        {
            "Statement": [
                {"Effect": "Allow", "Action": "iam:CreateAccessKey", "Resource": f"arn:aws:iam::{ACCOUNT}:user/x"}
            ]
        },
        "allows destructive actions: iam:CreateAccessKey",
        "change IAM",
        id="iam-write",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}]},
        "iam:* (via NotAction)",
        "change IAM",
        id="not-action-iam",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]},
        "allows iam:PassRole on every resource",
        "privilege escalation",
        id="passrole-star",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]},
        "allows sts:AssumeRole on every resource",
        "chain into any role",
        id="assumerole-star",
    ),
    pytest.param(
        {"Statement": [{"Effect": "Allow", "Action": "sts:Assume*", "Resource": "*"}]},
        "allows sts:AssumeRole on every resource (via sts:Assume*)",
        "chain into any role",
        id="assumerole-wildcard",
    ),
]


@pytest.mark.parametrize(("document", "summary", "likely"), PERMISSION_BAD)
def test_permission_failures(document: dict[str, Any], summary: str, likely: str) -> None:
    found = permission_findings(PI, {"checkout-inline": document})
    f = _one(found, summary)
    assert f.check == "permission_policy"
    assert likely in f.likely or likely in f.seen
    assert f.summary.startswith(
        "checkout-api (checkout-prod/checkout-api-aws-sa, pod-identity): inline policy checkout-inline "
    )
    assert f.next_steps == (
        "aws iam get-role-policy --role-name eks-prod-checkout-api-s3-read --policy-name checkout-inline",
    )
    assert f.details["policy"] == "checkout-inline"


def test_article_bad_policy_has_exactly_three_findings() -> None:
    found = permission_findings(PI, {"checkout-inline": ARTICLE_BAD_POLICY})
    assert len(found) == 3
    assert {f.details["statement"] for f in found} == {"Statement[0]"}
    assert found[0].seen == '{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}'


def test_contract_allows_destructive_actions() -> None:
    doc = {"Statement": [{"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/tmp/*"}]}
    assert permission_findings(PI, {"p": doc}, allowed_actions=["s3:deleteobject"]) == []
    delete_star = {"Statement": [{"Effect": "Allow", "Action": "s3:Delete*", "Resource": "arn:aws:s3:::b/tmp/*"}]}
    f = _one(permission_findings(PI, {"p": delete_star}, allowed_actions=["s3:DeleteObject"]), "destructive")
    assert "s3:DeleteBucket (via s3:Delete*)" in f.summary
    assert "s3:DeleteObject " not in f.summary
    assert "s3:DeleteObjectVersion (via s3:Delete*)" in f.summary
    assert "contract allows: s3:DeleteObject" in f.expected


@pytest.mark.parametrize(
    "action",
    [
        "s3:DeleteObjectVersion",
        "s3:PutBucketAcl",
        "s3:PutLifecycleConfiguration",
        "kms:PutKeyPolicy",
        "dynamodb:DeleteItem",
        "secretsmanager:PutSecretValue",
        "ssm:DeleteParameter",
        "sqs:SetQueueAttributes",
    ],
)
def test_data_destroying_and_policy_changing_actions_are_destructive(action: str) -> None:
    doc = {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "arn:aws:s3:::b/tmp/*"}]}
    f = _one(permission_findings(PI, {"p": doc}), "destructive")
    assert f.summary.endswith(f"allows destructive actions: {action}")


def test_contract_iam_passrole_still_not_on_star() -> None:
    doc = {"Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}
    found = permission_findings(PI, {"p": doc}, allowed_actions=["iam:PassRole"])
    assert [f.summary.split(": ", 1)[1] for f in found] == [
        "inline policy p Statement[0] allows iam:PassRole on every resource"
    ]
    iam_star = {"Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": f"arn:aws:iam::{ACCOUNT}:role/x"}]}
    f = _one(permission_findings(PI, {"p": iam_star}, allowed_actions=["iam:PassRole"]), "destructive")
    assert "iam:*" in f.summary


def test_managed_policy_next_step() -> None:
    arn = "arn:aws:iam::aws:policy/AmazonS3FullAccess"
    found = permission_findings(PI, {arn: ARTICLE_BAD_POLICY})
    assert found[0].summary.split(": ", 1)[1].startswith(f"managed policy {arn} Statement[0]")
    assert found[0].next_steps == (
        f"aws iam get-policy-version --policy-arn {arn} --version-id "
        f"$(aws iam get-policy --policy-arn {arn} --query Policy.DefaultVersionId --output text)",
    )


# --- allowing_statements ---------------------------------------------------------------------

POLICIES: dict[str, dict[str, Any]] = {
    "inline": ARTICLE_BETTER_POLICY,
    "writer": {
        "Statement": [
            {"Effect": "Allow", "Action": "s3:Put?bject", "Resource": "arn:aws:s3:::company-prod-app-data/out/*"},
            {"Sid": "Deny", "Effect": "Deny", "Action": "s3:*", "Resource": "*"},
            {
                "Sid": "AllButIam",
                "Effect": "Allow",
                "NotAction": ["iam:*", "s3:Delete*"],
                "NotResource": "arn:aws:s3:::secret/*",
            },
        ]
    },
}


@pytest.mark.parametrize(
    ("action", "resource", "expected"),
    [
        (
            "s3:GetObject",
            "arn:aws:s3:::company-prod-app-data/checkout-api/a.pdf",
            ["inline#ReadCheckoutObjects", "writer#AllButIam"],
        ),
        (
            "S3:getobject",
            "arn:aws:s3:::company-prod-app-data/checkout-api/a.pdf",
            ["inline#ReadCheckoutObjects", "writer#AllButIam"],
        ),
        ("s3:GetObject", "arn:aws:s3:::COMPANY-prod-app-data/checkout-api/a.pdf", ["writer#AllButIam"]),
        ("s3:GetObject", "arn:aws:s3:::secret/x", []),
        ("s3:PutObject", "arn:aws:s3:::company-prod-app-data/out/2026/a.pdf", ["writer#0", "writer#AllButIam"]),
        ("s3:DeleteObject", "arn:aws:s3:::company-prod-app-data/out/a.pdf", []),
        ("iam:PassRole", None, []),
        ("s3:ListBucket", "arn:aws:s3:::company-prod-app-data", ["inline#ListOnlyCheckoutPrefix", "writer#AllButIam"]),
        ("s3:ListBucket", None, ["inline#ListOnlyCheckoutPrefix", "writer#AllButIam"]),
        ("sqs:SendMessage", "arn:aws:sqs:ap-southeast-1:111122223333:q", ["writer#AllButIam"]),
    ],
)
def test_allowing_statements(action: str, resource: str | None, expected: list[str]) -> None:
    assert allowing_statements(POLICIES, action, resource) == expected


def test_allowing_statements_arn_segments_and_question_mark() -> None:
    policies = {
        "p": {"Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:111122223333:q?"}]}
    }
    assert allowing_statements(policies, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:111122223333:q1") == ["p#0"]
    assert allowing_statements(policies, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:111122223333:q12") == []
    assert allowing_statements(policies, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:999988887777:q1") == []


# --- classification from AWS's service authorization data ------------------------------------

SCOPED = {
    "kms": "arn:aws:kms:ap-southeast-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "sqs": "arn:aws:sqs:ap-southeast-1:111122223333:checkout-events",
    "s3": "arn:aws:s3:::company-prod-app-data",
    "secretsmanager": "arn:aws:secretsmanager:ap-southeast-1:111122223333:secret:checkout-db-AbCdEf",
    "ssm": "arn:aws:ssm:ap-southeast-1:111122223333:parameter/checkout/feature-flags",
    "dynamodb": "arn:aws:dynamodb:ap-southeast-1:111122223333:table/checkout-orders",
}


def _scoped(*actions: str) -> dict[str, Any]:
    service = actions[0].partition(":")[0]
    return {"Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": SCOPED[service]}]}


@pytest.mark.parametrize(
    "action",
    [
        "kms:CreateGrant",  # Permissions management
        "sqs:AddPermission",  # Permissions management
        "s3:PutBucketPublicAccessBlock",  # Permissions management
        "secretsmanager:DeleteResourcePolicy",  # Permissions management
        "ssm:PutParameter",  # Write: overwrites a value other workloads read
        "s3:PutBucketVersioning",  # Write: suspending versioning makes deletes final
    ],
)
def test_scoped_grants_missed_by_the_old_list_are_destructive(action: str) -> None:
    f = _one(permission_findings(PI, {"p": _scoped(action)}), "destructive")
    assert f.summary.endswith(f"allows destructive actions: {action}")
    assert "contract allows: none" in f.expected
    assert "separate, rarely used role" in f.likely
    assert permission_findings(PI, {"p": _scoped(action)}, allowed_actions=[action]) == []


@pytest.mark.parametrize(
    "actions",
    [
        ("s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:GetBucketLocation"),
        ("s3:List*",),
        ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"),
        ("sqs:SendMessage",),
        ("kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:Get*", "kms:List*"),
        ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"),
        ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:Describe*"),
    ],
)
def test_scoped_read_and_list_grants_are_not_flagged(actions: tuple[str, ...]) -> None:
    assert permission_findings(PI, {"p": _scoped(*actions)}) == []


@pytest.mark.parametrize(
    "actions",
    [
        ("s3:PutObject",),
        ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"),
        ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate"),
        ("sqs:SendMessage", "sqs:DeleteMessage"),
    ],
)
def test_scoped_writes_of_the_workloads_own_data_are_not_flagged(actions: tuple[str, ...]) -> None:
    """A hardened workload writes objects under its own prefix and items in its own table: that is its job, not
    destruction (and several of these have no side-effect-free probe, so 'name it in allow' is no answer)."""
    assert permission_findings(PI, {"p": _scoped(*actions)}) == []


@pytest.mark.parametrize("action", ["dynamodb:PartiQLDelete", "dynamodb:DeleteItem", "s3:DeleteObject"])
def test_scoped_deletes_are_flagged_whatever_the_verbs_prefix(action: str) -> None:
    f = _one(permission_findings(PI, {"p": _scoped(action)}), "destructive")
    assert action in f.summary


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("s3:Put*", ["s3:PutBucketPublicAccessBlock (via s3:Put*)", "s3:PutBucketVersioning (via s3:Put*)"]),
        ("s3:PutBucket*", ["s3:PutBucketPolicy (via s3:PutBucket*)", "s3:PutBucketAcl (via s3:PutBucket*)"]),
        (
            "kms:*",
            ["kms:ScheduleKeyDeletion (via kms:*)", "kms:DisableKey (via kms:*)", "kms:PutKeyPolicy (via kms:*)"],
        ),
        ("ssm:Put*", ["ssm:PutParameter (via ssm:Put*)"]),
        ("sqs:*Permission", ["sqs:AddPermission (via sqs:*Permission)", "sqs:RemovePermission (via sqs:*Permission)"]),
    ],
)
def test_wildcards_are_expanded_from_the_data(
    pattern: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pytest_eksid.checks.policy.MAX_NAMED", 10_000)  # name every one, count none
    f = _one(permission_findings(PI, {"p": _scoped(pattern)}), "destructive")
    for entry in expected:
        assert entry in f.summary
    assert " more (via " not in f.summary
    assert "GetObject" not in f.summary  # reads and lists are not destructive
    assert "List" not in f.summary


def test_wildcard_expansion_names_the_best_known_first_and_counts_the_rest() -> None:
    from pytest_eksid.checks.policy import MAX_NAMED
    from pytest_eksid.iam.actions import expand

    f = _one(permission_findings(PI, {"p": ARTICLE_BAD_POLICY}), "destructive")
    entries = f.summary.split("allows destructive actions: ", 1)[1].split(", ")
    assert entries[0] == "s3:DeleteObject (via s3:*)"
    assert len(entries) == MAX_NAMED + 1
    more = int(entries[-1].removeprefix("and ").split(" ", 1)[0])
    every_s3 = {a.action for a in expand("s3:*")}
    assert "s3:PutBucketVersioning" in every_s3
    assert MAX_NAMED + more < len(every_s3)  # reads and lists are not counted


def test_a_statement_naming_an_explicit_action_and_a_wildcard_names_the_explicit_one_plainly() -> None:
    doc = _scoped("s3:PutBucketVersioning", "s3:Put*")
    f = _one(permission_findings(PI, {"p": doc}), "destructive")
    assert "s3:PutBucketVersioning," in f.summary or f.summary.endswith("s3:PutBucketVersioning")
    assert "s3:PutBucketVersioning (via" not in f.summary


# --- unknown actions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ("s3:GetObjcet", "s3:GetObjcet (did you mean s3:GetObject?)"),
        ("s4:GetObject", "s4:GetObject (did you mean s3:GetObject?)"),
        ("sqs:SendMesage", "sqs:SendMesage (did you mean sqs:SendMessage?)"),
        ("s3:Gte*", "s3:Gte*"),
        ("nosuchservice:Frobnicate", "nosuchservice:Frobnicate"),
    ],
)
def test_actions_aws_does_not_know_are_named(entry: str, shown: str) -> None:
    doc = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", entry], "Resource": "arn:aws:s3:::b/*"}]}
    f = _one(permission_findings(PI, {"checkout-inline": doc}), "AWS does not know")
    assert f.summary.endswith(f"inline policy checkout-inline Statement[0] names actions AWS does not know: {shown}")
    assert "Service Authorization Reference" in f.expected
    assert "a typo" in f.likely
    assert f.next_steps == (
        "aws iam get-role-policy --role-name eks-prod-checkout-api-s3-read --policy-name checkout-inline",
    )


def test_a_misspelt_not_action_is_named_too() -> None:
    doc = {"Statement": [{"Effect": "Allow", "NotAction": ["iam:*", "s3:DeleteObjcet"], "Resource": "*"}]}
    f = _one(permission_findings(PI, {"p": doc}), "AWS does not know")
    assert "s3:DeleteObjcet (did you mean s3:DeleteObject?)" in f.summary


@pytest.mark.parametrize("pattern", ["*", "s3:*", "s3:Get*", "s3:getobject", "S3:GetObject", "s?s:Send*", "*:Get*"])
def test_known_actions_and_wildcards_matching_some_are_not_typos(pattern: str) -> None:
    doc = {"Statement": [{"Effect": "Allow", "Action": pattern, "Resource": "arn:aws:s3:::b/k"}]}
    assert not [f for f in permission_findings(PI, {"p": doc}) if "AWS does not know" in f.summary]


# --- disableSessionTags on the association ----------------------------------------------------

NARROWED_PI_TRUST = _pi_trust(
    Condition={
        "StringEquals": {
            "aws:RequestTag/kubernetes-namespace": "checkout-prod",
            "aws:RequestTag/kubernetes-service-account": "checkout-api-aws-sa",
        }
    }
)


def test_session_tags_disabled_makes_request_tag_conditions_exclude_the_workload() -> None:
    assert trust_findings(PROFILE, PI, NARROWED_PI_TRUST, oidc_issuer=ISSUER) == []
    finding = _one(
        trust_findings(PROFILE, PI, NARROWED_PI_TRUST, oidc_issuer=ISSUER, session_tags=False),
        "conditions exclude checkout-prod/checkout-api-aws-sa",
    )
    assert "no such key; the association disables session tags" in finding.seen
    assert "disableSessionTags" in finding.likely
    assert "Failure Mode 3" in finding.likely
    assert "--no-disable-session-tags" in finding.likely


def test_session_tags_disabled_operators_that_hold_on_a_missing_key() -> None:
    for op in ("StringEqualsIfExists", "StringNotEquals", "ForAllValues:StringEquals"):
        trust = _pi_trust(Condition={op: {"aws:RequestTag/kubernetes-namespace": "checkout-prod"}})
        assert trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER, session_tags=False) == [], op
    null = _pi_trust(Condition={"Null": {"aws:RequestTag/kubernetes-namespace": "true"}})
    assert trust_findings(PROFILE, PI, null, oidc_issuer=ISSUER, session_tags=False) == []


def test_session_tags_disabled_needs_no_tag_session_and_gives_no_request_tag_advice() -> None:
    trust = _pi_trust(Action="sts:AssumeRole")
    _one(trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER), "may not call sts:TagSession")
    assert trust_findings(PROFILE, PI, trust, oidc_issuer=ISSUER, session_tags=False) == []
    notes = trust_notes(PROFILE, PI, ARTICLE_PI_TRUST, oidc_issuer=ISSUER, session_tags=False)
    assert notes[0].startswith("the association sets disableSessionTags")
    assert not any("aws:RequestTag" in n and n.startswith("no ") for n in notes)
    assert any("aws:SourceOrgId" in n for n in notes)
