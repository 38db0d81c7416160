"""``-n N``: each workload's tests run on one worker, and only that worker probes it.

Both workers of the run reach the same emulated cluster, started here, as two processes reach a
live cluster: every probe pod they launch is then visible in one place.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from pytest_eksid.grouping import owners, worker_index, workload_scope
from pytest_eksid.probe.pod import MANAGED_BY, MANAGED_BY_VALUE, WORKLOAD_LABEL
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest
from tests.helpers.sandboxes import Running

WORKLOADS = ("invoice-exporter", "billing-worker")


def test_plain_n_gives_each_workload_one_worker_and_one_probe(tmp_path, start_sandbox: Callable[..., Running]):
    running = start_sandbox(demo_data())
    live: dict[str, Any] = demo_data()
    del live["sandbox"]
    live["cluster"]["kubeconfig"] = str(running.connection.kubeconfig)
    live["cluster"]["kubeContext"] = running.connection.context
    path = write_profile(tmp_path, live, "shared")
    run = run_pytest(
        f"--profile={path}",
        "-n",
        "2",
        "-v",
        "--eksid-keep-pods",
        "suites/test_identity.py",
        "suites/test_permissions.py",
        tmp_path=tmp_path,
        env=dict(running.connection.env),
    )
    assert run.returncode == 0, run.stdout[-4000:]
    ran_on: dict[str, set[str]] = {w: set() for w in WORKLOADS}
    for line in run.stdout.splitlines():
        found = re.match(r"\[(gw\d+)\] .*PASSED \S+\[shared/([\w-]+?)[\]/]", line)
        if found:
            ran_on[found.group(2)].add(found.group(1))
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on
    assert set().union(*ran_on.values()) == {"gw0", "gw1"}, ran_on  # and the work was shared
    pods = running.kube.list_pods(f"{MANAGED_BY}={MANAGED_BY_VALUE}")
    probed = Counter(p["metadata"]["labels"][WORKLOAD_LABEL] for p in pods)
    assert probed == Counter(WORKLOADS), probed  # one probe pod per workload, not one per worker


def test_workload_scope_reads_the_workload_from_the_test_id():
    names = {"demo": ["invoice", "invoice-exporter"], "demo-east": ["invoice-exporter"]}
    assert workload_scope("suites/t.py::test_caller_role[demo/invoice-exporter]", names) == "demo/invoice-exporter"
    assert workload_scope("suites/t.py::test_caller_role[demo/invoice]", names) == "demo/invoice"
    assert workload_scope("suites/t.py::test_action[demo/invoice/allow-0:s3:GetObject]", names) == "demo/invoice"
    assert workload_scope("suites/t.py::test_imds_blocked[demo/invoice-exporter@ng-batch-v1]", names) == (
        "demo/invoice-exporter"
    )
    assert workload_scope("suites/t.py::test_x[demo-east/invoice-exporter-v2]", names) == "demo-east/invoice-exporter"
    assert workload_scope("suites/t.py::test_x[demo/other]", names) is None
    assert workload_scope("tests/test_mine.py::test_plain", names) is None


def test_owners_are_the_same_whatever_order_the_scopes_come_in():
    scopes = ["demo/b", "demo/a", "east/a", "demo/c"]
    assert owners(scopes, 2) == owners(reversed(scopes), 2) == {"demo/a": 0, "demo/b": 1, "demo/c": 0, "east/a": 1}
    assert worker_index("gw12") == 12
    assert worker_index("main") is None


class FakeNode:
    """What WorkloadScheduling uses of an xdist worker controller."""

    def __init__(self, index: int, count: int) -> None:
        self.gateway = type("Gateway", (), {"id": f"gw{index}"})()
        self.workerinput = {"workerid": f"gw{index}", "workercount": count}
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


class FakeConfig:
    """What xdist's scope scheduler reads of the config: two local workers."""

    option = type("Option", (), {"loadscopereorder": True})()

    def getvalue(self, name: str) -> Any:
        return {"tx": ["2*popen"]}[name]


def test_the_scheduler_deals_workloads_as_the_workers_do_whatever_else_is_collected():
    from pytest_eksid.grouping import WorkloadScheduling

    names = {"demo": ["billing-worker", "invoice-exporter"]}
    collection = [
        "checks/test_nodes.py::test_a",  # sorts before "eksid:": must not shift the workloads' deal
        "suites/test_identity.py::test_caller_role[demo/invoice-exporter]",
        "suites/test_identity.py::test_caller_role[demo/billing-worker]",
        "suites/test_permissions.py::test_action[demo/invoice-exporter/allow-0:s3:PutObject]",
        "tests/test_z.py::test_b",
    ]
    scheduler = WorkloadScheduling(FakeConfig(), None, workloads=names)
    nodes = [FakeNode(0, 2), FakeNode(1, 2)]
    for node in nodes:
        scheduler.add_node(node)
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()
    got = {
        workload_scope(collection[i], names): node.gateway.id
        for node in nodes
        for i in node.sent
        if workload_scope(collection[i], names)
    }
    planned = owners([s for s in (workload_scope(n, names) for n in collection) if s], 2)
    assert got == {scope: f"gw{i}" for scope, i in planned.items()}
    assert sorted(i for node in nodes for i in node.sent) == list(range(len(collection)))  # each test once
    assert all(node.shutting_down for node in nodes)
