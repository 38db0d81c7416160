"""Pure analysis over fetched data. No I/O, no pytest: each check returns findings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pytest_eksid.escape import (
    command_iam_name,
    command_label_key,
    command_label_value,
    command_labels,
    command_name,
    printable,
    shown,
)

if TYPE_CHECKING:  # profile.py imports pytest_eksid.iam, which must not import it back through here
    from pytest_eksid.profile import Workload

__all__ = [
    "Finding",
    "command_iam_name",
    "command_label_key",
    "command_label_value",
    "command_labels",
    "command_name",
    "refer",
    "shown",
    "workload_label",
]


@dataclass(frozen=True)
class Finding:
    """A failed expectation, written for the person who has to fix it."""

    check: str
    summary: str
    expected: str
    seen: str
    likely: str
    next_steps: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)

    def message(self) -> str:
        """The finding as the terminal shows it: one line per field, each printable (a field holding
        cluster text, a newline or an escape sequence from a pod log, cannot forge or restyle a line)."""
        lines = [
            self.summary,
            f"  expected: {self.expected}",
            f"  seen:     {self.seen}",
            *(f"  {k + ':':<9} {v}" for k, v in self.details.items()),
            f"  likely:   {self.likely}",
        ]
        lines += [f"  next:     {cmd}" for cmd in self.next_steps]
        return "\n".join(printable(line) for line in lines)


def workload_label(w: Workload) -> str:
    """How findings name a workload: ``checkout-api (checkout-prod/checkout-api-aws-sa, pod-identity)``."""
    return f"{w.name} ({w.namespace}/{w.service_account}, {w.mechanism})"


def refer(findings: Finding | Iterable[Finding] | None, when: str, ref: str) -> list[Finding]:
    """The findings, each whose likely cause mentions ``when`` pointing at ``ref`` too (the cluster or namespace
    test that owns that cause, e.g. ``see suites/test_agent.py::test_agent_daemonset_available[prod]``)."""
    listed = [findings] if isinstance(findings, Finding) else list(findings or [])
    return [
        replace(f, next_steps=(*f.next_steps, ref)) if when in f.likely and ref not in f.next_steps else f
        for f in listed
    ]
