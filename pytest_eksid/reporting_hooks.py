"""pytest's reporting hooks for the checks: JUnit properties, Allure labels, the INCONCLUSIVE outcome, and the
session's reports (terminal matrix, failures, inventory, Allure environment). What they say is built by
pytest_eksid.report, which knows no pytest; this module only moves pytest's reports into it.

Registered by the plugin in ``pytest_configure``. Everything a report needs travels in its
``user_properties`` (plain pairs: pytest-xdist sends them from the workers to the controller), never in
message text read back.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid import inventory
from pytest_eksid import report as reporting
from pytest_eksid import stats as run_stats
from pytest_eksid.aws import AwsError
from pytest_eksid.escape import printable
from pytest_eksid.fixtures import (
    FACTS_KEY,
    FACTS_WORKEROUTPUT,
    SETTINGS_KEY,
    STATS_KEY,
    STATS_WORKEROUTPUT,
    FindingsFailed,
    Outcome,
    scope_of,
    subject_of,
)
from pytest_eksid.kube import KubeError
from pytest_eksid.profile import LoadedProfile
from pytest_eksid.settings import Setting, SettingError, optional_setting

RESULTS_KEY = pytest.StashKey[reporting.Results]()
INVENTORY_KEY = pytest.StashKey[Setting[Path] | None]()
STATS_FILE_KEY = pytest.StashKey[Setting[Path] | None]()  # --eksid-stats: where the run's cost is written
# --eksid-inventory-baseline: the file (resolved) and its rows, read once when the run starts.
BASELINE_KEY = pytest.StashKey[tuple[Setting[Path], list[inventory.Row]] | None]()


def configure(config: pytest.Config) -> None:
    """The inventory and stats settings, the run's result records, facts and stats; the collector where reports
    end up."""
    try:
        inventory = optional_setting(config, "eksid_inventory", "--eksid-inventory", str)
        stats_file = optional_setting(config, "eksid_stats", "--eksid-stats", str)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATS_FILE_KEY] = None
    if stats_file is not None:
        try:
            _json_path(stats_file.value)
        except ValueError as exc:
            raise pytest.UsageError(f"{stats_file.source}: {exc}") from None
        base = config.rootpath if stats_file.source.startswith("ini ") else config.invocation_params.dir
        config.stash[STATS_FILE_KEY] = Setting(base / Path(stats_file.value).expanduser(), stats_file.source)
    config.stash[INVENTORY_KEY] = None
    if inventory is not None:
        try:
            reporting.inventory_format(inventory.value)
        except ValueError as exc:
            raise pytest.UsageError(f"{inventory.source}: {exc}") from None
        base = config.rootpath if inventory.source.startswith("ini ") else config.invocation_params.dir
        config.stash[INVENTORY_KEY] = Setting(base / Path(inventory.value).expanduser(), inventory.source)
    config.stash[BASELINE_KEY] = _baseline(config)
    config.stash[RESULTS_KEY] = reporting.Results(qualified=len(config.stash[SETTINGS_KEY].profiles) > 1)
    config.stash[FACTS_KEY] = reporting.RunFacts()
    config.stash[STATS_KEY] = run_stats.RunStats()
    if not _is_worker(config):
        config.pluginmanager.register(ReportCollector(config), "eksid-reports")


def _json_path(value: str) -> None:
    """--eksid-stats names a JSON file (the one format it is written in)."""
    if Path(value).suffix.lower() != ".json":
        raise ValueError(f"{printable(value)!r}: the stats are written as JSON: name a .json file")


def _baseline(config: pytest.Config) -> tuple[Setting[Path], list[inventory.Row]] | None:
    """The earlier inventory to compare with: read now, so that a file that is not one stops the run with one
    line before anything runs, whatever it holds."""
    setting = config.stash[SETTINGS_KEY].inventory_baseline
    if setting is None:
        return None
    path = inventory.baseline_path(setting, config.rootpath, config.invocation_params.dir)
    try:
        return Setting(path, setting.source), inventory.read_baseline(path)
    except inventory.BaselineError as exc:
        raise pytest.UsageError(f"{setting.source}: cannot compare with {exc}") from None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _allure_active(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("allure_listener")


def _item_family(item: pytest.Item) -> str | None:
    names = {mark.name for mark in item.iter_markers()}
    return next((family for family in reporting.FAMILIES if family in names), None)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test of a workload carries its identity as JUnit properties (and to the xdist controller); a
    cluster or namespace test its cluster, namespace and the workloads it stands for."""
    subject = subject_of(item)
    if subject is not None:
        item.user_properties.extend(reporting.junit_properties(subject.profile, subject.workload, _item_family(item)))
        return
    scope = scope_of(item)
    if scope is not None:
        item.user_properties.extend(
            reporting.scope_properties(scope.profile, scope.namespace, scope.workloads, _item_family(item))
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Allure labels of a workload's test: epic = cluster, feature = family, story = workload."""
    subject = subject_of(item)
    if not _allure_active(item.config):
        return
    scope = scope_of(item)
    if subject is None and scope is not None:
        import allure

        family = _item_family(item)
        scoped: Any = allure.dynamic
        scoped.epic(scope.profile.profile.cluster.name)
        scoped.story(reporting.scope_row(scope.namespace))
        if family is not None:
            scoped.feature(family)
            scoped.severity(allure.severity_level(reporting.SEVERITY[family]))
        return
    if subject is None:
        return
    import allure

    workload = subject.workload
    dynamic: Any = allure.dynamic  # allure-python is untyped
    family = _item_family(item)
    dynamic.epic(subject.profile.profile.cluster.name)
    dynamic.story(workload.name)
    if family is not None:
        dynamic.feature(family)
        dynamic.severity(allure.severity_level(reporting.SEVERITY[family]))
    for arn in dict.fromkeys((workload.role_arn, workload.final_role_arn)):
        dynamic.link(reporting.role_console_url(arn), name=f"IAM role {arn}")


def _add_properties(item: pytest.Item, report: pytest.TestReport, props: list[tuple[str, str]]) -> None:
    """On the report (the controller's records read it) and on the item: JUnit writes the properties of the
    teardown report, which pytest copies from the item."""
    if props:
        report.user_properties = [*report.user_properties, *props]
        item.user_properties.extend(props)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Carry a test's findings and its eksid outcome (inconclusive, unproven) as data in its properties; attach
    the probe's (redacted) result to the Allure result of a test that used it; report a cluster or AWS call
    that failed by its message alone (the plugin's traceback helps nobody; --tb=long keeps it)."""
    test_report = yield
    if (
        test_report.failed
        and call.excinfo is not None
        and call.excinfo.errisinstance((KubeError, AwsError))
        and item.config.getoption("tbstyle", "auto") != "long"
    ):
        test_report.longrepr = f"{call.excinfo.typename}: {printable(str(call.excinfo.value), keep=chr(10))}"
    raised = call.excinfo.value if call.excinfo is not None else None
    if test_report.failed and isinstance(raised, FindingsFailed):
        # The findings and their next commands as data: the failure summary reads these, never the message.
        _add_properties(item, test_report, reporting.finding_properties(raised.findings))
    if isinstance(raised, Outcome) and (test_report.failed or test_report.skipped):
        _add_properties(item, test_report, [(reporting.OUTCOME_PROPERTY, raised.eksid_outcome)])
    subject = subject_of(item)
    if call.when == "call" and subject is not None and subject.workload.mechanism == "pod-identity":
        # Gathered once per cluster by the engine (pytest_eksid.engine) when the cluster was reached.
        changed = item.config.stash[FACTS_KEY].last_changed.get(subject.key)
        if changed is not None:
            _add_properties(item, test_report, [("last_changed", changed)])
    if call.when == "call" and _allure_active(item.config):
        probe = getattr(item, "funcargs", {}).get("eksid_probe")
        result = getattr(probe, "result", None)
        if result is not None:
            import allure

            from pytest_eksid.redact import redact_json

            allure.attach(redact_json(result), name="eksid probe result", attachment_type=allure.attachment_type.JSON)
    return test_report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """An inconclusive measurement is its own outcome: ``I`` / ``INCONCLUSIVE``, counted as ``inconclusive`` in the
    summary line (a skip to pytest, JUnit and Allure; a failure with --eksid-inconclusive=fail)."""
    if report.skipped and (reporting.OUTCOME_PROPERTY, reporting.INCONCLUSIVE) in _pairs(report.user_properties):
        return "inconclusive", "I", "INCONCLUSIVE"
    return None


def _pairs(properties: Any) -> list[tuple[str, str]]:
    return [(str(p[0]), str(p[1])) for p in properties if len(p) == 2]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker of pytest-xdist sends the facts its engine gathered and its stats (requests, probe times, its own
    CPU and memory) to the controller (``workeroutput``). Last: after the session's fixtures (the engine) have
    been torn down, also in a run cut short."""
    config = session.config
    workeroutput = getattr(config, "workeroutput", None)
    if isinstance(workeroutput, dict):
        workeroutput[FACTS_WORKEROUTPUT] = config.stash[FACTS_KEY].as_dict()
        stats = config.stash[STATS_KEY]
        stats.add_process(str(getattr(config, "workerinput", {}).get("workerid", "worker")))
        workeroutput[STATS_WORKEROUTPUT] = stats.as_dict()


def _report_message(report: pytest.TestReport) -> str:
    """A report's message: the skip reason, the exception's own message, or the whole long report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    return str(message) if message else report.longreprtext


class ReportCollector:
    """Collects outcomes where the reports end up (the xdist controller, or the only process) and writes
    the session's reports: the terminal matrix, the inventory and Allure's environment.properties."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.inventory_error: str | None = None
        self.stats_error: str | None = None
        self.workers = 0  # pytest-xdist workers whose output arrived
        self.changes: list[inventory.Change] | None = None  # since the baseline, once compared

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.config.stash[RESULTS_KEY].record(
            report.nodeid, report.when, report.outcome, _report_message(report), report.user_properties
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: a worker is done; take the facts it gathered."""
        output = getattr(node, "workeroutput", {})
        facts = output.get(FACTS_WORKEROUTPUT)
        if isinstance(facts, dict):
            self.config.stash[FACTS_KEY].merge(facts)
        stats = output.get(STATS_WORKEROUTPUT)
        if isinstance(stats, dict):
            self.workers += 1
            self.config.stash[STATS_KEY].merge(stats)

    def _profiles(self) -> list[LoadedProfile]:
        return self.config.stash[SETTINGS_KEY].loaded_all

    def _rows(self, loaded: LoadedProfile) -> list[str]:
        """The matrix rows of one profile's workloads: their names, or <profile>/<name> with several clusters."""
        qualified = self.config.stash[RESULTS_KEY].qualified
        return [f"{loaded.name}/{w.name}" if qualified else w.name for w in loaded.profile.workloads]

    def _scope_rows(self, loaded: LoadedProfile) -> list[str]:
        """The matrix rows of one profile's cluster and namespace tests, before its workloads."""
        qualified = self.config.stash[RESULTS_KEY].qualified
        namespaces = sorted({w.namespace for w in loaded.profile.workloads})
        rows = [reporting.scope_row(None), *(reporting.scope_row(ns) for ns in namespaces)]
        return [f"{loaded.name} {row}" if qualified else row for row in rows]

    def _matrix(self) -> dict[str, dict[str, str]]:
        results = self.config.stash[RESULTS_KEY]
        order = [row for loaded in self._profiles() for row in (*self._scope_rows(loaded), *self._rows(loaded))]
        return results.matrix(results.workloads(order))

    def _inventory_rows(self, loaded: LoadedProfile) -> list[inventory.Row]:
        """One profile's inventory rows: its workloads' (conformance folded in) and the identities its scan found."""
        results, facts = self.config.stash[RESULTS_KEY], self.config.stash[FACTS_KEY]
        keys = self._rows(loaded)
        matrix = results.matrix(keys, folded=True)
        workloads = loaded.profile.workloads
        by_name = {w.name: matrix[key] for w, key in zip(workloads, keys, strict=True)}
        become = {w.name: results.become[key] for w, key in zip(workloads, keys, strict=True) if key in results.become}
        changed = {w.name: facts.last_changed.get(f"{loaded.name}/{w.name}") for w in workloads}
        scan = results.scans.get(loaded.name)
        found = results.identities.get(loaded.name, []) if scan is not None else None
        iam = scan is not None and scan.get("iam") is True
        return inventory.identity_rows(loaded, by_name, changed, found, become, iam_scanned=iam)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        profiles = self._profiles()
        if not profiles or self.config.option.collectonly:
            return
        self._write_stats(session, profiles)
        facts = self.config.stash[FACTS_KEY]
        written = self.config.stash[INVENTORY_KEY]
        baseline = self.config.stash[BASELINE_KEY]
        if written is not None or baseline is not None:
            rows = [row for loaded in profiles for row in self._inventory_rows(loaded)]
            if baseline is not None:
                results = self.config.stash[RESULTS_KEY]
                scanned = [p.profile.cluster.name for p in profiles if p.name in results.scans]
                self.changes = inventory.compare(baseline[1], rows, scanned)
            if written is not None:
                try:
                    reporting.write_inventory(written.value, rows)
                except OSError as exc:
                    self.inventory_error = f"cannot write the inventory to {written.value}: {exc}"
                    if session.exitstatus == pytest.ExitCode.OK:
                        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        alluredir = getattr(self.config.option, "allure_report_dir", None)
        if alluredir and _allure_active(self.config):
            target = Path(alluredir)
            target.mkdir(parents=True, exist_ok=True)
            (target / "environment.properties").write_text(reporting.allure_environment(profiles, facts), "utf-8")

    def _write_stats(self, session: pytest.Session, profiles: list[LoadedProfile]) -> None:
        """This process's own CPU and memory beside the workers', then --eksid-stats' file."""
        stats = self.config.stash[STATS_KEY]
        stats.add_process("controller" if self.workers else "main")
        target = self.config.stash[STATS_FILE_KEY]
        if target is None:
            return
        try:
            run_stats.write_document(target.value, stats.document([p.name for p in profiles]))
        except OSError as exc:
            self.stats_error = f"cannot write the stats to {target.value}: {exc}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _stats_lines(self, write: Any) -> None:
        """The run's requests per cluster (every worker's, summed), and where --eksid-stats went."""
        if self.config.get_verbosity() >= 0:  # the counts are for people; a failed write is said at any verbosity
            stats = self.config.stash[STATS_KEY]
            for line in stats.lines([p.name for p in self._profiles()], verbose=self.config.get_verbosity() > 0):
                write(printable(line))
        target = self.config.stash[STATS_FILE_KEY]
        if self.stats_error is not None:
            write(f"eksid: ERROR: {printable(self.stats_error)}", red=True)
        elif target is not None and self._profiles() and self.config.get_verbosity() >= 0:
            write(f"eksid: stats written to {printable(str(target.value))} (from {target.source})")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = reporting.render_matrix(self._matrix())
        if not lines or self.config.get_verbosity() < -1:
            self._stats_lines(terminalreporter.write_line)
            return  # no test of a workload ran
        results = self.config.stash[RESULTS_KEY]
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "eksid conformance")
        for line in lines:
            write(line)
        failures = reporting.failure_lines(results.failures())
        if failures:
            terminalreporter.write_sep("-", f"eksid failures ({len(failures)})")
            for line in failures:
                write(line)
        # Inconclusive tests are their own outcome (not in pytest's skip list): their reasons, one line each.
        unsure = reporting.failure_lines(results.with_status(reporting.INCONCLUSIVE))
        if unsure:
            terminalreporter.write_sep("-", f"eksid inconclusive ({len(unsure)})")
            for line in unsure:
                write(line)
        for line in self.config.stash[FACTS_KEY].lines([p.name for p in self._profiles()]):
            write(line)
        baseline = self.config.stash[BASELINE_KEY]
        if baseline is not None and self.changes is not None:
            where = printable(str(baseline[0].value))
            terminalreporter.write_sep("-", f"eksid inventory changes since {where} ({len(self.changes)})")
            for line in [c.line() for c in self.changes] or ["no identity new, removed or changed"]:
                write(printable(line))
        target = self.config.stash[INVENTORY_KEY]
        if self.inventory_error is not None:
            write(f"eksid: ERROR: {printable(self.inventory_error)}", red=True)
        elif target is not None:
            write(f"eksid: inventory written to {printable(str(target.value))} (from {target.source})")
        self._stats_lines(write)
