"""pytest-xdist scheduling for workload tests.

``-n N`` (``--dist load``): each workload's tests — and so its probe pods — on one worker, fixed in
advance, so that every worker probes only its own workloads (:class:`WorkloadScheduling`). The
controller deals the workloads once, from the profiles (pytest_eksid.xdist_support, which tells each
worker its own through ``workerinput``); this scheduler reads a test's workload from its node id —
the only thing the controller receives of a worker's collection — and sends it to that owner.

``--dist loadgroup``: one cluster's tests (and so its probe pods and clients) on one worker.

The plugin marks every workload test ``xdist_group(<profile>)``. pytest-xdist 3.8 carries that
group to its scheduler by appending ``@<group>`` to node ids, which no longer takes effect on
pytest 9.2 (structured node ids; pytest-xdist issue #1386): the run is then spread test by test,
silently. This scheduler reads the group from what the node id already says — the parameter id
``<profile>/<workload>...`` — and defers to pytest-xdist wherever an ``@<group>`` suffix is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from xdist.scheduler import LoadGroupScheduling, LoadScopeScheduling


def cluster_group(nodeid: str, profiles: Iterable[str]) -> str | None:
    """The profile a workload test's node id names in its parameter id (``[<profile>/...``, or after
    another parameter's id and ``-``); None for any other test."""
    params = nodeid[nodeid.find("[") + 1 :] if "[" in nodeid else ""
    found = [
        (m.start(), -len(name), name)
        for name in set(profiles)
        for m in [re.search(rf"(?:^|-){re.escape(name)}/", params)]
        if m is not None
    ]
    return min(found)[2] if found else None  # the leftmost, and of two there the longer name


class ClusterGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]  # xdist is untyped
    def __init__(self, config: Any, log: Any = None, profiles: Iterable[str] = ()) -> None:
        super().__init__(config, log)
        self.profiles = frozenset(profiles)

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.rfind("@") > nodeid.rfind("]"):  # pytest-xdist's own suffix took effect
            return str(super()._split_scope(nodeid))
        group = cluster_group(nodeid, self.profiles)
        return f"eksid:{group}" if group is not None else str(super()._split_scope(nodeid))


def workload_scope(nodeid: str, workloads: Mapping[str, Iterable[str]]) -> str | None:
    """``<profile>/<workload>`` of a workload test's node id (its parameter id starts so, then ``]``,
    ``/`` (an action), ``@`` (a node group) or ``-`` (another parameter)); None for any other test."""
    profile = cluster_group(nodeid, workloads)
    if profile is None:
        return None
    params = nodeid[nodeid.find("[") + 1 :]
    found = re.search(rf"(?:^|-){re.escape(profile)}/", params)
    assert found is not None
    rest = params[found.end() :]
    names = [w for w in workloads[profile] if rest.startswith(w) and rest[len(w) : len(w) + 1] in ("]", "/", "@", "-")]
    return f"{profile}/{max(names, key=len)}" if names else None


def owners(scopes: Iterable[str], workers: int) -> dict[str, int]:
    """Which worker (by index) runs each scope: dealt in sorted order, so the same whatever order the
    scopes come in."""
    return {scope: i % workers for i, scope in enumerate(sorted(set(scopes)))}


def worker_index(worker_id: str) -> int | None:
    """``gw3`` -> 3."""
    return int(worker_id[2:]) if worker_id.startswith("gw") and worker_id[2:].isdigit() else None


class WorkloadScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
    """Every workload's tests on one worker, decided up front from the collection; other tests by
    module, spread the same way. Each worker gets all its tests at once."""

    def __init__(
        self,
        config: Any,
        log: Any = None,
        workloads: Mapping[str, Iterable[str]] | None = None,
        owner: Callable[[int], Mapping[str, int]] | None = None,
    ) -> None:
        super().__init__(config, log)
        self.workloads = {name: frozenset(names) for name, names in (workloads or {}).items()}
        # The controller's deal of ``<profile>/<workload>`` to worker indices, for a number of workers (the
        # workers were told theirs in workerinput); without one, the workloads collected are dealt here.
        self.owner = owner

    def _split_scope(self, nodeid: str) -> str:
        scope = workload_scope(nodeid, self.workloads)
        return f"eksid:{scope}" if scope is not None else str(super()._split_scope(nodeid))

    def schedule(self) -> None:
        if getattr(self, "collection", None) is not None:  # a replacement worker after a crash: xdist's way
            super().schedule()
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        collection: list[str] = list(next(iter(self.registered_collections.values())))
        self.collection = collection
        if not collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in collection:
            units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        nodes = list(self.nodes)
        count = int(nodes[0].workerinput.get("workercount", len(nodes)))
        by_index = {worker_index(str(n.gateway.id)): n for n in nodes}
        # The workload scopes go where the controller dealt them (the workers plan their probes from that
        # deal); the other tests' scopes are dealt separately.
        workload_units = [s.removeprefix("eksid:") for s in units if s.startswith("eksid:")]
        dealt = dict(self.owner(count)) if self.owner is not None else {}
        if any(s not in dealt for s in workload_units):
            dealt = owners(workload_units, count)
        owner = {f"eksid:{s}": dealt[s] for s in workload_units}
        owner |= owners((s for s in units if not s.startswith("eksid:")), count)
        for scope, unit in units.items():
            # The worker that planned this scope's probes; if it is gone, any (it probes on demand).
            node = by_index.get(owner[scope]) or nodes[owner[scope] % len(nodes)]
            self.assigned_work[node][scope] = unit
        position = {nodeid: i for i, nodeid in enumerate(collection)}
        for node in nodes:
            indices = [position[nodeid] for unit in self.assigned_work[node].values() for nodeid in unit]
            if indices:
                node.send_runtest_some(indices)
            node.shutdown()  # everything it will run has been sent
