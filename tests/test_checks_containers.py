"""pytest_eksid.checks.containers.container_findings over hand-made container views (incontainer's shapes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.containers import (
    SKIP_CONTAINERS_ANNOTATION,
    container_findings,
    skip_note,
    skipped_containers,
)
from pytest_eksid.profile import Workload
from tests.helpers.profiles import unit_profile

ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/eks-prod-invoice-exporter"
IRSA_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/eks-prod-report-builder"
OTHER_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/demo-reporting"
POD = "invoice-exporter-7d9f8c6b5-x2k4q"
IRSA_POD = "report-builder-5c8d7f9b4-m7p2z"
CONTAINER = "app"

PROFILE = unit_profile(
    [
        {
            "name": "invoice-exporter",
            "namespace": "finance-prod",
            "serviceAccount": "invoice-exporter-aws-sa",
            "mechanism": "pod-identity",
            "roleArn": ROLE_ARN,
        },
        {
            "name": "report-builder",
            "namespace": "reporting-prod",
            "serviceAccount": "report-builder-aws-sa",
            "mechanism": "irsa",
            "roleArn": IRSA_ROLE_ARN,
        },
    ]
)
W: Workload = PROFILE.workload("invoice-exporter")
IRSA: Workload = PROFILE.workload("report-builder")

# What incontainer.inspect_container reports for a healthy container of each mechanism.
PI_VARIABLES = {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_REGION"}
PI_VALUES = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials"}
PI_FILES = {"aws_credentials_file": False, "web_identity_token_readable": False, "pod_identity_token_readable": True}
IRSA_VARIABLES = {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_REGION"}
IRSA_VALUES = {"AWS_ROLE_ARN": IRSA_ROLE_ARN}
IRSA_FILES = {"aws_credentials_file": False, "web_identity_token_readable": True, "pod_identity_token_readable": False}

# Fake secrets: a container view may hold values in memory, but a finding must never print them.
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
}

WHERE = f"invoice-exporter: container {CONTAINER} of running pod finance-prod/{POD}"
IRSA_WHERE = f"report-builder: container {CONTAINER} of running pod reporting-prod/{IRSA_POD}"
RESTART = "kubectl -n finance-prod rollout restart deployment/invoice-exporter"
IRSA_RESTART = "kubectl -n reporting-prod rollout restart deployment/report-builder"


def pod_identity(
    variables: set[str] = PI_VARIABLES,
    values: dict[str, str] = PI_VALUES,
    service_account: str | None = None,
    **files: bool,
) -> list[Finding]:
    """container_findings for the Pod Identity workload; ``files`` overrides the healthy answers."""
    return container_findings(
        PROFILE, W, POD, CONTAINER, set(variables), dict(values), {**PI_FILES, **files}, service_account
    )


def irsa(
    variables: set[str] = IRSA_VARIABLES,
    values: dict[str, str] = IRSA_VALUES,
    service_account: str | None = None,
    **files: bool,
) -> list[Finding]:
    """container_findings for the IRSA workload; ``files`` overrides the healthy answers."""
    return container_findings(
        PROFILE, IRSA, IRSA_POD, CONTAINER, set(variables), dict(values), {**IRSA_FILES, **files}, service_account
    )


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.summary for f in findings]
    return findings[0]


# --- clean containers ------------------------------------------------------------------------


def test_clean_pod_identity_container_passes() -> None:
    assert pod_identity() == []


def test_clean_irsa_container_passes() -> None:
    assert irsa() == []


@pytest.mark.parametrize("service_account", [None, "invoice-exporter-aws-sa"])
def test_clean_pod_identity_container_with_its_own_service_account_passes(service_account: str | None) -> None:
    assert pod_identity(service_account=service_account) == []


def test_clean_irsa_container_with_its_own_service_account_passes() -> None:
    assert irsa(service_account="report-builder-aws-sa") == []


def test_missing_file_answers_count_as_no() -> None:
    # A view without file answers (e.g. an older incontainer) reads as "not readable", never as healthy.
    findings = container_findings(PROFILE, W, POD, CONTAINER, set(PI_VARIABLES), dict(PI_VALUES), {})
    assert [f.summary for f in findings] == [f"{WHERE}: the Pod Identity token file is not readable"]


# --- static keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_each_static_key_variable_is_named(variable: str) -> None:
    f = only(pod_identity(variables=PI_VARIABLES | {variable}, values={**PI_VALUES, variable: SECRET_VALUES[variable]}))
    assert f.check == "static_credentials"
    assert f.summary == f"{WHERE}: static AWS keys in the environment"
    assert f.expected == (
        "no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN "
        "(the SDK would use them before workload identity)"
    )
    assert f.seen == f"{variable} set"
    assert f.likely == "static keys in the container's environment win over workload identity (Failure Mode 4)"
    assert f.next_steps == (f"kubectl -n finance-prod get pod {POD} -o jsonpath='{{.spec.containers[*].env[*].name}}'",)
    assert f.details == {}
    assert SECRET_VALUES[variable] not in f.message()


def test_all_static_keys_are_named_in_order_in_one_finding() -> None:
    findings = irsa(variables=IRSA_VARIABLES | set(SECRET_VALUES), values={**IRSA_VALUES, **SECRET_VALUES})
    f = only(findings)
    assert f.summary == f"{IRSA_WHERE}: static AWS keys in the environment"
    assert f.seen == "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN set"
    assert f.next_steps == (
        f"kubectl -n reporting-prod get pod {IRSA_POD} -o jsonpath='{{.spec.containers[*].env[*].name}}'",
    )


def test_static_key_values_never_appear_in_any_finding() -> None:
    # Every finding at once: static keys, a credentials file, and no identity injected.
    findings = pod_identity(
        variables={"AWS_REGION", *SECRET_VALUES},
        values=dict(SECRET_VALUES),
        aws_credentials_file=True,
    )
    assert [f.check for f in findings] == ["static_credentials", "static_credentials", "identity"]
    for f in findings:
        for secret in SECRET_VALUES.values():
            assert secret not in f.message()
            assert secret not in repr(f)


def test_other_aws_variables_are_not_static_keys() -> None:
    variables = PI_VARIABLES | {"AWS_PROFILE", "AWS_ACCESS_KEY_ID_FILE", "AWS_DEFAULT_REGION"}
    assert pod_identity(variables=variables) == []


# --- ~/.aws/credentials ------------------------------------------------------------------------


def test_credentials_file_pod_identity() -> None:
    f = only(pod_identity(aws_credentials_file=True))
    assert f.check == "static_credentials"
    assert f.summary == f"{WHERE}: ~/.aws/credentials exists"
    assert f.expected == "no shared credentials file in the container"
    assert f.seen == "present"
    assert f.likely == "a credentials file in the image or a mounted Secret wins over workload identity"
    assert f.next_steps == (f"kubectl -n finance-prod exec {POD} -c {CONTAINER} -- ls -l ~/.aws",)


def test_credentials_file_irsa() -> None:
    f = only(irsa(aws_credentials_file=True))
    assert f.summary == f"{IRSA_WHERE}: ~/.aws/credentials exists"
    assert f.next_steps == (f"kubectl -n reporting-prod exec {IRSA_POD} -c {CONTAINER} -- ls -l ~/.aws",)


def test_static_keys_and_credentials_file_are_two_findings() -> None:
    findings = pod_identity(variables=PI_VARIABLES | {"AWS_ACCESS_KEY_ID"}, aws_credentials_file=True)
    assert [f.summary for f in findings] == [
        f"{WHERE}: static AWS keys in the environment",
        f"{WHERE}: ~/.aws/credentials exists",
    ]


# --- Pod Identity ------------------------------------------------------------------------------

PI_NOT_INJECTED = f"{WHERE}: no Pod Identity credentials injected"


def test_pod_identity_not_injected_points_at_failure_mode_7() -> None:
    f = only(pod_identity(variables={"AWS_REGION"}, values={}))
    assert f.check == "identity"
    assert f.summary == PI_NOT_INJECTED
    assert f.expected == "AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    assert f.seen == "not set"
    assert f.likely == (
        "association created after the pod started (Failure Mode 7), or the webhook did not run: "
        "the pod has no identity until it is restarted"
    )
    assert f.next_steps == (RESTART,)
    assert f.details == {}
    assert f"  next:     {RESTART}" in f.message()


def test_pod_identity_not_injected_under_the_default_service_account() -> None:
    f = only(pod_identity(variables={"AWS_REGION"}, values={}, service_account="default"))
    assert f.summary == PI_NOT_INJECTED
    assert f.seen == "not set"
    assert f.likely == (
        "Failure Mode 1 — Pod Uses default ServiceAccount: the pod runs as ServiceAccount 'default', not "
        "'invoice-exporter-aws-sa', which is the one bound: set serviceAccountName: invoice-exporter-aws-sa "
        "in the pod template"
    )
    assert "Failure Mode 7" not in f.likely
    # A restart would change nothing: the next step shows what the pod runs as.
    assert f.next_steps == (f"kubectl -n finance-prod get pod {POD} -o jsonpath='{{.spec.serviceAccountName}}'",)


def test_pod_identity_not_injected_under_another_named_service_account() -> None:
    f = only(pod_identity(variables={"AWS_REGION"}, values={}, service_account="legacy-exporter"))
    assert f.likely.startswith("the pod runs as ServiceAccount 'legacy-exporter', not 'invoice-exporter-aws-sa'")
    assert "Failure Mode 1" not in f.likely  # that one is about 'default' only


def test_pod_identity_token_file_variable_alone_is_not_injected() -> None:
    # Only the credentials URI makes the SDK use the agent: the token file without it is no identity.
    f = only(pod_identity(variables={"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"}, values={}))
    assert f.summary == PI_NOT_INJECTED


def test_pod_identity_injected_under_another_service_account_is_not_this_checks_concern() -> None:
    # The other ServiceAccount is bound too: the caller-role check says whose role it is.
    assert pod_identity(service_account="default") == []


def test_pod_identity_token_unreadable() -> None:
    f = only(pod_identity(pod_identity_token_readable=False))
    assert f.check == "identity"
    assert f.summary == f"{WHERE}: the Pod Identity token file is not readable"
    assert f.expected == "a readable eks-pod-identity-token"
    assert f.seen == "missing or unreadable"
    assert f.likely == "the container's user cannot read the projected token (fsGroup / runAsUser)"
    assert f.next_steps == (f"kubectl -n finance-prod get pod {POD} -o yaml",)


def test_pod_identity_ignores_irsa_answers() -> None:
    # A Pod Identity workload is not judged on AWS_ROLE_ARN or the web identity token.
    values = {**PI_VALUES, "AWS_ROLE_ARN": OTHER_ROLE_ARN}
    assert pod_identity(values=values, web_identity_token_readable=False) == []


# --- IRSA --------------------------------------------------------------------------------------

IRSA_NOT_INJECTED = f"{IRSA_WHERE}: IRSA not injected as expected"
IRSA_LIKELY = "the annotation changed after the pod started, or the webhook did not run: restart the pods"


def test_irsa_role_arn_missing() -> None:
    f = only(irsa(variables={"AWS_REGION"}, values={}))
    assert f.check == "identity"
    assert f.summary == IRSA_NOT_INJECTED
    assert f.expected == f"AWS_ROLE_ARN={IRSA_ROLE_ARN}"
    assert f.seen == "AWS_ROLE_ARN not set"
    assert f.likely == IRSA_LIKELY
    assert f.next_steps == (IRSA_RESTART,)


def test_irsa_role_arn_empty_is_not_set() -> None:
    f = only(irsa(values={"AWS_ROLE_ARN": ""}))
    assert f.seen == "AWS_ROLE_ARN not set"


def test_irsa_role_arn_of_another_role_names_it() -> None:
    f = only(irsa(values={"AWS_ROLE_ARN": OTHER_ROLE_ARN}))
    assert f.summary == IRSA_NOT_INJECTED
    assert f.expected == f"AWS_ROLE_ARN={IRSA_ROLE_ARN}"
    assert f.seen == f"AWS_ROLE_ARN={OTHER_ROLE_ARN}"
    assert f.likely == IRSA_LIKELY
    assert f.next_steps == (IRSA_RESTART,)


def test_irsa_not_injected_under_the_default_service_account() -> None:
    f = only(irsa(variables={"AWS_REGION"}, values={}, service_account="default"))
    assert f.summary == IRSA_NOT_INJECTED
    assert f.seen == "AWS_ROLE_ARN not set"
    assert f.likely == (
        "Failure Mode 1 — Pod Uses default ServiceAccount: the pod runs as ServiceAccount 'default', not "
        "'report-builder-aws-sa', which is the one bound: set serviceAccountName: report-builder-aws-sa "
        "in the pod template"
    )
    assert f.next_steps == (f"kubectl -n reporting-prod get pod {IRSA_POD} -o jsonpath='{{.spec.serviceAccountName}}'",)


def test_irsa_web_identity_token_unreadable() -> None:
    f = only(irsa(web_identity_token_readable=False))
    assert f.check == "identity"
    assert f.summary == f"{IRSA_WHERE}: the web identity token file is not readable"
    assert f.expected == "a readable token at AWS_WEB_IDENTITY_TOKEN_FILE"
    assert f.seen == "missing or unreadable"
    assert f.likely == "the container's user cannot read the projected token (fsGroup / runAsUser)"
    assert f.next_steps == (f"kubectl -n reporting-prod get pod {IRSA_POD} -o yaml",)


def test_irsa_wrong_role_is_reported_before_the_token() -> None:
    # One identity finding per container: the wrong role, not also the token behind it.
    f = only(irsa(values={"AWS_ROLE_ARN": OTHER_ROLE_ARN}, web_identity_token_readable=False))
    assert f.summary == IRSA_NOT_INJECTED


def test_irsa_ignores_pod_identity_answers() -> None:
    assert irsa(pod_identity_token_readable=False) == []


# --- the workload's own ServiceAccount changes nothing ----------------------------------------


@pytest.mark.parametrize(
    ("run", "service_account", "kwargs"),
    [
        pytest.param(pod_identity, "invoice-exporter-aws-sa", {"variables": {"AWS_REGION"}, "values": {}}, id="pi"),
        pytest.param(pod_identity, "invoice-exporter-aws-sa", {"pod_identity_token_readable": False}, id="pi-token"),
        pytest.param(irsa, "report-builder-aws-sa", {"variables": {"AWS_REGION"}, "values": {}}, id="irsa"),
        pytest.param(irsa, "report-builder-aws-sa", {"values": {"AWS_ROLE_ARN": OTHER_ROLE_ARN}}, id="irsa-other"),
        pytest.param(irsa, "report-builder-aws-sa", {"aws_credentials_file": True}, id="irsa-file"),
    ],
)
def test_the_workloads_own_service_account_changes_nothing(
    run: Callable[..., list[Finding]], service_account: str, kwargs: dict[str, Any]
) -> None:
    without = run(**kwargs)
    assert without, "the case must produce a finding"
    assert run(service_account=service_account, **kwargs) == without


def test_another_service_account_changes_only_likely_and_next() -> None:
    unknown = only(pod_identity(variables={"AWS_REGION"}, values={}))
    other = only(pod_identity(variables={"AWS_REGION"}, values={}, service_account="default"))
    assert (other.check, other.summary, other.expected, other.seen) == (
        unknown.check,
        unknown.summary,
        unknown.expected,
        unknown.seen,
    )
    assert other.likely != unknown.likely
    assert other.next_steps != unknown.next_steps


# --- containers named in eks.amazonaws.com/skip-containers ---------------------------------------

SIDECAR = "log-shipper"
SIDECAR_WHERE = f"invoice-exporter: container {SIDECAR} of running pod finance-prod/{POD}"


def skipped(w: Workload, variables: set[str], **files: bool) -> list[Finding]:
    """container_findings for a sidecar the pod's skip-containers annotation names."""
    base = PI_FILES if w.mechanism == "pod-identity" else IRSA_FILES
    return container_findings(
        PROFILE, w, POD, SIDECAR, set(variables), {}, {**base, **files}, w.service_account, skipped=True
    )


@pytest.mark.parametrize("w", [W, IRSA], ids=["pod-identity", "irsa"])
@pytest.mark.parametrize(
    "files",
    [{}, {"pod_identity_token_readable": False, "web_identity_token_readable": False}],
    ids=["tokens-readable", "no-tokens"],
)
def test_skipped_container_without_identity_is_not_a_finding(w: Workload, files: dict[str, bool]) -> None:
    # The webhook leaves it without identity on purpose: never "not injected, restart the pods".
    assert skipped(w, {"AWS_REGION"}, **files) == []


@pytest.mark.parametrize("w", [W, IRSA], ids=["pod-identity", "irsa"])
def test_skipped_container_with_its_own_role_is_not_checked_for_identity(w: Workload) -> None:
    # A sidecar that brings its own IRSA variables (another role, another token path) is its business.
    values = {"AWS_ROLE_ARN": OTHER_ROLE_ARN}
    found = container_findings(
        PROFILE, w, POD, SIDECAR, {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"}, values, {}, skipped=True
    )
    assert found == []


@pytest.mark.parametrize("w", [W, IRSA], ids=["pod-identity", "irsa"])
def test_skipped_container_is_still_scanned_for_static_keys(w: Workload) -> None:
    found = skipped(w, {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, aws_credentials_file=True)
    assert [f.check for f in found] == ["static_credentials", "static_credentials"]
    assert found[0].seen == "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY set"
    assert found[1].summary.endswith("~/.aws/credentials exists")
    assert not any("restart" in f.likely or "rollout restart" in " ".join(f.next_steps) for f in found)


def test_skip_note_says_skipped_by_design() -> None:
    note = skip_note(W, POD, SIDECAR, {"AWS_REGION"})
    assert note == (
        f"{SIDECAR_WHERE}: skipped by design (eks.amazonaws.com/skip-containers): the webhook leaves it "
        "without identity; its identity is not checked, its static keys are"
    )


def test_skip_note_names_identity_variables_found_all_the_same() -> None:
    note = skip_note(IRSA, POD, SIDECAR, {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION"})
    assert "it has AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE all the same" in note
    assert "a blank after a comma defeats the skip" in note


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("log-shipper", {"log-shipper"}),
        ("log-shipper,istio-init", {"log-shipper", "istio-init"}),
        (" log-shipper , istio-init ", {"log-shipper", "istio-init"}),
        ('"log-shipper",istio-init', {"log-shipper", "istio-init"}),
        ("log-shipper,,", {"log-shipper"}),
        (",", set()),
        ("", set()),
        ("   ", set()),
        ("Bad_Name,log-shipper", {"log-shipper"}),
        ("\x1b[31mred,log-shipper", {"log-shipper"}),
        ("a" * 64, set()),
        ("a" * 63, {"a" * 63}),
    ],
    ids=[
        "one",
        "two",
        "blanks-trimmed",
        "csv-quotes",
        "empties-ignored",
        "only-comma",
        "empty",
        "blank",
        "not-a-container-name-dropped",
        "terminal-escape-dropped",
        "too-long-for-a-name",
        "longest-name",
    ],
)
def test_skipped_containers_parses_the_csv_defensively(value: str, names: set[str]) -> None:
    assert skipped_containers({SKIP_CONTAINERS_ANNOTATION: value}) == names


@pytest.mark.parametrize("annotations", [None, {}, {"other": "log-shipper"}, {SKIP_CONTAINERS_ANNOTATION: 7}])
def test_skipped_containers_without_a_usable_annotation(annotations: dict[str, Any] | None) -> None:
    assert skipped_containers(annotations) == frozenset()


def test_skipped_containers_is_bounded() -> None:
    many = ",".join(f"c{i}" for i in range(10_000))
    names = skipped_containers({SKIP_CONTAINERS_ANNOTATION: many})
    assert len(names) == 64
    assert "c0" in names
    # Only the first 4096 characters are read: a name beyond them is not seen.
    assert skipped_containers({SKIP_CONTAINERS_ANNOTATION: "," * 5000 + "log-shipper"}) == frozenset()


class _ScriptedHost:
    """testinfra's host for ``kubectl://``, answering each run() from a script: (rc, stdout, stderr)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.commands = []

    def run(self, command):
        from types import SimpleNamespace

        self.commands.append(command)
        rc, stdout, stderr = self.answers.pop(0)
        return SimpleNamespace(rc=rc, stdout=stdout, stderr=stderr)


def _inspect_with(monkeypatch, host):
    from pytest_eksid import incontainer

    monkeypatch.setattr(incontainer, "ensure_kubectl", lambda: None)
    monkeypatch.setattr(incontainer.testinfra, "get_host", lambda *_a, **_k: host)
    return incontainer.inspect_container("p", "ns", "app", kubeconfig=None, context=None)


def test_an_exec_whose_frames_kubectl_dropped_is_made_again(monkeypatch):
    """kubectl before 1.34 drops the answer's first frames when they come before it has made its streams
    (kubernetes/kubernetes#131189): the output is lost, even with exit 0. Such a run is made again."""
    from pytest_eksid.incontainer import FILE_TESTS

    inventory = "AWS_ROLE_ARN\n" + "".join(f"eksid-file {key} 0\n" for key in FILE_TESTS)
    dropped = "E1208 websocket.go:297] Unknown stream id 1, discarding message\n"
    host = _ScriptedHost(
        [
            (1, "", dropped * 3),  # the inventory lost, with its exit status
            (0, inventory, ""),
            (0, "", dropped),  # the value lost, exit 0: not "unset"
            (0, "arn:aws:iam::111122223333:role/demo", ""),
        ]
    )
    view = _inspect_with(monkeypatch, host)
    assert view.variables == {"AWS_ROLE_ARN"}
    assert view.values == {"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/demo"}
    assert len(host.commands) == 4


def test_an_exec_that_keeps_losing_its_answer_fails_naming_the_kubectl_bug(monkeypatch):
    from pytest_eksid.incontainer import EXEC_ATTEMPTS, InspectError

    dropped = (0, "", "Unknown stream id 1, discarding message\n")
    with pytest.raises(InspectError, match=r"ns/p \(app\) lost the answer 3 times .*#131189.*kubectl 1\.34"):
        _inspect_with(monkeypatch, _ScriptedHost([dropped] * EXEC_ATTEMPTS))


def test_a_failed_exec_names_its_stderr_escaped(monkeypatch):
    """The exec's stderr is the container's own (its shell's, or whatever the image put there): a failure quotes
    it with its control characters escaped, so it cannot drive the terminal that shows the report."""
    from pytest_eksid.incontainer import InspectError

    hostile = (126, "", "sh: not found\x1b]0;owned\x07\x1b[2J\r\n")
    with pytest.raises(InspectError) as failed:
        _inspect_with(monkeypatch, _ScriptedHost([hostile]))
    message = str(failed.value)
    assert "exit 126: sh: not found" in message
    assert not any(c in message for c in "\x1b\x07\r"), repr(message)
