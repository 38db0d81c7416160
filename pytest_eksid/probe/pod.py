"""Probe pods: the spec, the launch, the wait (with a diagnosis), the result, the cleanup.

One pod per workload runs :mod:`pytest_eksid.probe.program` as the workload's ServiceAccount.
The runner needs only pods create/get/list/delete and pods/log: the result is the pod's log.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pytest_eksid.aws import IdentityNotProven
from pytest_eksid.checks.placement import Placement, mirror
from pytest_eksid.escape import printable
from pytest_eksid.kube import Kube, KubeError, KubeUnreachable
from pytest_eksid.probe import program
from pytest_eksid.probe.result import (
    ActionResult,
    AgentResult,
    Caller,
    EnvironmentResult,
    IdentityResult,
    ImdsResult,
    ProbeResult,
)
from pytest_eksid.profile import Profile, Workload
from pytest_eksid.settings import DEFAULT_MAX_PARALLEL

Obj = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pytest-eksid"
RUN_ID_LABEL = "eksid.dev/run-id"
WORKLOAD_LABEL = "eksid.dev/workload"
CONTAINER = "probe"
POLL_SECONDS = 0.25
# Waiting reasons that will not resolve by themselves: fail at once, do not wait out the timeout.
FATAL_WAITING = {
    "ErrImagePull": "the node cannot pull the probe image",
    "ImagePullBackOff": "the node cannot pull the probe image",
    "InvalidImageName": "the probe image name is invalid",
    "CreateContainerConfigError": "the container's configuration is invalid",
    "CreateContainerError": "the container could not be created",
}


def program_source() -> str:
    return Path(program.__file__).read_text(encoding="utf-8")


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)


NODE_STEPS = ("environment", "imds")  # what a probe pinned to a node group measures


def probe_plan(profile: Profile, workload: Workload) -> Obj:
    """What the probe measures in the pod: its region, timeouts and every allow/deny call."""
    actions = [c.plan_item(f"allow-{i}", "allowed") for i, c in enumerate(workload.allow)]
    actions += [c.plan_item(f"deny-{i}", "denied") for i, c in enumerate(workload.deny)]
    return {
        "workload": workload.name,
        "mechanism": workload.mechanism,
        "region": profile.cluster.region,
        "timeout": 5,
        "imds_timeout": profile.probe.imds_timeout_seconds,
        # Wall-clock budget of each AWS step (identity, actions): both fit in the pod's deadline, with
        # room for the interpreter's start and the IMDS and agent steps, so a result line always comes.
        "step_seconds": max(2, (profile.probe.timeout_seconds - 20) // 2),
        "actions": actions,
    }


@dataclass(frozen=True)
class Target:
    """What one probe pod measures: a workload, on any node or pinned to one node group."""

    workload: Workload
    nodegroup: str | None = None

    @property
    def key(self) -> str:
        return self.workload.name if self.nodegroup is None else f"{self.workload.name}@{self.nodegroup}"


def probe_target(profile: Profile, workload: Workload, nodegroup: str | None = None) -> Target:
    """The probe that measures ``workload`` (on ``nodegroup``). With ``probe.nodeGroups``, the
    workload's own probe runs on the first group, so it also stands for that group's IMDS: one
    pod fewer per workload; the other groups each get a probe that measures only IMDS."""
    if nodegroup is None or nodegroup == _home_group(profile):
        return Target(workload)
    return Target(workload, nodegroup)


def _home_group(profile: Profile) -> str | None:
    """The node group the workload's own probe is pinned to: the first of ``probe.nodeGroups``, unless
    the profile has a ``nodeSelector`` (pinning on top of it could leave the probe nowhere to run;
    then every group gets its own IMDS-only probe and the workload's probe lands where it may)."""
    probe = profile.probe
    if not probe.node_groups or probe.node_selector:
        return None
    return probe.node_groups[0]


def profile_base(profile: Profile, source: str = "profile probe settings") -> Placement:
    """The profile's own probe settings (``probe.nodeSelector``, ``probe.tolerations``)."""
    probe = profile.probe
    return Placement(
        source,
        node_selector=dict(probe.node_selector),
        tolerations=tuple(t.model_dump(exclude_none=True) for t in probe.tolerations),
    )


def profile_placement(profile: Profile, workload: Workload, source: str = "profile probe settings") -> Placement:
    """The profile's own probe settings, with the workload's ``probe`` overrides on top."""
    return with_overrides(profile_base(profile, source), workload)


def with_overrides(base: Placement, workload: Workload) -> Placement:
    """``base`` with each field the workload's ``probe`` section sets replaced (and the source saying so)."""
    o = workload.probe
    if o is None:
        return base
    given = {k for k, v in o.model_dump(exclude={"mirror"}).items() if v is not None}
    if not given:
        return base
    return Placement(
        f"{base.source}, with workloads[{workload.name}].probe overriding "
        + ", ".join(sorted(type(o).model_fields[k].alias or k for k in given)),
        base.mirrored,
        dict(o.node_selector) if o.node_selector is not None else dict(base.node_selector),
        dict(o.node_affinity) if o.node_affinity is not None else base.node_affinity,
        tuple(t.model_dump(exclude_none=True) for t in o.tolerations)
        if o.tolerations is not None
        else base.tolerations,
        o.host_network if o.host_network is not None else base.host_network,
        o.dns_policy if o.dns_policy is not None else base.dns_policy,
        dict(o.env) if o.env is not None else dict(base.env),
    )


def workload_selector(workload: Workload) -> str:
    return workload.selector or f"app.kubernetes.io/name={workload.name}"


def probe_pod_manifest(
    profile: Profile,
    workload: Workload,
    run_id: str,
    nodegroup: str | None = None,
    placement: Placement | None = None,
) -> Obj:
    """The probe pod: the workload's SA, restricted security context, a deadline, labels; placed as
    ``placement`` says (the workload's mirrored pod template; default: the profile's probe settings).
    A probe pinned to a node group (IMDS only) keeps the profile's settings: it stands for the group."""
    probe = profile.probe
    imds_only = nodegroup is not None
    if placement is None or imds_only:
        placement = profile_placement(profile, workload)
    plan = probe_plan(profile, workload)
    if nodegroup is not None:
        plan["steps"] = list(NODE_STEPS)  # IMDS is the node's: no identity, no actions (no botocore)
    else:
        nodegroup = _home_group(profile)  # the whole probe, on the first group (see probe_target)
    spec: Obj = {
        "serviceAccountName": workload.service_account,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": probe.timeout_seconds,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": probe.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", program_source()],
                "env": [
                    *({"name": k, "value": v} for k, v in sorted(placement.env.items())),
                    {"name": program.PLAN_VARIABLE, "value": json.dumps(plan, sort_keys=True)},
                ],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if placement.node_selector or nodegroup is not None:
        # An IMDS-only probe is pinned to its group. The workload's own probe is pinned to the first of
        # probe.nodeGroups only where its placement selects no node group itself (the template's wins).
        pin = {probe.node_group_label: nodegroup} if nodegroup else {}
        spec["nodeSelector"] = {**placement.node_selector, **pin} if imds_only else {**pin, **placement.node_selector}
    if placement.node_affinity:
        spec["affinity"] = {"nodeAffinity": placement.node_affinity}
    if placement.tolerations:
        spec["tolerations"] = [dict(t) for t in placement.tolerations]
    if placement.host_network:
        spec["hostNetwork"] = True
    if placement.dns_policy is not None:
        spec["dnsPolicy"] = placement.dns_policy
    if probe.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in probe.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"eksid-probe-{workload.name}-"[:58],
            "namespace": workload.namespace,
            "labels": {
                MANAGED_BY: MANAGED_BY_VALUE,
                RUN_ID_LABEL: run_id,
                WORKLOAD_LABEL: workload.name,
            },
        },
        "spec": spec,
    }


# What the pytest_eksid_probe_manifest hook may not change: who the probe runs as, what it runs, with which
# privileges, and how the runner finds and trusts its pod. A hook adds (annotations, labels, a priority class,
# tolerations, resources); a change here would make the verdicts about another identity or a weaker pod.
CONTRACT_SPEC_KEYS = (
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "restartPolicy",
    "activeDeadlineSeconds",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "securityContext",
    "initContainers",
    "ephemeralContainers",
    "volumes",
)
CONTRACT_CONTAINER_KEYS = ("name", "image", "command", "args", "env", "envFrom", "securityContext", "volumeMounts")


def probe_contract(manifest: Obj) -> dict[str, Any]:
    """The parts of a probe pod manifest that are the probe's contract (see CONTRACT_SPEC_KEYS), as a copy."""
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    labels = meta.get("labels") or {}
    containers = spec.get("containers") or []
    out: dict[str, Any] = {
        "metadata.namespace": meta.get("namespace"),
        **{f"metadata.labels.{k}": labels.get(k) for k in (MANAGED_BY, RUN_ID_LABEL, WORKLOAD_LABEL)},
        **{f"spec.{k}": json.dumps(spec.get(k), sort_keys=True) for k in CONTRACT_SPEC_KEYS},
        "spec.containers (count)": len(containers),
    }
    for i, container in enumerate(containers):
        for key in CONTRACT_CONTAINER_KEYS:
            out[f"spec.containers[{i}].{key}"] = json.dumps(container.get(key), sort_keys=True)
    return out


def check_contract(before: dict[str, Any], after: dict[str, Any]) -> None:
    """ProbeError naming the contract fields ``after`` (a hook's manifest) changed from ``before``."""
    changed = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    if changed:
        raise ProbeError(
            f"a pytest_eksid_probe_manifest hook changed the probe pod's {', '.join(changed)}: these are the "
            "probe's contract (who it runs as, what it runs, its privileges; docs/probe.md); a hook may add "
            "annotations, labels, a priority class, tolerations or resources"
        )


class ProbeError(Exception):
    """The probe could not produce a result; the message says what was last seen and why."""


@dataclass
class ProbeOutcome:
    workload: Workload
    nodegroup: str | None = None
    pod: str | None = None
    result: ProbeResult | None = None
    error: str | None = None
    log: str = ""
    seconds: float = 0.0
    node_name: str | None = None
    events: list[str] = field(default_factory=list)
    placement: Placement | None = None  # how the probe pod was placed, and from where
    uid: str | None = None  # of the pod the runner created: the only one whose result counts
    # The result as the reports show it (secrets masked), made once: every probe-based test of the workload
    # attaches it, and masking it each time was a millisecond per test item (bench/full_run.py).
    shown: str | None = field(default=None, repr=False, compare=False)

    def _step(self, name: str) -> Obj:
        """A copy of one step's part of the result ({} when absent or not an object)."""
        found = self.result.get(name) if self.result is not None else None
        return dict(found) if isinstance(found, dict) else {}

    @property
    def identity(self) -> IdentityResult:
        return cast(IdentityResult, self._step("identity"))

    @property
    def environment(self) -> EnvironmentResult:
        return cast(EnvironmentResult, self._step("environment"))

    @property
    def actions(self) -> list[ActionResult]:
        found = self.result.get("actions") if self.result is not None else None
        return [cast(ActionResult, dict(a)) for a in found if isinstance(a, dict)] if isinstance(found, list) else []

    def action(self, ident: str) -> ActionResult | None:
        return next((a for a in self.actions if a.get("id") == ident), None)

    @property
    def imds(self) -> ImdsResult:
        return cast(ImdsResult, self._step("imds"))

    @property
    def agent(self) -> AgentResult:
        return cast(AgentResult, self._step("agent"))


class ResultVersionError(ValueError):
    """A result line of another shape than this runner reads."""


def parse_result(log: str) -> ProbeResult | None:
    """The probe's result from its log (the last result line), None when there is none or it is not JSON;
    :class:`ResultVersionError` when it is a result of another version than ``program.RESULT_VERSION``."""
    for line in reversed(log.splitlines()):
        if line.startswith(program.RESULT_MARKER):
            try:
                data = json.loads(line[len(program.RESULT_MARKER) :])
            except ValueError:
                return None
            if not isinstance(data, dict):
                return None
            version = data.get("version")
            if version != program.RESULT_VERSION:
                raise ResultVersionError(
                    f"the probe's result is version {printable(repr(version))}; this runner reads version "
                    f"{program.RESULT_VERSION} only (its probe program, {program.__name__}, makes that one): "
                    "was the pod's command replaced, or a probe image with its own program used?"
                )
            return cast(ProbeResult, data)
    return None


# What a result is taken from: the pod the runner created, running what it asked for, as the identity it named.
SPEC_FIELDS = ("image", "command", "args")


def _identity_spec(pod: Obj) -> Obj:
    spec = pod.get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    return {
        "serviceAccountName": spec.get("serviceAccountName"),
        "containers": [{k: c.get(k) for k in ("name", *SPEC_FIELDS)} for c in containers],
    }


def _uid(pod: Obj) -> str:
    """The pod's UID, as far as it is one: cluster-sourced text, shown only in this shape."""
    return re.sub(r"[^0-9a-fA-F-]", "", str((pod.get("metadata") or {}).get("uid") or ""))[:36] or "none"


def bind_nonce(manifest: Obj, nonce: str) -> None:
    """Put the runner's per-pod nonce into the probe's plan: the probe signs it into its proof."""
    for container in (manifest.get("spec") or {}).get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == program.PLAN_VARIABLE and "value" in item:
                plan = json.loads(item["value"])
                plan["nonce"] = nonce
                item["value"] = json.dumps(plan, sort_keys=True)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _diagnose(pod: Obj) -> str | None:
    """A reason to give up now, or None to keep waiting."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return f"Unschedulable: {cond.get('message', '')}"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING:
            return f"{reason} ({FATAL_WAITING[reason]}): {waiting.get('message', '')}"
    return None


def _seen(pod: Obj) -> str:
    status = pod.get("status") or {}
    parts = [f"phase={status.get('phase', '?')}"]
    for cs in status.get("containerStatuses") or []:
        for state, detail in (cs.get("state") or {}).items():
            reason = (detail or {}).get("reason")
            parts.append(f"container {state}" + (f" ({reason})" if reason else ""))
    return ", ".join(parts)


class PodBoard:
    """This run's unfinished probe pods, from one LIST per tick shared by every waiting thread, instead
    of one GET per pod per tick: with 32 probes in flight, 1 request where 32 were, whatever their namespaces.

    The LIST is cluster-wide (by the run's label); where that is refused, per namespace; where that is
    refused too, each pod is read on its own, as a campaign always could. A pod the last LIST does not
    show (it finished, or it is newer than the LIST) is read alone; so is every pod while another
    thread's LIST takes longer than a tick: a slow LIST holds up the other waiters one tick at most.
    """

    ALL = "*"  # the snapshot key of a cluster-wide LIST
    PERMANENT = (400, 403, 405)  # refusals that will not change during the run

    def __init__(self, kube: Kube, run_id: str, interval: float) -> None:
        self.kube = kube
        self.selector = f"{RUN_ID_LABEL}={run_id}"
        self.interval = interval
        self._lock = threading.Lock()
        self._listing: dict[str, threading.Lock] = {}
        self._snapshots: dict[str, tuple[float, dict[tuple[str, str], Obj]]] = {}  # scope -> (listed at, pods)
        self.refused: set[str] = set()  # scopes whose LIST was refused for good ("*" or a namespace)

    def read(self, namespace: str, name: str, since: float) -> Obj:
        """The pod as last seen by a LIST taken after ``since`` and at most one tick ago, else by a GET."""
        scope = self.ALL if self.ALL not in self.refused else namespace
        if scope not in self.refused:
            pods = self._snapshot(scope, since)
            if pods is not None and (namespace, name) in pods:
                return pods[(namespace, name)]
        return self.kube.read_pod(namespace, name)

    def _snapshot(self, scope: str, since: float) -> dict[tuple[str, str], Obj] | None:
        with self._lock:
            lock = self._listing.setdefault(scope, threading.Lock())
            taken, pods = self._snapshots.get(scope, (float("-inf"), {}))
        if time.monotonic() - taken < self.interval and taken >= since:
            return pods
        if not lock.acquire(timeout=self.interval):
            return None  # another thread's LIST is slow: do not wait longer than a tick for it
        try:
            with self._lock:  # it may have just been refreshed by the thread we waited for
                taken, pods = self._snapshots.get(scope, (float("-inf"), {}))
            if time.monotonic() - taken < self.interval and taken >= since:
                return pods
            now = time.monotonic()
            try:
                listed = self.kube.list_pods(
                    self.selector,
                    None if scope == self.ALL else scope,
                    field_selector="status.phase!=Succeeded,status.phase!=Failed",
                )
            except KubeError as exc:
                if exc.status in self.PERMANENT:
                    with self._lock:
                        self.refused.add(scope)
                return None  # a passing error: this tick reads pods alone, the next one lists again
            fresh = {
                (str((p.get("metadata") or {}).get("namespace")), str((p.get("metadata") or {}).get("name"))): p
                for p in listed
            }
            with self._lock:
                self._snapshots[scope] = (now, fresh)
            return fresh
        finally:
            lock.release()


class PodWatch:
    """This run's probe pods as one watch sees them: a LIST by the run's label, then a watch from its
    resourceVersion, resumed from the last version seen after the server ends it (``WATCH_SECONDS``) or the
    stream breaks; 410 Gone (the version left the server's history) lists again. Waiting threads block on
    it until their pod changes: no request per pod per tick, whatever the number of probes.

    The watch is cluster-wide (by the run's label); where that is refused, per namespace; where ``watch``
    (or its LIST) is refused there too, that namespace waits by :class:`PodBoard`'s shared LIST, as
    before, and the progress output says so once. A pod the watch has not shown ``APPEAR_SECONDS``
    after its create (a watch reconnecting), or after it was deleted, is read alone.
    """

    WATCH_SECONDS = 60  # one watch request; the API server sends bookmarks meanwhile (allowWatchBookmarks)
    APPEAR_SECONDS = 5.0
    MAX_FAILURES = 3  # broken streams in a row before this scope polls instead

    def __init__(self, kube: Kube, run_id: str, board: PodBoard, progress: Callable[[str], None]) -> None:
        self.kube = kube
        self.selector = f"{RUN_ID_LABEL}={run_id}"
        self.board = board
        self.progress = progress
        self._cond = threading.Condition()
        self._pods: dict[tuple[str, str], Obj] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._watchers: dict[str, Any] = {}
        self._refused: dict[str, str] = {}  # scope -> why its watch is not used
        self._said = False
        self._stopped = False
        self._poll_all = False
        self._stop_event = threading.Event()

    def _scope(self, namespace: str) -> str | None:
        """The watch that covers the namespace (started on first use), or None: poll there."""
        with self._cond:
            if self._stopped or self._poll_all:
                return None
            scope = PodBoard.ALL if PodBoard.ALL not in self._refused else namespace
            if scope in self._refused:
                return None
            if scope not in self._threads:
                thread = threading.Thread(target=self._run, args=(scope,), name="eksid-pod-watch", daemon=True)
                self._threads[scope] = thread
                thread.start()
            return scope

    def read(self, namespace: str, name: str, since: float) -> Obj:
        """The pod as the watch last saw it (waiting up to APPEAR_SECONDS for it to show), else as read alone."""
        scope = self._scope(namespace)
        key = (namespace, name)
        if scope is not None:
            deadline = time.monotonic() + self.APPEAR_SECONDS
            with self._cond:
                # A pod deleted meanwhile is waited for too: a pod of the same name that replaces it is read (and
                # found to be another one); if none comes, the read alone says it is gone.
                while key not in self._pods and scope not in self._refused and not self._poll_all:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopped:
                        break
                    self._cond.wait(left)
                if key in self._pods:
                    return self._pods[key]
                if scope in self._refused or self._poll_all:
                    scope = None
        if scope is None:
            return self.board.read(namespace, name, since)
        return self.kube.read_pod(namespace, name)

    def wait(self, namespace: str, name: str, seen: Obj, until: float, cancel: threading.Event) -> None:
        """Return when the pod may have changed since ``seen``: the watch brought a new version (or stopped), the
        run was cancelled, or ``until`` came. Where this namespace polls: one tick."""
        with self._cond:
            scope = PodBoard.ALL if PodBoard.ALL not in self._refused else namespace
            polling = scope in self._refused or scope not in self._threads or self._stopped or self._poll_all
        if polling:
            time.sleep(POLL_SECONDS)
            return
        key = (namespace, name)
        with self._cond:
            while (
                self._pods.get(key) is seen and scope not in self._refused and not self._stopped and not self._poll_all
            ):
                left = until - time.monotonic()
                if left <= 0 or cancel.is_set():
                    return
                self._cond.wait(min(left, 1.0))  # a cancel is noticed within a second, without a request

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stop(self) -> None:
        """End the watches (their threads end with their streams)."""
        with self._cond:
            self._stopped = True
            self._stop_event.set()
            watchers = list(self._watchers.values())
            self._cond.notify_all()
        for watcher in watchers:
            watcher.stop()

    def _run(self, scope: str) -> None:
        try:
            self._follow(scope)
        except Exception as exc:  # whatever went wrong, the waiters must not hang on this scope: they poll
            self._refuse(scope, f"{exc.__class__.__name__}: {str(exc)[:200]}", permanent=False)

    def _ended(self) -> bool:
        with self._cond:
            return self._stopped

    def _follow(self, scope: str) -> None:
        namespace = None if scope == PodBoard.ALL else scope
        version, failures = "", 0
        while not self._ended():
            try:
                if not version:
                    listed, version = self.kube.list_pods_at(self.selector, namespace)
                    self._replace(namespace, listed)
                watcher = self.kube.watcher()
                with self._cond:
                    if self._ended():
                        return
                    self._watchers[scope] = watcher
                for kind, obj in self.kube.watch_pods(self.selector, namespace, version, self.WATCH_SECONDS, watcher):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._update(kind, obj)
                    failures = 0
            except KubeError as exc:
                if self._ended():
                    return
                if exc.status == 410:  # the version left the server's watch history: list again
                    version = ""
                    continue
                failures += 1
                permanent = exc.status in PodBoard.PERMANENT or isinstance(exc, KubeUnreachable)
                if permanent or failures >= self.MAX_FAILURES or not version:
                    self._refuse(scope, str(exc), permanent)
                    return
                self._stop_event.wait(0.5 * failures)  # backoff before resuming a broken stream

    def _replace(self, namespace: str | None, listed: list[Obj]) -> None:
        with self._cond:
            for key in [k for k in self._pods if namespace is None or k[0] == namespace]:
                del self._pods[key]
            for pod in listed:
                self._pods[_pod_key(pod)] = pod
            self._cond.notify_all()

    def _update(self, kind: str, pod: Obj) -> None:
        key = _pod_key(pod)
        with self._cond:
            if kind == "DELETED":
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod
            self._cond.notify_all()

    def _refuse(self, scope: str, why: str, permanent: bool) -> None:
        """Stop watching ``scope``. A cluster-wide watch refused for good gives way to one per namespace; any
        other failure makes the namespace (or, cluster-wide, every namespace) poll, said once."""
        with self._cond:
            self._refused[scope] = why
            if scope == PodBoard.ALL and not permanent:
                self._poll_all = True
            self._cond.notify_all()
            say = not self._stopped and not self._said and (scope != PodBoard.ALL or not permanent)
            self._said = self._said or say
        if say:
            self.progress(
                f"waiting for probe pods by polling a shared LIST: cannot watch them ({printable(why)[:300]})"
            )


def _pod_key(pod: Obj) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


@dataclass
class Campaign:
    """Launch every selected workload's probe pod at once; collect results; clean up."""

    kube: Kube
    profile: Profile
    run_id: str = field(default_factory=new_run_id)
    max_parallel: int = DEFAULT_MAX_PARALLEL  # a run sets --eksid-max-parallel's (the provider's default)
    keep_pods: bool = False
    progress: Callable[[str], None] = lambda _msg: None
    manifest_hook: Callable[[Obj, Workload], object] = lambda _manifest, _workload: None
    # Sends a probe's presigned GetCallerIdentity (url, nonce) to the runner's own STS and returns the
    # caller STS names (pytest_eksid.aws.Aws.prove_caller). None: no identity is ever proven.
    prove: Callable[[str, str], dict[str, str]] | None = None
    progress_every: float = 5.0
    outcomes: dict[str, ProbeOutcome] = field(default_factory=dict)
    _created: dict[str, str] = field(default_factory=dict)  # pod name -> namespace
    _uids: dict[str, str] = field(default_factory=dict)  # pod name -> the UID it was created with
    # Namespaces where a create got no answer: the pod may exist without our knowing its name.
    _unsure: set[str] = field(default_factory=set)
    _phase: dict[str, str] = field(default_factory=dict)  # workload -> what its pod was last seen doing
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _board: PodBoard = field(init=False)
    _watch: PodWatch = field(init=False)
    _templates: dict[tuple[str, str], list[Obj] | str] = field(default_factory=dict)  # read once per selector

    def __post_init__(self) -> None:
        self._board = PodBoard(self.kube, self.run_id, POLL_SECONDS)
        self._watch = PodWatch(self.kube, self.run_id, self._board, self.progress)
        self._watch.stop()  # each run() watches anew (see run)

    def run(self, workloads: Iterable[Workload | Target]) -> dict[str, ProbeOutcome]:
        """Probe these workloads (or targets) concurrently; on interruption, stop waiting (cleanup deletes).

        Outcomes are keyed by ``Target.key``: the workload's name, or ``name@nodegroup``.
        """
        targets = [t if isinstance(t, Target) else Target(t) for t in workloads]
        todo = [t for t in targets if t.key not in self.outcomes]
        if not todo:
            return self.outcomes
        self.progress(f"launching {len(todo)} probe pod(s), run id {self.run_id}")
        started = time.monotonic()
        self._watch = PodWatch(self.kube, self.run_id, self._board, self.progress)
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(self.max_parallel, len(todo))), thread_name_prefix="eksid-probe"
        )
        try:
            pending = {pool.submit(self._probe, w) for w in todo}
            last_report = time.monotonic()
            while pending:
                done, pending = wait(pending, timeout=self.progress_every, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    self.outcomes[Target(outcome.workload, outcome.nodegroup).key] = outcome
                if pending and time.monotonic() - last_report >= self.progress_every:
                    last_report = time.monotonic()
                    self.progress(self._status_line(len(todo)))
        except BaseException:
            self._cancel.set()
            self._watch.wake()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            self._watch.stop()
        pool.shutdown()
        placed = [self.outcomes[t.key].placement for t in todo]
        mirrored = sum(1 for pl in placed if pl is not None and pl.mirrored)
        own = sum(1 for pl in placed if pl is not None)
        if own:
            self.progress(f"probe placement: {mirrored}/{own} mirrored from the workloads' pod templates")
        done_ok = sum(1 for t in todo if self.outcomes[t.key].result is not None)
        self.progress(f"{done_ok}/{len(todo)} probe(s) reported in {time.monotonic() - started:.1f}s")
        return self.outcomes

    def cancel(self) -> None:
        """Stop waiting for probe pods (the run is interrupted); nothing new is waited for."""
        self._cancel.set()
        self._watch.wake()

    def _status_line(self, total: int) -> str:
        with self._lock:
            phases = list(self._phase.values())
        finished = sum(1 for p in phases if p in ("Succeeded", "Failed", "error"))
        running = phases.count("Running")
        return f"probes: {finished}/{total} done, {running} running, {total - finished - running} pending"

    def sweep(self, older_than_minutes: float) -> list[str]:
        """Delete probe pods of earlier runs older than this, in the profile's namespaces."""
        cutoff = time.time() - older_than_minutes * 60
        deleted = []
        for namespace in sorted({w.namespace for w in self.profile.workloads}):
            for pod in self.kube.list_pods(f"{MANAGED_BY}={MANAGED_BY_VALUE}", namespace):
                meta = pod.get("metadata") or {}
                if (meta.get("labels") or {}).get(RUN_ID_LABEL) == self.run_id:
                    continue
                created = _epoch(str(meta.get("creationTimestamp") or ""))
                if created is not None and created < cutoff and self.kube.delete_pod(namespace, meta["name"]):
                    deleted.append(f"{namespace}/{meta['name']}")
        return deleted

    def _probe(self, target: Target) -> ProbeOutcome:
        workload = target.workload
        outcome = ProbeOutcome(workload, target.nodegroup)
        t0 = time.monotonic()
        try:
            outcome.placement = None if target.nodegroup is not None else self.placement(workload)
            manifest = probe_pod_manifest(self.profile, workload, self.run_id, target.nodegroup, outcome.placement)
            self.manifest_hook(manifest, workload)
            nonce = secrets.token_urlsafe(24)
            bind_nonce(manifest, nonce)
            pod = self.kube.create_pod(workload.namespace, manifest)
            name = str(pod["metadata"]["name"])
            outcome.pod, outcome.uid = name, _uid(pod)
            with self._lock:
                self._created[name] = workload.namespace
                self._uids[name] = outcome.uid
            self._wait(outcome, workload.namespace, name, _identity_spec(pod))
            self._authenticate(outcome, nonce)
        except (KubeError, ProbeError) as exc:
            outcome.error = str(exc)
            sent_unanswered = isinstance(exc, KubeError) and exc.status is None
            if isinstance(exc, KubeUnreachable):
                sent_unanswered = exc.sent  # the server took the create and went silent
            if outcome.pod is None and sent_unanswered:  # the create went out, its answer did not come back
                with self._lock:
                    self._unsure.add(workload.namespace)
            with self._lock:
                self._phase[target.key] = "error"
            if outcome.pod is not None and not self._cancel.is_set():
                outcome.events = self._events(workload.namespace, outcome.pod)
        outcome.seconds = time.monotonic() - t0
        return outcome

    def placement(self, workload: Workload) -> Placement:
        """Where the workload's own probe goes: as its pod templates say (read once per namespace and
        selector), with its ``probe`` overrides; the profile's settings when mirroring is off or impossible."""
        if workload.probe is not None and not workload.probe.mirror:
            return profile_placement(self.profile, workload, "profile probe settings (mirroring off)")
        selector = workload_selector(workload)
        key = (workload.namespace, selector)
        with self._lock:
            templates = self._templates.get(key)
        if templates is None:
            try:
                templates = self.kube.workloads(workload.namespace, selector)
            except KubeError as exc:
                templates = f"cannot read the pod templates: {exc}"
            with self._lock:
                self._templates[key] = templates
        if isinstance(templates, str):
            return profile_placement(self.profile, workload, f"profile probe settings ({templates})")
        return with_overrides(mirror(templates, selector, profile_base(self.profile)), workload)

    def _same_pod(self, outcome: ProbeOutcome, pod: Obj, spec: Obj) -> None:
        """The pod read by name must be the one created: same UID, same image, command and ServiceAccount.
        Anyone who may create and delete pods in the namespace could otherwise swap in a pod of the same
        name and labels whose log says anything."""
        where = f"probe pod {outcome.workload.namespace}/{outcome.pod}"
        if _uid(pod) != outcome.uid:
            raise ProbeError(
                f"{where}: probe pod replaced by another party (uid {_uid(pod)}, not {outcome.uid} as created): "
                "its result is not the probe's; who may create and delete pods in this namespace?"
            )
        if _identity_spec(pod) != spec:
            raise ProbeError(
                f"{where}: probe pod altered by another party (uid {outcome.uid}): its image, command or "
                "ServiceAccount is not the one created; its result is not the probe's"
            )

    def _authenticate(self, outcome: ProbeOutcome, nonce: str) -> None:
        """Replace the caller the probe claims by the one STS names for the probe's proof, or mark the
        identity not proven. Either way the proof (a bearer secret) leaves the result and the log."""
        identity = outcome.result.get("identity") if outcome.result is not None else None
        if not isinstance(identity, dict):
            return
        proof = identity.pop("proof", None)
        if isinstance(proof, str) and proof:
            outcome.log = outcome.log.replace(proof, "***")
        failure = identity.pop("proof_failure", None)
        claimed = identity.get("caller")
        if not claimed:
            return  # no identity claimed: nothing to prove, and no identity test can pass
        try:
            if self.prove is None:
                raise IdentityNotProven("this run has no STS endpoint to check the probe's proof with")
            if not isinstance(proof, str) or not proof:
                why = f" (the probe could not make one: {failure.get('type')})" if isinstance(failure, dict) else ""
                raise IdentityNotProven(f"the probe's result carries no proof of its caller{why}")
            caller = self.prove(proof, nonce)
        except IdentityNotProven as exc:
            identity["caller"], identity["claimed_caller"] = None, claimed
            identity["proof_error"] = f"identity not proven: {exc}"
            return
        except Exception as exc:  # the runner's own STS client could not be made: still not proven
            identity["caller"], identity["claimed_caller"] = None, claimed
            identity["proof_error"] = f"identity not proven: {exc.__class__.__name__}"
            return
        identity["caller"], identity["proven"] = cast(Caller, caller), True

    def _wait(self, outcome: ProbeOutcome, namespace: str, name: str, spec: Obj) -> None:
        created = time.monotonic()
        deadline = created + self.profile.probe.timeout_seconds + 10
        pod: Obj = {}
        while time.monotonic() < deadline:
            if self._cancel.is_set():
                raise ProbeError(f"probe pod {namespace}/{name}: run interrupted")
            pod = self._watch.read(namespace, name, created)
            self._same_pod(outcome, pod, spec)
            phase = (pod.get("status") or {}).get("phase")
            with self._lock:
                self._phase[Target(outcome.workload, outcome.nodegroup).key] = str(phase)
            outcome.node_name = (pod.get("spec") or {}).get("nodeName") or outcome.node_name
            if phase in ("Succeeded", "Failed"):
                outcome.log = self.kube.pod_log(namespace, name)
                # Read by name: the pod may have been swapped between the last read and the log.
                self._same_pod(outcome, self.kube.read_pod(namespace, name), spec)
                try:
                    outcome.result = parse_result(outcome.log)
                except ResultVersionError as exc:
                    raise ProbeError(f"probe pod {namespace}/{name}: {exc}") from None
                if outcome.result is None:
                    code = _exit_code(pod)
                    raise ProbeError(
                        f"probe pod {namespace}/{name} ended {phase} (exit code {code}) without a result line; "
                        f"last log lines:\n{_tail(outcome.log)}"
                    )
                return
            reason = _diagnose(pod)
            if reason:
                raise ProbeError(f"probe pod {namespace}/{name} cannot run: {reason}")
            self._watch.wait(namespace, name, pod, deadline, self._cancel)
        raise ProbeError(
            f"probe pod {namespace}/{name} did not finish within {self.profile.probe.timeout_seconds + 10}s; "
            f"last seen: {_seen(pod)}"
        )

    def _events(self, namespace: str, name: str) -> list[str]:
        try:
            events = self.kube.pod_events(namespace, name)
        except KubeError as exc:
            return [f"(events unavailable: {exc})"]
        return [f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}" for e in events][-15:]

    def _delete(self, namespace: str, name: str, uid: str | None) -> tuple[str | None, str | None, bool]:
        """Delete one probe pod: (what was deleted, what failed and why, whether to stop trying the others)."""
        pod = f"{namespace}/{name}"
        try:
            return (pod if self.kube.delete_pod(namespace, name, uid) else None), None, False  # never a swapped pod
        except KubeUnreachable as exc:  # each further try could wait minutes: stop here
            return None, f"{pod} ({str(exc)[:200]})", True
        except KubeError as exc:  # the API refused this one: try the others; no answer at all (a timeout): stop
            return None, f"{pod} ({str(exc)[:200]})", exc.status is None
        except Exception as exc:  # anything else unexpected: do not risk minutes per pod
            return None, f"{pod} ({exc.__class__.__name__}: {str(exc)[:200]})", True

    def cleanup(self) -> list[str]:
        """Delete every pod this campaign created (unless keep_pods); return the ones deleted."""
        if self.keep_pods:
            return []
        with self._lock:
            created = dict(self._created)
            self._created.clear()
            unsure = sorted(self._unsure)
            self._unsure.clear()
            uids = dict(self._uids)
        for namespace in unsure:  # find the pods whose create timed out, by this run's label
            try:
                for pod in self.kube.list_pods(f"{RUN_ID_LABEL}={self.run_id}", namespace):
                    created.setdefault(str(pod["metadata"]["name"]), namespace)
                    uids.setdefault(str(pod["metadata"]["name"]), _uid(pod))
            except KubeError:
                pass  # the deletes below say what is left, and how to delete it
        pending = list(created.items())
        outcomes: list[tuple[str | None, str | None]] = []
        if pending:
            # The first alone: against an API server that stopped answering, one try says so (each can take the
            # whole timeout). The rest at once, max_parallel at a time, as the campaign created them: one by one,
            # a thousand pods were a thousand round trips at the end of the run. A try that says the server is
            # gone stops the ones not yet begun.
            halt = threading.Event()

            def delete(item: tuple[str, str]) -> tuple[str | None, str | None]:
                name, namespace = item
                if halt.is_set():
                    return None, f"{namespace}/{name} (not tried)"
                done, failure, stop = self._delete(namespace, name, uids.get(name))
                if stop:
                    halt.set()
                return done, failure

            outcomes.append(delete(pending[0]))
            rest = pending[1:]
            if rest:
                workers = max(1, min(self.max_parallel, len(rest)))
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eksid-cleanup") as pool:
                    outcomes += pool.map(delete, rest)
        deleted = [done for done, _ in outcomes if done is not None]
        failed = [failure for _, failure in outcomes if failure is not None]
        if failed:
            raise KubeError(
                f"could not delete {len(failed)} probe pod(s) (deleted {len(deleted)}): {'; '.join(failed[:5])}; "
                f"delete them with: kubectl delete pods -A -l {RUN_ID_LABEL}={self.run_id}"
            )
        return deleted


def _exit_code(pod: Obj) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return str(term.get("exitCode"))
    return "unknown"


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
