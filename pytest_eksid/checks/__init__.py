"""Pure analysis over fetched data. No I/O, no pytest: each check returns findings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace


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


# What cluster-sourced text may show unescaped: the characters of Kubernetes names and label values.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/:=@")
# A DNS-1123 subdomain, what kube-apiserver accepts as a node name: the only cluster text a command may carry.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _escaped(char: str) -> str:
    if char in _PLAIN:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(value: object, limit: int = 63) -> str:
    """Cluster-sourced text (a label value, a node name) as it may reach a terminal: at most
    ``limit`` characters of it, every character outside names' alphabet escaped (``\\x1b``,
    ``\\u202e``), and how much was cut said."""
    text = str(value)
    out = "".join(_escaped(c) for c in text[:limit])
    return out + (f"...(+{len(text) - limit} chars)" if len(text) > limit else "")


def command_name(value: object, placeholder: str) -> str:
    """A cluster-sourced name for a ``next:`` command: itself only where it is a valid DNS-1123
    subdomain (all kube-apiserver admits for a node name), else ``placeholder``."""
    text = str(value)
    return text if len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) else placeholder


def refer(findings: Finding | Iterable[Finding] | None, when: str, ref: str) -> list[Finding]:
    """The findings, each whose likely cause mentions ``when`` pointing at ``ref`` too (the cluster or namespace
    test that owns that cause, e.g. ``see suites/test_agent.py::test_agent_daemonset_available[prod]``)."""
    listed = [findings] if isinstance(findings, Finding) else list(findings or [])
    return [
        replace(f, next_steps=(*f.next_steps, ref)) if when in f.likely and ref not in f.next_steps else f
        for f in listed
    ]
