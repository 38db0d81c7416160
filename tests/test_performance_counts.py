"""What a run costs the cluster's API server and AWS: requests counted per method, per workload and per run.

No timing here (docs/performance.md has the figures): the counts are what a real cluster charges for.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.aws import Aws, AwsError
from pytest_eksid.kube import _labels_match, equality_selector
from pytest_eksid.stats import RunStats
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import pytester_run, run_pytest

COPIES = 3  # of each demo workload: 6 workloads, 2 roles


def _counts(stdout: str, label: str) -> Counter[str]:
    """The run's '<label> calls: N (method n, ...)' progress line, as a Counter."""
    found = re.search(rf"^eksid: {label} calls: (\d+) \((.*)\)$", stdout, re.M)
    assert found, stdout[-3000:]
    counts: Counter[str] = Counter()
    for part in found.group(2).split(", "):
        name, _, n = part.rpartition(" ")
        counts[name] = int(n)
    assert sum(counts.values()) == int(found.group(1))
    return counts


def six_workloads() -> dict[str, Any]:
    """The demo profile with each workload three times (each copy its own ServiceAccount, the same role)."""
    data = demo_data()
    workloads = []
    for original in data["workloads"]:
        for i in range(COPIES):
            w = copy.deepcopy(original)
            if i:
                w["name"] = f"{original['name']}-{i}"
                w["serviceAccount"] = f"{original['serviceAccount']}-{i}"
            workloads.append(w)
    data["workloads"] = workloads
    return data


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, int]:
    """The demo suites on six workloads: (output, workloads, probe pods); its --eksid-stats file is stats.json."""
    tmp_path = tmp_path_factory.mktemp("counts")
    data = six_workloads()
    path = write_profile(tmp_path, data, "six")
    stats = tmp_path / "stats.json"
    run = run_pytest(
        f"--profile={path}",
        "suites",
        "-v",
        "-k",
        "not who_can_become",
        f"--eksid-stats={stats}",
        tmp_path=tmp_path,
        timeout=600,
    )
    assert run.outcomes, run.stdout[-4000:] + run.stderr[-2000:]
    workloads = len(data["workloads"])
    return run.stdout, workloads, workloads * len(data["probe"]["nodeGroups"])


def _stats_file(stdout: str) -> dict[str, Any]:
    found = re.search(r"^eksid: stats written to (\S+) \(from --eksid-stats\)$", stdout, re.M)
    assert found, stdout[-3000:]
    data: dict[str, Any] = json.loads(Path(found.group(1)).read_text())
    return data


def test_kubernetes_calls_are_four_per_probe_pod_and_the_rest_per_namespace_or_run(demo_run):
    stdout, _workloads, pods = demo_run
    calls = _counts(stdout, "kubernetes")
    # Per probe pod: its create, its log, one read after the log (the check that it was not swapped), its delete.
    per_pod = ("create_namespaced_pod", "read_namespaced_pod_log", "read_namespaced_pod", "delete_namespaced_pod")
    assert {m: calls[m] for m in per_pod} == dict.fromkeys(per_pod, pods), calls
    # The waiting is one LIST and one watch for all of them: no polling, however long the pods take.
    assert calls["list_pod_for_all_namespaces"] == 1, calls
    assert calls["watch list_pod_for_all_namespaces"] == 1, calls
    # Nothing else per workload: the pod templates are listed per namespace (2 here), the ServiceAccounts once.
    assert calls["list_namespaced_deployment"] == calls["list_namespaced_stateful_set"] == 2, calls
    assert calls["read_namespaced_service_account"] == 0, calls
    assert calls["list_service_account_for_all_namespaces"] == 1, calls
    # The agent's pods are listed once for every Pod Identity workload's coverage check (three here).
    assert calls["list_namespaced_pod"] == 1, calls
    # The rest is per run or per namespace (2 here, and the agent's): once each, whatever the number of workloads.
    rest = {m: n for m, n in calls.items() if m not in per_pod}
    assert all(n <= 3 for n in rest.values()), rest
    # A constant: per namespace (2 here) the Secret/ConfigMap/template lists; per run the nodes, the agent
    # DaemonSet, the ServiceAccounts, the four RBAC lists and one SelfSubjectReview (who can become the
    # undeclared identities' ServiceAccounts, test_undeclared_identities).
    assert sum(rest.values()) <= 25, rest


def test_aws_reads_each_role_once_and_the_associations_once_per_cluster(demo_run):
    stdout, _workloads, pods = demo_run
    calls = _counts(stdout, "aws")
    roles = 2  # demo-invoice-exporter and demo-billing-worker, each bound to three workloads
    assert calls["iam:GetRole"] == roles, calls
    assert calls["iam:ListRolePolicies"] == roles, calls
    assert calls["iam:ListAttachedRolePolicies"] == roles, calls
    assert calls["eks:ListPodIdentityAssociations"] == 1, calls
    assert calls["eks:DescribeCluster"] == 1, calls
    assert calls["eks:DescribeAddon"] == 1, calls
    assert calls["iam:ListOpenIDConnectProviders"] == 1, calls
    assert calls["sts:GetCallerIdentity"] == 1, calls  # the runner's own identity, once
    assert calls["iam:ListAccessKeys"] == 1, calls  # one legacy user, shared by three workloads
    # One proof per pod that ran its identity step (the IMDS-only probes have none).
    assert calls["sts:GetCallerIdentity (a probe's proof)"] <= pods, calls


def test_the_stats_file_holds_the_printed_counts_the_services_and_the_probes(demo_run):
    stdout, _workloads, pods = demo_run
    data = _stats_file(stdout)
    cluster = data["clusters"]["six"]
    for kind in ("kubernetes", "aws"):
        assert Counter(cluster[kind]["calls"]) == _counts(stdout, kind), kind
        assert cluster[kind]["total"] == sum(_counts(stdout, kind).values()), kind
        assert data["totals"][kind] == cluster[kind]["total"], kind
    services = Counter()
    for call, n in cluster["aws"]["calls"].items():
        services[call.split(":")[0]] += n
    assert cluster["aws"]["services"] == dict(services)
    assert set(cluster["aws"]["services"]) >= {"iam", "eks", "sts"}, cluster["aws"]["services"]
    # Every probe pod's result came back with its own run time (docs/probe.md: seconds.total).
    assert cluster["probes"]["count"] == pods, cluster["probes"]
    assert 0 < cluster["probes"]["seconds_median"] <= cluster["probes"]["seconds_max"], cluster["probes"]
    # One process without xdist: its CPU and peak memory (whatever they are: no timing asserted).
    assert list(data["processes"]) == ["main"], data["processes"]
    assert data["processes"]["main"]["cpu_seconds"] > 0
    assert data["processes"]["main"]["peak_rss_mib"] > 0


def test_the_waiting_by_watch_is_said_to_fall_back_to_polling_nowhere(demo_run):
    stdout, _workloads, _pods = demo_run
    assert "by polling" not in stdout


# A conftest for a run under pytest-xdist that makes no request itself: each worker records what its engine
# would have counted, and the controller must add them up (a test module of its own then checks nothing else).
_WORKER_COUNTS = """
import pytest
from pytest_eksid.fixtures import STATS_KEY

def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        stats = session.config.stash[STATS_KEY]
        stats.add_calls("demo", "kubernetes", {"list_node": 1, "create_namespaced_pod": 2})
        stats.add_calls("demo", "aws", {"iam:GetRole": 3, "sts:GetCallerIdentity (a probe's proof)": 1})
        stats.add_probes("demo", [1.5])
"""


def test_under_xdist_the_workers_counts_reach_the_controller_and_are_summed(user_pytester: pytest.Pytester):
    user_pytester.makeconftest(_WORKER_COUNTS)
    user_pytester.makepyfile(test_nothing="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    demo = REPO / "profiles" / "demo.yaml"
    result = pytester_run(
        user_pytester,
        f"--profile={demo}",
        "-n",
        "2",
        "-p",
        "no:randomly",
        "-v",
        "--eksid-stats=out/stats.json",
        timeout=300,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "eksid: kubernetes calls: 6 (create_namespaced_pod 4, list_node 2)",
            "eksid: aws calls: 8 (iam:GetRole 6, sts:GetCallerIdentity (a probe's proof) 2)",
            "eksid: stats written to *stats.json (from --eksid-stats)",
        ]
    )
    data = json.loads((user_pytester.path / "out" / "stats.json").read_text())
    cluster = data["clusters"]["demo"]
    assert cluster["kubernetes"] == {"total": 6, "calls": {"create_namespaced_pod": 4, "list_node": 2}}
    assert cluster["aws"]["services"] == {"iam": 6, "sts": 2}
    assert cluster["probes"] == {"count": 2, "seconds_median": 1.5, "seconds_max": 1.5}
    assert set(data["processes"]) == {"controller", "gw0", "gw1"}, data["processes"]
    assert all(p["cpu_seconds"] > 0 and p["peak_rss_mib"] > 0 for p in data["processes"].values())


def test_a_stats_file_that_is_not_json_is_a_usage_error(user_pytester: pytest.Pytester):
    user_pytester.makepyfile(test_nothing="def test_a():\n    pass\n")
    result = pytester_run(user_pytester, "--eksid-stats=stats.txt", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --eksid-stats: 'stats.txt': the stats are written as JSON: name a .json file"])


def test_a_stats_file_that_cannot_be_written_fails_the_run_saying_why_even_under_q(user_pytester: pytest.Pytester):
    user_pytester.makepyfile(test_nothing="def test_a():\n    pass\n")
    (user_pytester.path / "blocker").write_text("a file, not a directory")
    profile = REPO / "profiles" / "demo.yaml"
    result = pytester_run(
        user_pytester, "-q", f"--profile={profile}", "--eksid-stats=blocker/stats.json", "test_nothing.py", timeout=120
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["eksid: ERROR: cannot write the stats to */blocker/stats.json: *"])


def test_stats_merge_adds_requests_and_keeps_processes_apart():
    run = RunStats()
    for worker, n in (("gw0", 1), ("gw1", 2)):
        mine = RunStats()
        mine.add_calls("demo", "kubernetes", {"list_node": n})
        mine.add_calls("demo", "aws", {"iam:GetRole": n, "eks:DescribeCluster": 1})
        mine.add_probes("demo", [float(n)])
        mine.add_process(worker, {"cpu_seconds": float(n), "peak_rss_mib": 100.0 * n})
        run.merge(json.loads(json.dumps(mine.as_dict())))  # as execnet carries it: plain data
    run.add_process("controller", {"cpu_seconds": 0.5, "peak_rss_mib": 50.0})
    doc = run.document(["demo", "other"])
    assert doc["clusters"]["demo"]["kubernetes"] == {"total": 3, "calls": {"list_node": 3}}
    assert doc["clusters"]["demo"]["aws"]["services"] == {"eks": 2, "iam": 3}
    assert doc["clusters"]["demo"]["probes"] == {"count": 2, "seconds_median": 1.5, "seconds_max": 2.0}
    assert doc["clusters"]["other"]["kubernetes"]["total"] == 0  # a cluster never reached: zeros, no error
    assert doc["clusters"]["other"]["probes"]["seconds_max"] is None
    assert doc["totals"] == {"kubernetes": 3, "aws": 5, "cpu_seconds": 3.5, "peak_rss_mib_sum": 350.0}
    assert run.lines(["demo"], verbose=False) == [
        "eksid: kubernetes calls: 3 (-v lists them)",
        "eksid: aws calls: 5 (-v lists them)",
    ]
    assert run.lines(["demo", "other"], verbose=True)[0] == "eksid: demo: kubernetes calls: 3 (list_node 3)"


class _Announcing(threading.Event):
    """An event that says when someone starts waiting on it."""

    def __init__(self, waiting: threading.Event) -> None:
        super().__init__()
        self.waiting = waiting

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def _second_caller_waits(aws: Aws, key: tuple[str, ...], fetch: Any) -> tuple[list[Any], threading.Event]:
    """Start a first caller whose fetch blocks until released, then a second caller of the same key; return the
    results list (filled by both) and the release event, once the second caller is waiting on the first."""
    entered, release, waiting = threading.Event(), threading.Event(), threading.Event()
    results: list[Any] = []

    def blocking() -> Any:
        entered.set()
        assert release.wait(60)
        return fetch()

    def call(f: Any) -> None:
        try:
            results.append(aws._cached(key, f))
        except AwsError as exc:
            results.append(exc)

    first = threading.Thread(target=call, args=(blocking,))
    first.start()
    assert entered.wait(60)
    with aws._lock:
        flight = aws._flights[key]
        flight.done = _Announcing(waiting)
    second = threading.Thread(target=call, args=(fetch,))
    second.start()
    assert waiting.wait(60)
    release.set()
    first.join(60)
    second.join(60)
    return results, release


def test_a_second_caller_of_the_same_read_waits_for_the_first_instead_of_fetching():
    aws = Aws(region="eu-west-1")
    fetched: list[int] = []

    def fetch() -> dict[str, int]:
        fetched.append(1)
        return {"n": len(fetched)}

    results, _ = _second_caller_waits(aws, ("iam", "GetRole", "r"), fetch)
    assert fetched == [1]
    assert results == [{"n": 1}, {"n": 1}]
    assert results[0] is results[1]
    assert aws._cached(("iam", "GetRole", "r"), fetch) == {"n": 1}  # cached
    assert fetched == [1]


def test_a_failed_read_fails_its_waiters_too_and_is_tried_again_later():
    from botocore.exceptions import ClientError

    aws = Aws(region="eu-west-1")
    fetched: list[int] = []

    def fetch() -> str:
        fetched.append(1)
        if len(fetched) == 1:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "GetRole")
        return "ok"

    results, _ = _second_caller_waits(aws, ("iam", "GetRole", "r"), fetch)
    assert fetched == [1]
    assert [str(r) for r in results] == ["iam.GetRole: Throttling: Rate exceeded"] * 2
    assert aws._cached(("iam", "GetRole", "r"), fetch) == "ok"
    assert fetched == [1, 1]


def test_aws_clients_retry_adaptively(tmp_path: Path):
    aws = Aws(region="eu-west-1", env={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"})
    config = aws._client("iam").meta.config
    assert config.retries["mode"] == "adaptive"
    assert config.retries["total_max_attempts"] >= 5


@pytest.mark.parametrize(
    ("selector", "terms"),
    [
        ("app.kubernetes.io/name=billing", [("app.kubernetes.io/name", True, "billing")]),
        ("a==b, c!=d", [("a", True, "b"), ("c", False, "d")]),
        ("", []),
        ("tier=", [("tier", True, "")]),
        # left to the API server: set-based, existence, or not a valid selector
        ("env in (prod)", None),
        ("!canary", None),
        ("canary", None),
        ("a=b,", None),
        ("a=b=c", None),
        ("a=b c", None),
        ("a=" + "v" * 64, None),
    ],
)
def test_equality_selectors_are_matched_here_and_the_others_left_to_the_api_server(selector, terms):
    assert equality_selector(selector) == terms


def test_an_equality_selector_matches_as_the_api_server_does():
    terms = equality_selector("app=web,tier!=db")
    assert terms is not None
    assert _labels_match(terms, {"app": "web"})  # != holds where the key is absent
    assert _labels_match(terms, {"app": "web", "tier": "front"})
    assert not _labels_match(terms, {"app": "web", "tier": "db"})
    assert not _labels_match(terms, {"app": "web2"})
    assert not _labels_match(terms, None)
    empty = equality_selector("tier=")
    assert empty is not None
    assert not _labels_match(empty, {})  # = needs the key, with the empty value
    assert _labels_match(empty, {"tier": ""})
