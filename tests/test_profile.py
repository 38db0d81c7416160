"""Profiles: loading, path resolution and the error messages a profile author sees.

The unit tests call :func:`load_profile` directly; the pytester tests run pytest in a
subprocess, as a user would, and check that every bad profile ends in a clean usage error
(``ERROR: ...``, exit code 4) rather than a traceback or an INTERNALERROR.
"""

from __future__ import annotations

import random
import re
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_eksid import profile as core
from pytest_eksid.profile import LoadedProfile, ProfileError, resolve_profile_path
from pytest_eksid.sandbox.model import section
from tests.helpers.runs import pytester_run

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]

# A live-cluster profile (no sandbox section). Line numbers matter to the tests below:
# _line() finds them, so edits here only need to keep the needles unique.
LIVE = textwrap.dedent(
    """\
    cluster:
      name: live
      region: eu-west-1
      accountId: "111122223333"
      kubeconfig: does-not-exist.kubeconfig
      kubeContext: no-such-context
    probe:
      image: registry.example.com/eksid-probe:1
    workloads:
      - name: app
        namespace: team-a
        serviceAccount: app-sa
        mechanism: irsa
        roleArn: arn:aws:iam::111122223333:role/app
      - name: exporter
        namespace: team-b
        serviceAccount: exporter-sa
        mechanism: pod-identity
        roleArn: arn:aws:iam::111122223333:role/exporter
    """
)

SANDBOX = textwrap.dedent(
    """\
    sandbox:
      roles:
        - name: app
          policy: {Version: "2012-10-17", Statement: []}
        - name: exporter
          policy: {Version: "2012-10-17", Statement: []}
        - name: reporting
          policy: {Version: "2012-10-17", Statement: []}
      faults: []
    """
)


def load_profile(spec: str, rootdir: Path) -> LoadedProfile:
    """As a run loads a profile: the core's model, then the ``sandbox:`` section by the sandbox's own model
    (its provider plugin does the same at configure time)."""
    loaded = core.load_profile(spec, rootdir)
    if loaded.profile.sandbox is not None:
        section(loaded)
    return loaded


def _line(text: str, needle: str) -> int:
    """1-based number of the only line of ``text`` that contains ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def _write(root: Path, text: str, name: str = "bad") -> Path:
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    path = root / "profiles" / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(root: Path, text: str, name: str = "bad") -> tuple[Path, str]:
    path = _write(root, text, name)
    with pytest.raises(ProfileError) as excinfo:
        load_profile(name, root)
    return path, str(excinfo.value)


# --- the shipped profile and path resolution -------------------------------------------------


def test_demo_profile_loads() -> None:
    loaded = load_profile("demo", REPO_ROOT)
    assert loaded.name == "demo"
    assert loaded.path == REPO_ROOT / "profiles" / "demo.yaml"
    profile = loaded.profile
    assert profile.cluster.name == "demo"
    assert profile.cluster.account_id == "111122223333"
    assert len(profile.workloads) == 2
    assert sorted(w.mechanism for w in profile.workloads) == ["irsa", "pod-identity"]
    assert profile.workload("invoice-exporter").mechanism == "pod-identity"
    assert profile.workload("billing-worker").mechanism == "irsa"
    assert {r.name for r in section(loaded).roles} >= {"demo-invoice-exporter", "demo-billing-worker"}


def test_live_profile_loads_with_camel_case_keys(tmp_path: Path) -> None:
    _write(tmp_path, LIVE, "live")
    loaded = load_profile("live", tmp_path)
    assert loaded.profile.sandbox is None
    assert loaded.profile.cluster.kube_context == "no-such-context"
    assert loaded.profile.workload("exporter").service_account == "exporter-sa"
    assert loaded.profile.probe.timeout_seconds == 120  # the default


def test_name_resolves_under_rootdir_profiles(tmp_path: Path) -> None:
    path = _write(tmp_path, LIVE, "staging")
    assert resolve_profile_path("staging", tmp_path) == path


def test_relative_yaml_path_resolves_against_rootdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tmp_path / "custom").mkdir()
    target = tmp_path / "custom" / "mine.yaml"
    target.write_text(LIVE, encoding="utf-8")
    assert resolve_profile_path("custom/mine.yaml", tmp_path) == target
    assert resolve_profile_path(str(target), tmp_path / "unrelated") == target


def test_missing_profile_names_path_and_known_profiles(tmp_path: Path) -> None:
    _write(tmp_path, LIVE, "prod")
    _write(tmp_path, LIVE, "dev")
    with pytest.raises(ProfileError) as excinfo:
        load_profile("nope", tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path / "profiles" / "nope.yaml") in message
    assert "'nope'" in message
    assert "known profiles: dev, prod" in message


def test_missing_profile_without_profiles_dir(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no profiles under") as excinfo:
        resolve_profile_path("missing.yaml", tmp_path)
    assert str(tmp_path / "missing.yaml") in str(excinfo.value)


# --- error messages ------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = LIVE.replace("probe:\n", "probe:\n  tolerations: [unclosed\n")
    path, message = _error(tmp_path, text)
    assert "YAML syntax error" in message
    # The parser notices the unclosed flow sequence on the line after it.
    assert message.startswith(f"{path}:{_line(text, 'image:')}: YAML syntax error")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path, message = _error(tmp_path, "- just\n- a list\n")
    assert message == f"{path}: a profile is a YAML mapping with 'cluster' and 'workloads' keys"


def test_empty_file_is_not_a_profile(tmp_path: Path) -> None:
    _, message = _error(tmp_path, "")
    assert "a profile is a YAML mapping" in message


def test_unknown_key_names_line_field_and_allowed_keys(tmp_path: Path) -> None:
    text = LIVE.replace("  name: live", "  nmae: live")
    path, message = _error(tmp_path, text)
    line = _line(text, "nmae")
    assert f"{path}:{line}: cluster.nmae: unknown key 'nmae'" in message
    assert (
        "allowed here: accountId, awsProfile, kubeContext, kubeconfig, name, nodeRoleArn, ownerLabel, region" in message
    )
    # the missing 'name' is reported too
    assert "cluster.name: required field is missing" in message


def test_unknown_key_inside_a_workload(tmp_path: Path) -> None:
    text = LIVE.replace("    mechanism: irsa", "    mechansim: irsa")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'mechansim')}: workloads[0].mechansim: unknown key" in message
    assert (
        "allowed here: allow, deny, deployers, legacyIamUser, mechanism, migration, name, namespace, owner, probe, "
        "roleArn, selector, serviceAccount, targetRoleArn, trustSharedWith" in message
    )


def test_unquoted_account_id_says_to_quote_it(tmp_path: Path) -> None:
    text = LIVE.replace('accountId: "111122223333"', "accountId: 111122223333")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'accountId')}: cluster.accountId: expected a string" in message
    assert 'quote it in YAML, e.g. "111122223333"' in message
    assert "(1 problem)" in message


def test_malformed_role_arn_names_field_and_line(tmp_path: Path) -> None:
    text = LIVE.replace("role/app", "user/app")
    path, message = _error(tmp_path, text)
    line = _line(text, "user/app")
    assert f"{path}:{line}: workloads[0].roleArn: not an IAM role ARN" in message
    assert "arn:aws:iam::111122223333:user/app" in message
    assert "expected arn:aws:iam::<12-digit account>:role/<name>" in message


def test_bad_mechanism_lists_the_choices(tmp_path: Path) -> None:
    text = LIVE.replace("mechanism: pod-identity", "mechanism: kiam")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'kiam')}: workloads[1].mechanism:" in message
    assert "'pod-identity'" in message
    assert "'irsa'" in message
    assert "(got 'kiam')" in message


def test_bad_region_and_account_values(tmp_path: Path) -> None:
    text = LIVE.replace("eu-west-1", "Europe").replace('"111122223333"', '"1234"')
    _, message = _error(tmp_path, text)
    assert "(2 problems)" in message
    assert "cluster.region: not an AWS region name: 'Europe'" in message
    assert "cluster.accountId: not a 12-digit AWS account id: '1234'" in message


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "image: registry.example.com/eksid-probe:1",
            "image: registry.example.com/eksid-probe:1\n  timeoutSeconds: two minutes",
            "probe.timeoutSeconds: expected a whole number, got 'two minutes'",
        ),
        (
            "image: registry.example.com/eksid-probe:1",
            "image: registry.example.com/eksid-probe:1\n  timeoutSeconds: 1",
            "probe.timeoutSeconds: Input should be greater than or equal to 5, got 1",
        ),
        (
            "image: registry.example.com/eksid-probe:1",
            "image: registry.example.com/eksid-probe:1\n  nodeGroups: ng-general",
            "probe.nodeGroups: expected a list, got 'ng-general': write [a, b], or one '- item' per line below the key",
        ),
        (
            "image: registry.example.com/eksid-probe:1",
            "image: registry.example.com/eksid-probe:1\n  nodeSelector: [ng-general]",
            "probe.nodeSelector: expected a mapping (key: value lines below the key), got ['ng-general']",
        ),
        (
            "roleArn: arn:aws:iam::111122223333:role/app",
            "roleArn: arn:aws:iam::111122223333:role/app\n    allow: [{action: s3:GetObject, "
            "resource: 'arn:aws:s3:::b/k', live: perhaps}]",
            "workloads[0].allow[0].live: expected true or false, got 'perhaps'",
        ),
    ],
)
def test_wrong_types_show_the_value_and_the_expected_form(tmp_path: Path, old: str, new: str, message: str) -> None:
    path, err = _error(tmp_path, LIVE.replace(old, new, 1))
    assert re.search(rf"{re.escape(str(path))}:\d+: {re.escape(message)}$", err, re.MULTILINE), err


def test_duplicate_workload_names_point_at_the_second_entry(tmp_path: Path) -> None:
    text = LIVE.replace("name: exporter", "name: app")
    path, message = _error(tmp_path, text)
    second = _line(text, "serviceAccount: exporter-sa") - 2
    assert (
        f"{path}:{second}: workloads[1].name: workload name 'app' is used twice (also workloads[0]); "
        "names must be unique"
    ) in message


def test_workloads_must_not_be_empty(tmp_path: Path) -> None:
    text = LIVE[: LIVE.index("workloads:")] + "workloads: []\n"
    _, message = _error(tmp_path, text)
    assert "workloads:" in message
    assert "at least 1 item" in message


# --- trustSharedWith -------------------------------------------------------------------------

IRSA_ROLE = "roleArn: arn:aws:iam::111122223333:role/app"
PI_ROLE = "roleArn: arn:aws:iam::111122223333:role/exporter"


def _shares(role_line: str, entries: str, text: str = LIVE) -> str:
    """``text`` with ``trustSharedWith`` (YAML flow entries, one per line) on the workload of ``role_line``."""
    block = "".join(f"\n      - {e}" for e in entries.splitlines())
    return text.replace(role_line, f"{role_line}\n    trustSharedWith:{block}", 1)


def test_trust_shared_with_loads(tmp_path: Path) -> None:
    text = _shares(IRSA_ROLE, "{namespace: team-b, serviceAccount: batch-sa, reason: one role for the batch jobs}")
    text = _shares(
        PI_ROLE,
        "{cluster: prod-b, reason: blue/green}\n"
        "{cluster: 'arn:aws:eks:eu-west-1:111122223333:cluster/prod-c', namespace: team-c, serviceAccount: x, "
        "reason: DR}",
        text,
    )
    _write(tmp_path, text, "shares")
    profile = load_profile("shares", tmp_path).profile
    app, exporter = profile.workload("app"), profile.workload("exporter")
    assert [(s.namespace, s.service_account, s.reason) for s in app.trust_shared_with] == [
        ("team-b", "batch-sa", "one role for the batch jobs")
    ]
    assert [s.cluster for s in exporter.trust_shared_with] == [
        "prod-b",
        "arn:aws:eks:eu-west-1:111122223333:cluster/prod-c",
    ]
    issuer = _shares(IRSA_ROLE, "{oidcIssuer: 'https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123', reason: DR}")
    _write(tmp_path, issuer, "issuer")
    (share,) = load_profile("issuer", tmp_path).profile.workload("app").trust_shared_with
    assert share.oidc_issuer == "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123"


@pytest.mark.parametrize(
    ("role_line", "entries", "message"),
    [
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, reason: x}",
            "workloads[0].trustSharedWith[0]: namespace and serviceAccount go together",
            id="namespace-alone",
        ),
        pytest.param(
            IRSA_ROLE, "{reason: x}", "workloads[0].trustSharedWith[0]: name what else the trust admits", id="nothing"
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: b}",
            "workloads[0].trustSharedWith[0].reason: required field is missing",
            id="no-reason",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: b, reason: ''}",
            "trustSharedWith[0].reason: expected a one-line reason in printable ASCII",
            id="empty-reason",
        ),
        pytest.param(
            IRSA_ROLE,
            '{namespace: team-b, serviceAccount: b, reason: "shared\\nsecond line"}',
            "trustSharedWith[0].reason: expected a one-line reason in printable ASCII",
            id="multi-line-reason",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: b, reason: ré}",
            "trustSharedWith[0].reason: expected a one-line reason in printable ASCII",
            id="non-ascii-reason",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: Team_B, serviceAccount: b, reason: x}",
            "trustSharedWith[0].namespace: not a Kubernetes name",
            id="bad-namespace",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: '*', reason: x}",
            "trustSharedWith[0].serviceAccount: not a Kubernetes name",
            id="wildcard-service-account",
        ),
        pytest.param(
            IRSA_ROLE,
            "{oidcIssuer: 'http://oidc.example.com/id/1', reason: x}",
            "trustSharedWith[0].oidcIssuer: not an OIDC issuer URL",
            id="issuer-not-https",
        ),
        pytest.param(
            IRSA_ROLE,
            '{oidcIssuer: "https://oidc.example.com/id/1\\n", reason: x}',
            "trustSharedWith[0].oidcIssuer: not an OIDC issuer URL",
            id="issuer-trailing-newline",
        ),
        pytest.param(
            PI_ROLE,
            "{cluster: 'prod b', reason: x}",
            "trustSharedWith[0].cluster: not an EKS cluster name or ARN",
            id="bad-cluster",
        ),
        pytest.param(
            PI_ROLE,
            "{cluster: 'arn:aws:eks:eu-west-1:1234:cluster/x', reason: x}",
            "trustSharedWith[0].cluster: not an EKS cluster name or ARN",
            id="bad-cluster-arn",
        ),
        pytest.param(
            IRSA_ROLE,
            "{cluster: prod-b, reason: x}",
            "workloads[0]: trustSharedWith[0]: an IRSA trust names another cluster by its OIDC issuer",
            id="cluster-on-irsa",
        ),
        pytest.param(
            PI_ROLE,
            "{oidcIssuer: 'https://oidc.example.com/id/1', reason: x}",
            "workloads[1]: trustSharedWith[0]: a Pod Identity trust names another cluster by name or ARN",
            id="issuer-on-pod-identity",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-a, serviceAccount: app-sa, reason: x}",
            "trustSharedWith[0]: team-a/app-sa is this workload itself",
            id="itself",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: b, reason: x}\n{namespace: team-b, serviceAccount: b, reason: y}",
            "trustSharedWith[1]: the same subject is listed twice",
            id="twice",
        ),
        pytest.param(
            IRSA_ROLE,
            "{namespace: team-b, serviceAccount: b, reason: x, account: '1'}",
            "trustSharedWith[0].account: unknown key 'account'; allowed here: cluster, namespace, oidcIssuer, "
            "reason, serviceAccount",
            id="unknown-key",
        ),
    ],
)
def test_trust_shared_with_errors(tmp_path: Path, role_line: str, entries: str, message: str) -> None:
    _, err = _error(tmp_path, _shares(role_line, entries))
    assert message in err, err


# --- sandbox cross-checks ------------------------------------------------------------------


def test_sandbox_profile_loads(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace(
        "  faults: []",
        "  faults:\n    - fault: wrong-role\n      workload: exporter\n      role: reporting",
    )
    _write(tmp_path, text, "sb")
    sandbox = section(load_profile("sb", tmp_path))
    assert [(f.fault, f.workload, f.role) for f in sandbox.faults] == [("wrong-role", "exporter", "reporting")]


def test_sandbox_workload_role_not_seeded(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("    - name: exporter\n", "    - name: exporter-old\n")
    _, message = _error(tmp_path, text)
    assert (
        "workload 'exporter': role arn:aws:iam::111122223333:role/exporter is not seeded; "
        "add a role named 'exporter' under sandbox.roles (account 111122223333)"
    ) in message


def test_sandbox_role_in_another_account_says_so_at_its_line(tmp_path: Path) -> None:
    text = LIVE.replace("111122223333:role/app", "999988887777:role/app") + SANDBOX
    path, message = _error(tmp_path, text)
    assert (
        f"{path}:{_line(text, '999988887777')}: workloads[0].roleArn: workload 'app': role "
        "arn:aws:iam::999988887777:role/app is in account 999988887777, not the cluster's (cluster.accountId "
        "111122223333); the sandbox seeds roles in the cluster's account only: "
        "write arn:aws:iam::111122223333:role/app"
    ) in message
    assert "add a role" not in message


def test_sandbox_target_role_in_another_account_says_so_at_its_line(tmp_path: Path) -> None:
    target = "    targetRoleArn: arn:aws:iam::444455556666:role/exporter\n"
    text = LIVE.replace("role/exporter\n", "role/exporter\n" + target) + SANDBOX
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, '444455556666')}: workloads[1].targetRoleArn: workload 'exporter': role" in message
    assert "is in account 444455556666, not the cluster's (cluster.accountId 111122223333)" in message


def test_sandbox_role_not_seeded_points_at_the_role_arn(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("    - name: exporter\n", "    - name: exporter-old\n")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'role/exporter')}: workloads[1].roleArn: workload 'exporter': role" in message


def test_live_pod_identity_role_in_another_account_is_refused_at_its_line(tmp_path: Path) -> None:
    text = LIVE.replace("111122223333:role/exporter", "999988887777:role/exporter")
    path, message = _error(tmp_path, text)
    assert (
        f"{path}:{_line(text, '999988887777')}: workloads[1].roleArn: workload 'exporter': a Pod Identity "
        "association's role must be in the cluster's account (cluster.accountId 111122223333), this one is in "
        "999988887777; to reach a role in another account, give it as targetRoleArn"
    ) in message


def test_live_cross_account_target_role_and_irsa_role_load(tmp_path: Path) -> None:
    # Both are how EKS reaches another account: Pod Identity role chaining, IRSA with an OIDC provider there.
    target = "    targetRoleArn: arn:aws:iam::444455556666:role/exporter\n"
    text = LIVE.replace("role/exporter\n", "role/exporter\n" + target).replace(
        "111122223333:role/app", "999988887777:role/app"
    )
    _write(tmp_path, text, "live")
    profile = load_profile("live", tmp_path).profile
    assert profile.workload("exporter").final_role_arn == "arn:aws:iam::444455556666:role/exporter"
    assert profile.workload("app").role_arn == "arn:aws:iam::999988887777:role/app"


def test_sandbox_fault_names_unknown_workload(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace(
        "  faults: []",
        "  faults:\n    - fault: wrong-role\n      workload: ghost\n      role: reporting",
    )
    _, message = _error(tmp_path, text)
    assert (
        "fault 'wrong-role' names workload 'ghost', which is not in workloads (choose one of: app, exporter)"
    ) in message


@pytest.mark.parametrize("role_line", ["", "\n      role: nonexistent"])
def test_sandbox_wrong_role_fault_needs_a_seeded_role(tmp_path: Path, role_line: str) -> None:
    text = LIVE + SANDBOX.replace("  faults: []", f"  faults:\n    - fault: wrong-role\n      workload: app{role_line}")
    _, message = _error(tmp_path, text)
    assert "fault 'wrong-role' needs 'role'" in message
    assert "(choose one of: app, exporter, reporting)" in message


def test_sandbox_unknown_fault_kind(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("  faults: []", "  faults:\n    - fault: slow-agent\n      workload: app")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'slow-agent')}: sandbox.faults[0].fault:" in message
    assert "'wrong-role'" in message
    assert "(got 'slow-agent')" in message


# --- through pytest: clean usage errors, settings precedence, collection ---------------------

USES_WORKLOAD = """
def test_x(eksid_workload):
    pass
"""


@pytest.fixture
def run_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester dir with one test that needs a workload; the plugin loads by entry point."""
    for name in ("EKSID_PROFILE", "EKSID_KEEP_PODS", "EKSID_MAX_PARALLEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_uses_workload=USES_WORKLOAD)
    return pytester


def _assert_clean_usage_error(result: pytest.RunResult, *needles: str) -> None:
    out, err = result.stdout.str(), result.stderr.str()
    assert "INTERNALERROR" not in out
    assert "INTERNALERROR" not in err
    assert "Traceback" not in err
    assert result.ret == pytest.ExitCode.USAGE_ERROR, f"stdout:\n{out}\nstderr:\n{err}"
    assert err.lstrip().startswith("ERROR:"), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in stderr:\n{err}"


def test_cli_missing_profile_file(run_dir: pytest.Pytester) -> None:
    result = pytester_run(run_dir, "--profile", "nowhere/absent.yaml")
    _assert_clean_usage_error(result, "profile 'nowhere/absent.yaml': no such file", "absent.yaml")


def test_cli_missing_profile_name(run_dir: pytest.Pytester) -> None:
    _write(run_dir.path, LIVE, "known")
    result = pytester_run(run_dir, "--profile", "unknown")
    _assert_clean_usage_error(result, str(run_dir.path / "profiles" / "unknown.yaml"), "known profiles: known")


def test_cli_yaml_syntax_error(run_dir: pytest.Pytester) -> None:
    text = LIVE.replace("probe:\n", "probe:\n  tolerations: [unclosed\n")
    path = _write(run_dir.path, text)
    result = pytester_run(run_dir, "--profile", str(path))
    _assert_clean_usage_error(result, f"{path}:{_line(text, 'image:')}: YAML syntax error")


def test_cli_unknown_key(run_dir: pytest.Pytester) -> None:
    text = LIVE.replace("  name: live", "  nmae: live")
    path = _write(run_dir.path, text)
    result = pytester_run(run_dir, "--profile", str(path))
    _assert_clean_usage_error(
        result, f"{path}:{_line(text, 'nmae')}: cluster.nmae: unknown key 'nmae'", "allowed here:"
    )


def test_cli_wrong_type(run_dir: pytest.Pytester) -> None:
    text = LIVE.replace('accountId: "111122223333"', "accountId: 111122223333")
    path = _write(run_dir.path, text)
    result = pytester_run(run_dir, "--profile", str(path))
    _assert_clean_usage_error(result, f"{path}:{_line(text, 'accountId')}: cluster.accountId:", "quote it in YAML")


def test_cli_malformed_role_arn(run_dir: pytest.Pytester) -> None:
    text = LIVE.replace("role/exporter", "exporter")
    path = _write(run_dir.path, text)
    result = pytester_run(run_dir, "--profile", str(path))
    _assert_clean_usage_error(
        result,
        f"{path}:{_line(text, '111122223333:exporter')}: workloads[1].roleArn: not an IAM role ARN",
    )


def test_cli_sandbox_cross_check(run_dir: pytest.Pytester) -> None:
    text = LIVE + SANDBOX.replace("    - name: app\n", "    - name: app-old\n")
    path = _write(run_dir.path, text)
    result = pytester_run(run_dir, "--profile", str(path))
    _assert_clean_usage_error(result, str(path), "workload 'app'", "is not seeded")


def test_cli_collect_only_lists_workload_ids_without_a_cluster(run_dir: pytest.Pytester) -> None:
    # The profile's kubeconfig does not exist: any attempt to reach a cluster would fail.
    _write(run_dir.path, LIVE, "live")
    result = pytester_run(run_dir, "--profile", "live", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "test_uses_workload.py::test_x[[]live/app[]]",
            "test_uses_workload.py::test_x[[]live/exporter[]]",
            "2 tests collected*",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "sandbox" not in result.stdout.str()


def test_cli_mechanism_markers_select_workloads(run_dir: pytest.Pytester) -> None:
    _write(run_dir.path, LIVE, "live")
    result = pytester_run(run_dir, "--profile", "live", "--collect-only", "-q", "-m", "pod_identity")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    out = result.stdout.str()
    assert "test_x[live/exporter]" in out
    assert "test_x[live/app]" not in out


def test_cli_without_profile_asks_for_one(run_dir: pytest.Pytester) -> None:
    result = pytester_run(
        run_dir,
    )
    out, err = result.stdout.str(), result.stderr.str()
    assert "INTERNALERROR" not in out + err
    assert "eksid: no profile (pass --profile NAME, e.g. --profile demo)" in out
    assert "test_uses_workload.py::test_x checks workload identities and needs a profile: pass --profile NAME" in err
    # A usage error (4), like a bad --profile: not a collection error with a traceback.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in out + err


def test_report_header_says_profile_came_from_cli(run_dir: pytest.Pytester) -> None:
    _write(run_dir.path, LIVE, "live")
    result = pytester_run(run_dir, "--profile", "live", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "eksid: profile live: profiles/live.yaml (from --profile)",
            "eksid: cluster live, region eu-west-1, account 111122223333; kube context no-such-context",
            "eksid: probe image registry.example.com/eksid-probe:1; 2 workload(s)",
        ]
    )


def test_env_var_is_used_without_cli_option(run_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(run_dir.path, LIVE, "live")
    monkeypatch.setenv("EKSID_PROFILE", "live")
    result = pytester_run(run_dir, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*test_x[[]live/app[]]"])
    verbose = pytester_run(run_dir, "--collect-only")
    verbose.stdout.fnmatch_lines(["eksid: profile live: profiles/live.yaml (from $EKSID_PROFILE)"])


def test_cli_option_beats_env_var(run_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(run_dir.path, LIVE, "live")
    broken = _write(run_dir.path, LIVE.replace("  name: live", "  nmae: live"), "broken")
    monkeypatch.setenv("EKSID_PROFILE", str(broken))
    result = pytester_run(run_dir, "--profile", "live", "--collect-only")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["eksid: profile live: profiles/live.yaml (from --profile)"])


def test_bad_profile_from_env_var_is_a_usage_error(run_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = _write(run_dir.path, LIVE.replace("  name: live", "  nmae: live"), "broken")
    monkeypatch.setenv("EKSID_PROFILE", "broken")
    result = pytester_run(run_dir, "--collect-only")
    _assert_clean_usage_error(result, f"{broken}:", "cluster.nmae: unknown key")


def test_ini_option_beats_env_var(run_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(run_dir.path, LIVE, "live")
    _write(run_dir.path, LIVE.replace("name: live", "name: other-cluster"), "other")
    run_dir.makeini("[pytest]\neksid_profile = live\n")
    monkeypatch.setenv("EKSID_PROFILE", "other")
    result = pytester_run(run_dir, "--collect-only")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "eksid: profile live: profiles/live.yaml (from ini eksid_profile)",
            "eksid: cluster live, *",
        ]
    )


def test_sandbox_bucket_kms_key_must_be_seeded(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("  faults: []", "  buckets:\n    - name: finance\n      kmsKey: ghost\n  faults: []")
    _, message = _error(tmp_path, text)
    assert "bucket 'finance': kmsKey 'ghost' is not under sandbox.keys" in message


def test_sandbox_kms_fault_needs_a_seeded_key(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace(
        "  faults: []", "  keys: [finance]\n  faults:\n    - fault: kms-key-policy-deny\n      workload: app"
    )
    _, message = _error(tmp_path, text)
    assert "fault 'kms-key-policy-deny' needs 'key': a key alias under sandbox.keys (finance)" in message


def test_sandbox_key_ids_are_uuids(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("  faults: []", "  keys:\n    - alias: finance\n      id: not-a-uuid\n  faults: []")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'not-a-uuid')}:" in message


def test_a_mistyped_sandbox_secret_is_not_echoed(tmp_path: Path) -> None:
    text = LIVE + SANDBOX + "  secrets:\n    - {name: finance/db, value: [hunter2-s3cr3t]}\n"
    _, err = _error(tmp_path, text)
    assert "sandbox.secrets[0].value" in err
    assert "hunter2-s3cr3t" not in err


def test_a_sandbox_of_the_wrong_shape_does_not_echo_its_secrets(tmp_path: Path) -> None:
    text = LIVE + "sandbox:\n  - secrets: [{name: finance/db, value: hunter2-s3cr3t}]\n"
    _, err = _error(tmp_path, text)
    assert "sandbox: expected a mapping" in err
    assert "hunter2-s3cr3t" not in err


def test_seeded_values_stay_out_of_reprs() -> None:
    from pytest_eksid.sandbox.model import SandboxValue

    assert "hunter2" not in repr(SandboxValue(name="finance/db", value="hunter2"))


# --- hostile profiles: every one ends in a ProfileError naming file, line and field ----------

MAX_MESSAGE = 2500  # characters: the loader aims under 2,000; a little slack for long tmp paths


def _error_bytes(root: Path, data: bytes, name: str = "bad") -> tuple[Path, str]:
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    path = root / "profiles" / f"{name}.yaml"
    path.write_bytes(data)
    with pytest.raises(ProfileError) as excinfo:
        load_profile(name, root)
    message = str(excinfo.value)
    assert len(message) < MAX_MESSAGE, message[:500]
    return path, message


def test_non_utf8_bytes_name_line_and_column(tmp_path: Path) -> None:
    data = LIVE.replace("team-b", "team-\udcff", 1).encode("utf-8", "surrogateescape")
    path, message = _error_bytes(tmp_path, data)
    assert message == (f"{path}:{_line(LIVE, 'team-b')}: column 21: not UTF-8 text (byte 0xff); save the file as UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_say_so(tmp_path: Path, encoding: str) -> None:
    path, message = _error_bytes(tmp_path, LIVE.encode(encoding))
    assert message == f"{path}: not UTF-8 text (it looks like UTF-16 or UTF-32); save it as UTF-8"


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bom.yaml").write_bytes(LIVE.encode("utf-8-sig"))
    assert load_profile("bom", tmp_path).profile.cluster.name == "live"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028"])
def test_control_characters_name_line_and_column(tmp_path: Path, char: str) -> None:
    text = LIVE.replace("team-a", f"team{char}a")
    path, message = _error_bytes(tmp_path, text.encode("utf-8"))
    assert message.startswith(f"{path}:{_line(LIVE, 'team-a')}: column 20: control character U+{ord(char):04X} ")


def test_billion_laughs_is_refused_at_the_first_anchor(tmp_path: Path) -> None:
    laughs = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = LIVE.replace("probe:\n", "probe:\n  nodeSelector:\n" + "\n".join(laughs) + "\n", 1)
    path, message = _error_bytes(tmp_path, text.encode())
    assert message == (
        f"{path}:{_line(text, '&l0')}: anchors and aliases (&name, *name) are not allowed in a profile; "
        "write each value where it is used"
    )


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("  faults: []", "  faults: &a [*a]")
    path, message = _error_bytes(tmp_path, text.encode())
    assert message.startswith(f"{path}:{_line(text, '&a')}: anchors and aliases")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    text = LIVE.replace("probe:\n", "probe:\n  nodeSelector: " + "[" * 5000 + "]" * 5000 + "\n", 1)
    path, message = _error_bytes(tmp_path, text.encode())
    assert message == f"{path}:{_line(text, '[[[')}: nested more than 32 levels deep; a profile needs far fewer"


@pytest.mark.parametrize("number", ["9" * 5000, "0x" + "f" * 300, str(2**64)])
def test_huge_integers_are_refused(tmp_path: Path, number: str) -> None:
    text = LIVE.replace("image: registry.example.com/eksid-probe:1", f"image: x\n  timeoutSeconds: {number}")
    path, message = _error_bytes(tmp_path, text.encode())
    assert message == (
        f"{path}:{_line(text, 'timeoutSeconds')}: a whole number this large is not allowed; quote it if it is text"
    )


def test_a_huge_value_is_not_echoed_whole(tmp_path: Path) -> None:
    text = LIVE.replace("region: eu-west-1", "region: " + "x" * 1_000_000)
    path, message = _error_bytes(tmp_path, text.encode())
    assert f"{path}:3: cluster.region: not an AWS region name: 'xxxx" in message
    assert len(message) < 500


def test_many_problems_are_cut_short(tmp_path: Path) -> None:
    text = LIVE + "".join(
        f"  - {{name: W{i}, namespace: N, serviceAccount: s, mechanism: x, roleArn: r}}\n" for i in range(500)
    )
    _, message = _error_bytes(tmp_path, text.encode())
    assert message.startswith(f"{tmp_path / 'profiles' / 'bad.yaml'}: invalid profile (2000 problems)")
    assert re.search(r"\n  \.\.\. and \d+ more \(fix these first\)$", message), message[-300:]


def test_duplicate_top_level_keys_name_both_lines(tmp_path: Path) -> None:
    text = LIVE + "cluster:\n  name: other\n"
    path, message = _error_bytes(tmp_path, text.encode())
    assert message == (
        f"{path}:{len(text.splitlines()) - 1}: cluster: key 'cluster' appears twice in one mapping (lines 1 and "
        f"{len(text.splitlines()) - 1}); YAML would keep only the last one: remove or rename one"
    )


def test_duplicate_nested_keys_name_the_field(tmp_path: Path) -> None:
    text = LIVE.replace("    namespace: team-a\n", "    namespace: team-a\n    namespace: team-c\n")
    path, message = _error_bytes(tmp_path, text.encode())
    first = _line(text, "team-a")
    assert message.startswith(
        f"{path}:{first + 1}: workloads[0].namespace: key 'namespace' appears twice in one mapping "
        f"(lines {first} and {first + 1})"
    )


def test_a_duplicate_key_inside_a_secret_is_not_echoed(tmp_path: Path) -> None:
    text = LIVE + SANDBOX + "  secrets:\n    - name: db\n      value: {hunter2: 1, hunter2: 2}\n"
    path, message = _error_bytes(tmp_path, text.encode())
    assert "hunter2" not in message
    assert f"{path}:{_line(text, 'hunter2')}: sandbox.secrets[0].value.(key not shown): a key appears twice" in message


def test_an_unknown_key_inside_a_secret_is_not_echoed(tmp_path: Path) -> None:
    text = LIVE + SANDBOX + "  secrets: [{name: db, value:' hunter2-s3cr3t}]\n"
    _, message = _error_bytes(tmp_path, text.encode())
    assert "hunter2" not in message
    assert "sandbox.secrets[0].(key not shown): unknown key (not shown); allowed here: name, value" in message


FULL_WIDTH = "".join(chr(0xFF10 + int(c)) for c in "111122223333")  # Unicode digits: "\\d" matches them


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('accountId: "111122223333"', f'accountId: "{FULL_WIDTH}"', "cluster.accountId"),
        ('accountId: "111122223333"', 'accountId: "111122223333\\n"', "cluster.accountId"),
        ("namespace: team-a", 'namespace: "team-a\\n"', "workloads[0].namespace"),
        ("name: app\n", 'name: "app\\n"\n', "workloads[0].name"),
        ("region: eu-west-1", 'region: "eu-west-1\\n"', "cluster.region"),
        (
            "roleArn: arn:aws:iam::111122223333:role/app",
            'roleArn: "arn:aws:iam::111122223333:role/app\\n"',
            "workloads[0].roleArn",
        ),
        (
            "roleArn: arn:aws:iam::111122223333:role/app",
            f"roleArn: arn:aws:iam::{FULL_WIDTH}:role/app",
            "workloads[0].roleArn",
        ),
        (
            "roleArn: arn:aws:iam::111122223333:role/app",
            "roleArn: arn:aws:iam::111122223333:role/äpp",
            "workloads[0].roleArn",
        ),
    ],
)
def test_identifiers_are_ascii_to_their_true_end(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = LIVE.replace(old, new, 1)
    assert text != LIVE
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, new.rstrip())}: {field}: not " in message


def test_sandbox_role_names_are_ascii(tmp_path: Path) -> None:
    text = LIVE + SANDBOX.replace("    - name: reporting", "    - name: répörting")
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'répörting')}: sandbox.roles[2].name: String should match pattern" in message


PUT_ITEM = (
    "    allow: [{action: dynamodb:PutItem, resource: 'arn:aws:dynamodb:eu-west-1:111122223333:table/t', params: %s}]\n"
)


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ("{Item: {}}", "params.Item", "dynamodb:PutItem: params.Item must be a mapping of attribute names"),
        ("{Item: 5}", "params.Item", "got 5"),
        ("{Item: {pk: 1}}", "params.Item.pk", 'must be one typed value such as {S: "text"}'),
        ("{Item: {pk: {S: '1'}}, Extra: 1}", "params.Extra", "dynamodb:PutItem takes only Item (got 'Extra')"),
    ],
)
def test_catalogue_params_are_checked_at_load(tmp_path: Path, params: str, field: str, says: str) -> None:
    text = LIVE.replace("role/app\n", "role/app\n" + PUT_ITEM % params, 1)
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'PutItem')}: workloads[0].allow[0].{field}: " in message
    assert says in message


def test_a_date_in_params_is_refused_at_its_line(tmp_path: Path) -> None:
    text = LIVE.replace("role/app\n", "role/app\n" + PUT_ITEM % "{Item: {pk: {S: 2026-11-01}}}", 1)
    path, message = _error_bytes(tmp_path, text.encode())
    assert message == (
        f"{path}:{_line(text, 'PutItem')}: workloads[0].allow[0].params.Item.pk.S: YAML reads this unquoted value "
        'as a date; quote it ("2026-11-01")'
    )


def test_a_date_under_secrets_is_not_echoed(tmp_path: Path) -> None:
    text = LIVE + SANDBOX + "  secrets: [{name: db, value: 2031-07-15}]\n"
    _, message = _error_bytes(tmp_path, text.encode())
    assert "2031" not in message
    assert "sandbox.secrets[0].value: YAML reads this unquoted value as a date; quote it" in message


@pytest.mark.parametrize("value", [".nan", "-.inf"])
def test_params_are_json(tmp_path: Path, value: str) -> None:
    call = f"{{service: cloudwatch, operation: PutMetricData, params: {{Namespace: x, Value: {value}}}}}"
    allow = f"    allow: [{{action: 'cloudwatch:PutMetricData', live: true, call: {call}}}]\n"
    text = LIVE.replace("role/app\n", "role/app\n" + allow, 1)
    path, message = _error(tmp_path, text)
    assert f"{path}:{_line(text, 'PutMetricData')}: workloads[0].allow[0].call.params.Value: " in message
    assert "is not a JSON number" in message


@pytest.mark.parametrize("tagged", ["!!binary aGk=", "!!set {a}", "!!python/object:os.system {}", "!custom x"])
def test_yaml_tags_are_refused(tmp_path: Path, tagged: str) -> None:
    text = LIVE.replace("owner", "owner").replace("role/app\n", f"role/app\n    owner: {tagged}\n", 1)
    path, message = _error_bytes(tmp_path, text.encode())
    assert message.startswith(f"{path}:{_line(text, tagged)}: "), message
    assert "workloads[0].owner: the YAML tag" in message or "YAML syntax error" in message


def test_a_file_too_large_is_refused_unread(tmp_path: Path) -> None:
    from pytest_eksid.profile_yaml import MAX_BYTES

    path, message = _error_bytes(tmp_path, LIVE.encode() + b"#" * MAX_BYTES)
    assert message == f"{path}: larger than 2 MiB; a profile is a short, hand-written file"


def test_a_hostile_fleet_file_is_a_profile_error(tmp_path: Path) -> None:
    from pytest_eksid.profile import load_fleet

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("clusters: &c\n  - profile: a\n  - *c\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(fleet))}:1: anchors and aliases"):
        load_fleet(str(fleet), tmp_path, tmp_path)
    fleet.write_bytes(b"clusters:\n  - profile: \xff\n")
    with pytest.raises(ProfileError, match=rf"^{re.escape(str(fleet))}:2: column 14: not UTF-8 text"):
        load_fleet(str(fleet), tmp_path, tmp_path)
    fleet.write_text("clusters: []\nclusters: [{profile: a}]\n", encoding="utf-8")
    with pytest.raises(
        ProfileError, match=r":2: clusters: key 'clusters' appears twice in one mapping \(lines 1 and 2\)"
    ):
        load_fleet(str(fleet), tmp_path, tmp_path)


HOSTILE: dict[str, bytes] = {
    "non-utf8": LIVE.replace("team-a", "team-\udcff").encode("utf-8", "surrogateescape"),
    "utf16": LIVE.encode("utf-16"),
    "nul": LIVE.replace("team-a", "team\x00a").encode(),
    "laughs": (LIVE + "sandbox: {faults: &a [*a, *a]}\n").encode(),
    "deep": LIVE.replace("probe:\n", "probe:\n  nodeSelector: " + "[" * 5000 + "]" * 5000 + "\n", 1).encode(),
    "huge-int": (LIVE + "x: " + "9" * 5000 + "\n").encode(),
    "huge-value": LIVE.replace("eu-west-1", "x" * 1_000_000).encode(),
    "duplicate-key": (LIVE + "probe: {image: other}\n").encode(),  # valid either way: silently replaced
    "put-item-5": LIVE.replace("role/app\n", "role/app\n" + PUT_ITEM % "{Item: 5}", 1).encode(),
    "date-in-params": LIVE.replace("role/app\n", "role/app\n" + PUT_ITEM % "{Item: {pk: {S: 2026-01-01}}}", 1).encode(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_cli_hostile_profile_is_a_clean_usage_error(run_dir: pytest.Pytester, case: str) -> None:
    path = run_dir.path / "profiles" / "hostile.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(HOSTILE[case])
    result = pytester_run(run_dir, f"--profile={path}", "--collect-only", "-q")
    _assert_clean_usage_error(result, f"{path}:")
    assert len(result.stderr.str()) < MAX_MESSAGE + 100


def test_cli_hostile_fleet_is_a_clean_usage_error(run_dir: pytest.Pytester) -> None:
    fleet = run_dir.path / "fleet.yaml"
    fleet.write_bytes(b"clusters:\n  - {profile: a, profile: b}\n")
    result = pytester_run(run_dir, f"--fleet={fleet}", "--collect-only", "-q")
    _assert_clean_usage_error(result, f"{fleet}:2: clusters[0].profile: key 'profile' appears twice")


# --- fuzz: whatever the bytes, a profile or a ProfileError, soon, and short ------------------

FUZZ_BASE = (
    LIVE.replace("role/app\n", "role/app\n" + PUT_ITEM % "{Item: {pk: {S: '1'}}}", 1)
    + SANDBOX
    + "  secrets: [{name: db, value: hunter2-s3cr3t}]\n"
)
SECRET_LINE = b"\n  secrets: [{name: db, value: hunter2-s3cr3t}]\n"
FRAGMENTS = [
    *("&a", "*a", "<<: {a: 1}", "{", "}", "[", "]", ": ", "- ", "? ", "\n", "\t", "'", '"', "---\n", "%YAML 1.1\n"),
    *(
        "\x00",
        "\x1b",
        "\ufeff",
        "\u2028",
        "\udcff",
        FULL_WIDTH,
        "2026-01-01",
        "1e999",
        ".nan",
        "~",
        "yes",
        "0x" + "f" * 80,
    ),
    *("!!binary aGk=", "!!set {a}", "!!python/object:os.system {}", "!x", "9" * 5000, "[" * 3000, "x" * 100_000),
    *("{Item: {}}", "{Item: 5}", "targetRoleArn: arn:aws:iam::444455556666:role/t", "- name: app\n", "cluster: {}\n"),
]


def _mutate(data: st.DataObject) -> bytes:
    text = FUZZ_BASE
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(text)), label="at")
        piece = data.draw(st.sampled_from(FRAGMENTS) | st.text(max_size=12), label="piece")
        cut = data.draw(st.integers(0, 20), label="cut")
        text = text[:at] + piece + text[at + cut :]
    encoding = data.draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]), label="encoding")
    return text.encode(encoding, "surrogateescape" if encoding == "utf-8" else "replace")


def _check_one(root: Path, raw: bytes) -> None:
    path = root / "profiles" / "fuzz.yaml"
    path.write_bytes(raw)
    started = time.process_time()  # CPU time, not wall time: a loaded machine must not fail this
    try:
        load_profile("fuzz", root)
    except ProfileError as exc:  # anything else fails the test: that is the property
        message = str(exc)
        assert len(message) < MAX_MESSAGE, message[:300]
        if SECRET_LINE in raw and b"\nsandbox:\n" in raw:  # still a seeded secret, whatever else broke
            assert b"hunter2" not in message.encode("utf-8", "surrogateescape"), message
    # Generous: every example takes milliseconds of CPU; this catches an expansion (quadratic parsing), not jitter.
    assert time.process_time() - started < 5


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_mutated_profiles_load_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    root = tmp_path_factory.getbasetemp() / "fuzz"
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    _check_one(root, _mutate(data))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.dates(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=JSONISH, field=st.sampled_from(["params", "call", "policy", "region", "faults", "nodeSelector"]))
def test_fuzz_any_value_in_any_field_loads_or_fails_cleanly(
    tmp_path_factory: pytest.TempPathFactory, value: object, field: str
) -> None:
    root = tmp_path_factory.getbasetemp() / "fuzz-values"
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(FUZZ_BASE)
    check = data["workloads"][0]["allow"][0]
    targets = {
        "params": (check, "params"),
        "call": (check, "call"),
        "policy": (data["sandbox"]["roles"][0], "policy"),
        "region": (data["cluster"], "region"),
        "faults": (data["sandbox"], "faults"),
        "nodeSelector": (data["probe"], "nodeSelector"),
    }
    where, key = targets[field]
    where[key] = {"Item": value} if field == "params" else value
    _check_one(root, yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("seed", [1, 2])
def test_cli_fuzzed_profiles_are_clean_usage_errors(run_dir: pytest.Pytester, seed: int) -> None:
    # Two fixed hostile mixes through a real pytest run: the in-process fuzz above covers the breadth.
    rng = random.Random(seed)
    text = FUZZ_BASE
    for _ in range(6):
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
    path = run_dir.path / "profiles" / "fuzzed.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = pytester_run(run_dir, f"--profile={path}", "--collect-only", "-q")
    _assert_clean_usage_error(result, f"{path}")


@pytest.mark.parametrize("escape", ["\\e[31m", "\\0", "\\x9b"])
def test_control_characters_from_escapes_are_refused_in_names(tmp_path: Path, escape: str) -> None:
    text = LIVE.replace("role/app\n", f'role/app\n    owner: "team{escape}a"\n', 1)
    path, message = _error(tmp_path, text)
    assert message.startswith(f"{path}:{_line(text, 'owner')}: workloads[0].owner: control character U+")


def test_escapes_are_fine_in_seeded_secrets(tmp_path: Path) -> None:
    text = LIVE + SANDBOX + '  secrets: [{name: pem, value: "line1\\nline2\\u0007"}]\n'
    _write(tmp_path, text, "sb")
    sandbox = section(load_profile("sb", tmp_path))
    assert sandbox.secrets[0].value == "line1\nline2\x07"


# --- actions checked against AWS's service authorization data ----------------------------------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("s3:GetObjcet", "s3:GetObjcet is not an action AWS documents; did you mean s3:GetObject?"),
        ("sqs:SendMesage", "sqs:SendMesage is not an action AWS documents; did you mean sqs:SendMessage?"),
        ("s4:GetObject", "s4:GetObject: AWS documents no service 's4'; did you mean s3:GetObject?"),
    ],
)
@pytest.mark.parametrize("section", ["allow", "deny"])
def test_an_action_aws_does_not_know_is_named_with_a_suggestion(
    tmp_path: Path, action: str, message: str, section: str
) -> None:
    entry = f"    {section}: [{{action: {action}, resource: 'arn:aws:s3:::b/k'}}]\n"
    text = LIVE.replace("role/app\n", "role/app\n" + entry, 1)
    path, err = _error(tmp_path, text)
    assert f"{path}:{_line(text, action)}: workloads[0].{section}[0].action: {message}" in err


def test_an_unknown_action_in_the_generic_form_is_named_too(tmp_path: Path) -> None:
    call = "{service: cloudwatch, operation: PutMetricData, params: {Namespace: x}}"
    entry = f"    allow: [{{action: 'cloudwatch:PutMetricDta', live: true, call: {call}}}]\n"
    text = LIVE.replace("role/app\n", "role/app\n" + entry, 1)
    path, err = _error(tmp_path, text)
    assert (
        f"{path}:{_line(text, 'PutMetricDta')}: workloads[0].allow[0].action: cloudwatch:PutMetricDta is not an "
        "action AWS documents; did you mean cloudwatch:PutMetricData?"
    ) in err


def test_an_action_aws_knows_but_the_probe_does_not_keeps_its_error(tmp_path: Path) -> None:
    entry = "    deny: [{action: s3:GetBucketPolicy, resource: 'arn:aws:s3:::b'}]\n"
    text = LIVE.replace("role/app\n", "role/app\n" + entry, 1)
    path, err = _error(tmp_path, text)
    where = f"{path}:{_line(text, 'GetBucketPolicy')}: workloads[0].deny[0].action"
    assert f"{where}: no probe for s3:GetBucketPolicy; " in err
    assert "generic form" in err
    assert "AWS documents" not in err


# --- ignore: and deployers: (every identity accounted for) ----------------------------------------


def test_deployers_per_namespace_and_per_workload(tmp_path: Path) -> None:
    text = (
        LIVE.replace(
            "    mechanism: irsa",
            "    mechanism: irsa\n    deployers: [{kind: Group, name: team-a-oncall}]",
        )
        + "deployers:\n  - namespace: team-a\n    subjects:\n"
        + "      - {kind: ServiceAccount, name: deployer, namespace: ci}\n"
        + "ignore:\n  - {namespace: kube-system, reason: EKS add-ons}\n"
    )
    _write(tmp_path, text, "good")
    p = load_profile("good", tmp_path).profile
    w = p.workload("app")
    assert [(d.kind, d.name) for d in p.deployers_of(w) or []] == [("Group", "team-a-oncall")]
    assert p.deployers[0].subjects[0].namespace == "ci"
    assert p.ignore[0].reason == "EKS add-ons"


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("{kind: ServiceAccount, name: deployer}", "a ServiceAccount deployer needs its namespace"),
        ("{kind: Group, name: g, namespace: ci}", "a Group has no namespace"),
        ("{kind: Robot, name: r}", "deployers[0].subjects[0].kind"),
    ],
)
def test_bad_deployers_name_the_field(tmp_path: Path, entry: str, needle: str) -> None:
    text = LIVE + f"deployers:\n  - namespace: team-a\n    subjects:\n      - {entry}\n"
    path, message = _error(tmp_path, text)
    assert f"{path}:" in message
    assert needle in message


def test_a_namespace_listed_twice_under_deployers(tmp_path: Path) -> None:
    one = "  - namespace: team-a\n    subjects: [{kind: Group, name: g}]\n"
    _, message = _error(tmp_path, LIVE + "deployers:\n" + one + one)
    assert "deployers[1].namespace: namespace 'team-a' is listed twice (also deployers[0])" in message


def test_a_fleet_sized_profile_loads(tmp_path: Path) -> None:
    """1,000 workloads, each with its own role under sandbox.roles (what bench/full_run.py generates, and the
    size --eksid-discover writes for a large cluster): over the old 50,000-value cap, within the new one."""
    import copy

    from tests.helpers.profiles import demo_data, write_profile

    data = demo_data()
    roles = {r["name"]: r for r in data["sandbox"]["roles"]}
    workloads = []
    for i in range(1000):
        base = copy.deepcopy(data["workloads"][i % 2])
        prefix, _, role = base["roleArn"].rpartition("/")
        base.update(name=f"{base['name']}-{i:04d}", serviceAccount=f"{base['serviceAccount']}-{i:04d}")
        base["roleArn"] = f"{prefix}/{role}-{i:04d}"
        data["sandbox"]["roles"].append(dict(copy.deepcopy(roles[role]), name=f"{role}-{i:04d}"))
        workloads.append(base)
    data["workloads"] = workloads
    path = write_profile(tmp_path, data, "fleet-sized")
    loaded = core.load_profile(str(path), REPO_ROOT)
    assert len(loaded.profile.workloads) == 1000
