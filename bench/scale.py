"""pytest-eksid's probe campaign against the article's "cookbook", side by side, for N workloads.

For each N (``--sizes``), one worker process starts ONE embedded sandbox (with an injected pod
start latency) holding N copies of the demo profile's IRSA workload, and on it measures:

- the cookbook: per workload, sequentially, one ``kubectl run``-style pod per check — first
  ``sts get-caller-identity``, then one pod per allow/deny entry making that single call — each
  pod created, polled until it ends, its log read, then deleted before the next one. For N above
  ``--cookbook-full`` only ``--cookbook-sample`` workloads run and the wall time is extrapolated
  linearly (labelled as such);
- pytest-eksid's :class:`~pytest_eksid.probe.pod.Campaign` (one probe pod per workload, all
  launched at once, at most ``max_parallel``) for each ``--max-parallel`` value.

Per row: wall time (the campaign's includes deleting its pods, as the cookbook's does), wall ÷
ideal (ideal = latency + one uncontended probe's own run time, taken from the N=1 campaign), the
same ratio as ``bench/probe_campaign.py`` computes it (against the slowest probe of that run),
pods, Kubernetes API calls (counted client-side, around the ``Kube`` object's
``ApiClient.call_api``) and AWS API calls (counted server-side, around the WSGI app the sandbox's
AWS endpoint serves) per workload, memory and CPU (the worker's, the pods', and the rest of the
machine's, to show a disturbed row).

    python bench/scale.py [--sizes 1,10,50,200] [--latency 2] [--max-parallel 16,64,200]
                          [--cookbook-full 10] [--cookbook-sample 5] [--node-groups]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULT_MARKER = "SCALE-RESULT "
POLL_SECONDS = 0.25  # the cookbook polls as often as Campaign does (pytest_eksid.probe.pod.POLL_SECONDS)

# What each cookbook pod runs: one AWS call with the pod's default credentials, like
# `kubectl run --rm -it --image=amazon/aws-cli -- sts get-caller-identity`, on the probe image
# (python3 + botocore). The call comes in COOKBOOK_CALL; the answer is one JSON line.
COOKBOOK_PROGRAM = r"""
import base64, json, os, sys
import botocore.session
from botocore.config import Config

def decode(v):
    if isinstance(v, dict):
        if set(v) == {"__bytes__"}:
            return base64.b64decode(v["__bytes__"])
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v

call = json.loads(os.environ["COOKBOOK_CALL"])
base = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2}}
client = botocore.session.Session().create_client(
    call["service"], region_name=call["region"], config=Config(**base, **(call.get("client_config") or {}))
)
method = {api: name for name, api in client.meta.method_to_api_mapping.items()}[call["operation"]]
try:
    answer = getattr(client, method)(**decode(call.get("params") or {}))
    out = {"error": None, "arn": answer.get("Arn")}
except Exception as exc:
    response = getattr(exc, "response", None) or {}
    err = response.get("Error") or {}
    out = {"error": {"type": type(exc).__name__, "code": str(err.get("Code", "")),
                     "message": str(err.get("Message", str(exc)))[:300],
                     "http_status": (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")}}
print("COOKBOOK " + json.dumps(out))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- counting ------------------------------------------------------------------------------


class Tally:
    """Thread-safe counts by label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, label: str) -> None:
        with self._lock:
            self.counts[label] += 1

    def reset(self) -> dict[str, int]:
        with self._lock:
            snapshot = dict(self.counts)
            self.counts.clear()
        return snapshot

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def _kube_label(method: str, path: str) -> str:
    if path.endswith("/log"):
        return "pods/log get"
    if path.endswith("/events"):
        return "events list"
    if path.endswith("/pods"):
        return {"POST": "pods create", "GET": "pods list"}.get(method, f"pods {method}")
    if "/pods/" in path:
        return {"GET": "pods get", "DELETE": "pods delete"}.get(method, f"pods {method}")
    return f"{method} {path}"


def count_kube_calls(kube: Any) -> Tally:
    """Client side: every request the Kube object's ApiClient sends."""
    tally = Tally()
    inner = kube.api_client.call_api

    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # kubernetes >= 31: (method, url, ...)
        tally.add(_kube_label(method, urlsplit(url).path))
        return inner(method, url, *args, **kwargs)

    kube.api_client.call_api = call_api
    return tally


def _aws_label(environ: dict[str, Any]) -> str:
    auth = str(environ.get("HTTP_AUTHORIZATION") or "")
    if "Credential=" in auth:  # .../<date>/<region>/<service>/aws4_request
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        return scope[3] if len(scope) > 3 else "signed"
    return "unsigned (AssumeRoleWithWebIdentity)"


def count_aws_calls(sandbox: Any) -> Tally:
    """Server side: every request reaching the sandbox's AWS endpoint (werkzeug reads server.app per request)."""
    tally = Tally()
    server = sandbox.aws._server
    inner = server.app

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        tally.add(_aws_label(environ))
        return inner(environ, start_response)

    server.app = app
    return tally


class TreeMemory:
    """Samples this process's RSS plus the RSS of its live child processes (the pods' processes).

    (getrusage's RUSAGE_CHILDREN is no help for the pods: a child's ru_maxrss includes the parent's
    resident pages it was forked with, so it reports the worker's size, not a pod's.)
    """

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.peak_kb = 0
        self.peak_children = 0
        self.peak_pod_kb = 0
        self._own = self._cmdline("self")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss_kb(pid: str) -> int:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def sample(self) -> None:
        me = os.getpid()
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                children.append(entry)
        pods = [self._rss_kb(c) for c in children if self._cmdline(c) not in (b"", self._own)]
        total = self._rss_kb("self") + sum(pods)
        self.peak_kb = max(self.peak_kb, total)
        self.peak_pod_kb = max([self.peak_pod_kb, *pods])
        self.peak_children = max(self.peak_children, len(pods))

    @staticmethod
    def _cmdline(pid: str) -> bytes:
        # A child forked but not yet exec'd still shows this process's command line and, until it
        # execs, its resident pages: counting it would count the worker twice.
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> TreeMemory:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def cpu_seconds() -> tuple[float, float, float]:
    """CPU seconds (user + system) of this process (runner + in-process sandbox), of its reaped children
    (the pods), and of the whole machine (/proc/stat: everything but idle and iowait)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = 0.0
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, machine


def rusage_mb() -> tuple[float, float]:
    """ru_maxrss (KiB on Linux) of this process and of its largest waited-for child, in MB. Cumulative."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


# --- the worker: one sandbox, one N --------------------------------------------------------


def workload_pods_switch() -> bool:
    """Whether this version's sandbox runs one pod per workload, switchable by ``sandbox.workloadPods``."""
    from pytest_eksid.sandbox.model import SandboxSection

    return "workload_pods" in SandboxSection.model_fields


def profile_with(n: int, latency: float, workdir: Path) -> Path:
    """N copies of the demo profile's IRSA workload (as bench/probe_campaign.py builds them)."""
    data = yaml.safe_load((REPO / "profiles" / "demo.yaml").read_text())
    base = data["workloads"][1]  # an IRSA workload
    data["workloads"] = [dict(copy.deepcopy(base), name=f"worker-{i:03d}") for i in range(n)]
    data["sandbox"]["podStartSeconds"] = latency
    data["sandbox"]["warmPython"] = False  # probe processes start cold, imports included, as in a real pod
    if workload_pods_switch():
        data["sandbox"]["workloadPods"] = False  # N idle `sleep` pods would only add noise to both approaches
    path = workdir / f"bench-{n}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cookbook_pod(profile: Any, workload: Any, step: int, call: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl run <name> --image=<probe image> --restart=Never --overrides=<serviceAccountName>` creates."""
    name = f"cookbook-{workload.name}-{step}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": workload.namespace, "labels": {"run": name}},
        "spec": {
            "serviceAccountName": workload.service_account,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": name,
                    "image": profile.probe.image,
                    "command": ["python3", "-c", COOKBOOK_PROGRAM],
                    "env": [{"name": "COOKBOOK_CALL", "value": json.dumps(call)}],
                }
            ],
        },
    }


def cookbook_workload(kube: Any, profile: Any, workload: Any) -> tuple[bool, list[str]]:
    """One workload the cookbook way: one pod per check, strictly one after another."""
    from pytest_eksid.probe.pod import probe_plan
    from pytest_eksid.probe.program import classify

    plan = probe_plan(profile, workload)
    region = profile.cluster.region
    checks: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        ({"service": "sts", "operation": "GetCallerIdentity", "region": region}, None)
    ]
    for item in plan["actions"]:
        call = {k: item[k] for k in ("service", "operation", "params", "client_config")}
        checks.append(({**call, "region": region}, item))
    ok, notes = True, []
    for step, (call, item) in enumerate(checks):
        manifest = cookbook_pod(profile, workload, step, call)
        name = manifest["metadata"]["name"]
        kube.create_pod(workload.namespace, manifest)
        deadline = time.monotonic() + profile.probe.timeout_seconds + 10
        phase = None
        while time.monotonic() < deadline:
            phase = (kube.read_pod(workload.namespace, name).get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(POLL_SECONDS)
        text = kube.pod_log(workload.namespace, name) if phase in ("Succeeded", "Failed") else ""
        kube.delete_pod(workload.namespace, name)
        line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("COOKBOOK ")), None)
        if line is None:
            ok = False
            notes.append(f"{name}: phase {phase}, no answer; log tail {text[-300:]!r}")
            continue
        answer = json.loads(line[len("COOKBOOK ") :])
        if item is None:
            if not answer.get("arn"):
                ok = False
                notes.append(f"{name}: get-caller-identity failed: {answer.get('error')}")
        else:
            outcome = classify(item, answer.get("error"))["outcome"]
            if outcome != item["expect"]:
                ok = False
                notes.append(f"{name}: {item['action']} {outcome}, expected {item['expect']}")
    return ok, notes


def run_cookbook(kube: Any, profile: Any, sample: list[Any], label: str = "") -> tuple[float, int, int, list[str]]:
    """The cookbook on ``sample``, one workload after another: (wall seconds, workloads ok, pods run, notes).
    Shared with bench/full_run.py, which runs it on the same sandbox as its pytest run."""
    pods = 0
    good = 0
    notes: list[str] = []
    t0 = time.monotonic()
    for i, w in enumerate(sample):
        ok, why = cookbook_workload(kube, profile, w)
        good += ok
        notes += why
        pods += 1 + len(w.allow) + len(w.deny)
        if (i + 1) % 5 == 0:
            log(f"{label}cookbook {i + 1}/{len(sample)} in {time.monotonic() - t0:.1f}s")
    return time.monotonic() - t0, good, pods, notes


def resources(memory: TreeMemory, sandbox: Any, cpu: list[float]) -> dict[str, float]:
    """A row's memory and CPU columns (``cpu``: this process, its pods, the whole machine, as deltas)."""
    self_mb, child_mb = rusage_mb()
    return {
        "tree_peak_mb": memory.peak_kb / 1024,
        "pod_peak_mb": memory.peak_pod_kb / 1024,
        "live_peak": sandbox.kubelet.peak,
        "rusage_self_mb": self_mb,
        "rusage_child_mb": child_mb,
        "cpu_self": cpu[0],
        "cpu_pods": cpu[1],
        "cpu_other": max(0.0, cpu[2] - cpu[0] - cpu[1]),
    }


def campaign_ok(outcome: Any) -> bool:
    """The probe reported, proved an identity, and every allow/deny came out as expected; a probe
    pinned to a node group (it measures only IMDS) reported both IMDS versions."""
    if outcome.result is not None and outcome.nodegroup is not None:
        return all(str(outcome.imds.get(v, {}).get("outcome", "")) for v in ("v1", "v2"))
    if outcome.result is None or not outcome.identity.get("caller"):
        return False
    expected = len(outcome.workload.allow) + len(outcome.workload.deny)
    actions = outcome.actions
    return len(actions) == expected and all(a.get("outcome") == a.get("expect") for a in actions)


def campaign_targets(profile: Any, workloads: list[Any], node_groups: bool) -> list[Any]:
    """The workloads, or (``--node-groups``) what a pytest run of the suites launches: each workload's
    probe (on the first of the profile's ``probe.nodeGroups``) plus an IMDS-only probe pinned to each other group."""
    if not node_groups:
        return workloads
    from pytest_eksid.probe.pod import probe_target

    groups = list(profile.probe.node_groups)
    targets = [probe_target(profile, w, g) for w in workloads for g in [None, *groups]]
    return list({t.key: t for t in targets}.values())  # the first group's probe is the workload's own


def worker(args: argparse.Namespace) -> None:
    import boto3

    from pytest_eksid.kube import Kube, KubeTarget
    from pytest_eksid.probe.pod import Campaign
    from pytest_eksid.profile import load_profile
    from pytest_eksid.sandbox.runtime import Sandbox

    n = args.worker
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_profile(str(profile_with(n, args.latency, Path(tmp))), REPO)
        profile = loaded.profile
        workloads = list(profile.workloads)
        sandbox = Sandbox(profile)
        connection = sandbox.start()
        kube = Kube(KubeTarget(str(connection.kubeconfig), None))
        log(f"N={n}: sandbox up in {sandbox.startup_seconds:.2f}s")
        try:
            k8s = count_kube_calls(kube)
            aws = count_aws_calls(sandbox)
            # Prove the AWS counter counts: one signed call from here must add exactly one request.
            env = sandbox.runner_env
            sts = boto3.client(
                "sts",
                endpoint_url=env["AWS_ENDPOINT_URL"],
                region_name=env["AWS_DEFAULT_REGION"],
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            )
            sts.get_caller_identity()
            seen = aws.reset()
            if seen != {"sts": 1}:
                raise SystemExit(f"the AWS request counter does not count: one GetCallerIdentity gave {seen}")
            kube.list_pods("app.kubernetes.io/managed-by=nobody", workloads[0].namespace)
            seen = k8s.reset()
            if seen != {"pods list": 1}:
                raise SystemExit(f"the Kubernetes call counter does not count: one list gave {seen}")
            assert sandbox.kubelet is not None

            # The cookbook first (its getrusage figures are then its own).
            sample = workloads if n <= args.cookbook_full else workloads[: args.cookbook_sample]
            per_workload = 1 + len(workloads[0].allow) + len(workloads[0].deny)
            log(f"N={n}: cookbook, {len(sample)} workload(s) x {per_workload} pods")
            sandbox.kubelet.peak = sandbox.kubelet.live
            cpu0 = cpu_seconds()
            with TreeMemory() as memory:
                wall, good, pods, notes = run_cookbook(kube, profile, sample, f"N={n}: ")
            cpu = [b - a for a, b in zip(cpu0, cpu_seconds(), strict=True)]
            k = len(sample)
            rows.append(
                {
                    "n": n,
                    "approach": "cookbook",
                    "max_parallel": 1,
                    "measured": k,
                    "wall": wall * n / k,
                    "measured_wall": wall,
                    "cleanup": 0.0,
                    "probe_max": None,
                    "probe_median": None,
                    "pods_per_wl": pods / k,
                    "k8s": k8s.reset(),
                    "aws": aws.reset(),
                    "per": k,
                    **resources(memory, sandbox, cpu),
                    "ok": good,
                    "notes": notes[:5],
                }
            )
            log(f"N={n}: cookbook {wall:.1f}s for {k} workload(s), {good} ok")

            for mp in args.max_parallel:
                log(f"N={n}: campaign, max parallel {mp}")
                sandbox.kubelet.peak = sandbox.kubelet.live
                campaign = Campaign(kube=kube, profile=profile, max_parallel=mp, progress=lambda m: log(f"  {m}"))
                cpu0 = cpu_seconds()
                with TreeMemory() as memory:
                    t0 = time.monotonic()
                    outcomes = campaign.run(campaign_targets(profile, workloads, args.node_groups))
                    wall = time.monotonic() - t0
                    t1 = time.monotonic()
                    campaign.cleanup()
                    cleanup = time.monotonic() - t1
                cpu = [b - a for a, b in zip(cpu0, cpu_seconds(), strict=True)]
                owns = [float((o.result or {}).get("seconds", {}).get("total", 0.0)) for o in outcomes.values()]
                errors = [f"{o.workload.name}: {o.error}" for o in outcomes.values() if o.error]
                rows.append(
                    {
                        "n": n,
                        "approach": "campaign",
                        "max_parallel": mp,
                        "measured": n,
                        "wall": wall,
                        "measured_wall": wall,
                        "cleanup": cleanup,
                        "probe_max": max(owns),
                        "probe_median": statistics.median(owns),
                        "pods_per_wl": sum(1 for o in outcomes.values() if o.pod) / n,
                        "k8s": k8s.reset(),
                        "aws": aws.reset(),
                        "per": n,
                        **resources(memory, sandbox, cpu),
                        "ok": len(
                            {o.workload.name for o in outcomes.values()}
                            - {o.workload.name for o in outcomes.values() if not campaign_ok(o)}
                        ),
                        "imds": dict(
                            Counter(
                                f"v2 {o.imds.get('v2', {}).get('outcome')} / v1 {o.imds.get('v1', {}).get('outcome')}"
                                for o in outcomes.values()
                                if o.result is not None
                            )
                        ),
                        "notes": [e[:300] for e in errors[:5]],
                    }
                )
                log(f"N={n}: campaign mp={mp} {wall:.1f}s (+{cleanup:.1f}s cleanup), {rows[-1]['ok']}/{n} ok")
        finally:
            kube.close()
            sandbox.stop()
    print(RESULT_MARKER + json.dumps({"startup": sandbox.startup_seconds, "rows": rows}), flush=True)


# --- the driver ----------------------------------------------------------------------------


def run_worker(n: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(n),
        "--latency",
        str(args.latency),
        "--max-parallel",
        ",".join(map(str, args.max_parallel)),
        "--cookbook-full",
        str(args.cookbook_full),
        "--cookbook-sample",
        str(args.cookbook_sample),
        *(["--node-groups"] if args.node_groups else []),
    ]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)  # stderr: progress, passed through
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"worker for N={n} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    data: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
    return data


def _per(row: dict[str, Any], key: str) -> float:
    return sum(row[key].values()) / row["per"]


def _breakdown(counts: dict[str, int], per: int) -> str:
    return ", ".join(f"{k} {v / per:.1f}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def memory_mb() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kb = int(fh.readline().split()[1])
        return f"{kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM unknown"


def driver(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {memory_mb()}, Python {platform.python_version()}")
    print(
        f"pod start latency {args.latency:.1f}s, campaign max parallel {','.join(map(str, args.max_parallel))}, "
        f"cookbook run fully up to {args.cookbook_full} workloads, else on {args.cookbook_sample} and extrapolated"
    )
    if workload_pods_switch():
        print("sandbox.workloadPods: false (the sandbox's idle per-workload application pods are not started)")
    if args.node_groups:
        print("--node-groups: each campaign also launches one probe per workload pinned to each probe.nodeGroups entry")
    print("Kubernetes calls: counted client-side (Kube.api_client.call_api); AWS calls: counted server-side")
    print("(the WSGI app behind the sandbox's AWS_ENDPOINT_URL; verified to count one GetCallerIdentity as 1).")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results: dict[int, dict[str, Any]] = {}
    calibration = 1 not in sizes
    for n in ([1] if calibration else []) + sizes:
        log(f"worker for N={n}")
        results[n] = run_worker(n, args)
    print("load average at end:   " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)")
    solo_rows = [r for r in results[1]["rows"] if r["approach"] == "campaign"]
    solo = statistics.median(r["probe_max"] for r in solo_rows)
    ideal = args.latency + solo
    print(
        f"ideal = latency {args.latency:.2f}s + one uncontended probe's own run time {solo:.2f}s "
        f"(N=1 campaign{' run for calibration' if calibration else ''}) = {ideal:.2f}s"
    )
    print()
    header = (
        f"{'N':>4} {'approach':<10} {'par':>4} {'wall s':>8} {'clean s':>7} {'xideal':>7} {'xideal*':>7} "
        f"{'probe s':>7} {'pods/wl':>7} {'k8s/wl':>7} {'aws/wl':>6} {'live':>5} {'tree MB':>8} {'pod MB':>6} "
        f"{'self MB':>7} {'child MB':>8} {'cpu sb s':>8} {'cpu pod s':>9} {'other s':>7} {'ok':>9}"
    )
    print(header)
    print("-" * len(header))
    footnotes: list[str] = []
    for n in sizes:
        for row in results[n]["rows"]:
            campaign = row["approach"] == "campaign"
            wall = row["wall"] + row["cleanup"]
            ratio_star = f"{row['wall'] / (args.latency + row['probe_max']):>7.2f}" if campaign else f"{'-':>7}"
            probe = f"{row['probe_max']:>7.2f}" if campaign else f"{'-':>7}"
            par = f"{row['max_parallel']:>4}" if campaign else f"{'1':>4}"
            ok = f"{row['ok']}/{row['measured']}"
            mark = ""
            if not campaign and row["measured"] < n:
                mark = "~"
            print(
                f"{n:>4} {row['approach']:<10} {par} {wall:>7.1f}{mark or ' '} {row['cleanup']:>7.2f} "
                f"{row['wall'] / ideal:>7.2f} {ratio_star} {probe} {row['pods_per_wl']:>7.1f} "
                f"{_per(row, 'k8s'):>7.1f} {_per(row, 'aws'):>6.1f} {row['live_peak']:>5} "
                f"{row['tree_peak_mb']:>8.0f} {row['pod_peak_mb']:>6.0f} "
                f"{row['rusage_self_mb']:>7.0f} {row['rusage_child_mb']:>8.0f} "
                f"{row['cpu_self']:>8.1f} {row['cpu_pods']:>9.1f} {row['cpu_other']:>7.1f} {ok:>9}"
            )
            if mark:
                footnotes.append(
                    f"~ N={n} cookbook: extrapolated from {row['measured']} workloads "
                    f"({row['measured_wall']:.1f}s measured x {n}/{row['measured']})"
                )
            for note in row["notes"]:
                footnotes.append(f"! N={n} {row['approach']} par {row['max_parallel']}: {note}")
    print()
    print("wall s: campaign = launch..all results + deleting its pods (clean s); cookbook = every pod created,")
    print("        waited for, log read and deleted, one after another. ~ = extrapolated (see below).")
    print("xideal: (wall without cleanup) / ideal. xideal*: bench/probe_campaign.py's ratio, wall / (latency +")
    print("        the slowest probe of that run), which grows the ideal with the contention it should measure.")
    print("probe s: the slowest probe's own run time in that run. live: most pod processes running at once.")
    print("tree MB: sampled (every 0.2s) peak RSS of the worker process (runner + in-process sandbox) plus its")
    print("        live pod processes; pod MB: the largest single pod process seen.")
    print("self MB / child MB: getrusage ru_maxrss of the worker process (cumulative over that N's rows, in order)")
    print("        and of its children; child MB is the worker's own size at fork time, not a pod's (see pod MB).")
    print("cpu sb s / cpu pod s: CPU seconds (user + system) used meanwhile by the worker process (runner threads,")
    print("        in-process Kubernetes API, AWS emulation, kubelet) and by the pod processes; for the cookbook's")
    print("        extrapolated rows, for the workloads measured. other s: CPU the rest of the machine used meanwhile")
    print("        (/proc/stat minus those two): more than a few seconds means something else ran: not a clean row.")
    print("ok: workloads whose identity was proved and every allow/deny came out as expected / workloads measured.")
    for line in footnotes:
        print(line)
    print()
    print("per-workload call breakdown:")
    for n in sizes:
        for row in results[n]["rows"]:
            label = f"N={n} {row['approach']}" + (
                f" par {row['max_parallel']}" if row["approach"] == "campaign" else ""
            )
            print(f"  {label}: k8s [{_breakdown(row['k8s'], row['per'])}]; aws [{_breakdown(row['aws'], row['per'])}]")
            if row.get("imds"):
                found = ", ".join(f"{k}: {v}" for k, v in sorted(row["imds"].items(), key=lambda kv: -kv[1]))
                print(f"      IMDS as the probes saw it: {found}")
    print()
    print("speedup (cookbook wall / campaign wall, both including deletes) and targets:")
    for n in sizes:
        rows = results[n]["rows"]
        book = next(r for r in rows if r["approach"] == "cookbook")
        book_wall = book["wall"] + book["cleanup"]
        for row in (r for r in rows if r["approach"] == "campaign"):
            wall = row["wall"] + row["cleanup"]
            speedup = book_wall / wall
            complete = row["ok"] == n and book["ok"] == book["measured"]
            verdict = "PASS" if speedup >= 10 and complete else "FAIL"
            extra = f" (cookbook extrapolated from {book['measured']})" if book["measured"] < n else ""
            if not complete:
                extra += f" (incomplete: campaign {row['ok']}/{n} ok, cookbook {book['ok']}/{book['measured']} ok)"
            print(
                f"  N={n:>3} par {row['max_parallel']:>3}: {book_wall:8.1f}s / {wall:7.1f}s = {speedup:6.1f}x  "
                f">=10x faster than the cookbook: {verdict}{extra}"
            )
    target = 200
    if target in results:
        for row in (r for r in results[target]["rows"] if r["approach"] == "campaign"):
            ratio = row["wall"] / ideal
            star = row["wall"] / (args.latency + row["probe_max"])
            cpu = row["cpu_self"] + row["cpu_pods"]
            floor = cpu / (os.cpu_count() or 1)
            complete = row["ok"] == target
            verdict = "PASS" if ratio <= 2 and complete else "FAIL"
            print(
                f"  N=200 par {row['max_parallel']:>3}: {row['wall']:.1f}s vs ideal {ideal:.2f}s = {ratio:.2f}x "
                f"(probe_campaign.py's ratio {star:.2f}x), {row['ok']}/{target} ok, {cpu:.0f} CPU-s used "
                f"(>= {floor:.0f}s on {os.cpu_count()} cores)  "
                f"200 workloads within 2x the ideal on {os.cpu_count()} cores: {verdict}"
            )
    else:
        print("  200 workloads within 2x the ideal: not measured (200 not in --sizes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=2.0, help="injected pod start latency, seconds")
    parser.add_argument("--sizes", default="1,10,50,200", help="comma-separated workload counts")
    parser.add_argument(
        "--max-parallel",
        default="32",
        type=lambda s: [int(x) for x in s.split(",")],
        help="comma-separated Campaign.max_parallel values to measure (default 32, the plugin's default)",
    )
    parser.add_argument("--cookbook-full", type=int, default=10, help="run the cookbook fully up to this many")
    parser.add_argument("--cookbook-sample", type=int, default=5, help="above that, workloads measured")
    parser.add_argument(
        "--node-groups",
        action="store_true",
        help="campaign targets as a pytest run of the suites has them: each workload plus one probe pinned to "
        "each of the profile's probe.nodeGroups (default: the workloads only, as bench/probe_campaign.py)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
