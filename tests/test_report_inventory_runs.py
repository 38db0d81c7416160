"""The inventory of real demo runs, as a user runs them: a row per identity of the cluster (declared or not) in
json, csv and md, under xdist too, and the changes since an earlier run's inventory (--eksid-inventory-baseline)
in the summary and in test_inventory_changes. test_who_can_become is left out to keep these runs short (its
canBecome columns are covered by tests/test_inventory.py)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

FAMILIES = ["identity", "permissions", "imds", "agent", "static_credentials", "configuration"]
ACCOUNT = "arn:aws:iam::111122223333"
OWNER = "platform.mycompany.io/identity-owner"
UNDECLARED = "suites/test_identities.py::test_undeclared_identities[demo]"
CHANGES = "suites/test_identities.py::test_inventory_changes[demo]"
NOT_RBAC = ("-k", "not who_can_become")


def _sa(namespace: str, name: str, role: str, owner: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": {"eks.amazonaws.com/role-arn": f"{ACCOUNT}:role/{role}"},
    }
    if owner is not None:
        meta["labels"] = {OWNER: owner}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def variant(
    tmp_path: Path,
    name: str,
    *,
    reader_role: str = "demo-reporting",
    reader_owner: str = "reports-team",
    addon: bool = True,
    late: bool = False,
    fail_on: list[str] | None = None,
) -> Path:
    """The demo plus identities its profile does not declare: an IRSA ServiceAccount bound to demo-reporting
    (undeclared), a kube-system one (ignored, with a reason) and a role whose trust admits any Pod Identity
    association of the cluster (undeclared)."""
    data = demo_data()
    manifests = [_sa("finance-demo", "report-reader", reader_role, reader_owner)]
    if addon:
        manifests.append(_sa("kube-system", "addon", "demo-reporting"))
    if late:
        manifests.append(_sa("billing-demo", "late-joiner", "demo-reporting"))
    data["sandbox"]["manifests"] = manifests
    data["sandbox"]["roles"].append(
        {
            "name": "demo-orphan",
            "policy": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": ["*"]}],
            },
            "trustPolicy": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AnyPod",
                        "Effect": "Allow",
                        "Principal": {"Service": "pods.eks.amazonaws.com"},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                    }
                ],
            },
        }
    )
    data["ignore"] = [{"namespace": "kube-system", "reason": "platform add-on | =managed by EKS"}]
    if fail_on is not None:
        data["inventory"] = {"failOnChanges": fail_on}
    directory = tmp_path / name
    directory.mkdir()
    return write_profile(directory, data, "demo")


def _undeclared(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{r['mechanism']} {r['namespace'] or r['role']}/{r['serviceAccount']}": r for r in rows if not r["workload"]
    }


def test_inventory_rows_of_every_identity_under_xdist_and_the_changes_since(tmp_path: Path):
    first = variant(tmp_path, "first")
    out = tmp_path / "out"
    out.mkdir()
    run = run_pytest(
        f"--profile={first}", *NOT_RBAC, "-n", "2", f"--eksid-inventory={out / 'inv.json'}", tmp_path=out, timeout=600
    )
    assert run.outcomes[UNDECLARED] == "failed", run.stdout[-4000:]
    assert CHANGES not in run.outcomes  # no baseline: deselected (opt-in), not skipped
    rows = json.loads((out / "inv.json").read_text())
    assert [r["workload"] for r in rows[:2]] == ["invoice-exporter", "billing-worker"]
    exporter, worker = rows[:2]
    assert (exporter["status"], exporter["source"][:12], exporter["owner"]) == (
        "declared",
        "association ",
        "finance-team",
    )
    assert exporter["trust"].endswith("Pod Identity, namespace finance-demo, ServiceAccount invoice-exporter-aws-sa")
    assert exporter["identity"] == "pass"  # conformance of the declared ones, from the workers' reports
    assert exporter["configuration"] == "FAIL"  # the cluster's undeclared identities fold into every row
    assert (worker["mechanism"], worker["lastChanged"], worker["created"][:2]) == ("irsa", None, "20")
    others = _undeclared(rows)
    assert set(others) == {
        f"iam-trust {ACCOUNT}:role/demo-orphan/None",
        "irsa finance-demo/report-reader",
        "irsa kube-system/addon",
    }
    reader = others["irsa finance-demo/report-reader"]
    assert (reader["role"], reader["owner"], reader["status"], reader["cluster"]) == (
        f"{ACCOUNT}:role/demo-reporting",
        "reports-team",
        "undeclared",
        "demo",
    )
    assert all(reader[f] == "undeclared" for f in FAMILIES)
    assert reader["created"]
    # asked for undeclared ServiceAccounts too: nobody but the platform can run code as this one
    assert (reader["canBecomeCount"], reader["canBecome"]) == ("0", ""), reader
    addon = others["irsa kube-system/addon"]
    assert addon["status"] == "ignored: platform add-on | =managed by EKS"
    assert "Pod Identity" in others[f"iam-trust {ACCOUNT}:role/demo-orphan/None"]["trust"]

    # The next night: report-reader now bound to another role, with another owner; the add-on gone; a new one.
    second = variant(
        tmp_path,
        "second",
        reader_role="demo-billing-worker",
        reader_owner="someone-else",
        addon=False,
        late=True,
        fail_on=["new", "role"],
    )
    again = run_pytest(
        f"--profile={second}",
        "suites/test_identities.py",
        *NOT_RBAC,
        "-n",
        "2",  # test_inventory_changes compares from the cluster's reads, not from other tests' reports
        f"--eksid-inventory-baseline={out / 'inv.json'}",
        f"--eksid-inventory={out / 'inv.csv'}",
        tmp_path=out,
    )
    assert again.outcomes[CHANGES] == "failed", again.stdout[-4000:]
    lines = again.stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.fullmatch(r"-+ eksid inventory changes since .* \(4\) -+", line)
    )
    summary = lines[start:]
    assert summary[1:5] == [
        "new: demo irsa billing-demo/late-joiner: role arn:aws:iam::111122223333:role/demo-reporting, undeclared",
        "removed: demo irsa kube-system/addon: role arn:aws:iam::111122223333:role/demo-reporting, "
        "ignored: platform add-on | =managed by EKS",
        "role: demo irsa finance-demo/report-reader: arn:aws:iam::111122223333:role/demo-reporting -> "
        "arn:aws:iam::111122223333:role/demo-billing-worker",
        "owner: demo irsa finance-demo/report-reader: reports-team -> someone-else",
    ]
    # The test fails on the kinds the profile lists (new, role), and reports the others.
    message = again.messages[CHANGES]
    assert "new: demo irsa billing-demo/late-joiner: new since the baseline inventory" in message
    assert "role: demo irsa finance-demo/report-reader: changed since the baseline inventory" in message
    assert "owner: demo" not in message  # reported in the summary, not failed: the profile does not list it
    assert "next:     kubectl get serviceaccount -n finance-demo report-reader -o yaml" in message
    with (out / "inv.csv").open() as fh:
        parsed = {(r["mechanism"], r["namespace"], r["serviceAccount"]): r for r in csv.DictReader(fh)}
    late = parsed[("irsa", "billing-demo", "late-joiner")]
    assert (late["workload"], late["status"], late["identity"]) == ("", "undeclared", "undeclared")
    assert parsed[("irsa", "finance-demo", "report-reader")]["owner"] == "someone-else"


def test_nothing_changed_is_said_and_passes_in_markdown(tmp_path: Path):
    profile = variant(tmp_path, "same", fail_on=["new", "removed", "role", "targetRole", "owner", "trust", "subjects"])
    out = tmp_path / "out"
    out.mkdir()
    base = ("suites/test_identities.py", *NOT_RBAC)
    first = run_pytest(f"--profile={profile}", *base, f"--eksid-inventory={out / 'inv.json'}", tmp_path=out)
    assert first.outcomes[UNDECLARED] == "failed", first.stdout[-4000:]
    # "subjects" needs the RBAC reads the sandbox does not serve yet: leave it out of the second run's policy.
    again = variant(tmp_path, "again", fail_on=["new", "removed", "role", "targetRole", "owner", "trust"])
    run = run_pytest(
        f"--profile={again}",
        *base,
        f"--eksid-inventory-baseline={out / 'inv.json'}",
        f"--eksid-inventory={out / 'inv.md'}",
        tmp_path=out,
    )
    assert run.outcomes[CHANGES] == "passed", run.stdout[-4000:]
    assert "no identity new, removed or changed" in run.stdout
    lines = (out / "inv.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [
        dict(zip(header, (c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])), strict=True)) for line in lines[2:]
    ]
    addon = next(c for c in cells if c["serviceAccount"] == "addon")
    assert addon["status"] == "ignored: platform add-on \\| =managed by EKS"
    assert addon["workload"] == ""
    assert addon["configuration"] == addon["status"]
    assert len(cells) == 5


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{", "not JSON"),
        ('[{"cluster": "demo", "mechanism": "irsa", "owner": 7}]', "row 0: column 'owner' is int"),
        ('"\\u001b]0;owned\\u0007"', "expected a JSON list of rows"),
    ],
)
@pytest.mark.parametrize("where", ["cli", "env"])
def test_a_bad_baseline_is_one_usage_error_line(tmp_path: Path, content: str, says: str, where: str):
    baseline = tmp_path / "old.json"
    baseline.write_text(content)
    if where == "cli":
        run = run_pytest("--profile", "demo", f"--eksid-inventory-baseline={baseline}", tmp_path=tmp_path)
        source = "--eksid-inventory-baseline"
    else:
        run = run_pytest("--profile", "demo", tmp_path=tmp_path, env={"EKSID_INVENTORY_BASELINE": str(baseline)})
        source = "$EKSID_INVENTORY_BASELINE"
    assert run.returncode == 4, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"ERROR: {source}: cannot compare with {baseline}: ")
    assert says in errors[0]
    assert "Traceback" not in run.stdout + run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr
