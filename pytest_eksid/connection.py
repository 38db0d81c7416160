"""What a provider hands the run: how to reach one cluster, how to name it, and how to let it go.

A provider is a plugin implementing the ``pytest_eksid_provider`` and ``pytest_eksid_connect`` hooks
(pytest_eksid/hooks.py). The core's own is the live one (pytest_eksid/live.py: the user's kubeconfig,
context and AWS environment); the embedded sandbox is another (pytest_eksid/sandbox/plugin.py).
Plain data, no pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_eksid.profile import LoadedProfile

# Variable names whose values are secrets: masked wherever an environment is shown.
_SECRET_NAME = ("SECRET", "TOKEN", "PASSWORD", "SESSION", "CREDENTIAL")


class Environment(dict[str, str | None]):
    """Environment settings for a cluster (None unsets a variable). A dict, so ``{**os.environ, **env}``
    works; its repr masks secret values, because pytest shows a failing test's locals with ``-l`` and a
    user's own test holds it in one (the sandbox's runner keys travel in it)."""

    def __repr__(self) -> str:
        shown = (
            f"{key}={'***' if value is not None and any(s in key.upper() for s in _SECRET_NAME) else value!r}"
            for key, value in self.items()
        )
        return f"Environment({', '.join(shown)})"

    __str__ = __repr__


def _nothing() -> None:
    """A live cluster's teardown: the run started nothing that outlives it."""


@dataclass(frozen=True)
class Provider:
    """A provider's answer at configure time, before anything is reached: how the report header names the
    target, and the provider's own defaults."""

    label: str  # "kube context prod-eu (AWS profile audit)", "embedded sandbox (started when first needed)"
    # Probe pods launched at once per cluster when no --eksid-max-parallel is given (docs/performance.md).
    max_parallel: int


@dataclass(frozen=True)
class Connection:
    """How the runner reaches one cluster: a kubeconfig and context, and the AWS settings as the standard
    variables say them (``AWS_ENDPOINT_URL``, credentials; None unsets one; empty for a live cluster: the
    process's own environment applies). ``close`` lets the cluster go at the end of the run (stops what the
    provider started); it may be called more than once."""

    kubeconfig: str | None
    context: str | None
    env: Mapping[str, str | None] = field(default_factory=dict, repr=False)  # may hold a sandbox's keys
    close: Callable[[], None] = field(default=_nothing, repr=False, compare=False)


def live_connection(profile: LoadedProfile, _progress: Callable[[str], None] | None = None) -> Connection:
    """A live cluster: the profile's kubeconfig (relative to the profile's file) and context; the AWS
    environment is the process's own. The live provider's answer, and the engine's when it has no hook."""
    cluster = profile.profile.cluster
    kubeconfig = cluster.kubeconfig
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_absolute():
        kubeconfig = str(profile.path.parent / kubeconfig)
    return Connection(kubeconfig=kubeconfig, context=cluster.kube_context)
