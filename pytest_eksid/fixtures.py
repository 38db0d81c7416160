"""Fixtures: the profile, the cluster connection, the probe campaign, one workload's probe."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import pytest

from pytest_eksid.aws import Aws, AwsError
from pytest_eksid.checks import Finding, refer
from pytest_eksid.checks.agent import FM_AGENT
from pytest_eksid.connection import Connection
from pytest_eksid.escape import printable, quoted
from pytest_eksid.interrupts import Interrupts
from pytest_eksid.kube import Kube, KubeError, KubeTarget
from pytest_eksid.probe.pod import RUN_ID_LABEL, Campaign, ProbeOutcome, Target, probe_target
from pytest_eksid.profile import ActionCheck, LoadedProfile, Workload
from pytest_eksid.redact import redact_json
from pytest_eksid.report import RunFacts, last_changed
from pytest_eksid.settings import Settings

SETTINGS_KEY = pytest.StashKey[Settings]()
INTERRUPTS_KEY = pytest.StashKey[Interrupts]()
SELECTED_KEY = pytest.StashKey[dict[str, set[str]]]()  # profile -> probe target keys the selected tests need
WORKLOAD_FIXTURE = "eksid_workload"
ACTION_FIXTURE = "eksid_action"
NODEGROUP_FIXTURE = "eksid_nodegroup"
CLUSTER_FIXTURE = "eksid_cluster"
HURRY_TIMEOUT = 5.0  # seconds the hurried delete of a namespace's probe pods may take (a second Ctrl-C)
NAMESPACE_FIXTURE = "eksid_namespace"


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


class FindingsFailed(_Failed):  # type: ignore[misc,valid-type]
    """A test failed on findings: their messages, and their next commands as data (the plugin makes them
    the report's ``next`` properties, which the failure summary shows; no message text is parsed for them)."""

    # Shown as pytest's own ``Failed: <message>`` (pytest's OutcomeException does the same), which is what
    # people, JUnit readers and report.failure_text know.
    __module__ = "builtins"
    __qualname__ = "Failed"

    def __init__(self, findings: Iterable[Finding]) -> None:
        listed = list(findings)
        super().__init__("\n\n".join(f.message() for f in listed), pytrace=False)
        self.next_steps: tuple[str, ...] = tuple(cmd for f in listed for cmd in f.next_steps)


def fail_on(finding: Finding | Iterable[Finding] | None) -> None:
    """Fail the current test with the findings' messages (no traceback: the message is the point)."""
    findings = [finding] if isinstance(finding, Finding) else list(finding or [])
    if findings:
        raise FindingsFailed(findings)


def inconclusive(settings: Settings, reason: str) -> NoReturn:
    """An inconclusive measurement: reported as such (skipped, or failed with --eksid-inconclusive=fail)."""
    if settings.inconclusive.value == "fail":
        pytest.fail(f"INCONCLUSIVE (--eksid-inconclusive=fail): {printable(reason, keep=chr(10))}", pytrace=False)
    pytest.skip(f"INCONCLUSIVE: {printable(reason, keep=chr(10))}")


def unproven(settings: Settings, reason: str) -> NoReturn:
    """Nothing to prove: the profile declares no expectation for this part of the contract. Reported as
    ``unproven`` (a skip; never a pass), or failed with --eksid-require-contract."""
    if settings.require_contract.value:
        pytest.fail(f"UNPROVEN (--eksid-require-contract): {printable(reason, keep=chr(10))}", pytrace=False)
    pytest.skip(f"UNPROVEN: {printable(reason, keep=chr(10))}")


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


@dataclass
class Reach:
    """How the runner reaches one cluster: a kubeconfig and context, and the AWS settings (as the
    standard variables would say them; empty for a live cluster: the process's own environment)."""

    kubeconfig: str | None
    context: str | None
    env: dict[str, str | None] = field(repr=False)  # holds the sandbox runner's keys


class Clusters:
    """The run's clusters, each connected on first use and closed at the end of the session.

    A cluster is reached through the ``pytest_eksid_connect`` hook (the live provider, or another such
    as the embedded sandbox) and let go through its connection's ``close``. With a single cluster in the run,
    its settings are also exported to the process environment for the session, so that
    ``kubectl`` or boto3 in a user's own tests reach it too.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._reach: dict[str, Reach] = {}
        self._kube: dict[str, Kube] = {}
        self._aws: dict[str, Aws] = {}
        self._campaigns: dict[str, Campaign] = {}
        self._launched: list[Campaign] = []
        self._broken: dict[str, str] = {}  # profile -> why it cannot be reached (asked once)
        self._connections: list[Connection] = []  # closed in reverse order at the end
        self._env = pytest.MonkeyPatch()
        self._interrupts = config.stash.get(INTERRUPTS_KEY, None)
        if self._interrupts is not None:
            self._interrupts.hurry.append(self.hurry)

    def reach(self, loaded: LoadedProfile) -> Reach:
        name = loaded.name
        if name in self._broken:
            pytest.fail(self._broken[name], pytrace=False)
        if name not in self._reach:
            try:
                self._reach[name] = self._connect(loaded)
            except Exception as exc:
                self._broken[name] = f"{loaded.path}: cannot reach cluster {loaded.profile.cluster.name}: {exc}"
            if name in self._broken:
                pytest.fail(self._broken[name], pytrace=False)
        return self._reach[name]

    def _connect(self, loaded: LoadedProfile) -> Reach:
        connection: Connection | None = self.config.hook.pytest_eksid_connect(
            config=self.config, profile=loaded, progress=lambda message: self._say(loaded.name, message)
        )
        if connection is None:  # not even the live provider answered: it was unregistered (-p no:...)
            raise LookupError("no provider answered pytest_eksid_connect")
        self._connections.append(connection)
        if len(self.settings.profiles) == 1:
            for key, value in connection.env.items():
                if value is None:
                    self._env.delenv(key, raising=False)
                else:
                    self._env.setenv(key, value)
        return Reach(connection.kubeconfig, connection.context, dict(connection.env))

    def kube(self, loaded: LoadedProfile) -> Kube:
        name = loaded.name
        if name not in self._kube:
            reach = self.reach(loaded)
            try:
                self._kube[name] = Kube(
                    KubeTarget(kubeconfig=reach.kubeconfig, context=reach.context),
                    timeout=self.settings.api_timeout.value,
                )
            except KubeError as exc:
                self._broken[name] = f"{loaded.path}: cluster.kubeconfig/kubeContext: {exc}"
            if name in self._broken:
                pytest.fail(self._broken[name], pytrace=False)
        return self._kube[name]

    def aws(self, loaded: LoadedProfile) -> Aws:
        name = loaded.name
        if name not in self._aws:
            reach = self.reach(loaded)
            cluster = loaded.profile.cluster
            self._aws[name] = Aws(
                region=cluster.region,
                env=reach.env,
                profile_name=cluster.aws_profile,
                timeout=self.settings.api_timeout.value,
            )
        return self._aws[name]

    def campaign(self, loaded: LoadedProfile) -> Campaign:
        """The cluster's probe campaign: its selected workloads' probe pods, launched at once on first use."""
        name = loaded.name
        if name in self._campaigns:
            return self._campaigns[name]
        if name in self._broken:
            pytest.fail(self._broken[name], pytrace=False)
        kube = self.kube(loaded)
        settings, config = self.settings, self.config
        campaign = Campaign(
            kube=kube,
            profile=loaded.profile,
            max_parallel=settings.max_parallel.value,
            keep_pods=settings.keep_pods.value,
            progress=lambda msg: self._say(name, msg),
            manifest_hook=lambda manifest, workload: config.hook.pytest_eksid_probe_manifest(
                manifest=manifest, profile=loaded.profile, workload=workload
            ),
            prove=lambda url, nonce: self.aws(loaded).prove_caller(url, nonce),
        )
        self._launched.append(campaign)  # whatever happens next, its pods are deleted at the end
        try:
            if settings.sweep_minutes is not None:
                swept = campaign.sweep(settings.sweep_minutes.value)
                campaign.progress(f"swept {len(swept)} probe pod(s) older than {settings.sweep_minutes.value:g} min")
            selected = config.stash.get(SELECTED_KEY, {}).get(name, set())
            campaign.run(
                [
                    Target(w, key.partition("@")[2] or None)
                    for key in sorted(selected)
                    for w in loaded.profile.workloads
                    if w.name == key.partition("@")[0]
                ]
            )
        except KubeError as exc:
            self._broken[name] = (
                f"{loaded.path}: cluster {loaded.profile.cluster.name}: the probe campaign failed: {exc}"
            )
        if name in self._broken:
            pytest.fail(self._broken[name], pytrace=False)
        self._campaigns[name] = campaign
        return campaign

    def close(self) -> None:
        """Delete probe pods, close clients, stop sandboxes, restore the environment: each cluster and
        each step even if an earlier one failed, and whatever signal arrives meanwhile (deferred); the
        first error is raised at the end."""
        if self._interrupts is None:
            self._close()
            return
        with self._interrupts.cleaning():
            self._close()

    def hurry(self) -> None:
        """A second Ctrl-C or SIGTERM before cleanup began: one bounded delete of the run's probe pods by
        its label per namespace (the pods a create sent without an answer included), then the sandboxes
        stopped; the process exits next (pytest_eksid.interrupts)."""
        for campaign in self._launched:
            campaign.cancel()
            if campaign.keep_pods:
                continue
            for namespace in sorted({w.namespace for w in campaign.profile.workloads}):
                try:
                    campaign.kube.delete_pods(namespace, f"{RUN_ID_LABEL}={campaign.run_id}", timeout=HURRY_TIMEOUT)
                except KubeError as exc:
                    _progress(
                        self.config,
                        f"could not delete probe pods in {namespace}: {exc}; delete them with: "
                        f"kubectl delete pods -A -l {RUN_ID_LABEL}={campaign.run_id}",
                    )
        for connection in reversed(self._connections):
            connection.close()

    def _close(self) -> None:
        errors: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
                _progress(self.config, f"cleanup step failed: {exc.__class__.__name__}: {exc}")

        for campaign in self._launched:
            attempt(functools.partial(self._cleanup, campaign))
        for kube in self._kube.values():
            attempt(kube.close)
        for connection in reversed(self._connections):
            attempt(connection.close)
        self._env.undo()
        if errors:
            raise errors[0]

    def _say(self, profile: str, message: str) -> None:
        """Progress about one cluster: prefixed with its profile when the run has several."""
        _progress(self.config, message if len(self.settings.profiles) == 1 else f"{profile}: {message}")

    @staticmethod
    def _cleanup(campaign: Campaign) -> None:
        deleted = campaign.cleanup()
        if deleted:
            campaign.progress(f"deleted {len(deleted)} probe pod(s)")
        elif campaign.keep_pods:
            campaign.progress(
                f"kept probe pods (run id {campaign.run_id}); delete them with: "
                f"kubectl delete pods -A -l eksid.dev/run-id={campaign.run_id}"
            )


@pytest.fixture(scope="session")
def eksid_settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def eksid_clusters(pytestconfig: pytest.Config, eksid_settings: Settings) -> Iterator[Clusters]:
    """The run's clusters (connected on first use; probe pods deleted and sandboxes stopped at the end)."""
    clusters = Clusters(pytestconfig, eksid_settings)
    try:
        yield clusters
    finally:
        clusters.close()


def _cluster_scope(fixture_name: str, config: pytest.Config) -> Literal["session", "function"]:
    """Session-scoped with one cluster in the run (so a user's session fixtures may use them);
    per test with several, where each test's cluster is its workload's."""
    settings = config.stash.get(SETTINGS_KEY, None)
    return "function" if settings is not None and len(settings.profiles) > 1 else "session"


@pytest.fixture(scope=_cluster_scope)
def eksid_profile(request: pytest.FixtureRequest, eksid_settings: Settings) -> LoadedProfile:
    """The profile of the cluster under test: the workload's, or the run's only one."""
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


@pytest.fixture(scope=_cluster_scope)
def eksid_connection(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> dict[str, str | None]:
    """How the runner reaches the cluster under test, as the standard variables say it, for tools of
    your own (``subprocess.run([...], env={**os.environ, **eksid_connection})``): for a sandbox (started on
    first use) ``KUBECONFIG``, ``AWS_ENDPOINT_URL`` and its credentials; for a live cluster ``KUBECONFIG``
    and ``AWS_PROFILE`` where the profile sets them (else your own environment's apply). The kube
    context is ``eksid_kube.context``."""
    reach = eksid_clusters.reach(eksid_profile)
    out: dict[str, str | None] = {}
    if reach.kubeconfig is not None:
        out["KUBECONFIG"] = reach.kubeconfig
    if eksid_profile.profile.cluster.aws_profile is not None:
        out["AWS_PROFILE"] = eksid_profile.profile.cluster.aws_profile
    return {**out, **reach.env}


@pytest.fixture(scope=_cluster_scope)
def eksid_kube(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> Kube:
    """The Kubernetes client for the cluster under test."""
    return eksid_clusters.kube(eksid_profile)


@pytest.fixture(scope=_cluster_scope)
def eksid_campaign(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> Campaign:
    """The cluster's probe campaign: all its selected workloads' probe pods, launched at once."""
    return eksid_clusters.campaign(eksid_profile)


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
        request.node.add_report_section("call", "eksid probe result", redact_json(outcome.result))
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


@pytest.fixture(scope=_cluster_scope)
def eksid_aws(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> Aws:
    """Read-only AWS facts (IAM, EKS) for the cluster under test, with the runner's own credentials."""
    return eksid_clusters.aws(eksid_profile)


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


# --- facts for the reports (pytest_eksid.report) ------------------------------------------

FACTS_KEY = pytest.StashKey[RunFacts]()
FACTS_WORKEROUTPUT = "eksid_facts"  # under pytest-xdist, the key of a worker's facts in its workeroutput


@pytest.fixture(autouse=True)
def _eksid_report_facts(request: pytest.FixtureRequest) -> None:
    """Gather what only the cluster knows for the reports: the runner's identity, the kube context,
    and when a Pod Identity association last changed (also a ``last_changed`` JUnit property).

    Only for tests of a workload that reach the cluster anyway; each fact is asked once per process,
    and an AWS error leaves it unknown rather than failing the test.
    """
    if WORKLOAD_FIXTURE not in request.fixturenames or "eksid_clusters" not in request.fixturenames:
        return
    workload: Workload = request.getfixturevalue(WORKLOAD_FIXTURE)
    profile: LoadedProfile = request.getfixturevalue("eksid_profile")
    aws: Aws = request.getfixturevalue("eksid_aws")
    facts = request.config.stash.setdefault(FACTS_KEY, RunFacts())
    name = profile.name
    if name not in facts.runner:
        try:
            facts.runner[name] = aws.caller()["arn"]
        except AwsError as exc:
            facts.runner[name] = f"unknown ({exc})"
    reaching = {"eksid_kube", "eksid_campaign", "eksid_probe", "eksid_node_probe"}
    if name not in facts.kube_context and reaching & set(request.fixturenames):
        kube: Kube = request.getfixturevalue("eksid_kube")
        facts.kube_context[name] = kube.context or "(current)"
    if workload.mechanism == "pod-identity":
        key = f"{name}/{workload.name}"
        if key not in facts.last_changed:
            try:
                associations = aws.associations(
                    profile.profile.cluster.name, workload.namespace, workload.service_account
                )
            except AwsError:
                associations = []
            facts.last_changed[key] = last_changed(associations)
        changed = facts.last_changed[key]
        if changed is not None:
            request.node.user_properties.append(("last_changed", changed))
    workeroutput = getattr(request.config, "workeroutput", None)
    if isinstance(workeroutput, dict):
        workeroutput[FACTS_WORKEROUTPUT] = facts.as_dict()
