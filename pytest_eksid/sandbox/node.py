"""A worker node and its kubelet, which runs the pods scheduled on it as local processes.

The kubelet runs each pod's container command as a local OS process with the environment a
container would get (the ``kubernetes`` Service's variables, the pod spec's ``env``, the node's
network settings) and its volumes written to files (projected tokens through TokenRequest, the
CA, configMap/secret/downward API data), once, at start. Where the machine allows it, the process
gets a mount namespace of its own with each volume bind-mounted at its ``mountPath``; otherwise
(and, for variables, always) a value that lies under a mount path is rewritten to the file's host
path (the pod spec keeps the real path). Its output is the pod log, its exit the pod phase. Each
node carries its own IMDS (:mod:`~pytest_eksid.sandbox.imds`) and Pod Identity agent
(:mod:`~pytest_eksid.sandbox.agent`).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_eksid.sandbox.agent import PodIdentityAgent
from pytest_eksid.sandbox.hollow import HOLLOW_NOTE, HollowProbes, Timers, probe_plan, template_key
from pytest_eksid.sandbox.imds import Imds
from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.serviceaccounts import create_token
from pytest_eksid.sandbox.kubeapi.store import Store, now_rfc3339
from pytest_eksid.sandbox.tokens import Issuer
from pytest_eksid.sandbox.warm import WarmProcess, WarmPython, eligible
from pytest_eksid.sandbox.webhooks import AGENT_ADDRESSES

Obj = dict[str, Any]
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# An image reference: [registry[:port]/]path[:tag][@digest], lowercase path.
_IMAGE_RE = re.compile(
    r"^(?:[\w.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)

# Hollow pods adapted at once: the live provider's default --eksid-max-parallel is 24, the sandbox's 32.
HOLLOW_POOL = 32


MOUNT_NAMESPACE = "mount-namespace"  # volumes bind-mounted at their mountPaths in the pod's own mount namespace
PATH_REWRITE = "path-rewrite"  # volumes only under the pod's work directory; variables rewritten to them
MODE_ANNOTATION = "sandbox.eksid.io/volume-mounts"  # on each Node: which of the two its kubelet uses
# Mount points the kubelet may create on the host when they are missing (empty directories): the
# conventional secret paths. Elsewhere only an existing directory is mounted over.
CREATABLE_MOUNT_ROOT = "/var/run/secrets/"


Process = subprocess.Popen[bytes] | WarmProcess


@dataclass
class _Running:
    process: Process
    root: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    execs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    deleted: bool = False
    namespaced: bool = False  # the process has its own mount namespace (exec enters it)


@dataclass(frozen=True)
class _Prepared:
    """A container ready to start: its spec, the pod's directory, volumes (mountPath -> host dir),
    environment and command."""

    container: Obj
    root: Path
    mounts: dict[str, Path]
    env: dict[str, str]
    argv: list[str]


@dataclass
class Node:
    name: str
    nodegroup: str
    imds: Imds
    agent: PodIdentityAgent
    labels: dict[str, str] = field(default_factory=dict)
    volume_mounts: str = ""  # the kubelet's mode (MOUNT_NAMESPACE or PATH_REWRITE), set by the kubelet

    def manifest(self) -> Obj:
        return {
            "metadata": {
                "name": self.name,
                **({"annotations": {MODE_ANNOTATION: self.volume_mounts}} if self.volume_mounts else {}),
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",  # the kubelet's own labels, which the agent's affinity reads
                    "eks.amazonaws.com/nodegroup": self.nodegroup,
                    **self.labels,
                },
            },
            "spec": {"providerID": f"aws:///eu-west-1a/i-{uuid.uuid5(uuid.NAMESPACE_DNS, self.name).hex[:17]}"},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": now_rfc3339(),
                        "lastTransitionTime": now_rfc3339(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-eks-sandbox",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "eksid-sandbox://1",
                    "kernelVersion": "",
                    "osImage": "sandbox",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }


class Kubelet:
    """Runs the pods the scheduler places on the sandbox's nodes."""

    def __init__(
        self,
        store: Store,
        issuer: Issuer,
        nodes: list[Node],
        workdir: Path,
        aws_endpoint: str,
        *,
        start_latency: float = 0.0,
        unpullable_images: frozenset[str] = frozenset(),
        mount_namespaces: bool | None = None,
        hollow: bool = False,
        warm: WarmPython | None = None,
        remember: Callable[[str], None] = lambda _secret: None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.nodes = nodes
        self.workdir = workdir
        self.aws_endpoint = aws_endpoint
        self.start_latency = start_latency  # seconds between scheduling and the process start
        self.warm = warm  # python -c containers forked from a warm interpreter (sandbox.warmPython, warm.py)
        if warm is not None:
            warm.prestart()
        self.unpullable_images = unpullable_images
        # Files an image carries under its user's home: image -> {path relative to $HOME: content}.
        self.image_home_files: dict[str, dict[str, str]] = {}
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._stopping = threading.Event()
        self.live = 0  # pods whose process runs now
        self.peak = 0  # the most that ever ran at once
        # Hollow nodes (sandbox.hollowNodes, sandbox/hollow.py): probe pods run the real probe once per
        # template; the others run no process. Their start latency is a timer, their work a pool whose threads
        # mostly wait (the pod's agent, STS and AWS calls, each paying its injected latency): on a cluster each
        # pod makes them at once, so the pool is as wide as a campaign launches pods (HOLLOW_POOL).
        self.hollow: HollowProbes | None = HollowProbes(remember) if hollow else None
        self.timers: Timers | None = Timers() if hollow else None
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=HOLLOW_POOL, thread_name_prefix="hollow-kubelet") if hollow else None
        )
        self._tasks: set[Future[None]] = set()
        self._hollow_logs: dict[str, str] = {}  # pod uid -> the log of a hollow pod (no process wrote it)
        self._hollow_roots: dict[str, Path] = {}  # pod uid -> its directory (volumes), removed on delete
        # Each pod in its own mount namespace with its volumes at their mountPaths, where the machine
        # allows it (root with CAP_SYS_ADMIN: `unshare --mount`); None: find out once, here.
        if mount_namespaces is None:
            mount_namespaces = _can_bind_mount(workdir)
        self.isolation = MOUNT_NAMESPACE if mount_namespaces else PATH_REWRITE
        for node in nodes:
            node.volume_mounts = self.isolation

    def _event(self, pod: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        meta = pod["metadata"]
        now = now_rfc3339()
        try:
            self.store.create(
                "events",
                meta["namespace"],
                {
                    "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "apiVersion": "v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "source": {"component": "kubelet" if reason != "FailedScheduling" else "default-scheduler"},
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                },
            )
        except Exception:
            return  # the namespace went away: events are best effort, as in Kubernetes

    def _waiting(self, pod: Obj, container: Obj, reason: str, message: str) -> None:
        self._event(pod, "Failed", message, "Warning")
        self._patch(
            pod,
            lambda p: p["status"].update(
                {
                    "phase": "Pending",
                    "containerStatuses": [_status(container, waiting={"reason": reason, "message": message})],
                }
            ),
        )

    def install(self) -> None:
        self.store.on_create.append(self._on_create)
        self.store.on_delete.append(self._on_delete)
        self.store.exec_handler = self.exec
        # The API server signs TokenRequests with the cluster's issuer; the kubelet holds it here, so it
        # installs the signer (the runtime could as well: it is the same issuer).
        self.store.token_minter = self._mint

    def _mint(
        self,
        *,
        namespace: str,
        service_account: str,
        sa_uid: str,
        audiences: list[str],
        expiration_seconds: int,
        pod: tuple[str, str] | None,
        node_name: str,
        secret: tuple[str, str] | None,
        warn_after_seconds: int,
        now: int,
    ) -> str:
        return self.issuer.service_account_token(
            namespace=namespace,
            service_account=service_account,
            sa_uid=sa_uid,
            pod_name=pod[0] if pod else "",
            pod_uid=pod[1] if pod else "",
            node_name=node_name,
            audiences=audiences,
            expiration_seconds=expiration_seconds,
            secret=secret,
            warn_after_seconds=warn_after_seconds,
            now=now,
        )

    def _on_create(self, pod: Obj) -> None:
        if MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {}):
            return  # a mirror pod: its node runs it, not the process runner
        if self.hollow is not None and probe_plan(pod) is not None:
            self._submit(self._hollow_place, pod)
            return
        threading.Thread(target=self._run, args=(pod,), name=f"kubelet-{pod['metadata']['name']}", daemon=True).start()

    def _schedule(self, pod: Obj) -> Node | None:
        spec = pod["spec"]
        if spec.get("nodeName"):
            return next((n for n in self.nodes if n.name == spec["nodeName"]), None)
        selector = spec.get("nodeSelector") or {}
        fits = [
            n for n in self.nodes if all(n.manifest()["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        if not fits:
            return None
        with self._lock:
            self._next += 1
            return fits[self._next % len(fits)]

    def _patch(self, pod: Obj, change: Callable[[Obj], None]) -> bool:
        meta = pod["metadata"]
        try:
            self.store.update("pods", meta["namespace"], meta["name"], change)
        except Exception:
            return False  # deleted meanwhile
        return True

    def _run(self, pod: Obj) -> None:
        node = self._place(pod)
        if node is None:
            return
        if self.start_latency and self._stopping.wait(self.start_latency):
            return
        prepared = self._prepare(pod, node)
        if prepared is not None:
            self._execute(pod, node, prepared)

    def _place(self, pod: Obj) -> Node | None:
        """Schedule the pod on a node (its nodeName set, the scheduler's event), or say why not."""
        meta = pod["metadata"]
        node = self._schedule(pod)
        if node is None:
            self._event(
                pod,
                "FailedScheduling",
                f"0/{len(self.nodes)} nodes are available: node(s) didn't match Pod's node affinity/selector.",
                "Warning",
            )
            self._patch(
                pod,
                lambda p: p["status"].update(
                    {
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": f"0/{len(self.nodes)} nodes are available: "
                                "node(s) didn't match Pod's node affinity/selector.",
                                "lastTransitionTime": now_rfc3339(),
                            }
                        ]
                    }
                ),
            )
            return None
        self._event(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node.name}")
        self._patch(pod, lambda p: p["spec"].update({"nodeName": node.name}))
        return node

    def _prepare(self, pod: Obj, node: Node) -> _Prepared | None:
        """What a container start needs (the image, the volumes written, the environment, the command),
        or None with the pod left Waiting and the reason, as the kubelet reports it."""
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        image = str(container.get("image") or "")
        if not _IMAGE_RE.match(image):
            self._waiting(
                pod,
                container,
                "InvalidImageName",
                f'Failed to apply default image tag "{image}": invalid reference format',
            )
            return None
        if image in self.unpullable_images:
            self._waiting(
                pod,
                container,
                "ErrImagePull",
                f'Failed to pull image "{image}": rpc error: code = NotFound '
                "desc = failed to pull and unpack image: not found",
            )
            return None
        self._event(pod, "Pulled", f'Container image "{image}" already present on machine')
        root = self.workdir / "pods" / meta["uid"]
        try:
            mounts = self._volumes(pod, node, root)
            env = self._env(container, node, root, mounts, meta["namespace"])
        except ValueError as exc:
            self._waiting(pod, container, "CreateContainerConfigError", f"Error: {exc}")
            return None
        try:
            argv = self._argv(container)
        except ValueError as exc:
            self._waiting(pod, container, "CreateContainerError", f"Error: {exc}")
            return None
        return _Prepared(container, root, mounts, env, argv)

    def _mark_running(self, pod: Obj, node: Node, container: Obj) -> str | None:
        """Patch the pod Running (its container started now); the start time, or None when it is gone."""
        started = now_rfc3339()

        def scheduled(p: Obj) -> None:
            p["spec"]["nodeName"] = node.name
            p["status"].update(
                {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                    "startTime": started,
                    "conditions": [
                        {"type": c, "status": "True", "lastTransitionTime": started}
                        for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [_status(container, running={"startedAt": started})],
                }
            )

        return started if self._patch(pod, scheduled) else None

    def _terminated(
        self, pod: Obj, container: Obj, started: str, code: int, reason: str, deadline: object = None
    ) -> None:
        """Patch the pod Succeeded or Failed with its container's terminated state."""
        finished = now_rfc3339()

        def terminated(p: Obj) -> None:
            p["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            if deadline is not None:
                p["status"]["reason"] = "DeadlineExceeded"
                p["status"]["message"] = f"Pod was active on the node longer than the specified deadline ({deadline}s)"
            p["status"]["containerStatuses"] = [
                _status(
                    container,
                    terminated={"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished},
                )
            ]
            for c in p["status"].get("conditions", []):
                if c["type"] in ("Ready", "ContainersReady"):
                    c["status"] = "False"

        self._patch(pod, terminated)

    def _execute(
        self, pod: Obj, node: Node, prepared: _Prepared, started: str | None = None
    ) -> tuple[int, Path] | None:
        """Run the container's command as a local process until it ends; (exit code, log file), or None
        when the pod was deleted or the sandbox stops. ``started``: the pod is already Running since then."""
        meta = pod["metadata"]
        container, root, mounts, env, argv = (
            prepared.container,
            prepared.root,
            prepared.mounts,
            prepared.env,
            prepared.argv,
        )
        log = root / "container.log"
        announce = started is None  # a hollow pod's container was announced as it "started"
        warm = self.warm is not None and eligible(argv, env) and self.warm.ready()  # not under the lock
        with self._lock:
            # stop() takes the same lock: a pod whose start races the shutdown never gets a process.
            if self._stopping.is_set():
                return None
            if started is None:
                started = self._mark_running(pod, node, container)
                if started is None:
                    return None
            binds = self._binds(container, mounts) if self.isolation == MOUNT_NAMESPACE else []
            # An argument naming a file under a mountPath the namespace does not hold (or no namespace)
            # gets the volume's host path, as variables do (`--profile=/profiles/cluster.yaml`).
            bound = {target for target, _, _ in binds}
            argv = [_rewrite_arg(a, {m: h for m, h in mounts.items() if m not in bound}) for a in argv]
            with log.open("wb") as out:
                proc: Process | None = None
                if warm and self.warm is not None:
                    proc = self.warm.spawn(argv, env, root, log, binds)  # None: it cannot, start it cold
                if proc is None:
                    proc = start_cold(argv, env, root, out, binds)
            running = _Running(proc, root, log, env, namespaced=bool(binds))
            self._running[meta["uid"]] = running
            self.live += 1
            self.peak = max(self.peak, self.live)
        if announce:
            self._event(pod, "Created", f"Created container {container['name']}")
            self._event(pod, "Started", f"Started container {container['name']}")
        deadline = pod["spec"].get("activeDeadlineSeconds")
        try:
            code = proc.wait(timeout=float(deadline) if deadline else None)
            reason = "Completed" if code == 0 else "Error"
            exceeded = None
        except subprocess.TimeoutExpired:
            _kill(proc)
            code, reason, exceeded = 137, "Error", deadline
        finally:
            with self._lock:
                self.live -= 1
        if running.deleted:
            return None
        self._terminated(pod, container, started, code, reason, exceeded)
        return code, log

    # --- hollow nodes (sandbox/hollow.py) ------------------------------------------------

    def _submit(self, task: Callable[..., None], *args: Any) -> None:
        assert self._pool is not None
        with self._lock:
            if self._stopping.is_set():
                return
            future = self._pool.submit(task, *args)
            self._tasks.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._tasks.discard(future)

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until the hollow kubelet has no task in hand (timers not yet due are not tasks): for tests,
        which then look at the pods' states. False when tasks are still running at ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                tasks = set(self._tasks)
            if not tasks:
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            futures_wait(tasks, timeout=left)

    def _hollow_place(self, pod: Obj) -> None:
        node = self._place(pod)
        if node is None:
            return
        assert self.timers is not None
        self.timers.call_later(self.start_latency, lambda: self._submit(self._hollow_start, pod, node))

    def _hollow_start(self, pod: Obj, node: Node) -> None:
        """The start latency is over: write the volumes, start the "container", and either run the real
        probe (the template's first pod) or wait, holding no thread, for the template's result."""
        assert self.hollow is not None
        uid = pod["metadata"]["uid"]
        if self.store.find("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]) is None:
            return  # deleted while it waited
        prepared = self._prepare(pod, node)
        if prepared is None:
            return
        with self._lock:
            self._hollow_roots[uid] = prepared.root
        started = self._mark_running(pod, node, prepared.container)
        if started is None:
            return
        key = template_key(pod, node.name)
        assert key is not None
        self._event(pod, "Created", f"Created container {prepared.container['name']}")
        self._event(pod, "Started", f"Started container {prepared.container['name']}")
        name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if self.hollow.join(key, name, lambda: self._submit(self._hollow_finish, pod, node, prepared, key, started)):
            threading.Thread(
                target=self._hollow_lead,
                args=(pod, node, prepared, key, started),
                name=f"kubelet-{pod['metadata']['name']}",
                daemon=True,
            ).start()

    def _hollow_lead(self, pod: Obj, node: Node, prepared: _Prepared, key: str, started: str) -> None:
        """The template's first pod: the real probe, whose result stands for the template's other pods."""
        assert self.hollow is not None
        log: str | None = None
        try:
            ended = self._execute(pod, node, prepared, started)
            if ended is not None:
                log = ended[1].read_text(errors="replace")
        finally:
            self.hollow.settle(key, log)

    def _hollow_finish(self, pod: Obj, node: Node, prepared: _Prepared, key: str, started: str) -> None:
        """The template's result is known: this pod's, adapted, or the real probe where it cannot stand."""
        assert self.hollow is not None
        meta = pod["metadata"]
        if self._stopping.is_set() or self.store.find("pods", meta["namespace"], meta["name"]) is None:
            return
        template = self.hollow.result(key)
        line, why = (
            (None, "the template's pod left no result")
            if template is None
            else self.hollow.adapt(template, prepared.env)
        )
        if line is None:
            self.hollow.fallback()
            self._hollow_log(pod, f"{HOLLOW_NOTE}running the real probe: {why}\n")
            threading.Thread(  # a process to wait for: not on the pool, whose few threads serve every pod
                target=self._execute,
                args=(pod, node, prepared, started),
                name=f"kubelet-{meta['name']}",
                daemon=True,
            ).start()
            return
        with self._lock:
            self.hollow.adapted += 1
        self._hollow_log(
            pod,
            f"{HOLLOW_NOTE}no process; the result of the real probe in pod {self.hollow.leader(key)} (same template), "
            "with this pod's environment, agent answer, credentials, caller, AWS calls and proof\n" + line + "\n",
        )
        self._terminated(pod, prepared.container, started, 0, "Completed")

    def _hollow_log(self, pod: Obj, text: str) -> None:
        with self._lock:
            self._hollow_logs[pod["metadata"]["uid"]] = text

    def _volumes(self, pod: Obj, node: Node, root: Path) -> dict[str, Path]:
        """Materialise the pod's volumes; return mountPath -> host dir of the first container.

        Projected sources as the kubelet writes them: ``serviceAccountToken`` through the API's
        TokenRequest bound to this pod (audience, else the API server's; ``expirationSeconds``, else
        3600), ``configMap``/``secret`` keys (``items`` or all), ``downwardAPI`` fields; also plain
        ``configMap``/``secret`` volumes. Written once at start: nothing is refreshed (a real
        kubelet rotates the token at 80% of its life)."""
        spec = pod["spec"]
        host_dirs: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            d = root / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            host_dirs[vol["name"]] = d
            sources = list((vol.get("projected") or {}).get("sources") or [])
            if vol.get("configMap") is not None:
                sources.append({"configMap": {**vol["configMap"], "name": vol["configMap"].get("name")}})
            if vol.get("secret") is not None:
                sources.append({"secret": {**vol["secret"], "name": vol["secret"].get("secretName")}})
            for source in sources:
                self._project(pod, source, d)
        mounts: dict[str, Path] = {}
        for m in spec["containers"][0].get("volumeMounts") or []:
            if m["name"] not in host_dirs:
                raise ValueError(f'volume "{m["name"]}" not found in the pod spec')
            mounts[m["mountPath"].rstrip("/")] = host_dirs[m["name"]]
        return mounts

    def _binds(self, container: Obj, mounts: dict[str, Path]) -> list[tuple[str, Path, bool]]:
        """(mountPath, host dir, read-only) for each mount the pod's mount namespace can hold: an
        absolute, normalised path other than ``/``, existing as a directory or creatable under
        ``/var/run/secrets/``, and not the kubelet's work directory or above it (mounted there, it
        would hide every volume's files). The others stay reachable through the rewritten variables
        and arguments only."""
        read_only = {
            str(m.get("mountPath", "")).rstrip("/"): bool(m.get("readOnly"))
            for m in container.get("volumeMounts") or []
        }
        binds = []
        own = Path(os.path.realpath(self.workdir))
        for mount_path, host in mounts.items():
            target = Path(mount_path)
            if (
                not target.is_absolute()
                or str(target) != os.path.normpath(mount_path)
                or target == Path("/")
                or ".." in target.parts
            ):
                continue
            if not target.is_dir() and not (mount_path + "/").startswith(CREATABLE_MOUNT_ROOT):
                continue
            if Path(os.path.realpath(target)) in (own, *own.parents):
                continue  # it would hide the volumes' own files (a pod's /tmp over $TMPDIR/eksid-sandbox-*)
            binds.append((mount_path, host, read_only.get(mount_path, False)))
        return binds

    def _project(self, pod: Obj, source: Obj, into: Path) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns = meta["namespace"]
        sat = source.get("serviceAccountToken")
        if sat is not None:
            request: Obj = {
                "spec": {
                    "audiences": [sat["audience"]] if sat.get("audience") else None,
                    "expirationSeconds": int(sat.get("expirationSeconds") or 3600),
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
                }
            }
            try:
                minted = create_token(
                    self.store.get, self._mint, ns, spec["serviceAccountName"], request, policy=self.store.token_policy
                )
            except ApiError as exc:
                raise ValueError(f"failed to fetch token: {exc.message}") from None
            _write_secret(_inside(into, sat.get("path")), minted["status"]["token"])
        for kind, resource in (("configMap", "configmaps"), ("secret", "secrets")):
            ref = source.get(kind)
            if ref is None:
                continue
            obj = self.store.find(resource, ns, str(ref.get("name") or ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ValueError(f'{kind.lower()} "{ref.get("name")}" not found')
            data = dict(obj.get("data") or {})
            if resource == "secrets":
                data = {k: base64.b64decode(str(v)).decode("utf-8", "replace") for k, v in data.items()}
            items = ref.get("items") or [{"key": k, "path": k} for k in sorted(data)]
            for item in items:
                if item["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ValueError(f"configmap references non-existent config key: {item['key']}")
                _write_file(_inside(into, item.get("path")), str(data[item["key"]]), secret=resource == "secrets")
        downward = source.get("downwardAPI")
        for item in (downward or {}).get("items") or []:
            field_path = (item.get("fieldRef") or {}).get("fieldPath", "")
            _write_file(_inside(into, item.get("path")), _field(pod, field_path), secret=False)

    def _env(self, container: Obj, node: Node, root: Path, mounts: dict[str, Path], namespace: str) -> dict[str, str]:
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        for relative, content in self.image_home_files.get(str(container.get("image")), {}).items():
            path = home / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_secret(path, content)  # an image's baked-in credentials file
        env = {
            **self._service_env(),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "HOSTNAME": container.get("name", "container"),
            # The node's network: where AWS and IMDS are. On EKS these are the real endpoints.
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.imds.url,
        }
        for item in container.get("env") or []:
            if "value" in item:
                value = str(item.get("value") or "")
            elif "valueFrom" in item:
                value = self._value_from(namespace, item)
            else:
                value = ""
            for mount, host in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    value = str(host) + value[len(mount) :]
            # The agent's link-local address reaches this node's agent (on loopback here).
            for address in AGENT_ADDRESSES:
                if value.startswith(address):
                    value = f"http://127.0.0.1:{node.agent.port}" + value[len(address) :]
            env[item["name"]] = value
        return env

    def _service_env(self) -> dict[str, str]:
        """The ``kubernetes`` Service as the kubelet puts it in every container, whatever
        ``enableServiceLinks`` says (it only adds the namespace's other Services, and there are none)
        [kubernetes/kubernetes pkg/kubelet/kubelet_pods.go getServiceEnvVarMap;
        pkg/kubelet/envvars/envvars.go FromServices]. Here its address is the API server's loopback
        address and HTTPS port; on EKS it is the Service's cluster IP and 443."""
        service = self.store.kubernetes_service
        if service is None:
            return {}
        host, port = service.host, str(service.port)
        link = f"KUBERNETES_PORT_{port}_TCP"
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            link: f"tcp://{host}:{port}",
            f"{link}_PROTO": "tcp",
            f"{link}_PORT": port,
            f"{link}_ADDR": host,
        }

    def _value_from(self, namespace: str, item: Obj) -> str:
        source = item["valueFrom"]
        for kind, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(kind)
            if ref is None:
                continue
            obj = self.store.find(resource, namespace, ref.get("name", ""))
            singular = resource.rstrip("s")
            if obj is None:
                if ref.get("optional"):
                    return ""
                raise ValueError(f'{singular} "{ref.get("name")}" not found')
            data = obj.get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return ""
                raise ValueError(
                    f"couldn't find key {ref.get('key')} in {singular.capitalize()} {namespace}/{ref.get('name')}"
                )
            value = str(data[ref["key"]])
            return base64.b64decode(value).decode("utf-8", "replace") if resource == "secrets" else value
        raise ValueError(f"unsupported valueFrom for {item['name']}: only secretKeyRef and configMapKeyRef")

    def _argv(self, container: Obj) -> list[str]:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise ValueError("the sandbox kubelet runs only containers with an explicit command")
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the image's python: here, the one with botocore
        elif shutil.which(argv[0]) is None:
            raise ValueError(f'exec: "{argv[0]}": executable file not found in $PATH')
        return argv

    def exec(
        self, namespace: str, name: str, container: str | None, argv: list[str], stdio: dict[str, Any]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` "in" a running pod's container: a local process with the container's
        environment and working directory (``pods/exec``); ``stdio`` are ``Popen`` keywords."""
        pod = self.store.get("pods", namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container is not None and container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        with self._lock:
            running = self._running.get(pod["metadata"]["uid"])
        if running is None or running.process.poll() is not None or container not in (None, names[0]):
            raise ApiError(
                400, "BadRequest", f'unable to upgrade connection: container not found ("{container or names[0]}")'
            )
        argv = [sys.executable if i == 0 and a in ("python", "python3") else a for i, a in enumerate(argv)]
        if running.namespaced:  # into the container's mount namespace, where its volumes are
            argv = ["nsenter", f"--mount=/proc/{running.process.pid}/ns/mnt", "--", *argv]
        proc = subprocess.Popen(argv, cwd=running.root, env=running.env, start_new_session=True, **stdio)
        running.execs.append(proc)
        return proc

    def _on_delete(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            running = self._running.pop(uid, None)
            self._hollow_logs.pop(uid, None)
            hollow_root = self._hollow_roots.pop(uid, None)
        if running is None:
            if hollow_root is not None:
                shutil.rmtree(hollow_root, ignore_errors=True)
            return
        running.deleted = True
        _kill(running.process)
        for proc in running.execs:
            _kill(proc)
        shutil.rmtree(running.root, ignore_errors=True)

    def read_log(self, namespace: str, name: str, pod: Obj) -> str:
        with self._lock:
            running = self._running.get(pod["metadata"]["uid"])
            hollow = self._hollow_logs.get(pod["metadata"]["uid"])
            started = pod["metadata"]["uid"] in self._hollow_roots
        if running is not None and hollow is not None:  # a hollow pod that runs the real probe after all
            return hollow + running.log.read_text(errors="replace")
        if hollow is not None:
            return hollow
        if running is None and started and (pod.get("status") or {}).get("phase") == "Running":
            return ""  # a hollow pod waiting for its template's result: nothing written yet
        if running is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{pod["spec"]["containers"][0]["name"]}" in pod "{name}" '
                "is waiting to start: ContainerCreating",
            )
        return running.log.read_text(errors="replace")

    def stop(self) -> None:
        self._stopping.set()
        if self.timers is not None:
            self.timers.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for r in running:
            r.deleted = True
            _kill(r.process)
            for proc in r.execs:
                _kill(proc)


def _status(container: Obj, **state: Obj) -> Obj:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _write_secret(path: Path, text: str) -> None:
    """A token or credentials file only its owner can read (mode 0600, as the kubelet writes them)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def start_cold(
    argv: list[str], env: dict[str, str], cwd: Path, out: IO[bytes], binds: list[tuple[str, Path, bool]]
) -> subprocess.Popen[bytes]:
    """A container's process started cold: its own session, its own mount namespace with ``binds`` (where
    the kubelet uses them), the pod's directory, exactly ``env``, stdin from /dev/null, output into ``out``."""
    return subprocess.Popen(
        _in_mount_namespace(binds, argv) if binds else argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


def _in_mount_namespace(binds: list[tuple[str, Path, bool]], argv: list[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own (private propagation: nothing leaks to the host)
    with each volume bind-mounted at its mountPath. ``unshare`` and ``sh`` exec in place, so the
    process keeps its pid and session and pod deletion still kills the whole tree (``killpg``)."""
    script = ["set -e"]
    for target, host, _ in sorted(binds):  # parents before what is mounted inside them
        script.append(f"mkdir -p {shlex.quote(target)}")  # a no-op where it exists; else an empty host dir
        script.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(target)}")
    for target, _, read_only in binds:
        if read_only:
            script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
    script.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script), "sh", *argv]


def _can_bind_mount(workdir: Path) -> bool:
    """Whether this machine lets the kubelet give a pod its own mount namespace: one real attempt
    (``unshare`` refused without CAP_SYS_ADMIN, or missing), a bind mount inside the work directory."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = workdir / "mount-probe"
    source, target = probe / "source", probe / "target"
    try:
        source.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        (source / "seen").write_text("")
        result = subprocess.run(
            _in_mount_namespace([(str(target), source, True)], ["test", "-e", str(target / "seen")]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        return result.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _rewrite_arg(arg: str, mounts: dict[str, Path]) -> str:
    """``arg`` (a path, or ``--option=path``) with a mountPath prefix replaced by its volume's host dir. A path
    that exists on the host is the image's (images are not pulled: the image's files are the host's, the
    interpreter and the project included) and stays, even under a mountPath such as an emptyDir at /tmp."""
    option, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    if value.startswith("/") and os.path.exists(value):
        return arg
    for mount, host in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return f"{option}{eq}{host}{value[len(mount) :]}"
    return arg


def _inside(volume: Path, relative: object) -> Path:
    """A projected file's path, which the API server's validation keeps relative and without ``..``
    (the sandbox does not validate volumes, so the kubelet refuses such a pod here)."""
    text = str(relative or "")
    parts = Path(text).parts
    if not text or Path(text).is_absolute() or ".." in parts:
        raise ValueError(f"invalid projected file path {text!r}: must be relative and must not contain '..'")
    return volume.joinpath(*parts)


def _write_file(path: Path, text: str, *, secret: bool) -> None:
    """A projected file: secrets 0600, the rest 0644 (the projected volume's defaultMode 420)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if secret:
        _write_secret(path, text)
        return
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _field(pod: Obj, field_path: str) -> str:
    """A downward API ``fieldRef`` value (the fields a volume may project)."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.name": meta.get("name", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "spec.nodeName": spec.get("nodeName", ""),
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise ValueError(f"unsupported downward API field {field_path!r}")


def _kill(proc: Process) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        time.sleep(0)
