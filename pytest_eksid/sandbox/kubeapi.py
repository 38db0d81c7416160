"""A subset of the Kubernetes REST API over real HTTP, backed by an in-memory store.

Enough for the official ``kubernetes`` client and ``kubectl``: discovery, core/v1 resources
with create/get/list/delete, label and field selectors, ``pods/status`` and ``pods/log``, and
``Status`` error bodies. Admission (the EKS mutating webhooks, the ServiceAccount admission
check) and the kubelet hook in through callbacks, so this module knows nothing of AWS.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]
Mutator = Callable[[Obj], None]
Listener = Callable[[Obj], None]

# kind, namespaced, short names
CORE_RESOURCES: dict[str, tuple[str, bool, list[str]]] = {
    "namespaces": ("Namespace", False, ["ns"]),
    "nodes": ("Node", False, ["no"]),
    "serviceaccounts": ("ServiceAccount", True, ["sa"]),
    "pods": ("Pod", True, ["po"]),
    "secrets": ("Secret", True, []),
    "configmaps": ("ConfigMap", True, ["cm"]),
    "events": ("Event", True, ["ev"]),
}
VERBS = ["create", "delete", "get", "list"]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name

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
        if self.kind or self.name:
            body["details"] = {"name": self.name, "kind": self.kind}
        return body


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', kind=resource, name=name)


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


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    reqs: list[Requirement] = []
    for term in _split_selector(selector):
        op = "!=" if "!=" in term else "="
        if op not in term.replace("==", "="):
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        k, v = term.replace("==", "=").split(op, 1)
        reqs.append((k.strip(), op, frozenset([v.strip()])))
    return lambda obj: all(_holds(r, _field(obj, r[0])) for r in reqs)


# --- the store ---------------------------------------------------------------------------


class Store:
    """Objects by (resource, namespace, name). Thread-safe; hands out deep copies."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = 0
        self.mutators: list[Mutator] = []
        self.on_create: list[Listener] = []
        self.on_delete: list[Listener] = []

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, resource: str, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        kind, namespaced, _ = CORE_RESOURCES[resource]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        with self._lock:
            if namespaced:
                if ("namespaces", "", namespace) not in self._objects:
                    raise not_found("namespaces", namespace)
                if meta.get("namespace", namespace) != namespace:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                meta["namespace"] = namespace
            if not meta.get("name"):
                if meta.get("generateName"):
                    meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
                else:
                    raise ApiError(422, "Invalid", f"{kind} is invalid: metadata.name: Required value", kind=kind)
            name = meta["name"]
            key = (resource, namespace if namespaced else "", name)
            if key in self._objects:
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', kind=resource, name=name)
            obj["kind"] = kind
            obj["apiVersion"] = "v1"
            if resource == "pods":
                self._admit_pod(obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["resourceVersion"] = self._next_rv()
            if dry_run:
                return copy.deepcopy(obj)
            self._objects[key] = obj
            if resource == "namespaces":
                obj.setdefault("status", {"phase": "Active"})
                sa = {"metadata": {"name": "default"}}
                self.create("serviceaccounts", name, sa)
            created = copy.deepcopy(obj)
        for listener in self.on_create:
            if resource == "pods":
                listener(copy.deepcopy(created))
        return created

    def _admit_pod(self, pod: Obj) -> None:
        spec = pod.setdefault("spec", {})
        ns = pod["metadata"]["namespace"]
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = sa
        spec["serviceAccount"] = sa
        if ("serviceaccounts", ns, sa) not in self._objects:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{pod["metadata"]["name"]}" is forbidden: error looking up service account '
                f'{ns}/{sa}: serviceaccount "{sa}" not found',
                kind="pods",
                name=pod["metadata"]["name"],
            )
        if not spec.get("containers"):
            raise ApiError(422, "Invalid", "Pod is invalid: spec.containers: Required value", kind="Pod")
        for mutate in self.mutators:
            mutate(pod)
        spec.setdefault("restartPolicy", "Always")
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def find(self, resource: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.get(resource, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Obj]:
        match_labels = label_matcher(label_selector)
        match_fields = field_matcher(field_selector)
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self._objects.items())
                if r == resource and (namespace is None or ns == namespace)
            ]
        return [o for o in items if match_labels(o["metadata"].get("labels") or {}) and match_fields(o)]

    def update(self, resource: str, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Apply ``change`` to the stored object under the lock (status updates, patches)."""
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            change(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return copy.deepcopy(obj)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            if resource == "namespaces":
                for key in [k for k in self._objects if k[1] == name]:
                    del self._objects[key]
        for listener in self.on_delete:
            if resource == "pods":
                listener(copy.deepcopy(obj))
        return obj


# --- HTTP --------------------------------------------------------------------------------


def parse_path(path: str) -> tuple[str, str | None, str | None, str | None]:
    """Split ``/api/v1/...`` into (resource, namespace, name, subresource)."""
    segs = path.removeprefix("/api/v1").strip("/").split("/")
    if not path.startswith("/api/v1/") or not segs or not segs[0]:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    ns: str | None = None
    if segs[0] == "namespaces" and len(segs) >= 3:
        ns, segs = segs[1], segs[2:]
    if len(segs) > 3 or segs[0] not in CORE_RESOURCES:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    resource = segs[0]
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if sub not in (None, "status", "log"):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return resource, ns, name, sub


def discovery_resources() -> Obj:
    resources = []
    for res, (kind, namespaced, short) in CORE_RESOURCES.items():
        resources.append(
            {
                "name": res,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
                **({"shortNames": short} if short else {}),
            }
        )
        if res == "pods":
            resources.append(
                {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
            resources.append(
                {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources}


class KubeApiServer:
    """Serves ``store`` on a free loopback port; requests need ``Authorization: Bearer <token>``."""

    def __init__(self, store: Store, *, host: str = "127.0.0.1", log_reader: Callable[[str, str, Obj], str]) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(32)
        self.read_log = log_reader
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="eksid-kubeapi", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "eksid-sandbox-apiserver"

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

            def _send(self, code: int, body: Obj | str, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    if self.headers.get("Authorization") != f"Bearer {api.token}":
                        raise ApiError(401, "Unauthorized", "Unauthorized")
                    code, body = api.handle(method, self.path, raw)
                    if isinstance(body, str):
                        self._send(code, body, "text/plain")
                    else:
                        self._send(code, body)
                except ApiError as exc:
                    self._send(exc.code, exc.status())
                except Exception as exc:  # the server must answer, as kube-apiserver does
                    self._send(500, ApiError(500, "InternalError", f"sandbox apiserver: {exc!r}").status())

        return Handler

    def handle(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, Obj | str]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method == "GET":
            if path == "/version":
                return 200, {
                    "major": "1",
                    "minor": "33",
                    "gitVersion": "v1.33.0-eks-sandbox",
                    "platform": "linux/amd64",
                }
            if path == "/api":
                return 200, {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                }
            if path == "/apis":
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            if path == "/api/v1":
                return 200, discovery_resources()
        resource, ns, name, sub = parse_path(path)
        namespaced = CORE_RESOURCES[resource][1]
        ns_key = (ns or "") if namespaced else ""
        if method == "GET" and name is None:
            items = self.store.list(
                resource,
                ns if namespaced else None,
                query.get("labelSelector", ""),
                query.get("fieldSelector", ""),
            )
            return 200, {
                "kind": CORE_RESOURCES[resource][0] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.store._rv)},
                "items": items,
            }
        if method == "POST" and name is None:
            if namespaced and ns is None:
                raise ApiError(405, "MethodNotAllowed", "create needs a namespace")
            try:
                body = json.loads(raw_body or b"{}")
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "body must be a JSON object")
            created = self.store.create(resource, ns_key, body, dry_run=query.get("dryRun") == "All")
            return 201, created
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if method == "GET" and sub == "log":
            if resource != "pods":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            pod = self.store.get("pods", ns_key, name)
            return 200, self.read_log(ns_key, name, pod)
        if method == "GET":
            return 200, self.store.get(resource, ns_key, name)
        if method == "DELETE":
            return 200, self.store.delete(resource, ns_key, name)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported by the sandbox apiserver")
