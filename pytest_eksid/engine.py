"""The session engine: the run's clusters, each reached on first use, probed once, closed at the end.

Plain Python, no pytest: the fixtures (pytest_eksid.fixtures) hold one :class:`Engine` for the session
and turn its :class:`EngineError` into the test's failure. Facts about a cluster that the reports
need (the runner's AWS identity, the kube context, when each Pod Identity association last changed)
are gathered here once per cluster, when it is first reached, into a :class:`RunFacts`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_eksid.aws import Aws, AwsError
from pytest_eksid.connection import Connection, Environment, live_connection
from pytest_eksid.interrupts import Interrupts
from pytest_eksid.kube import Kube, KubeError, KubeTarget
from pytest_eksid.probe.pod import RUN_ID_LABEL, Campaign, Obj, Target, check_contract, probe_contract
from pytest_eksid.profile import LoadedProfile, Workload, role_arn_parts
from pytest_eksid.report import RunFacts, last_changed
from pytest_eksid.settings import Settings
from pytest_eksid.stats import RunStats

HURRY_TIMEOUT = 5.0  # seconds the hurried delete of a namespace's probe pods may take (a second Ctrl-C)
# AWS reads made at once while the probe pods start: enough to overlap the latency of a few dozen distinct
# roles; few enough that IAM's account-wide throttling (aws.MAX_ATTEMPTS) is met by the adaptive retries
# rather than provoked.
PREFETCH_THREADS = 8


class EngineError(Exception):
    """A cluster cannot be reached or probed. The message names the profile file, the cluster and why; it
    is said once per cluster and every later use of that cluster raises it again, without trying."""


class _Environment:
    """Variables set for the session, and put back as they were at the end."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, key: str, value: str | None) -> None:
        self._saved.setdefault(key, os.environ.get(key))
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def undo(self) -> None:
        for key, value in reversed(self._saved.items()):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


# Adjusts a probe pod's manifest in place before it is created (the pytest_eksid_probe_manifest hook).
ManifestHook = Callable[[LoadedProfile, Obj, Workload], object]
# Reaches a cluster, reporting progress (the pytest_eksid_connect hook); None: no provider answered.
ConnectHook = Callable[[LoadedProfile, Callable[[str], None]], "Connection | None"]


class Engine:
    """The run's clusters, each connected on first use and closed at the end of the session.

    A cluster is reached through ``connect`` (the ``pytest_eksid_connect`` hook: the live provider, or
    another such as the embedded sandbox) and let go through its connection's ``close``. With a single
    cluster in the run,
    its settings are also exported to the process environment for the session, so that
    ``kubectl`` or boto3 in a user's own tests reach it too.
    """

    def __init__(
        self,
        settings: Settings,
        rootpath: Path,
        *,
        progress: Callable[[str], None] = lambda _message: None,
        selected: Callable[[str], Iterable[Target]] = lambda _profile: (),
        manifest_hook: ManifestHook = lambda _profile, _manifest, _workload: None,
        connect: ConnectHook = live_connection,
        facts: RunFacts | None = None,
        interrupts: Interrupts | None = None,
        stats: RunStats | None = None,
    ) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else RunStats()  # the run's requests and probe times, at close
        self.rootpath = rootpath
        self.progress = progress
        self.selected = selected  # profile name -> the probe targets the selected tests need
        self.manifest_hook = manifest_hook
        self.connect = connect
        self.facts = facts if facts is not None else RunFacts()
        self._reach: dict[str, Connection] = {}
        self._kube: dict[str, Kube] = {}
        self._aws: dict[str, Aws] = {}
        self._campaigns: dict[str, Campaign] = {}
        self._launched: list[Campaign] = []
        self._broken: dict[str, str] = {}  # profile -> why it cannot be reached (asked once)
        self._connections: list[Connection] = []  # closed in reverse order at the end
        self._env = _Environment()
        self._prefetched: set[str] = set()  # profiles whose AWS reads were started
        self._prefetch_pool: ThreadPoolExecutor | None = None
        self._prefetch_lock = threading.Lock()
        self._interrupts = interrupts
        if interrupts is not None:
            interrupts.hurry.append(self.hurry)

    def profile(self, name: str) -> LoadedProfile:
        """The run's profile of that name; LookupError naming the run's profiles."""
        for loaded in self.settings.loaded_all:
            if loaded.name == name:
                return loaded
        names = ", ".join(p.name for p in self.settings.loaded_all) or "none"
        raise LookupError(f"no profile {name!r} in this run (its profiles: {names})")

    def _check(self, name: str) -> None:
        if name in self._broken:
            raise EngineError(self._broken[name])

    def reach(self, loaded: LoadedProfile) -> Connection:
        name = loaded.name
        self._check(name)
        if name not in self._reach:
            try:
                self._reach[name] = self._connect(loaded)
            except Exception as exc:
                self._broken[name] = f"{loaded.path}: cannot reach cluster {loaded.profile.cluster.name}: {exc}"
            self._check(name)
        return self._reach[name]

    def _connect(self, loaded: LoadedProfile) -> Connection:
        connection = self.connect(loaded, lambda message: self._say(loaded.name, message))
        if connection is None:  # not even the live provider answered: it was unregistered (-p no:...)
            raise LookupError("no provider answered pytest_eksid_connect")
        self._connections.append(connection)
        if len(self.settings.profiles) == 1:
            for key, value in connection.env.items():
                self._env.set(key, value)
        return connection

    def _gather_facts(self, loaded: LoadedProfile) -> None:
        """Once per cluster (with the AWS prefetch, else at the end): the runner's AWS identity, and when each
        selected Pod Identity workload's association last changed. An AWS error leaves a fact unknown, never fails."""
        name = loaded.name
        if name in self.facts.runner:
            return
        aws = self.aws(loaded)
        try:
            runner = aws.caller()["arn"]
        except AwsError as exc:
            runner = f"unknown ({exc})"
        for workload in sorted(self._workloads(name), key=lambda w: w.name):
            key = f"{name}/{workload.name}"
            if workload.mechanism != "pod-identity" or key in self.facts.last_changed:
                continue
            try:
                associations = aws.associations(
                    loaded.profile.cluster.name, workload.namespace, workload.service_account
                )
            except AwsError:
                associations = []
            self.facts.last_changed[key] = last_changed(associations)
        self.facts.runner[name] = runner  # last: it marks the facts gathered

    def prefetch(self, loaded: LoadedProfile) -> None:
        """Start the cluster's AWS reads in the background, once, while its probe pods start: the facts, the cluster,
        its agent addon, the OIDC providers, every association (one listing), and each selected workload's roles,
        their policies and legacy user, each distinct one once (the roles and policies from one bulk read of the
        account's IAM when there are at least --eksid-iam-bulk of them). The tests then find them cached (a test
        that asks for one still in flight waits for it: Aws reads are single-flight); an error is left for the test
        to meet."""
        name = loaded.name
        with self._prefetch_lock:
            if name in self._prefetched:
                return
            self._prefetched.add(name)
            if self._prefetch_pool is None:
                self._prefetch_pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="eksid-prefetch")
            pool = self._prefetch_pool
        aws = self.aws(loaded)
        cluster = loaded.profile.cluster.name
        reads: dict[tuple[str, str], Callable[[], object]] = {
            ("facts", ""): lambda: self._gather_facts(loaded),
            ("cluster", ""): lambda: aws.cluster(cluster),
            ("addon", ""): lambda: aws.addon(cluster),
            ("oidc", ""): aws.oidc_providers,
        }
        for workload in self._workloads(name):
            for kind, role in (
                ("role", _role_name(workload.role_arn)),
                ("policies", _role_name(workload.final_role_arn)),
            ):
                if role is not None:
                    reads.setdefault(
                        (kind, role), functools.partial(aws.role if kind == "role" else aws.role_policies, role)
                    )
            if workload.legacy_iam_user:
                reads.setdefault(
                    ("user", workload.legacy_iam_user), functools.partial(aws.access_keys, workload.legacy_iam_user)
                )
        for read in reads.values():
            pool.submit(_quietly, read)

    def _workloads(self, name: str) -> list[Workload]:
        """The cluster's workloads that the run's selected tests need, each once."""
        return list({t.workload.name: t.workload for t in self.selected(name)}.values())

    def _finish_prefetch(self, wait: bool) -> None:
        with self._prefetch_lock:
            pool, self._prefetch_pool = self._prefetch_pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    def connection(self, loaded: LoadedProfile) -> Environment:
        """How the runner reaches the cluster, as the standard variables say it (see ``eksid_connection``)."""
        reach = self.reach(loaded)
        out = Environment()
        if reach.kubeconfig is not None:
            out["KUBECONFIG"] = reach.kubeconfig
        if loaded.profile.cluster.aws_profile is not None:
            out["AWS_PROFILE"] = loaded.profile.cluster.aws_profile
        out.update(reach.env)
        return out

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
            self._check(name)
            self.facts.kube_context.setdefault(name, self._kube[name].context or "(current)")
        return self._kube[name]

    def aws(self, loaded: LoadedProfile) -> Aws:
        name = loaded.name
        if name not in self._aws:
            self._check(name)
            reach = self._reach.get(name) or self.reach(loaded)  # already reached while gathering its facts
            cluster = loaded.profile.cluster
            # IAM in bulk when the run's selected workloads name enough distinct roles (--eksid-iam-bulk).
            roles = {
                role
                for w in self._workloads(name)
                for role in (_role_name(w.role_arn), _role_name(w.final_role_arn))
                if role is not None
            }
            bulk = self.settings.iam_bulk.value
            self._aws[name] = Aws(
                region=cluster.region,
                env=reach.env,
                profile_name=cluster.aws_profile,
                timeout=self.settings.api_timeout.value,
                bulk_iam=bulk > 0 and len(roles) >= bulk,
                say=lambda message: self._say(name, message),
            )
        return self._aws[name]

    def campaign(self, loaded: LoadedProfile) -> Campaign:
        """The cluster's probe campaign: its selected workloads' probe pods, launched at once on first use."""
        name = loaded.name
        if name in self._campaigns:
            return self._campaigns[name]
        self._check(name)
        kube = self.kube(loaded)
        settings = self.settings
        campaign = Campaign(
            kube=kube,
            profile=loaded.profile,
            max_parallel=settings.max_parallel.value,
            keep_pods=settings.keep_pods.value,
            progress=lambda msg: self._say(name, msg),
            manifest_hook=lambda manifest, workload: self._adjust(loaded, manifest, workload),
            prove=lambda url, nonce: self.aws(loaded).prove_caller(url, nonce),
        )
        self._launched.append(campaign)  # whatever happens next, its pods are deleted at the end
        try:
            if settings.sweep_minutes is not None:
                swept = campaign.sweep(settings.sweep_minutes.value)
                campaign.progress(f"swept {len(swept)} probe pod(s) older than {settings.sweep_minutes.value:g} min")
            targets = {t.key: t for t in self.selected(name)}
            self.prefetch(loaded)  # the AWS reads go on while the pods start
            campaign.run([targets[key] for key in sorted(targets)])
        except KubeError as exc:
            self._broken[name] = (
                f"{loaded.path}: cluster {loaded.profile.cluster.name}: the probe campaign failed: {exc}"
            )
        self._check(name)
        self._campaigns[name] = campaign
        return campaign

    def _adjust(self, loaded: LoadedProfile, manifest: Obj, workload: Workload) -> None:
        """The manifest hook, held to the probe's contract: a change there is that probe's error."""
        before = probe_contract(manifest)
        self.manifest_hook(loaded, manifest, workload)
        check_contract(before, probe_contract(manifest))

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
        self._finish_prefetch(wait=False)
        for campaign in self._launched:
            campaign.cancel()
            if campaign.keep_pods:
                continue
            for namespace in sorted({w.namespace for w in campaign.profile.workloads}):
                try:
                    campaign.kube.delete_pods(namespace, f"{RUN_ID_LABEL}={campaign.run_id}", timeout=HURRY_TIMEOUT)
                except KubeError as exc:
                    self.progress(
                        f"could not delete probe pods in {namespace}: {exc}; delete them with: "
                        f"kubectl delete pods -A -l {RUN_ID_LABEL}={campaign.run_id}"
                    )
        for connection in reversed(self._connections):
            try:
                connection.close()
            except Exception as exc:  # one provider's failure must not leave the others running
                self.progress(f"cleanup step failed: {exc.__class__.__name__}: {exc}")

    def _close(self) -> None:
        errors: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
                self.progress(f"cleanup step failed: {exc.__class__.__name__}: {exc}")

        for campaign in self._launched:
            attempt(functools.partial(self._cleanup, campaign))
        attempt(functools.partial(self._finish_prefetch, True))
        for loaded in self.settings.loaded_all:  # the facts of a cluster reached without a campaign
            if loaded.name in self._reach and loaded.name not in self._broken:
                attempt(functools.partial(self._gather_facts, loaded))
        self._record_stats()
        for kube in self._kube.values():
            attempt(kube.close)
        for connection in reversed(self._connections):
            attempt(connection.close)
        self._env.undo()
        if errors:
            raise errors[0]

    def _record_stats(self) -> None:
        """The run's API requests per cluster (Kubernetes by client method, AWS by service and operation) and its
        probes' own run times, for the end of the run's lines and --eksid-stats (pytest_eksid.stats)."""
        for loaded in self.settings.loaded_all:
            kube, aws = self._kube.get(loaded.name), self._aws.get(loaded.name)
            if kube is not None:
                self.stats.add_calls(loaded.name, "kubernetes", kube.calls)
            if aws is not None:
                self.stats.add_calls(loaded.name, "aws", aws.calls)
            campaign = self._campaigns.get(loaded.name)
            if campaign is not None:
                self.stats.add_probes(loaded.name, _own_seconds(campaign))

    def _say(self, profile: str, message: str) -> None:
        """Progress about one cluster: prefixed with its profile when the run has several."""
        self.progress(message if len(self.settings.profiles) == 1 else f"{profile}: {message}")

    @staticmethod
    def _cleanup(campaign: Campaign) -> None:
        deleted = campaign.cleanup()
        if deleted:
            campaign.progress(f"deleted {len(deleted)} probe pod(s)")
        elif campaign.keep_pods:
            campaign.progress(
                f"kept probe pods (run id {campaign.run_id}); delete them with: "
                f"kubectl delete pods -A -l {RUN_ID_LABEL}={campaign.run_id}"
            )


def _own_seconds(campaign: Campaign) -> list[float]:
    """Each probe's own run time, as its result says it (``seconds.total``, pytest_eksid.probe.program)."""
    out = []
    for outcome in list(campaign.outcomes.values()):
        result = outcome.result
        total = result.get("seconds", {}).get("total") if result is not None else None
        if isinstance(total, int | float) and not isinstance(total, bool):
            out.append(float(total))
    return out


def _quietly(read: Callable[[], object]) -> None:
    """A prefetch: its error is met again by the test that needs the read, and reported there."""
    with contextlib.suppress(Exception):
        read()


def _role_name(arn: str) -> str | None:
    """The role name of a role ARN; None for what is not one (the test that needs it reports that)."""
    try:
        return role_arn_parts(arn)[1]
    except ValueError:
        return None
