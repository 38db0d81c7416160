"""pytest-xdist support: the scheduler, and which workloads each worker owns (dealt once, on the controller).

Registered by the plugin in ``pytest_configure``. Under ``-n N`` (``--dist load``) the controller deals
the run's workloads to the workers from the profiles themselves (no collection needed), tells each
worker its own through ``workerinput``, and its scheduler sends each worker exactly the tests of the
workloads it owns (pytest_eksid.grouping). A worker plans probe pods only for the workloads it owns.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.fixtures import SETTINGS_KEY
from pytest_eksid.grouping import owners, worker_index
from pytest_eksid.settings import Settings

DIST_WORKERINPUT = "eksid_dist"  # the controller's --dist, which workers do not see in their own options
OWNED_WORKERINPUT = "eksid_owned"  # the ``<profile>/<workload>`` keys the controller dealt to this worker


def workload_keys(settings: Settings) -> dict[str, list[str]]:
    """Every profile's workload names, as the scheduler matches them in node ids."""
    return {p.name: [w.name for w in p.profile.workloads] for p in settings.loaded_all}


def _deal(settings: Settings, workers: int) -> dict[str, int]:
    return owners(
        (f"{profile}/{name}" for profile, names in workload_keys(settings).items() for name in names), workers
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist: ``-n N`` puts each workload on one worker, ``--dist loadgroup`` each cluster
    (see pytest_eksid.grouping)."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.profiles:
        return None
    from pytest_eksid.grouping import ClusterGroupScheduling, WorkloadScheduling

    if config.getvalue("dist") == "load":
        return WorkloadScheduling(
            config, log, workloads=workload_keys(settings), owner=lambda count: _deal(settings, count)
        )
    if config.getvalue("dist") == "loadgroup":
        return ClusterGroupScheduling(config, log, profiles=[p.name for p in settings.loaded_all])
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each worker how the controller distributes and, under ``--dist load``, which workloads it owns."""
    config: pytest.Config = node.config
    dist = config.getvalue("dist")
    node.workerinput[DIST_WORKERINPUT] = dist
    settings = config.stash.get(SETTINGS_KEY, None)
    if dist != "load" or settings is None or not settings.profiles:
        return
    index = worker_index(str(node.workerinput.get("workerid", "")))
    owner = _deal(settings, int(node.workerinput.get("workercount", 1)))
    # A replacement worker (after a crash) owns nothing up front: it probes what it is sent, on demand.
    node.workerinput[OWNED_WORKERINPUT] = sorted(key for key, i in owner.items() if i == index)


def owned_workloads(config: pytest.Config) -> frozenset[str] | None:
    """On a worker of ``-n N`` (``--dist load``): the ``<profile>/<workload>`` keys the controller dealt
    it; None anywhere else (every workload is this process's)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or workerinput.get(DIST_WORKERINPUT) != "load":
        return None
    owned = workerinput.get(OWNED_WORKERINPUT)
    return frozenset(str(key) for key in owned) if isinstance(owned, list) else None
