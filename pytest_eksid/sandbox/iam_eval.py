"""IAM policy evaluation for one request: explicit Deny, then Allow, with conditions, as AWS decides.

One evaluator for every service the sandbox authorizes (moto's own decides against ``*`` for most
services and ignores conditions). The order is AWS's policy evaluation logic for a principal in its
own account [AWS IAM User Guide, "Policy evaluation logic"]: an explicit Deny in any policy type
wins; otherwise an identity-based policy must allow; a session policy, when the session has one,
must allow too (the intersection). Resource-based policies (KMS key policies) are decided by the
caller of this module, after it.

Supported: ``Action``/``NotAction`` (case-insensitive wildcards), ``Resource``/``NotResource``
(case-sensitive wildcards), policy variables ``${key}`` (also ``${key, 'default'}``, ``${*}``,
``${?}``, ``${$}``) in resources and condition values, and the condition operators String*,
Numeric*, Date*, Bool, BinaryEquals, IpAddress/NotIpAddress, Arn*, Null, each with ``...IfExists``
and the ``ForAnyValue:``/``ForAllValues:`` set operators. A key absent from the request context
is treated as AWS does: a positive operator is false, a negated one (``StringNotEquals``,
``ArnNotLike``, ...) true, ``...IfExists`` true, ``Null`` true for ``"true"``, ``ForAllValues``
true and ``ForAnyValue`` false. An operator this module does not know can only deny: it never
lets an Allow apply and always lets a Deny apply (IAM rejects such a policy when it is written).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Context = Mapping[str, Sequence[str]]
"""The request context: condition key (any case) -> its values (one for single-valued keys)."""

Verdict = Literal["allowed", "explicit-deny", "implicit-deny"]
PolicyType = Literal["identity-based", "session", "resource-based"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    policy_type: PolicyType | None = None  # which policy type denied (None when allowed)
    statement: str | None = None  # the Sid (or index) of the statement that decided

    @property
    def allowed(self) -> bool:
        return self.verdict == "allowed"

    def reason(self, action: str) -> str:
        """The end of AWS's AccessDenied message: why the request was denied."""
        if self.verdict == "explicit-deny":
            article = "an" if str(self.policy_type)[0] in "aeiou" else "a"
            return f"with an explicit deny in {article} {self.policy_type} policy"
        return f"because no {self.policy_type} policy allows the {action} action"


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _glob(pattern: str, *, case_sensitive: bool) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.S if case_sensitive else re.S | re.I)


def wildcard(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM wildcard matching: ``*`` any run of characters, ``?`` one character, nothing else special."""
    return _glob(pattern, case_sensitive=case_sensitive).fullmatch(value) is not None


_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LITERAL = {"*": "\x00STAR\x00", "?": "\x00QM\x00", "$": "$"}


class _Unresolved(Exception):
    """A policy variable with no value and no default: the element it is in matches nothing."""


def _resolve(text: str, context: Context) -> str:
    """Substitute ``${...}`` policy variables; ``${*}``/``${?}`` become literal characters."""

    def one(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner in _LITERAL:
            return _LITERAL[inner]
        key, _, default = inner.partition(",")
        values = _lookup(context, key.strip())
        if values:
            return values[0]
        default = default.strip()
        if len(default) >= 2 and default[0] == default[-1] == "'":
            return default[1:-1]
        raise _Unresolved(key)

    return _VARIABLE.sub(one, text)


def _pattern_matches(pattern: str, value: str, context: Context, *, case_sensitive: bool) -> bool:
    try:
        resolved = _resolve(pattern, context)
    except _Unresolved:
        return False
    regex = _glob(resolved, case_sensitive=case_sensitive).pattern
    regex = regex.replace(re.escape(_LITERAL["*"]), re.escape("*")).replace(re.escape(_LITERAL["?"]), re.escape("?"))
    flags = re.S if case_sensitive else re.S | re.I
    return re.fullmatch(regex, value, flags) is not None


def _lookup(context: Context, key: str) -> list[str]:
    wanted = key.lower()
    for k, v in context.items():
        if k.lower() == wanted:
            return [str(x) for x in as_list(v)]
    return []


# --- condition operators ---------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _date(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromtimestamp(float(text), datetime.UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _compare(parse: Callable[[str], Any], test: Callable[[Any, Any], bool]) -> Callable[[str, str], bool]:
    def op(policy: str, value: str) -> bool:
        p, v = parse(policy), parse(value)
        return p is not None and v is not None and bool(test(v, p))

    return op


def _ip(policy: str, value: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(policy, strict=False)
    except ValueError:
        return False


def _binary(policy: str, value: str) -> bool:
    try:
        return base64.b64decode(policy) == base64.b64decode(value)
    except ValueError:
        return False


def _arn_like(policy: str, value: str) -> bool:
    """ARN matching: each of the six colon-separated parts matched on its own, with wildcards."""
    p_parts, v_parts = policy.split(":", 5), value.split(":", 5)
    if len(p_parts) != len(v_parts):
        return policy == "*"
    return all(wildcard(p, v, case_sensitive=True) for p, v in zip(p_parts, v_parts, strict=True))


# Positive operators; each negated one is "no policy value matches" of its positive twin.
_POSITIVE: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringLike": lambda p, v: wildcard(p, v, case_sensitive=True),
    "NumericEquals": _compare(_number, lambda v, p: v == p),
    "NumericLessThan": _compare(_number, lambda v, p: v < p),
    "NumericLessThanEquals": _compare(_number, lambda v, p: v <= p),
    "NumericGreaterThan": _compare(_number, lambda v, p: v > p),
    "NumericGreaterThanEquals": _compare(_number, lambda v, p: v >= p),
    "DateEquals": _compare(_date, lambda v, p: v == p),
    "DateLessThan": _compare(_date, lambda v, p: v < p),
    "DateLessThanEquals": _compare(_date, lambda v, p: v <= p),
    "DateGreaterThan": _compare(_date, lambda v, p: v > p),
    "DateGreaterThanEquals": _compare(_date, lambda v, p: v >= p),
    "Bool": lambda p, v: p.lower() == v.lower(),
    "BinaryEquals": _binary,
    "IpAddress": _ip,
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


class UnknownOperator(Exception):
    """A condition operator (or a malformed condition block) this module cannot evaluate."""


def _clause_holds(op_name: str, key: str, expected: Any, context: Context) -> bool:
    set_op, _, base = op_name.rpartition(":")
    if set_op not in ("", "ForAnyValue", "ForAllValues"):
        raise UnknownOperator(op_name)
    if_exists = base.endswith("IfExists") and base != "IfExists"
    base = base.removesuffix("IfExists") if if_exists else base
    values = _lookup(context, key)
    if base == "Null":
        if set_op:
            raise UnknownOperator(op_name)
        return any((str(e).lower() == "true") == (not values) for e in as_list(expected))
    negated = base in _NEGATED
    test = _POSITIVE.get(_NEGATED.get(base, base))
    if test is None:
        raise UnknownOperator(op_name)
    patterns: list[str] = []
    for e in as_list(expected):
        try:
            patterns.append(_resolve(str(e), context).replace(_LITERAL["*"], "*").replace(_LITERAL["?"], "?"))
        except _Unresolved:
            continue  # a policy value whose variable has no value matches nothing

    def matches(value: str) -> bool:  # the value meets the operator against the policy's values
        hit = any(test(p, value) for p in patterns)
        return not hit if negated else hit

    if not values:
        if set_op == "ForAllValues":
            return True
        if set_op == "ForAnyValue":
            return False
        return if_exists or negated
    if set_op == "ForAllValues":
        return all(matches(v) for v in values)
    if set_op == "ForAnyValue" or not negated:
        return any(matches(v) for v in values)
    return all(matches(v) for v in values)  # a negated operator on a multi-valued key: none may match


def conditions_hold(conditions: Any, context: Context) -> bool:
    """Whether every clause of a ``Condition`` block holds (operators and keys are ANDed, a key's
    values ORed). Raises :class:`UnknownOperator` for what cannot be evaluated."""
    if not conditions:
        return True
    if not isinstance(conditions, Mapping):
        raise UnknownOperator(str(type(conditions)))
    for op_name, clauses in conditions.items():
        if not isinstance(clauses, Mapping):
            raise UnknownOperator(str(op_name))
        for key, expected in clauses.items():
            if not _clause_holds(str(op_name), str(key), expected, context):
                return False
    return True


def condition_verdict(conditions: Any, context: Context, *, effect: str) -> bool:
    """Whether the statement's conditions let it apply; what cannot be evaluated can only deny."""
    try:
        return conditions_hold(conditions, context)
    except UnknownOperator:
        return effect == "Deny"


# --- statements and policies -----------------------------------------------------------------------


def action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(wildcard(str(a), action, case_sensitive=False) for a in as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(wildcard(str(a), action, case_sensitive=False) for a in as_list(statement["NotAction"]))
    return False


def resource_matches(statement: Mapping[str, Any], resource: str, context: Context) -> bool:
    if "Resource" in statement:
        listed = as_list(statement["Resource"])
        return any(_pattern_matches(str(r), resource, context, case_sensitive=True) for r in listed)
    if "NotResource" in statement:
        listed = as_list(statement["NotResource"])
        return not any(_pattern_matches(str(r), resource, context, case_sensitive=True) for r in listed)
    return False


def _statements(document: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for i, st in enumerate(as_list(document.get("Statement"))):
        if isinstance(st, Mapping):
            yield str(st.get("Sid") or i), st


def _matching(
    documents: Iterable[Mapping[str, Any]], effect: str, action: str, resource: str, context: Context
) -> str | None:
    """The first statement of ``effect`` that applies to the request (its Sid or index), or None."""
    for document in documents:
        for label, st in _statements(document):
            if str(st.get("Effect")) != effect:
                continue
            if (
                action_matches(st, action)
                and resource_matches(st, resource, context)
                and condition_verdict(st.get("Condition"), context, effect=effect)
            ):
                return label
    return None


def evaluate(
    *,
    identity: Sequence[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Context,
    session: Sequence[Mapping[str, Any]] | None = None,
) -> Decision:
    """AWS's decision on ``action`` against ``resource`` for a principal with these identity policies
    (inline and attached) and, for a session that has one, its session policy."""
    kinds: list[tuple[PolicyType, Sequence[Mapping[str, Any]]]] = [("identity-based", identity)]
    if session is not None:
        kinds.append(("session", session))
    for kind, documents in kinds:
        denied = _matching(documents, "Deny", action, resource, context)
        if denied is not None:
            return Decision("explicit-deny", kind, denied)
    for kind, documents in kinds:
        if _matching(documents, "Allow", action, resource, context) is None:
            return Decision("implicit-deny", kind)
    return Decision("allowed")
