"""Run settings: each value with where it came from (command line, ini file, environment, default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pytest_eksid.profile import LoadedProfile

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    value: T
    source: str  # "--profile", "ini eksid_profile", "$EKSID_PROFILE", "default"


@dataclass(frozen=True)
class Settings:
    profile: Setting[LoadedProfile] | None
    keep_pods: Setting[bool]
    max_parallel: Setting[int]
    sweep_minutes: Setting[float] | None = None
    inconclusive: Setting[str] = Setting("skip", "default")
    exec_containers: Setting[bool] = Setting(False, "default")

    @property
    def loaded(self) -> LoadedProfile:
        if self.profile is None:
            raise LookupError("no profile")
        return self.profile.value
