"""Fixtures: the session engine, the cluster under test and its clients, the probe campaign, one workload's probe.

Scopes never depend on the run's number of clusters: the engine (pytest_eksid.engine) is session-scoped
and so is ``eksid_cluster_for``, the factory a session fixture of your own uses; everything about the
cluster *under test* (``eksid_profile``, ``eksid_kube``, ``eksid_aws``, ...) is a cheap per-test accessor
of the engine's cached clients. The engine's errors become the test's failure here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

import pytest

from pytest_eksid.aws import Aws
from pytest_eksid.checks import Finding, refer
from pytest_eksid.checks.agent import FM_AGENT
from pytest_eksid.connection import Environment
from pytest_eksid.engine import Engine, EngineError
from pytest_eksid.escape import printable, quoted
from pytest_eksid.interrupts import Interrupts
from pytest_eksid.kube import Kube
from pytest_eksid.probe.pod import Campaign, ProbeOutcome, Target, probe_target
from pytest_eksid.profile import ActionCheck, LoadedProfile, Workload
from pytest_eksid.redact import redact_json
from pytest_eksid.report import INCONCLUSIVE, UNPROVEN, RunFacts
from pytest_eksid.settings import Settings
from pytest_eksid.stats import RunStats

SETTINGS_KEY = pytest.StashKey[Settings]()
INTERRUPTS_KEY = pytest.StashKey[Interrupts]()
# profile -> the probe targets the selected tests need (by Target.key); under pytest-xdist only this worker's
SELECTED_KEY = pytest.StashKey[dict[str, dict[str, Target]]]()
FACTS_KEY = pytest.StashKey[RunFacts]()  # what the engine gathered about the clusters, for the reports
FACTS_WORKEROUTPUT = "eksid_facts"  # under pytest-xdist, the key of a worker's facts in its workeroutput
STATS_KEY = pytest.StashKey[RunStats]()  # the run's requests, probe times and processes (pytest_eksid.stats)
STATS_WORKEROUTPUT = "eksid_stats"  # under pytest-xdist, the key of a worker's stats in its workeroutput
WORKLOAD_FIXTURE = "eksid_workload"
ACTION_FIXTURE = "eksid_action"
NODEGROUP_FIXTURE = "eksid_nodegroup"
CLUSTER_FIXTURE = "eksid_cluster"
NAMESPACE_FIXTURE = "eksid_namespace"
T = TypeVar("T")


def _progress(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.get_verbosity() < 0:
        return
    if capture is None:
        reporter.write_line(f"eksid: {message}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"eksid: {message}")


_Failed = pytest.fail.Exception  # pytest's public name for its Failed outcome
_Skipped = pytest.skip.Exception  # and for its Skipped outcome


class FindingsFailed(_Failed):  # type: ignore[misc,valid-type]
    """A test failed on findings: their messages, and the findings themselves as data (the reporting hooks
    make them the report's ``finding`` and ``next`` properties, which the failure summary shows; no
    message text is parsed for them)."""

    # Shown as pytest's own ``Failed: <message>`` (pytest's OutcomeException does the same), which is what
    # people, JUnit readers and report.failure_text know.
    __module__ = "builtins"
    __qualname__ = "Failed"

    def __init__(self, findings: Iterable[Finding]) -> None:
        listed = list(findings)
        super().__init__("\n\n".join(f.message() for f in listed), pytrace=False)
        self.findings: tuple[Finding, ...] = tuple(listed)


class Outcome(BaseException):
    """An exception that gives its test an eksid outcome beside pytest's own (the report hooks carry it as the
    ``eksid_outcome`` property; INCONCLUSIVE is also its own outcome at the terminal)."""

    eksid_outcome: str


class InconclusiveSkip(_Skipped, Outcome):  # type: ignore[misc,valid-type]
    __module__ = "builtins"  # shown as pytest's own ``Skipped: <reason>``
    __qualname__ = "Skipped"
    eksid_outcome = INCONCLUSIVE


class InconclusiveFailed(_Failed, Outcome):  # type: ignore[misc,valid-type]
    __module__ = "builtins"
    __qualname__ = "Failed"
    eksid_outcome = INCONCLUSIVE


class UnprovenSkip(_Skipped, Outcome):  # type: ignore[misc,valid-type]
    __module__ = "builtins"
    __qualname__ = "Skipped"
    eksid_outcome = UNPROVEN


class UnprovenFailed(_Failed, Outcome):  # type: ignore[misc,valid-type]
    __module__ = "builtins"
    __qualname__ = "Failed"
    eksid_outcome = UNPROVEN


def fail_on(finding: Finding | Iterable[Finding] | None) -> None:
    """Fail the current test with the findings' messages (no traceback: the message is the point)."""
    findings = [finding] if isinstance(finding, Finding) else list(finding or [])
    if findings:
        raise FindingsFailed(findings)


def inconclusive(settings: Settings, reason: str) -> NoReturn:
    """An inconclusive measurement: reported as such (skipped, or failed with --eksid-inconclusive=fail)."""
    __tracebackhide__ = True
    if settings.inconclusive.value == "fail":
        raise InconclusiveFailed(f"INCONCLUSIVE (--eksid-inconclusive=fail): {printable(reason, keep=chr(10))}", False)
    raise InconclusiveSkip(f"INCONCLUSIVE: {printable(reason, keep=chr(10))}")


def unproven(settings: Settings, reason: str) -> NoReturn:
    """Nothing to prove: the profile declares no expectation for this part of the contract. Reported as
    ``unproven`` (a skip; never a pass), or failed with --eksid-require-contract."""
    __tracebackhide__ = True
    if settings.require_contract.value:
        raise UnprovenFailed(f"UNPROVEN (--eksid-require-contract): {printable(reason, keep=chr(10))}", False)
    raise UnprovenSkip(f"UNPROVEN: {printable(reason, keep=chr(10))}")


@dataclass(frozen=True)
class Subject:
    """What a parametrized test checks: one workload of one profile (one cluster)."""

    profile: LoadedProfile
    workload: Workload

    @property
    def key(self) -> str:
        return f"{self.profile.name}/{self.workload.name}"

    def __repr__(self) -> str:
        # Reports (Allure parameters) print it: never the profile, whose sandbox section may hold seeded secrets.
        return self.key


def subject_of(item: pytest.Item) -> Subject | None:
    """The subject a test item was parametrized with, if any."""
    callspec = getattr(item, "callspec", None)
    subject = callspec.params.get(WORKLOAD_FIXTURE) if callspec is not None else None
    return subject if isinstance(subject, Subject) else None


@dataclass(frozen=True)
class Scope:
    """What a cluster- or namespace-scoped test checks: facts shared by several workloads, checked once.

    ``workloads`` are the names of the profile's workloads the check stands for (those the test applies to,
    in the namespace for a namespace test): the reports fold its outcome into theirs.
    """

    profile: LoadedProfile
    namespace: str | None
    workloads: tuple[str, ...]

    @property
    def key(self) -> str:
        """``<profile>`` for the cluster, ``<profile>/ns/<namespace>`` for a namespace (the test id)."""
        return self.profile.name if self.namespace is None else f"{self.profile.name}/ns/{self.namespace}"

    def __repr__(self) -> str:
        return self.key


def scope_of(item: pytest.Item) -> Scope | None:
    """The cluster or namespace a test item was parametrized with, if any."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for name in (CLUSTER_FIXTURE, NAMESPACE_FIXTURE):
        scope = callspec.params.get(name)
        if isinstance(scope, Scope):
            return scope
    return None


def see(test: str, scope: Scope | str) -> str:
    """How a workload's test points at the cluster or namespace test that owns a finding."""
    return f"see {test}[{scope if isinstance(scope, str) else scope.key}]"


AGENT_DAEMONSET_TEST = "suites/test_agent.py::test_agent_daemonset_available"
OIDC_PROVIDER_TEST = "suites/test_agent.py::test_oidc_provider"


def cluster_refs(profile: LoadedProfile, findings: Finding | Iterable[Finding] | None) -> list[Finding]:
    """A workload's findings whose likely cause is the cluster's agent or OIDC provider point at the cluster
    test that checks it once (instead of each workload repeating that finding)."""
    out = refer(findings, FM_AGENT, see(AGENT_DAEMONSET_TEST, profile.name))
    return refer(out, "no IAM OIDC provider", see(OIDC_PROVIDER_TEST, profile.name))


def _engine(call: Callable[[], T]) -> T:
    """The engine's answer, or the test's failure with the engine's message (no traceback: it says it all)."""
    __tracebackhide__ = True
    try:
        return call()
    except EngineError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: the report shows no chained exception


class Cluster:
    """One cluster of the run, as a session fixture of your own sees it: its clients, connected on first use.

    Every property asks the session engine, which connects once per cluster and caches; a cluster that
    cannot be reached fails the test (or the fixture's setup) that asked, with one message.
    """

    def __init__(self, engine: Engine, profile: LoadedProfile) -> None:
        self._engine = engine
        self.profile = profile

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def kube(self) -> Kube:
        return _engine(lambda: self._engine.kube(self.profile))

    @property
    def aws(self) -> Aws:
        return _engine(lambda: self._engine.aws(self.profile))

    @property
    def connection(self) -> Environment:
        return _engine(lambda: self._engine.connection(self.profile))

    @property
    def campaign(self) -> Campaign:
        return _engine(lambda: self._engine.campaign(self.profile))

    def __repr__(self) -> str:
        return f"Cluster({self.profile.name})"


class ClusterFactory(Protocol):
    """``eksid_cluster_for``: a cluster of the run by its profile (a name or the loaded profile). With no
    argument, the run's only cluster; a usage error naming the profiles when the run has several."""

    def __call__(self, profile: str | LoadedProfile | None = None) -> Cluster: ...


@pytest.fixture(scope="session")
def eksid_settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def eksid_clusters(pytestconfig: pytest.Config, eksid_settings: Settings) -> Iterator[Engine]:
    """The session engine: the run's clusters, connected on first use (probe pods deleted and sandboxes
    stopped at the end of the session)."""
    config = pytestconfig
    engine = Engine(
        eksid_settings,
        Path(config.rootpath),
        progress=lambda message: _progress(config, message),
        selected=lambda name: config.stash.get(SELECTED_KEY, {}).get(name, {}).values(),
        manifest_hook=lambda loaded, manifest, workload: config.hook.pytest_eksid_probe_manifest(
            manifest=manifest, profile=loaded.profile, workload=workload
        ),
        connect=lambda loaded, progress: config.hook.pytest_eksid_connect(
            config=config, profile=loaded, progress=progress
        ),
        facts=config.stash.setdefault(FACTS_KEY, RunFacts()),
        interrupts=config.stash.get(INTERRUPTS_KEY, None),
        stats=config.stash.setdefault(STATS_KEY, RunStats()),
    )
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def eksid_cluster_for(eksid_clusters: Engine, eksid_settings: Settings) -> ClusterFactory:
    """A factory for session fixtures of your own: ``eksid_cluster_for(profile)`` is that cluster's
    :class:`Cluster` (``.kube``, ``.aws``, ``.connection``, ``.campaign``). Loop over
    ``eksid_settings.loaded_all`` and the same fixture serves one profile and a ``--fleet``."""

    def cluster_for(profile: str | LoadedProfile | None = None) -> Cluster:
        if isinstance(profile, LoadedProfile):
            return Cluster(eksid_clusters, profile)
        if profile is None:
            profiles = eksid_settings.loaded_all
            if len(profiles) != 1:
                names = ", ".join(p.name for p in profiles) or "none"
                raise pytest.UsageError(
                    f"eksid_cluster_for() needs a profile name when the run does not have exactly one (it has: {names})"
                )
            return Cluster(eksid_clusters, profiles[0])
        try:
            return Cluster(eksid_clusters, eksid_clusters.profile(profile))
        except LookupError as exc:
            raise pytest.UsageError(f"eksid_cluster_for: {exc.args[0]}") from None

    return cluster_for


@pytest.fixture
def eksid_profile(request: pytest.FixtureRequest, eksid_settings: Settings) -> LoadedProfile:
    """The profile of the cluster under test: the workload's (or the cluster or namespace test's), or the
    run's only one."""
    subject = subject_of(request.node) if isinstance(request.node, pytest.Item) else None
    if subject is not None:
        return subject.profile
    scope = scope_of(request.node) if isinstance(request.node, pytest.Item) else None
    if scope is not None:
        return scope.profile
    profiles = eksid_settings.loaded_all
    if not profiles:
        raise pytest.UsageError("no profile: pass --profile NAME (e.g. --profile demo)")
    if len(profiles) > 1:
        names = ", ".join(p.name for p in profiles)
        pytest.fail(
            f"{request.node.nodeid}: this test has no workload, so which cluster it is about is unknown: the run "
            f"checks several profiles ({names}); ask for eksid_workload too (the plugin parametrizes it), or run "
            "one profile",
            pytrace=False,
        )
    return profiles[0]


@pytest.fixture
def eksid_connection(eksid_clusters: Engine, eksid_profile: LoadedProfile) -> Environment:
    """How the runner reaches the cluster under test, as the standard variables say it, for tools of
    your own (``subprocess.run([...], env={**os.environ, **eksid_connection})``): for a sandbox (started on
    first use) ``KUBECONFIG``, ``AWS_ENDPOINT_URL`` and its credentials; for a live cluster ``KUBECONFIG``
    and ``AWS_PROFILE`` where the profile sets them (else your own environment's apply). The kube
    context is ``eksid_kube.context``."""
    return _engine(lambda: eksid_clusters.connection(eksid_profile))


@pytest.fixture
def eksid_kube(eksid_clusters: Engine, eksid_profile: LoadedProfile) -> Kube:
    """The Kubernetes client for the cluster under test (the engine's, made once per cluster)."""
    return _engine(lambda: eksid_clusters.kube(eksid_profile))


@pytest.fixture
def eksid_campaign(eksid_clusters: Engine, eksid_profile: LoadedProfile) -> Campaign:
    """The cluster's probe campaign: all its selected workloads' probe pods, launched at once on first use."""
    return _engine(lambda: eksid_clusters.campaign(eksid_profile))


@pytest.fixture
def eksid_workload(request: pytest.FixtureRequest) -> Workload:
    """The workload under test (parametrized from the profile: ``<profile>/<workload>``)."""
    subject = getattr(request, "param", None)
    if not isinstance(subject, Subject):
        raise pytest.UsageError(f"{request.node.nodeid}: eksid_workload is parametrized by the plugin from --profile")
    return subject.workload


def _outcome(request: pytest.FixtureRequest, campaign: Campaign, target: Target) -> ProbeOutcome:
    outcome = campaign.outcomes.get(target.key)
    if outcome is None:
        outcome = campaign.run([target])[target.key]
    if outcome.placement is not None:
        request.node.user_properties.append(("probe_placement", outcome.placement.source))
        request.node.add_report_section("call", "eksid probe placement", outcome.placement.source)
    if outcome.result is not None:
        if outcome.shown is None:
            outcome.shown = redact_json(outcome.result)
        request.node.add_report_section("call", "eksid probe result", outcome.shown)
    if outcome.events:
        # Events are cluster text (any tenant writes them): one printable line each.
        request.node.add_report_section("call", "eksid probe pod events", "\n".join(map(printable, outcome.events)))
    if outcome.error is not None:
        # The error's first line is ours; what follows (a pod's last log lines) is quoted, line by line.
        first, _, rest = outcome.error.partition("\n")
        events = "".join(f"\n    {printable(line)}" for line in outcome.events)
        pytest.fail(
            f"{target.key}: the probe could not run: {printable(first)}"
            + (f"\n{quoted(rest)}" if rest else "")
            + (f"\n  pod events:{events}" if events else ""),
            pytrace=False,
        )
    return outcome


@pytest.fixture
def eksid_probe(request: pytest.FixtureRequest, eksid_campaign: Campaign, eksid_workload: Workload) -> ProbeOutcome:
    """The probe's result for this workload; fails the test when the probe could not run."""
    return _outcome(request, eksid_campaign, Target(eksid_workload))


@pytest.fixture
def eksid_nodegroup(request: pytest.FixtureRequest) -> str | None:
    """The node group a probe is pinned to (``probe.nodeGroups``), or None for any node."""
    param = getattr(request, "param", None)
    return str(param) if param is not None else None


@pytest.fixture
def eksid_node_probe(
    request: pytest.FixtureRequest, eksid_campaign: Campaign, eksid_workload: Workload, eksid_nodegroup: str | None
) -> ProbeOutcome:
    """The probe's result for this workload on this node group (the workload's own probe when none)."""
    return _outcome(request, eksid_campaign, probe_target(eksid_campaign.profile, eksid_workload, eksid_nodegroup))


@pytest.fixture
def eksid_aws(eksid_clusters: Engine, eksid_profile: LoadedProfile) -> Aws:
    """Read-only AWS facts (IAM, EKS) for the cluster under test, with the runner's own credentials (the reads the
    run needs are prefetched in the background, once; the probe campaign starts that too, with its pods)."""
    aws = _engine(lambda: eksid_clusters.aws(eksid_profile))
    eksid_clusters.prefetch(eksid_profile)
    return aws


@pytest.fixture
def eksid_cluster(request: pytest.FixtureRequest) -> LoadedProfile:
    """The cluster of a cluster-scoped test (parametrized by the plugin: ``<profile>``), checked once per run."""
    scope = getattr(request, "param", None)
    if not isinstance(scope, Scope) or scope.namespace is not None:
        raise pytest.UsageError(f"{request.node.nodeid}: eksid_cluster is parametrized by the plugin from --profile")
    return scope.profile


@pytest.fixture
def eksid_namespace(request: pytest.FixtureRequest) -> str:
    """The namespace of a namespace-scoped test (parametrized by the plugin: ``<profile>/ns/<namespace>``):
    every namespace of the profile's workloads, checked once however many workloads it holds."""
    scope = getattr(request, "param", None)
    if not isinstance(scope, Scope) or scope.namespace is None:
        raise pytest.UsageError(f"{request.node.nodeid}: eksid_namespace is parametrized by the plugin from --profile")
    return scope.namespace


@pytest.fixture
def eksid_action(request: pytest.FixtureRequest) -> tuple[str, str, ActionCheck]:
    """``(expect, id, check)`` of one allow/deny entry of the workload (parametrized by the plugin)."""
    param = getattr(request, "param", None)
    if not isinstance(param, tuple):
        raise pytest.UsageError(f"{request.node.nodeid}: eksid_action is parametrized by the plugin from --profile")
    expect, index, check = param
    prefix = "allow" if expect == "allowed" else "deny"
    return str(expect), f"{prefix}-{index}", check
