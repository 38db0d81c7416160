"""The run's cost, as data: requests per cluster, the probes' own time, each process's CPU and peak memory.

Plain Python, no pytest. The session engine records its clients' request counts and its probes' own run
times here when it closes; under pytest-xdist each worker sends its :class:`RunStats` to the controller
(``workeroutput``), which merges them (requests summed, processes side by side). The end of the run prints
the request totals (``eksid: kubernetes calls: N``) and ``--eksid-stats PATH`` writes :meth:`RunStats.document`
as JSON for a machine (docs/reports.md).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS: tuple[str, ...] = ("kubernetes", "aws")
STATS_VERSION = 1  # the JSON document's layout; raised when a field changes meaning


def process_usage() -> dict[str, float]:
    """This process's CPU seconds (user + system, all its threads: whatever ran in it) and its peak resident
    memory (``ru_maxrss``: KiB on Linux, bytes on macOS), in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3), "peak_rss_mib": round(peak, 1)}


def _service(call: str) -> str:
    """The AWS service of an ``aws.Aws.calls`` key (``iam:GetRole``, ``sts:GetCallerIdentity (a probe's proof)``)."""
    return call.split(":", 1)[0]


@dataclass
class RunStats:
    """Requests per cluster (by profile name) and per client method or AWS operation; each probe's own run
    time (``seconds.total`` of its result) per cluster; CPU and peak memory per process (``main`` without
    xdist, else ``controller`` and each worker's id)."""

    calls: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)  # profile -> kind -> name -> n
    probe_seconds: dict[str, list[float]] = field(default_factory=dict)  # profile -> each probe's own time
    processes: dict[str, dict[str, float]] = field(default_factory=dict)  # process id -> process_usage()

    def add_calls(self, profile: str, kind: str, counts: Mapping[str, int]) -> None:
        mine = self.calls.setdefault(profile, {}).setdefault(kind, Counter())
        mine.update({str(k): int(v) for k, v in counts.items()})

    def add_probes(self, profile: str, seconds: Iterable[float]) -> None:
        self.probe_seconds.setdefault(profile, []).extend(float(s) for s in seconds)

    def add_process(self, name: str, usage: Mapping[str, float] | None = None) -> None:
        self.processes[name] = dict(usage if usage is not None else process_usage())

    def as_dict(self) -> dict[str, Any]:
        """What a worker sends to the controller (plain JSON-able data: execnet carries it)."""
        return {
            "calls": {p: {k: dict(c) for k, c in kinds.items()} for p, kinds in self.calls.items()},
            "probe_seconds": {p: list(s) for p, s in self.probe_seconds.items()},
            "processes": {n: dict(u) for n, u in self.processes.items()},
        }

    def merge(self, data: Mapping[str, Any]) -> None:
        """Add a worker's stats: its requests and probes to the run's, its processes beside the others."""
        for profile, kinds in dict(data.get("calls") or {}).items():
            for kind, counts in dict(kinds or {}).items():
                self.add_calls(str(profile), str(kind), dict(counts or {}))
        for profile, seconds in dict(data.get("probe_seconds") or {}).items():
            self.add_probes(str(profile), list(seconds or []))
        for name, usage in dict(data.get("processes") or {}).items():
            self.processes[str(name)] = {str(k): float(v) for k, v in dict(usage or {}).items()}

    def lines(self, profiles: Sequence[str], *, verbose: bool) -> list[str]:
        """The end of the run's request lines, per cluster: totals, and with ``verbose`` each method's count."""
        out = []
        for profile in profiles:
            prefix = "eksid: " if len(profiles) == 1 else f"eksid: {profile}: "
            for kind in KINDS:
                counts = self.calls.get(profile, {}).get(kind)
                if not counts:
                    continue
                listed = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                detail = f" ({listed})" if verbose else " (-v lists them)"
                out.append(f"{prefix}{kind} calls: {sum(counts.values())}{detail}")
        return out

    def document(self, profiles: Sequence[str]) -> dict[str, Any]:
        """The ``--eksid-stats`` file: per cluster the requests (total, by method or operation, AWS by service
        too) and the probes' own time; per process CPU seconds and peak RSS; and the run's totals."""
        clusters: dict[str, Any] = {}
        for profile in profiles:
            kinds = self.calls.get(profile, {})
            entry: dict[str, Any] = {}
            for kind in KINDS:
                counts = kinds.get(kind, Counter())
                entry[kind] = {"total": sum(counts.values()), "calls": dict(sorted(counts.items()))}
            services: Counter[str] = Counter()
            for call, n in kinds.get("aws", Counter()).items():
                services[_service(call)] += n
            entry["aws"]["services"] = dict(sorted(services.items()))
            seconds = sorted(self.probe_seconds.get(profile, []))
            entry["probes"] = {
                "count": len(seconds),
                "seconds_median": round(statistics.median(seconds), 3) if seconds else None,
                "seconds_max": round(seconds[-1], 3) if seconds else None,
            }
            clusters[profile] = entry
        processes = dict(sorted(self.processes.items()))
        return {
            "version": STATS_VERSION,
            "clusters": clusters,
            "processes": processes,
            "totals": {
                "kubernetes": sum(c["kubernetes"]["total"] for c in clusters.values()),
                "aws": sum(c["aws"]["total"] for c in clusters.values()),
                "cpu_seconds": round(sum(p.get("cpu_seconds", 0.0) for p in processes.values()), 3),
                # Each process's own peak, added: an upper bound of the run's (the peaks need not coincide).
                "peak_rss_mib_sum": round(sum(p.get("peak_rss_mib", 0.0) for p in processes.values()), 1),
            },
        }


def write_document(path: Path, document: Mapping[str, Any]) -> None:
    """Write the stats as JSON, whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", "utf-8")
    partial.replace(path)
