"""The store and its watch: objects by kind, namespace and name, with resource versions.

What etcd and the registry are to kube-apiserver: create/get/list/update/patch/delete with
admission, validation, defaults and garbage collection by ownerReferences, and a change log that
watches replay from a ``resourceVersion``. The kubelet and the webhooks hook in through
callbacks (``mutators``, ``on_create``, ``on_delete``, ``exec_handler``).
"""

from __future__ import annotations

import copy
import secrets
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from pytest_eksid.sandbox.kubeapi.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    path_not_found,
)
from pytest_eksid.sandbox.kubeapi.patches import apply_patch
from pytest_eksid.sandbox.kubeapi.resources import (
    EVENTS,
    NAMESPACES,
    PODS,
    SERVICEACCOUNTS,
    Obj,
    ResourceType,
    resource_type,
)
from pytest_eksid.sandbox.kubeapi.selectors import field_matcher, label_matcher
from pytest_eksid.sandbox.kubeapi.serviceaccounts import (
    KubernetesService,
    TokenMinter,
    TokenPolicy,
    mount_api_access,
    root_ca_configmap,
)
from pytest_eksid.sandbox.kubeapi.validation import check_string_map, check_type, default, update_errors, validate

Objs = list[Obj]  # (inside Store, ``list`` is a method)
Keyed = list[tuple[tuple[str, str, str], Obj]]  # (kind, namespace, name) and the stored object
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
        # Indexes of _objects, kept by _put/_pop (and _note_owners for in-place changes), so that a list, a watch's
        # start or a delete's search for dependents reads one kind, or the objects with owners, instead of the
        # whole store: at a thousand workloads those scans made the emulated API server's cost grow with N².
        self._kinds: dict[str, dict[tuple[str, str, str], Obj]] = {}
        self._owned: dict[tuple[str, str, str], None] = {}  # keys of objects that have had ownerReferences
        self._rv = 0
        self._log: deque[tuple[int, str, str, str, Obj]] = deque()
        self._log_floor = 0  # events up to this resourceVersion are no longer in the log
        self.mutators: list[Mutator] = []
        self.on_create: list[Listener] = []
        self.on_delete: list[Listener] = []
        self.exec_handler: ExecHandler | None = None
        # In-cluster access (kubeapi/serviceaccounts.py): the kubernetes Service and CA, published by
        # the API server; the signer of TokenRequests and pod tokens, set by the sandbox.
        self.kubernetes_service: KubernetesService | None = None
        self.token_minter: TokenMinter | None = None
        self.token_policy = TokenPolicy()
        # Called with the kind after every change, under the store's lock (controllers that
        # kube-apiserver's cluster runs at once, such as RBAC's ClusterRole aggregation). A
        # change they make does not call them again.
        self.on_change: list[Callable[[ResourceType], None]] = []
        self._reconciling = False

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
        if self._reconciling:
            return
        self._reconciling = True
        try:
            for hook in self.on_change:
                hook(rt)
        finally:
            self._reconciling = False

    def _put(self, key: tuple[str, str, str], obj: Obj) -> None:
        self._objects[key] = obj
        self._kinds.setdefault(key[0], {})[key] = obj
        self._note_owners(key, obj)

    def _pop(self, key: tuple[str, str, str]) -> Obj | None:
        obj = self._objects.pop(key, None)
        if obj is not None:
            self._kinds[key[0]].pop(key, None)
            self._owned.pop(key, None)
        return obj

    def _note_owners(self, key: tuple[str, str, str], obj: Obj) -> None:
        """Index ``obj`` among the owned if it has owners now (a superset: _remove checks the owners again)."""
        if obj["metadata"].get("ownerReferences"):
            self._owned[key] = None

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (rt.key, (namespace or "") if rt.namespaced else "", name)

    # -- create --

    def create(self, resource: str | ResourceType, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = resource_type(resource)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        check_string_map(meta, "labels")
        check_string_map(meta, "annotations")
        check_type(rt, obj)
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
            default(rt, obj)
            validate(rt, obj)
            key = self._key(rt, namespace, name)
            if key in self._objects:
                raise already_exists(rt, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if dry_run:
                return copy.deepcopy(obj)
            meta["resourceVersion"] = self._next_rv()
            self._put(key, obj)
            self._record("ADDED", rt, obj)
            if rt is NAMESPACES:
                self.create(SERVICEACCOUNTS, name, {"metadata": {"name": "default"}})
                if self.kubernetes_service is not None:  # the root CA publisher controller
                    self.create("configmaps", name, root_ca_configmap(self.kubernetes_service.ca_pem))
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
        service_account = self._objects.get(self._key(SERVICEACCOUNTS, ns, sa))
        if service_account is None:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{pod["metadata"]["name"]}" is forbidden: error looking up service account '
                f'{ns}/{sa}: serviceaccount "{sa}" not found',
                kind="pods",
                name=pod["metadata"]["name"],
            )
        mount_api_access(service_account, pod)  # the ServiceAccount plugin runs before the webhooks
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
        return self.list_at(resource, namespace, label_selector, field_selector)[0]

    def list_at(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[Objs, str]:
        """The matching objects and the resourceVersion they are as of, read together: kube-apiserver answers a
        list from one snapshot with that snapshot's version, so a watch from it misses no change. Read apart, a
        change landing in between was in neither the list nor the watch."""
        rt = resource_type(resource)
        matches = self._matching(rt, namespace, label_selector, field_selector)
        with self._lock:
            return [copy.deepcopy(o) for _, o in self._sorted_matches(rt, matches)], str(self._rv)

    def _sorted_matches(self, rt: ResourceType, matches: Callable[[str, str, Obj], bool]) -> Keyed:
        """The stored (key, object) pairs of ``rt`` that match, in key order: read from the kind's index, as the
        authorizer lists bindings for every request. Caller holds the lock."""
        found = [(k, o) for k, o in self._kinds.get(rt.key, {}).items() if matches(k[0], k[1], o)]
        found.sort(key=lambda pair: pair[0])
        return found

    # -- write --

    def update(self, resource: str | ResourceType, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Apply ``change`` to the stored object under the lock (in-process status updates)."""
        rt = resource_type(resource)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace, name))
            if obj is None:
                raise not_found(rt, name)
            change(obj)
            self._note_owners(self._key(rt, namespace, name), obj)
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
            raise path_not_found()
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
            self._put(key, new)
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
        check_type(rt, new)
        if subresource == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status") or {}
            return result
        check_string_map(nmet, "labels")
        check_string_map(nmet, "annotations")
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
        validate(rt, result, update_errors(rt, old, result))
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
        obj = self._pop(key)
        if obj is None:
            return []
        rt = resource_type(key[0])
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", rt, obj)
        pods = [obj] if rt is PODS else []
        uid = obj["metadata"]["uid"]
        # A namespace takes everything in it; anything else, what it owns (only objects with owners can be).
        candidates = list(self._objects) if rt is NAMESPACES else list(self._owned)
        for other_key in candidates:
            other = self._objects.get(other_key)
            if other is None:
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
                self._record("MODIFIED", resource_type(other_key[0]), other)
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
            doomed = [(k, copy.deepcopy(o)) for k, o in self._sorted_matches(rt, matches)]
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
                initial = [("ADDED", copy.deepcopy(o)) for _, o in self._sorted_matches(rt, matches)]
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
