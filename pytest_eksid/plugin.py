"""pytest-eksid's pytest plugin: options, hooks and parametrization. Logic lives elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_eksid import hooks
from pytest_eksid import report as reporting
from pytest_eksid.fixtures import (  # re-exported: pytest finds fixtures on the plugin module
    ACTION_FIXTURE,
    FACTS_KEY,
    FACTS_WORKEROUTPUT,
    NODEGROUP_FIXTURE,
    SELECTED_KEY,
    SETTINGS_KEY,
    WORKLOAD_FIXTURE,
    _eksid_report_facts,
    eksid_action,
    eksid_aws,
    eksid_campaign,
    eksid_connection,
    eksid_kube,
    eksid_node_probe,
    eksid_nodegroup,
    eksid_probe,
    eksid_profile,
    eksid_settings,
    eksid_workload,
)
from pytest_eksid.probe.pod import Target
from pytest_eksid.profile import LoadedProfile, ProfileError, Workload, load_profile
from pytest_eksid.settings import Setting, Settings

__all__ = [
    "_eksid_report_facts",
    "eksid_action",
    "eksid_aws",
    "eksid_campaign",
    "eksid_connection",
    "eksid_kube",
    "eksid_node_probe",
    "eksid_nodegroup",
    "eksid_probe",
    "eksid_profile",
    "eksid_settings",
    "eksid_workload",
]


MARKERS = {
    "identity": "the workload's pods are the expected IAM role, by the expected credential provider",
    "permissions": "allowed actions succeed and denied actions fail, as the probe measured",
    "imds": "the node's IMDS role is unreachable from the workload's pods",
    "agent": "the Pod Identity Agent is healthy (IRSA: the cluster's IAM OIDC provider exists)",
    "static_credentials": "no static AWS credentials for the workload anywhere",
    "configuration": "ServiceAccount, owner, binding, trust policy and permission policy",
    "pod_identity": "checks of workloads bound by EKS Pod Identity",
    "irsa": "checks of workloads bound by IRSA (IAM roles for service accounts)",
    "eksid_exec": "looks inside the workload's running containers; runs only with --eksid-exec",
    "eksid_applies(predicate)": "run this test only for workloads where predicate(workload) is true "
    "(e.g. only Pod Identity workloads)",
}

T = TypeVar("T")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _inconclusive(text: str) -> str:
    if text not in ("skip", "fail"):
        raise ValueError(f"expected skip or fail, got {text!r}")
    return text


def _minutes(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be 0 or more minutes, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eksid", "EKS workload identity conformance (pytest-eksid)")
    group.addoption(
        "--profile",
        dest="eksid_profile",
        metavar="NAME|PATH",
        type=str,
        default=None,
        help="Profile to check: NAME loads profiles/NAME.yaml under the rootdir, or a path to a YAML file "
        "(ini: eksid_profile, env: EKSID_PROFILE)",
    )
    group.addoption(
        "--eksid-keep-pods",
        dest="eksid_keep_pods",
        action="store_const",
        const=True,
        default=None,
        help="Keep probe pods after the run for debugging; delete them later with kubectl "
        "(ini: eksid_keep_pods, env: EKSID_KEEP_PODS)",
    )
    group.addoption(
        "--eksid-max-parallel",
        dest="eksid_max_parallel",
        metavar="N",
        type=_positive_int,
        default=None,
        help="Probe pods launched at once (default 16; ini: eksid_max_parallel, env: EKSID_MAX_PARALLEL)",
    )
    group.addoption(
        "--eksid-sweep",
        dest="eksid_sweep",
        metavar="MINUTES",
        type=_minutes,
        default=None,
        help="Before probing, delete probe pods of earlier runs older than MINUTES in the profile's namespaces "
        "(ini: eksid_sweep, env: EKSID_SWEEP)",
    )
    group.addoption(
        "--eksid-inconclusive",
        dest="eksid_inconclusive",
        metavar="skip|fail",
        type=_inconclusive,
        default=None,
        help="What an inconclusive probe result does to its test: skip (reported as INCONCLUSIVE, the default) "
        "or fail (ini: eksid_inconclusive, env: EKSID_INCONCLUSIVE)",
    )
    group.addoption(
        "--eksid-inventory",
        dest="eksid_inventory",
        metavar="PATH",
        type=str,
        default=None,
        help="Write the profile's workload inventory (binding, owner, last change, conformance per check family) "
        "to PATH at the end of the run, as .json, .csv or .md (ini: eksid_inventory, env: EKSID_INVENTORY)",
    )
    parser.addini("eksid_inconclusive", "skip or fail on inconclusive probe results", default=None)
    parser.addini("eksid_inventory", "Inventory file written at the end of the run (.json, .csv or .md)", default=None)
    group.addoption(
        "--eksid-exec",
        dest="eksid_exec",
        action="store_const",
        const=True,
        default=None,
        help="Also look inside the workload's running containers with kubectl exec (pytest-testinfra); "
        "needs pods/exec (ini: eksid_exec, env: EKSID_EXEC)",
    )
    parser.addini("eksid_exec", "Look inside running containers (true/false)", default=None)
    parser.addini("eksid_profile", "Profile to check when --profile is not given", default=None)
    parser.addini("eksid_sweep", "Delete earlier runs' probe pods older than this many minutes", default=None)
    parser.addini("eksid_keep_pods", "Keep probe pods after the run (true/false)", default=None)
    parser.addini("eksid_max_parallel", "Probe pods launched at once", default=None)


def _setting(
    config: pytest.Config, name: str, flag: str, parse: Callable[[str], T], default: T | None
) -> Setting[T] | None:
    """Command line, then ini, then environment, then default — and remember which."""
    cli = config.getoption(name)
    if cli is not None:
        return Setting(cli, flag)
    env_name = name.upper()
    raw: Any = config.getini(name)
    for value, source in ((raw, f"ini {name}"), (os.environ.get(env_name), f"${env_name}")):
        if value in (None, "", []):
            continue
        try:
            return Setting(parse(str(value)), source)
        except ValueError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None
    return None if default is None else Setting(default, "default")


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    profile_spec = _setting(config, "eksid_profile", "--profile", str, None)
    profile: Setting[LoadedProfile] | None = None
    if profile_spec is not None:
        try:
            loaded = load_profile(profile_spec.value, Path(config.rootpath))
        except ProfileError as exc:
            raise pytest.UsageError(str(exc)) from None
        if loaded.profile.sandbox is not None:
            from pytest_eksid.sandbox import SandboxUnavailable, require

            try:
                require()
            except SandboxUnavailable as exc:
                raise pytest.UsageError(f"{loaded.path}: {exc}") from None
        profile = Setting(loaded, profile_spec.source)
    keep = _setting(config, "eksid_keep_pods", "--eksid-keep-pods", _bool, False)
    parallel = _setting(config, "eksid_max_parallel", "--eksid-max-parallel", _positive_int, 16)
    assert keep is not None
    assert parallel is not None
    sweep = _setting(config, "eksid_sweep", "--eksid-sweep", _minutes, None)
    exec_containers = _setting(config, "eksid_exec", "--eksid-exec", _bool, False)
    assert exec_containers is not None
    inconclusive = _setting(config, "eksid_inconclusive", "--eksid-inconclusive", _inconclusive, "skip")
    assert inconclusive is not None
    config.stash[SETTINGS_KEY] = Settings(
        profile=profile,
        keep_pods=keep,
        max_parallel=parallel,
        sweep_minutes=sweep,
        inconclusive=inconclusive,
        exec_containers=exec_containers,
    )
    _configure_reports(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or settings.profile is None:
        return ["eksid: no profile (pass --profile NAME, e.g. --profile demo)"]
    loaded = settings.profile.value
    cluster = loaded.profile.cluster
    try:
        shown = loaded.path.relative_to(config.rootpath)
    except ValueError:
        shown = loaded.path
    target = (
        "embedded sandbox (started at session start)"
        if loaded.profile.sandbox
        else (f"kube context {cluster.kube_context or '(current)'}")
    )
    return [
        f"eksid: profile {loaded.name}: {shown} (from {settings.profile.source})",
        f"eksid: cluster {cluster.name}, region {cluster.region}, account {cluster.account_id}; {target}",
        f"eksid: probe image {loaded.profile.probe.image}; {len(loaded.profile.workloads)} workload(s)",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if WORKLOAD_FIXTURE not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    if settings.profile is None:
        return  # reported as a usage error once collection is done (pytest_collection_finish)
    loaded = settings.profile.value
    workloads = sorted(loaded.profile.workloads, key=lambda w: w.name)
    for mark in metafunc.definition.iter_markers("eksid_applies"):
        workloads = [w for w in workloads if mark.args[0](w)]
    if ACTION_FIXTURE in metafunc.fixturenames:
        pairs = [
            (w, (expect, i, check))
            for w in workloads
            for expect, checks in (("allowed", w.allow), ("denied", w.deny))
            for i, check in enumerate(checks)
        ]
        metafunc.parametrize(
            [WORKLOAD_FIXTURE, ACTION_FIXTURE],
            pairs,
            indirect=True,
            ids=[
                f"{loaded.name}/{w.name}/{'allow' if e == 'allowed' else 'deny'}-{i}:{c.action}"
                for w, (e, i, c) in pairs
            ],
        )
        return
    if NODEGROUP_FIXTURE in metafunc.fixturenames:
        groups: list[str | None] = list(loaded.profile.probe.node_groups) or [None]
        targets = [(w, g) for w in workloads for g in groups]
        metafunc.parametrize(
            [WORKLOAD_FIXTURE, NODEGROUP_FIXTURE],
            targets,
            indirect=True,
            ids=[f"{loaded.name}/{w.name}" + (f"@{g}" if g else "") for w, g in targets],
        )
        return
    metafunc.parametrize(
        WORKLOAD_FIXTURE,
        workloads,
        indirect=True,
        ids=[f"{loaded.name}/{w.name}" for w in workloads],
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS_KEY]
    not_applicable = []
    for item in items:
        if item.get_closest_marker("eksid_exec") is not None and not settings.exec_containers.value:
            not_applicable.append(item)  # opt-in: it execs into the workload's own pods
            continue
        callspec = getattr(item, "callspec", None)
        workload = callspec.params.get(WORKLOAD_FIXTURE, None) if callspec is not None else None
        if isinstance(workload, Workload):
            item.add_marker(workload.mechanism.replace("-", "_"))
        elif callspec is not None and WORKLOAD_FIXTURE in callspec.params:
            not_applicable.append(item)  # eksid_applies left no workload: the check does not apply here
    if not_applicable:
        config.hook.pytest_deselected(items=not_applicable)
        items[:] = [item for item in items if item not in not_applicable]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which workloads the selected tests need, so only their probes are launched."""
    listing = session.config.getoption("showfixtures", False) or session.config.getoption(
        "show_fixtures_per_test", False
    )
    if session.config.stash[SETTINGS_KEY].profile is None and not listing:
        needing = [item.nodeid for item in session.items if WORKLOAD_FIXTURE in getattr(item, "fixturenames", ())]
        if needing:
            more = f" (and {len(needing) - 1} more)" if len(needing) > 1 else ""
            raise pytest.UsageError(
                f"{needing[0]}{more} checks workload identities and needs a profile: "
                "pass --profile NAME (e.g. --profile demo for the embedded sandbox) or a path to a profile YAML"
            )
    selected: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        workload = callspec.params.get(WORKLOAD_FIXTURE) if callspec is not None else None
        if isinstance(workload, Workload):
            group = callspec.params.get(NODEGROUP_FIXTURE) if callspec is not None else None
            selected.add(Target(workload, group).key)
    session.config.stash[SELECTED_KEY] = selected


# --- reports: JUnit properties, terminal matrix, inventory, Allure (logic in pytest_eksid.report) ---

RESULTS_KEY = pytest.StashKey[reporting.Results]()
INVENTORY_KEY = pytest.StashKey[Setting[Path] | None]()


def _configure_reports(config: pytest.Config) -> None:
    inventory = _setting(config, "eksid_inventory", "--eksid-inventory", str, None)
    config.stash[INVENTORY_KEY] = None
    if inventory is not None:
        try:
            reporting.inventory_format(inventory.value)
        except ValueError as exc:
            raise pytest.UsageError(f"{inventory.source}: {exc}") from None
        base = config.rootpath if inventory.source.startswith("ini ") else config.invocation_params.dir
        config.stash[INVENTORY_KEY] = Setting(base / Path(inventory.value).expanduser(), inventory.source)
    config.stash[RESULTS_KEY] = reporting.Results()
    config.stash[FACTS_KEY] = reporting.RunFacts()
    if not _is_worker(config):
        config.pluginmanager.register(ReportCollector(config), "eksid-reports")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _allure_active(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("allure_listener")


def _item_workload(item: pytest.Item) -> Workload | None:
    callspec = getattr(item, "callspec", None)
    workload = callspec.params.get(WORKLOAD_FIXTURE) if callspec is not None else None
    return workload if isinstance(workload, Workload) else None


def _item_family(item: pytest.Item) -> str | None:
    names = {mark.name for mark in item.iter_markers()}
    return next((family for family in reporting.FAMILIES if family in names), None)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test of a workload carries its identity as JUnit properties (and to the xdist controller)."""
    workload = _item_workload(item)
    settings = item.config.stash[SETTINGS_KEY]
    if workload is None or settings.profile is None:
        return
    item.user_properties.extend(reporting.junit_properties(settings.profile.value, workload, _item_family(item)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Allure labels of a workload's test: epic = cluster, feature = family, story = workload."""
    workload = _item_workload(item)
    settings = item.config.stash[SETTINGS_KEY]
    if workload is None or settings.profile is None or not _allure_active(item.config):
        return
    import allure

    dynamic: Any = allure.dynamic  # allure-python is untyped
    family = _item_family(item)
    dynamic.epic(settings.profile.value.profile.cluster.name)
    dynamic.story(workload.name)
    if family is not None:
        dynamic.feature(family)
        dynamic.severity(allure.severity_level(reporting.SEVERITY[family]))
    for arn in dict.fromkeys((workload.role_arn, workload.final_role_arn)):
        dynamic.link(reporting.role_console_url(arn), name=f"IAM role {arn}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Attach the probe's (redacted) result to the Allure result of a test that used it."""
    test_report = yield
    if call.when == "call" and _allure_active(item.config):
        probe = getattr(item, "funcargs", {}).get("eksid_probe")
        result = getattr(probe, "result", None)
        if result is not None:
            import allure

            from pytest_eksid.redact import redact_json

            allure.attach(redact_json(result), name="eksid probe result", attachment_type=allure.attachment_type.JSON)
    return test_report


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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.config.stash[RESULTS_KEY].record(
            report.nodeid, report.when, report.outcome, _report_message(report), report.user_properties
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: a worker is done; take the facts it gathered."""
        facts = getattr(node, "workeroutput", {}).get(FACTS_WORKEROUTPUT)
        if isinstance(facts, dict):
            self.config.stash[FACTS_KEY].merge(facts)

    def _loaded(self) -> LoadedProfile | None:
        settings = self.config.stash[SETTINGS_KEY]
        return settings.profile.value if settings.profile is not None else None

    def _matrix(self) -> dict[str, dict[str, str]]:
        results = self.config.stash[RESULTS_KEY]
        loaded = self._loaded()
        order = [w.name for w in loaded.profile.workloads] if loaded is not None else []
        return results.matrix(results.workloads(order))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        loaded = self._loaded()
        if loaded is None or self.config.option.collectonly:
            return
        facts = self.config.stash[FACTS_KEY]
        inventory = self.config.stash[INVENTORY_KEY]
        if inventory is not None:
            matrix = self.config.stash[RESULTS_KEY].matrix([w.name for w in loaded.profile.workloads])
            rows = reporting.inventory_rows(loaded, matrix, facts.last_changed)
            try:
                reporting.write_inventory(inventory.value, rows)
            except OSError as exc:
                self.inventory_error = f"cannot write the inventory to {inventory.value}: {exc}"
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED
        alluredir = getattr(self.config.option, "allure_report_dir", None)
        if alluredir and _allure_active(self.config):
            target = Path(alluredir)
            target.mkdir(parents=True, exist_ok=True)
            (target / "environment.properties").write_text(reporting.allure_environment(loaded, facts), "utf-8")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = reporting.render_matrix(self._matrix())
        if not lines or self.config.get_verbosity() < -1:
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
        write(self.config.stash[FACTS_KEY].line())
        inventory = self.config.stash[INVENTORY_KEY]
        if self.inventory_error is not None:
            write(f"eksid: ERROR: {self.inventory_error}", red=True)
        elif inventory is not None:
            write(f"eksid: inventory written to {inventory.value} (from {inventory.source})")
