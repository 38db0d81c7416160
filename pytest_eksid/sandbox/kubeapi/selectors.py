"""Label and field selectors: the query strings and the ``LabelSelector`` objects.

``labelSelector``/``fieldSelector`` in list, watch and deletecollection requests, and the
``matchLabels``/``matchExpressions`` selectors of workloads, as k8s.io/apimachinery parses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.resources import META_FIELDS, Obj, ResourceType

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


Requirement = tuple[str, str, frozenset[str]]  # key, operator, values


def parse_label_selector(selector: str) -> list[Requirement]:
    """Parse a Kubernetes label selector; raise ApiError(400) on nonsense."""
    reqs: list[Requirement] = []
    for term in _split_selector(selector):
        m = _SET_RE.match(term)
        if m:
            reqs.append((m.group(1), m.group(2), frozenset(v.strip() for v in m.group(3).split(","))))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append((k.strip(), "!=", frozenset([v.strip()])))
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            reqs.append((k.strip(), "=", frozenset([v.strip()])))
        elif term.startswith("!") and re.match(r"^[\w./-]+$", term[1:].strip()):
            reqs.append((term[1:].strip(), "!", frozenset()))
        elif re.match(r"^[\w./-]+$", term):
            reqs.append((term, "exists", frozenset()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return reqs


def _holds(req: Requirement, value: str | None) -> bool:
    _, op, values = req
    if op == "exists":
        return value is not None
    if op == "!":
        return value is None
    if op in ("=", "in"):
        return value in values
    return value not in values  # "!=", "notin"


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    reqs = parse_label_selector(selector)
    return lambda labels: all(_holds(r, labels.get(r[0])) for r in reqs)


_FIELD_PATHS = {"source": "source.component"}


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in _FIELD_PATHS.get(path, path).split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def field_matcher(selector: str, resource: ResourceType | None = None) -> Callable[[Obj], bool]:
    """A field selector; with ``resource``, only the fields kube-apiserver supports for it."""
    reqs: list[Requirement] = []
    for term in _split_selector(selector):
        op = "!=" if "!=" in term else "="
        if op not in term.replace("==", "="):
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        k, v = term.replace("==", "=").split(op, 1)
        k = k.strip()
        if resource is not None and k not in (*META_FIELDS, *resource.field_labels):
            raise ApiError(400, "BadRequest", f'field label not supported: "{k}"')
        reqs.append((k, op, frozenset([v.strip()])))
    return lambda obj: all(_holds(r, _field(obj, r[0])) for r in reqs)


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A ``LabelSelector`` object (matchLabels, matchExpressions); empty matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        present = key in labels
        if (
            (op == "In" and not (present and labels[key] in values))
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def format_selector(selector: Obj | None) -> str:
    if not selector:
        return "<none>"
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), ",".join(sorted(e.get("values") or []))
        terms.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(op, f"!{key}")
        )
    return ",".join(sorted(terms)) or "<none>"
