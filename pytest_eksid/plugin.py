"""pytest-eksid's pytest plugin: options, hooks and parametrization. Logic lives elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_eksid import hooks, live
from pytest_eksid import report as reporting
from pytest_eksid.aws import AwsError
from pytest_eksid.connection import Provider
from pytest_eksid.escape import printable
from pytest_eksid.fixtures import (  # re-exported: pytest finds fixtures on the plugin module
    ACTION_FIXTURE,
    CLUSTER_FIXTURE,
    FACTS_KEY,
    FACTS_WORKEROUTPUT,
    INTERRUPTS_KEY,
    NAMESPACE_FIXTURE,
    NODEGROUP_FIXTURE,
    SELECTED_KEY,
    SETTINGS_KEY,
    WORKLOAD_FIXTURE,
    FindingsFailed,
    Scope,
    Subject,
    _eksid_report_facts,
    _progress,
    eksid_action,
    eksid_aws,
    eksid_campaign,
    eksid_cluster,
    eksid_clusters,
    eksid_connection,
    eksid_kube,
    eksid_namespace,
    eksid_node_probe,
    eksid_nodegroup,
    eksid_probe,
    eksid_profile,
    eksid_settings,
    eksid_workload,
    scope_of,
    subject_of,
)
from pytest_eksid.interrupts import Interrupts
from pytest_eksid.kube import KubeError
from pytest_eksid.probe.pod import probe_target
from pytest_eksid.profile import (
    LoadedProfile,
    ProfileError,
    Workload,
    check_unique_names,
    load_fleet,
    load_profile,
)
from pytest_eksid.redact import guard_handlers, quiet_wire_loggers
from pytest_eksid.settings import DEFAULT_API_TIMEOUT, Setting, Settings

__all__ = [
    "_eksid_report_facts",
    "eksid_action",
    "eksid_aws",
    "eksid_campaign",
    "eksid_cluster",
    "eksid_clusters",
    "eksid_connection",
    "eksid_kube",
    "eksid_namespace",
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
    "(e.g. only Pod Identity workloads); a cluster or namespace test runs where one of its workloads is",
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


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be more than 0 seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)
    pluginmanager.register(live, "eksid_live")  # the default provider; another plugin's answer wins


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eksid", "EKS workload identity conformance (pytest-eksid)")
    group.addoption(
        "--profile",
        dest="eksid_profile",
        metavar="NAME|PATH",
        action="append",
        type=str,
        default=None,
        help="Profile to check: NAME loads profiles/NAME.yaml under the rootdir, or a path to a YAML file; "
        "repeat it to check several clusters in one run (ini: eksid_profile, env: EKSID_PROFILE; "
        "several separated by spaces or commas)",
    )
    group.addoption(
        "--fleet",
        dest="eksid_fleet",
        metavar="PATH",
        type=str,
        default=None,
        help="A fleet file listing the clusters to check (profiles with their kube contexts and AWS profiles); "
        "combines with --profile (ini: eksid_fleet, env: EKSID_FLEET)",
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
        help="Probe pods launched at once, per cluster (default: the provider's, 24 for a live cluster; "
        "ini: eksid_max_parallel, env: EKSID_MAX_PARALLEL)",
    )
    group.addoption(
        "--eksid-api-timeout",
        dest="eksid_api_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=None,
        help="How long one Kubernetes or AWS request of the runner may wait to connect, and then for its answer "
        "(default 30); a connection that cannot be made is tried 3 times before the cluster counts as unreachable "
        "(ini: eksid_api_timeout, env: EKSID_API_TIMEOUT)",
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
    group.addoption(
        "--eksid-require-contract",
        dest="eksid_require_contract",
        action="store_const",
        const=True,
        default=None,
        help="Fail a workload whose profile entry has no allow or no deny entries (by default its permissions "
        "are reported as unproven; ini: eksid_require_contract, env: EKSID_REQUIRE_CONTRACT)",
    )
    parser.addini("eksid_require_contract", "Fail workloads without allow or deny entries (true/false)", default=None)
    parser.addini("eksid_exec", "Look inside running containers (true/false)", default=None)
    parser.addini("eksid_profile", "Profile(s) to check when --profile is not given", default=None)
    parser.addini("eksid_fleet", "Fleet file to check when --fleet is not given", default=None)
    parser.addini("eksid_sweep", "Delete earlier runs' probe pods older than this many minutes", default=None)
    parser.addini("eksid_keep_pods", "Keep probe pods after the run (true/false)", default=None)
    parser.addini("eksid_max_parallel", "Probe pods launched at once", default=None)
    parser.addini("eksid_api_timeout", "Seconds a Kubernetes or AWS request may wait", default=None)


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
    profiles = _profiles(config)
    keep = _setting(config, "eksid_keep_pods", "--eksid-keep-pods", _bool, False)
    # Each profile's provider validates what it owns of it, and has its own defaults (the live one's for real
    # clusters, the sandbox's where pods are local processes): the lowest applies.
    providers = [_provider(config, p.value) for p in profiles]
    default_parallel = min((p.max_parallel for p in providers), default=live.MAX_PARALLEL)
    parallel = _setting(config, "eksid_max_parallel", "--eksid-max-parallel", _positive_int, default_parallel)
    assert keep is not None
    assert parallel is not None
    sweep = _setting(config, "eksid_sweep", "--eksid-sweep", _minutes, None)
    api_timeout = _setting(config, "eksid_api_timeout", "--eksid-api-timeout", _seconds, DEFAULT_API_TIMEOUT)
    assert api_timeout is not None
    exec_containers = _setting(config, "eksid_exec", "--eksid-exec", _bool, False)
    assert exec_containers is not None
    inconclusive = _setting(config, "eksid_inconclusive", "--eksid-inconclusive", _inconclusive, "skip")
    assert inconclusive is not None
    require_contract = _setting(config, "eksid_require_contract", "--eksid-require-contract", _bool, False)
    assert require_contract is not None
    config.stash[SETTINGS_KEY] = Settings(
        profiles=profiles,
        keep_pods=keep,
        max_parallel=parallel,
        sweep_minutes=sweep,
        inconclusive=inconclusive,
        exec_containers=exec_containers,
        api_timeout=api_timeout,
        require_contract=require_contract,
    )
    _configure_reports(config)
    if profiles:
        quiet_wire_loggers()
        _stop_on_sigterm(config)


def _stop_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a CI job cancelled or timed out) stops the run as Ctrl-C does, so that teardown still
    deletes the probe pods on the cluster and stops sandboxes; a second signal cannot cut that cleanup
    short (pytest_eksid.interrupts). Only where nothing else handles the signals."""
    interrupts = Interrupts(lambda message: _progress(config, message))
    interrupts.install()
    config.stash[INTERRUPTS_KEY] = interrupts


def pytest_unconfigure(config: pytest.Config) -> None:
    interrupts = config.stash.get(INTERRUPTS_KEY, None)
    if interrupts is not None:
        interrupts.uninstall()


def _profiles(config: pytest.Config) -> tuple[Setting[LoadedProfile], ...]:
    """The run's profiles: the fleet file's clusters, then each --profile (else ini, else environment)."""
    out: list[Setting[LoadedProfile]] = []
    rootdir = Path(config.rootpath)
    # The command line wins: with --fleet or --profile given there, neither's ini/environment value joins in.
    on_cli = config.getoption("eksid_fleet") is not None or config.getoption("eksid_profile") is not None
    fleet = _setting(config, "eksid_fleet", "--fleet", str, None)
    if on_cli and fleet is not None and fleet.source != "--fleet":
        fleet = None
    try:
        if fleet is not None:
            base = rootdir if fleet.source.startswith("ini ") else Path(config.invocation_params.dir)
            out += [Setting(p, f"{fleet.source} {fleet.value}") for p in load_fleet(fleet.value, rootdir, base)]
        specs = _setting(config, "eksid_profile", "--profile", _names, None)
        if on_cli and specs is not None and specs.source != "--profile":
            specs = None
        for spec in specs.value if specs is not None else []:
            out.append(Setting(load_profile(spec, rootdir), specs.source if specs is not None else ""))
        out = _without_repeats(out)
        check_unique_names(p.value for p in out)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    return tuple(out)


def _provider(config: pytest.Config, loaded: LoadedProfile) -> Provider:
    """The provider that claims the profile (pytest_eksid_provider; the live one answers last)."""
    try:
        provider: Provider | None = config.hook.pytest_eksid_provider(config=config, profile=loaded)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    if provider is None:
        raise pytest.UsageError(f"{loaded.path}: no provider claims this profile (was eksid_live disabled?)")
    return provider


def _without_repeats(profiles: list[Setting[LoadedProfile]]) -> list[Setting[LoadedProfile]]:
    """The same file named twice (say by the fleet and by --profile) is one cluster, checked once."""
    seen: set[Path] = set()
    out = []
    for setting in profiles:
        path = setting.value.path.resolve()
        if path not in seen:
            seen.add(path)
            out.append(setting)
    return out


def _names(text: str) -> list[str]:
    return [n for n in text.replace(",", " ").split() if n]


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.profiles:
        return ["eksid: no profile (pass --profile NAME, e.g. --profile demo)"]
    lines = []
    for setting in settings.profiles:
        loaded = setting.value
        cluster = loaded.profile.cluster
        try:
            shown = loaded.path.relative_to(config.rootpath)
        except ValueError:
            shown = loaded.path
        target = _provider(config, loaded).label
        lines += [
            f"eksid: profile {loaded.name}: {shown} (from {setting.source})",
            f"eksid: cluster {cluster.name}, region {cluster.region}, account {cluster.account_id}; {target}",
            f"eksid: probe image {loaded.profile.probe.image}; {len(loaded.profile.workloads)} workload(s)",
        ]
        lines += reporting.unproven_lines(loaded, failing=settings.require_contract.value)
    return lines


def _applies(metafunc: pytest.Metafunc, workload: Workload) -> bool:
    return all(mark.args[0](workload) for mark in metafunc.definition.iter_markers("eksid_applies"))


def _parametrize_scopes(metafunc: pytest.Metafunc, settings: Settings) -> None:
    """A cluster test once per profile (``[<profile>]``), a namespace test once per namespace of the profile's
    workloads (``[<profile>/ns/<namespace>]``), each where at least one workload it stands for applies."""
    per_namespace = NAMESPACE_FIXTURE in metafunc.fixturenames
    scopes: list[Scope] = []
    for loaded in settings.loaded_all:
        applying = [w for w in loaded.profile.workloads if _applies(metafunc, w)]
        namespaces: list[str | None] = [*sorted({w.namespace for w in applying})] if per_namespace else [None]
        for ns in namespaces:
            names = tuple(sorted(w.name for w in applying if ns is None or w.namespace == ns))
            if names:
                scopes.append(Scope(loaded, ns, names))
    fixture = NAMESPACE_FIXTURE if per_namespace else CLUSTER_FIXTURE
    metafunc.parametrize(fixture, scopes, indirect=True, ids=[s.key for s in scopes])


@pytest.hookimpl(tryfirst=True)  # the workload's id first: "[<profile>/<workload>-<other params>]"
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    scoped = CLUSTER_FIXTURE in metafunc.fixturenames or NAMESPACE_FIXTURE in metafunc.fixturenames
    if WORKLOAD_FIXTURE not in metafunc.fixturenames and not scoped:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    if not settings.profiles:
        return  # reported as a usage error once collection is done (pytest_collection_finish)
    if scoped:
        if WORKLOAD_FIXTURE in metafunc.fixturenames:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: a test takes eksid_workload or eksid_cluster/eksid_namespace, not both"
            )
        _parametrize_scopes(metafunc, settings)
        return
    subjects = [
        Subject(loaded, w)
        for loaded in settings.loaded_all
        for w in sorted(loaded.profile.workloads, key=lambda w: w.name)
        if _applies(metafunc, w)
    ]
    if ACTION_FIXTURE in metafunc.fixturenames:
        pairs = [
            (s, (expect, i, check))
            for s in subjects
            for expect, checks in (("allowed", s.workload.allow), ("denied", s.workload.deny))
            for i, check in enumerate(checks)
        ]
        metafunc.parametrize(
            [WORKLOAD_FIXTURE, ACTION_FIXTURE],
            pairs,
            indirect=True,
            ids=[f"{s.key}/{'allow' if e == 'allowed' else 'deny'}-{i}:{c.action}" for s, (e, i, c) in pairs],
        )
        return
    if NODEGROUP_FIXTURE in metafunc.fixturenames:
        targets = [(s, g) for s in subjects for g in (list[str | None](s.profile.profile.probe.node_groups) or [None])]
        metafunc.parametrize(
            [WORKLOAD_FIXTURE, NODEGROUP_FIXTURE],
            targets,
            indirect=True,
            ids=[s.key + (f"@{g}" if g else "") for s, g in targets],
        )
        return
    metafunc.parametrize(WORKLOAD_FIXTURE, subjects, indirect=True, ids=[s.key for s in subjects])


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS_KEY]
    grouping = config.pluginmanager.hasplugin("xdist")
    not_applicable = []
    for item in items:
        if item.get_closest_marker("eksid_exec") is not None and not settings.exec_containers.value:
            not_applicable.append(item)  # opt-in: it execs into the workload's own pods
            continue
        subject = subject_of(item)
        scope = scope_of(item)
        callspec = getattr(item, "callspec", None)
        if subject is not None:
            item.add_marker(subject.workload.mechanism.replace("-", "_"))
            if grouping:  # pytest-xdist --dist loadgroup: one cluster's tests (and probes) on one worker
                item.add_marker(pytest.mark.xdist_group(name=subject.profile.name))
        elif scope is not None:
            if grouping:
                item.add_marker(pytest.mark.xdist_group(name=scope.profile.name))
        elif callspec is not None and {WORKLOAD_FIXTURE, CLUSTER_FIXTURE, NAMESPACE_FIXTURE} & set(callspec.params):
            not_applicable.append(item)  # eksid_applies left no workload: the check does not apply here
    if not_applicable:
        config.hook.pytest_deselected(items=not_applicable)
        items[:] = [item for item in items if item not in not_applicable]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist: ``-n N`` puts each workload on one worker, ``--dist loadgroup`` each cluster
    (see pytest_eksid.grouping)."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.profiles:
        return None
    from pytest_eksid.grouping import ClusterGroupScheduling, WorkloadScheduling

    if config.getvalue("dist") == "load":
        return WorkloadScheduling(config, log, workloads=_workload_names(settings))
    if config.getvalue("dist") == "loadgroup":
        return ClusterGroupScheduling(config, log, profiles=[p.name for p in settings.loaded_all])
    return None


DIST_WORKERINPUT = "eksid_dist"  # the controller's --dist, which workers do not see in their own options


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each worker how the controller distributes, so that it can tell which workloads are its own."""
    node.workerinput[DIST_WORKERINPUT] = node.config.getvalue("dist")


def _workload_names(settings: Settings) -> dict[str, list[str]]:
    return {p.name: [w.name for w in p.profile.workloads] for p in settings.loaded_all}


def _my_workloads(config: pytest.Config, items: list[pytest.Item]) -> set[str] | None:
    """On a worker of ``-n N`` (``--dist load``): the ``<profile>/<workload>`` scopes the plugin's
    scheduler sends it, computed as the controller does; None anywhere else (every workload)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or workerinput.get(DIST_WORKERINPUT) != "load":
        return None
    from pytest_eksid.grouping import owners, worker_index, workload_scope

    index = worker_index(str(workerinput.get("workerid", "")))
    if index is None:
        return None
    names = _workload_names(config.stash[SETTINGS_KEY])
    scopes = {workload_scope(item.nodeid, names) for item in items}
    owner = owners((s for s in scopes if s is not None), int(workerinput.get("workercount", 1)))
    return {scope for scope, i in owner.items() if i == index}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which workloads the selected tests need, per cluster, so only their probes are launched."""
    listing = session.config.getoption("showfixtures", False) or session.config.getoption(
        "show_fixtures_per_test", False
    )
    if not session.config.stash[SETTINGS_KEY].profiles and not listing:
        needing = [item.nodeid for item in session.items if WORKLOAD_FIXTURE in getattr(item, "fixturenames", ())]
        if needing:
            more = f" (and {len(needing) - 1} more)" if len(needing) > 1 else ""
            raise pytest.UsageError(
                f"{needing[0]}{more} checks workload identities and needs a profile: "
                "pass --profile NAME (e.g. --profile demo for the embedded sandbox) or a path to a profile YAML"
            )
    selected: dict[str, set[str]] = {}
    mine = _my_workloads(session.config, session.items)
    for item in session.items:
        subject = subject_of(item)
        if subject is not None and (mine is None or f"{subject.profile.name}/{subject.workload.name}" in mine):
            callspec = getattr(item, "callspec", None)
            group = callspec.params.get(NODEGROUP_FIXTURE) if callspec is not None else None
            target = probe_target(subject.profile.profile, subject.workload, group)
            selected.setdefault(subject.profile.name, set()).add(target.key)
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
    config.stash[RESULTS_KEY] = reporting.Results(qualified=len(config.stash[SETTINGS_KEY].profiles) > 1)
    config.stash[FACTS_KEY] = reporting.RunFacts()
    if not _is_worker(config):
        config.pluginmanager.register(ReportCollector(config), "eksid-reports")


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


def pytest_sessionstart(session: pytest.Session) -> None:
    _guard_logs(session.config)


def _guard_logs(config: pytest.Config) -> None:
    """Mask secrets on pytest's log handlers (pytest_eksid.redact). They sit on the root logger while a
    hook or phase runs, inside the logging plugin's wrappers, and are the same objects for the whole run:
    live log and log file from session start, each test's capture (and so its report sections, JUnit
    and Allure) from its setup on."""
    if config.stash[SETTINGS_KEY].profiles:
        guard_handlers()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Allure labels of a workload's test: epic = cluster, feature = family, story = workload."""
    _guard_logs(item.config)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Attach the probe's (redacted) result to the Allure result of a test that used it; report a cluster or
    AWS call that failed by its message alone (the plugin's traceback helps nobody; --tb=long keeps it)."""
    test_report = yield
    if (
        test_report.failed
        and call.excinfo is not None
        and call.excinfo.errisinstance((KubeError, AwsError))
        and item.config.getoption("tbstyle", "auto") != "long"
    ):
        test_report.longrepr = f"{call.excinfo.typename}: {printable(str(call.excinfo.value), keep=chr(10))}"
    if test_report.failed and call.excinfo is not None and isinstance(call.excinfo.value, FindingsFailed):
        # The findings' next commands as data: the failure summary reads these, never the message. On the
        # item too: JUnit writes the properties of the teardown report, which pytest copies from the item.
        steps = [(reporting.NEXT_PROPERTY, cmd) for cmd in call.excinfo.value.next_steps]
        test_report.user_properties = [*test_report.user_properties, *steps]
        item.user_properties.extend(steps)
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

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        profiles = self._profiles()
        if not profiles or self.config.option.collectonly:
            return
        facts = self.config.stash[FACTS_KEY]
        inventory = self.config.stash[INVENTORY_KEY]
        if inventory is not None:
            rows = []
            for loaded in profiles:
                keys = self._rows(loaded)
                matrix = self.config.stash[RESULTS_KEY].matrix(keys, folded=True)
                by_name = {w.name: matrix[key] for w, key in zip(loaded.profile.workloads, keys, strict=True)}
                changed = {w.name: facts.last_changed.get(f"{loaded.name}/{w.name}") for w in loaded.profile.workloads}
                rows += reporting.inventory_rows(loaded, by_name, changed)
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
            (target / "environment.properties").write_text(reporting.allure_environment(profiles, facts), "utf-8")

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
        for line in self.config.stash[FACTS_KEY].lines([p.name for p in self._profiles()]):
            write(line)
        inventory = self.config.stash[INVENTORY_KEY]
        if self.inventory_error is not None:
            write(f"eksid: ERROR: {self.inventory_error}", red=True)
        elif inventory is not None:
            write(f"eksid: inventory written to {inventory.value} (from {inventory.source})")
