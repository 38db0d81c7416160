"""The live provider: a real cluster, reached with the user's kubeconfig, context and AWS environment.

Registered by the core plugin and answering last (``trylast``), so any other provider's answer wins.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_eksid.connection import Connection, Provider, live_connection
from pytest_eksid.profile import LoadedProfile, ProfileError
from pytest_eksid.settings import DEFAULT_MAX_PARALLEL

MAX_PARALLEL = DEFAULT_MAX_PARALLEL  # for real clusters: settings.py and docs/performance.md say why


@pytest.hookimpl(trylast=True)
def pytest_eksid_provider(config: pytest.Config, profile: LoadedProfile) -> Provider:
    if profile.profile.sandbox is not None:
        # No provider claimed a section the live provider does not know: never run it against the
        # current kube context as if it were a live cluster.
        raise ProfileError(
            f"{profile.path}: this profile has a 'sandbox' section, but no plugin provides the sandbox "
            "(is it disabled with -p no:eksid_sandbox?); re-enable it, or remove the section for a live cluster"
        )
    cluster = profile.profile.cluster
    label = f"kube context {cluster.kube_context or '(current)'}" + (
        f", AWS profile {cluster.aws_profile}" if cluster.aws_profile else ""
    )
    return Provider(label=label, max_parallel=MAX_PARALLEL)


@pytest.hookimpl(trylast=True)
def pytest_eksid_connect(config: pytest.Config, profile: LoadedProfile, progress: Callable[[str], None]) -> Connection:
    return live_connection(profile)
