"""Server-side printing: the ``meta.k8s.io`` ``Table`` that ``kubectl get`` renders.

Columns and cells per kind as kube-apiserver's printers (k8s.io/kubernetes/pkg/printers/internalversion)
fill them, ``-o wide`` columns at priority 1.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pytest_eksid.sandbox.kubeapi.resources import Obj, ResourceType
from pytest_eksid.sandbox.kubeapi.selectors import format_selector


def human_duration(seconds: float) -> str:
    """As kubectl's AGE column (k8s.io/apimachinery duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _age(ts: Any) -> str:
    if not ts:
        return "<unknown>"
    try:
        when = datetime.strptime(str(ts)[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - when).total_seconds())


def _none(value: Any) -> Any:
    return "<none>" if value in (None, "", []) else value


def _pod_status(pod: Obj) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in reversed(status.get("containerStatuses") or []):
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"] or {}
            reason = t.get("reason") or (
                f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"
            )
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        _pod_status(pod),
        str(restarts),
        _age(pod["metadata"].get("creationTimestamp")),
        _none(status.get("podIP")),
        _none(spec.get("nodeName")),
        _none(status.get("nominatedNodeName")),
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _node_row(node: Obj) -> list[Any]:
    meta, status = node["metadata"], node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = meta.get("labels") or {}
    roles = sorted(
        {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        meta["name"],
        state,
        ",".join(r for r in roles if r) or "<none>",
        _age(meta.get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        _none(addresses.get("InternalIP")),
        _none(addresses.get("ExternalIP")),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _event_row(ev: Obj) -> list[Any]:
    meta, involved, source = ev["metadata"], ev.get("involvedObject") or {}, ev.get("source") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or meta.get("creationTimestamp")
    return [
        _age(last),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        ev.get("message", ""),
        involved.get("fieldPath", ""),
        ", ".join(x for x in (source.get("component", ""), source.get("host", "")) if x),
        _age(ev.get("firstTimestamp") or last),
        int(ev.get("count") or 1),
        meta["name"],
    ]


def _template_cells(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        format_selector(spec.get("selector")),
    ]


def _ds_row(ds: Obj) -> list[Any]:
    st, spec = ds.get("status") or {}, ds.get("spec") or {}
    selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [
        ds["metadata"]["name"],
        int(st.get("desiredNumberScheduled") or 0),
        int(st.get("currentNumberScheduled") or 0),
        int(st.get("numberReady") or 0),
        int(st.get("updatedNumberScheduled") or 0),
        int(st.get("numberAvailable") or 0),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
        _age(ds["metadata"].get("creationTimestamp")),
        *_template_cells(ds),
    ]


def _deploy_row(d: Obj) -> list[Any]:
    st, spec = d.get("status") or {}, d.get("spec") or {}
    return [
        d["metadata"]["name"],
        f"{int(st.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
        int(st.get("updatedReplicas") or 0),
        int(st.get("availableReplicas") or 0),
        _age(d["metadata"].get("creationTimestamp")),
        *_template_cells(d),
    ]


def _rs_row(rs: Obj) -> list[Any]:
    st, spec = rs.get("status") or {}, rs.get("spec") or {}
    return [
        rs["metadata"]["name"],
        int(spec.get("replicas") or 0),
        int(st.get("replicas") or 0),
        int(st.get("readyReplicas") or 0),
        _age(rs["metadata"].get("creationTimestamp")),
        *_template_cells(rs),
    ]


def _age_of(obj: Obj) -> str:
    return _age(obj["metadata"].get("creationTimestamp"))


Column = tuple[str, str, int]  # name, type, priority (1: -o wide only)
_NAME: Column = ("Name", "string", 0)
_AGE: Column = ("Age", "string", 0)


def _binding_row(o: Obj) -> list[Any]:
    """As printers.go's printRoleBinding: ``Kind/name`` of the role, then (wide) the subjects."""
    ref = o.get("roleRef") or {}
    subjects = [s for s in o.get("subjects") or [] if isinstance(s, dict)]

    def names(kind: str) -> str:
        return ", ".join(
            (f"{s.get('namespace', '')}/{s.get('name', '')}" if kind == "ServiceAccount" else str(s.get("name", "")))
            for s in subjects
            if s.get("kind") == kind
        )

    return [
        o["metadata"]["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age_of(o),
        names("User"),
        names("Group"),
        names("ServiceAccount"),
    ]


_BINDING_COLUMNS: list[Column] = [
    _NAME,
    ("Role", "string", 0),
    _AGE,
    ("Users", "string", 1),
    ("Groups", "string", 1),
    ("ServiceAccounts", "string", 1),
]
_CREATED_AT: tuple[list[Column], Callable[[Obj], list[Any]]] = (
    [_NAME, ("Created At", "date", 0)],
    lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")],
)
_WIDE_TEMPLATE: list[Column] = [("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)]

PRINTERS: dict[str, tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    "v1/namespaces": (
        [_NAME, ("Status", "string", 0), _AGE],
        lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age_of(o)],
    ),
    "v1/nodes": (
        [_NAME, ("Status", "string", 0), ("Roles", "string", 0), _AGE, ("Version", "string", 0)]
        + [(c, "string", 1) for c in ("Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime")],
        _node_row,
    ),
    "v1/serviceaccounts": (
        [_NAME, ("Secrets", "integer", 0), _AGE],
        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), _age_of(o)],
    ),
    "v1/pods": (
        [_NAME, ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0), _AGE]
        + [(c, "string", 1) for c in ("IP", "Node", "Nominated Node", "Readiness Gates")],
        _pod_row,
    ),
    "v1/secrets": (
        [_NAME, ("Type", "string", 0), ("Data", "integer", 0), _AGE],
        lambda o: [
            o["metadata"]["name"],
            o.get("type", ""),
            len(o.get("data") or {}) + len(o.get("stringData") or {}),
            _age_of(o),
        ],
    ),
    "v1/configmaps": (
        [_NAME, ("Data", "integer", 0), _AGE],
        lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age_of(o)],
    ),
    "v1/events": (
        [(c, "string", 0) for c in ("Last Seen", "Type", "Reason", "Object", "Message")]
        + [(c, "string", 1) for c in ("Subobject", "Source", "First Seen", "Count", "Name")],
        _event_row,
    ),
    "v1/resourcequotas": (
        [_NAME, _AGE, ("Request", "string", 0), ("Limit", "string", 0)],
        lambda o: [o["metadata"]["name"], _age_of(o), "", ""],
    ),
    "v1/limitranges": (
        [_NAME, ("Created At", "date", 0)],
        lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")],
    ),
    "apps/v1/daemonsets": (
        [_NAME]
        + [(c, "integer", 0) for c in ("Desired", "Current", "Ready", "Up-to-date", "Available")]
        + [("Node Selector", "string", 0), _AGE, *_WIDE_TEMPLATE],
        _ds_row,
    ),
    "apps/v1/deployments": (
        [
            _NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            _AGE,
            *_WIDE_TEMPLATE,
        ],
        _deploy_row,
    ),
    "apps/v1/replicasets": (
        [_NAME, ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0), _AGE, *_WIDE_TEMPLATE],
        _rs_row,
    ),
    "rbac.authorization.k8s.io/v1/roles": _CREATED_AT,
    "rbac.authorization.k8s.io/v1/clusterroles": _CREATED_AT,
    "rbac.authorization.k8s.io/v1/rolebindings": (_BINDING_COLUMNS, _binding_row),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": (_BINDING_COLUMNS, _binding_row),
    "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": (
        [_NAME, ("Webhooks", "integer", 0), _AGE],
        lambda o: [o["metadata"]["name"], len(o.get("webhooks") or []), _age_of(o)],
    ),
}


def to_table(
    rt: ResourceType,
    objs: list[Obj],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    headers: bool = True,
    version: str = "v1",
) -> Obj:
    columns, row = PRINTERS.get(rt.key, ([_NAME, _AGE], lambda o: [o["metadata"]["name"], _age_of(o)]))
    rows = []
    for o in objs:
        r: Obj = {"cells": row(o)[: len(columns)]}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{version}",
                "metadata": o["metadata"],
            }
        rows.append(r)
    table: Obj = {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {"resourceVersion": resource_version},
        "rows": rows,
    }
    if headers:
        table["columnDefinitions"] = [
            {
                "name": name,
                "type": kind,
                "format": "name" if (name, kind, priority) == _NAME else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority in columns
        ]
    return table
