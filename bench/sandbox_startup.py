"""How long the embedded sandbox takes from start() to ready, and to stop.

python bench/sandbox_startup.py [--runs 5] [--profile demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.runtime import Sandbox

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args()
    loaded = load_profile(args.profile, REPO)
    starts, stops = [], []
    for _ in range(args.runs):
        sandbox = Sandbox(loaded.profile)
        t0 = time.monotonic()
        sandbox.start()
        starts.append(time.monotonic() - t0)
        t0 = time.monotonic()
        sandbox.stop()
        stops.append(time.monotonic() - t0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"profile {loaded.name}: {len(loaded.profile.workloads)} workloads, {args.runs} runs")
    print(f"start to ready: median {statistics.median(starts):.2f}s, max {max(starts):.2f}s")
    print(f"stop:           median {statistics.median(stops):.2f}s, max {max(stops):.2f}s")


if __name__ == "__main__":
    main()
