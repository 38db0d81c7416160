"""Every Kubernetes call pytest-eksid makes, over the official ``kubernetes`` client's connection.

Keeping them here is what lets ``deploy/`` grant the runner exactly these verbs. Nothing else in
the package imports ``kubernetes``.

The client loads the kubeconfig (or the in-cluster account), authenticates (tokens, exec plugins and
their refresh, client certificates), and owns the TLS connection pool; the requests themselves are
made here, by path, and their answers read as the API's own JSON. The generated API classes are not
used: since release 37 each of their methods validates its arguments with pydantic and each answer
is built into pydantic models, which the runner only turned back into dicts. Importing the four API
classes cost 0.7 s of CPU in every process and the models about 0.4 ms per test item at 1,000
workloads (docs/performance.md); the REST paths and parameters below are the API's own
(kubernetes.io "API Concepts"), the same the generated methods send.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from pytest_eksid.settings import DEFAULT_API_TIMEOUT

Obj = dict[str, Any]

# Every request this module makes, by the name of the client method that makes it (the names the run's
# counts use) -> (API group, resource, verb). The runner's RBAC in deploy/rbac.yaml must grant exactly
# these; tests/test_deploy.py checks both directions, and each request's path is built from its entry here.
METHODS: dict[str, tuple[str, str, str]] = {
    "create_namespaced_pod": ("", "pods", "create"),
    "read_namespaced_pod": ("", "pods", "get"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "delete_collection_namespaced_pod": ("", "pods", "deletecollection"),
    "list_namespaced_pod": ("", "pods", "list"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "list_namespaced_event": ("", "events", "list"),
    "read_namespaced_service_account": ("", "serviceaccounts", "get"),
    "list_service_account_for_all_namespaces": ("", "serviceaccounts", "list"),
    "list_namespaced_secret": ("", "secrets", "list"),
    "list_namespaced_config_map": ("", "configmaps", "list"),
    "list_node": ("", "nodes", "list"),
    "list_namespaced_deployment": ("apps", "deployments", "list"),
    "list_namespaced_stateful_set": ("apps", "statefulsets", "list"),
    "read_namespaced_daemon_set": ("apps", "daemonsets", "get"),
    # Who can become each workload identity (checks/become.py): read-only, every RBAC object.
    "list_role_for_all_namespaces": ("rbac.authorization.k8s.io", "roles", "list"),
    "list_cluster_role": ("rbac.authorization.k8s.io", "clusterroles", "list"),
    "list_role_binding_for_all_namespaces": ("rbac.authorization.k8s.io", "rolebindings", "list"),
    "list_cluster_role_binding": ("rbac.authorization.k8s.io", "clusterrolebindings", "list"),
    # Who the runner itself is (test_who_can_become reports the gate's own grants as such, not as a deployer).
    "create_self_subject_review": ("authentication.k8s.io", "selfsubjectreviews", "create"),
}


# The version of each API group the requests use (all GA).
VERSIONS = {"": "v1", "apps": "v1", "rbac.authorization.k8s.io": "v1", "authentication.k8s.io": "v1"}

# Methods this module also calls as a watch (``watch=True``): their verb is ``watch``. The probe campaign
# waits for its pods this way (probe/pod.py PodBoard); where ``watch`` is refused it polls with ``list``.
WATCHED: dict[str, tuple[str, str, str]] = {
    "list_namespaced_pod": ("", "pods", "watch"),
    "list_pod_for_all_namespaces": ("", "pods", "watch"),
}

# Used outside this module: --eksid-exec runs `kubectl exec` through pytest-testinfra.
EXTERNAL: dict[str, tuple[str, str, str]] = {"kubectl exec (--eksid-exec)": ("", "pods/exec", "create")}


def rbac_rules() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs: the least privilege the runner needs."""
    rules: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in (*METHODS.values(), *WATCHED.values(), *EXTERNAL.values()):
        rules.setdefault((group, resource), set()).add(verb)
    return rules


# A connection that cannot be made is tried this many more times, with backoff, before the API server
# counts as unreachable; a GET whose answer broke off is tried once more.
RETRIES = 2


class KubeError(Exception):
    """A Kubernetes call that failed, with the API's own reason."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeUnreachable(KubeError):
    """The API server did not answer at all (refused, timed out, TLS failure): no status, no reason.

    Once raised, every later call of the same client raises it again at once (deleting probe pods still
    tries), so that a run against an unreachable cluster fails in seconds, not minutes per test.
    ``sent``: the request reached the server (which never answered), so a create may have happened."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


def _refusal(status: int, reason: str, body: bytes, what: str) -> KubeError:
    """The API server's refusal as a KubeError: its Status object's reason and message where the body is one."""
    why, message = "", reason
    try:
        status_object = json.loads(body or b"{}")
        if isinstance(status_object, dict):
            why, message = str(status_object.get("reason") or ""), str(status_object.get("message") or message)
    except ValueError:
        pass
    return KubeError(f"{what}: {status} {why or reason}: {message}", status, why)


def _path(method: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a request in METHODS (a ``pods/log`` resource is the ``log`` subresource of a pod)."""
    group, resource, _ = METHODS[method]
    kind, _, subresource = resource.partition("/")
    path = f"/api/{VERSIONS[group]}" if not group else f"/apis/{group}/{VERSIONS[group]}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{kind}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path + (f"/{subresource}" if subresource else "")


@dataclass(frozen=True)
class KubeTarget:
    kubeconfig: str | None
    context: str | None

    def describe(self) -> str:
        return f"context {self.context or '(current)'} of {self.kubeconfig or '$KUBECONFIG or ~/.kube/config'}"


class Kube:
    def __init__(self, target: KubeTarget, timeout: float = DEFAULT_API_TIMEOUT) -> None:
        self.target = target
        self.timeout = timeout
        self._unreachable: str | None = None
        # Read $KUBECONFIG now: the client reads it once, at import time.
        config_file = target.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        in_cluster = (
            target.kubeconfig is None
            and not os.environ.get("KUBECONFIG")
            and not os.path.exists(config_file)
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        )
        try:
            configuration = client.Configuration()
            if in_cluster:  # the nightly Job: the pod's own service account (deploy/rbac.yaml)
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=config_file, context=target.context, client_configuration=configuration
                )
        except (ConfigException, OSError, TypeError) as exc:
            raise KubeError(f"cannot load kubeconfig ({target.describe()}): {exc}") from None
        except Exception as exc:  # not YAML, or YAML of another shape: the loader's own errors vary
            raise KubeError(
                f"cannot load kubeconfig ({target.describe()}): not a kubeconfig ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        for header, value in (configuration.api_key or {}).items():
            if _unsendable(value):  # http.client would refuse it on every call, with the token in the error
                raise KubeError(
                    f"cannot use kubeconfig ({target.describe()}): its bearer token ({header}) "
                    "holds a newline or another control character, so no request can carry it; the token is "
                    "not shown. Check it with: kubectl"
                    + (f" --kubeconfig {target.kubeconfig}" if target.kubeconfig else "")
                    + (f" --context {target.context}" if target.context else "")
                    + " config view --minify"
                )
        # Retry what never reached the server (and 429/503 with Retry-After, for reads), with backoff.
        configuration.retries = urllib3.Retry(total=RETRIES, read=1, backoff_factor=0.5)
        self.server = str(configuration.host)
        self.configuration = configuration
        # The client's connection pool: TLS, client certificates, proxy and the retries above, as kubectl would.
        self.api_client = client.ApiClient(configuration)
        self._pool = self.api_client.rest_client.pool_manager
        # Cluster-wide reads (every ServiceAccount, every RBAC object) are made once per Kube.
        self._cluster_reads: dict[str, Any] = {}
        self._reads_lock = threading.Lock()
        self._read_locks: dict[str, threading.Lock] = {}
        # Requests made, by client method (a watch as "watch <method>", one per connection): the run's
        # Kubernetes cost, which the end of the run reports (docs/performance.md).
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self.context = "in-cluster" if in_cluster else (target.context or _current_context(config_file))

    def close(self) -> None:
        """Release the client's connections."""
        self.api_client.close()  # type: ignore[no-untyped-call]

    def _request(
        self,
        what: str,
        method: str,
        http_method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Obj | None = None,
        retry: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """One API request with the request timeout (``method``: its name in METHODS, counted): the answer's JSON.
        The API's refusal becomes a KubeError with its status; a request that never reached the server,
        KubeUnreachable.

        After a KubeUnreachable, later calls fail at once with its message, unless ``retry`` (cleanup) asks."""
        if self._unreachable is not None and not retry:
            raise KubeUnreachable(f"{what}: {self._unreachable}")
        self._count(method)
        is_log = method == "read_namespaced_pod_log"  # the one answer that is not JSON
        try:
            response = self._send(
                http_method,
                path,
                query,
                body,
                urllib3.Timeout(total=self.timeout if timeout is None else timeout),
                preload=True,
                accept="*/*" if is_log else "application/json",
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            silent = _no_answer(exc)
            if not silent and not _never_connected(exc):
                # The server took the request, then the answer broke off (a reset connection): this call
                # failed, not the cluster.
                raise KubeError(
                    f"{what}: no complete answer from the Kubernetes API server {self.server}: {self._cause(exc)}"
                ) from None
            # Refused, out of reach, or connected and silent for the whole timeout: a server that accepts
            # connections and never answers would otherwise cost the timeout on every call of the run.
            self._unreachable = (
                f"cannot reach the Kubernetes API server {self.server} ({self.target.describe()}): "
                f"{self._cause(exc)} (at {time.strftime('%H:%M:%S')}; later calls of this run are not tried). "
                f"Check the endpoint from here: kubectl{self._kubectl_args()} get --raw /version"
            )
            raise KubeUnreachable(f"{what}: {self._unreachable}", sent=silent) from None
        data = response.data
        if not 200 <= response.status < 300:  # the API server answered: with its own status and reason
            raise _refusal(response.status, str(response.reason or ""), data, what)
        if is_log:  # a log is text, whatever bytes the container wrote
            return data.decode("utf-8", errors="replace")
        try:
            return json.loads(data)
        except ValueError:
            raise KubeError(f"{what}: the API server's answer is not JSON ({len(data)} bytes)") from None

    def _send(
        self,
        http_method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Obj | None,
        timeout: urllib3.Timeout,
        preload: bool,
        accept: str = "application/json",
    ) -> urllib3.BaseHTTPResponse:
        """The HTTP request, authenticated as the kubeconfig says (a token from an exec plugin is refreshed by the
        client's hook when it expires), over the client's pool."""
        headers = dict(self.api_client.default_headers)
        headers["Accept"] = accept
        try:  # runs the kubeconfig's refresh (an exec plugin, OIDC) when the token expired
            settings: Any = self.configuration.auth_settings()  # a TypedDict in release 37, a dict before
        except Exception as exc:  # the loader's errors vary; their text names the plugin, never a token
            raise KubeUnreachable(
                f"cannot authenticate to the Kubernetes API server ({self.target.describe()}): "
                f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            ) from None
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                value = str(setting["value"])
                if _unsendable(value):  # a refreshed token: urllib3 would refuse it with the token in its error
                    raise KubeUnreachable(
                        f"cannot authenticate to the Kubernetes API server ({self.target.describe()}): the "
                        "refreshed bearer token holds a newline or another control character; the token is not shown"
                    )
                headers[str(setting["key"])] = value
        encoded = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            encoded = json.dumps(body).encode()
        parameters = {k: _query_value(v) for k, v in (query or {}).items() if v is not None and v != ""}
        url = str(self.configuration.host).rstrip("/") + path + (f"?{urlencode(parameters)}" if parameters else "")
        return self._pool.request(
            http_method, url, body=encoded, headers=headers, timeout=timeout, preload_content=preload
        )

    def _count(self, name: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1

    def _cause(self, exc: BaseException, read_timeout: float | None = None) -> str:
        reason = getattr(exc, "reason", None)
        cause: BaseException = reason if isinstance(reason, BaseException) else exc
        if isinstance(cause, urllib3.exceptions.NewConnectionError):  # refused, no route, DNS
            return str(cause).rpartition("Failed to establish a new connection: ")[2] or str(cause)
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return f"no connection within {self.timeout:g}s (a private endpoint out of reach, a VPN down?)"
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {self.timeout if read_timeout is None else read_timeout:g}s"
        if isinstance(cause, urllib3.exceptions.SSLError):
            return f"TLS failed: {cause}"
        return f"{cause.__class__.__name__}: {cause}"

    def _kubectl_args(self) -> str:
        args = ""
        if self.target.kubeconfig:
            args += f" --kubeconfig {self.target.kubeconfig}"
        if self.target.context:
            args += f" --context {self.target.context}"
        return args

    def create_pod(self, namespace: str, manifest: Obj) -> Obj:
        what = f"create pod in namespace {namespace}"
        method = "create_namespaced_pod"
        return _object(self._request(what, method, "POST", _path(method, namespace), body=manifest))

    def read_pod(self, namespace: str, name: str) -> Obj:
        method = "read_namespaced_pod"
        return _object(self._request(f"read pod {namespace}/{name}", method, "GET", _path(method, namespace, name)))

    def pod_log(self, namespace: str, name: str, tail_lines: int | None = None) -> str:
        what = f"read log of pod {namespace}/{name}"
        method = "read_namespaced_pod_log"
        query = {"tailLines": tail_lines or None}
        return str(self._request(what, method, "GET", _path(method, namespace, name), query))

    def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete a pod; False when it was already gone, or (with ``uid``) when the pod of that name is
        another one: the API server checks the UID precondition (409 Conflict), so a pod someone else
        created under the same name is never deleted in its place."""
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        method = "delete_namespaced_pod"
        try:
            self._request(
                f"delete pod {namespace}/{name}",
                method,
                "DELETE",
                _path(method, namespace, name),
                {"gracePeriodSeconds": 0},
                body=options,
                retry=True,
            )
        except KubeError as exc:
            if exc.status == 404 or (uid and exc.status == 409):
                return False
            raise
        return True

    def delete_pods(self, namespace: str, label_selector: str, timeout: float | None = None) -> None:
        """Delete the namespace's pods matching the selector in one call (tried even after the server was
        unreachable; ``timeout`` bounds it)."""
        method = "delete_collection_namespaced_pod"
        self._request(
            f"delete pods ({label_selector}) in namespace {namespace}",
            method,
            "DELETE",
            _path(method, namespace),
            {"labelSelector": label_selector, "gracePeriodSeconds": 0},
            retry=True,
            timeout=timeout,
        )

    def pod_events(self, namespace: str, name: str) -> list[Obj]:
        """The events about one pod, oldest first."""
        method = "list_namespaced_event"
        found = self._request(
            f"list events of pod {namespace}/{name}",
            method,
            "GET",
            _path(method, namespace),
            {"fieldSelector": f"involvedObject.name={name}"},
        )
        events = _items(found)
        return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def service_account(self, namespace: str, name: str) -> Obj | None:
        """The ServiceAccount (None when it does not exist), from the cluster's list (:meth:`all_service_accounts`,
        read once per run); read alone, once, where that list is refused or failed."""
        try:
            listed = self.all_service_accounts()
        except KubeUnreachable:
            raise
        except KubeError:
            what = f"read serviceaccount {namespace}/{name}"
            result: Obj | None = self._once(
                f"serviceaccount/{namespace}/{name}",
                lambda: self._read_or_none(what, "read_namespaced_service_account", namespace, name),
            )
            return result
        return next(
            (
                sa
                for sa in listed
                if (sa.get("metadata") or {}).get("namespace") == namespace
                and (sa.get("metadata") or {}).get("name") == name
            ),
            None,
        )

    def _once(self, key: str, read: Callable[[], Any]) -> Any:
        """The read's result, made once per Kube (an error is not kept); callers of another key do not wait."""
        with self._reads_lock:
            if key in self._cluster_reads:
                return self._cluster_reads[key]
            lock = self._read_locks.setdefault(key, threading.Lock())
        with lock:
            with self._reads_lock:
                if key in self._cluster_reads:
                    return self._cluster_reads[key]
            value = read()
            with self._reads_lock:
                self._cluster_reads[key] = value
            return value

    def all_service_accounts(self) -> list[Obj]:
        """Every ServiceAccount of the cluster (all namespaces), read once."""

        def read() -> list[Obj]:
            method = "list_service_account_for_all_namespaces"
            return _items(self._request("list serviceaccounts (all namespaces)", method, "GET", _path(method)))

        result: list[Obj] = self._once("serviceaccounts", read)
        return result

    def whoami(self) -> str | None:
        """The user name the API server knows the runner by (SelfSubjectReview, GA in Kubernetes 1.28; every
        authenticated user may create one through the default ``system:basic-user`` role), read once; None
        when the server does not answer it (an older server, or the call refused)."""

        def read() -> str | None:
            try:
                method = "create_self_subject_review"
                review = _object(
                    self._request(
                        "create selfsubjectreview",
                        method,
                        "POST",
                        _path(method),
                        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                    )
                )
            except KubeError as exc:
                if isinstance(exc, KubeUnreachable):
                    raise
                return None
            info = _object(_object(review.get("status")).get("userInfo"))
            name = info.get("username")
            return name if isinstance(name, str) and name else None

        result: str | None = self._once("whoami", read)
        return result

    def rbac_objects(self) -> dict[str, list[Obj]]:
        """Every Role, ClusterRole, RoleBinding and ClusterRoleBinding, read once (aggregated ClusterRoles
        come with the rules the aggregation controller filled in)."""

        def read() -> dict[str, list[Obj]]:
            out: dict[str, list[Obj]] = {}
            for key, what, method in (
                ("roles", "list roles (all namespaces)", "list_role_for_all_namespaces"),
                ("cluster_roles", "list clusterroles", "list_cluster_role"),
                ("role_bindings", "list rolebindings (all namespaces)", "list_role_binding_for_all_namespaces"),
                ("cluster_role_bindings", "list clusterrolebindings", "list_cluster_role_binding"),
            ):
                out[key] = _items(self._request(what, method, "GET", _path(method)))
            return out

        result: dict[str, list[Obj]] = self._once("rbac", read)
        return result

    def namespace_pods(self, namespace: str) -> list[Obj]:
        """Every pod of a namespace, read once (whose ServiceAccount each runs as decides who can exec into it)."""

        def read() -> list[Obj]:
            return self.list_pods("", namespace)

        result: list[Obj] = self._once(f"pods/{namespace}", read)
        return result

    def secrets(self, namespace: str) -> list[Obj]:
        """Secrets of a namespace, read once per run. Their values are read only to scan them, never reported."""

        def read() -> list[Obj]:
            method = "list_namespaced_secret"
            return _items(self._request(f"list secrets in {namespace}", method, "GET", _path(method, namespace)))

        result: list[Obj] = self._once(f"secrets/{namespace}", read)
        return result

    def config_maps(self, namespace: str) -> list[Obj]:
        """ConfigMaps of a namespace, read once per run."""

        def read() -> list[Obj]:
            method = "list_namespaced_config_map"
            return _items(self._request(f"list configmaps in {namespace}", method, "GET", _path(method, namespace)))

        result: list[Obj] = self._once(f"configmaps/{namespace}", read)
        return result

    def workloads(self, namespace: str, label_selector: str) -> list[Obj]:
        """Deployments and StatefulSets matching the selector (their pod templates matter here), read once per run
        (the probe's placement and the checks of its template share the read). An equality-based selector (the
        default ``app.kubernetes.io/name=<name>``) is matched here against the namespace's list, read once for
        all its workloads; any other is left to the API server, one list per selector."""
        terms = equality_selector(label_selector)
        if terms is None:
            result: list[Obj] = self._once(
                f"workloads/{namespace}/{label_selector}", lambda: self._workloads(namespace, label_selector)
            )
            return result

        def matching() -> list[Obj]:
            every: list[Obj] = self._once(f"workloads/{namespace}", lambda: self._workloads(namespace, ""))
            return [o for o in every if _labels_match(terms, (o.get("metadata") or {}).get("labels"))]

        # Matched once per selector: each workload's tests ask again, and matching the namespace's whole list every
        # time made the runner's CPU per workload grow with the namespace's size.
        matched: list[Obj] = self._once(f"workloads/{namespace}/matching/{label_selector}", matching)
        return list(matched)

    def _workloads(self, namespace: str, label_selector: str) -> list[Obj]:
        out: list[Obj] = []
        for kind, method in (
            ("Deployment", "list_namespaced_deployment"),
            ("StatefulSet", "list_namespaced_stateful_set"),
        ):
            try:
                found = self._request(
                    f"list {kind}s in {namespace}",
                    method,
                    "GET",
                    _path(method, namespace),
                    {"labelSelector": label_selector},
                )
            except KubeError as exc:
                if exc.status == 404:  # the API server does not serve this kind
                    continue
                raise
            for obj in _items(found):
                obj["kind"] = kind  # list items carry no kind of their own
                out.append(obj)
        return out

    def running_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        """The workload's pods that are running now (for --eksid-exec)."""
        return [
            p for p in self.list_pods(label_selector, namespace) if (p.get("status") or {}).get("phase") == "Running"
        ]

    def daemon_set(self, namespace: str, name: str) -> Obj | None:
        """The DaemonSet (None when it does not exist), read once per run."""
        what = f"read daemonset {namespace}/{name}"
        result: Obj | None = self._once(
            f"daemonset/{namespace}/{name}",
            lambda: self._read_or_none(what, "read_namespaced_daemon_set", namespace, name),
        )
        return result

    def nodes(self) -> list[Obj]:
        """Every node, read once per run."""

        def read() -> list[Obj]:
            return _items(self._request("list nodes", "list_node", "GET", _path("list_node")))

        result: list[Obj] = self._once("nodes", read)
        return result

    def list_pods(self, label_selector: str, namespace: str | None = None, field_selector: str = "") -> list[Obj]:
        return self._list_pods(label_selector, namespace, field_selector)[0]

    def _list_pods(self, label_selector: str, namespace: str | None, field_selector: str = "") -> tuple[list[Obj], str]:
        method = "list_pod_for_all_namespaces" if namespace is None else "list_namespaced_pod"
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        pods = _object(self._request(f"list pods ({label_selector})", method, "GET", _path(method, namespace), query))
        return _items(pods), str(_object(pods.get("metadata")).get("resourceVersion") or "")

    def pods_once(self, label_selector: str, namespace: str) -> list[Obj]:
        """The namespace's pods matching the selector, listed once per run (a platform component's pods, as the
        agent DaemonSets' that each Pod Identity workload's coverage check reads; not a probe's, which change)."""
        listed: list[Obj] = self._once(
            f"pods/{namespace}/{label_selector}", lambda: self.list_pods(label_selector, namespace)
        )
        return listed

    def list_pods_at(self, label_selector: str, namespace: str | None = None) -> tuple[list[Obj], str]:
        """The pods matching the selector and the list's resourceVersion, to watch from."""
        return self._list_pods(label_selector, namespace)

    def watcher(self) -> Watcher:
        """A watch handle for :meth:`watch_pods` (its ``stop()`` ends the stream at once, from any thread)."""
        return Watcher()

    def watch_pods(
        self,
        label_selector: str,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        watcher: Watcher,
    ) -> Iterator[tuple[str, Obj]]:
        """(event type, pod as the API's JSON) from one watch request from ``resource_version``, until the server
        ends it (``timeout_seconds``) or ``watcher`` (from :meth:`watcher`) is stopped. The API's refusal (403
        where ``watch`` is not granted, 410 Gone where the version is too old, before the stream or as its ERROR
        event) is a KubeError with its status; a stream that broke off is a KubeError without one. Never marks the
        server unreachable: the caller resumes or polls."""
        what = f"watch pods ({label_selector})"
        if self._unreachable is not None:
            raise KubeUnreachable(f"{what}: {self._unreachable}")
        method = "list_pod_for_all_namespaces" if namespace is None else "list_namespaced_pod"
        query = {
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": timeout_seconds,
            "watch": True,
        }
        if watcher.stopped:  # stopped before the request: none is made
            return
        self._count(f"watch {method}")
        # The server ends the watch at timeout_seconds; the socket may stay silent that long.
        read_timeout = timeout_seconds + self.timeout
        try:
            timeout = urllib3.Timeout(connect=self.timeout, read=read_timeout)
            response = self._send("GET", _path(method, namespace), query, None, timeout, preload=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(f"{what}: the watch broke off: {self._cause(exc, read_timeout)}") from None
        if not 200 <= response.status < 300:
            data = response.data
            response.release_conn()
            raise _refusal(response.status, str(response.reason or ""), data, what)
        if not watcher.follow(response):
            return
        try:
            for line in _lines(response):
                try:
                    event = json.loads(line)
                except ValueError:
                    raise KubeError(f"{what}: the watch broke off: an event that is not JSON") from None
                kind, obj = _object(event).get("type"), _object(event).get("object")
                if kind == "ERROR":  # a Status in the stream: 410 Gone when the version left the watch history
                    status = _object(obj)
                    code = status.get("code")
                    raise KubeError(
                        f"{what}: {code} {status.get('reason') or ''}: {status.get('message') or ''}",
                        code if isinstance(code, int) else None,
                        str(status.get("reason") or ""),
                    )
                if isinstance(obj, dict):
                    yield str(kind), obj
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not watcher.stopped:
                raise KubeError(f"{what}: the watch broke off: {self._cause(exc, read_timeout)}") from None
        finally:
            watcher.done(response)

    def _read_or_none(self, what: str, method: str, namespace: str, name: str) -> Obj | None:
        try:
            return _object(self._request(what, method, "GET", _path(method, namespace, name)))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise


class Watcher:
    """One watch's stream, which ``stop()`` ends from any thread: the reading thread's next read ends at once
    (urllib3's ``shutdown``; where urllib3 has none, after the next event or the server's timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self.stopped = False

    def follow(self, response: urllib3.BaseHTTPResponse) -> bool:
        """Whether to read ``response`` (False, and it is closed, when stop() came first)."""
        with self._lock:
            if not self.stopped:
                self._response = response
                return True
        response.close()
        return False

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            response, self._response = self._response, None
        shutdown = getattr(response, "shutdown", None)
        if callable(shutdown):
            # The reading thread may be closing it at this moment (urllib3 then refuses the shutdown).
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                shutdown()

    def done(self, response: urllib3.BaseHTTPResponse) -> None:
        """The stream's end, however it came (the server's timeout, stop(), a break, a caller that stopped reading):
        its connection is closed, not pooled, as the kubernetes client's own Watch does. A watch is one request a
        minute; a pooled connection outlives it only to be found idle later."""
        with self._lock:
            if self._response is response:
                self._response = None
        response.close()


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The stream's lines as they arrive (one watch event each), until it ends."""
    pending = b""
    for chunk in response.stream(None, decode_content=True):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


_LABEL_KEY = re.compile(
    r"\A([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z"
)
_LABEL_VALUE = re.compile(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")


def equality_selector(selector: str) -> list[tuple[str, bool, str]] | None:
    """The terms (key, equal, value) of a label selector made only of ``key=value``, ``key==value`` and
    ``key!=value`` (Kubernetes' equality-based requirements), or None for any other selector (set-based,
    existence, or not valid): those are left to the API server. The empty selector has no terms (matches all)."""
    terms: list[tuple[str, bool, str]] = []
    if not selector.strip():
        return terms
    for part in selector.split(","):
        key, op, value = re.split(r"(!=|==|=)", part, maxsplit=1) if re.search(r"!=|=", part) else (part, "", "")
        key, value = key.strip(), value.strip()
        if not op or not _LABEL_KEY.match(key) or len(key.rpartition("/")[2]) > 63 or len(key) > 253 + 1 + 63:
            return None
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            return None
        terms.append((key, op != "!=", value))
    return terms


def _labels_match(terms: list[tuple[str, bool, str]], labels: object) -> bool:
    """Whether an object's labels meet every term (``key!=value`` also holds where the key is absent)."""
    have = labels if isinstance(labels, dict) else {}
    return all((have.get(key) == value) == equal for key, equal, value in terms)


def _never_connected(exc: BaseException) -> bool:
    """Whether a failure happened before the server got the request: refused, no route, DNS, connect
    timeout, TLS. Only those say the API server is out of reach."""
    reason = getattr(exc, "reason", None)
    cause = reason if isinstance(reason, BaseException) else exc
    return isinstance(
        cause, urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.SSLError | ConnectionRefusedError
    ) or (isinstance(cause, OSError) and not isinstance(cause, TimeoutError | ConnectionResetError))


def _unsendable(value: object) -> bool:
    """Whether a header value cannot be sent: a control character (a newline from a copy-paste, say)."""
    return isinstance(value, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _no_answer(exc: BaseException) -> bool:
    """Whether the request went out and no answer came within the timeout."""
    reason = getattr(exc, "reason", None)
    cause = reason if isinstance(reason, BaseException) else exc
    return isinstance(cause, urllib3.exceptions.ReadTimeoutError)


def _object(value: object) -> Obj:
    """A JSON object of the answer, or an empty one where the answer holds something else."""
    return value if isinstance(value, dict) else {}


def _items(listed: object) -> list[Obj]:
    """The objects of a list answer."""
    items = _object(listed).get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _query_value(value: object) -> str:
    """A query parameter as the API reads it (booleans as ``true``/``false``)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _current_context(kubeconfig: str | None) -> str | None:
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError):
        return None
    return str(active["name"]) if active else None
