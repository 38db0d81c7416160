"""Trust-policy evaluation (pytest_eksid.sandbox.trust) with plain dict policies."""

from __future__ import annotations

from typing import Any

from pytest_eksid.checks.policy import trust_findings
from pytest_eksid.profile import Profile
from pytest_eksid.sandbox.trust import trust_allows

ISSUER = "oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789"
PROVIDER = f"arn:aws:iam::111122223333:oidc-provider/{ISSUER}"
SUB = f"{ISSUER}:sub"
AUD = f"{ISSUER}:aud"
PODS = "pods.eks.amazonaws.com"
WEB_IDENTITY = ["sts:AssumeRoleWithWebIdentity"]
POD_IDENTITY = ["sts:AssumeRole", "sts:TagSession"]


def _irsa_policy(
    operator: str = "StringEquals",
    sub: str | list[str] = "system:serviceaccount:billing:worker-sa",
) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": PROVIDER},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {operator: {SUB: sub, AUD: "sts.amazonaws.com"}},
            }
        ],
    }


def _pod_identity_policy(actions: Any = POD_IDENTITY) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": PODS}, "Action": actions}],
    }


def _irsa(policy: dict[str, Any], sub: str, aud: str | None = "sts.amazonaws.com") -> tuple[bool, str]:
    context = {SUB: [sub]}
    if aud is not None:
        context[AUD] = [aud]
    return trust_allows(policy, principal_kind="Federated", principal=PROVIDER, actions=WEB_IDENTITY, context=context)


def _pods(policy: dict[str, Any], actions: list[str] = POD_IDENTITY, **context: list[str]) -> tuple[bool, str]:
    return trust_allows(policy, principal_kind="Service", principal=PODS, actions=actions, context=context)


# --- IRSA ------------------------------------------------------------------------------------


def test_irsa_matching_sub_and_aud_allowed() -> None:
    assert _irsa(_irsa_policy(), "system:serviceaccount:billing:worker-sa") == (True, "allowed")


def test_irsa_other_service_account_denied() -> None:
    allowed, reason = _irsa(_irsa_policy(), "system:serviceaccount:billing:other-sa")
    assert not allowed
    assert reason == f"no statement allows {PROVIDER} to perform sts:AssumeRoleWithWebIdentity"


def test_irsa_wrong_audience_denied() -> None:
    allowed, _ = _irsa(_irsa_policy(), "system:serviceaccount:billing:worker-sa", aud="pods.eks.amazonaws.com")
    assert not allowed


def test_irsa_other_oidc_provider_denied() -> None:
    allowed, reason = trust_allows(
        _irsa_policy(),
        principal_kind="Federated",
        principal=PROVIDER.replace("ABCDEF", "FEDCBA"),
        actions=WEB_IDENTITY,
        context={SUB: ["system:serviceaccount:billing:worker-sa"], AUD: ["sts.amazonaws.com"]},
    )
    assert not allowed
    assert "FEDCBA" in reason


def test_irsa_principal_kind_must_match() -> None:
    allowed, _ = trust_allows(
        _irsa_policy(),
        principal_kind="Service",
        principal=PROVIDER,
        actions=WEB_IDENTITY,
        context={SUB: ["system:serviceaccount:billing:worker-sa"], AUD: ["sts.amazonaws.com"]},
    )
    assert not allowed


def test_string_like_wildcard_admits_any_sa_of_the_namespace() -> None:
    policy = _irsa_policy("StringLike", "system:serviceaccount:billing:*")
    assert _irsa(policy, "system:serviceaccount:billing:worker-sa")[0]
    assert _irsa(policy, "system:serviceaccount:billing:another")[0]
    assert not _irsa(policy, "system:serviceaccount:payments:worker-sa")[0]


def test_string_like_question_mark_and_literal_bracket() -> None:
    policy = _irsa_policy("StringLike", "system:serviceaccount:billing:worker-?")
    assert _irsa(policy, "system:serviceaccount:billing:worker-1")[0]
    assert not _irsa(policy, "system:serviceaccount:billing:worker-10")[0]
    bracket = _irsa_policy("StringLike", "system:serviceaccount:billing:[ab]")
    assert not _irsa(bracket, "system:serviceaccount:billing:a")[0]
    assert _irsa(bracket, "system:serviceaccount:billing:[ab]")[0]


def test_string_equals_is_case_sensitive_ignore_case_is_not() -> None:
    sub = "system:serviceaccount:billing:worker-sa"
    assert not _irsa(_irsa_policy(sub=sub.upper()), sub)[0]
    assert _irsa(_irsa_policy("StringEqualsIgnoreCase", sub.upper()), sub)[0]


def test_condition_key_names_are_case_insensitive() -> None:
    policy = _irsa_policy()
    policy["Statement"][0]["Condition"] = {"StringEquals": {SUB.upper(): "system:serviceaccount:billing:worker-sa"}}
    assert _irsa(policy, "system:serviceaccount:billing:worker-sa")[0]


def test_missing_aud_condition_still_allows() -> None:
    policy = _irsa_policy()
    del policy["Statement"][0]["Condition"]["StringEquals"][AUD]
    assert _irsa(policy, "system:serviceaccount:billing:worker-sa", aud="anything")[0]
    assert _irsa(policy, "system:serviceaccount:billing:worker-sa", aud=None)[0]


def test_condition_on_key_absent_from_context_denies() -> None:
    policy = _irsa_policy()
    assert not _irsa(policy, "system:serviceaccount:billing:worker-sa", aud=None)[0]


def test_condition_value_list_matches_any() -> None:
    policy = _irsa_policy(sub=["system:serviceaccount:billing:a", "system:serviceaccount:billing:b"])
    assert _irsa(policy, "system:serviceaccount:billing:b")[0]
    assert not _irsa(policy, "system:serviceaccount:billing:c")[0]


# --- Pod Identity ----------------------------------------------------------------------------


def test_pod_identity_needs_assume_role_and_tag_session() -> None:
    assert _pods(_pod_identity_policy()) == (True, "allowed")


def test_pod_identity_without_tag_session_denied() -> None:
    allowed, reason = _pods(_pod_identity_policy("sts:AssumeRole"))
    assert not allowed
    assert reason == f"no statement allows {PODS} to perform sts:TagSession"
    # ... but enough when session tags are disabled on the association
    assert _pods(_pod_identity_policy("sts:AssumeRole"), actions=["sts:AssumeRole"])[0]


def test_action_wildcards_are_case_insensitive() -> None:
    assert _pods(_pod_identity_policy("STS:*"))[0]
    assert not _pods(_pod_identity_policy("s3:*"))[0]


def test_pod_identity_other_service_denied() -> None:
    allowed, reason = trust_allows(
        _pod_identity_policy(),
        principal_kind="Service",
        principal="ec2.amazonaws.com",
        actions=POD_IDENTITY,
        context={},
    )
    assert not allowed
    assert "ec2.amazonaws.com" in reason


def test_principal_star_and_kind_star() -> None:
    star = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:*"}]}
    assert _pods(star)[0]
    kind_star = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "*"}, "Action": "sts:*"}]}
    assert _pods(kind_star)[0]
    other_kind = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:*"}]}
    assert not _pods(other_kind)[0]


def test_single_statement_not_in_a_list() -> None:
    policy = {"Statement": {"Effect": "Allow", "Principal": {"Service": [PODS]}, "Action": POD_IDENTITY}}
    assert _pods(policy)[0]


def test_no_statements_denies() -> None:
    assert not _pods({"Version": "2012-10-17"})[0]
    assert not _pods({"Statement": []})[0]


# --- Deny, operators, IfExists, NotPrincipal -------------------------------------------------


def test_explicit_deny_wins_over_allow() -> None:
    policy = _pod_identity_policy()
    policy["Statement"].append(
        {
            "Sid": "NoTagging",
            "Effect": "Deny",
            "Principal": {"Service": PODS},
            "Action": "sts:TagSession",
        }
    )
    allowed, reason = _pods(policy)
    assert not allowed
    assert reason == "sts:TagSession explicitly denied by statement NoTagging"


def test_explicit_deny_without_sid_names_the_index() -> None:
    policy = _pod_identity_policy()
    policy["Statement"].insert(0, {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole"})
    assert _pods(policy) == (False, "sts:AssumeRole explicitly denied by statement 0")


def test_conditional_deny_applies_only_when_condition_holds() -> None:
    policy = _pod_identity_policy()
    policy["Statement"].append(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sts:*",
            "Condition": {"StringNotEquals": {"aws:SourceAccount": "111122223333"}},
        }
    )
    assert _pods(policy, **{"aws:SourceAccount": ["111122223333"]})[0]
    assert not _pods(policy, **{"aws:SourceAccount": ["999988887777"]})[0]


def test_unknown_condition_operator_denies() -> None:
    policy = _pod_identity_policy()
    policy["Statement"][0]["Condition"] = {"NumericAbout": {"aws:x": "5"}}  # no such operator
    allowed, reason = _pods(policy, **{"aws:x": ["1"]})
    assert not allowed
    assert reason.startswith("no statement allows")


def test_unknown_condition_operator_in_deny_does_not_fail_open() -> None:
    # An unevaluable condition can only deny: it lets a Deny apply.
    policy = _pod_identity_policy()
    policy["Statement"].append(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sts:*",
            "Condition": {"NumericAbout": {"aws:x": "5"}},  # no such operator,
        }
    )
    assert _pods(policy, **{"aws:x": ["1"]}) == (False, "sts:AssumeRole explicitly denied by statement 1")
    assert not _pods(policy)[0]  # even when the condition's key is absent


def test_if_exists_passes_when_key_absent_and_checks_when_present() -> None:
    policy = _pod_identity_policy()
    policy["Statement"][0]["Condition"] = {"StringEqualsIfExists": {"aws:RequestTag/kubernetes-namespace": "finance"}}
    assert _pods(policy)[0]
    assert _pods(policy, **{"aws:RequestTag/kubernetes-namespace": ["finance"]})[0]
    assert not _pods(policy, **{"aws:RequestTag/kubernetes-namespace": ["billing"]})[0]
    # without IfExists an absent key fails the condition
    policy["Statement"][0]["Condition"] = {"StringEquals": {"aws:RequestTag/kubernetes-namespace": "finance"}}
    assert not _pods(policy)[0]


def test_negated_operators() -> None:
    policy = _pod_identity_policy()
    policy["Statement"][0]["Condition"] = {
        "StringNotLike": {"aws:RequestTag/kubernetes-namespace": ["kube-*", "default"]}
    }
    assert _pods(policy, **{"aws:RequestTag/kubernetes-namespace": ["finance"]})[0]
    assert not _pods(policy, **{"aws:RequestTag/kubernetes-namespace": ["kube-system"]})[0]
    assert not _pods(policy, **{"aws:RequestTag/kubernetes-namespace": ["default"]})[0]
    # a negated operator on an absent key holds, as in IAM
    assert _pods(policy)[0]


def test_all_condition_operators_must_hold() -> None:
    policy = _pod_identity_policy()
    policy["Statement"][0]["Condition"] = {
        "StringEquals": {"aws:SourceAccount": "111122223333"},
        "StringLike": {"aws:RequestTag/kubernetes-namespace": "fin*"},
    }
    ok = {"aws:SourceAccount": ["111122223333"], "aws:RequestTag/kubernetes-namespace": ["finance"]}
    assert _pods(policy, **ok)[0]
    assert not _pods(policy, **{**ok, "aws:SourceAccount": ["999988887777"]})[0]


def test_not_principal_allows_everyone_else() -> None:
    policy = {
        "Statement": [{"Effect": "Allow", "NotPrincipal": {"Service": "ec2.amazonaws.com"}, "Action": POD_IDENTITY}]
    }
    assert _pods(policy)[0]
    allowed, _ = trust_allows(
        policy, principal_kind="Service", principal="ec2.amazonaws.com", actions=POD_IDENTITY, context={}
    )
    assert not allowed


def test_not_principal_deny_spares_the_named_principal() -> None:
    policy = _pod_identity_policy()
    policy["Statement"].append({"Effect": "Deny", "NotPrincipal": {"Service": PODS}, "Action": "sts:*"})
    assert _pods(policy)[0]
    allowed, reason = trust_allows(
        {"Statement": [*policy["Statement"], {"Effect": "Allow", "Principal": "*", "Action": "sts:*"}]},
        principal_kind="Service",
        principal="ec2.amazonaws.com",
        actions=["sts:AssumeRole"],
        context={},
    )
    assert not allowed
    assert reason == "sts:AssumeRole explicitly denied by statement 1"


def test_not_action() -> None:
    policy = {"Statement": [{"Effect": "Allow", "Principal": {"Service": PODS}, "NotAction": "sts:TagSession"}]}
    assert _pods(policy, actions=["sts:AssumeRole"])[0]
    assert not _pods(policy)[0]


def test_statement_without_principal_is_ignored() -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": "sts:*"}]}
    assert not _pods(policy)[0]


# --- the trust lint agrees with the evaluator on roles with several statements ----------------


def test_lint_admission_agrees_with_iam_evaluation_on_a_shared_role() -> None:
    """One statement per ServiceAccount: IAM admits each of them, so the lint must not say otherwise
    (it reports the sharing instead); a ServiceAccount no statement names is refused by both."""
    subjects = [("billing", "worker-sa"), ("billing", "report-sa"), ("ledger", "sync-sa"), ("ledger", "stranger-sa")]
    shared = {
        "Version": "2012-10-17",
        "Statement": [_irsa_policy(sub=f"system:serviceaccount:{ns}:{sa}")["Statement"][0] for ns, sa in subjects[:3]],
    }
    profile = Profile.model_validate(
        {
            "cluster": {"name": "c", "region": "eu-west-1", "accountId": "111122223333"},
            "probe": {"image": "probe:test"},
            "workloads": [
                {
                    "name": sa,
                    "namespace": ns,
                    "serviceAccount": sa,
                    "mechanism": "irsa",
                    "roleArn": "arn:aws:iam::111122223333:role/shared",
                }
                for ns, sa in subjects
            ],
        }
    )
    for w in profile.workloads:
        allowed, _ = _irsa(shared, f"system:serviceaccount:{w.namespace}:{w.service_account}")
        summaries = [f.summary for f in trust_findings(profile, w, shared, oidc_issuer=f"https://{ISSUER}")]
        refused = [s for s in summaries if "does not admit" in s]
        assert bool(refused) == (not allowed), (w.name, summaries)
        if allowed:
            assert len(summaries) == 1
            assert "sub admits other ServiceAccounts too" in summaries[0]
