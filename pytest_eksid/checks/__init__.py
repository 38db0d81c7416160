"""Pure analysis over fetched data. No I/O, no pytest: each check returns findings."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        lines = [
            self.summary,
            f"  expected: {self.expected}",
            f"  seen:     {self.seen}",
            *(f"  {k + ':':<9} {v}" for k, v in self.details.items()),
            f"  likely:   {self.likely}",
        ]
        lines += [f"  next:     {cmd}" for cmd in self.next_steps]
        return "\n".join(lines)
