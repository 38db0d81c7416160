"""The CloudTrail state file: each workload's last probe session, so that a later run can look it up.

CloudTrail shows an event minutes after the call, so a run checks the *previous* run's probe sessions and
records its own for the next (``--eksid-cloudtrail STATE.json``, docs/cloudtrail.md). One entry per
``<profile>/<workload>``, replaced by each run that probes it; entries of workloads a run did not probe are
kept. Writers merge under an exclusive lock and replace the file whole (xdist workers share it).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_eksid.checks.cloudtrail import Recorded

VERSION = 1


class StateError(Exception):
    """The state file cannot be read; the message names the file and what is wrong."""


def _parse(path: Path, key: str, entry: Any) -> Recorded:
    if not isinstance(entry, Mapping):
        raise StateError(f"{path}: sessions.{key}: expected an object")
    try:
        return Recorded(
            run_id=str(entry["run_id"]),
            probed_at=datetime.fromisoformat(str(entry["probed_at"])),
            session_arn=str(entry["session_arn"]),
            pod=None if entry.get("pod") is None else str(entry["pod"]),
            namespace=str(entry["namespace"]),
            service_account=str(entry["service_account"]),
            mechanism=str(entry["mechanism"]),
        )
    except (KeyError, ValueError) as exc:
        raise StateError(f"{path}: sessions.{key}: {exc.__class__.__name__}: {exc}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": VERSION, "sessions": {}}
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: not a CloudTrail state file: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("sessions"), dict):
        raise StateError(f"{path}: not a CloudTrail state file of version {VERSION}")
    return data


def previous(path: Path, key: str) -> Recorded | None:
    """The session an earlier run recorded for ``<profile>/<workload>``; None when none did."""
    entry = _read(path)["sessions"].get(key)
    return None if entry is None else _parse(path, key, entry)


def record(path: Path, key: str, session: Recorded) -> None:
    """Replace ``key``'s entry with this run's session (merged under a lock, the file replaced whole)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _read(path)
        entry = asdict(session)
        entry["probed_at"] = session.probed_at.isoformat()
        data["sessions"][key] = entry
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        partial.replace(path)
    finally:
        os.close(fd)
