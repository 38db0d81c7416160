"""The sandbox as a pytest-eksid provider: it claims profiles with a ``sandbox:`` section and runs their EKS.

Registered by its own ``pytest11`` entry point (``eksid_sandbox``). Importing this module imports
pydantic and the core only: moto and the emulator are imported when a sandbox profile's cluster is
first reached, so a live-cluster user without the ``sandbox`` extra runs unaffected, and a sandbox
profile without it ends in one ``ERROR:`` naming the extra.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from pytest_eksid.connection import Connection, Environment, Provider
from pytest_eksid.profile import LoadedProfile, ProfileError
from pytest_eksid.sandbox import SandboxUnavailable, require
from pytest_eksid.sandbox.model import section

# Probe pods launched at once where "pods" are local processes on the runner's own cores: bench/scale.py
# measured 32 the fastest on 2 cores at 200 workloads, 64 slower from CPU contention (docs/performance.md).
MAX_PARALLEL = 32
LABEL = "embedded sandbox (started when first needed)"


def reached_elsewhere(profile: LoadedProfile) -> None:
    """The sandbox brings its own kubeconfig and credentials: a profile (or its fleet entry) that names
    another way to reach the cluster contradicts it, and would be silently ignored."""
    cluster = profile.profile.cluster
    named = {"kubeContext": cluster.kube_context, "kubeconfig": cluster.kubeconfig, "awsProfile": cluster.aws_profile}
    keys = ", ".join(key for key, value in named.items() if value is not None)
    if keys:
        raise ProfileError(
            f"{profile.path} starts the embedded sandbox, which brings its own kubeconfig and credentials; "
            f"remove {keys} (from the profile's cluster or from its fleet entry)"
        )


class _Running(Protocol):
    """A started sandbox, in this process (runtime.Sandbox) or in a child (child.SandboxProcess)."""

    startup_seconds: float

    def stop(self) -> None: ...


# Optional hooks: with the core disabled (-p no:eksid) their specs are absent, and that is no error.
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_eksid_provider(config: pytest.Config, profile: LoadedProfile) -> Provider | None:
    if profile.profile.sandbox is None:
        return None
    section(profile)  # a ProfileError with file:line for a bad section, as for the rest of the profile
    reached_elsewhere(profile)
    try:
        require()
    except SandboxUnavailable as exc:
        raise pytest.UsageError(f"{profile.path}: {exc}") from None
    return Provider(label=LABEL, max_parallel=MAX_PARALLEL)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_eksid_connect(
    config: pytest.Config, profile: LoadedProfile, progress: Callable[[str], None]
) -> Connection | None:
    """Start the profile's sandbox: in this process when none runs in it yet, else in a child process
    (moto's state is process-wide)."""
    if profile.profile.sandbox is None:
        return None
    from pytest_eksid.sandbox.cloud import sandbox_in_process_free

    cluster = profile.profile.cluster
    progress(f"starting the embedded sandbox for cluster {cluster.name}")
    sandbox: _Running
    in_process = sandbox_in_process_free()
    if in_process:
        from pytest_eksid.sandbox.runtime import Sandbox

        sandbox = Sandbox(profile.profile, section=section(profile))
        connection = sandbox.start()
    else:
        from pytest_eksid.sandbox.child import SandboxProcess

        sandbox = SandboxProcess(profile.path, Path(config.rootpath))
        connection = sandbox.start()
    where = "" if in_process else " in a child process"
    progress(
        f"sandbox {cluster.name} ready{where} in {sandbox.startup_seconds:.1f}s (kubeconfig {connection.kubeconfig})"
    )
    return Connection(
        kubeconfig=str(connection.kubeconfig),
        context=connection.context,
        env=Environment(connection.env),
        close=_once(sandbox, progress),
    )


def _once(sandbox: _Running, progress: Callable[[str], None]) -> Callable[[], None]:
    """Stop the sandbox on the first call (teardown, or a second Ctrl-C's hurried cleanup); later calls do
    nothing."""
    lock = threading.Lock()
    stopped = False

    def close() -> None:
        nonlocal stopped
        with lock:
            if stopped:
                return
            stopped = True
        sandbox.stop()
        progress("sandbox stopped")

    return close
