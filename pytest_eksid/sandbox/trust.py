"""Trust-policy evaluation, as STS and EKS Auth do it before they hand out a role session.

moto does not evaluate trust for web identities or service principals (and crashes on the
latter over HTTP), so the sandbox decides trust here and then mints the session in moto.
Statements are matched here by ``Principal`` / ``NotPrincipal`` (kinds Service, Federated and
AWS); actions and conditions are decided by :mod:`iam_eval`, the one evaluator of the sandbox,
so a condition that cannot be evaluated (unknown operator) can only deny.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytest_eksid.sandbox.iam_eval import Context, action_matches, as_list, condition_verdict


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


def trust_allows(
    document: Mapping[str, Any],
    *,
    principal_kind: str,
    principal: str,
    actions: Iterable[str],
    context: Context,
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
            # What cannot be evaluated never allows and always lets a Deny apply: it can only deny.
            effect = str(st.get("Effect"))
            if not action_matches(st, action) or not condition_verdict(st.get("Condition"), context, effect=effect):
                continue
            if st.get("Effect") == "Deny":
                return False, f"{action} explicitly denied by statement {st.get('Sid', i)}"
            if st.get("Effect") == "Allow":
                allowed = True
        if not allowed:
            return False, f"no statement allows {principal} to perform {action}"
    return True, "allowed"
