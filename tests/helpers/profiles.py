"""Profiles for tests: the demo profile as data to vary and write out, and live-cluster unit profiles."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pytest_eksid.profile import Profile
from tests.helpers import REPO


def demo_data() -> dict[str, Any]:
    """The demo profile as plain data, to vary in a test."""
    return copy.deepcopy(yaml.safe_load((REPO / "profiles" / "demo.yaml").read_text()))


class _NoAliasDumper(yaml.SafeDumper):
    """Profiles may not use anchors/aliases (docs/profiles.md): write shared objects out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_profile(tmp_path: Path, data: dict[str, Any], name: str = "variant") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False))
    return path


def unit_profile(workloads: list[dict[str, Any]], region: str = "eu-west-1", **cluster: Any) -> Profile:
    """A live-cluster profile for the pure check tests: cluster prod-platform-a in account 111122223333."""
    return Profile.model_validate(
        {
            "cluster": {"name": "prod-platform-a", "region": region, "accountId": "111122223333", **cluster},
            "probe": {"image": "probe:test"},
            "workloads": workloads,
        }
    )
