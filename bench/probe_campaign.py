"""How long a probe campaign takes for N workloads, against one pod start.

Runs the embedded sandbox with an injected pod start latency and prints, per N: wall time,
wall / (latency + one probe's own run time) (the "ideal" ratio: 1.0 means perfectly parallel),
and the kubelet's peak of concurrently running probe processes.

    python bench/probe_campaign.py [--latency 2] [--sizes 1,20] [--max-parallel 16]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml

from pytest_eksid.kube import Kube, KubeTarget
from pytest_eksid.probe.pod import Campaign
from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.runtime import Sandbox

REPO = Path(__file__).resolve().parent.parent


def profile_with(n: int, latency: float, workdir: Path) -> Path:
    data = yaml.safe_load((REPO / "profiles" / "demo.yaml").read_text())
    base = data["workloads"][1]  # an IRSA workload
    data["workloads"] = [dict(copy.deepcopy(base), name=f"worker-{i:03d}") for i in range(n)]
    data["sandbox"]["podStartSeconds"] = latency
    data["sandbox"]["warmPython"] = False  # probe processes start cold, imports included, as in a real pod
    data["sandbox"]["workloadPods"] = False  # only probe pods count in the peak
    path = workdir / f"bench-{n}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure(n: int, latency: float, max_parallel: int, workdir: Path) -> tuple[float, float, int, int]:
    loaded = load_profile(str(profile_with(n, latency, workdir)), REPO)
    sandbox = Sandbox(loaded.profile)
    connection = sandbox.start()
    kube = Kube(KubeTarget(str(connection.kubeconfig), None))
    try:
        campaign = Campaign(kube=kube, profile=loaded.profile, max_parallel=max_parallel)
        t0 = time.monotonic()
        outcomes = campaign.run(loaded.profile.workloads)
        wall = time.monotonic() - t0
        ok = sum(1 for o in outcomes.values() if o.result is not None)
        own = max(float((o.result or {}).get("seconds", {}).get("total", 0.0)) for o in outcomes.values())
        campaign.cleanup()
        assert sandbox.kubelet is not None
        return wall, own, sandbox.kubelet.peak, ok
    finally:
        kube.close()
        sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=2.0, help="injected pod start latency, seconds")
    parser.add_argument("--sizes", default="1,20", help="comma-separated workload counts")
    parser.add_argument("--max-parallel", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"pod start latency {args.latency:.1f}s, max parallel {args.max_parallel}")
    print(f"{'workloads':>9} {'wall s':>8} {'probe s':>8} {'ideal s':>8} {'ratio':>6} {'peak':>5} {'ok':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            wall, own, peak, ok = measure(n, args.latency, args.max_parallel, Path(tmp))
            ideal = args.latency + own
            print(f"{n:>9} {wall:>8.2f} {own:>8.2f} {ideal:>8.2f} {wall / ideal:>6.2f} {peak:>5} {ok:>5}")


if __name__ == "__main__":
    main()
