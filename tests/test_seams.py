"""The typed seams between the plugin's layers: settings, the session engine, probe results, findings and
outcomes as data, and the probe-manifest hook."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid import report
from pytest_eksid.engine import Engine, EngineError
from pytest_eksid.fixtures import SETTINGS_KEY
from pytest_eksid.probe import program
from pytest_eksid.probe.pod import (
    MANAGED_BY,
    MANAGED_BY_VALUE,
    WORKLOAD_LABEL,
    ProbeError,
    ResultVersionError,
    check_contract,
    parse_result,
    probe_contract,
    probe_pod_manifest,
)
from pytest_eksid.profile import load_profile
from pytest_eksid.settings import (
    DEFAULT_IAM_BULK_ROLES,
    DEFAULT_MAX_PARALLEL,
    Setting,
    SettingError,
    Settings,
    optional_setting,
    parse_count,
    parse_positive_int,
    resolve,
    setting,
)
from pytest_eksid.xdist_support import DIST_WORKERINPUT, OWNED_WORKERINPUT, pytest_configure_node
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest
from tests.helpers.sandboxes import Running

PYTEST_FREE = ("engine.py", "settings.py", "report.py", "probe/result.py", "probe/pod.py")


class Options:
    """What settings are read from (a pytest config's getoption/getini), as plain data."""

    def __init__(self, cli: dict[str, Any] | None = None, ini: dict[str, Any] | None = None) -> None:
        self.cli, self.ini = cli or {}, ini or {}

    def getoption(self, name: str) -> Any:
        return self.cli.get(name)

    def getini(self, name: str) -> Any:
        return self.ini.get(name)


# --- settings ----------------------------------------------------------------------------------


def test_a_setting_comes_from_the_command_line_then_ini_then_environment_then_default():
    name, flag = "eksid_max_parallel", "--eksid-max-parallel"
    env = {"EKSID_MAX_PARALLEL": "3"}
    both = Options({name: 5}, {name: "4"})
    assert setting(both, name, flag, parse_positive_int, 32, env) == Setting(5, flag)
    assert setting(Options(ini={name: "4"}), name, flag, parse_positive_int, 32, env) == Setting(4, f"ini {name}")
    assert setting(Options(), name, flag, parse_positive_int, 32, env) == Setting(3, "$EKSID_MAX_PARALLEL")
    assert setting(Options(), name, flag, parse_positive_int, 32, {}) == Setting(32, "default")
    assert optional_setting(Options(), name, flag, parse_positive_int, {}) is None


def test_a_bad_value_names_where_it_came_from():
    with pytest.raises(SettingError, match=r"^\$EKSID_MAX_PARALLEL: must be at least 1, got 0$"):
        setting(
            Options(), "eksid_max_parallel", "--eksid-max-parallel", parse_positive_int, 32, {"EKSID_MAX_PARALLEL": "0"}
        )


def test_the_iam_bulk_threshold_takes_zero_but_nothing_below():
    name, flag = "eksid_iam_bulk", "--eksid-iam-bulk"
    assert setting(Options(), name, flag, parse_count, 25, {"EKSID_IAM_BULK": "0"}) == Setting(0, "$EKSID_IAM_BULK")
    with pytest.raises(SettingError, match=r"^ini eksid_iam_bulk: must be 0 or more, got -1$"):
        setting(Options(ini={name: "-1"}), name, flag, parse_count, 25, {})


def test_resolved_settings_always_have_their_defaults(monkeypatch):
    for name in (
        "EKSID_KEEP_PODS",
        "EKSID_MAX_PARALLEL",
        "EKSID_INCONCLUSIVE",
        "EKSID_API_TIMEOUT",
        "EKSID_SWEEP",
        "EKSID_IAM_BULK",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = resolve(Options(), ())
    assert settings.max_parallel == Setting(DEFAULT_MAX_PARALLEL, "default")
    assert settings.iam_bulk == Setting(DEFAULT_IAM_BULK_ROLES, "default")
    assert settings.inconclusive == Setting("skip", "default")
    assert settings.keep_pods.value is False
    assert settings.sweep_minutes is None


# --- layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", PYTEST_FREE)
def test_the_engine_and_the_data_layers_do_not_import_pytest(module):
    tree = ast.parse((REPO / "pytest_eksid" / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("pytest", "_pytest", "xdist")}
    # nor through what they import
    code = f"import sys, pytest_eksid.{module[:-3].replace('/', '.')}; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_an_unreachable_cluster_is_an_engine_error_said_once_and_raised_again_without_trying(tmp_path):
    data = demo_data()
    del data["sandbox"]
    data["cluster"]["kubeconfig"] = str(tmp_path / "missing-kubeconfig")
    loaded = load_profile(str(write_profile(tmp_path, data, "gone")), tmp_path)
    said: list[str] = []
    engine = Engine(Settings(profiles=(Setting(loaded, "--profile"),)), tmp_path, progress=said.append)
    with pytest.raises(EngineError, match=r"cluster\.kubeconfig/kubeContext") as first:
        engine.kube(loaded)
    with pytest.raises(EngineError) as again:
        engine.campaign(loaded)
    assert str(again.value) == str(first.value)
    assert str(loaded.path) in str(first.value)
    engine.close()


# --- probe results -----------------------------------------------------------------------------


def result_line(**fields: Any) -> str:
    return "noise\n" + program.RESULT_MARKER + json.dumps(fields) + "\n"


def test_the_runner_reads_only_its_own_result_version():
    assert parse_result(result_line(version=program.RESULT_VERSION, workload="w")) == {
        "version": program.RESULT_VERSION,
        "workload": "w",
    }
    assert parse_result("no result here\n") is None
    with pytest.raises(ResultVersionError, match=r"result is version 2; this runner reads version 1 only"):
        parse_result(result_line(version=2, workload="w"))
    with pytest.raises(ResultVersionError, match=r"version None"):
        parse_result(result_line(workload="w"))


def test_the_probe_program_runs_alone_without_the_package(tmp_path):
    """program.py names its result types for the type checker only: its source runs where nothing else is."""
    plan = json.dumps({"workload": "w", "steps": ["environment"]})
    proc = subprocess.run(
        [sys.executable, "-I", "-c", (REPO / "pytest_eksid" / "probe" / "program.py").read_text()],
        cwd=tmp_path,
        env={program.PLAN_VARIABLE: plan, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = parse_result(proc.stdout)
    assert result is not None
    assert result["version"] == program.RESULT_VERSION
    assert set(result.get("environment", {})) == {"aws_variables", "token_files", "aws_files"}


# --- findings, INCONCLUSIVE and UNPROVEN as data -------------------------------------------------

OUTCOMES_TEST = """
from pytest_eksid.checks import Finding
from pytest_eksid.fixtures import fail_on, inconclusive, unproven

def test_unsure(eksid_settings):
    inconclusive(eksid_settings, "the probe could not tell")

def test_unproven(eksid_settings):
    unproven(eksid_settings, "no deny entries")

def test_finding():
    fail_on(Finding("c", "the summary, not the message's first line", "x", "y", "z", ("kubectl get sa",)))

def test_says_inconclusive_in_its_own_words():
    import pytest
    pytest.skip("INCONCLUSIVE: a plain skip whose reason looks like it")
"""


def junit_properties(path: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        out[str(case.get("name"))] = [(str(p.get("name")), str(p.get("value"))) for p in case.iter("property")]
    return out


def test_inconclusive_is_its_own_outcome_and_findings_travel_as_data(pytester: pytest.Pytester):
    pytester.makepyfile(test_outcomes=OUTCOMES_TEST)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    result.stdout.fnmatch_lines(
        [
            "*::test_unsure INCONCLUSIVE*",
            "*::test_unproven SKIPPED*",
            "*::test_says_inconclusive_in_its_own_words SKIPPED*",
            "*1 failed*2 skipped*1 inconclusive*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    props = junit_properties(pytester.path / "junit.xml")
    assert (report.OUTCOME_PROPERTY, report.INCONCLUSIVE) in props["test_unsure"]
    assert (report.OUTCOME_PROPERTY, report.UNPROVEN) in props["test_unproven"]
    assert not [p for p in props["test_says_inconclusive_in_its_own_words"] if p[0] == report.OUTCOME_PROPERTY]
    finding = [json.loads(v) for k, v in props["test_finding"] if k == report.FINDING_PROPERTY]
    assert [f["summary"] for f in finding] == ["the summary, not the message's first line"]
    assert (report.NEXT_PROPERTY, "kubectl get sa") in props["test_finding"]
    # JUnit readers see skips, as before
    skipped = [
        c.get("name")
        for c in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
        if c.find("skipped") is not None
    ]
    assert sorted(skipped) == ["test_says_inconclusive_in_its_own_words", "test_unproven", "test_unsure"]


def test_inconclusive_fail_makes_it_a_failure(pytester: pytest.Pytester):
    pytester.makepyfile(test_outcomes=OUTCOMES_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--eksid-inconclusive=fail", "-k", "unsure")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*INCONCLUSIVE (--eksid-inconclusive=fail): the probe could not tell*"])


def test_the_matrix_reads_the_outcome_property_not_the_reason():
    results = report.Results()
    props = [("workload", "w"), ("family", "permissions")]
    results.record("t::a", "call", "skipped", "Skipped: INCONCLUSIVE: looks like it", props)
    results.record(
        "t::b", "call", "skipped", "Skipped: measured", [*props, (report.OUTCOME_PROPERTY, report.INCONCLUSIVE)]
    )
    assert (results.by_nodeid["t::a"].status, results.by_nodeid["t::b"].status) == (report.SKIP, report.INCONCLUSIVE)
    finding = json.dumps({"summary": "from the finding"})
    results.record("t::c", "call", "failed", "Failed: from the message", [*props, (report.FINDING_PROPERTY, finding)])
    assert results.by_nodeid["t::c"].message == "from the finding"


# --- the probe-manifest hook ---------------------------------------------------------------------

HOOK_CONFTEST = """
def pytest_eksid_probe_manifest(manifest, profile, workload):
    manifest["metadata"].setdefault("annotations", {})["example.com/cost-center"] = "cc-" + workload.name
    if workload.name == "billing-worker":
        manifest["spec"]["serviceAccountName"] = "default"  # not allowed: the probe would be another identity
"""


def test_a_conftest_hook_changes_the_probe_pod_but_not_its_contract(tmp_path, start_sandbox: Callable[..., Running]):
    running = start_sandbox(demo_data())
    live: dict[str, Any] = demo_data()
    del live["sandbox"]
    live["cluster"]["kubeconfig"] = str(running.connection.kubeconfig)
    live["cluster"]["kubeContext"] = running.connection.context
    profile = write_profile(tmp_path, live, "hooked")
    tests = tmp_path / "hooked_tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(textwrap.dedent(HOOK_CONFTEST))
    (tests / "test_probe.py").write_text(
        "def test_probe(eksid_workload, eksid_probe):\n    assert eksid_probe.result\n"
    )
    run = run_pytest(
        f"--profile={profile}", "--eksid-keep-pods", str(tests), tmp_path=tmp_path, env=dict(running.connection.env)
    )
    outcomes = {k.rsplit("[", 1)[-1]: v for k, v in run.outcomes.items()}
    assert outcomes == {"hooked/invoice-exporter]": "passed", "hooked/billing-worker]": "error"}, run.stdout[-3000:]
    assert "hook changed the probe pod's spec.serviceAccountName" in run.stdout
    pods = running.kube.list_pods(f"{MANAGED_BY}={MANAGED_BY_VALUE}")
    assert [
        (p["metadata"]["labels"][WORKLOAD_LABEL], p["metadata"]["annotations"].get("example.com/cost-center"))
        for p in pods
    ] == [("invoice-exporter", "cc-invoice-exporter")]
    assert pods[0]["spec"]["serviceAccountName"] == "invoice-exporter-aws-sa"


# --- xdist ownership -----------------------------------------------------------------------------


class FakeController:
    """What pytest_configure_node reads of an xdist worker controller and its config."""

    def __init__(self, workerid: str, count: int, settings: Settings, dist: str = "load") -> None:
        self.workerinput: dict[str, Any] = {"workerid": workerid, "workercount": count}
        self.config = self
        self.stash = pytest.Stash()
        self.stash[SETTINGS_KEY] = settings
        self.dist = dist

    def getvalue(self, name: str) -> Any:
        return {"dist": self.dist}[name]


def test_the_controller_deals_each_workload_to_one_worker_through_workerinput(tmp_path):
    demo = load_profile("demo", REPO)
    data = demo_data()
    data["cluster"]["name"] = "east"
    east = load_profile(str(write_profile(tmp_path, data, "east")), tmp_path)
    settings = Settings(profiles=(Setting(demo, "--profile"), Setting(east, "--profile")))
    owned = []
    for i in range(3):
        node = FakeController(f"gw{i}", 3, settings)
        pytest_configure_node(node)
        assert node.workerinput[DIST_WORKERINPUT] == "load"
        owned.append(node.workerinput[OWNED_WORKERINPUT])
    every = sorted(f"{p.name}/{w.name}" for p in (demo, east) for w in p.profile.workloads)
    assert sorted(key for keys in owned for key in keys) == every  # each workload owned once
    assert all(owned), owned  # and spread
    replacement = FakeController("gw3", 3, settings)  # a worker started after a crash owns nothing up front
    pytest_configure_node(replacement)
    assert replacement.workerinput[OWNED_WORKERINPUT] == []
    grouped = FakeController("gw0", 3, settings, dist="loadgroup")
    pytest_configure_node(grouped)
    assert OWNED_WORKERINPUT not in grouped.workerinput


def test_the_probe_contract_allows_additions_and_names_each_change():
    demo = load_profile("demo", REPO)
    workload = demo.profile.workloads[0]
    manifest = probe_pod_manifest(demo.profile, workload, "run-1")
    before = probe_contract(manifest)
    manifest["metadata"]["annotations"] = {"example.com/team": "a"}
    manifest["spec"]["priorityClassName"] = "eksid-probes"
    manifest["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    check_contract(before, probe_contract(manifest))  # additions are fine
    manifest["spec"]["securityContext"]["runAsNonRoot"] = False
    manifest["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    with pytest.raises(ProbeError, match=r"changed the probe pod's spec\.securityContext, spec\.containers \(count\)"):
        check_contract(before, probe_contract(manifest))
