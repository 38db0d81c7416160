"""The inventory as a record over time: one row per identity found in a cluster, and what changed since an
earlier run's inventory (``--eksid-inventory-baseline``).

Plain data in, plain data out; no pytest, no I/O but reading a baseline file. The rows' columns and their
rendering (json, csv, md) are pytest_eksid.report's; docs/inventory.md says where each value comes from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_eksid.checks.identities import show_command
from pytest_eksid.escape import command_name, printable, shown
from pytest_eksid.profile import INVENTORY_CHANGES, LoadedProfile
from pytest_eksid.report import FAMILIES, INVENTORY_COLUMNS, inventory_rows
from pytest_eksid.settings import Setting

DECLARED, NOT_FOUND, UNDECLARED = "declared", "declared, not found", "undeclared"
IAM_TRUST = "iam-trust"
# A baseline larger than this is refused (a fleet of thousands of identities is a few MB of JSON).
MAX_BASELINE_BYTES = 64 * 1024 * 1024

Row = dict[str, str | None]


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def identity_rows(
    loaded: LoadedProfile,
    matrix: Mapping[str, Mapping[str, str]],
    changed: Mapping[str, str | None],
    found: Sequence[Mapping[str, Any]] | None,
    become: Mapping[str, tuple[str, str]] | None = None,
    *,
    iam_scanned: bool = False,
) -> list[Row]:
    """One row per identity of the cluster: each declared workload (with its conformance), then each identity
    the scan found that no workload declares (undeclared, or ignored with its reason).

    ``found``: test_undeclared_identities' records (None: the scan did not run; the rows are the profile's).
    ``become``: workload name -> (count, names) from test_who_can_become. ``iam_scanned``: the scan read the
    account's roles, so a role no record says admits this cluster has ``trust`` "" rather than unknown.
    """
    become = become or {}
    base = {str(r["workload"]): r for r in inventory_rows(loaded, matrix, changed)}
    for name, row in base.items():
        row["status"] = DECLARED
        row["source"] = "profile"
        count, names = become.get(name, (None, None))
        row["canBecomeCount"], row["canBecome"] = count, names
    if found is None:
        return [_complete(row) for row in base.values()]
    trust: dict[str, str] = {}
    for rec in found:
        if _text(rec, "mechanism") == IAM_TRUST:
            trust[_text(rec, "role").lower()] = _text(rec, "admits")
    subjects: dict[tuple[str, str], list[str]] = {}
    for w in loaded.profile.workloads:
        subjects.setdefault((w.namespace, w.service_account), []).append(w.name)
    rows: list[Row] = []
    others: list[Row] = []
    seen: set[str] = set()
    for rec in found:
        status = _text(rec, "status") or UNDECLARED
        mechanism = _text(rec, "mechanism")
        observed: Row = {
            "mechanism": mechanism,
            "role": _text(rec, "role"),
            "targetRole": _text(rec, "targetRole") or None,
            "owner": _text(rec, "owner") or None,
            "created": _text(rec, "created") or None,
            "lastChanged": _text(rec, "changed") or None,
            "source": _text(rec, "source"),
        }
        declaring = subjects.get((_text(rec, "namespace"), _text(rec, "serviceAccount")), [])
        if mechanism != IAM_TRUST and status == DECLARED and declaring:
            for name in declaring:
                row = dict(base[name])
                row.update(observed)
                row["lastChanged"] = observed["lastChanged"] or base[name].get("lastChanged")
                rows.append(row)
                seen.add(name)
            continue
        if mechanism == IAM_TRUST and status == DECLARED:
            continue  # the trust side of a declared binding: its text goes to the rows of that role
        row = {
            "workload": None,
            "cluster": loaded.profile.cluster.name,
            "namespace": _text(rec, "namespace") or None,
            "serviceAccount": _text(rec, "serviceAccount") or None,
            **observed,
            "status": status,
            # test_undeclared_identities asks for undeclared and ignored ServiceAccounts too (None: not asked)
            "canBecomeCount": _text(rec, "canBecomeCount") or None,
            "canBecome": rec.get("canBecome") if isinstance(rec.get("canBecome"), str) else None,
        }
        row.update({f: status for f in FAMILIES})
        others.append(row)
    for name, row in base.items():
        if name not in seen:
            row["status"] = NOT_FOUND
            rows.append(row)
    order = {w.name: i for i, w in enumerate(loaded.profile.workloads)}
    rows.sort(key=lambda r: order.get(str(r["workload"]), len(order)))
    others.sort(key=lambda r: tuple(str(r.get(c) or "") for c in ("mechanism", "namespace", "serviceAccount", "role")))
    out = rows + others
    for row in out:
        role = (row.get("role") or "").lower()
        if role in trust:
            row["trust"] = trust[role]
        elif row.get("mechanism") != IAM_TRUST:
            row["trust"] = "" if iam_scanned else None
    return [_complete(row) for row in out]


def _complete(row: Row) -> Row:
    """The row with every column, in the inventory's order (None: not known)."""
    return {c: row.get(c) for c in INVENTORY_COLUMNS}


# --- the baseline ------------------------------------------------------------------------


class BaselineError(ValueError):
    """The baseline file cannot be compared with; the message says why, in one line."""


def read_baseline(path: Path) -> list[Row]:
    """An earlier run's JSON inventory (this format or the older one of one row per declared workload: a column
    it lacks is unknown). BaselineError, one line, when it is not one."""
    where = printable(str(path))
    if path.suffix.lower() != ".json":
        raise BaselineError(f"{where}: a baseline is an earlier run's JSON inventory (--eksid-inventory x.json)")
    try:
        size = path.stat().st_size
        if size > MAX_BASELINE_BYTES:
            raise BaselineError(f"{where}: {size} bytes, more than an inventory ({MAX_BASELINE_BYTES} at most)")
        data = json.loads(path.read_bytes())
    except BaselineError:
        raise
    except OSError as exc:
        raise BaselineError(f"{where}: cannot read it: {printable(exc.strerror or exc)}") from None
    except (ValueError, RecursionError) as exc:
        reason = printable(str(exc).split("\n")[0])[:200] if isinstance(exc, ValueError) else "nested too deeply"
        raise BaselineError(f"{where}: not JSON ({reason})") from None
    if not isinstance(data, list):
        raise BaselineError(f"{where}: not an inventory: expected a JSON list of rows (--eksid-inventory x.json)")
    rows: list[Row] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise BaselineError(f"{where}: row {i}: expected an object with columns, got {type(item).__name__}")
        row: Row = {}
        for column in INVENTORY_COLUMNS:
            value = item.get(column)
            if value is not None and not isinstance(value, str):
                raise BaselineError(f"{where}: row {i}: column {column!r} is {type(value).__name__}, not text or null")
            row[column] = value
        if not row.get("cluster") or not row.get("mechanism"):
            raise BaselineError(f"{where}: row {i}: no cluster or mechanism: not an inventory row")
        rows.append(row)
    return rows


# --- changes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between the baseline and this run: ``kind`` one of profile.INVENTORY_CHANGES."""

    kind: str
    identity: str  # the identity, as a person finds it (cluster, mechanism, namespace/SA or role), printable
    detail: str  # printable
    # The identity as the cluster wrote it, for a next: command (command_name keeps only what is safe).
    mechanism: str = ""
    namespace: str = ""
    service_account: str = ""
    role: str = ""

    def line(self) -> str:
        return f"{self.kind}: {self.identity}: {self.detail}"

    def summary(self) -> str:
        """The one line a failure of test_inventory_changes starts with."""
        since = {"new": "new since", "removed": "gone since"}.get(self.kind, "changed since")
        return f"{self.kind}: {self.identity}: {since} the baseline inventory"


def row_key(row: Mapping[str, str | None]) -> tuple[str, ...]:
    """What makes an identity the same one in two runs: its binding's cluster, mechanism and ServiceAccount; a
    role trusting the cluster that no binding uses, by its role."""
    if row.get("mechanism") == IAM_TRUST:
        return (row.get("cluster") or "", IAM_TRUST, (row.get("role") or "").lower())
    return (
        row.get("cluster") or "",
        row.get("mechanism") or "",
        row.get("namespace") or "",
        row.get("serviceAccount") or "",
    )


def _label(row: Mapping[str, str | None]) -> str:
    cluster, mechanism = shown(row.get("cluster") or "", 100), shown(row.get("mechanism") or "", 20)
    if row.get("mechanism") == IAM_TRUST:
        return f"{cluster} {mechanism} {shown(row.get('role') or '', 200)}"
    return f"{cluster} {mechanism} {shown(row.get('namespace') or '')}/{shown(row.get('serviceAccount') or '', 253)}"


def _present(rows: Iterable[Mapping[str, str | None]]) -> dict[tuple[str, ...], Mapping[str, str | None]]:
    out: dict[tuple[str, ...], Mapping[str, str | None]] = {}
    for row in rows:
        if row.get("status") != NOT_FOUND:
            out.setdefault(row_key(row), row)
    return out


def _admissions(text: str) -> set[str]:
    return {part.strip() for part in text.split("; ") if part.strip()}


def _subjects(text: str) -> set[str]:
    return {part.strip() for part in text.split(", ") if part.strip()}


def compare(
    baseline: Sequence[Mapping[str, str | None]],
    current: Sequence[Mapping[str, str | None]],
    scanned: Iterable[str] = (),
) -> list[Change]:
    """The identities new, removed and changed since ``baseline``, for the clusters of ``current`` only.

    ``scanned``: the clusters whose identities this run listed (test_undeclared_identities ran); elsewhere
    only the profile's declared rows are known, so the baseline's undeclared and ignored rows are not compared.
    A value either side does not know (null, an older inventory's missing column) is not compared.
    """
    clusters = {row.get("cluster") or "" for row in current}
    scanned_set = set(scanned)
    old = _present(
        r
        for r in baseline
        if (r.get("cluster") or "") in clusters
        and ((r.get("cluster") or "") in scanned_set or r.get("status") in (None, DECLARED))
    )
    new = _present(current)
    changes: list[Change] = []
    for key, row in new.items():
        if key not in old:
            changes.append(Change("new", _label(row), _describe(row), *_raw(row)))
    for key, row in old.items():
        if key not in new:
            changes.append(Change("removed", _label(row), _describe(row), *_raw(row)))
    for key, row in new.items():
        before = old.get(key)
        if before is None:
            continue
        label, raw = _label(row), _raw(row)
        for column, kind in (("role", "role"), ("targetRole", "targetRole"), ("owner", "owner")):
            if column not in before or (column != "targetRole" and before.get(column) is None):
                continue  # unknown in the baseline
            was, now = before.get(column) or "", row.get(column) or ""
            if was != now and (column != "owner" or row.get("status") != NOT_FOUND):
                changes.append(Change(kind, label, f"{_value(was)} -> {_value(now)}", *raw))
        was_trust, now_trust = before.get("trust"), row.get("trust")
        same_role = (before.get("role") or "").lower() == (row.get("role") or "").lower()
        if was_trust is not None and now_trust is not None and same_role:  # another role's trust: a role change
            added = sorted(_admissions(now_trust) - _admissions(was_trust))
            if added:
                changes.append(Change("trust", label, "now admits " + "; ".join(_cut(a, 300) for a in added), *raw))
        was_who, now_who = before.get("canBecome"), row.get("canBecome")
        if was_who is not None and now_who is not None:
            added = sorted(_subjects(now_who) - _subjects(was_who))
            if added:
                changes.append(
                    Change("subjects", label, "can now become it: " + ", ".join(_cut(s, 300) for s in added), *raw)
                )
    kinds = {k: i for i, k in enumerate(INVENTORY_CHANGES)}
    return sorted(changes, key=lambda c: (kinds.get(c.kind, len(kinds)), c.identity, c.detail))


def _raw(row: Mapping[str, str | None]) -> tuple[str, str, str, str]:
    return (
        row.get("mechanism") or "",
        row.get("namespace") or "",
        row.get("serviceAccount") or "",
        row.get("role") or "",
    )


def _cut(text: str, limit: int) -> str:
    """Text with spaces (a trust admission, a subject, an ignore reason), printable and bounded."""
    return printable(text[:limit]) + (f"...(+{len(text) - limit} chars)" if len(text) > limit else "")


def _value(text: str) -> str:
    return shown(text, 200) if text else "(none)"


def _describe(row: Mapping[str, str | None]) -> str:
    parts = [f"role {_value(row.get('role') or '')}"]
    if row.get("targetRole"):
        parts.append(f"then {_value(row.get('targetRole') or '')}")
    if row.get("status"):
        parts.append(_cut(row.get("status") or "", 300))
    return ", ".join(parts)


# What a change most likely means, for the failure test_inventory_changes reports.
LIKELY: dict[str, str] = {
    "new": "an identity created since the baseline: reviewed, or made outside the reviewed path?",
    "removed": "an identity deleted since the baseline (a workload retired, or a binding lost)",
    "role": "the binding now names another role: the pods get that role's permissions",
    "targetRole": "the association now chains to another target role: the pods' calls run as that role",
    "owner": "the ServiceAccount's owner label changed: who answers for this identity changed",
    "trust": "the role's trust policy admits more of this cluster than before (a new statement, a wider sub)",
    "subjects": "RBAC lets more Kubernetes subjects run code as this ServiceAccount than before",
}


def next_command(change: Change, cluster: str) -> str:
    """The command that shows the identity as it is now."""
    ns = command_name(change.namespace, "<namespace>")
    if change.kind == "subjects":
        return f"kubectl get rolebindings -n {ns} -o wide && kubectl get clusterrolebindings -o wide"
    return show_command(change.mechanism, change.namespace, change.service_account, change.role, cluster)


def baseline_path(setting: Setting[str], rootdir: Path, invocation_dir: Path) -> Path:
    """The baseline file a setting names: relative to the rootdir when set in the ini file, else to the
    directory pytest was started in (as --eksid-inventory)."""
    base = rootdir if setting.source.startswith("ini ") else invocation_dir
    return base / Path(setting.value).expanduser()
