"""Trust-policy evaluation, as STS and EKS Auth do it before they hand out a role session.

moto does not evaluate trust for web identities or service principals (and crashes on the
latter over HTTP), so the sandbox decides trust here and then mints the session in moto.
Only what role trust policies use is supported: Allow/Deny statements, ``Principal`` /
``NotPrincipal`` of kinds Service, Federated and AWS, ``Action``, and the string condition
operators. A condition that cannot be evaluated (unknown operator) never lets an Allow
apply and always lets a Deny apply, so it can only deny.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pytest_eksid.iam.documents import as_list, wildcard


def _principal_matches(principal: Any, kind: str, value: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return any(p == "*" or p == value or _account_root(kind, str(p), value) for p in as_list(principal.get(kind)))


def _account_root(kind: str, listed: str, value: str) -> bool:
    """``{"AWS": "arn:aws:iam::<acct>:root"}`` or a bare account id trusts that whole account."""
    if kind != "AWS" or value.count(":") < 5:
        return False
    account = value.split(":")[4]
    return listed == account or (
        listed.endswith(":root") and listed.count(":") >= 5 and listed.split(":")[4] == account
    )


def _action_matches(actions: Any, action: str) -> bool:
    return any(wildcard(str(a), action, case_sensitive=False) for a in as_list(actions))


def _string_like(pattern: str, value: str) -> bool:
    return wildcard(pattern, value, case_sensitive=True)


_OPS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringNotEquals": lambda p, v: p != v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringNotEqualsIgnoreCase": lambda p, v: p.lower() != v.lower(),
    "StringLike": _string_like,
    "StringNotLike": lambda p, v: not _string_like(p, v),
}


def _conditions_hold(conditions: Any, context: Mapping[str, Iterable[str]], *, unknown: bool) -> bool:
    """Whether every condition holds; ``unknown`` is the answer for what cannot be evaluated."""
    if not conditions:
        return True
    if not isinstance(conditions, Mapping):
        return unknown
    ctx = {k.lower(): list(v) for k, v in context.items()}
    for op_name, clauses in conditions.items():
        base = op_name.removeprefix("ForAnyValue:").removeprefix("ForAllValues:")
        if_exists = base.endswith("IfExists")
        base = base.removesuffix("IfExists")
        op = _OPS.get(base)
        if op is None or not isinstance(clauses, Mapping):
            return unknown
        negated = "Not" in base
        for_all = op_name.startswith("ForAllValues:")
        for key, expected in clauses.items():
            values = ctx.get(str(key).lower())
            if not values:
                if if_exists or negated or for_all:  # ForAllValues over no values holds
                    continue
                return False
            patterns = [str(p) for p in as_list(expected)]
            if negated:
                ok = all(op(p, v) for p in patterns for v in values)
            else:
                ok = any(op(p, v) for p in patterns for v in values)
            if not ok:
                return False
    return True


def trust_allows(
    document: Mapping[str, Any],
    *,
    principal_kind: str,
    principal: str,
    actions: Iterable[str],
    context: Mapping[str, Iterable[str]],
) -> tuple[bool, str]:
    """Whether the trust policy lets ``principal`` perform every one of ``actions``.

    Returns (allowed, reason); the reason names the first action nothing allowed or the
    statement that denied it.
    """
    statements = as_list(document.get("Statement"))
    wanted = list(actions)
    if not wanted:
        return False, "no action requested"
    for action in wanted:
        allowed = False
        for i, st in enumerate(statements):
            if not isinstance(st, Mapping):
                continue
            if "Principal" in st:
                who = _principal_matches(st["Principal"], principal_kind, principal)
            elif "NotPrincipal" in st:
                who = not _principal_matches(st["NotPrincipal"], principal_kind, principal)
            else:
                who = False
            if not who:
                continue
            if "Action" in st:
                does = _action_matches(st["Action"], action)
            else:
                does = not _action_matches(st.get("NotAction"), action)
            # What cannot be evaluated never allows and always lets a Deny apply: it can only deny.
            is_deny = st.get("Effect") == "Deny"
            if not does or not _conditions_hold(st.get("Condition"), context, unknown=is_deny):
                continue
            if st.get("Effect") == "Deny":
                return False, f"{action} explicitly denied by statement {st.get('Sid', i)}"
            if st.get("Effect") == "Allow":
                allowed = True
        if not allowed:
            return False, f"no statement allows {principal} to perform {action}"
    return True, "allowed"


def identity_allows(
    documents: Iterable[Mapping[str, Any]],
    *,
    action: str,
    resource: str,
    context: Mapping[str, Iterable[str]],
    decided: Iterable[str] = (),
) -> bool:
    """Whether an Allow statement of these identity policies covers ``action`` on ``resource`` with its
    conditions holding (moto decides identity policies without their conditions).

    Only conditions on keys in ``context`` or in ``decided`` (keys whose absence is an answer, such as
    ``kms:ViaService`` on a direct call) are re-decided; any other condition, and any operator this
    module does not know, is taken to hold, as moto took it."""
    for document in documents:
        for st in as_list(document.get("Statement")):
            if not isinstance(st, Mapping) or st.get("Effect") != "Allow":
                continue
            if "Action" in st:
                does = _action_matches(st["Action"], action)
            else:
                does = not _action_matches(st.get("NotAction"), action)
            if "Resource" in st:
                where = any(_string_like(str(r), resource) for r in as_list(st["Resource"]))
            else:
                where = not any(_string_like(str(r), resource) for r in as_list(st.get("NotResource")))
            if (
                does
                and where
                and _conditions_hold(_known(st.get("Condition"), context, decided), context, unknown=True)
            ):
                return True
    return False


def _known(conditions: Any, context: Mapping[str, Iterable[str]], decided: Iterable[str]) -> Any:
    """The conditions restricted to the operators this module knows and the keys it can decide."""
    if not isinstance(conditions, Mapping):
        return conditions
    keys = {k.lower() for k in context} | {k.lower() for k in decided}
    out: dict[str, dict[str, Any]] = {}
    for op_name, clauses in conditions.items():
        base = str(op_name).removeprefix("ForAnyValue:").removeprefix("ForAllValues:").removesuffix("IfExists")
        if base not in _OPS or not isinstance(clauses, Mapping):
            continue
        kept = {k: v for k, v in clauses.items() if str(k).lower() in keys}
        if kept:
            out[op_name] = kept
    return out
