"""Fixtures: the profile, the cluster connection, the probe campaign, one workload's probe."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

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
SELECTED_KEY = pytest.StashKey[set[str]]()
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


@pytest.fixture(scope="session")
def eksid_settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def eksid_profile(eksid_settings: Settings) -> LoadedProfile:
    """The loaded profile (``--profile``)."""
    if eksid_settings.profile is None:
        raise pytest.UsageError("no profile: pass --profile NAME (e.g. --profile demo)")
    return eksid_settings.profile.value


@pytest.fixture(scope="session")
def eksid_connection(eksid_profile: LoadedProfile, pytestconfig: pytest.Config) -> Iterator[dict[str, str | None]]:
    """The environment the run talks to the cluster with.

    For a profile with a ``sandbox`` section this starts the embedded emulated EKS and points the
    standard settings (``KUBECONFIG``, ``AWS_ENDPOINT_URL``, credentials) at it for the session;
    for a live profile it is empty and the caller's own environment is used.
    """
    if eksid_profile.profile.sandbox is None:
        yield {}
        return
    from pytest_eksid.sandbox.runtime import Sandbox

    sandbox = Sandbox(eksid_profile.profile)
    _progress(pytestconfig, f"starting the embedded sandbox for cluster {eksid_profile.profile.cluster.name}")
    connection = sandbox.start()
    _progress(pytestconfig, f"sandbox ready in {sandbox.startup_seconds:.1f}s (kubeconfig {connection.kubeconfig})")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in connection.env.items():
                if value is None:
                    mp.delenv(key, raising=False)
                else:
                    mp.setenv(key, value)
            yield dict(connection.env)
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def eksid_kube(eksid_profile: LoadedProfile, eksid_connection: dict[str, str | None]) -> Iterator[Kube]:
    """The Kubernetes client for the profile's cluster."""
    cluster = eksid_profile.profile.cluster
    kubeconfig = cluster.kubeconfig
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_absolute():
        kubeconfig = str(eksid_profile.path.parent / kubeconfig)
    try:
        kube = Kube(KubeTarget(kubeconfig=kubeconfig, context=cluster.kube_context))
    except KubeError as exc:
        problem = str(exc)
    else:
        yield kube
        kube.close()
        return
    pytest.fail(f"{eksid_profile.path}: cluster.kubeconfig/kubeContext: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def eksid_campaign(
    pytestconfig: pytest.Config, eksid_settings: Settings, eksid_profile: LoadedProfile, eksid_kube: Kube
) -> Iterator[Campaign]:
    """The session's probe campaign: all selected workloads' probe pods, launched at once."""
    campaign = Campaign(
        kube=eksid_kube,
        profile=eksid_profile.profile,
        max_parallel=eksid_settings.max_parallel.value,
        keep_pods=eksid_settings.keep_pods.value,
        progress=lambda msg: _progress(pytestconfig, msg),
        manifest_hook=lambda manifest, workload: pytestconfig.hook.pytest_eksid_probe_manifest(
            manifest=manifest, profile=eksid_profile.profile, workload=workload
        ),
    )
    selected = pytestconfig.stash.get(SELECTED_KEY, set())
    if eksid_settings.sweep_minutes is not None:
        swept = campaign.sweep(eksid_settings.sweep_minutes.value)
        _progress(
            pytestconfig, f"swept {len(swept)} probe pod(s) older than {eksid_settings.sweep_minutes.value:g} min"
        )
    try:
        targets = [
            Target(w, key.partition("@")[2] or None)
            for key in sorted(selected)
            for w in eksid_profile.profile.workloads
            if w.name == key.partition("@")[0]
        ]
        campaign.run(targets)
        yield campaign
    finally:
        deleted = campaign.cleanup()
        if deleted:
            _progress(pytestconfig, f"deleted {len(deleted)} probe pod(s)")
        elif campaign.keep_pods:
            _progress(
                pytestconfig,
                f"kept probe pods (run id {campaign.run_id}); delete them with: "
                f"kubectl delete pods -A -l eksid.dev/run-id={campaign.run_id}",
            )


@pytest.fixture
def eksid_workload(request: pytest.FixtureRequest) -> Workload:
    """The workload under test (parametrized from the profile: ``<profile>/<workload>``)."""
    workload = getattr(request, "param", None)
    if not isinstance(workload, Workload):
        raise pytest.UsageError(f"{request.node.nodeid}: eksid_workload is parametrized by the plugin from --profile")
    return workload


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


@pytest.fixture(scope="session")
def eksid_aws(eksid_profile: LoadedProfile, eksid_connection: dict[str, str | None]) -> Aws:
    """Read-only AWS facts (IAM, EKS) for the profile's cluster, with the runner's own credentials."""
    return Aws(region=eksid_profile.profile.cluster.region)


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
    if WORKLOAD_FIXTURE not in request.fixturenames or "eksid_connection" not in request.fixturenames:
        return
    workload: Workload = request.getfixturevalue(WORKLOAD_FIXTURE)
    profile: LoadedProfile = request.getfixturevalue("eksid_profile")
    aws: Aws = request.getfixturevalue("eksid_aws")
    facts = request.config.stash.setdefault(FACTS_KEY, RunFacts())
    if facts.runner is None:
        try:
            facts.runner = aws.caller()["arn"]
        except AwsError as exc:
            facts.runner = f"unknown ({exc})"
    if facts.kube_context is None and "eksid_kube" in request.fixturenames:
        kube: Kube = request.getfixturevalue("eksid_kube")
        facts.kube_context = kube.context or "(current)"
    if workload.mechanism == "pod-identity":
        if workload.name not in facts.last_changed:
            cluster = profile.profile.cluster.name
            try:
                associations = aws.associations(cluster, workload.namespace, workload.service_account)
            except AwsError:
                associations = []
            facts.last_changed[workload.name] = last_changed(associations)
        changed = facts.last_changed[workload.name]
        if changed is not None:
            request.node.user_properties.append(("last_changed", changed))
    workeroutput = getattr(request.config, "workeroutput", None)
    if isinstance(workeroutput, dict):
        workeroutput[FACTS_WORKEROUTPUT] = facts.as_dict()
