"""A starter allow/deny contract derived from a role's permission policies (``--eksid-discover``).

``allow``: one entry per action the role's Allow statements grant and the probe catalogue can exercise
safely, on a concrete resource instantiated from the statement's ARN pattern (each wildcard replaced by
a probe-specific name, ``eksid-probe``).

``deny`` is derived from intent, for each resource the role may touch:

- the destructive and permissions-management actions (AWS's access levels, as the permission-policy check
  rates them) the role must not have, unless a statement names the action itself (then it is intended);
  granted only through a wildcard (``s3:*``), the entry is written anyway and says so: it fails until the
  grant is narrowed;
- writes outside the granted prefixes (``s3:PutObject`` on a key beside the granted ``prefix/*``);
- direct KMS use where the grant holds only through a service (``kms:ViaService``);
- ``sqs:ReceiveMessage`` where the role may only send to the queue;
- what the role's own Deny statements forbid, on the resources they name.

Only actions of the probe catalogue become entries (``pytest_eksid/probe/actions.py``, docs/probe.md); the
others are named in a note (written as a YAML comment), never as an entry. Every entry carries ``why``.
Pure data in, data out: no I/O, no pytest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_eksid.checks.policy import (
    SHOWN_FIRST,
    destructive,  # the permission-policy check's own rating
)
from pytest_eksid.iam.actions import AwsAction, expand, lookup
from pytest_eksid.iam.documents import (
    action_patterns_match,
    grants_action,
    grants_resource,
    is_allow,
    statement_ref,
    statements,
)
from pytest_eksid.probe.actions import CATALOGUE, ActionError, plan_item

PROBE_NAME = "eksid-probe"  # what a wildcard of an ARN pattern becomes in a probe's resource
OUTSIDE_PREFIX = "eksid-probe-outside-granted-prefixes"  # an S3 key prefix no grant is expected to cover
VIA_SERVICE = "kms:viaservice"
MAX_NAMED = 6  # actions named in one note; the rest are counted

# Where a grant on every resource ("*") is probed: a stand-in of the service's own ARN form.
_STAND_INS = {
    "s3": "arn:{partition}:s3:::{name}-{account}/{name}",
    "sqs": "arn:{partition}:sqs:{region}:{account}:{name}",
    "kms": "arn:{partition}:kms:{region}:{account}:key/{name}",
    "dynamodb": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "secretsmanager": "arn:{partition}:secretsmanager:{region}:{account}:secret:{name}",
    "ssm": "arn:{partition}:ssm:{region}:{account}:parameter/{name}",
}


@dataclass(frozen=True)
class Entry:
    """One allow or deny entry as the profile writes it (``action``, ``resource``), and why it is there."""

    action: str
    resource: str
    why: str

    def as_profile(self) -> dict[str, Any]:
        return {"action": self.action, "resource": self.resource}


@dataclass
class Contract:
    allow: list[Entry] = field(default_factory=list)
    deny: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not made an entry, and why

    def _add(self, entries: list[Entry], entry: Entry) -> None:
        key = (entry.action.lower(), entry.resource)
        if all((e.action.lower(), e.resource) != key for e in (*self.allow, *self.deny)):
            entries.append(entry)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass(frozen=True)
class Grant:
    """One Allow statement's grant of one catalogue action on one resource pattern."""

    policy: str
    ref: str  # the statement's Sid or index
    action: str  # the catalogue action (canonical spelling)
    via: str  # the Action pattern that grants it (the action itself, or a wildcard such as s3:*)
    pattern: str  # the Resource pattern
    statement: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.policy}#{self.ref}"

    @property
    def named(self) -> bool:
        """The statement names the action itself (no wildcard): intended, by the policy's own words."""
        return self.via.lower() == self.action.lower()


def _arn(resource: str) -> list[str] | None:
    parts = resource.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else None


def instantiate(pattern: str, service: str, *, region: str, account: str) -> tuple[str, str] | None:
    """A concrete resource for a probe from an ARN pattern, and how it was made ("" when the pattern named one);
    None when no resource of the service's form can be made from it."""
    partition = "aws"
    if pattern == "*":
        template = _STAND_INS.get(service)
        if template is None:
            return None
        resource = template.format(partition=partition, region=region, account=account, name=PROBE_NAME)
        return resource, 'the grant is on every resource ("*"): the probe names a stand-in that may not exist'
    parts = _arn(pattern)
    if parts is None:
        return None
    if parts[2] not in (service, "*"):
        return None
    parts[2] = service
    if parts[1] in ("", "*") or "*" in parts[1] or "?" in parts[1]:
        parts[1] = partition
    if service != "s3":  # S3 ARNs have neither region nor account
        if "*" in parts[3] or "?" in parts[3]:
            parts[3] = region
        if "*" in parts[4] or "?" in parts[4]:
            parts[4] = account
    rest = parts[5]
    if "*" not in rest and "?" not in rest and "*" not in pattern and "?" not in pattern:
        return pattern, ""
    concrete = re.sub(r"\*+", PROBE_NAME, rest).replace("?", "x")
    return ":".join([*parts[:5], concrete]), f"from the pattern {pattern}, each wildcard replaced by {PROBE_NAME!r}"


def probeable(action: str, resource: str) -> bool:
    """Whether the catalogue can exercise ``action`` on ``resource`` with no params (its safe form)."""
    try:
        plan_item(ident="x", expect="allowed", action=action, resource=resource, params={}, live=False, call=None)
    except ActionError:
        return False
    return True


def _conditions(st: Mapping[str, Any]) -> dict[str, list[str]]:
    """Condition keys (lowercased) -> their values, whatever the operator."""
    out: dict[str, list[str]] = {}
    condition = st.get("Condition")
    if not isinstance(condition, Mapping):
        return out
    for block in condition.values():
        if isinstance(block, Mapping):
            for key, value in block.items():
                values = value if isinstance(value, list) else [value]
                out.setdefault(str(key).lower(), []).extend(str(v) for v in values)
    return out


def _catalogue_actions(pattern: str) -> list[str]:
    """The catalogue's actions an Action pattern covers."""
    return [a for a in CATALOGUE if action_patterns_match([pattern], a) is not None]


def _service_of(resource_pattern: str, action: str) -> str:
    parts = _arn(resource_pattern)
    return parts[2] if parts is not None and parts[2] not in ("", "*") else action.partition(":")[0].lower()


_RANK = {a.lower(): n for n, a in enumerate(SHOWN_FIRST)}


def _named(actions: Iterable[str]) -> str:
    """Best known first (as the permission-policy check names them), then alphabetical; past MAX_NAMED counted."""
    names = sorted(set(actions), key=lambda a: (_RANK.get(a.lower(), len(_RANK)), a))
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


class _Deriver:
    def __init__(self, policies: Mapping[str, Mapping[str, Any]], region: str, account: str) -> None:
        self.policies = policies
        self.region = region
        self.account = account
        self.contract = Contract()
        self.allows: list[tuple[str, str, Mapping[str, Any]]] = []  # (policy, ref, statement)

    def granting(self, action: str, resource: str) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [
            (p, r, st)
            for p, r, st in self.allows
            if grants_action(st, action) is not None and grants_resource(st, resource)
        ]

    def named_grant(self, action: str, resource: str) -> bool:
        """Some Allow statement names the action itself (no wildcard) on the resource."""
        return any(
            action_patterns_match([a for a in st.get("Action", []) if "*" not in a and "?" not in a], action)
            for _, _, st in self.granting(action, resource)
        )

    def run(self) -> Contract:
        grants: list[Grant] = []
        for name, document in self.policies.items():
            for i, st in enumerate(statements(document)):
                ref = statement_ref(st, i)
                if not is_allow(st):
                    self.deny_statement(name, ref, st)
                    continue
                self.allows.append((name, ref, st))
                if "NotAction" in st or "NotResource" in st:
                    key = "NotAction" if "NotAction" in st else "NotResource"
                    self.contract.note(
                        f"{name}#{ref} allows with {key}: everything but a list is granted, which no starter entry "
                        "can stand for; review it and write the entries by hand"
                    )
                    continue
                for via in st.get("Action", []):
                    for action in _catalogue_actions(via):
                        for pattern in st.get("Resource", []):
                            grants.append(Grant(name, ref, action, via, pattern, st))
                    unprobed = [a.action for a in expand(via) if a.action not in CATALOGUE]
                    if unprobed and via != "*":
                        self.contract.note(
                            f"{name}#{ref} grants {_named(unprobed)} (from {via}): no safe probe in the catalogue, "
                            "so no entry (docs/probe.md: the generic form runs calls for real)"
                        )
        for grant in grants:
            self.allow(grant)
        for grant in grants:
            self.intent(grant)
        return self.contract

    def resource_for(self, action: str, pattern: str) -> tuple[str, str] | None:
        made = instantiate(pattern, _service_of(pattern, action), region=self.region, account=self.account)
        if made is None or not probeable(action, made[0]):
            return None
        return made

    def allow(self, g: Grant) -> None:
        conditions = _conditions(g.statement)
        if VIA_SERVICE in conditions:
            return  # usable through the named services only: the probe's direct call would be denied (see intent)
        if not g.named and destructive(_aws(g.action)):
            return  # a destructive action granted through a wildcard: intent says deny (see intent)
        made = self.resource_for(g.action, g.pattern)
        if made is None:
            self.contract.note(
                f"{g.where} grants {g.action} on {g.pattern}: the catalogue's safe form needs a resource (or params) "
                "this pattern does not give; write the entry by hand"
            )
            return
        resource, how = made
        why = f"granted by {g.where}" + (f" ({how})" if how else "")
        if g.via.lower() != g.action.lower():
            why += f", through {g.via}"
        if conditions:
            why += f"; the grant has conditions ({', '.join(sorted(conditions))}): the probe's call must meet them"
        self.contract._add(self.contract.allow, Entry(g.action, resource, why))

    def intent(self, g: Grant) -> None:
        made = self.resource_for(g.action, g.pattern)
        if made is None:
            return
        resource = made[0]
        conditions = _conditions(g.statement)
        service = g.action.partition(":")[0]
        if VIA_SERVICE in conditions:
            through = ", ".join(conditions[VIA_SERVICE])
            self.deny(
                g.action,
                resource,
                f"{g.where} grants {g.action} only through {through} (kms:ViaService): a direct call must be denied",
            )
        if service == "sqs" and g.action == "sqs:SendMessage" and not self.granting("sqs:ReceiveMessage", resource):
            self.deny("sqs:ReceiveMessage", resource, f"{g.where} grants only sending to this queue, not receiving")
        if g.action == "s3:PutObject":
            self.outside_prefix(g, resource)
        for action in CATALOGUE:
            if action.partition(":")[0] != service or not destructive(_aws(action)):
                continue
            if self.named_grant(action, resource):
                continue  # the policy names it: intended (an allow entry, if it is probeable)
            granted = self.granting(action, resource)
            why = f"destructive ({', '.join(sorted(_aws(action).levels))}) on a resource {g.where} lets the role touch"
            if granted:
                via = ", ".join(f"{p}#{r}" for p, r, _ in granted)
                why += f"; granted today only through a wildcard ({via}): this entry fails until that grant is narrowed"
            self.deny(action, resource, why)
        unprobed = [
            a.action
            for a in _service_actions(service)
            if destructive(a) and a.action not in CATALOGUE and a.scoped and not self.named_grant(a.action, resource)
        ]
        if unprobed:
            self.contract.note(
                f"not probed on {resource} (no safe probe in the catalogue): destructive or permissions-management "
                f"actions such as {_named(unprobed)}; the permission-policy check flags them where granted"
            )

    def outside_prefix(self, g: Grant, resource: str) -> None:
        parts = _arn(g.pattern)
        if parts is None or "/" not in parts[5]:
            return  # a bucket-wide grant (bucket/*) or every resource: no prefix to stay inside
        bucket, _, prefix = parts[5].partition("/")
        if "*" in bucket or "?" in bucket or not prefix.rstrip("*"):
            return
        concrete_bucket = resource.split(":", 5)[5].partition("/")[0]
        outside = f"arn:aws:s3:::{concrete_bucket}/{OUTSIDE_PREFIX}/{PROBE_NAME}"
        if self.granting("s3:PutObject", outside):
            return  # another grant covers it: not outside every granted prefix
        self.deny(
            "s3:PutObject", outside, f"{g.where} grants writes under {prefix} only: a write beside it must be denied"
        )

    def deny_statement(self, name: str, ref: str, st: Mapping[str, Any]) -> None:
        if str(st.get("Effect", "")).lower() != "deny":
            return
        if "NotAction" in st or "NotResource" in st or st.get("Condition"):
            self.contract.note(
                f"{name}#{ref} denies with NotAction, NotResource or a condition: kept in the role, not made an entry"
            )
            return
        for via in st.get("Action", []):
            for action in _catalogue_actions(via):
                for pattern in st.get("Resource", []):
                    made = self.resource_for(action, pattern)
                    if made is not None:
                        self.deny(action, made[0], f"the role's own Deny statement {name}#{ref} forbids it")

    def deny(self, action: str, resource: str, why: str) -> None:
        if probeable(action, resource):  # s3:DeleteObject needs an object, not a bucket
            self.contract._add(self.contract.deny, Entry(action, resource, why))


def _aws(action: str) -> AwsAction:
    found = lookup(action)
    if found is None:  # every catalogue action is one AWS documents (tests/test_actions.py)
        raise LookupError(action)
    return found


def _service_actions(service: str) -> list[AwsAction]:
    return expand(f"{service}:*")


def derive(policies: Mapping[str, Mapping[str, Any]], *, region: str, account: str) -> Contract:
    """The starter contract for a role with these permission policies (policy name -> document)."""
    return _Deriver(policies, region, account).run()


__all__ = ["Contract", "Entry", "derive", "instantiate", "probeable"]
