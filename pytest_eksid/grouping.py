"""``--dist loadgroup``: one cluster's tests (and so its probe pods and clients) on one worker.

The plugin marks every workload test ``xdist_group(<profile>)``. pytest-xdist 3.8 carries that
group to its scheduler by appending ``@<group>`` to node ids, which no longer takes effect on
pytest 9.2 (structured node ids; pytest-xdist issue #1386): the run is then spread test by test,
silently. This scheduler reads the group from what the node id already says — the parameter id
``<profile>/<workload>...`` — and defers to pytest-xdist wherever an ``@<group>`` suffix is present.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from xdist.scheduler import LoadGroupScheduling


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
