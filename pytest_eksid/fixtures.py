"""Fixtures: the profile, the cluster connection, the probe campaign, one workload's probe."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pytest_eksid.aws import Aws, AwsError
from pytest_eksid.checks import Finding
from pytest_eksid.kube import Kube, KubeError, KubeTarget
from pytest_eksid.probe.pod import Campaign, ProbeOutcome, Target
from pytest_eksid.profile import ActionCheck, LoadedProfile, Workload
from pytest_eksid.redact import redact_json
from pytest_eksid.report import RunFacts, last_changed
from pytest_eksid.settings import Settings

SETTINGS_KEY = pytest.StashKey[Settings]()
SELECTED_KEY = pytest.StashKey[dict[str, set[str]]]()  # profile -> probe target keys the selected tests need
WORKLOAD_FIXTURE = "eksid_workload"
ACTION_FIXTURE = "eksid_action"
NODEGROUP_FIXTURE = "eksid_nodegroup"


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


def fail_on(finding: Finding | Iterable[Finding] | None) -> None:
    """Fail the current test with the findings' messages (no traceback: the message is the point)."""
    findings = [finding] if isinstance(finding, Finding) else list(finding or [])
    if findings:
        pytest.fail("\n\n".join(f.message() for f in findings), pytrace=False)


def inconclusive(settings: Settings, reason: str) -> NoReturn:
    """An inconclusive measurement: reported as such (skipped, or failed with --eksid-inconclusive=fail)."""
    if settings.inconclusive.value == "fail":
        pytest.fail(f"INCONCLUSIVE (--eksid-inconclusive=fail): {reason}", pytrace=False)
    pytest.skip(f"INCONCLUSIVE: {reason}")


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


@dataclass
class Reach:
    """How the runner reaches one cluster: a kubeconfig and context, and the AWS settings (as the
    standard variables would say them; empty for a live cluster: the process's own environment)."""

    kubeconfig: str | None
    context: str | None
    env: dict[str, str | None]


class Clusters:
    """The run's clusters, each connected on first use and closed at the end of the session.

    A sandbox profile starts its emulated EKS here: in this process when none runs in it yet,
    else in a child process (moto's state is process-wide). With a single cluster in the run,
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
        self._broken: dict[str, str] = {}  # profile -> why it cannot be reached (asked once)
        self._sandboxes: list[Any] = []
        self._env = pytest.MonkeyPatch()

    def reach(self, loaded: LoadedProfile) -> Reach:
        name = loaded.name
        if name in self._broken:
            pytest.fail(self._broken[name], pytrace=False)
        if name not in self._reach:
            try:
                self._reach[name] = self._connect(loaded)
            except Exception as exc:
                self._broken[name] = f"{loaded.path}: cannot reach cluster {loaded.profile.cluster.name}: {exc}"
                pytest.fail(self._broken[name], pytrace=False)
        return self._reach[name]

    def _connect(self, loaded: LoadedProfile) -> Reach:
        cluster = loaded.profile.cluster
        if loaded.profile.sandbox is None:
            kubeconfig = cluster.kubeconfig
            if kubeconfig is not None and not Path(kubeconfig).expanduser().is_absolute():
                kubeconfig = str(loaded.path.parent / kubeconfig)
            return Reach(kubeconfig, cluster.kube_context, {})
        from pytest_eksid.sandbox.cloud import sandbox_in_process_free

        _progress(self.config, f"starting the embedded sandbox for cluster {cluster.name}")
        sandbox: Any
        if sandbox_in_process_free():
            from pytest_eksid.sandbox.runtime import Sandbox

            sandbox = Sandbox(loaded.profile)
        else:
            from pytest_eksid.sandbox.child import SandboxProcess

            sandbox = SandboxProcess(loaded.path, Path(self.config.rootpath))
        connection = sandbox.start()
        self._sandboxes.append(sandbox)
        where = "" if sandbox.__class__.__name__ == "Sandbox" else " in a child process"
        _progress(
            self.config,
            f"sandbox {cluster.name} ready{where} in {sandbox.startup_seconds:.1f}s "
            f"(kubeconfig {connection.kubeconfig})",
        )
        if len(self.settings.profiles) == 1:
            for key, value in connection.env.items():
                if value is None:
                    self._env.delenv(key, raising=False)
                else:
                    self._env.setenv(key, value)
        return Reach(str(connection.kubeconfig), connection.context, dict(connection.env))

    def kube(self, loaded: LoadedProfile) -> Kube:
        name = loaded.name
        if name not in self._kube:
            reach = self.reach(loaded)
            try:
                self._kube[name] = Kube(KubeTarget(kubeconfig=reach.kubeconfig, context=reach.context))
            except KubeError as exc:
                self._broken[name] = f"{loaded.path}: cluster.kubeconfig/kubeContext: {exc}"
                pytest.fail(self._broken[name], pytrace=False)
        return self._kube[name]

    def aws(self, loaded: LoadedProfile) -> Aws:
        name = loaded.name
        if name not in self._aws:
            reach = self.reach(loaded)
            cluster = loaded.profile.cluster
            self._aws[name] = Aws(region=cluster.region, env=reach.env, profile_name=cluster.aws_profile)
        return self._aws[name]

    def campaign(self, loaded: LoadedProfile) -> Campaign:
        """The cluster's probe campaign: its selected workloads' probe pods, launched at once on first use."""
        name = loaded.name
        if name in self._campaigns:
            return self._campaigns[name]
        kube = self.kube(loaded)
        settings, config = self.settings, self.config
        campaign = Campaign(
            kube=kube,
            profile=loaded.profile,
            max_parallel=settings.max_parallel.value,
            keep_pods=settings.keep_pods.value,
            progress=lambda msg: _progress(config, msg if len(settings.profiles) == 1 else f"{name}: {msg}"),
            manifest_hook=lambda manifest, workload: config.hook.pytest_eksid_probe_manifest(
                manifest=manifest, profile=loaded.profile, workload=workload
            ),
        )
        self._campaigns[name] = campaign
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
        return campaign

    def close(self) -> None:
        """Delete probe pods, close clients, stop sandboxes, restore the environment: each step even if
        an earlier one failed."""
        try:
            for campaign in self._campaigns.values():
                deleted = campaign.cleanup()
                if deleted:
                    campaign.progress(f"deleted {len(deleted)} probe pod(s)")
                elif campaign.keep_pods:
                    campaign.progress(
                        f"kept probe pods (run id {campaign.run_id}); delete them with: "
                        f"kubectl delete pods -A -l eksid.dev/run-id={campaign.run_id}"
                    )
        finally:
            for kube in self._kube.values():
                kube.close()
            try:
                for sandbox in reversed(self._sandboxes):
                    sandbox.stop()
            finally:
                self._env.undo()


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


@pytest.fixture
def eksid_profile(request: pytest.FixtureRequest, eksid_settings: Settings) -> LoadedProfile:
    """The profile of the cluster under test: the workload's, or the run's only one."""
    subject = subject_of(request.node) if isinstance(request.node, pytest.Item) else None
    if subject is not None:
        return subject.profile
    profiles = eksid_settings.loaded
    if not profiles:
        raise pytest.UsageError("no profile: pass --profile NAME (e.g. --profile demo)")
    if len(profiles) > 1:
        names = ", ".join(p.name for p in profiles)
        raise pytest.UsageError(
            f"{request.node.nodeid}: uses eksid_profile without a workload, but this run checks several "
            f"profiles ({names}); request eksid_workload too, or run one profile"
        )
    return profiles[0]


@pytest.fixture
def eksid_connection(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> dict[str, str | None]:
    """How the runner reaches the cluster under test (starting its sandbox on first use): the standard
    settings (``KUBECONFIG``, ``AWS_ENDPOINT_URL``, credentials) for a sandbox; empty for a live cluster,
    whose access is the caller's own environment."""
    reach = eksid_clusters.reach(eksid_profile)
    return {"KUBECONFIG": reach.kubeconfig, **reach.env} if reach.env else dict(reach.env)


@pytest.fixture
def eksid_kube(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> Kube:
    """The Kubernetes client for the cluster under test."""
    return eksid_clusters.kube(eksid_profile)


@pytest.fixture
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
    if outcome.result is not None:
        request.node.add_report_section("call", "eksid probe result", redact_json(outcome.result))
    if outcome.events:
        request.node.add_report_section("call", "eksid probe pod events", "\n".join(outcome.events))
    if outcome.error is not None:
        events = "".join(f"\n    {line}" for line in outcome.events)
        pytest.fail(
            f"{target.key}: the probe could not run: {outcome.error}" + (f"\n  pod events:{events}" if events else ""),
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
    return _outcome(request, eksid_campaign, Target(eksid_workload, eksid_nodegroup))


@pytest.fixture
def eksid_aws(eksid_clusters: Clusters, eksid_profile: LoadedProfile) -> Aws:
    """Read-only AWS facts (IAM, EKS) for the cluster under test, with the runner's own credentials."""
    return eksid_clusters.aws(eksid_profile)


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
    if name not in facts.kube_context and "eksid_kube" in request.fixturenames:
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
