"""pytest-eksid's pytest plugin: options, hooks and parametrization. Logic lives elsewhere."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pytest_eksid import discover_hooks, hooks, live, reporting_hooks, xdist_support
from pytest_eksid import report as reporting
from pytest_eksid.connection import Provider
from pytest_eksid.escape import printable
from pytest_eksid.fixtures import (  # re-exported: pytest finds fixtures on the plugin module
    ACTION_FIXTURE,
    CLUSTER_FIXTURE,
    INTERRUPTS_KEY,
    NAMESPACE_FIXTURE,
    NODEGROUP_FIXTURE,
    SELECTED_KEY,
    SETTINGS_KEY,
    WORKLOAD_FIXTURE,
    Scope,
    Subject,
    _progress,
    eksid_action,
    eksid_aws,
    eksid_campaign,
    eksid_cluster,
    eksid_cluster_for,
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
from pytest_eksid.probe.pod import Target, probe_target
from pytest_eksid.profile import (
    LoadedProfile,
    ProfileError,
    Workload,
    check_unique_names,
    load_fleet,
    load_profile,
)
from pytest_eksid.redact import guard_handlers, quiet_wire_loggers
from pytest_eksid.settings import (
    DEFAULT_IAM_BULK_ROLES,
    DEFAULT_MAX_PARALLEL,
    Setting,
    SettingError,
    Settings,
    optional_setting,
    parse_count,
    parse_inconclusive,
    parse_minutes,
    parse_names,
    parse_path,
    parse_positive_int,
    parse_seconds,
    resolve,
)

__all__ = [
    "eksid_action",
    "eksid_aws",
    "eksid_campaign",
    "eksid_cluster",
    "eksid_cluster_for",
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

T = TypeVar("T")

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
    "eksid_cloudtrail": "looks up the previous run's probe sessions in CloudTrail; runs only with --eksid-cloudtrail",
    "eksid_baseline": "compares the cluster with an earlier inventory; runs only with --eksid-inventory-baseline",
    "eksid_applies(predicate)": "run this test only for workloads where predicate(workload) is true "
    "(e.g. only Pod Identity workloads); a cluster or namespace test runs where one of its workloads is",
}


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
        type=parse_positive_int,
        default=None,
        help="Probe pods launched at once, per cluster (default: the provider's, 24 for a live cluster; "
        "ini: eksid_max_parallel, env: EKSID_MAX_PARALLEL)",
    )
    group.addoption(
        "--eksid-api-timeout",
        dest="eksid_api_timeout",
        metavar="SECONDS",
        type=parse_seconds,
        default=None,
        help="How long one Kubernetes or AWS request of the runner may wait to connect, and then for its answer "
        "(default 30); a connection that cannot be made is tried 3 times before the cluster counts as unreachable "
        "(ini: eksid_api_timeout, env: EKSID_API_TIMEOUT)",
    )
    group.addoption(
        "--eksid-sweep",
        dest="eksid_sweep",
        metavar="MINUTES",
        type=parse_minutes,
        default=None,
        help="Before probing, delete probe pods of earlier runs older than MINUTES in the profile's namespaces "
        "(ini: eksid_sweep, env: EKSID_SWEEP)",
    )
    group.addoption(
        "--eksid-inconclusive",
        dest="eksid_inconclusive",
        metavar="skip|fail",
        type=parse_inconclusive,
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
        help="Write the inventory of the cluster's identities, declared or not (binding, owner, who can become it, "
        "created and last changed, conformance per check family) to PATH at the end of the run, as .json, .csv "
        "or .md (ini: eksid_inventory, env: EKSID_INVENTORY)",
    )
    group.addoption(
        "--eksid-inventory-baseline",
        dest="eksid_inventory_baseline",
        metavar="OLD.json",
        type=str,
        default=None,
        help="Compare this run's identities with an earlier run's JSON inventory: new, removed and changed ones in "
        "the summary, and test_inventory_changes fails on those the profile's inventory.failOnChanges lists "
        "(ini: eksid_inventory_baseline, env: EKSID_INVENTORY_BASELINE)",
    )
    group.addoption(
        "--eksid-stats",
        dest="eksid_stats",
        metavar="PATH",
        type=str,
        default=None,
        help="Write what the run cost as JSON to PATH at the end: Kubernetes and AWS requests per cluster (under "
        "xdist every worker's, summed), the probes' own run time, each process's CPU seconds and peak memory "
        "(ini: eksid_stats, env: EKSID_STATS)",
    )
    parser.addini("eksid_stats", "JSON file of the run's requests, CPU and memory, written at the end", default=None)
    parser.addini("eksid_inconclusive", "skip or fail on inconclusive probe results", default=None)
    parser.addini("eksid_inventory", "Inventory file written at the end of the run (.json, .csv or .md)", default=None)
    parser.addini("eksid_inventory_baseline", "An earlier run's JSON inventory to compare with", default=None)
    group.addoption(
        "--eksid-cloudtrail",
        dest="eksid_cloudtrail",
        metavar="STATE.json",
        type=str,
        default=None,
        help="Check in CloudTrail that the previous run's probe sessions recorded in STATE.json were the expected "
        "role (test_cloudtrail_identity), and record this run's for the next (ini: eksid_cloudtrail, "
        "env: EKSID_CLOUDTRAIL)",
    )
    parser.addini(
        "eksid_cloudtrail", "State file of probe sessions checked in CloudTrail by the next run", default=None
    )
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
    group.addoption(
        "--eksid-skip-iam-scan",
        dest="eksid_skip_iam_scan",
        action="store_const",
        const=True,
        default=None,
        help="test_undeclared_identities: do not list the account's IAM roles for trusts admitting this cluster "
        "(one iam:ListRoles request per 1,000 roles, once per account per run; ini: eksid_skip_iam_scan, "
        "env: EKSID_SKIP_IAM_SCAN)",
    )
    group.addoption(
        "--eksid-iam-bulk",
        dest="eksid_iam_bulk",
        metavar="ROLES",
        type=parse_count,
        default=None,
        help="Read IAM in bulk (iam:GetAccountAuthorizationDetails: every role and customer managed policy of the "
        f"account, up to 1,000 a request) when the run reads at least ROLES distinct roles (default "
        f"{DEFAULT_IAM_BULK_ROLES}; 0: always role by role; where IAM refuses the bulk read, the run reads role by "
        "role and says so; ini: eksid_iam_bulk, env: EKSID_IAM_BULK)",
    )
    group.addoption(
        "--eksid-discover",
        dest="eksid_discover",
        metavar="PATH",
        type=str,
        default=None,
        help="Instead of running the checks, write a starter profile for the --profile's cluster to PATH: every "
        "ServiceAccount bound to a role, with allow/deny entries derived from its policies; the profile may list "
        "no workloads yet (ini: eksid_discover, env: EKSID_DISCOVER)",
    )
    parser.addini("eksid_discover", "Write a starter profile from the cluster to this path", default=None)
    parser.addini("eksid_iam_bulk", "Distinct roles from which IAM is read in bulk (0: never)", default=None)
    parser.addini("eksid_skip_iam_scan", "Do not scan IAM roles for undeclared identities (true/false)", default=None)
    parser.addini("eksid_require_contract", "Fail workloads without allow or deny entries (true/false)", default=None)
    parser.addini("eksid_exec", "Look inside running containers (true/false)", default=None)
    parser.addini("eksid_profile", "Profile(s) to check when --profile is not given", default=None)
    parser.addini("eksid_fleet", "Fleet file to check when --fleet is not given", default=None)
    parser.addini("eksid_sweep", "Delete earlier runs' probe pods older than this many minutes", default=None)
    parser.addini("eksid_keep_pods", "Keep probe pods after the run (true/false)", default=None)
    parser.addini("eksid_max_parallel", "Probe pods launched at once", default=None)
    parser.addini("eksid_api_timeout", "Seconds a Kubernetes or AWS request may wait", default=None)


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    profiles = _profiles(config)
    # Each profile's provider validates what it owns of it, and has its own defaults (the live one's for real
    # clusters, the sandbox's where pods are local processes): the lowest applies.
    providers = [_provider(config, p.value) for p in profiles]
    config.stash[PROVIDERS_KEY] = {p.value.name: provider for p, provider in zip(profiles, providers, strict=True)}
    try:
        config.stash[SETTINGS_KEY] = resolve(
            config, profiles, min((p.max_parallel for p in providers), default=DEFAULT_MAX_PARALLEL)
        )
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(xdist_support, "eksid-xdist")
    config.pluginmanager.register(reporting_hooks, "eksid-reporting")
    reporting_hooks.configure(config)
    if config.stash[SETTINGS_KEY].discover is not None:
        discover_hooks.configure(config)  # --eksid-discover: the run writes a profile, it checks nothing
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


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    interrupts = config.stash.get(INTERRUPTS_KEY, None)
    if interrupts is not None:
        interrupts.uninstall()
    # What pytest_collection_finish froze goes back to the collector: a process that runs pytest in-process
    # again (pytester, pytest.main) must not keep each session. Last, so pytest's own collection at
    # unconfigure still skips it.
    gc.unfreeze()


def _profiles(config: pytest.Config) -> tuple[Setting[LoadedProfile], ...]:
    """The run's profiles: the fleet file's clusters, then each --profile (else ini, else environment)."""
    out: list[Setting[LoadedProfile]] = []
    rootdir = Path(config.rootpath)
    # The command line wins: with --fleet or --profile given there, neither's ini/environment value joins in.
    on_cli = config.getoption("eksid_fleet") is not None or config.getoption("eksid_profile") is not None
    fleet = _optional(config, "eksid_fleet", "--fleet", str)
    if on_cli and fleet is not None and fleet.source != "--fleet":
        fleet = None
    try:
        if fleet is not None:
            base = rootdir if fleet.source.startswith("ini ") else Path(config.invocation_params.dir)
            out += [Setting(p, f"{fleet.source} {fleet.value}") for p in load_fleet(fleet.value, rootdir, base)]
        specs = _optional(config, "eksid_profile", "--profile", parse_names)
        if on_cli and specs is not None and specs.source != "--profile":
            specs = None
        discovering = _optional(config, "eksid_discover", "--eksid-discover", parse_path) is not None
        for spec in specs.value if specs is not None else []:
            loaded = load_profile(spec, rootdir, discovering=discovering)
            out.append(Setting(loaded, specs.source if specs is not None else ""))
        out = _without_repeats(out)
        check_unique_names(p.value for p in out)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    return tuple(out)


# Each profile's provider, as it answered at configure time (asked once: it validates what it owns).
PROVIDERS_KEY = pytest.StashKey[dict[str, Provider]]()


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


def _optional(config: pytest.Config, name: str, flag: str, parse: Callable[[str], T]) -> Setting[T] | None:
    try:
        return optional_setting(config, name, flag, parse)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = config.stash.get(SETTINGS_KEY, None)
    if run is None or not run.profiles:
        return ["eksid: no profile (pass --profile NAME, e.g. --profile demo)"]
    lines = []
    for setting in run.profiles:
        loaded = setting.value
        cluster = loaded.profile.cluster
        try:
            shown = loaded.path.relative_to(config.rootpath)
        except ValueError:
            shown = loaded.path
        target = config.stash[PROVIDERS_KEY][loaded.name].label
        lines += [
            f"eksid: profile {loaded.name}: {shown} (from {setting.source})",
            f"eksid: cluster {cluster.name}, region {cluster.region}, account {cluster.account_id}; {target}",
            f"eksid: probe image {loaded.profile.probe.image}; {len(loaded.profile.workloads)} workload(s)",
        ]
        lines += reporting.unproven_lines(loaded, failing=run.require_contract.value)
    if run.cloudtrail is not None:
        lines.append(f"eksid: cloudtrail state {printable(run.cloudtrail.value)} (from {run.cloudtrail.source})")
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
        if item.get_closest_marker("eksid_cloudtrail") is not None and settings.cloudtrail is None:
            not_applicable.append(item)  # opt-in: it reads CloudTrail and writes the state file
            continue
        if item.get_closest_marker("eksid_baseline") is not None and settings.inventory_baseline is None:
            not_applicable.append(item)  # opt-in: it compares with --eksid-inventory-baseline
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
    selected: dict[str, dict[str, Target]] = {}
    mine = xdist_support.owned_workloads(session.config)
    for item in session.items:
        subject = subject_of(item)
        if subject is not None and (mine is None or subject.key in mine):
            callspec = getattr(item, "callspec", None)
            group = callspec.params.get(NODEGROUP_FIXTURE) if callspec is not None else None
            target = probe_target(subject.profile.profile, subject.workload, group)
            selected.setdefault(subject.profile.name, {})[target.key] = target
    session.config.stash[SELECTED_KEY] = selected
    if selected:
        # What exists now (every imported module, the collected items, the profiles) lives until the run ends:
        # out of the garbage collector's way (the gc module's gc.freeze), its full collections, which grow more
        # frequent and longer with the run's objects, walk only what the run makes from here on, pytest's own
        # collection at the session's end included. A fleet-sized run spent about a twentieth of its CPU there.
        # Garbage is collected first, so none is kept; pytest_unconfigure unfreezes.
        gc.collect()
        gc.freeze()


def pytest_sessionstart(session: pytest.Session) -> None:
    _guard_logs(session.config)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _guard_logs(item.config)


def _guard_logs(config: pytest.Config) -> None:
    """Mask secrets on pytest's log handlers (pytest_eksid.redact). They sit on the root logger while a
    hook or phase runs, inside the logging plugin's wrappers, and are the same objects for the whole run:
    live log and log file from session start, each test's capture (and so its report sections, JUnit
    and Allure) from its setup on."""
    if config.stash[SETTINGS_KEY].profiles:
        guard_handlers()
