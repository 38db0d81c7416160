"""Run settings: each value with where it came from (command line, ini file, environment, default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pytest_eksid.profile import LoadedProfile

T = TypeVar("T")

# Seconds one Kubernetes or AWS request of the runner may wait to connect, and then for its answer.
# Without a bound a blackholed endpoint (a VPN down, a private API server out of reach) hangs each call.
DEFAULT_API_TIMEOUT = 30.0


@dataclass(frozen=True)
class Setting(Generic[T]):
    value: T
    source: str  # "--profile", "ini eksid_profile", "$EKSID_PROFILE", "--fleet fleet.yaml", "default"


@dataclass(frozen=True)
class Settings:
    # The clusters of the run, one profile each, in the order given (--fleet entries, then --profile).
    profiles: tuple[Setting[LoadedProfile], ...]
    keep_pods: Setting[bool]
    max_parallel: Setting[int]
    sweep_minutes: Setting[float] | None = None
    inconclusive: Setting[str] = Setting("skip", "default")
    exec_containers: Setting[bool] = Setting(False, "default")
    api_timeout: Setting[float] = Setting(DEFAULT_API_TIMEOUT, "default")
    require_contract: Setting[bool] = Setting(False, "default")

    @property
    def profile(self) -> Setting[LoadedProfile] | None:
        """The first profile (the only one in a single-cluster run), or None."""
        return self.profiles[0] if self.profiles else None

    @property
    def loaded(self) -> LoadedProfile:
        """The first profile's (the only one in a single-cluster run); LookupError when there is none."""
        if not self.profiles:
            raise LookupError("no profile")
        return self.profiles[0].value

    @property
    def loaded_all(self) -> list[LoadedProfile]:
        return [p.value for p in self.profiles]
