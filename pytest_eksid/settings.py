"""Run settings: each value with where it came from (command line, ini file, environment, default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pytest_eksid.profile import LoadedProfile

T = TypeVar("T")


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

    @property
    def loaded(self) -> list[LoadedProfile]:
        return [p.value for p in self.profiles]

    def find(self, name: str) -> LoadedProfile:
        """The profile of that name; KeyError if the run has none."""
        for p in self.profiles:
            if p.value.name == name:
                return p.value
        raise KeyError(name)
