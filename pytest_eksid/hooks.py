"""Hook specifications: how a conftest.py or another plugin extends pytest-eksid."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.profile import Profile, Workload


@pytest.hookspec
def pytest_eksid_probe_manifest(manifest: dict[str, Any], profile: Profile, workload: Workload) -> None:
    """Adjust a probe pod's manifest in place before it is created.

    For example, add a cluster-specific annotation or a priority class. The probe's service
    account, command and security context are part of the contract; do not weaken them.
    """
