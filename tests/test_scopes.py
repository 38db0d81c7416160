"""Cluster- and namespace-scoped checks run once per cluster and once per namespace, whatever the number of
workloads, with their own ids; a workload without allow or deny entries is shown as unproven."""

from __future__ import annotations

import copy

import pytest

from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

CLUSTER_TESTS = (
    "suites/test_agent.py::test_agent_daemonset_available",
    "suites/test_agent.py::test_agent_addon_active",
    "suites/test_agent.py::test_oidc_provider",
)
NAMESPACE_TEST = "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps"


def many_workloads(count: int) -> dict:
    """A live-cluster profile (nothing is reached at collection) with ``count`` Pod Identity and ``count`` IRSA
    workloads in two namespaces."""
    data = demo_data()
    data.pop("sandbox")
    base = {w["mechanism"]: w for w in data["workloads"]}
    data["workloads"] = []
    for mechanism, w in sorted(base.items()):
        for i in range(count):
            entry = copy.deepcopy(w)
            entry["name"] = f"{mechanism}-{i}"
            entry["serviceAccount"] = f"{mechanism}-{i}-sa"
            data["workloads"].append(entry)
    return data


def collected(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if "::" in line and not line.startswith(" ")]


def test_cluster_and_namespace_tests_are_collected_once(tmp_path):
    profile = write_profile(tmp_path, many_workloads(20), "many")
    run = run_pytest(f"--profile={profile}", "--collect-only", "-q", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    ids = collected(run.stdout)
    for test in CLUSTER_TESTS:
        assert [i for i in ids if i.startswith(test + "[")] == [f"{test}[many]"]
    namespaces = sorted({w["namespace"] for w in many_workloads(1)["workloads"]})
    assert [i for i in ids if i.startswith(NAMESPACE_TEST + "[")] == [
        f"{NAMESPACE_TEST}[many/ns/{ns}]" for ns in namespaces
    ]
    # per-workload tests still run per workload
    assert len([i for i in ids if "::test_caller_role[" in i]) == 40


def test_a_cluster_test_runs_only_where_one_of_its_workloads_applies(tmp_path):
    data = many_workloads(2)
    data["workloads"] = [w for w in data["workloads"] if w["mechanism"] == "irsa"]
    run = run_pytest(
        f"--profile={write_profile(tmp_path, data, 'irsaonly')}", "--collect-only", "-q", tmp_path=tmp_path
    )
    ids = collected(run.stdout)
    assert "suites/test_agent.py::test_oidc_provider[irsaonly]" in ids
    assert not [i for i in ids if "test_agent_daemonset_available" in i or "test_agent_addon_active" in i]


@pytest.mark.parametrize("require", [False, True])
def test_workload_without_deny_entries_is_unproven(tmp_path, require):
    data = demo_data()
    billing = next(w for w in data["workloads"] if w["name"] == "billing-worker")
    billing["deny"] = []
    args = ["-k", "test_contract_declared or test_action", "-rs"] + (["--eksid-require-contract"] if require else [])
    run = run_pytest(f"--profile={write_profile(tmp_path, data, 'contract')}", *args, tmp_path=tmp_path)
    test = "suites/test_permissions.py::test_contract_declared[contract/billing-worker]"
    assert "permissions unproven for 1 workload(s): billing-worker (no deny entries)" in run.stdout
    if require:
        assert run.returncode == 1
        assert run.outcomes[test] == "failed"
    else:
        assert run.returncode == 0, run.stdout[-3000:]
        assert run.outcomes[test] == "skipped"
        assert "UNPROVEN" in run.messages[test]
        row = next(line for line in run.stdout.splitlines() if line.startswith("billing-worker "))
        assert row.split()[2] == "unproven", row
    assert run.outcomes["suites/test_permissions.py::test_contract_declared[contract/invoice-exporter]"] == "passed"
