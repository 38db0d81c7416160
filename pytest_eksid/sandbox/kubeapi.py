"""A subset of the Kubernetes REST API over real HTTP and HTTPS, backed by an in-memory store.

Enough for the official ``kubernetes`` client, ``kubectl`` and pytest-testinfra's ``kubectl://``
backend:

- resources: core/v1 namespaces, nodes, serviceaccounts, pods (+ ``status``, ``log``, ``exec``),
  secrets, configmaps, events, resourcequotas, limitranges; apps/v1 daemonsets, deployments,
  replicasets (+ ``status``); admissionregistration.k8s.io/v1 mutatingwebhookconfigurations;
- verbs: create, get, list, watch, update (PUT), patch (JSON merge, strategic merge, JSON
  patch), delete, deletecollection; ``dryRun=All``; label and field selectors;
- discovery: aggregated (``apidiscovery.k8s.io/v2``) and legacy (``/api``, ``/apis``, group
  versions); server-side printing (``meta.k8s.io/v1`` ``Table``) for ``kubectl get``;
- ``Status`` error bodies as kube-apiserver writes them (400/401/403/404/405/409/410/415/422);
- ``pods/exec`` over WebSocket (``v5.channel.k8s.io``, ``v4.channel.k8s.io``), handshake and
  framing implemented here; the kubelet runs the command (``Store.exec_handler``).

One port serves plain HTTP and TLS (sniffed from the first byte): kubectl sends a bearer token
only to an ``https://`` server, so the kubeconfig should name ``https_url`` with the CA in
``ca_data`` (``KubeApiServer.kubeconfig``). Admission (the EKS mutating webhooks, the
ServiceAccount admission check) and the kubelet hook in through callbacks, so this module knows
nothing of AWS. There are no controllers: DaemonSets, Deployments and ReplicaSets are stored,
validated and defaulted, and their status is whatever was written to ``/status``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import os
import re
import secrets
import select
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Obj = dict[str, Any]
Objs = list[Obj]  # (inside Store, ``list`` is a method)
Mutator = Callable[[Obj], None]
Listener = Callable[[Obj], None]


class ExecHandler(Protocol):
    """Starts ``argv`` in a running pod's container; ``stdio`` are ``subprocess.Popen`` keywords.

    Raises ``ApiError`` when the pod or container cannot run it (answered before the upgrade),
    ``OSError`` when the command cannot start (reported on the error channel, as a runtime does).
    """

    def __call__(
        self, namespace: str, name: str, container: str | None, argv: list[str], stdio: dict[str, Any]
    ) -> subprocess.Popen[bytes]: ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- resource types ----------------------------------------------------------------------

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "log": ["get"], "exec": ["create", "get"]}
_META_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()
    generation: bool = False  # metadata.generation tracks spec changes
    delete_returns_object: bool = False  # else DELETE answers with a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """The store key: ``v1/pods``, ``apps/v1/daemonsets``."""
        return f"{self.api_version}/{self.plural}"

    @property
    def qualified(self) -> str:
        """As kube-apiserver names it in messages: ``pods``, ``daemonsets.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_STATUS = ("status",)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), (), _STATUS, ("status.phase",), False, True),
    ResourceType("", "v1", "nodes", "Node", False, ("no",), (), _STATUS, ("spec.unschedulable",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), delete_returns_object=True),
    ResourceType("", "v1", "pods", "Pod", True, ("po",), ("all",), ("status", "log", "exec"), _POD_FIELDS, False, True),
    ResourceType("", "v1", "secrets", "Secret", True, (), (), (), ("type",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "events", "Event", True, ("ev",), (), (), _EVENT_FIELDS),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), (), _STATUS, (), False, True),
    ResourceType("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("all",), _STATUS, generation=True),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("all",), _STATUS, generation=True),
    ResourceType(
        "apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("all",), _STATUS, ("status.replicas",), True
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
        generation=True,
    ),
)

_BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_ALIASES: dict[str, ResourceType] = {}
for _r in reversed(RESOURCES):
    for _alias in (_r.singular, *_r.short_names, _r.plural, _r.qualified, _r.key):
        _ALIASES[_alias] = _r
NAMESPACES = _ALIASES["namespaces"]
PODS = _ALIASES["pods"]
SERVICEACCOUNTS = _ALIASES["serviceaccounts"]
EVENTS = _ALIASES["events"]


def resource_type(resource: str | ResourceType) -> ResourceType:
    """``pods``, ``v1/pods``, ``daemonsets``, ``ds``, ``daemonsets.apps``, ``apps/v1/daemonsets``."""
    if isinstance(resource, ResourceType):
        return resource
    try:
        return _ALIASES[resource]
    except KeyError:
        raise ApiError(404, "NotFound", f'the server doesn\'t have a resource type "{resource}"') from None


def api_groups() -> dict[str, dict[str, list[ResourceType]]]:
    """group -> version -> resources, core ("") first."""
    out: dict[str, dict[str, list[ResourceType]]] = {}
    for r in RESOURCES:
        out.setdefault(r.group, {}).setdefault(r.version, []).append(r)
    return out


# --- errors ------------------------------------------------------------------------------

FieldError = tuple[str, str, str]  # field, cause reason, message


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        group: str = "",
        causes: list[Obj] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes = causes or []

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.kind or self.name or self.causes:
            details: Obj = {}
            if self.name:
                details["name"] = self.name
            if self.group:
                details["group"] = self.group
            if self.kind:
                details["kind"] = self.kind
            if self.causes:
                details["causes"] = self.causes
            body["details"] = details
        return body


def not_found(resource: str | ResourceType, name: str) -> ApiError:
    rt = resource if isinstance(resource, ResourceType) else _ALIASES.get(resource)
    plural = rt.plural if rt else str(resource)
    qualified = rt.qualified if rt else str(resource)
    return ApiError(
        404, "NotFound", f'{qualified} "{name}" not found', kind=plural, name=name, group=rt.group if rt else ""
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', kind=rt.plural, name=name, group=rt.group
    )


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        kind=rt.plural,
        name=name,
        group=rt.group,
    )


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    lines = [f"{f}: {m}" for f, _, m in errors]
    summary = lines[0] if len(lines) == 1 else "[" + ", ".join(lines) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind} "{name}" is invalid: {summary}',
        kind=rt.kind,
        name=name,
        group=rt.group,
        causes=[{"reason": r, "message": m, "field": f} for f, r, m in errors],
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _required(path: str) -> FieldError:
    return (path, "FieldValueRequired", "Required value")


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return (path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}")


def _forbidden(path: str, detail: str) -> FieldError:
    return (path, "FieldValueForbidden", f"Forbidden: {detail}")


# --- selectors ---------------------------------------------------------------------------

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
        if resource is not None and k not in (*_META_FIELDS, *resource.field_labels):
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


# --- patches -----------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# Lists that a strategic merge patch merges by key (patchMergeKey in the Kubernetes API types).
STRATEGIC_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "secrets": "name",
    "webhooks": "name",
    "hostAliases": "ip",
    "addresses": "type",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch: a JSON merge patch whose well-known lists merge by key.

    ``$patch: replace|delete`` are honoured; the other directives (``$setElementOrder``,
    ``$retainKeys``, ``$deleteFromPrimitiveList``) are dropped.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None or (isinstance(v, dict) and v.get("$patch") == "delete"):
            result.pop(k, None)
        elif isinstance(v, list) and k in STRATEGIC_MERGE_KEYS and isinstance(result.get(k), list):
            result[k] = _merge_keyed_list(result[k], v, STRATEGIC_MERGE_KEYS[k])
        elif isinstance(v, list):
            result[k] = [strategic_merge_patch(None, i) if isinstance(i, dict) else copy.deepcopy(i) for i in v]
        else:
            result[k] = strategic_merge_patch(result.get(k), v)
    return result


def _merge_keyed_list(current: list[Any], items: list[Any], key: str) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in items):
        return [strategic_merge_patch(None, i) for i in items if not (isinstance(i, dict) and "$patch" in i)]
    out = copy.deepcopy(current)
    for item in items:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")] if path else []


def _patch_failed(op: str, path: str) -> ApiError:
    return ApiError(422, "Invalid", f"jsonpatch {op} operation does not apply: doc is missing path: {path}")


def _resolve(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise _patch_failed(op, path)
    return cur


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        tokens = _pointer(path)
        if kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = copy.deepcopy(_resolve(doc, source, kind, str(op.get("from"))))
            if kind == "move":
                doc = _json_remove(doc, source, str(op.get("from")))
            doc = _json_add(doc, tokens, value, path)
        elif kind == "add":
            doc = _json_add(doc, tokens, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _json_remove(doc, tokens, path)
        elif kind == "replace":
            _resolve(doc, tokens, kind, path)
            doc = _json_add(_json_remove(doc, tokens, path), tokens, copy.deepcopy(op.get("value")), path)
        elif kind == "test":
            if _resolve(doc, tokens, kind, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        else:
            raise bad_request(f"unknown JSON patch operation {kind!r}")
    return doc


def _json_add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], "add", path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and (last == "-" or (last.isdigit() and int(last) <= len(parent))):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        raise _patch_failed("add", path)
    return doc


def _json_remove(doc: Any, tokens: list[str], path: str) -> Any:
    if not tokens:
        return None
    parent = _resolve(doc, tokens[:-1], "remove", path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent.pop(int(last))
    else:
        raise _patch_failed("remove", path)
    return doc


PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def apply_patch(obj: Obj, patch: Any, patch_type: str) -> Any:
    """``patch_type``: ``merge``, ``strategic``, ``json`` or their content types."""
    kind = PATCH_TYPES.get(patch_type, patch_type)
    if kind == "merge":
        return merge_patch(obj, patch)
    if kind == "strategic":
        return strategic_merge_patch(obj, patch)
    if kind == "json":
        return json_patch(obj, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}",
    )


# --- validation and defaults -------------------------------------------------------------

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    f"'{_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    f"end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{_LABEL}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    f"and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    f"validation is '({_QUALIFIED})?')"
)
_KEY_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    f"'{_QUALIFIED}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)


def _is_subdomain(s: str) -> bool:
    return len(s) <= 253 and re.fullmatch(_SUBDOMAIN, s) is not None


def _is_label(s: str) -> bool:
    return len(s) <= 63 and re.fullmatch(_LABEL, s) is not None


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not _is_subdomain(prefix):
        return False
    return 0 < len(name) <= 63 and re.fullmatch(_QUALIFIED, name) is not None


def _check_string_map(meta: Obj, field: str) -> None:
    value = meta.get(field)
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise bad_request(f"metadata.{field} must be a map of string keys to string values")


def _validate_meta(rt: ResourceType, meta: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name", "")
    if rt is NAMESPACES and not _is_label(name):
        errors.append(_invalid("metadata.name", name, _LABEL_MSG))
    elif rt is not NAMESPACES and not _is_subdomain(name):
        errors.append(_invalid("metadata.name", name, _SUBDOMAIN_MSG))
    for key, value in (meta.get("labels") or {}).items():
        if not _is_qualified_name(key):
            errors.append(_invalid("metadata.labels", key, _KEY_MSG))
        if len(value) > 63 or re.fullmatch(f"({_QUALIFIED})?", value) is None:
            errors.append(_invalid("metadata.labels", value, _LABEL_VALUE_MSG))
    for key in meta.get("annotations") or {}:
        if not _is_qualified_name(key):
            errors.append(_invalid("metadata.annotations", key, _KEY_MSG))
    return errors


def _validate_containers(containers: Any, path: str) -> list[FieldError]:
    if not containers:
        return [_required(path)]
    if not isinstance(containers, list):
        return [_invalid(path, containers, "must be a list")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        name = c.get("name") if isinstance(c, dict) else None
        if not name:
            errors.append(_required(f"{path}[{i}].name"))
        elif not _is_label(str(name)):
            errors.append(_invalid(f"{path}[{i}].name", name, _LABEL_MSG))
        elif name in seen:
            errors.append((f"{path}[{i}].name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}"))
        else:
            seen.add(name)
        if isinstance(c, dict) and not c.get("image"):
            errors.append(_required(f"{path}[{i}].image"))
    return errors


def _validate_workload(rt: ResourceType, obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    errors: list[FieldError] = []
    if not selector:
        errors.append(_required("spec.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(_invalid("spec.selector", selector, f"empty selector is invalid for {rt.singular}"))
    elif not selector_matches(selector, labels):
        errors.append(_invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    errors += _validate_containers((template.get("spec") or {}).get("containers"), "spec.template.spec.containers")
    if rt.kind != "DaemonSet" and int(spec.get("replicas") or 0) < 0:
        errors.append(_invalid("spec.replicas", spec["replicas"], "must be greater than or equal to 0"))
    return errors


def _validate_webhooks(obj: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, hook in enumerate(obj.get("webhooks") or []):
        path = f"webhooks[{i}]"
        if not hook.get("name"):
            errors.append(_required(f"{path}.name"))
        client = hook.get("clientConfig") or {}
        if bool(client.get("url")) == bool(client.get("service")):
            errors.append(_required(f"{path}.clientConfig: exactly one of url or service"))
        if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            errors.append(
                (f"{path}.sideEffects", "FieldValueNotSupported", 'Unsupported value: must be "None" or "NoneOnDryRun"')
            )
        if not hook.get("admissionReviewVersions"):
            errors.append(_required(f"{path}.admissionReviewVersions"))
    return errors


def validate(rt: ResourceType, obj: Obj, errors: list[FieldError] | None = None) -> None:
    """Raise 422 Invalid for ``obj`` (and the update ``errors`` found already)."""
    meta = obj["metadata"]
    errors = [*_validate_meta(rt, meta), *(errors or [])]
    if rt is PODS:
        errors += _validate_containers((obj.get("spec") or {}).get("containers"), "spec.containers")
    elif rt.group == "apps":
        errors += _validate_workload(rt, obj)
    elif rt.kind == "MutatingWebhookConfiguration":
        errors += _validate_webhooks(obj)
    if errors:
        raise invalid(rt, str(meta.get("name", "")), errors)


def _default(rt: ResourceType, obj: Obj) -> None:
    """Defaults and status reset on create, as kube-apiserver's registry strategies do."""
    spec = obj.setdefault("spec", {}) if rt.group == "apps" else obj.get("spec")
    if rt is NAMESPACES:
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif rt.kind == "Deployment" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault(
            "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        obj["status"] = {}
    elif rt.kind == "DaemonSet" and spec is not None:
        spec.setdefault(
            "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        obj["status"] = {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
        }
    elif rt.kind == "ReplicaSet" and spec is not None:
        spec.setdefault("replicas", 1)
        obj["status"] = {"replicas": 0}
    elif rt.kind == "MutatingWebhookConfiguration":
        for hook in obj.get("webhooks") or []:
            hook.setdefault("failurePolicy", "Fail")
            hook.setdefault("matchPolicy", "Equivalent")
            hook.setdefault("namespaceSelector", {})
            hook.setdefault("objectSelector", {})
            hook.setdefault("timeoutSeconds", 10)
            hook.setdefault("reinvocationPolicy", "Never")
    if rt.generation:
        obj["metadata"]["generation"] = 1


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations")


def _pod_spec_shape(spec: Obj) -> Obj:
    shape = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for field in ("containers", "initContainers"):
        if field in shape:
            shape[field] = [{k: v for k, v in c.items() if k != "image"} for c in shape[field]]
    return shape


def _update_errors(rt: ResourceType, old: Obj, new: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    if rt is PODS and _pod_spec_shape(new.get("spec") or {}) != _pod_spec_shape(old.get("spec") or {}):
        errors.append(
            _forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` "
                "(only additions to existing tolerations)",
            )
        )
    if rt.group == "apps" and (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
        errors.append(_invalid("spec.selector", (new.get("spec") or {}).get("selector"), "field is immutable"))
    if rt.kind in ("Secret", "ConfigMap") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if new.get(field) != old.get(field):
                errors.append(_forbidden(field, "field is immutable when `immutable` is set"))
    return errors


# --- the store ---------------------------------------------------------------------------

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
WATCH_LOG_SIZE = 5000


class Store:
    """Objects by (resource key, namespace, name). Thread-safe; hands out deep copies.

    ``resource`` arguments accept any name kubectl would (``pods``, ``ds``, ``daemonsets.apps``,
    ``apps/v1/daemonsets``). ``mutators`` run on pods at admission; ``on_create`` and
    ``on_delete`` are called with pods only (the kubelet's hooks). ``exec_handler`` is set by the
    kubelet and serves ``pods/exec``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = 0
        self._log: deque[tuple[int, str, str, str, Obj]] = deque()
        self._log_floor = 0  # events up to this resourceVersion are no longer in the log
        self.mutators: list[Mutator] = []
        self.on_create: list[Listener] = []
        self.on_delete: list[Listener] = []
        self.exec_handler: ExecHandler | None = None

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, event: str, rt: ResourceType, obj: Obj) -> None:
        self._log.append((self._rv, event, rt.key, obj["metadata"].get("namespace", ""), copy.deepcopy(obj)))
        while len(self._log) > WATCH_LOG_SIZE:
            self._log_floor = self._log.popleft()[0]
        self._changed.notify_all()

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (rt.key, (namespace or "") if rt.namespaced else "", name)

    # -- create --

    def create(self, resource: str | ResourceType, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = resource_type(resource)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        _check_string_map(meta, "labels")
        _check_string_map(meta, "annotations")
        _check_type(rt, obj)
        with self._lock:
            if rt.namespaced:
                if not namespace:
                    raise bad_request("a namespace is required to create a namespaced resource")
                if (NAMESPACES.key, "", namespace) not in self._objects:
                    raise not_found(NAMESPACES, namespace)
                if meta.get("namespace", namespace) != namespace:
                    raise bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                if meta.get("generateName"):
                    meta["name"] = str(meta["generateName"])[:58] + "".join(
                        secrets.choice(_NAME_CHARS) for _ in range(5)
                    )
                else:
                    raise invalid(
                        rt,
                        "",
                        [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")],
                    )
            name = meta["name"]
            obj["kind"] = rt.kind
            obj["apiVersion"] = rt.api_version
            for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(k, None)
            if rt is PODS:
                validate(rt, obj)
                self._admit_pod(obj)
            _default(rt, obj)
            validate(rt, obj)
            key = self._key(rt, namespace, name)
            if key in self._objects:
                raise already_exists(rt, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if dry_run:
                return copy.deepcopy(obj)
            meta["resourceVersion"] = self._next_rv()
            self._objects[key] = obj
            self._record("ADDED", rt, obj)
            if rt is NAMESPACES:
                self.create(SERVICEACCOUNTS, name, {"metadata": {"name": "default"}})
            created = copy.deepcopy(obj)
        if rt is PODS:
            for listener in self.on_create:
                listener(copy.deepcopy(created))
        return created

    def _admit_pod(self, pod: Obj) -> None:
        spec = pod.setdefault("spec", {})
        ns = pod["metadata"]["namespace"]
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = sa
        spec["serviceAccount"] = sa
        if self._key(SERVICEACCOUNTS, ns, sa) not in self._objects:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{pod["metadata"]["name"]}" is forbidden: error looking up service account '
                f'{ns}/{sa}: serviceaccount "{sa}" not found',
                kind="pods",
                name=pod["metadata"]["name"],
            )
        for mutate in self.mutators:
            mutate(pod)
        spec.setdefault("restartPolicy", "Always")
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    # -- read --

    def get(self, resource: str | ResourceType, namespace: str, name: str) -> Obj:
        rt = resource_type(resource)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def find(self, resource: str | ResourceType, namespace: str, name: str) -> Obj | None:
        try:
            return self.get(resource, namespace, name)
        except ApiError:
            return None

    def _matching(
        self, rt: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> Callable[[str, str, Obj], bool]:
        match_labels = label_matcher(label_selector)
        match_fields = field_matcher(field_selector, rt)

        def matches(key: str, ns: str, obj: Obj) -> bool:
            return (
                key == rt.key
                and (namespace is None or not rt.namespaced or ns == namespace)
                and match_labels(obj["metadata"].get("labels") or {})
                and match_fields(obj)
            )

        return matches

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Obj]:
        rt = resource_type(resource)
        matches = self._matching(rt, namespace, label_selector, field_selector)
        with self._lock:
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items()) if matches(r, ns, o)]

    # -- write --

    def update(self, resource: str | ResourceType, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Apply ``change`` to the stored object under the lock (in-process status updates)."""
        rt = resource_type(resource)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            if obj is None:
                raise not_found(rt, name)
            change(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._record("MODIFIED", rt, obj)
            return copy.deepcopy(obj)

    def replace(
        self,
        resource: str | ResourceType,
        namespace: str,
        name: str,
        obj: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT: replace the object (or only its status, with ``subresource="status"``)."""
        if not isinstance(obj, dict):
            raise bad_request("the body must be an object")
        new = copy.deepcopy(obj)
        return self._write(resource_type(resource), namespace, name, lambda _: new, subresource, dry_run)

    def patch(
        self,
        resource: str | ResourceType,
        namespace: str,
        name: str,
        patch: Any,
        patch_type: str = "merge",
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PATCH: ``patch_type`` is ``merge``, ``strategic``, ``json`` or a patch content type."""
        return self._write(
            resource_type(resource),
            namespace,
            name,
            lambda old: apply_patch(old, patch, patch_type),
            subresource,
            dry_run,
        )

    def _write(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        compute: Callable[[Obj], Any],
        subresource: str | None,
        dry_run: bool,
    ) -> Obj:
        if subresource not in (None, "status") or (subresource == "status" and not rt.has_status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        with self._lock:
            key = self._key(rt, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise not_found(rt, name)
            new = compute(copy.deepcopy(old))
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise bad_request("the result of the update is not an object")
            new = self._merge_update(rt, old, new, subresource)
            if dry_run or new == old:
                return copy.deepcopy(new)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = new
            self._record("MODIFIED", rt, new)
            return copy.deepcopy(new)

    def _merge_update(self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None) -> Obj:
        omet, nmet = old["metadata"], new.setdefault("metadata", {})
        name = omet["name"]
        if nmet.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({nmet.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and nmet.get("namespace", omet["namespace"]) != omet["namespace"]:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if nmet.get("resourceVersion") not in (None, "", omet["resourceVersion"]):
            raise conflict(
                rt, name, "the object has been modified; please apply your changes to the latest version and try again"
            )
        if nmet.get("uid") not in (None, "", omet["uid"]):
            raise conflict(
                rt, name, f"Precondition failed: UID in precondition: {nmet['uid']}, UID in object meta: {omet['uid']}"
            )
        _check_type(rt, new)
        if subresource == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status") or {}
            return result
        _check_string_map(nmet, "labels")
        _check_string_map(nmet, "annotations")
        result = new
        result["kind"], result["apiVersion"] = rt.kind, rt.api_version
        for k in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
        ):
            if k in omet:
                nmet[k] = omet[k]
            else:
                nmet.pop(k, None)
        if rt.has_status:
            if "status" in old:
                result["status"] = old["status"]
            else:
                result.pop("status", None)
        validate(rt, result, _update_errors(rt, old, result))
        if rt.generation and {k: v for k, v in result.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }:
            nmet["generation"] = int(omet.get("generation") or 1) + 1
        return result

    # -- delete --

    def delete(
        self,
        resource: str | ResourceType,
        namespace: str,
        name: str,
        *,
        dry_run: bool = False,
        propagation: str = "Background",
        preconditions: Obj | None = None,
    ) -> Obj:
        """Delete now (no graceful termination); dependents by ownerReferences and a namespace's
        contents go with it unless ``propagation`` is ``Orphan``."""
        rt = resource_type(resource)
        with self._lock:
            key = self._key(rt, namespace, name)
            obj = self._objects.get(key)
            if obj is None:
                raise not_found(rt, name)
            pre = preconditions or {}
            if pre.get("uid") not in (None, obj["metadata"]["uid"]):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {obj['metadata']['uid']}",
                )
            if pre.get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
                raise conflict(
                    rt,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            if dry_run:
                return copy.deepcopy(obj)
            removed = self._remove(key, propagation)
        for pod in removed:
            for listener in self.on_delete:
                listener(copy.deepcopy(pod))
        return obj

    def _remove(self, key: tuple[str, str, str], propagation: str) -> Objs:
        """Remove an object and what goes with it; return the pods removed."""
        obj = self._objects.pop(key, None)
        if obj is None:
            return []
        rt = _ALIASES[key[0]]
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", rt, obj)
        pods = [obj] if rt is PODS else []
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self._objects.items()):
            if other_key not in self._objects:
                continue  # removed with an earlier dependent
            if rt is NAMESPACES and other_key[1] == key[2]:
                pods += self._remove(other_key, propagation)
                continue
            owners = other["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                continue
            if propagation == "Orphan":
                other["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid]
                other["metadata"]["resourceVersion"] = self._next_rv()
                self._record("MODIFIED", _ALIASES[other_key[0]], other)
            else:
                pods += self._remove(other_key, propagation)
        return pods

    def delete_collection(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        *,
        dry_run: bool = False,
        propagation: str = "Background",
    ) -> Objs:
        rt = resource_type(resource)
        matches = self._matching(rt, namespace, label_selector, field_selector)
        with self._lock:
            doomed = [(k, copy.deepcopy(o)) for k, o in sorted(self._objects.items()) if matches(k[0], k[1], o)]
            if dry_run:
                return [o for _, o in doomed]
            pods: Objs = []
            for k, _ in doomed:
                pods += self._remove(k, propagation)
        for pod in pods:
            for listener in self.on_delete:
                listener(copy.deepcopy(pod))
        return [o for _, o in doomed]

    # -- events --

    def record_event(
        self,
        involved: Obj,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "kubelet",
        host: str = "",
    ) -> Obj:
        """Create a core/v1 Event about ``involved`` (what ``kubectl describe`` lists)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        now = now_rfc3339()
        event = {
            # As client-go's recorder names them: unique, and sorted by name is sorted by time.
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "kind": involved.get("kind", ""),
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta.get("uid", ""),
                "apiVersion": involved.get("apiVersion", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": host,
        }
        return self.create(EVENTS, namespace, event)

    # -- watch --

    def watch(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        *,
        resource_version: str = "",
        send_initial_events: bool = False,
        timeout: float = 1800.0,
        stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[str, Obj]]:
        """Events ``(type, object)`` as a watch sends them: ADDED/MODIFIED/DELETED, a BOOKMARK
        after the initial events when ``send_initial_events``, ERROR (410) for an expired
        ``resource_version``. Selectors are checked now; the iterator ends at ``timeout`` or ``stop``."""
        rt = resource_type(resource)
        matches = self._matching(rt, namespace, label_selector, field_selector)
        initial: list[tuple[str, Obj]] = []
        with self._lock:
            if resource_version in ("", "0") or send_initial_events:
                initial = [
                    ("ADDED", copy.deepcopy(o)) for (r, ns, _), o in sorted(self._objects.items()) if matches(r, ns, o)
                ]
                cursor = self._rv
            else:
                if not resource_version.isdigit():
                    raise bad_request(f"invalid resource version: {resource_version!r}")
                cursor = int(resource_version)
                if cursor < self._log_floor:
                    initial = [
                        (
                            "ERROR",
                            ApiError(
                                410, "Expired", f"too old resource version: {cursor} ({self._log_floor + 1})"
                            ).status(),
                        )
                    ]
                    cursor = -1
            if send_initial_events:
                initial.append(
                    (
                        "BOOKMARK",
                        {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {
                                "resourceVersion": str(self._rv),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    )
                )

        def events() -> Iterator[tuple[str, Obj]]:
            nonlocal cursor
            yield from initial
            deadline = time.monotonic() + timeout
            while cursor >= 0 and not stop():
                with self._lock:
                    fresh = [e for e in self._log if e[0] > cursor]
                    if not fresh:
                        self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                        fresh = [e for e in self._log if e[0] > cursor]
                for rv, kind, key, ns, obj in fresh:
                    cursor = rv
                    if matches(key, ns, obj):
                        yield kind, copy.deepcopy(obj)
                if time.monotonic() >= deadline:
                    return

        return events()


def _check_type(rt: ResourceType, obj: Obj) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
        )
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")


# --- server-side printing (Table) --------------------------------------------------------


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


# --- discovery ---------------------------------------------------------------------------


def _subresource_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    return ("", "v1", "PodExecOptions") if sub == "exec" else (rt.group, rt.version, rt.kind)


def discovery_resources(group: str, version: str) -> Obj:
    """The legacy ``APIResourceList`` of a group version."""
    resources: list[Obj] = []
    for rt in api_groups().get(group, {}).get(version, []):
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": VERBS,
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            g, v, kind = _subresource_kind(rt, sub)
            sub_entry: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": SUBRESOURCE_VERBS[sub],
            }
            if (g, v) != (rt.group, rt.version):
                sub_entry.update({"group": g, "version": v})
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _legacy_group(group: str, versions: dict[str, list[ResourceType]]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def discovery_groups() -> Obj:
    groups = [_legacy_group(g, vs) for g, vs in api_groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def discovery_aggregated(core: bool) -> Obj:
    """``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList`` of ``/api`` (core) or ``/apis``."""
    items = []
    for group, versions in api_groups().items():
        if (group == "") != core:
            continue
        out_versions = []
        for version, rts in versions.items():
            resources = []
            for rt in rts:
                entry: Obj = {
                    "resource": rt.plural,
                    "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": VERBS,
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                if rt.subresources:
                    entry["subresources"] = [
                        {
                            "subresource": sub,
                            "responseKind": dict(
                                zip(("group", "version", "kind"), _subresource_kind(rt, sub), strict=True)
                            ),
                            "verbs": SUBRESOURCE_VERBS[sub],
                        }
                        for sub in rt.subresources
                    ]
                resources.append(entry)
            out_versions.append({"version": version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": out_versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


_OPENAPI_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for n in ("dryRun", "fieldManager", "fieldValidation", "force")
]


def openapi_v3_index() -> Obj:
    """``/openapi/v3``: one document per group version."""
    paths = {}
    for group, versions in api_groups().items():
        for version in versions:
            gv = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sandbox"}
    return {"paths": paths}


def openapi_v3_document(group: str, version: str) -> Obj:
    """A group version's OpenAPI v3 document: operations without schemas. Enough for kubectl to
    see that every kind's PATCH takes ``fieldValidation`` (so it validates on the server and
    needs no schema); not enough for ``kubectl explain``."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths: Obj = {}
    for rt in api_groups().get(group, {}).get(version, []):
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"

        def operation(verb: str, gvk: Obj = gvk, rt: ResourceType = rt) -> Obj:
            return {
                "operationId": f"{verb}{rt.kind}",
                "parameters": _OPENAPI_PARAMS,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            }

        paths[base] = {"get": operation("list"), "post": operation("post")}
        paths[base + "/{name}"] = {
            verb: operation(action)
            for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-eks-sandbox"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _media_types(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in accept.split(","):
        mime, *params = (p.strip() for p in part.split(";"))
        out.append((mime.lower(), {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in params)}))
    return out


def negotiate(accept: str, *, discovery: bool = False) -> tuple[str, str]:
    """(representation, content type): ``json``, ``table``, ``partial`` or ``aggregated``."""
    for mime, params in _media_types(accept or "application/json"):
        if mime not in ("application/json", "*/*", "application/*"):
            continue
        target = (params.get("as"), params.get("g"), params.get("v"))
        if discovery and target == ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2"):
            return "aggregated", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        if not discovery and target[0] == "Table" and target[1] == "meta.k8s.io" and target[2] in ("v1", "v1beta1"):
            return f"table/{target[2]}", f"application/json;as=Table;v={target[2]};g=meta.k8s.io"
        partial = target[0] in ("PartialObjectMetadata", "PartialObjectMetadataList")
        if not discovery and partial and target[1] == "meta.k8s.io" and target[2] in ("v1", "v1beta1"):
            return f"partial/{target[2]}", f"application/json;as={target[0]};v={target[2]};g=meta.k8s.io"
        if target[0] is None:
            return "json", "application/json"
    return "json", "application/json"


# --- TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingCertificate:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_serving_certificate(hosts: list[str], *, days: int = 7) -> ServingCertificate:
    """A throwaway CA and a server certificate for ``hosts`` (IP addresses and DNS names)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eksid-sandbox-ca")])
    usage = {
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCertificate(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _server_context(cert: ServingCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="eksid-kubeapi-") as d:
        cert_file, key_file = Path(d) / "tls.crt", Path(d) / "tls.key"
        cert_file.write_bytes(cert.cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert.key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class _Server(ThreadingHTTPServer):
    """Serves plain HTTP and TLS on one port: a TLS ClientHello starts with byte 0x16."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = request
        try:  # headers and body are separate writes: without this, Nagle meets delayed ACK (40 ms)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return
        if self.tls is not None:
            try:
                request.settimeout(10)
                if request.recv(1, socket.MSG_PEEK) == b"\x16":
                    sock = self.tls.wrap_socket(request, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        try:
            self.RequestHandlerClass(sock, client_address, self)  # type: ignore[arg-type]
        finally:
            if sock is not request:
                sock.close()


# --- WebSocket (RFC 6455) and the Kubernetes remote-command channels ---------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


class WebSocket:
    """Server side of a WebSocket over a handler's buffered streams; ``send`` is thread-safe."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self._lock = threading.Lock()
        self.closing = False

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self._lock:
            if self.closing:
                return
            if opcode == 0x8:
                self.closing = True
            self.wfile.write(header + payload)
            self.wfile.flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            self.send(struct.pack("!H", code) + reason.encode(), 0x8)
        except OSError:
            self.closing = True

    def _read(self, n: int) -> bytes | None:
        data = self.rfile.read(n) if n else b""
        return data if len(data) == n else None

    def recv(self) -> bytes | None:
        """The next data message; None once the peer closes or the connection drops."""
        message = b""
        while True:
            head = self._read(2)
            if head is None:
                return None
            fin, opcode, masked, n = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
            if n in (126, 127):
                raw = self._read(2 if n == 126 else 8)
                if raw is None:
                    return None
                n = struct.unpack("!H" if len(raw) == 2 else "!Q", raw)[0]
            mask = self._read(4) if masked else b""
            payload = self._read(n)
            if mask is None or payload is None:
                return None
            if masked and n:
                pad = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")
            if opcode == 0x8:
                self.close()
                return None
            if opcode == 0x9:
                try:
                    self.send(payload, 0xA)
                except OSError:
                    return None
                continue
            if opcode == 0xA:
                continue
            message += payload
            if fin:
                return message


def exec_status(returncode: int, argv: list[str]) -> Obj:
    """The Status the kubelet writes on the error channel when the command ends."""
    if returncode == 0:
        return {"metadata": {}, "status": "Success"}
    code = returncode if returncode > 0 else 128 - returncode
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


# --- HTTP --------------------------------------------------------------------------------


# --- protobuf bodies (kubectl's typed clients) ---------------------------------------------
# kubectl's imperative ``create sa|configmap|secret|namespace`` post protobuf and do not fall
# back to JSON on 415. These kinds are decoded with their field numbers from the Kubernetes
# .proto files (k8s.io/api/core/v1, k8s.io/apimachinery/pkg/apis/meta/v1); anything else is 415.

PROTOBUF = "application/vnd.kubernetes.protobuf"
_PB_MAGIC = b"k8s\x00"
PbSchema = dict[int, tuple[str, Any]]
_PB_OWNER: PbSchema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_META: PbSchema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    13: ("ownerReferences", ("repeated", _PB_OWNER)),
    14: ("finalizers", "strings"),
}
_PB_OBJECT_REF: PbSchema = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
}
_PB_KINDS: dict[tuple[str, str], PbSchema] = {
    ("v1", "ConfigMap"): {
        1: ("metadata", _PB_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _PB_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _PB_META),
        2: ("secrets", ("repeated", _PB_OBJECT_REF)),
        3: ("imagePullSecrets", ("repeated", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "bool"),
    },
    ("v1", "Namespace"): {1: ("metadata", _PB_META), 2: ("spec", {1: ("finalizers", "strings")})},
}


def _pb_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = data[i]
            value |= (b & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not b & 0x80:
                return value, i

    i = 0
    while i < len(data):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            value, i = varint(i)
            yield key >> 3, value
        elif wire == 2:
            n, i = varint(i)
            yield key >> 3, data[i : i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _pb_message(data: bytes, schema: PbSchema) -> Obj:
    out: Obj = {}
    for number, value in _pb_fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "bool":
            out[name] = bool(value)
        elif isinstance(value, int):
            continue
        elif kind == "string":
            if value:
                out[name] = value.decode()
        elif kind == "strings":
            out.setdefault(name, []).append(value.decode())
        elif kind in ("map", "bytesmap"):
            entry = dict(_pb_fields(value))
            key, raw = entry.get(1, b""), entry.get(2, b"")
            if isinstance(key, bytes) and isinstance(raw, bytes):
                text = base64.b64encode(raw).decode() if kind == "bytesmap" else raw.decode()
                out.setdefault(name, {})[key.decode()] = text
        elif isinstance(kind, tuple):
            out.setdefault(name, []).append(_pb_message(value, kind[1]))
        else:
            out[name] = _pb_message(value, kind)
    return out


def decode_protobuf(body: bytes) -> Obj:
    """A Kubernetes protobuf envelope (``runtime.Unknown``) holding one of ``_PB_KINDS``."""
    if not body.startswith(_PB_MAGIC):
        raise bad_request("the protobuf body lacks the Kubernetes envelope")
    try:
        unknown = dict(_pb_fields(body[len(_PB_MAGIC) :]))
        type_meta = unknown.get(1, b"")
        raw = unknown.get(2, b"")
        if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
            raise ValueError("malformed envelope")
        tm = _pb_message(type_meta, {1: ("apiVersion", "string"), 2: ("kind", "string")})
        schema = _PB_KINDS.get((tm.get("apiVersion", ""), tm.get("kind", "")))
        if schema is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the sandbox apiserver decodes protobuf only for {', '.join(k for _, k in _PB_KINDS)}, "
                f"not {tm.get('apiVersion')} {tm.get('kind')}: send JSON (e.g. `kubectl create ... "
                "--dry-run=client -o yaml | kubectl apply -f -`)",
            )
        return {**tm, **_pb_message(raw, schema)}
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid {PROTOBUF}: {exc}") from None


_BODY_TYPES = (
    "application/json",
    "application/yaml",
    PROTOBUF,
    *PATCH_TYPES,
)


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def q(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.q(name).lower() in ("true", "1")

    @property
    def dry_run(self) -> bool:
        values = self.query.get("dryRun") or []
        for v in values:
            if v != "All":
                raise bad_request(f'unsupported dry run value: "{v}" (supported: "All")')
        return bool(values)

    def json(self) -> Any:
        if not self.body:
            return None
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if ctype not in _BODY_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(_BODY_TYPES),
            )
        if ctype == PROTOBUF:
            return decode_protobuf(self.body)
        try:
            if ctype == "application/yaml":
                return yaml.safe_load(self.body)
            return json.loads(self.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid {ctype}: {exc}") from None


@dataclass
class _Response:
    code: int
    body: Obj | str
    content_type: str = "application/json"


_NOT_FOUND = "the server could not find the requested resource"


OIDC_PATHS = ("/.well-known/openid-configuration", "/openid/v1/jwks")


class KubeApiServer:
    """Serves ``store`` on a free loopback port over HTTP and HTTPS (same port); requests need
    ``Authorization: Bearer <token>``. ``kubeconfig()`` is what clients should use."""

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        log_reader: Callable[[str, str, Obj], str],
        tls: bool = True,
    ) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(32)
        self.read_log = log_reader
        # Service-account issuer discovery (set by the sandbox): the OIDC document and the JWKS.
        self.oidc_discovery: Callable[[], tuple[Obj, Obj]] | None = None
        self.certificate = make_serving_certificate(
            [host, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        )
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = _Server((host, 0), handler)
        self._server.tls = _server_context(self.certificate) if tls else None
        self._thread = threading.Thread(target=self._server.serve_forever, name="eksid-kubeapi", daemon=True)

    @property
    def url(self) -> str:
        """Plain HTTP. The official Python client sends its token there; kubectl does not."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def https_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"https://{host!s}:{port}"

    @property
    def ca_data(self) -> str:
        """The CA certificate, base64 PEM (kubeconfig ``certificate-authority-data``)."""
        return base64.b64encode(self.certificate.ca_pem).decode()

    def kubeconfig(self, name: str, user: str) -> Obj:
        """A kubeconfig for this server: HTTPS, its CA, the bearer token."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": self.https_url, "certificate-authority-data": self.ca_data}}
            ],
            "users": [{"name": user, "user": {"token": self.token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
            "current-context": name,
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- routing --

    def route(self, req: _Request, handler: _Handler) -> _Response | None:
        """Answer ``req``; None when the handler already streamed the answer."""
        path = req.path
        if path in ("/healthz", "/livez", "/readyz"):
            return _Response(200, "ok", "text/plain")
        if req.method == "GET" and path == "/version":
            return _Response(
                200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-eks-sandbox", "platform": "linux/amd64"}
            )
        if req.method == "GET" and path in ("/api", "/apis"):
            form, ctype = negotiate(req.headers.get("Accept") or "", discovery=True)
            if form == "aggregated":
                return _Response(200, discovery_aggregated(path == "/api"), ctype)
            if path == "/api":
                return _Response(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                    },
                )
            return _Response(200, discovery_groups())
        if req.method == "GET" and path == "/openapi/v3":
            return _Response(200, openapi_v3_index())
        if req.method == "GET" and path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/") :].split("/")
            if gv[0] == "api" and gv[1:] == ["v1"]:
                return _Response(200, openapi_v3_document("", "v1"))
            if gv[0] == "apis" and len(gv) == 3 and gv[2] in api_groups().get(gv[1], {}):
                return _Response(200, openapi_v3_document(gv[1], gv[2]))
            raise ApiError(404, "NotFound", _NOT_FOUND)
        if path == "/api/v1" or path.startswith("/api/v1/"):
            group, version, rest = "", "v1", path[len("/api/v1/") :]
        elif path.startswith("/apis/"):
            group, _, tail = path[len("/apis/") :].partition("/")
            version, _, rest = tail.partition("/")
            versions = api_groups().get(group) if group else None
            if not versions or (version and version not in versions):
                raise ApiError(404, "NotFound", _NOT_FOUND)
            if req.method == "GET" and not version:
                return _Response(200, {"kind": "APIGroup", "apiVersion": "v1", **_legacy_group(group, versions)})
        else:
            raise ApiError(404, "NotFound", _NOT_FOUND)
        if not rest:
            if req.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return _Response(200, discovery_resources(group, version))
        return self._resource(req, handler, group, version, rest.split("/"))

    def _resource(
        self, req: _Request, handler: _Handler, group: str, version: str, segs: list[str]
    ) -> _Response | None:
        ns: str | None = None
        if segs[0] == "namespaces" and len(segs) >= 3 and (group or segs[2] != "status"):
            ns, segs = segs[1], segs[2:]
        rt = _BY_PATH.get((group, version, segs[0]))
        if rt is None or len(segs) > 3 or (ns is not None and not rt.namespaced):
            raise ApiError(404, "NotFound", _NOT_FOUND)
        name = segs[1] if len(segs) > 1 else None
        sub = segs[2] if len(segs) > 2 else None
        if (sub is not None and sub not in rt.subresources) or (rt.namespaced and name is not None and ns is None):
            raise ApiError(404, "NotFound", _NOT_FOUND)
        ns_key = ns or ""
        method = req.method
        not_allowed = ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
        if name is None:
            if method == "GET":
                return self._list(req, handler, rt, ns)
            if method == "POST":
                if rt.namespaced and ns is None:
                    raise not_allowed
                body = req.json()
                if not isinstance(body, dict):
                    raise bad_request("the body of the request must be an object")
                return _Response(201, self.store.create(rt, ns_key, body, dry_run=req.dry_run))
            if method == "DELETE":
                options = self._delete_options(req)
                items = self.store.delete_collection(
                    rt,
                    ns,
                    req.q("labelSelector"),
                    req.q("fieldSelector"),
                    dry_run=req.dry_run or options.get("dryRun") == ["All"],
                    propagation=str(options.get("propagationPolicy") or "Background"),
                )
                return _Response(200, self._list_body(rt, items))
            raise not_allowed
        if sub == "exec":
            if method not in ("GET", "POST"):
                raise not_allowed
            self._exec(req, handler, ns_key, name)
            return None
        if sub == "log":
            if method != "GET":
                raise not_allowed
            return self._log(req, handler, ns_key, name)
        if method == "GET":
            obj = self.store.get(rt, ns_key, name)
            return self._render(req, rt, [obj], single=True)
        if method == "PUT":
            body = req.json()
            return _Response(200, self.store.replace(rt, ns_key, name, body, subresource=sub, dry_run=req.dry_run))
        if method == "PATCH":
            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            patch_type = PATCH_TYPES.get(ctype)
            if patch_type is None:
                apply_patch({}, None, ctype)  # raises 415
                raise AssertionError("unreachable")
            return _Response(
                200, self.store.patch(rt, ns_key, name, req.json(), patch_type, subresource=sub, dry_run=req.dry_run)
            )
        if method == "DELETE" and sub is None:
            options = self._delete_options(req)
            dry_run = req.dry_run or options.get("dryRun") == ["All"]
            obj = self.store.delete(
                rt,
                ns_key,
                name,
                dry_run=dry_run,
                propagation=str(options.get("propagationPolicy") or req.q("propagationPolicy") or "Background"),
                preconditions=options.get("preconditions"),
            )
            if rt.delete_returns_object:
                return _Response(200, obj)
            return _Response(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        **({"group": rt.group} if rt.group else {}),
                        "kind": rt.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                },
            )
        raise not_allowed

    def _delete_options(self, req: _Request) -> Obj:
        body = req.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise bad_request("DeleteOptions must be an object")
        if isinstance(body.get("dryRun"), list) and any(v != "All" for v in body["dryRun"]):
            raise bad_request("unsupported dry run value (supported: All)")
        return body

    def _list_body(self, rt: ResourceType, items: list[Obj]) -> Obj:
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": items,
        }

    def _render(self, req: _Request, rt: ResourceType, objs: list[Obj], *, single: bool) -> _Response:
        form, ctype = negotiate(req.headers.get("Accept") or "")
        rv = self.store.resource_version
        if form.startswith("table/"):
            table = to_table(
                rt,
                objs,
                resource_version=rv,
                include_object=req.q("includeObject", "Metadata"),
                version=form.split("/")[1],
            )
            return _Response(200, table, ctype)
        if form.startswith("partial/"):
            version = form.split("/")[1]
            partial = [
                {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": o["metadata"]}
                for o in objs
            ]
            if single:
                return _Response(200, partial[0], ctype)
            return _Response(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": f"meta.k8s.io/{version}",
                    "metadata": {"resourceVersion": rv},
                    "items": partial,
                },
                ctype,
            )
        return _Response(200, objs[0] if single else self._list_body(rt, objs))

    def _list(self, req: _Request, handler: _Handler, rt: ResourceType, ns: str | None) -> _Response | None:
        if req.flag("watch"):
            self._watch(req, handler, rt, ns)
            return None
        items = self.store.list(rt, ns, req.q("labelSelector"), req.q("fieldSelector"))
        return self._render(req, rt, items, single=False)

    # -- streaming --

    def _watch(self, req: _Request, handler: _Handler, rt: ResourceType, ns: str | None) -> None:
        try:
            timeout = float(req.q("timeoutSeconds") or 1800)
        except ValueError:
            raise bad_request("timeoutSeconds must be a number") from None
        form, ctype = negotiate(req.headers.get("Accept") or "")
        events = self.store.watch(
            rt,
            ns,
            req.q("labelSelector"),
            req.q("fieldSelector"),
            resource_version=req.q("resourceVersion"),
            send_initial_events=req.flag("sendInitialEvents"),
            timeout=min(timeout, 1800.0),
            stop=lambda: self._stopping.is_set() or handler.client_gone(),
        )
        handler.start_chunked(ctype if form.startswith("table/") else "application/json")
        first = True
        for kind, obj in events:
            if form.startswith("table/") and kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = to_table(
                    rt,
                    [obj],
                    resource_version=obj["metadata"].get("resourceVersion", ""),
                    include_object=req.q("includeObject", "Metadata"),
                    headers=first,
                    version=form.split("/")[1],
                )
                first = False
            if not handler.write_chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n"):
                return
        handler.end_chunked()

    def _log(self, req: _Request, handler: _Handler, ns: str, name: str) -> _Response | None:
        pod = self.store.get(PODS, ns, name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = req.q("container")
        if container and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if req.flag("previous"):
            raise bad_request(f'previous terminated container "{container or containers[0]}" in pod "{name}" not found')
        text = self.read_log(ns, name, pod)
        if not req.flag("follow"):
            return _Response(200, _tail(text, req), "text/plain")
        handler.start_chunked("text/plain")
        sent = _tail(text, req)
        if sent and not handler.write_chunk(sent.encode()):
            return None
        offset = len(text)
        while not self._stopping.is_set() and not handler.client_gone():
            current = self.store.find(PODS, ns, name)
            running = current is not None and (current.get("status") or {}).get("phase") in ("Pending", "Running")
            try:
                text = self.read_log(ns, name, current or pod)
            except ApiError:
                break
            if len(text) > offset and not handler.write_chunk(text[offset:].encode()):
                return None
            offset = max(offset, len(text))
            if not running:
                break
            time.sleep(0.2)
        handler.end_chunked()
        return None

    def _exec(self, req: _Request, handler: _Handler, ns: str, name: str) -> None:
        self.store.get(PODS, ns, name)
        argv = req.query.get("command") or []
        if not argv:
            raise bad_request("you must specify at least one command for the container")
        want_stdin, want_stdout, want_stderr, tty = (req.flag(f) for f in ("stdin", "stdout", "stderr", "tty"))
        if not (want_stdin or want_stdout or want_stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        want_stderr = want_stderr and not tty
        upgrade = (req.headers.get("Upgrade") or "").lower()
        if upgrade != "websocket":
            raise bad_request(
                "Upgrade request required: the sandbox apiserver streams exec over WebSocket only "
                f"({', '.join(EXEC_PROTOCOLS)}), not SPDY"
            )
        offered = [p.strip() for p in (req.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        protocol = next((p for p in offered if p in EXEC_PROTOCOLS), None)
        key = req.headers.get("Sec-WebSocket-Key")
        if protocol is None or not key:
            raise bad_request(
                f"unable to upgrade connection: none of the subprotocols {offered} is supported "
                f"(supported: {', '.join(EXEC_PROTOCOLS)})"
            )
        if self.store.exec_handler is None:
            raise bad_request(f'unable to upgrade connection: pod "{name}" has no kubelet')
        master: int | None = None
        stdio: dict[str, Any]
        if tty:
            master, slave = os.openpty()
            stdio = {"stdin": slave, "stdout": slave, "stderr": slave}
        else:
            stdio = {
                "stdin": subprocess.PIPE if want_stdin else subprocess.DEVNULL,
                "stdout": subprocess.PIPE if want_stdout else subprocess.DEVNULL,
                "stderr": subprocess.PIPE if want_stderr else subprocess.DEVNULL,
            }
        start_error: OSError | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = self.store.exec_handler(ns, name, req.q("container") or None, list(argv), stdio)
        except OSError as exc:
            start_error = exc
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            if tty:
                os.close(stdio["stdin"])
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        handler.send_header("Sec-WebSocket-Protocol", protocol)
        handler.end_headers()
        handler.close_connection = True
        ws = WebSocket(handler.rfile, handler.wfile)  # type: ignore[arg-type]
        # As kube-apiserver does: an empty message on the lowest writable channel says "connected".
        ws.send(bytes([STDOUT if want_stdout else STDERR if want_stderr else ERROR]))
        try:
            if proc is None:
                message = f"error executing command in container: {start_error}"
                status = ApiError(
                    500, "InternalError", f"Internal error occurred: {message}", causes=[{"message": message}]
                )
                ws.send(bytes([ERROR]) + json.dumps(status.status()).encode())
            else:
                _pump(ws, proc, protocol, master)
                ws.send(bytes([ERROR]) + json.dumps(exec_status(proc.returncode, list(argv))).encode())
            ws.close()
        except OSError:
            pass
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            if master is not None:
                os.close(master)


def _tail(text: str, req: _Request) -> str:
    lines = req.q("tailLines")
    if lines.isdigit():
        kept = text.splitlines(keepends=True)
        text = "".join(kept[-int(lines) :]) if int(lines) else ""
    limit = req.q("limitBytes")
    if limit.isdigit():
        text = text.encode()[: int(limit)].decode(errors="ignore")
    return text


def _pump(ws: WebSocket, proc: subprocess.Popen[bytes], protocol: str, master: int | None) -> None:
    """Shuttle the channels until the command ends."""
    outputs: list[threading.Thread] = []

    def forward(fd: int, channel: int) -> None:
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:  # EIO: the pty's last writer has gone
                return
            if not data:
                return
            try:
                ws.send(bytes([channel]) + data)
            except OSError:
                return

    if master is not None:
        outputs.append(threading.Thread(target=forward, args=(master, STDOUT), daemon=True))
    for stream, channel in ((proc.stdout, STDOUT), (proc.stderr, STDERR)):
        if stream is not None:
            outputs.append(threading.Thread(target=forward, args=(stream.fileno(), channel), daemon=True))
    for t in outputs:
        t.start()

    def client() -> None:
        while True:
            message = ws.recv()
            if message is None:
                if proc.poll() is None and not ws.closing:
                    proc.kill()  # the client went away
                return
            if not message:
                continue
            channel, data = message[0], message[1:]
            try:
                if channel == STDIN and master is not None:
                    os.write(master, data)
                elif channel == STDIN and proc.stdin is not None:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                elif channel == CLOSE and protocol == "v5.channel.k8s.io" and data[:1] == bytes([STDIN]):
                    if proc.stdin is not None:
                        proc.stdin.close()
                    elif master is not None:
                        os.write(master, b"\x04")
                elif channel == RESIZE and master is not None:
                    size = json.loads(data or b"{}")
                    import fcntl
                    import termios

                    winsize = struct.pack("HHHH", int(size.get("Height", 24)), int(size.get("Width", 80)), 0, 0)
                    fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
            except (OSError, ValueError):
                continue

    threading.Thread(target=client, daemon=True, name="eksid-exec-client").start()
    proc.wait()
    for t in outputs:
        t.join(timeout=2 if master is None else 0.5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "eksid-sandbox-apiserver"
    api: KubeApiServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _send(self, response: _Response) -> None:
        body = response.body
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True

    def write_chunk(self, data: bytes) -> bool:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:
            return False
        return True

    def end_chunked(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def client_gone(self) -> bool:
        """A streaming client sends nothing: readable means it closed the connection."""
        try:
            return bool(select.select([self.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        req = _Request(
            method=method,
            path=parts.path.rstrip("/") or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=raw,
        )
        try:
            discovery = self.api.oidc_discovery
            if method == "GET" and discovery is not None and req.path in OIDC_PATHS:
                # Public, like EKS's issuer and kube-apiserver's service-account-issuer-discovery.
                document, jwks = discovery()
                self._send(_Response(200, document if req.path == OIDC_PATHS[0] else jwks))
                return
            if self.headers.get("Authorization") != f"Bearer {self.api.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            response = self.api.route(req, self)
            if response is not None:
                self._send(response)
        except ApiError as exc:
            self._send(_Response(exc.code, exc.status()))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # the server must answer, as kube-apiserver does
            self._send(_Response(500, ApiError(500, "InternalError", f"sandbox apiserver: {exc!r}").status()))
