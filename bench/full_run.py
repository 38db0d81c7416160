"""Full ``pytest --profile`` runs of the suites at N workloads, on a real cluster's terms (issue #15).

For each N (``--sizes``) the bench starts ONE embedded sandbox on its own, in a process of its own
(``python -m pytest_eksid.sandbox --connection-file``), holding N workloads, and runs the suites against it
as against a live cluster: ``pytest suites --profile <live copy> -p no:randomly [-n W]`` in a subprocess,
with the live provider (no ``sandbox:`` section in that copy, the kubeconfig and AWS environment the sandbox
hands out). So the runner's process tree is the runner's only: the emulated API server, AWS and the pods'
processes are the sandbox's, and the sandbox's start is outside the wall time, as a real cluster is
already up.

The N workloads alternate the demo profile's two (Pod Identity ``invoice-exporter``, IRSA
``billing-worker``), each copy with its own ServiceAccount and, unless ``--shared-roles``, its own IAM role
(a copy of the demo's policy): a role per workload, as real clusters have them, so that IAM reads grow with
N. One probe pod per workload: ``probe.nodeGroups`` is the demo's first group only, unless ``--node-groups``
keeps both (then each workload also gets an IMDS-only probe on the second group, 4 more Kubernetes requests
each, as a real run of the demo launches). ``sandbox.workloadPods`` is off unless ``--workload-pods``.

The benchmark setting (sandbox keys of the generated profile; the latency/throttling and hollow-node
helpers of #15 add them to the sandbox, and this bench only sets them behind flags):

- ``--pod-start S`` -> ``sandbox.podStartSeconds`` (default 2);
- ``--latency`` -> ``sandbox.latency`` (per request, uniform ranges in seconds: Kubernetes 5-20 ms, IAM
  50-100 ms, STS/EKS 20-50 ms, other services 10-30 ms, issue #15's figures; ``--latency-json`` overrides);
- ``--throttle-iam RATE[:BURST]`` -> ``sandbox.throttle.iam`` (a token bucket per account);
- ``--hollow`` -> ``sandbox.hollowNodes: true`` (probe pods produce a real probe's result without running a
  process per pod).

Per N it prints one row: wall time; the ideal = pod start + one real probe's own time (the slowest probe of
a separate N=1 run with real probes: its result's ``seconds.total``, from ``--eksid-stats``) + the IAM reads
the rate limit makes unavoidable (the minimum reads for the profile's distinct roles, over the throttle
rate, after the burst); wall / ideal; the runner's CPU per test item (user + system of the pytest process
and its children: xdist workers, the kubeconfig's token plugin); Kubernetes and AWS requests per workload
(the run's own counts, ``--eksid-stats``; AWS by service below the table); the runner's peak RSS (largest
process, and all processes' peaks added); JUnit and inventory sizes; and the outcomes. With ``--cookbook N``
(default 200) it also runs bench/scale.py's cookbook on the same sandbox after that N's run (a sample of
``--cookbook-sample`` workloads, extrapolated linearly) and prints the speed-up. Each N runs with the product's
default way of reading IAM (role by role, or in bulk from ``--eksid-iam-bulk`` roles); ``--role-by-role SIZES``
runs those N once more role by role (rows ``<N>r``), and the unavoidable IAM reads follow the way each row read.
Beside the ideal each row prints two floors the ideal leaves out: the probe pods' waves (ceil(N / max parallel)
pod starts and probes) and the runner's and emulated cluster's CPU over the cores. It prints; it asserts nothing.

    python bench/full_run.py --sizes 1,100,200,1000 --latency --throttle-iam 20 --hollow [-n 2]
    python bench/full_run.py --sizes 1,20            # today's sandbox: real probes, pod start latency only

Targets (issue #15), each marked met or not met: wall <= 2x the ideal at N=1000; <= 4 Kubernetes requests
per workload + O(1) per run (the growth between the two largest N, per added workload); runner CPU <= 3 ms
per test item at N=1000; >= 100x faster than the cookbook at N=200.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from scale import log, memory_mb, run_cookbook  # noqa: E402  (the cookbook is shared, not copied)

from pytest_eksid.settings import DEFAULT_MAX_PARALLEL as LIVE_MAX_PARALLEL  # noqa: E402

# Issue #15's suggested latencies, seconds per request (uniform range); the latency helper documents sources.
DEFAULT_LATENCY: dict[str, list[float]] = {
    "kubernetes": [0.005, 0.020],
    "iam": [0.05, 0.1],
    "sts": [0.02, 0.05],
    "eks": [0.02, 0.05],
    "eks-auth": [0.02, 0.05],
    "default": [0.01, 0.03],
}
# Per distinct role the runner needs GetRole, ListRolePolicies, ListAttachedRolePolicies and one GetRolePolicy
# per inline policy (the generated roles have one, none attached); per run ListRoles (one page per 1,000 roles),
# ListOpenIDConnectProviders + one GetOpenIDConnectProvider; per legacy IAM user ListAccessKeys
# (docs/performance.md "What the runner asks"). Read in bulk (--eksid-iam-bulk), the roles and their policies
# are instead one GetAccountAuthorizationDetails request per IAM_PAGE roles and customer managed policies.
IAM_READS_PER_ROLE = 4
IAM_PAGE = 1000
TARGET_RATIO, TARGET_K8S_PER_WORKLOAD, TARGET_CPU_MS, TARGET_SPEEDUP = 2.0, 4.0, 3.0, 100.0


# --- the profile ------------------------------------------------------------------------------


def profile_data(n: int, args: argparse.Namespace, hollow: bool) -> dict[str, Any]:
    """The demo profile with N workloads (alternating its two), with the benchmark setting in its sandbox section."""
    data: dict[str, Any] = yaml.safe_load((REPO / "profiles" / "demo.yaml").read_text())
    bases = data["workloads"]
    roles = {r["name"]: r for r in data["sandbox"]["roles"]}
    workloads = []
    for i in range(n):
        base = bases[i % len(bases)]
        w = copy.deepcopy(base)
        w["name"] = f"{base['name']}-{i:04d}"
        w["serviceAccount"] = f"{base['serviceAccount']}-{i:04d}"
        if not args.shared_roles:
            prefix, _, role = base["roleArn"].rpartition("/")
            own = f"{role}-{i:04d}"
            w["roleArn"] = f"{prefix}/{own}"
            data["sandbox"]["roles"].append(dict(copy.deepcopy(roles[role]), name=own))
        workloads.append(w)
    data["workloads"] = workloads
    if not args.node_groups:
        data["probe"]["nodeGroups"] = data["probe"]["nodeGroups"][:1]
    sandbox = data["sandbox"]
    sandbox["podStartSeconds"] = args.pod_start
    sandbox["warmPython"] = False  # every probe process starts cold, imports included, as in a real pod
    sandbox["workloadPods"] = bool(args.workload_pods)
    if args.latency:
        sandbox["latency"] = json.loads(args.latency_json) if args.latency_json else DEFAULT_LATENCY
    if args.throttle_iam:
        rate, burst = args.throttle_iam
        sandbox["throttle"] = {"iam": {"rate": rate, "burst": max(1, int(burst))}}  # the profile takes whole tokens
    if hollow:
        sandbox["hollowNodes"] = True
    return data


def minimum_iam_reads(data: dict[str, Any], bulk: bool) -> int:
    """The IAM reads no runner can avoid for this profile, read role by role or in bulk (see IAM_READS_PER_ROLE).
    In bulk, IAM would answer the account's roles in pages of IAM_PAGE (the sandbox's moto answers one page; the
    bench's accounts have no customer managed policies, which would share the pages)."""
    roles = {w["roleArn"] for w in data["workloads"]}
    users = {w["legacyIamUser"] for w in data["workloads"] if w.get("legacyIamUser")}
    listed = max(1, math.ceil(len(data["sandbox"]["roles"]) / IAM_PAGE))
    per_roles = listed if bulk else IAM_READS_PER_ROLE * len(roles)
    return per_roles + listed + 2 + len(users)


# --- one run ----------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (/proc/<pid>/stat utime+stime+cutime+cstime)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class StandaloneSandbox:
    """``python -m pytest_eksid.sandbox`` in a process of its own; stops when its stdin closes."""

    def __init__(self, profile: Path, workdir: Path) -> None:
        self.connection_file = workdir / "connection.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest_eksid.sandbox",
                "--profile",
                str(profile),
                "--rootdir",
                str(REPO),
                "--connection-file",
                str(self.connection_file),
            ],
            stdin=subprocess.PIPE,
            cwd=REPO,
        )
        deadline = time.monotonic() + 600
        while not self.connection_file.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"the sandbox for {profile} exited with {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the sandbox for {profile} was not ready within 600s")
            time.sleep(0.2)
        self.connection: dict[str, Any] = json.loads(self.connection_file.read_text())

    def cpu(self) -> float:
        return _proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def live_profile(data: dict[str, Any], connection: dict[str, Any]) -> dict[str, Any]:
    """The same profile for the live provider: no sandbox section, the sandbox's kubeconfig and context."""
    live = copy.deepcopy(data)
    del live["sandbox"]
    live["cluster"]["kubeconfig"] = connection["kubeconfig"]
    live["cluster"]["kubeContext"] = connection["context"]
    return live


def run_env(connection: dict[str, Any]) -> dict[str, str]:
    """What a user's shell would hand to pytest (no pytest or eksid variables of ours), plus the sandbox's AWS side."""
    # Bytecode caches on, as on a user's machine (this machine's image turns them off): else every run compiles
    # the plugin's modules and rewrites their asserts, a constant that is no part of the runner's cost per item.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "EKSID_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    return {**inherited, **{str(k): str(v) for k, v in connection["env"].items() if v is not None}}


def junit_outcomes(path: Path) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    if not path.exists():
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for tag, name in (("skipped", "skipped"), ("failure", "failed"), ("error", "error")):
            if case.find(tag) is not None:
                outcome = name
        outcomes[outcome] += 1
    return outcomes


def run_suites(
    n: int,
    args: argparse.Namespace,
    workdir: Path,
    *,
    hollow: bool,
    cookbook: bool,
    role_by_role: bool = False,
    max_parallel: int | None = None,
) -> dict[str, Any]:
    """Start the sandbox, run the suites against it, optionally the cookbook; the row's figures. ``role_by_role``:
    IAM read role by role (--eksid-iam-bulk=0) whatever the number of roles; ``max_parallel``: this row's
    --eksid-max-parallel instead of --max-parallel's (or the live provider's default)."""
    max_parallel = max_parallel or args.max_parallel
    data = profile_data(n, args, hollow)
    sandbox_profile = workdir / f"sandbox-{n}.yaml"
    sandbox_profile.write_text(yaml.safe_dump(data))
    t0 = time.monotonic()
    sandbox = StandaloneSandbox(sandbox_profile, workdir)
    log(f"N={n}: sandbox up in {time.monotonic() - t0:.1f}s{' (hollow nodes)' if hollow else ''}")
    try:
        live = workdir / f"live-{n}.yaml"
        live.write_text(yaml.safe_dump(live_profile(data, sandbox.connection)))
        junit, inventory, stats = workdir / "junit.xml", workdir / "inventory.json", workdir / "stats.json"
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            f"--profile={live}",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            f"--eksid-inventory={inventory}",
            f"--eksid-stats={stats}",
            *(["-n", str(args.workers)] if args.workers else []),
            *([f"--eksid-max-parallel={max_parallel}"] if max_parallel else []),
            *(["--eksid-iam-bulk=0"] if role_by_role else []),
        ]
        output = workdir / "pytest-output.txt"
        sandbox_cpu0 = sandbox.cpu()
        log(f"N={n}: {' '.join(argv[2:])}")
        with output.open("wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, cwd=REPO, env=run_env(sandbox.connection), stdout=out, stderr=out)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sandbox_cpu = sandbox.cpu() - sandbox_cpu0
        text = output.read_text("utf-8", "replace")
        if not stats.exists():
            raise SystemExit(f"N={n}: the run wrote no stats (exit {proc.returncode}):\n{text[-3000:]}")
        document = json.loads(stats.read_text())
        outcomes = junit_outcomes(junit)
        bulk = any("iam:GetAccountAuthorizationDetails" in c["aws"]["calls"] for c in document["clusters"].values())
        wide = max_parallel != args.max_parallel
        row: dict[str, Any] = {
            "n": n,
            "label": f"{n}{'' if bulk or n == 1 else 'r'}{f'p{max_parallel}' if wide else ''}",
            "max_parallel": max_parallel or LIVE_MAX_PARALLEL,
            "iam": "bulk" if bulk else "role by role",
            "hollow": hollow,
            "exit": proc.returncode,
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "maxrss_mib": usage.ru_maxrss / 1024,
            "sandbox_cpu": sandbox_cpu,
            "items": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "stats": document,
            "junit_bytes": junit.stat().st_size if junit.exists() else 0,
            "inventory_bytes": inventory.stat().st_size if inventory.exists() else 0,
            "min_iam_reads": minimum_iam_reads(data, bulk),
            "tail": text[-1500:] if proc.returncode not in (0, 1) else "",
        }
        log(f"N={n}: {wall:.1f}s, exit {proc.returncode}, {dict(outcomes)}")
        if cookbook:
            row["cookbook"] = cookbook_row(n, args, sandbox_profile, sandbox.connection)
    finally:
        sandbox.stop()
    hollow_file = workdir / "hollow.json"  # the sandbox writes it at its stop, with hollow nodes on
    row["hollow_pods"] = json.loads(hollow_file.read_text()) if hollow_file.exists() else None
    return row


def cookbook_row(n: int, args: argparse.Namespace, profile: Path, connection: dict[str, Any]) -> dict[str, Any]:
    """bench/scale.py's cookbook on the same sandbox, for a sample of the run's workloads, extrapolated to N."""
    from pytest_eksid.kube import Kube, KubeTarget
    from pytest_eksid.profile import load_profile

    loaded = load_profile(str(profile), REPO)
    sample = list(loaded.profile.workloads)[: args.cookbook_sample]
    kube = Kube(KubeTarget(connection["kubeconfig"], connection["context"]))
    try:
        log(f"N={n}: cookbook on {len(sample)} workload(s)")
        wall, good, pods, notes = run_cookbook(kube, loaded.profile, sample, f"N={n}: ")
    finally:
        kube.close()
    return {
        "measured": len(sample),
        "wall": wall * n / len(sample),
        "measured_wall": wall,
        "ok": good,
        "pods": pods,
        "notes": notes[:3],
    }


# --- the table --------------------------------------------------------------------------------


def _cluster(row: dict[str, Any]) -> dict[str, Any]:
    clusters = row["stats"]["clusters"]
    return dict(next(iter(clusters.values()))) if clusters else {}


def ideal_seconds(row: dict[str, Any], args: argparse.Namespace, probe_seconds: float) -> tuple[float, float]:
    """(the ideal, its rate-limited part): pod start + one real probe's own time + unavoidable IAM reads."""
    throttled = 0.0
    if args.throttle_iam:
        rate, burst = args.throttle_iam
        throttled = max(0, row["min_iam_reads"] - burst) / rate
    return args.pod_start + probe_seconds + throttled, throttled


def mark(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(rows: list[dict[str, Any]], calibration: dict[str, Any], args: argparse.Namespace) -> None:
    probes = _cluster(calibration).get("probes", {})
    probe_seconds = float(probes.get("seconds_max") or 0.0)
    print(
        f"one real probe's own time: {probe_seconds:.2f}s (the slowest of {probes.get('count', 0)} probe(s) of an "
        f"N=1 run with real probes; median {probes.get('seconds_median')})"
    )
    print()
    header = (
        f"{'N':>5} {'wall s':>8} {'ideal s':>8} {'xideal':>7} {'items':>6} {'cpu ms/it':>9} {'self':>6} {'k8s/wl':>7} "
        f"{'aws/wl':>7} {'rss MiB':>8} {'rss sum':>8} {'junit KiB':>9} {'inv KiB':>8} {'sbx cpu s':>9}  outcomes"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cluster = _cluster(row)
        n = row["n"]
        ideal, _ = ideal_seconds(row, args, probe_seconds)
        processes = row["stats"]["processes"].values()
        rss = max((p.get("peak_rss_mib", 0.0) for p in processes), default=0.0)
        outcomes = ", ".join(f"{v} {k}" for k, v in sorted(row["outcomes"].items()))
        cpu_ms = 1000 * row["cpu"] / row["items"] if row["items"] else float("nan")
        self_ms = 1000 * row["stats"]["totals"]["cpu_seconds"] / row["items"] if row["items"] else float("nan")
        print(
            f"{row['label']:>5} {row['wall']:>8.1f} {ideal:>8.2f} {row['wall'] / ideal:>7.2f} {row['items']:>6} "
            f"{cpu_ms:>9.2f} {self_ms:>6.2f} "
            f"{cluster['kubernetes']['total'] / n:>7.2f} {cluster['aws']['total'] / n:>7.2f} {rss:>8.0f} "
            f"{row['stats']['totals']['peak_rss_mib_sum']:>8.0f} {row['junit_bytes'] / 1024:>9.0f} "
            f"{row['inventory_bytes'] / 1024:>8.0f} {row['sandbox_cpu']:>9.1f}  {outcomes} (exit {row['exit']})"
        )
    print()
    print("wall s: the pytest process, start to exit (collection, every suite test, the reports); the sandbox's start")
    print("        is outside it. ideal s: pod start + one real probe's own time + unavoidable IAM reads over the")
    print("        throttle rate (below). cpu ms/it: user + system CPU of the pytest process and its children (xdist")
    print(
        "        workers, the kubeconfig's token plugin) per test item (JUnit test cases); self: the pytest processes'"
    )
    print("        own CPU at their session's end (--eksid-stats), per item. k8s/wl, aws/wl: the run's")
    print(
        "        requests (--eksid-stats; every worker's, summed) per workload. rss MiB: the largest runner process's"
    )
    print(
        "        peak RSS; rss sum: every runner process's peak, added. sbx cpu s: CPU of the sandbox process and its"
    )
    print("        pods meanwhile (the emulated cluster, not the runner).")
    for row in rows:
        cluster = _cluster(row)
        n = row["n"]
        _, throttled = ideal_seconds(row, args, probe_seconds)
        services = ", ".join(f"{s} {c / n:.2f}" for s, c in cluster["aws"]["services"].items())
        per_process = ", ".join(
            f"{name} {p.get('cpu_seconds', 0.0):.1f}s/{p.get('peak_rss_mib', 0.0):.0f}MiB"
            for name, p in row["stats"]["processes"].items()
        )
        in_flight = row["max_parallel"]
        waves = math.ceil(n / in_flight)
        print(f"  N={row['label']}: IAM read {row['iam']}; aws per workload by service: {services}")
        print(
            f"        iam requests {cluster['aws']['services'].get('iam', 0)}, unavoidable {row['min_iam_reads']} "
            f"({throttled:.2f}s at the throttle rate); probes {cluster['probes']['count']}, own time median "
            f"{cluster['probes']['seconds_median']}s max {cluster['probes']['seconds_max']}s; processes: {per_process}"
        )
        print(
            f"        floors beside the ideal: {waves} wave(s) of at most {in_flight} probe pods in flight, each a pod "
            f"start and a probe's own time: {waves * (args.pod_start + probe_seconds):.1f}s; "
            f"the runner's and the emulated cluster's CPU over {os.cpu_count()} cores: "
            f"{(row['cpu'] + row['sandbox_cpu']) / (os.cpu_count() or 1):.1f}s"
        )
        if row.get("hollow_pods"):
            pods = row["hollow_pods"]
            print(
                f"        hollow nodes: {pods['real_runs']} probe pod(s) ran the real probe (one per template, and"
                f" fallbacks), {pods['adapted']} ran no process (their results adapted per pod)"
            )
        if row["tail"]:
            print("        the run ended abnormally; its output ends:\n" + row["tail"])
    print()
    print("targets (issue #15):")
    main_rows = [r for r in rows if not r.get("extra")]
    by_n = {r["n"]: r for r in main_rows}
    tops = [r for r in rows if r["n"] == 1000 and r["max_parallel"] == (args.max_parallel or LIVE_MAX_PARALLEL)]
    for top in tops:
        ideal, _ = ideal_seconds(top, args, probe_seconds)
        setting = (
            "hollow, latency, IAM throttling"
            if (args.hollow and args.latency and args.throttle_iam)
            else ("NOT the target's setting: needs --hollow --latency --throttle-iam")
        )
        print(
            f"  N=1000 wall <= {TARGET_RATIO:g}x ideal, IAM read {top['iam']} (row {top['label']}): "
            f"{top['wall']:.1f}s / {ideal:.2f}s = {top['wall'] / ideal:.2f}x: "
            f"{mark(top['wall'] <= TARGET_RATIO * ideal)} ({setting})"
        )
        cpu_ms = 1000 * top["cpu"] / top["items"] if top["items"] else float("nan")
        print(
            f"  N=1000 runner CPU <= {TARGET_CPU_MS:g} ms per test item, IAM read {top['iam']} (row {top['label']}): "
            f"{cpu_ms:.2f} ms: {mark(cpu_ms <= TARGET_CPU_MS)}"
        )
    if not tops:
        print("  N=1000 wall and CPU per item: not measured (1000 not in --sizes)")
    sizes = sorted(by_n)
    if len(sizes) >= 2:
        a, b = by_n[sizes[-2]], by_n[sizes[-1]]

        # The runner asks for 60 s watches (probe/pod.py WATCH_SECONDS as timeoutSeconds, which kube-apiserver
        # honours, here and on EKS) and sets each up again: one request per minute of the run, not per workload.
        # The slope below leaves them out; the line shows their count and the slope with them.
        def requests(row: dict[str, Any]) -> tuple[int, int]:
            calls = _cluster(row)["kubernetes"]["calls"]
            watches = sum(n for method, n in calls.items() if method.startswith("watch "))
            return _cluster(row)["kubernetes"]["total"] - watches, watches

        (ra, wa), (rb, watches) = requests(a), requests(b)
        slope = (rb - ra) / (b["n"] - a["n"])
        with_watches = (rb + watches - ra - wa) / (b["n"] - a["n"])
        constant = rb - slope * b["n"]
        print(
            f"  Kubernetes requests <= {TARGET_K8S_PER_WORKLOAD:g} per workload + O(1): {slope:.2f} per added "
            f"workload (N={a['n']}..{b['n']}) + {constant:.0f}, plus {watches} watch(es) in the N={b['n']} run, "
            f"one per minute of it ({with_watches:.4f} per added workload with them): "
            f"{mark(slope <= TARGET_K8S_PER_WORKLOAD)}"
        )
    else:
        print("  Kubernetes requests per workload: needs two sizes")
    book_row = next((r for r in rows if "cookbook" in r), None)
    if book_row is not None:
        book = book_row["cookbook"]
        speedup = book["wall"] / book_row["wall"]
        complete = book["ok"] == book["measured"]
        print(
            f"  N={book_row['n']} >= {TARGET_SPEEDUP:g}x faster than the cookbook: cookbook ~{book['wall']:.0f}s "
            f"(extrapolated from {book['measured']} workloads, {book['measured_wall']:.1f}s measured, {book['ok']} ok) "
            f"/ {book_row['wall']:.1f}s = {speedup:.1f}x: "
            f"{mark(speedup >= TARGET_SPEEDUP and complete) if book_row['n'] == 200 else 'informational (not N=200)'}"
        )
        for note in book["notes"]:
            print(f"    cookbook: {note}")
        for wide in (r for r in rows if r["n"] == book_row["n"] and r["max_parallel"] != book_row["max_parallel"]):
            print(
                f"  informational, not the target's setting: N={wide['n']} with --eksid-max-parallel "
                f"{wide['max_parallel']} (row {wide['label']}): {wide['wall']:.1f}s, "
                f"{book['wall'] / wide['wall']:.1f}x faster than the same cookbook"
            )
    else:
        print("  the cookbook comparison: not run (--cookbook names no N of --sizes)")


def parse_throttle(value: str) -> tuple[float, float]:
    rate, _, burst = value.partition(":")
    return float(rate), float(burst or rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,200,1000", help="comma-separated workload counts")
    parser.add_argument("-n", "--workers", type=int, default=0, help="pytest-xdist workers (-n); 0: none")
    parser.add_argument("--max-parallel", type=int, help="--eksid-max-parallel (default: the live provider's)")
    parser.add_argument("--pod-start", type=float, default=2.0, help="sandbox.podStartSeconds (default 2)")
    parser.add_argument("--latency", action="store_true", help="inject per-request latency (sandbox.latency)")
    parser.add_argument("--latency-json", help="sandbox.latency as JSON, instead of issue #15's figures")
    parser.add_argument(
        "--throttle-iam", type=parse_throttle, metavar="RATE[:BURST]", help="throttle IAM (sandbox.throttle.iam)"
    )
    parser.add_argument("--hollow", action="store_true", help="hollow nodes (sandbox.hollowNodes) but for N=1's probe")
    parser.add_argument("--shared-roles", action="store_true", help="the demo's two roles for all workloads")
    parser.add_argument("--workload-pods", action="store_true", help="run each workload's own pod too")
    parser.add_argument("--cookbook", type=int, default=200, help="run the cookbook after this N's run (0: never)")
    parser.add_argument("--cookbook-sample", type=int, default=5, help="cookbook workloads measured")
    parser.add_argument(
        "--node-groups", action="store_true", help="keep the demo's two probe.nodeGroups (an IMDS-only probe each)"
    )
    parser.add_argument(
        "--role-by-role",
        default="",
        help="comma-separated workload counts run once more with IAM read role by role (--eksid-iam-bulk=0)",
    )
    parser.add_argument(
        "--in-flight",
        default="",
        metavar="N:MAX,...",
        help="run N once more with --eksid-max-parallel MAX (rows <N>p<MAX>): the runner without the waves' limit",
    )
    parser.add_argument("--keep", type=Path, help="keep each run's profiles, output, JUnit, inventory, stats here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {memory_mb()}, Python {platform.python_version()}")
    throttle = f"{args.throttle_iam[0]:g}/s burst {args.throttle_iam[1]:g}" if args.throttle_iam else "off"
    roles = "shared" if args.shared_roles else "one per workload"
    print(
        f"setting: pod start {args.pod_start:g}s; latency {'on' if args.latency else 'off'}; IAM throttle {throttle}; "
        f"hollow nodes {'on' if args.hollow else 'off'}; -n {args.workers}; roles {roles}"
    )
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eksid-full-run-") as tmp_dir:
        tmp = str(args.keep.resolve()) if args.keep else tmp_dir
        calibration: dict[str, Any] | None = None
        if args.hollow or 1 not in sizes:
            log("N=1 with real probes: the probe's own time")
            work = Path(tmp) / "calibration"
            work.mkdir(parents=True)
            calibration = run_suites(1, args, work, hollow=False, cookbook=False)
        for n in sizes:
            work = Path(tmp) / f"n{n}"
            work.mkdir(parents=True)
            rows.append(run_suites(n, args, work, hollow=args.hollow, cookbook=n == args.cookbook))
            if n == 1 and calibration is None:
                calibration = rows[-1]
        for n in [int(s) for s in args.role_by_role.split(",") if s]:
            work = Path(tmp) / f"n{n}-role-by-role"
            work.mkdir(parents=True)
            rows.append(run_suites(n, args, work, hollow=args.hollow, cookbook=False, role_by_role=True))
            rows[-1]["extra"] = True
        for pair in [p for p in args.in_flight.split(",") if p]:
            n, _, wide = pair.partition(":")
            work = Path(tmp) / f"n{n}-in-flight-{wide}"
            work.mkdir(parents=True)
            rows.append(run_suites(int(n), args, work, hollow=args.hollow, cookbook=False, max_parallel=int(wide)))
            rows[-1]["extra"] = True
    print("load average at end:   " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)")
    assert calibration is not None
    report(rows, calibration, args)


if __name__ == "__main__":
    main()
