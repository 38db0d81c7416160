"""IAM policy documents as plain data: their statements, IAM wildcards, which statements cover an action.

Documents are what ``iam get-role`` and ``iam get-role-policy`` return, already URL-decoded.
Nothing here is evaluated against an account. Statements are labelled by their ``Sid`` when they
have one, else by their 0-based index in the document's ``Statement`` list (``Statement[0]``;
``<policy>#0`` in :func:`allowing_statements`).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from typing import Any

_LIST_KEYS = ("Action", "NotAction", "Resource", "NotResource")


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's ``Statement`` as a list of dicts (a single statement may be a bare dict).

    ``Action``/``NotAction``/``Resource``/``NotResource`` values become lists; entries that
    are not mappings are dropped. The input is not modified.
    """
    out: list[dict[str, Any]] = []
    for st in as_list(document.get("Statement")):
        if not isinstance(st, Mapping):
            continue
        item = dict(st)
        for key in _LIST_KEYS:
            if key in item:
                item[key] = [str(v) for v in as_list(item[key])]
        out.append(item)
    return out


def statement_label(st: Mapping[str, Any], index: int) -> str:
    sid = st.get("Sid")
    return f"statement {sid!r}" if sid else f"Statement[{index}]"


def statement_ref(st: Mapping[str, Any], index: int) -> str:
    sid = st.get("Sid")
    return str(sid) if sid else str(index)


def quote_statement(st: Mapping[str, Any], *keys: str) -> str:
    """The statement's relevant part as compact JSON, for the "seen" line."""
    part = {k: st[k] for k in ("Sid", *keys) if k in st}
    text = json.dumps(part, separators=(", ", ": "), default=str)
    return text if len(text) <= 400 else text[:397] + "..."


def is_allow(st: Mapping[str, Any]) -> bool:
    return str(st.get("Effect", "")).lower() == "allow"


def wildcard(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    """IAM wildcard matching: ``*`` is any run of characters, ``?`` one character; ``[`` is literal."""
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def action_patterns_match(patterns: Iterable[str], action: str) -> str | None:
    """The first pattern matching the action (case-insensitive), or None."""
    for p in patterns:
        if wildcard(p, action, case_sensitive=False):
            return p
    return None


def grants_action(st: Mapping[str, Any], action: str) -> str | None:
    """How the statement covers the action: the matching Action pattern, "NotAction", or None."""
    if "Action" in st:
        return action_patterns_match(st["Action"], action)
    if "NotAction" in st and action_patterns_match(st["NotAction"], action) is None:
        return "NotAction"
    return None


def resource_matches(pattern: str, resource: str) -> bool:
    if pattern == "*":
        return True
    p_parts, r_parts = pattern.split(":", 5), resource.split(":", 5)
    if len(p_parts) == 6 and len(r_parts) == 6:  # both ARNs: segment by segment
        return all(wildcard(p, r, case_sensitive=True) for p, r in zip(p_parts, r_parts, strict=True))
    return wildcard(pattern, resource, case_sensitive=True)


def grants_resource(st: Mapping[str, Any], resource: str | None) -> bool:
    if resource is None:
        return True
    if "Resource" in st:
        return any(resource_matches(p, resource) for p in st["Resource"])
    if "NotResource" in st:
        return not any(resource_matches(p, resource) for p in st["NotResource"])
    return False


def allowing_statements(policies: Mapping[str, Mapping[str, Any]], action: str, resource: str | None) -> list[str]:
    """Allow statements covering ``action`` on ``resource``, as ``"<policy name>#<Sid or index>"``.

    IAM wildcards (``*``, ``?``) match actions case-insensitively and resources case-sensitively
    (segment by segment when both are ARNs); NotAction and NotResource are honoured; conditions
    and Deny statements are ignored. ``resource=None`` matches any resource.
    """
    out: list[str] = []
    for name, document in policies.items():
        for i, st in enumerate(statements(document)):
            if is_allow(st) and grants_action(st, action) is not None and grants_resource(st, resource):
                out.append(f"{name}#{statement_ref(st, i)}")
    return out


def denying_statements(policies: Mapping[str, Mapping[str, Any]], action: str, resource: str | None) -> list[str]:
    """Unconditional Deny statements covering ``action`` on ``resource``, named as :func:`allowing_statements`
    names them (a Deny with a condition may not apply to the workload's calls: it settles nothing)."""
    out: list[str] = []
    for name, document in policies.items():
        for i, st in enumerate(statements(document)):
            if (
                st.get("Effect") == "Deny"
                and not st.get("Condition")
                and grants_action(st, action) is not None
                and grants_resource(st, resource)
            ):
                out.append(f"{name}#{statement_ref(st, i)}")
    return out
