"""Reports people read: JUnit properties, the terminal matrix, the inventory, Allure metadata.

Plain data in, plain data or text out; no pytest here. The plugin turns pytest's reports into
:class:`Result` records (in the controller, also under pytest-xdist: everything a record needs
travels in the report's ``user_properties``) and hands them to :class:`Results`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_eksid.checks import Finding
from pytest_eksid.escape import csv_cell, markdown_cell, printable
from pytest_eksid.profile import LoadedProfile, Workload, role_arn_parts

# The check families, one per suite module (their pytest markers), in the order a person reads them.
FAMILIES: tuple[str, ...] = ("identity", "permissions", "imds", "agent", "static_credentials", "configuration")
# Narrow column titles, used when the full family names do not fit the terminal.
SHORT_TITLES: dict[str, str] = {
    "identity": "ident",
    "permissions": "perms",
    "imds": "imds",
    "agent": "agent",
    "static_credentials": "static",
    "configuration": "config",
}

# Cell values, worst first: the aggregate of a family is its worst test. "unproven": the profile gives the
# family nothing to prove (no allow or no deny entries) — never shown as a pass.
FAIL, INCONCLUSIVE, UNPROVEN, PASS, SKIP, NONE = "FAIL", "inconclusive", "unproven", "pass", "skip", "-"
_RANK = {FAIL: 0, INCONCLUSIVE: 1, UNPROVEN: 2, PASS: 3, SKIP: 4}

# Allure severity per family (docs/reports.md says why).
SEVERITY: dict[str, str] = {
    "identity": "critical",
    "static_credentials": "critical",
    "imds": "critical",
    "permissions": "critical",
    "agent": "normal",
    "configuration": "normal",
}

INVENTORY_FORMATS: tuple[str, ...] = (".json", ".csv", ".md")
INVENTORY_COLUMNS: tuple[str, ...] = (
    "workload",
    "cluster",
    "namespace",
    "serviceAccount",
    "mechanism",
    "role",
    "targetRole",
    "owner",
    "status",
    "canBecomeCount",
    "canBecome",
    "created",
    "lastChanged",
    "trust",
    "source",
    *FAMILIES,
)
# A family cell this module writes itself; any other (an undeclared row's status, an ignore reason) is escaped.
_OWN_CELLS = frozenset({FAIL, INCONCLUSIVE, UNPROVEN, PASS, SKIP, NONE})

IAM_CONSOLE_ROLE = "https://console.aws.amazon.com/iam/home#/roles/details/{name}"
# The JUnit property carrying a failed Finding's next commands, in order (the failure summary shows the first):
# next steps travel as data, never read back out of a message that cluster text may have written into.
NEXT_PROPERTY = "next"
# One property per finding of a failed test: the Finding's fields as a JSON object (summary, expected, seen,
# likely, next_steps, details, check); the failure summary takes the first one's summary.
FINDING_PROPERTY = "finding"
# A test's eksid outcome when it is not pytest's own: INCONCLUSIVE or UNPROVEN (both skips to pytest, or
# failures with --eksid-inconclusive=fail / --eksid-require-contract).
OUTCOME_PROPERTY = "eksid_outcome"
# test_undeclared_identities: each identity it found, as a JSON object (checks.identities.as_record), and what
# its scan covered ({"count": n, "iam": true|false}); pytest_eksid.inventory builds the inventory's rows of them.
IDENTITY_PROPERTY = "identity"
SCAN_PROPERTY = "identity_scan"


def finding_properties(findings: Iterable[Finding]) -> list[tuple[str, str]]:
    """A failed test's findings as report properties: each as JSON, then all their next commands in order."""
    listed = list(findings)
    props = [(FINDING_PROPERTY, json.dumps(dataclasses.asdict(f), sort_keys=True)) for f in listed]
    return props + [(NEXT_PROPERTY, cmd) for f in listed for cmd in f.next_steps]


def junit_properties(profile: LoadedProfile, workload: Workload, family: str | None) -> list[tuple[str, str]]:
    """The JUnit properties of one suite test of ``workload`` (and what the controller's matrix reads)."""
    props = [
        ("profile", profile.name),
        ("cluster", profile.profile.cluster.name),
        ("workload", workload.name),
        ("namespace", workload.namespace),
        ("serviceAccount", workload.service_account),
        ("mechanism", workload.mechanism),
        ("role", workload.role_arn),
    ]
    if workload.target_role_arn is not None:
        props.append(("targetRole", workload.target_role_arn))
    if family is not None:
        props.append(("family", family))
    return props


def missing_contract(workload: Workload) -> list[str]:
    """The halves of a workload's permission contract its profile entry leaves empty ("allow", "deny")."""
    return [name for name, entries in (("allow", workload.allow), ("deny", workload.deny)) if not entries]


def unproven_lines(profile: LoadedProfile, *, failing: bool) -> list[str]:
    """Said at the start of a run: the workloads whose permissions nothing will prove (at most 10 named)."""
    gaps = [(w.name, missing_contract(w)) for w in profile.profile.workloads]
    gaps = [(name, missing) for name, missing in gaps if missing]
    if not gaps:
        return []
    shown = ", ".join(f"{name} (no {' and no '.join(missing)} entries)" for name, missing in gaps[:10])
    more = f" and {len(gaps) - 10} more" if len(gaps) > 10 else ""
    verdict = "they fail (--eksid-require-contract)" if failing else "shown as unproven, not as passed"
    return [f"eksid: permissions unproven for {len(gaps)} workload(s): {shown}{more}; {verdict}"]


def scope_row(namespace: str | None) -> str:
    """The matrix row of a cluster test (``(cluster)``) or of a namespace test (``(ns <namespace>)``)."""
    return "(cluster)" if namespace is None else f"(ns {namespace})"


def scope_properties(
    profile: LoadedProfile, namespace: str | None, workloads: Sequence[str], family: str | None
) -> list[tuple[str, str]]:
    """The JUnit properties of a cluster or namespace test: where it ran and the workloads it stands for."""
    props = [
        ("scope", "cluster" if namespace is None else "namespace"),
        ("profile", profile.name),
        ("cluster", profile.profile.cluster.name),
    ]
    if namespace is not None:
        props.append(("namespace", namespace))
    props.append(("workloads", ",".join(workloads)))
    if family is not None:
        props.append(("family", family))
    return props


def role_console_url(role_arn: str) -> str:
    return IAM_CONSOLE_ROLE.format(name=role_arn_parts(role_arn)[1])


def last_changed(associations: Iterable[Mapping[str, Any]]) -> str | None:
    """The latest ``modifiedAt`` of a ServiceAccount's Pod Identity associations, ISO 8601 in UTC."""
    stamps = [_utc(a.get("modifiedAt") or a.get("createdAt")) for a in associations]
    known = [s for s in stamps if s is not None]
    return max(known).strftime("%Y-%m-%dT%H:%M:%SZ") if known else None


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


# --- results ------------------------------------------------------------------------------


@dataclass
class Result:
    """One test's outcome over its setup, call and teardown, as the matrix and the failure list need it."""

    nodeid: str
    workload: str | None
    family: str | None
    status: str = PASS
    message: str = ""  # the failure's (or inconclusive skip's) first line, printable
    next_step: str | None = None  # the failure's first `next:` command (its NEXT_PROPERTY), printable
    # A cluster or namespace test: the workload rows it stands for (the inventory folds it into theirs).
    stands_for: tuple[str, ...] = ()


def _finding_summary(data: str) -> str | None:
    """The summary of a finding property (JSON), printable; None when it is not one."""
    try:
        finding = json.loads(data)
    except ValueError:
        return None
    summary = finding.get("summary") if isinstance(finding, dict) else None
    return printable(summary) if isinstance(summary, str) else None


def _json_object(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def failure_text(message: str) -> str:
    """The first line of a failure message (a Finding's summary), printable. Lines are split at ``\n``
    alone (str.splitlines also breaks at ``\r``, ``\x1c``, U+2028, which printable() then shows escaped)."""
    text = message.strip().removeprefix("Failed: ")
    return printable(next((line.strip() for line in text.split("\n") if line.strip()), ""))


@dataclass
class Results:
    """The session's test outcomes, keyed by node id, in the order they arrived."""

    by_nodeid: dict[str, Result] = field(default_factory=dict)
    # Several clusters in the run: rows are "<profile>/<workload>" (workload names may repeat across clusters).
    qualified: bool = False
    # What the inventory needs beyond outcomes, from the tests' properties: per profile, the identities
    # test_undeclared_identities found (JSON objects, in order, once each) and what its scan covered; per
    # workload row, test_who_can_become's (count, names).
    identities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scans: dict[str, dict[str, Any]] = field(default_factory=dict)
    become: dict[str, tuple[str, str]] = field(default_factory=dict)
    _identity_seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def record(
        self,
        nodeid: str,
        when: str,
        outcome: str,
        message: str = "",
        properties: Iterable[Sequence[Any]] = (),
    ) -> None:
        """One phase report: ``outcome`` is pytest's passed/failed/skipped, ``message`` its text.

        A failure in any phase fails the test; a skip in setup or call skips it (inconclusive or
        unproven when its ``eksid_outcome`` property says so); the first failure's message is kept:
        its first finding's summary when it failed on findings, else the message's first line.
        """
        pairs = [(str(p[0]), str(p[1])) for p in properties if len(p) == 2]
        props = dict(pairs)
        next_step = next((printable(v) for k, v in pairs if k == NEXT_PROPERTY), None)
        summary = next((_finding_summary(v) for k, v in pairs if k == FINDING_PROPERTY), None)
        row = props.get("workload")
        stands_for: tuple[str, ...] = ()
        if "scope" in props:
            row = scope_row(props.get("namespace") if props["scope"] == "namespace" else None)
            stands_for = tuple(n for n in props.get("workloads", "").split(",") if n)
            if self.qualified:
                stands_for = tuple(f"{props.get('profile')}/{n}" for n in stands_for)
                row = f"{props.get('profile')} {row}"
        elif row is not None and self.qualified:
            row = f"{props.get('profile')}/{row}"
        self._inventory_facts(props, pairs, row)
        result = self.by_nodeid.get(nodeid)
        if result is None:
            result = self.by_nodeid[nodeid] = Result(nodeid, row, props.get("family"), stands_for=stands_for)
        result.workload = result.workload or row
        result.family = result.family or props.get("family")
        if outcome == "failed":
            if result.status != FAIL:
                result.status = FAIL
                result.message = summary if summary is not None else failure_text(message)
                result.next_step = next_step
        elif outcome == "skipped" and result.status == PASS:
            reason = message.strip().removeprefix("Skipped: ")
            marked = props.get(OUTCOME_PROPERTY)
            result.status = marked if marked in (INCONCLUSIVE, UNPROVEN) else SKIP
            result.message = failure_text(reason)

    def _inventory_facts(self, props: Mapping[str, str], pairs: Sequence[tuple[str, str]], row: str | None) -> None:
        """Keep the identities a scan found and who can become a workload (the same in each phase's report)."""
        profile = props.get("profile", "")
        for key, value in pairs:
            if key == IDENTITY_PROPERTY and (profile, value) not in self._identity_seen:
                record = _json_object(value)
                if record is not None:
                    self._identity_seen.add((profile, value))
                    self.identities.setdefault(profile, []).append(record)
            elif key == SCAN_PROPERTY:
                scan = _json_object(value)
                if scan is not None:
                    self.scans[profile] = scan
        if row is not None and "scope" not in props and "can_become_count" in props:
            self.become[row] = (props["can_become_count"], props.get("can_become", ""))

    def failures(self) -> list[Result]:
        return self.with_status(FAIL)

    def with_status(self, status: str) -> list[Result]:
        return sorted((r for r in self.by_nodeid.values() if r.status == status), key=lambda r: r.nodeid)

    def workloads(self, order: Sequence[str] = ()) -> list[str]:
        """Workloads with results: those in ``order`` first, in that order, then the others as seen."""
        seen = [r.workload for r in self.by_nodeid.values() if r.workload]
        return [w for w in order if w in seen] + list(dict.fromkeys(w for w in seen if w not in order))

    def matrix(self, workloads: Sequence[str], *, folded: bool = False) -> dict[str, dict[str, str]]:
        """row -> family -> cell (FAIL, inconclusive, unproven, pass, skip, or - for no test).

        Rows are workloads and the ``(cluster)`` / ``(ns <namespace>)`` rows of cluster and namespace tests.
        ``folded``: a workload's cells also count the cluster and namespace tests that stand for it (the
        inventory's view of one identity); the terminal shows those tests once, on their own rows.
        """
        cells: dict[str, dict[str, list[str]]] = {w: {f: [] for f in FAMILIES} for w in workloads}
        for r in self.by_nodeid.values():
            if r.family not in FAMILIES:
                continue
            rows = [r.workload, *(r.stands_for if folded else ())]
            for row in dict.fromkeys(rows):
                if row in cells:
                    cells[row][r.family].append(r.status)
        return {w: {f: aggregate(statuses) for f, statuses in row.items()} for w, row in cells.items()}


def aggregate(statuses: Iterable[str]) -> str:
    """Any FAIL -> FAIL; else inconclusive; else unproven; else any pass -> pass; else skip; none -> -."""
    ranked = sorted(statuses, key=lambda s: _RANK.get(s, len(_RANK)))
    return ranked[0] if ranked else NONE


# --- terminal ------------------------------------------------------------------------------


def render_matrix(matrix: Mapping[str, Mapping[str, str]], width: int = 100) -> list[str]:
    """The workloads x families table as lines no wider than ``width`` (names are cut with ~ if need be);
    row names (profile-sourced) printable."""
    if not matrix:
        return []
    matrix = {printable(name): row for name, row in matrix.items()}
    gap = "  "
    for titles in ({f: f for f in FAMILIES}, SHORT_TITLES):
        widths = {f: max([len(titles[f]), *(len(row[f]) for row in matrix.values())]) for f in FAMILIES}
        cells_width = sum(widths.values()) + len(gap) * len(FAMILIES)
        name_width = max(len("workload"), *(len(w) for w in matrix))
        if name_width + cells_width <= width:
            break
    name_width = max(len("workload"), min(name_width, width - cells_width))

    def line(name: str, values: Mapping[str, str]) -> str:
        if len(name) > name_width:
            name = name[: name_width - 1] + "~"
        return (f"{name:<{name_width}}" + "".join(f"{gap}{values[f]:<{widths[f]}}" for f in FAMILIES)).rstrip()

    return [line("workload", titles), *(line(w, row) for w, row in matrix.items())]


def failure_lines(failures: Iterable[Result]) -> list[str]:
    """One line per failed test: its id, the first line of its message and its first next command."""
    lines = []
    for r in failures:
        text = f"{printable(r.nodeid)} - {printable(r.message)}" if r.message else printable(r.nodeid)
        lines.append(f"{text} (next: {printable(r.next_step)})" if r.next_step else text)
    return lines


# --- inventory -----------------------------------------------------------------------------


def inventory_format(path: str | Path) -> str:
    """The inventory format a path asks for by its extension; ValueError naming the choices otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in INVENTORY_FORMATS:
        raise ValueError(
            f"cannot write an inventory to {str(path)!r}: unknown extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(INVENTORY_FORMATS)}"
        )
    return suffix[1:]


def inventory_rows(
    profile: LoadedProfile,
    matrix: Mapping[str, Mapping[str, str]],
    changed: Mapping[str, str | None],
) -> list[dict[str, str | None]]:
    """One row per workload of the profile: where it runs, its binding, owner, last change, conformance."""
    rows: list[dict[str, str | None]] = []
    for w in profile.profile.workloads:
        statuses = matrix.get(w.name, {})
        row: dict[str, str | None] = {
            "workload": w.name,
            "cluster": profile.profile.cluster.name,
            "namespace": w.namespace,
            "serviceAccount": w.service_account,
            "mechanism": w.mechanism,
            "role": w.role_arn,
            "targetRole": w.target_role_arn,
            "owner": w.owner,
            "lastChanged": changed.get(w.name),
        }
        row.update({f: statuses.get(f, NONE) for f in FAMILIES})
        rows.append(row)
    return rows


def render_inventory(rows: Sequence[Mapping[str, str | None]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in INVENTORY_COLUMNS} for row in rows], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(INVENTORY_COLUMNS)
        # Profile and cluster values (owner, names, reasons) are never formulas; "-" and "pass" are this module's.
        writer.writerows([_csv_value(c, row.get(c)) for c in INVENTORY_COLUMNS] for row in rows)
        return out.getvalue()
    if fmt == "md":
        lines = [
            "| " + " | ".join(INVENTORY_COLUMNS) + " |",
            "|" + "---|" * len(INVENTORY_COLUMNS),
            *("| " + " | ".join(_md_cell(row.get(c)) for c in INVENTORY_COLUMNS) + " |" for row in rows),
        ]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown inventory format {fmt!r}; use one of {', '.join(INVENTORY_FORMATS)}")


def _csv_value(column: str, value: str | None) -> str:
    return "" if not value else value if column in FAMILIES and value in _OWN_CELLS else csv_cell(value)


def _md_cell(value: str | None) -> str:
    return markdown_cell(value or "")


def write_inventory(path: Path, rows: Sequence[Mapping[str, str | None]]) -> None:
    text = render_inventory(rows, inventory_format(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- run facts and Allure ------------------------------------------------------------------


@dataclass
class RunFacts:
    """What only the clusters can tell, gathered while tests run (workers send it to the controller).

    Keyed by profile name (one per cluster); ``last_changed`` by ``<profile>/<workload>``.
    """

    runner: dict[str, str] = field(default_factory=dict)  # the runner's own AWS identity (ARN), or why unknown
    kube_context: dict[str, str] = field(default_factory=dict)
    last_changed: dict[str, str | None] = field(default_factory=dict)  # ISO timestamp

    def as_dict(self) -> dict[str, Any]:
        return {
            "runner": dict(self.runner),
            "kube_context": dict(self.kube_context),
            "last_changed": dict(self.last_changed),
        }

    def merge(self, data: Mapping[str, Any]) -> None:
        for mine, theirs in (
            (self.runner, data.get("runner")),
            (self.kube_context, data.get("kube_context")),
            (self.last_changed, data.get("last_changed")),
        ):
            for name, value in dict(theirs or {}).items():
                if mine.get(name) is None:
                    mine[name] = value

    def lines(self, profiles: Sequence[str]) -> list[str]:
        """One line per cluster: the runner's identity and the kube context it used."""
        out = []
        for name in profiles:
            runner = printable(self.runner.get(name) or "not determined (no test reached AWS)")
            context = printable(self.kube_context.get(name) or "not determined (no test reached the cluster)")
            prefix = "eksid: " if len(profiles) == 1 else f"eksid: {printable(name)}: "
            out.append(f"{prefix}runner {runner}; kube context {context}")
        return out


def allure_environment(profiles: Sequence[LoadedProfile], facts: RunFacts | None = None) -> str:
    """``environment.properties`` for an Allure results directory; with several clusters, each key is
    prefixed with its profile (``demo.region=...``) so that values stay with their cluster."""
    facts = facts or RunFacts()
    lines = []
    for loaded in profiles:
        cluster = loaded.profile.cluster
        values = {
            "profile": loaded.name,
            "cluster": cluster.name,
            "region": cluster.region,
            "account": cluster.account_id,
            "probe.image": loaded.profile.probe.image,
            "runner": facts.runner.get(loaded.name),
            "kube.context": facts.kube_context.get(loaded.name),
        }
        prefix = f"{loaded.name}." if len(profiles) > 1 else ""
        lines += [f"{prefix}{key}={_properties_value(value)}\n" for key, value in values.items() if value]
    return "".join(lines)


def _properties_value(value: str) -> str:
    # printable first (a control character shows as \x1b), then the .properties escape of that backslash.
    return printable(value).replace("\\", "\\\\")
