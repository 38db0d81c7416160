"""pytest_eksid.checks.identity over the demo profile and hand-made probe identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.identity import caller_role, credential_provider, role_of
from pytest_eksid.probe import program
from pytest_eksid.profile import LoadedProfile, Profile, Workload, load_profile

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "111122223333"

PI_NEXT = (
    "aws eks list-pod-identity-associations --cluster-name demo --region eu-west-1 "
    "--namespace finance-demo --service-account invoice-exporter-aws-sa"
)
PI_SA = "kubectl -n finance-demo get sa invoice-exporter-aws-sa -o yaml"
IRSA_SA = "kubectl -n billing-demo get sa billing-worker-aws-sa -o yaml"
IRSA_ROLE = "aws iam get-role --role-name demo-billing-worker --query Role.AssumeRolePolicyDocument"


@pytest.fixture(scope="module")
def demo() -> LoadedProfile:
    return load_profile("demo", REPO_ROOT)


@pytest.fixture(scope="module")
def profile(demo: LoadedProfile) -> Profile:
    return demo.profile


@pytest.fixture(scope="module")
def exporter(profile: Profile) -> Workload:
    return profile.workload("invoice-exporter")


@pytest.fixture(scope="module")
def worker(profile: Profile) -> Workload:
    return profile.workload("billing-worker")


def session_arn(role: str, account: str = ACCOUNT, session: str = "botocore-session-1") -> str:
    return f"arn:aws:sts::{account}:assumed-role/{role}/{session}"


def seen(method: str | None, arn: str, account: str = ACCOUNT) -> dict[str, Any]:
    return {
        "method": method,
        "caller": {"arn": arn, "account": account, "user_id": "AROAEXAMPLE:botocore-session-1"},
        "error": None,
    }


def failed(method: str | None, error_type: str, code: str = "", message: str = "boom") -> dict[str, Any]:
    return {
        "method": method,
        "caller": None,
        "error": {"type": error_type, "code": code, "message": message, "http_status": None},
    }


def _finding(value: Finding | None) -> Finding:
    assert value is not None, "expected a finding"
    assert isinstance(value, Finding)
    return value


# --- caller_role ----------------------------------------------------------------------------


def test_role_of() -> None:
    assert role_of(session_arn("demo-reporting")) == (ACCOUNT, "demo-reporting")
    assert role_of("arn:aws-cn:sts::111122223333:assumed-role/r/s") == (ACCOUNT, "r")
    assert role_of(f"arn:aws:iam::{ACCOUNT}:user/alice") is None
    assert role_of(f"arn:aws:iam::{ACCOUNT}:role/demo-reporting") is None


def test_expected_role_passes(profile: Profile, exporter: Workload, worker: Workload) -> None:
    assert caller_role(profile, exporter, seen("container-role", session_arn("demo-invoice-exporter"))) is None
    assert (
        caller_role(profile, worker, seen("assume-role-with-web-identity", session_arn("demo-billing-worker"))) is None
    )


def test_wrong_role_bound_pod_identity(profile: Profile, exporter: Workload) -> None:
    arn = session_arn("demo-reporting")
    f = _finding(caller_role(profile, exporter, seen("container-role", arn)))
    assert f.check == "caller_role"
    assert f.expected == f"arn:aws:iam::{ACCOUNT}:role/demo-invoice-exporter"
    assert f.seen == arn
    assert f.likely == (
        "wrong role bound: the Pod Identity association points at role 'demo-reporting', not 'demo-invoice-exporter'"
    )
    assert f.next_steps == (PI_NEXT, PI_SA)
    message = f.message()
    assert message.splitlines()[0] == (
        "invoice-exporter (finance-demo/invoice-exporter-aws-sa, pod-identity): the caller is not the expected role"
    )
    assert f"  expected: arn:aws:iam::{ACCOUNT}:role/demo-invoice-exporter" in message
    assert f"  seen:     {arn}" in message
    assert "  likely:   wrong role bound" in message
    assert f"  next:     {PI_NEXT}" in message
    assert f"  next:     {PI_SA}" in message
    assert "  provider: container-role — EKS Pod Identity" in message


def test_wrong_role_bound_irsa(profile: Profile, worker: Workload) -> None:
    f = _finding(caller_role(profile, worker, seen("assume-role-with-web-identity", session_arn("demo-reporting"))))
    assert f.likely == (
        "wrong role bound: the eks.amazonaws.com/role-arn annotation points at role "
        "'demo-reporting', not 'demo-billing-worker'"
    )
    assert f.next_steps == (IRSA_SA, IRSA_ROLE)


@pytest.mark.parametrize("method", ["iam-role", "container-role"])
def test_node_role_means_imds(profile: Profile, exporter: Workload, method: str) -> None:
    # Recognised by the provider or, whatever the provider, by the cluster's nodeRoleArn.
    f = _finding(caller_role(profile, exporter, seen(method, session_arn("demo-node", session="i-0abc"))))
    assert f.likely == (
        "the pod fell through to the node's IMDS role: its own identity is missing and IMDS is reachable"
    )
    assert f.seen == session_arn("demo-node", session="i-0abc")


def test_iam_user_means_static_keys(profile: Profile, exporter: Workload) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/ci-deployer"
    f = _finding(caller_role(profile, exporter, seen("env", arn)))
    assert f.likely == "the caller is not a role session: static IAM user keys are in use"
    assert f.seen == arn
    assert f.details["provider"].startswith("env — static keys in the container's environment")


def test_other_non_role_caller(profile: Profile, exporter: Workload) -> None:
    f = _finding(caller_role(profile, exporter, seen("env", f"arn:aws:iam::{ACCOUNT}:root")))
    assert f.likely == "the caller is not an assumed role"


def test_same_role_name_other_account_explains_the_account(profile: Profile, exporter: Workload) -> None:
    arn = session_arn("demo-invoice-exporter", account="999988887777")
    f = _finding(caller_role(profile, exporter, seen("container-role", arn, account="999988887777")))
    assert "999988887777" in f.likely


def test_same_role_name_other_account_is_a_finding(profile: Profile, exporter: Workload) -> None:
    arn = session_arn("demo-invoice-exporter", account="999988887777")
    f = _finding(caller_role(profile, exporter, seen("container-role", arn, account="999988887777")))
    assert f.seen == arn


@pytest.mark.parametrize(
    ("workload", "error_type", "code", "likely"),
    [
        (
            "invoice-exporter",
            "NoCredentialsError",
            "",
            "no credentials injected: no Pod Identity association existed when the pod started "
            "(if it was created since: Failure Mode 7 — Association Eventual Consistency), "
            "or the webhook did not run; IMDS is blocked",
        ),
        (
            "billing-worker",
            "NoCredentialsError",
            "",
            "no credentials injected: the ServiceAccount lacks the eks.amazonaws.com/role-arn "
            "annotation (or the webhook did not run)",
        ),
        (
            "billing-worker",
            "ClientError",
            "InvalidIdentityToken",
            "IRSA token rejected: no IAM OIDC provider for the cluster's issuer, or a wrong audience",
        ),
        (
            "billing-worker",
            "ClientError",
            "AccessDenied",
            "Failure Mode 3 — Trust Policy Denied: the role's trust policy does not admit this ServiceAccount "
            "(sub/aud condition mismatch)",
        ),
        (
            "invoice-exporter",
            "CredentialRetrievalError",
            "",
            "the Pod Identity Agent did not serve credentials; see the probe output and the agent's log "
            "(kubectl -n kube-system logs ds/eks-pod-identity-agent)",
        ),
        ("billing-worker", "CredentialRetrievalError", "", "credential resolution failed; see the probe output"),
    ],
)
def test_no_identity_explanations(profile: Profile, workload: str, error_type: str, code: str, likely: str) -> None:
    w = profile.workload(workload)
    identity = failed(None, error_type, code, message="the reason")
    f = _finding(caller_role(profile, w, identity))
    assert f.summary.endswith(": the probe has no AWS identity")
    assert f.expected == w.role_arn
    assert f.seen == f"no AWS identity: {code or error_type}: the reason"
    assert f.likely == likely
    assert f.details["provider"] == "none resolved"


@pytest.mark.parametrize(
    ("message", "likely"),
    [
        (  # a message without the agent's format (an older probe): the text alone decides
            "Received non 200 response 403 from container metadata: AccessDeniedException",
            "Failure Mode 3 — Trust Policy Denied: EKS Auth was denied assuming the associated role",
        ),
        (
            "Received error when attempting to retrieve container metadata: Could not connect to the endpoint URL: "
            '"http://169.254.170.23/v1/credentials"',
            "Failure Mode 5 — Pod Identity Agent Missing: nothing answers",
        ),
    ],
)
def test_agent_errors_name_the_failure_mode(profile: Profile, exporter: Workload, message: str, likely: str) -> None:
    f = _finding(caller_role(profile, exporter, failed(None, "CredentialRetrievalError", message=message)))
    assert f.likely.startswith(likely)


def _agent_refused(status: int, body: str) -> dict[str, Any]:
    """The identity result of a probe whose container provider got ``status`` and ``body`` from the agent,
    the error described by the probe itself (botocore's message, then the probe's parse of it)."""
    from botocore.exceptions import CredentialRetrievalError

    message = f"Received non 200 response {status} from container metadata: {body}"
    return {
        "method": None,
        "caller": None,
        "error": program._error(CredentialRetrievalError(provider="container-role", error_msg=message)),
    }


TAG_SESSION_DENIED = (
    "[7e1c]: (AccessDeniedException): EKS Pod Identity cannot assume arn:aws:iam::111122223333:role/"
    "demo-invoice-exporter: no statement allows pods.eks.amazonaws.com to perform sts:TagSession, fault: client\n"
)


@pytest.mark.parametrize(
    ("status", "body", "likely"),
    [
        (
            400,
            TAG_SESSION_DENIED,
            "Failure Mode 3 — Trust Policy Denied: the role's trust policy lets pods.eks.amazonaws.com assume it "
            "but not sts:TagSession",
        ),
        (
            400,
            "[7e1c]: (AccessDeniedException): Unauthorized, fault: client\n",
            "Failure Mode 3 — Trust Policy Denied: EKS Auth was denied assuming the associated role "
            "(AccessDeniedException)",
        ),
        (
            404,
            "[7e1c]: (ResourceNotFoundException): No association, fault: client\n",
            "EKS Auth found no Pod Identity association for finance-demo/invoice-exporter-aws-sa",
        ),
        (400, "[7e1c]: (ExpiredTokenException): expired, fault: client\n", "EKS Auth rejected the pod's token"),
        (400, "Service account token cannot be parsed: token is malformed\n", "the agent itself rejected"),
        (
            403,
            "Access Denied. Called agent through invalid address, please use either [169.254.170.23 fd00:ec2::23] "
            "address not 10.0.0.1\n",
            "the agent refused the address it was called at",
        ),
        (429, "Too Many Requests\n", "throttled"),
        (500, "[7e1c]: (InternalServerException): boom, fault: server\n", "Failure Mode 5"),
    ],
)
def test_agent_refusals_are_diagnosed_by_the_eks_auth_code(
    profile: Profile, exporter: Workload, status: int, body: str, likely: str
) -> None:
    for check in (caller_role, credential_provider):
        f = _finding(check(profile, exporter, _agent_refused(status, body)))
        assert f.likely.startswith(likely), f.likely


def test_a_trust_denial_is_not_read_as_a_bad_token(profile: Profile, exporter: Workload) -> None:
    # EKS Auth's AccessDeniedException is a 400, the status of a token the agent cannot parse.
    f = _finding(caller_role(profile, exporter, _agent_refused(400, "[r]: (AccessDeniedException): no, fault: client")))
    assert "Failure Mode 3" in f.likely
    assert "token" not in f.likely


def test_no_identity_next_steps_name_the_workload(profile: Profile, worker: Workload) -> None:
    f = _finding(caller_role(profile, worker, failed(None, "NoCredentialsError")))
    assert f.next_steps == (IRSA_SA, IRSA_ROLE)


# --- credential_provider --------------------------------------------------------------------


def test_expected_provider_passes(profile: Profile, exporter: Workload, worker: Workload) -> None:
    assert credential_provider(profile, exporter, seen("container-role", session_arn("x"))) is None
    assert credential_provider(profile, worker, seen("assume-role-with-web-identity", session_arn("x"))) is None


def test_env_keys_win_over_pod_identity(profile: Profile, exporter: Workload) -> None:
    f = _finding(credential_provider(profile, exporter, seen("env", f"arn:aws:iam::{ACCOUNT}:user/ci")))
    assert f.check == "credential_provider"
    assert f.summary == (
        "invoice-exporter (finance-demo/invoice-exporter-aws-sa, pod-identity): "
        "credentials do not come from pod-identity"
    )
    assert f.expected == "container-role — EKS Pod Identity (the agent's credentials endpoint)"
    assert f.seen == "env"
    assert "AWS_ACCESS_KEY_ID" in f.likely
    assert f.next_steps == (PI_NEXT, PI_SA)


@pytest.mark.parametrize(
    ("method", "fragment"),
    [
        ("shared-credentials-file", "~/.aws/credentials"),
        ("config-file", "~/.aws/config"),
        ("iam-role", "IMDS"),
        ("container-role", "EKS Pod Identity"),
    ],
)
def test_irsa_served_by_another_provider(profile: Profile, worker: Workload, method: str, fragment: str) -> None:
    f = _finding(credential_provider(profile, worker, seen(method, session_arn("demo-billing-worker"))))
    assert f.expected.startswith("assume-role-with-web-identity — IRSA")
    assert f.seen == method
    assert fragment in f.likely
    assert f.next_steps == (IRSA_SA, IRSA_ROLE)


def test_unknown_provider(profile: Profile, exporter: Workload) -> None:
    f = _finding(credential_provider(profile, exporter, seen("sso", session_arn("x"))))
    assert f.seen == "sso"


def test_no_provider_resolved(profile: Profile, exporter: Workload) -> None:
    f = _finding(credential_provider(profile, exporter, failed(None, "NoCredentialsError")))
    assert f.seen == "no provider resolved"
    assert f.likely.startswith("no credentials injected: no Pod Identity association")


def test_right_provider_but_sts_call_failed(profile: Profile, worker: Workload) -> None:
    identity = failed("assume-role-with-web-identity", "ClientError", "AccessDenied", "Not authorized")
    f = _finding(credential_provider(profile, worker, identity))
    assert f.seen == "assume-role-with-web-identity, but the STS call failed: AccessDenied: Not authorized"
    assert f.summary.endswith("served credentials, but they do not work")
    assert f.likely.startswith("Failure Mode 3 — Trust Policy Denied: the role's trust policy does not admit")
