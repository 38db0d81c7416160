"""Hook specifications: how a conftest.py or another plugin extends pytest-eksid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_eksid.connection import Connection, Provider
from pytest_eksid.profile import LoadedProfile, Profile, Workload


@pytest.hookspec
def pytest_eksid_probe_manifest(manifest: dict[str, Any], profile: Profile, workload: Workload) -> None:
    """Adjust a probe pod's manifest in place before it is created (every implementation is called).

    For example, add a cluster-specific annotation or label, a priority class, tolerations or
    resources. The probe's contract — its namespace and the plugin's labels, service account, token
    automount, restart policy, deadline, host namespaces, security contexts, volumes, and the probe
    container's image, command, arguments and environment, no added containers — is checked after
    the hook: a change there is that probe's error, and the pod is not created (docs/probe.md).
    """


@pytest.hookspec(firstresult=True)
def pytest_eksid_provider(config: pytest.Config, profile: LoadedProfile) -> Provider | None:
    """Claim a profile at configure time: return its :class:`~pytest_eksid.connection.Provider`, or None to
    leave it to another provider.

    Validate the parts of the profile this provider owns here (raise
    :class:`~pytest_eksid.profile.ProfileError` or ``pytest.UsageError``: the run ends with ``ERROR:``).
    Nothing may reach a cluster or AWS here: ``--collect-only`` works offline. The core's live provider
    answers last, for every profile no other provider claimed.
    """


@pytest.hookspec(firstresult=True)
def pytest_eksid_connect(
    config: pytest.Config, profile: LoadedProfile, progress: Callable[[str], None]
) -> Connection | None:
    """Reach the profile's cluster on first use in the session: return a
    :class:`~pytest_eksid.connection.Connection`, or None to leave it to another provider.

    The provider that claimed the profile in :func:`pytest_eksid_provider` should be the one answering.
    ``progress`` shows a one-line message to the person at the terminal. An exception fails the tests
    of this cluster with its message; the run's other clusters go on. The run calls the connection's
    ``close`` at the end of the session, also after Ctrl-C.
    """
