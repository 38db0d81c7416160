"""Hook specifications: how a conftest.py or another plugin extends pytest-eksid."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.profile import Profile, Workload


@pytest.hookspec
def pytest_eksid_probe_manifest(manifest: dict[str, Any], profile: Profile, workload: Workload) -> None:
    """Adjust a probe pod's manifest in place before it is created (every implementation is called).

    For example, add a cluster-specific annotation or label, a priority class, tolerations or
    resources. The probe's contract — its namespace and the plugin's labels, service account, token
    automount, restart policy, deadline, host namespaces, security contexts, volumes, and the probe
    container's image, command, arguments and environment, no added containers — is checked after
    the hook: a change there is that probe's error, and the pod is not created (docs/probe.md).
    """
