"""Trust-policy lint for a workload's role: who may assume it, for its mechanism (IRSA or Pod Identity).

Trust policies are read as plain JSON data (``iam get-role``'s ``AssumeRolePolicyDocument``); the
checks look at the shape of the document and name the statement to change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_eksid.checks import Finding, workload_label
from pytest_eksid.iam.documents import (
    as_list,
    grants_action,
    is_allow,
    quote_statement,
    statement_label,
    statements,
    wildcard,
)
from pytest_eksid.profile import Profile, TrustShare, Workload, role_arn_parts

STS_AUDIENCE = "sts.amazonaws.com"
PODS_PRINCIPAL = "pods.eks.amazonaws.com"
WEB_IDENTITY_ACTION = "sts:AssumeRoleWithWebIdentity"
POD_IDENTITY_ACTIONS = ("sts:AssumeRole", "sts:TagSession")

# Failure-mode and anti-pattern names of the reference article, quoted in "likely" texts.
FM_TRUST_DENIED = "Failure Mode 3 — Trust Policy Denied"
AP_WILDCARD_TRUST = "Anti-Pattern 1 — Namespace Wildcard Trust Everywhere"
AP_SHARED_ROLE = "Anti-Pattern 3 — One Shared app-role-prod"

_OIDC_PROVIDER_RE = re.compile(r"^arn:[\w-]+:iam::(\d{12}):oidc-provider/(.+)$")


def _role_name(w: Workload) -> str:
    return role_arn_parts(w.role_arn)[1]


def _partition(arn: str) -> str:
    return arn.split(":")[1]


# --- trust policy -------------------------------------------------------------------------


def _principals(st: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs of the statement's Principal; ("*", "*") for ``"Principal": "*"``."""
    principal = st.get("Principal")
    if principal is None:
        return []
    if not isinstance(principal, Mapping):
        return [("*", "*")] if str(principal) == "*" else [("?", str(principal))]
    return [(str(kind), str(v)) for kind, values in principal.items() for v in as_list(values)]


def _conditions(st: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(operator, key, values) of every condition clause of the statement."""
    out: list[tuple[str, str, list[str]]] = []
    cond = st.get("Condition")
    if not isinstance(cond, Mapping):
        return out
    for op, clauses in cond.items():
        if not isinstance(clauses, Mapping):
            continue
        for key, values in clauses.items():
            out.append((str(op), str(key), [str(v) for v in as_list(values)]))
    return out


def _base_operator(op: str) -> str:
    """``ForAnyValue:StringEqualsIfExists`` -> ``StringEquals``."""
    base = op.split(":", 1)[1] if op.startswith(("ForAnyValue:", "ForAllValues:")) else op
    return base.removesuffix("IfExists")


def _issuer_path(issuer: str) -> str:
    return issuer.removeprefix("https://").removeprefix("http://").rstrip("/")


# Trust-policy condition keys a Pod Identity request carries (lowercased), and those naming its cluster.
_NS_KEY = "aws:requesttag/kubernetes-namespace"
_SA_KEY = "aws:requesttag/kubernetes-service-account"
_CLUSTER_KEYS = (
    "aws:requesttag/eks-cluster-name",
    "aws:requesttag/eks-cluster-arn",
    "aws:sourcearn",
    "aws:sourceaccount",
)
_EQUALS = ("StringEquals", "StringEqualsIgnoreCase", "ArnEquals")
# An IRSA subject the webhook's tokens carry: system:serviceaccount:<namespace>:<name> (fullmatch, ASCII).
_SUBJECT_RE = re.compile(r"system:serviceaccount:([a-z0-9](?:[-a-z0-9]*[a-z0-9])?):([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)")


def _shown(text: str) -> str:
    """Policy-sourced text as it may reach a terminal: short printable ASCII as is, anything else escaped."""
    if len(text) <= 200 and text.isascii() and text.isprintable():
        return text
    quoted = json.dumps(text)  # ensure_ascii: control and non-ASCII characters become \\u escapes
    return quoted if len(quoted) <= 200 else quoted[:197] + "..."


def _holds(op: str, vals: list[str], actual: str) -> bool | None:
    """Whether the single-valued key ``actual`` satisfies ``op`` on ``vals``; None for an operator not evaluated."""
    base = _base_operator(op)
    negated = base.startswith(("StringNot", "ArnNot"))
    positive = base.replace("Not", "", 1) if negated else base
    if positive in ("StringEquals", "ArnEquals"):
        hit = actual in vals
    elif positive == "StringEqualsIgnoreCase":
        hit = actual.lower() in (v.lower() for v in vals)
    elif positive in ("StringLike", "ArnLike"):
        hit = any(wildcard(v, actual, case_sensitive=True) for v in vals)
    else:
        return None
    return hit != negated


def _key_conditions(st: Mapping[str, Any], key: str) -> list[tuple[str, list[str]]]:
    return [(op, vals) for op, k, vals in _conditions(st) if k.lower() == key.lower()]


def _admits(conds: list[tuple[str, list[str]]], actual: str) -> bool:
    """Every condition on the key holds for ``actual`` (none: admitted; an operator not evaluated: not)."""
    return all(_holds(op, vals, actual) is True for op, vals in conds)


def _exact_values(conds: list[tuple[str, list[str]]]) -> list[str] | None:
    """The values the conditions on one key admit when they name them one by one; None for no condition,
    a pattern, a negation or an operator not evaluated."""
    if not conds:
        return None
    for op, vals in conds:
        base = _base_operator(op)
        if not (base in _EQUALS or (base in ("StringLike", "ArnLike") and not any("*" in v or "?" in v for v in vals))):
            return None
    return [v for v in conds[0][1] if _admits(conds, v)]


def _describe(conds: list[tuple[str, list[str]]], noun: str) -> str:
    """What the conditions on one key admit, for a message."""
    if not conds:
        return f"any {noun}"
    exact = _exact_values(conds)
    if exact is not None:
        return ", ".join(_who(v) for v in exact) or "nothing"
    return " and ".join(f"{op} {_shown(json.dumps(vals if len(vals) != 1 else vals[0]))}" for op, vals in conds)


def _who(value: str) -> str:
    """An IRSA subject as ``namespace/name``; any other value escaped."""
    m = _SUBJECT_RE.fullmatch(value)
    return f"{m.group(1)}/{m.group(2)}" if m else _shown(value)


def _share_text(share: TrustShare) -> str:
    subject = f"{share.namespace}/{share.service_account}" if share.namespace else "this ServiceAccount"
    where = share.oidc_issuer or share.cluster
    return f"{subject} in cluster {where}" if where else subject


class _Trust:
    """One workload's trust lint in progress: its findings, its notes, the trustSharedWith entries used."""

    def __init__(self, profile: Profile, w: Workload, session_tags: bool = True) -> None:
        self.profile, self.w, self.role = profile, w, _role_name(w)
        self.session_tags = session_tags
        self.next = (f"aws iam get-role --role-name {self.role} --query Role.AssumeRolePolicyDocument",)
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.used: set[int] = set()

    def finding(self, summary: str, expected: str, seen: str, likely: str, **details: str) -> None:
        self.findings.append(
            Finding("trust_policy", f"{workload_label(self.w)}: {summary}", expected, seen, likely, self.next, details)
        )

    def declared(self, labels: Iterable[str], who: str, indices: Iterable[int]) -> None:
        """Record admitted subjects the profile declares, with the reasons it gives."""
        indices = sorted(set(indices))
        self.used.update(indices)
        reasons = "; ".join(self.w.trust_shared_with[n].reason for n in indices)
        self.notes.append(
            f"role {self.role} trust admits {who} ({', '.join(labels)}), declared in trustSharedWith: {reasons}"
        )

    def irsa_share(self, ns: str, sa: str, issuer_path: str | None) -> int | None:
        """The trustSharedWith entry naming ``ns/sa`` (in the cluster of ``issuer_path``; None: this one)."""
        w = self.w
        for n, share in enumerate(w.trust_shared_with):
            subject = (share.namespace or w.namespace, share.service_account or w.service_account)
            where = _issuer_path(share.oidc_issuer).lower() if share.oidc_issuer else None
            if subject == (ns, sa) and where == (issuer_path.lower() if issuer_path else None):
                return n
        return None

    def stale(self) -> None:
        for n, share in enumerate(self.w.trust_shared_with):
            if n not in self.used:
                self.notes.append(
                    f"trustSharedWith[{n}] declares {_share_text(share)}, but no statement of role {self.role}'s "
                    "trust admits it: remove the entry, or restore the statement it was written for"
                )


def trust_findings(
    profile: Profile, w: Workload, trust: Mapping[str, Any], *, oidc_issuer: str | None, session_tags: bool = True
) -> list[Finding]:
    """Lint the role's trust policy for the workload's mechanism; empty when it is tight and correct.

    One statement admitting the workload is enough; the statement(s) admitting it are linted for
    narrowness. Every other statement is reported for what it admits: other ServiceAccounts (a
    shared role) or the same one in another cluster, unless the workload's ``trustSharedWith``
    declares them (then :func:`trust_notes` says so). Statements dangerous on their own (Principal
    ``"*"``, NotPrincipal, wildcard or negated subjects, other principals) are always reported.

    ``oidc_issuer`` is the cluster's issuer URL (``https://oidc.eks.<region>.amazonaws.com/id/X``);
    when it is None, every IAM OIDC provider of the cluster's account is taken as a candidate and
    linted against its own ``<issuer>:sub``/``:aud`` keys (a foreign issuer cannot be told apart,
    unless ``trustSharedWith`` names it). Narrowing conditions that are merely absent on a Pod
    Identity trust are not findings: see :func:`trust_notes`.

    ``session_tags`` is False when the workload's Pod Identity association sets ``disableSessionTags``:
    EKS Auth then sends no ``aws:RequestTag/*`` keys, so conditions on them exclude the workload, and
    only ``sts:AssumeRole`` is needed.
    """
    return _trust(profile, w, trust, oidc_issuer, session_tags).findings


def trust_notes(
    profile: Profile, w: Workload, trust: Mapping[str, Any], *, oidc_issuer: str | None, session_tags: bool = True
) -> list[str]:
    """Advice and declarations, not failures, for the report.

    Pod Identity: narrowing conditions the statement(s) admitting the workload could carry but do
    not (when several, each note names the statements lacking it). Both mechanisms: subjects the
    trust admits besides the workload that ``trustSharedWith`` declares, with its reasons, and
    declarations no statement matches any more.
    """
    return _trust(profile, w, trust, oidc_issuer, session_tags).notes


def _trust(
    profile: Profile, w: Workload, trust: Mapping[str, Any], oidc_issuer: str | None, session_tags: bool = True
) -> _Trust:
    t = _Trust(profile, w, session_tags)
    role = t.role
    allows = [(i, st) for i, st in enumerate(statements(trust)) if is_allow(st)]
    if w.mechanism == "irsa":
        expected_principal = _irsa_expected_principal(profile, w, oidc_issuer)
    else:
        expected_principal = f"Service {PODS_PRINCIPAL}"

    for i, st in allows:
        if "NotPrincipal" in st:
            t.finding(
                f"role {role} trust: {statement_label(st, i)} allows with NotPrincipal",
                f"only {expected_principal} may assume the role",
                quote_statement(st, "Effect", "NotPrincipal", "Action"),
                "Allow with NotPrincipal trusts every principal except the listed ones, in every account",
                statement=statement_label(st, i),
            )
        if any(v == "*" for _, v in _principals(st)):
            t.finding(
                f'role {role} trust: {statement_label(st, i)} trusts Principal "*"',
                f"only {expected_principal} may assume the role",
                quote_statement(st, "Effect", "Principal", "Action", "Condition"),
                'Principal "*" lets any AWS principal (any account) assume the role, limited only by its '
                "conditions; the role's permissions are exposed outside the cluster",
                statement=statement_label(st, i),
            )

    if w.mechanism == "irsa":
        _irsa_trust(t, allows, oidc_issuer)
    else:
        _pod_identity_trust(t, allows)
        t.notes[:0] = _narrowing_notes(profile, w, trust, session_tags)
    t.stale()
    return t


def _irsa_expected_principal(profile: Profile, w: Workload, oidc_issuer: str | None) -> str:
    account = profile.cluster.account_id
    if oidc_issuer is None:
        return f"Federated arn:{_partition(w.role_arn)}:iam::{account}:oidc-provider/<this cluster's issuer>"
    return f"Federated arn:{_partition(w.role_arn)}:iam::{account}:oidc-provider/{_issuer_path(oidc_issuer)}"


def _irsa_trust(t: _Trust, allows: list[tuple[int, dict[str, Any]]], oidc_issuer: str | None) -> None:
    profile, w, role = t.profile, t.w, t.role
    account = profile.cluster.account_id
    issuer = _issuer_path(oidc_issuer) if oidc_issuer else None
    provider = f"arn:{_partition(w.role_arn)}:iam::{account}:oidc-provider/{issuer}" if issuer else None
    expected_principal = _irsa_expected_principal(profile, w, oidc_issuer)
    declared_issuers = {_issuer_path(s.oidc_issuer).lower() for s in w.trust_shared_with if s.oidc_issuer}
    candidates: list[tuple[int, dict[str, Any], str]] = []  # (index, statement, issuer path)

    for i, st in allows:
        for kind, value in _principals(st):
            if value == "*":
                continue  # reported above
            m = _OIDC_PROVIDER_RE.match(value) if kind == "Federated" else None
            if m is not None:
                if provider:
                    same = provider.lower() == value.lower()
                else:  # the issuer is unknown: any provider of the account, except another cluster's declared one
                    same = m.group(1) == account and m.group(2).lower() not in declared_issuers
                if same:
                    candidates.append((i, st, m.group(2)))
                else:
                    _irsa_foreign(t, i, st, m.group(1), m.group(2), expected_principal)
                continue
            if kind == "Service" and value.lower() == PODS_PRINCIPAL:
                likely = (
                    "the role also trusts EKS Pod Identity: any Pod Identity association in the account can bind "
                    "it to another ServiceAccount (a trust left over from a migration between mechanisms)"
                )
            else:
                likely = (
                    f"{kind} {_shown(value)} can assume the workload's role outside Kubernetes and act as "
                    f"{w.namespace}/{w.service_account} with all its permissions; a role shared between "
                    "callers should be split"
                )
            t.finding(
                f"role {role} trust: extra principal in {statement_label(st, i)}: {kind} {_shown(value)}",
                f"only {expected_principal}",
                quote_statement(st, "Principal", "Action"),
                likely,
                statement=statement_label(st, i),
            )

    usable = [(i, st, path) for i, st, path in candidates if grants_action(st, WEB_IDENTITY_ACTION)]
    if not usable:
        if candidates:
            seen = "; ".join(
                f"{statement_label(st, i)}: {quote_statement(st, 'Principal', 'Action')}" for i, st, _ in candidates
            )
            summary = f"role {role} trust: the cluster's OIDC provider may not call {WEB_IDENTITY_ACTION}"
        else:
            federated = [f"{k} {_shown(v)}" for _, st in allows for k, v in _principals(st)]
            seen = f"principals: {', '.join(federated) or 'none'}"
            summary = f"role {role} does not trust the cluster's OIDC provider"
        t.finding(
            summary,
            f"an Allow statement for {expected_principal} with Action {WEB_IDENTITY_ACTION}",
            seen,
            f"{FM_TRUST_DENIED}: STS refuses the pod's token (AccessDenied: Not authorized to perform "
            f"{WEB_IDENTITY_ACTION}); the role was written for another cluster or for EKS Pod Identity",
        )
        return

    expected_sub = f"system:serviceaccount:{w.namespace}:{w.service_account}"
    admitting = [(i, st, path) for i, st, path in usable if _admits(_key_conditions(st, f"{path}:sub"), expected_sub)]
    for i, st, path in usable:
        _irsa_subject_lint(t, i, st, path, admitting=any(j == i for j, _, _ in admitting))
    if not admitting:
        sub_key = f"{usable[0][2]}:sub"
        t.finding(
            f"role {role} trust: sub does not admit {w.namespace}/{w.service_account} "
            f"({', '.join(statement_label(st, i) for i, st, _ in usable)})",
            f'StringEquals {{"{sub_key}": "{expected_sub}"}} in one Allow statement',
            "; ".join(
                f"{statement_label(st, i)} admits {_describe(_key_conditions(st, f'{path}:sub'), 'subject')}"
                for i, st, path in usable
            ),
            f"{FM_TRUST_DENIED}: STS answers AccessDenied for this ServiceAccount; no statement names it, the "
            "trust names other namespaces or ServiceAccounts (renamed, the workload moved, or another workload's role)",
            statement=", ".join(statement_label(st, i) for i, st, _ in usable),
        )
        return
    audience_ok = {i for i, st, path in admitting if _admits(_key_conditions(st, f"{path}:aud"), STS_AUDIENCE)}
    for i, st, path in admitting:
        _irsa_audience_lint(t, i, st, path, admitted_elsewhere=bool(audience_ok - {i}))
    _irsa_shared(t, usable, expected_sub)


def _irsa_foreign(t: _Trust, i: int, st: dict[str, Any], account: str, path: str, expected_principal: str) -> None:
    """A statement trusting another OIDC provider: declared (the same or another SA in another cluster) or not."""
    w, label = t.w, statement_label(st, i)
    subs = _key_conditions(st, f"{path}:sub")
    exact = _exact_values(subs) if grants_action(st, WEB_IDENTITY_ACTION) else None
    if exact and account == role_arn_parts(w.role_arn)[0]:
        subjects = [_SUBJECT_RE.fullmatch(v) for v in exact]
        shares = [t.irsa_share(m.group(1), m.group(2), path) if m else None for m in subjects]
        if all(n is not None for n in shares):
            who = f"{', '.join(_who(v) for v in exact)} in the cluster of issuer {_shown(path)}"
            t.declared([label], who, (n for n in shares if n is not None))
            return
    where = f"account {account}" if account != t.profile.cluster.account_id else f"issuer {_shown(path)}"
    t.finding(
        f"role {t.role} trust: {label} trusts another OIDC provider ({where})",
        f"only {expected_principal}, or another cluster's subjects declared under trustSharedWith (oidcIssuer)",
        f"{quote_statement(st, 'Principal', 'Action')}; it admits {_describe(subs, 'ServiceAccount of that cluster')}",
        "a trust policy copied from another cluster, or this cluster was recreated and got a new "
        "issuer: that cluster's ServiceAccounts can assume the role, and if no statement names "
        f"this cluster's provider its tokens are refused ({FM_TRUST_DENIED})",
        statement=label,
    )


def _irsa_subject_lint(t: _Trust, i: int, st: dict[str, Any], path: str, *, admitting: bool) -> None:
    """The statement's sub conditions: missing, wildcard or negated (dangerous whoever they admit);
    StringLike without a wildcard only where the statement admits the workload."""
    w, role, label = t.w, t.role, statement_label(st, i)
    sub_key = f"{path}:sub"
    expect_sub = f'StringEquals {{"{sub_key}": "system:serviceaccount:{w.namespace}:{w.service_account}"}}'
    subs = _key_conditions(st, sub_key)
    if not subs:
        t.finding(
            f"role {role} trust: {label} has no sub condition",
            expect_sub,
            f"no condition on {sub_key}{_other_issuer_note(st, path)}: {quote_statement(st, 'Condition')}",
            "every ServiceAccount of every namespace in the cluster can assume the role once its pod "
            f"is annotated — wider still than {AP_WILDCARD_TRUST}",
            statement=label,
        )
    for op, vals in subs:
        base = _base_operator(op)
        wild = [v for v in vals if "*" in v or "?" in v]
        seen = f'{op} {{"{sub_key}": {json.dumps(vals if len(vals) != 1 else vals[0])}}}'
        if wild and base in ("StringLike", "StringNotLike"):
            t.finding(
                f"role {role} trust: wildcard subject widens trust ({label})",
                expect_sub,
                seen,
                f"{AP_WILDCARD_TRUST}: every ServiceAccount matching {', '.join(map(_shown, wild))} can assume the "
                "role, so anyone who may create a ServiceAccount or pod there gets its permissions",
                statement=label,
            )
        elif wild:
            t.finding(
                f"role {role} trust: wildcard subject widens trust ({label}) — but under {base} it is literal",
                expect_sub,
                seen,
                f"the wildcard was meant to widen trust ({AP_WILDCARD_TRUST}); under {base} '*' and '?' "
                f"match only themselves, so no real ServiceAccount matches and STS refuses ({FM_TRUST_DENIED})",
                statement=label,
            )
        elif base == "StringLike":
            if admitting:
                t.finding(
                    f"role {role} trust: sub condition uses StringLike ({label})",
                    expect_sub,
                    seen,
                    "StringLike without a wildcard behaves like StringEquals today, but invites one: "
                    f"a later '*' silently widens trust ({AP_WILDCARD_TRUST})",
                    statement=label,
                )
        elif base != "StringEquals":
            t.finding(
                f"role {role} trust: sub condition uses {op} ({label})",
                expect_sub,
                seen,
                f"{op} on the subject does not pin one ServiceAccount; negated operators admit every other one",
                statement=label,
            )


def _other_issuer_note(st: Mapping[str, Any], path: str) -> str:
    own = {f"{path}:sub".lower(), f"{path}:aud".lower()}
    others = sorted({k for _, k, _ in _conditions(st) if k.lower().endswith((":sub", ":aud")) and k.lower() not in own})
    return f"; it constrains {', '.join(map(_shown, others))} (another issuer's keys)" if others else ""


def _irsa_audience_lint(t: _Trust, i: int, st: dict[str, Any], path: str, *, admitted_elsewhere: bool) -> None:
    """The aud conditions of a statement admitting the workload (``admitted_elsewhere``: another one
    admitting it accepts the STS audience, so a wrong one here widens trust rather than denies)."""
    role, label = t.role, statement_label(st, i)
    aud_key = f"{path}:aud"
    expect_aud = f'StringEquals {{"{aud_key}": "{STS_AUDIENCE}"}}'
    auds = _key_conditions(st, aud_key)
    if not auds:
        t.finding(
            f"role {role} trust: {label} has no aud condition",
            expect_aud,
            f"no condition on {aud_key}{_other_issuer_note(st, path)}: {quote_statement(st, 'Condition')}",
            "tokens minted for any audience the OIDC provider lists are accepted, not only the ones the "
            "webhook projects for STS",
            statement=label,
        )
    for op, vals in auds:
        base = _base_operator(op)
        seen = f'{op} {{"{aud_key}": {json.dumps(vals if len(vals) != 1 else vals[0])}}}'
        if base != "StringEquals":
            t.finding(
                f"role {role} trust: aud condition uses {op} ({label})",
                expect_aud,
                seen,
                f"{op} does not pin the token audience to {STS_AUDIENCE}",
                statement=label,
            )
        elif STS_AUDIENCE not in vals and admitted_elsewhere:
            t.finding(
                f"role {role} trust: aud admits other audiences too ({label})",
                expect_aud,
                seen,
                "another statement admits the STS audience; this one accepts the ServiceAccount's tokens "
                "minted for other audiences (other systems that accept the cluster's tokens), which can be replayed",
                statement=label,
            )
        elif STS_AUDIENCE not in vals:
            t.finding(
                f"role {role} trust: aud does not admit {STS_AUDIENCE} ({label})",
                expect_aud,
                seen,
                f"{FM_TRUST_DENIED}: the webhook projects tokens for {STS_AUDIENCE} (unless the ServiceAccount "
                "sets eks.amazonaws.com/audience), so STS refuses them",
                statement=label,
            )
        elif len(set(vals)) > 1:
            t.finding(
                f"role {role} trust: aud admits other audiences too ({label})",
                expect_aud,
                seen,
                "tokens minted for other audiences (other systems that accept the cluster's tokens) "
                "can be replayed to assume this role",
                statement=label,
            )


def _irsa_shared(t: _Trust, usable: list[tuple[int, dict[str, Any], str]], expected_sub: str) -> None:
    """Subjects of this cluster named besides the workload: declared (notes) or a shared role (one finding)."""
    undeclared: dict[str, list[str]] = {}  # who -> labels
    declared: dict[str, tuple[list[str], set[int]]] = {}
    for i, st, path in usable:
        for value in _exact_values(_key_conditions(st, f"{path}:sub")) or []:
            if value == expected_sub:
                continue
            m = _SUBJECT_RE.fullmatch(value)
            n = t.irsa_share(m.group(1), m.group(2), None) if m else None
            if n is None:
                undeclared.setdefault(_who(value), []).append(statement_label(st, i))
            else:
                labels, indices = declared.setdefault(_who(value), ([], set()))
                labels.append(statement_label(st, i))
                indices.add(n)
    for who, (labels, indices) in declared.items():
        t.declared(labels, who, indices)
    if undeclared:
        _shared_finding(t, undeclared, f'StringEquals {{"{usable[0][2]}:sub": "{expected_sub}"}}', "sub admits")


def _shared_finding(t: _Trust, undeclared: Mapping[str, list[str]], expected: str, what: str) -> None:
    who = list(undeclared)
    labels = sorted({label for ls in undeclared.values() for label in ls})
    shown = ", ".join(who[:3]) + (f" and {len(who) - 3} more" if len(who) > 3 else "")
    t.finding(
        f"role {t.role} trust: {what} other ServiceAccounts too: {shown}",
        f"{expected}, and only that; or each other subject declared under trustSharedWith with its reason",
        "; ".join(f"{w} ({', '.join(ls)})" for w, ls in undeclared.items()),
        f"the role is shared with {len(who)} other ServiceAccount{'s' if len(who) > 1 else ''} ({AP_SHARED_ROLE}): "
        "audit and blast radius no longer follow one workload; give each workload its own role, or declare "
        "the sharing in the profile",
        statement=", ".join(labels),
    )


def _cluster_context(profile: Profile, w: Workload, ns: str, sa: str, cluster: str | None) -> dict[str, str]:
    """What EKS Auth presents to STS for ``ns/sa`` in ``cluster`` (a name in this account and region, an
    ARN, or None: this cluster), by lowercased condition key."""
    c = profile.cluster
    own_arn = f"arn:{_partition(w.role_arn)}:eks:{c.region}:{c.account_id}:cluster/"
    if cluster is None:
        name, arn = c.name, own_arn + c.name
    elif cluster.startswith("arn:"):
        name, arn = cluster.rsplit("/", 1)[1], cluster
    else:
        name, arn = cluster, own_arn + cluster
    return {
        _NS_KEY: ns,
        _SA_KEY: sa,
        "aws:requesttag/eks-cluster-name": name,
        "aws:requesttag/eks-cluster-arn": arn,
        "aws:sourceaccount": arn.split(":")[4],
        "aws:sourcearn": arn,
    }


def _pod_identity_context(profile: Profile, w: Workload, *, session_tags: bool = True) -> dict[str, str | None]:
    """What EKS Auth presents to STS for this workload, by lowercased condition key; a key mapped to None
    is known to be absent: with the association's ``disableSessionTags`` EKS Auth sends no
    ``aws:RequestTag/*`` keys [botocore eks/2017-11-01/service-2.json CreatePodIdentityAssociationRequest
    disableSessionTags: "Disable the automatic sessions tags that are appended by EKS Pod Identity"]."""
    context: dict[str, str | None] = dict(_cluster_context(profile, w, w.namespace, w.service_account, None))
    if not session_tags:
        for key in context:
            if key.startswith(_REQUEST_TAG):
                context[key] = None
    return context


_REQUEST_TAG = "aws:requesttag/"


def _absent_excludes(op: str) -> bool:
    """Whether a condition with ``op`` fails when its key is absent from the request. IAM: ``...IfExists``,
    ``Null`` and ``ForAllValues:`` hold on a missing key, negated operators match it, the rest do not
    [AWS IAM User Guide, "IAM JSON policy elements: Condition operators", "...IfExists", "Null", and
    "Single-valued vs. multivalued context keys"]."""
    if op.endswith("IfExists") or op.startswith("ForAllValues:"):
        return False
    base = _base_operator(op)
    return base != "Null" and not base.startswith(("StringNot", "ArnNot", "NumericNot", "DateNot"))


def _excluding_conditions(st: Mapping[str, Any], context: Mapping[str, str | None]) -> list[str]:
    """Conditions of the statement that this workload's request cannot satisfy (known keys only)."""
    out: list[str] = []
    for op, key, vals in _conditions(st):
        if key.lower() in context and context[key.lower()] is None:
            if _absent_excludes(op):
                out.append(
                    f'{op} {{"{_shown(key)}": ...}} (this workload: no such key; the association disables '
                    "session tags, so EKS Auth sends no aws:RequestTag keys)"
                )
            continue
        actual = context.get(key.lower())
        if actual is None or _holds(op, vals, actual) is not False:
            continue  # operators we do not evaluate never count as excluding
        shown = _shown(json.dumps(vals if len(vals) != 1 else vals[0]))
        out.append(f'{op} {{"{_shown(key)}": {shown}}} (this workload: {actual})')
    return out


def _pi_admits(st: Mapping[str, Any]) -> str:
    """What a Pod Identity statement's conditions admit, for a message."""
    parts = []
    for key, noun in ((_NS_KEY, "namespace"), (_SA_KEY, "ServiceAccount")):
        conds = _key_conditions(st, key)
        parts.append(f"{noun} {_describe(conds, noun)}" if conds else f"any {noun}")
    parts += [
        f"{_shown(key)} {_describe([(op, vals)], 'value')}"
        for op, key, vals in _conditions(st)
        if key.lower() in _CLUSTER_KEYS
    ]
    return ", ".join(parts)


def _pi_share(t: _Trust, st: Mapping[str, Any], subject: tuple[str, str] | None) -> int | None:
    """The trustSharedWith entry the statement admits (naming ``subject`` when given)."""
    w = t.w
    for n, share in enumerate(w.trust_shared_with):
        ns, sa = share.namespace or w.namespace, share.service_account or w.service_account
        if subject is not None and (ns, sa) != subject:
            continue
        if not _excluding_conditions(st, _cluster_context(t.profile, w, ns, sa, share.cluster)):
            return n
    return None


def _pod_identity_trust(t: _Trust, allows: list[tuple[int, dict[str, Any]]]) -> None:
    profile, w, role = t.profile, t.w, t.role
    expected = f"Service {PODS_PRINCIPAL} with Action {POD_IDENTITY_ACTIONS[0]} and {POD_IDENTITY_ACTIONS[1]}"
    candidates: list[tuple[int, dict[str, Any]]] = []
    for i, st in allows:
        pods = False
        for kind, value in _principals(st):
            if value == "*":
                continue
            if kind == "Service" and value.lower() == PODS_PRINCIPAL:
                pods = True
                continue
            t.finding(
                f"role {role} trust: extra principal in {statement_label(st, i)}: {kind} {_shown(value)}",
                f"only Service {PODS_PRINCIPAL}",
                quote_statement(st, "Principal", "Action"),
                f"{kind} {_shown(value)} can assume the workload's role outside EKS Pod Identity and act as "
                f"{w.namespace}/{w.service_account} with all its permissions (an IRSA trust left over from a "
                "migration keeps working until removed)",
                statement=statement_label(st, i),
            )
        if pods:
            candidates.append((i, st))
    if not candidates:
        principals = [f"{k} {_shown(v)}" for _, st in allows for k, v in _principals(st)]
        irsa = any(k == "Federated" for _, st in allows for k, _ in _principals(st))
        t.finding(
            f"role {role} does not trust {PODS_PRINCIPAL}",
            expected,
            f"principals: {', '.join(principals) or 'none'}",
            "EKS Auth cannot assume the role (AssumeRoleForPodIdentity fails), so the agent returns an error "
            "and the SDK gets no credentials"
            + ("; this trust policy is written for IRSA (Federated OIDC provider)" if irsa else ""),
        )
        return
    context = _pod_identity_context(profile, w, session_tags=t.session_tags)
    admitting = [(i, st) for i, st in candidates if not _excluding_conditions(st, context)]
    pool = admitting or candidates
    for action in POD_IDENTITY_ACTIONS:
        if action == "sts:TagSession" and not t.session_tags:
            continue  # without session tags EKS Auth asks for sts:AssumeRole only
        if any(grants_action(st, action) for _, st in pool):
            continue
        seen = "; ".join(
            f"{statement_label(st, i)}: {quote_statement(st, 'Principal', 'Action', 'NotAction')}" for i, st in pool
        )
        if action == "sts:TagSession":
            likely = (
                "EKS Pod Identity tags every session (kubernetes-namespace, kubernetes-service-account, ...); "
                "without sts:TagSession AssumeRoleForPodIdentity fails and the agent returns an error"
            )
        else:
            likely = "without sts:AssumeRole EKS Auth cannot assume the role: AssumeRoleForPodIdentity fails"
        t.finding(f"role {role} trust: {PODS_PRINCIPAL} may not call {action}", expected, seen, likely)
    if not admitting:
        t.finding(
            f"role {role} trust: conditions exclude {w.namespace}/{w.service_account}",
            f"conditions admitting namespace {w.namespace}, ServiceAccount {w.service_account}, "
            f"cluster {profile.cluster.name} in account {profile.cluster.account_id}",
            "; ".join(
                f"{statement_label(st, i)}: {', '.join(_excluding_conditions(st, context))}; it admits {_pi_admits(st)}"
                for i, st in candidates
            ),
            (
                "AssumeRoleForPodIdentity is denied for this workload: the trust's conditions name another "
                "namespace, ServiceAccount, cluster or account (copied from another workload, or the workload moved)"
                if t.session_tags
                else "AssumeRoleForPodIdentity is denied for this workload (Failure Mode 3): its association sets "
                "disableSessionTags, so EKS Auth sends no aws:RequestTag keys and conditions on them cannot hold; "
                "re-enable session tags (aws eks update-pod-identity-association --no-disable-session-tags), or "
                "narrow the trust by aws:SourceArn instead"
            ),
        )
        return
    undeclared: dict[str, list[str]] = {}
    for i, st in candidates:
        if (i, st) not in admitting:
            _pi_other(t, i, st, context, undeclared)
    if undeclared:
        _shared_finding(
            t,
            undeclared,
            f"conditions admitting namespace {w.namespace}, ServiceAccount {w.service_account}",
            "conditions admit",
        )


def _pi_other(
    t: _Trust, i: int, st: dict[str, Any], context: Mapping[str, str | None], undeclared: dict[str, list[str]]
) -> None:
    """A Pod Identity statement that does not admit the workload: declared, another cluster, or a shared role."""
    w, label = t.w, statement_label(st, i)
    ns_vals = _exact_values(_key_conditions(st, _NS_KEY))
    sa_vals = _exact_values(_key_conditions(st, _SA_KEY))
    if ns_vals is not None and sa_vals is not None:  # named subjects: each one must be declared
        shares = {(ns, sa): _pi_share(t, st, (ns, sa)) for ns in ns_vals for sa in sa_vals}
    else:  # a statement without both conditions admits more than any entry names: one matching entry declares it
        shares = {("", ""): _pi_share(t, st, None)}
    if shares and all(n is not None for n in shares.values()):
        t.declared([label], _pi_admits(st), (n for n in shares.values() if n is not None))
        return
    own = _admits(_key_conditions(st, _NS_KEY), w.namespace) and _admits(
        _key_conditions(st, _SA_KEY), w.service_account
    )
    if own:
        t.finding(
            f"role {t.role} trust: {label} admits {w.namespace}/{w.service_account} in another cluster",
            f"conditions admitting cluster {t.profile.cluster.name} in account {t.profile.cluster.account_id}; "
            "or the other cluster declared under trustSharedWith (cluster)",
            f"{label}: {', '.join(_excluding_conditions(st, context))}; it admits {_pi_admits(st)}",
            "the trust was copied from another cluster's role, or one role serves the same workload in several "
            "clusters: a Pod Identity association there gets this role's permissions",
            statement=label,
        )
        return
    missing = [f"{ns}/{sa}" if ns else _pi_admits(st) for (ns, sa), n in shares.items() if n is None]
    for who in missing:
        undeclared.setdefault(who, []).append(label)


_NARROWING = (
    (
        (_NS_KEY,),
        "no aws:RequestTag/kubernetes-namespace condition: any Pod Identity association in the account "
        "may bind this role, in any namespace (narrow it: StringEquals aws:RequestTag/kubernetes-namespace "
        "= {ns})",
    ),
    (
        (_SA_KEY,),
        "no aws:RequestTag/kubernetes-service-account condition: any ServiceAccount named by an association "
        "may use this role (narrow it: StringEquals aws:RequestTag/kubernetes-service-account = {sa})",
    ),
    (
        ("aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid"),
        "no aws:SourceAccount, aws:SourceArn or aws:SourceOrgId condition: the trust is not pinned to "
        "this account's (or organisation's) clusters, the confused-deputy guard the EKS best-practices "
        "guide recommends",
    ),
)


def _narrowing_notes(profile: Profile, w: Workload, trust: Mapping[str, Any], session_tags: bool = True) -> list[str]:
    """Pod Identity: narrowing conditions the admitting statements (all pods statements if none admits) lack."""
    pods = [
        (i, st)
        for i, st in enumerate(statements(trust))
        if is_allow(st) and any(k == "Service" and v.lower() == PODS_PRINCIPAL for k, v in _principals(st))
    ]
    context = _pod_identity_context(profile, w, session_tags=session_tags)
    candidates = [(i, st) for i, st in pods if not _excluding_conditions(st, context)] or pods
    notes: list[str] = []
    if not session_tags:
        notes.append(
            "the association sets disableSessionTags: EKS Auth sends no aws:RequestTag keys, so the trust cannot "
            "be narrowed to this namespace and ServiceAccount; the association alone decides who gets the role"
        )
    for keys, text in _NARROWING:
        if not session_tags and keys[0].startswith(_REQUEST_TAG):
            continue
        lacking = [
            statement_label(st, i)
            for i, st in candidates
            if not any(key.lower() in keys for _, key, _ in _conditions(st))
        ]
        if not lacking:
            continue
        note = text.format(ns=w.namespace, sa=w.service_account)
        notes.append(note if len(candidates) == 1 else f"{', '.join(lacking)}: {note}")
    return notes


@dataclass(frozen=True)
class Admission:
    """One Allow statement of a trust that admits this cluster's ServiceAccounts: what it admits, for a
    message, and the exact (namespace, ServiceAccount) pairs it admits when its conditions name them one by
    one (None: a pattern, a negation, no condition — more than any list can name)."""

    text: str
    subjects: tuple[tuple[str, str], ...] | None


def cluster_admission(profile: Profile, trust: Mapping[str, Any], *, oidc_issuer: str | None) -> list[str]:
    """What ``trust`` admits of this cluster's ServiceAccounts, one text per Allow statement that admits any
    (:func:`cluster_admissions`' texts)."""
    return [a.text for a in cluster_admissions(profile, trust, oidc_issuer=oidc_issuer)]


def cluster_admissions(profile: Profile, trust: Mapping[str, Any], *, oidc_issuer: str | None) -> list[Admission]:
    """The Allow statements of ``trust`` that admit this cluster's ServiceAccounts: IRSA through this cluster's
    IAM OIDC provider (its ``sub`` conditions described), Pod Identity through ``pods.eks.amazonaws.com``
    unless cluster conditions (``aws:SourceArn``, ``aws:SourceAccount``, ``aws:RequestTag/eks-cluster-*``) name
    another cluster, and a bare ``Principal "*"`` without conditions that grants a web identity or role
    assumption (with conditions it is another account's pattern, e.g. ``aws:PrincipalArn``, not this cluster's).
    Empty: it admits none. ``oidc_issuer`` None: the cluster's issuer is unknown and IRSA statements are not
    matched."""
    c = profile.cluster
    issuer = _issuer_path(oidc_issuer).lower() if oidc_issuer else None
    partition = "aws-cn" if c.region.startswith("cn-") else "aws-us-gov" if c.region.startswith("us-gov-") else "aws"
    cluster_arn = f"arn:{partition}:eks:{c.region}:{c.account_id}:cluster/{c.name}"
    context: dict[str, str | None] = {
        "aws:requesttag/eks-cluster-name": c.name,
        "aws:requesttag/eks-cluster-arn": cluster_arn,
        "aws:sourcearn": cluster_arn,
        "aws:sourceaccount": c.account_id,
    }
    out: list[Admission] = []
    for i, st in enumerate(statements(trust)):
        if not is_allow(st):
            continue
        label = statement_label(st, i)
        for kind, value in _principals(st):
            m = _OIDC_PROVIDER_RE.fullmatch(value) if kind == "Federated" else None
            if value == "*":
                if not _conditions(st) and (
                    grants_action(st, WEB_IDENTITY_ACTION) or grants_action(st, "sts:AssumeRole")
                ):
                    out.append(
                        Admission(
                            f'{label}: Principal "*" (any principal, this cluster\'s ServiceAccounts included)', None
                        )
                    )
            elif m and issuer and m.group(1) == c.account_id and m.group(2).lower() == issuer:
                if grants_action(st, WEB_IDENTITY_ACTION):
                    subs = _key_conditions(st, f"{m.group(2)}:sub")
                    exact = _exact_values(subs)
                    pairs = None
                    if exact is not None:
                        found = [_SUBJECT_RE.fullmatch(v) for v in exact]
                        pairs = tuple((f.group(1), f.group(2)) for f in found if f) if all(found) else None
                    out.append(Admission(f"{label}: IRSA, ServiceAccount {_describe(subs, 'ServiceAccount')}", pairs))
            elif (
                kind == "Service"
                and value.lower() == PODS_PRINCIPAL
                and grants_action(st, "sts:AssumeRole")
                and not _excluding_conditions(st, context)
            ):
                namespaces = _exact_values(_key_conditions(st, _NS_KEY))
                accounts = _exact_values(_key_conditions(st, _SA_KEY))
                pairs = (
                    tuple((ns, sa) for ns in namespaces for sa in accounts)
                    if namespaces is not None and accounts is not None
                    else None
                )
                out.append(Admission(f"{label}: Pod Identity, {_pi_admits(st)}", pairs))
    return out
