"""The hooks of a discovery run (``--eksid-discover PATH``): no check runs; the cluster is read and a profile written.

Registered by the plugin only when the option is set. Discovery runs in place of the test loop, after
collection (nothing touches the cluster during configure or collection), through the same provider
hooks as the checks (a live cluster, or the embedded sandbox), and ends the run with exit code 0 once
the file is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_eksid import discover
from pytest_eksid.aws import AwsError
from pytest_eksid.engine import Engine, EngineError
from pytest_eksid.fixtures import INTERRUPTS_KEY, SETTINGS_KEY, _progress
from pytest_eksid.kube import KubeError
from pytest_eksid.profile import LoadedProfile

WRITTEN_KEY = pytest.StashKey[Path]()


def _output(config: pytest.Config) -> Path:
    setting = config.stash[SETTINGS_KEY].discover
    assert setting is not None
    path = Path(setting.value).expanduser()
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def configure(config: pytest.Config) -> None:
    """Check the discovery's input and output before anything runs; register the hooks below."""
    settings = config.stash[SETTINGS_KEY]
    profiles = settings.loaded_all
    if len(profiles) != 1:
        names = ", ".join(str(p.path) for p in profiles) or "none"
        raise pytest.UsageError(
            f"--eksid-discover reads one cluster: pass exactly one --profile (with the cluster's coordinates; "
            f"workloads: [] is fine), got {len(profiles)}: {names}"
        )
    out = _output(config)
    if out.resolve() == profiles[0].path.resolve():
        raise pytest.UsageError(f"--eksid-discover {out}: that is the input profile; write the starter elsewhere")
    if not out.parent.is_dir():
        raise pytest.UsageError(f"--eksid-discover {out}: no such directory {out.parent}")
    config.pluginmanager.register(sys.modules[__name__], "eksid-discover")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if items:
        config.hook.pytest_deselected(items=list(items))
        items[:] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool:
    config = session.config
    if session.config.option.collectonly:
        return True
    settings = config.stash[SETTINGS_KEY]
    loaded: LoadedProfile = settings.loaded
    out = _output(config)
    engine = Engine(
        settings,
        Path(config.rootpath),
        progress=lambda message: _progress(config, message),
        connect=lambda profile, progress: config.hook.pytest_eksid_connect(
            config=config, profile=profile, progress=progress
        ),
        interrupts=config.stash.get(INTERRUPTS_KEY, None),
    )
    try:
        _progress(config, f"discovering the workload identities of cluster {loaded.profile.cluster.name}")
        found = discover.discover(loaded, engine.kube(loaded), engine.aws(loaded))
        discover.write(found, out)
    except (EngineError, KubeError, AwsError, OSError) as exc:
        raise pytest.UsageError(f"--eksid-discover: no profile written: {exc}") from None
    finally:
        engine.close()
    count = len(found.data.get("workloads", []))
    _progress(config, f"wrote {out}: {count} workload identit{'y' if count == 1 else 'ies'}; review it before use")
    config.stash[WRITTEN_KEY] = out
    return True


def pytest_sessionfinish(session: pytest.Session) -> None:
    if WRITTEN_KEY in session.config.stash and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
