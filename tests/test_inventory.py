"""The inventory as a record over time (pytest_eksid.inventory): one row per identity found, declared or not,
the baseline file an earlier run wrote, and what changed since it. Plain data; the runs are in
tests/test_report_inventory_runs.py."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from pytest_eksid import inventory, report
from pytest_eksid.checks import identities
from pytest_eksid.inventory import BaselineError, compare, identity_rows, read_baseline
from pytest_eksid.profile import IgnoredIdentity, ProfileError, load_profile
from pytest_eksid.report import FAMILIES, PASS, Results
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile

DEMO = load_profile("demo", REPO)
EXPORTER_ROLE = "arn:aws:iam::111122223333:role/demo-invoice-exporter"
WORKER_ROLE = "arn:aws:iam::111122223333:role/demo-billing-worker"
OTHER_ROLE = "arn:aws:iam::111122223333:role/demo-reporting"


def _found() -> list[dict[str, str]]:
    """What test_undeclared_identities records on the demo with one undeclared and one ignored binding."""
    found = [
        identities.Identity(
            "pod-identity",
            EXPORTER_ROLE,
            "finance-demo",
            "invoice-exporter-aws-sa",
            owner="finance-team",
            created="2026-11-01T00:00:00Z",
            changed="2026-11-29T07:00:00Z",
            source="association a-1",
        ),
        identities.Identity(
            "irsa",
            WORKER_ROLE,
            "billing-demo",
            "billing-worker-aws-sa",
            owner="billing-team",
            created="2026-10-01T00:00:00Z",
        ),
        identities.Identity("iam-trust", EXPORTER_ROLE, source="role trust", admits="S0: Pod Identity, finance-demo"),
        identities.Identity(
            "irsa", OTHER_ROLE, "finance-demo", "report-reader", owner="=cmd()\x1b", created="2026-12-01T00:00:00Z"
        ),
        identities.Identity("irsa", OTHER_ROLE, "kube-system", "addon", created="2026-09-01T00:00:00Z"),
        identities.Identity("iam-trust", "arn:aws:iam::111122223333:role/orphan", admits='S0: Principal "*"'),
    ]
    classified = identities.classify(
        DEMO.profile.model_copy(
            update={"ignore": [IgnoredIdentity(namespace="kube-system", reason="=platform | add-ons")]}
        ),
        found,
    )
    return identities.records(classified)


def _rows(found: list[dict[str, str]] | None = None) -> list[inventory.Row]:
    matrix = {"invoice-exporter": dict.fromkeys(FAMILIES, PASS), "billing-worker": dict.fromkeys(FAMILIES, PASS)}
    become = {"invoice-exporter": ("2", "ServiceAccount ci/deployer, Group devs")}
    return identity_rows(DEMO, matrix, {}, _found() if found is None else found, become, iam_scanned=True)


def test_one_row_per_identity_declared_or_not():
    rows = _rows()
    assert [(r["workload"], r["mechanism"], r["namespace"], r["serviceAccount"], r["status"]) for r in rows] == [
        ("invoice-exporter", "pod-identity", "finance-demo", "invoice-exporter-aws-sa", "declared"),
        ("billing-worker", "irsa", "billing-demo", "billing-worker-aws-sa", "declared"),
        (None, "iam-trust", None, None, "undeclared"),
        (None, "irsa", "finance-demo", "report-reader", "undeclared"),
        (None, "irsa", "kube-system", "addon", "ignored: =platform | add-ons"),
    ]
    exporter, worker, orphan, reader, addon = rows
    assert (exporter["created"], exporter["lastChanged"], exporter["source"]) == (
        "2026-11-01T00:00:00Z",
        "2026-11-29T07:00:00Z",
        "association a-1",
    )
    assert (exporter["canBecomeCount"], exporter["canBecome"]) == ("2", "ServiceAccount ci/deployer, Group devs")
    assert exporter["trust"] == "S0: Pod Identity, finance-demo"  # the declared role's trust, on its binding's row
    assert worker["trust"] == ""  # the account's roles were read and none says it admits this cluster
    assert (worker["canBecomeCount"], worker["lastChanged"]) == (None, None)  # unknown: not "nobody"
    assert all(exporter[f] == PASS for f in FAMILIES)
    assert all(reader[f] == "undeclared" for f in FAMILIES)
    assert all(addon[f] == "ignored: =platform | add-ons" for f in FAMILIES)
    assert (reader["owner"], reader["created"], reader["role"], reader["cluster"]) == (
        "=cmd()\x1b",
        "2026-12-01T00:00:00Z",
        OTHER_ROLE,
        "demo",
    )
    assert orphan["trust"] == 'S0: Principal "*"'


def test_a_declared_workload_the_scan_did_not_find_says_so():
    rows = _rows([r for r in _found() if r["serviceAccount"] != "billing-worker-aws-sa"])
    worker = next(r for r in rows if r["workload"] == "billing-worker")
    assert worker["status"] == "declared, not found"
    assert (worker["role"], worker["owner"]) == (WORKER_ROLE, "billing-team")  # the profile's


def test_without_a_scan_the_rows_are_the_profiles_workloads():
    rows = identity_rows(DEMO, {}, {"invoice-exporter": "2026-11-29T07:00:00Z"}, None)
    assert [(r["workload"], r["status"], r["source"], r["trust"]) for r in rows] == [
        ("invoice-exporter", "declared", "profile", None),
        ("billing-worker", "declared", "profile", None),
    ]
    assert rows[0]["lastChanged"] == "2026-11-29T07:00:00Z"


def test_rows_are_escaped_per_format():
    rows = _rows()
    parsed = list(csv.DictReader(io.StringIO(report.render_inventory(rows, "csv"))))
    addon = parsed[4]
    assert addon["status"] == "ignored: =platform | add-ons"
    assert all(addon[f] == "ignored: =platform | add-ons" for f in FAMILIES)
    assert parsed[3]["owner"] == "'=cmd()\\x1b"  # cluster text: never a formula, never a control character
    assert parsed[0]["identity"] == PASS
    assert parsed[1]["canBecome"] == ""
    md = report.render_inventory(rows, "md").splitlines()
    assert "ignored: =platform \\| add-ons" in md[6]
    cells = [re.split(r"(?<!\\)\|", line[1:-1]) for line in md if not line.startswith("|---")]
    assert {len(c) for c in cells} == {len(report.INVENTORY_COLUMNS)}  # an escaped | ends no cell
    data = json.loads(report.render_inventory(rows, "json"))
    assert data[4]["status"] == "ignored: =platform | add-ons"  # JSON is data: as it was


def test_results_collect_identities_and_who_can_become_once_from_every_phase():
    results = Results()
    found = [json.dumps(r) for r in _found()]
    scope = [("scope", "cluster"), ("profile", "demo"), ("workloads", "invoice-exporter,billing-worker")]
    identity_props = [*scope, *((report.IDENTITY_PROPERTY, f) for f in found), (report.SCAN_PROPERTY, '{"count": 6}')]
    for when in ("setup", "call", "teardown"):
        results.record("t::undeclared", when, "passed", properties=identity_props)
    become = [("workload", "invoice-exporter"), ("can_become_count", "1"), ("can_become", "Group devs")]
    results.record("t::become", "call", "passed", properties=become)
    results.record("t::bad", "call", "passed", properties=[("profile", "demo"), (report.IDENTITY_PROPERTY, "[1")])
    assert results.identities["demo"] == _found()
    assert results.scans["demo"] == {"count": 6}
    assert results.become == {"invoice-exporter": ("1", "Group devs")}


def _row(**values: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = dict.fromkeys(report.INVENTORY_COLUMNS)
    base.update(cluster="demo", mechanism="irsa", namespace="ns", serviceAccount="sa", role=OTHER_ROLE)
    base.update(status="declared", owner="team-a", trust="S0: IRSA, ServiceAccount ns/sa", canBecome="Group devs")
    base.update(values)
    return base


def test_compare_lists_new_removed_and_each_kind_of_change():
    before = [
        _row(),
        _row(serviceAccount="gone"),
        _row(mechanism="pod-identity", serviceAccount="chained", targetRole=None),
        _row(serviceAccount="wide"),
    ]
    after = [
        _row(
            role=WORKER_ROLE,
            owner="team-b",
            canBecome="Group devs, User eve",
        ),
        _row(serviceAccount="wide", trust="S0: IRSA, ServiceAccount ns/sa; S1: IRSA, any"),
        _row(serviceAccount="fresh"),
        _row(mechanism="pod-identity", serviceAccount="chained", targetRole=EXPORTER_ROLE),
    ]
    changes = compare(before, after, scanned=["demo"])
    assert [c.line() for c in changes] == [
        "new: demo irsa ns/fresh: role arn:aws:iam::111122223333:role/demo-reporting, declared",
        "removed: demo irsa ns/gone: role arn:aws:iam::111122223333:role/demo-reporting, declared",
        f"role: demo irsa ns/sa: {OTHER_ROLE} -> {WORKER_ROLE}",
        f"targetRole: demo pod-identity ns/chained: (none) -> {EXPORTER_ROLE}",
        "owner: demo irsa ns/sa: team-a -> team-b",
        "trust: demo irsa ns/wide: now admits S1: IRSA, any",
        "subjects: demo irsa ns/sa: can now become it: User eve",
    ]
    assert compare(before, before, scanned=["demo"]) == []


def test_compare_leaves_out_what_either_side_does_not_know():
    # An inventory of the older format: one row per declared workload, without status, trust, canBecome.
    older = [
        {
            k: v
            for k, v in _row().items()
            if k in ("workload", "cluster", "namespace", "serviceAccount", "mechanism", "role", "targetRole", "owner")
        }
    ]
    assert compare(older, [_row(trust="S9: anything", canBecome="User eve")], scanned=["demo"]) == []
    # Unknown on this run's side (the IAM scan skipped, who_can_become not run): not a change either.
    assert compare([_row()], [_row(trust=None, canBecome=None)], scanned=["demo"]) == []
    # Another role's trust is the role change itself, not a widened trust.
    assert [c.kind for c in compare([_row()], [_row(role=WORKER_ROLE, trust="S5: other")], ["demo"])] == ["role"]
    # A narrowed trust, or fewer subjects, is no widening.
    assert compare([_row()], [_row(trust="", canBecome="")], scanned=["demo"]) == []


def test_compare_only_what_this_run_saw():
    before = [_row(), _row(cluster="other"), _row(serviceAccount="x", status="undeclared")]
    # Another cluster of the baseline, not in this run: not "removed"; this cluster not scanned: its undeclared
    # rows of the baseline are not compared (only the profile's declared rows are known).
    assert compare(before, [_row()], scanned=[]) == []
    assert [c.kind for c in compare(before, [_row()], scanned=["demo"])] == ["removed"]
    # A declared workload whose binding is gone from the cluster is "removed", not present.
    assert [c.kind for c in compare([_row()], [_row(status="declared, not found")], scanned=["demo"])] == ["removed"]


def test_changes_are_escaped():
    hostile = "sa\x1b]0;pwned\x07"
    changes = compare(
        [_row(serviceAccount=hostile, owner="a")], [_row(serviceAccount=hostile, owner="b\u202e")], ["demo"]
    )
    assert len(changes) == 1
    line = changes[0].line()
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert "\\x1b" in line
    assert inventory.next_command(changes[0], "demo") == "kubectl get serviceaccount -n ns <serviceaccount> -o yaml"


def test_next_commands_name_the_identity():
    [change] = compare([], [_row(mechanism="iam-trust", namespace=None, serviceAccount=None)], ["demo"])
    assert inventory.next_command(change, "demo") == (
        "aws iam get-role --role-name demo-reporting --query Role.AssumeRolePolicyDocument"
    )
    [change] = compare([], [_row(mechanism="pod-identity")], ["demo"])
    assert inventory.next_command(change, "demo").startswith(
        "aws eks list-pod-identity-associations --cluster-name demo"
    )


def test_a_baseline_is_the_json_an_earlier_run_wrote(tmp_path: Path):
    path = tmp_path / "old.json"
    path.write_text(report.render_inventory(_rows(), "json"))
    assert read_baseline(path) == _rows()
    # The older format (one row per declared workload, fewer columns): accepted, the missing ones unknown.
    path.write_text(json.dumps([{"workload": "w", "cluster": "demo", "mechanism": "irsa", "lastChanged": None}]))
    [row] = read_baseline(path)
    assert (row["workload"], row["trust"], row["canBecome"], row["status"]) == ("w", None, None, None)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("old.json", "{not json", "not JSON"),
        ("old.json", "[" * 100_000 + "]" * 100_000, "not JSON"),
        ("old.json", '{"rows": []}', "expected a JSON list of rows"),
        ("old.json", "[1]", "row 0: expected an object with columns, got int"),
        ("old.json", '[{"cluster": "demo", "mechanism": "irsa", "role": {"x": 1}}]', "row 0: column 'role' is dict"),
        ("old.json", '[{"workload": "w"}]', "row 0: no cluster or mechanism"),
        ("old.csv", "workload\n", "a baseline is an earlier run's JSON inventory"),
        ("old.json", "\udcff", "not JSON"),
        ("missing.json", None, "cannot read it"),
    ],
)
def test_a_file_that_is_no_inventory_is_one_line_saying_why(tmp_path: Path, name, content, says):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(BaselineError) as info:
        read_baseline(path)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert message.isprintable()


def test_a_huge_baseline_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "old.json"
    path.write_text("[]" + " " * 100)
    monkeypatch.setattr(inventory, "MAX_BASELINE_BYTES", 50)
    with pytest.raises(BaselineError, match="more than an inventory"):
        read_baseline(path)


def test_profile_inventory_fail_on_changes(tmp_path: Path):
    data = demo_data()
    data["inventory"] = {"failOnChanges": ["new", "role", "subjects"]}
    loaded = load_profile(str(write_profile(tmp_path, data)), REPO)
    assert loaded.profile.inventory.fail_on_changes == ["new", "role", "subjects"]
    assert DEMO.profile.inventory.fail_on_changes == []
    for bad, says in ((["renamed"], "renamed"), (["new", "new"], "listed twice: new"), ("new", "")):
        data["inventory"] = {"failOnChanges": bad}
        with pytest.raises(ProfileError, match=r"inventory\.failOnChanges") as info:
            load_profile(str(write_profile(tmp_path, data)), REPO)
        assert says in str(info.value)
