"""Every Kubernetes call pytest-eksid makes, over the official ``kubernetes`` client.

Keeping them here is what lets ``deploy/`` grant the runner exactly these verbs. Nothing else in
the package imports ``kubernetes``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pytest_eksid.settings import DEFAULT_API_TIMEOUT

Obj = dict[str, Any]

# Every client method this module calls -> (API group, resource, verb). The runner's RBAC in
# deploy/rbac.yaml must grant exactly these; tests/test_deploy.py checks both directions.
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


def _wrap(exc: ApiException, what: str) -> KubeError:
    import json

    reason, message = "", str(exc.reason)
    try:
        body = json.loads(exc.body or "{}")
        reason, message = str(body.get("reason", "")), str(body.get("message", message))
    except ValueError:
        pass
    return KubeError(f"{what}: {exc.status} {reason or exc.reason}: {message}", exc.status, reason)


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
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.authentication = client.AuthenticationV1Api(self.api_client)
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

    def _call(
        self,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        retry: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """One API call with the request timeout. The API's refusal becomes a KubeError with its status; a
        request that never reached the server, KubeUnreachable.

        After a KubeUnreachable, later calls fail at once with its message, unless ``retry`` (cleanup) asks."""
        if self._unreachable is not None and not retry:
            raise KubeUnreachable(f"{what}: {self._unreachable}")
        self._count(str(getattr(method, "__name__", "other")))
        try:
            return method(*args, _request_timeout=self.timeout if timeout is None else timeout, **kwargs)
        except ApiException as exc:  # the API server answered: with its own status and reason
            raise _wrap(exc, what) from None
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

    def _count(self, name: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1

    def _cause(self, exc: BaseException) -> str:
        reason = getattr(exc, "reason", None)
        cause: BaseException = reason if isinstance(reason, BaseException) else exc
        if isinstance(cause, urllib3.exceptions.NewConnectionError):  # refused, no route, DNS
            return str(cause).rpartition("Failed to establish a new connection: ")[2] or str(cause)
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return f"no connection within {self.timeout:g}s (a private endpoint out of reach, a VPN down?)"
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {self.timeout:g}s"
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
        pod = self._call(f"create pod in namespace {namespace}", self.core.create_namespaced_pod, namespace, manifest)
        return _plain(self.api_client, pod)

    def read_pod(self, namespace: str, name: str) -> Obj:
        pod = self._call(f"read pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace)
        return _plain(self.api_client, pod)

    def pod_log(self, namespace: str, name: str, tail_lines: int | None = None) -> str:
        kwargs: dict[str, Any] = {"tail_lines": tail_lines} if tail_lines else {}
        what = f"read log of pod {namespace}/{name}"
        return str(self._call(what, self.core.read_namespaced_pod_log, name, namespace, **kwargs))

    def delete_pod(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete a pod; False when it was already gone, or (with ``uid``) when the pod of that name is
        another one: the API server checks the UID precondition (409 Conflict), so a pod someone else
        created under the same name is never deleted in its place."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)) if uid else None
        body: dict[str, Any] = {"body": options} if options is not None else {}
        try:
            self._call(
                f"delete pod {namespace}/{name}",
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=0,
                retry=True,
                **body,
            )
        except KubeError as exc:
            if exc.status == 404 or (uid and exc.status == 409):
                return False
            raise
        return True

    def delete_pods(self, namespace: str, label_selector: str, timeout: float | None = None) -> None:
        """Delete the namespace's pods matching the selector in one call (tried even after the server was
        unreachable; ``timeout`` bounds it)."""
        self._call(
            f"delete pods ({label_selector}) in namespace {namespace}",
            self.core.delete_collection_namespaced_pod,
            namespace,
            label_selector=label_selector,
            grace_period_seconds=0,
            retry=True,
            timeout=timeout,
        )

    def pod_events(self, namespace: str, name: str) -> list[Obj]:
        """The events about one pod, oldest first."""
        found = self._call(
            f"list events of pod {namespace}/{name}",
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.name={name}",
        )
        events = [_plain(self.api_client, e) for e in found.items]
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
                lambda: self._read_or_none(what, self.core.read_namespaced_service_account, name, namespace),
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
            found = self._call(
                "list serviceaccounts (all namespaces)", self.core.list_service_account_for_all_namespaces
            )
            return [_plain(self.api_client, sa) for sa in found.items]

        result: list[Obj] = self._once("serviceaccounts", read)
        return result

    def whoami(self) -> str | None:
        """The user name the API server knows the runner by (SelfSubjectReview, GA in Kubernetes 1.28; every
        authenticated user may create one through the default ``system:basic-user`` role), read once; None
        when the server does not answer it (an older server, or the call refused)."""

        def read() -> str | None:
            try:
                review = self._call(
                    "create selfsubjectreview",
                    self.authentication.create_self_subject_review,
                    client.V1SelfSubjectReview(),
                )
            except KubeError as exc:
                if isinstance(exc, KubeUnreachable):
                    raise
                return None
            info = getattr(getattr(review, "status", None), "user_info", None)
            name = getattr(info, "username", None)
            return name if isinstance(name, str) and name else None

        result: str | None = self._once("whoami", read)
        return result

    def rbac_objects(self) -> dict[str, list[Obj]]:
        """Every Role, ClusterRole, RoleBinding and ClusterRoleBinding, read once (aggregated ClusterRoles
        come with the rules the aggregation controller filled in)."""

        def read() -> dict[str, list[Obj]]:
            out: dict[str, list[Obj]] = {}
            for key, what, lister in (
                ("roles", "list roles (all namespaces)", self.rbac.list_role_for_all_namespaces),
                ("cluster_roles", "list clusterroles", self.rbac.list_cluster_role),
                ("role_bindings", "list rolebindings (all namespaces)", self.rbac.list_role_binding_for_all_namespaces),
                ("cluster_role_bindings", "list clusterrolebindings", self.rbac.list_cluster_role_binding),
            ):
                out[key] = [_plain(self.api_client, o) for o in self._call(what, lister).items]
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
            found = self._call(f"list secrets in {namespace}", self.core.list_namespaced_secret, namespace)
            return [_plain(self.api_client, s) for s in found.items]

        result: list[Obj] = self._once(f"secrets/{namespace}", read)
        return result

    def config_maps(self, namespace: str) -> list[Obj]:
        """ConfigMaps of a namespace, read once per run."""

        def read() -> list[Obj]:
            found = self._call(f"list configmaps in {namespace}", self.core.list_namespaced_config_map, namespace)
            return [_plain(self.api_client, c) for c in found.items]

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
        every: list[Obj] = self._once(f"workloads/{namespace}", lambda: self._workloads(namespace, ""))
        return [o for o in every if _labels_match(terms, (o.get("metadata") or {}).get("labels"))]

    def _workloads(self, namespace: str, label_selector: str) -> list[Obj]:
        out: list[Obj] = []
        for kind, lister in (
            ("Deployment", self.apps.list_namespaced_deployment),
            ("StatefulSet", self.apps.list_namespaced_stateful_set),
        ):
            try:
                items = self._call(
                    f"list {kind}s in {namespace}", lister, namespace, label_selector=label_selector
                ).items
            except KubeError as exc:
                if exc.status == 404:  # the API server does not serve this kind
                    continue
                raise
            for item in items:
                obj = _plain(self.api_client, item)
                obj.setdefault("kind", kind)
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
            lambda: self._read_or_none(what, self.apps.read_namespaced_daemon_set, name, namespace),
        )
        return result

    def nodes(self) -> list[Obj]:
        """Every node, read once per run."""

        def read() -> list[Obj]:
            return [_plain(self.api_client, n) for n in self._call("list nodes", self.core.list_node).items]

        result: list[Obj] = self._once("nodes", read)
        return result

    def list_pods(self, label_selector: str, namespace: str | None = None, field_selector: str = "") -> list[Obj]:
        what = f"list pods ({label_selector})"
        if namespace is None:
            pods = self._call(
                what,
                self.core.list_pod_for_all_namespaces,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        else:
            pods = self._call(
                what,
                self.core.list_namespaced_pod,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
            )
        return [_plain(self.api_client, p) for p in pods.items]

    def pods_once(self, label_selector: str, namespace: str) -> list[Obj]:
        """The namespace's pods matching the selector, listed once per run (a platform component's pods, as the
        agent DaemonSets' that each Pod Identity workload's coverage check reads; not a probe's, which change)."""
        listed: list[Obj] = self._once(
            f"pods/{namespace}/{label_selector}", lambda: self.list_pods(label_selector, namespace)
        )
        return listed

    def list_pods_at(self, label_selector: str, namespace: str | None = None) -> tuple[list[Obj], str]:
        """The pods matching the selector and the list's resourceVersion, to watch from."""
        what = f"list pods ({label_selector})"
        if namespace is None:
            pods = self._call(what, self.core.list_pod_for_all_namespaces, label_selector=label_selector)
        else:
            pods = self._call(what, self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        version = str(getattr(pods.metadata, "resource_version", None) or "")
        return [_plain(self.api_client, p) for p in pods.items], version

    def watcher(self) -> Any:
        """A watch handle for :meth:`watch_pods` (its ``stop()`` ends the stream at once, from any thread)."""
        return watch.Watch(return_type=object)  # type: ignore[no-untyped-call]

    def watch_pods(
        self,
        label_selector: str,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        watcher: Any,
    ) -> Iterator[tuple[str, Obj]]:
        """(event type, pod as the API's JSON) from one watch request from ``resource_version``, until the server
        ends it (``timeout_seconds``) or ``watcher`` (from :meth:`watcher`) is stopped. The API's refusal (403
        where ``watch`` is not granted, 410 Gone where the version is too old) is a KubeError with its status; a
        stream that broke off is a KubeError without one. Never marks the server unreachable: the caller resumes
        or polls."""
        what = f"watch pods ({label_selector})"
        if self._unreachable is not None:
            raise KubeUnreachable(f"{what}: {self._unreachable}")
        method = self.core.list_pod_for_all_namespaces if namespace is None else self.core.list_namespaced_pod
        args = () if namespace is None else (namespace,)
        self._count(f"watch {method.__name__}")
        stream = watcher.stream(
            method,
            *args,
            label_selector=label_selector,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            # The server ends the watch at timeout_seconds; the socket may stay silent that long.
            _request_timeout=(self.timeout, timeout_seconds + self.timeout),
        )
        try:
            for event in stream:
                obj = event.get("raw_object")
                if isinstance(obj, dict):
                    yield str(event.get("type")), obj
        except ApiException as exc:
            raise _wrap(exc, what) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise KubeError(f"{what}: the watch broke off: {self._cause(exc)}") from None

    def _read_or_none(self, what: str, method: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            return _plain(self.api_client, self._call(what, method, *args))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise


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


def _plain(api_client: Any, model: Any) -> Obj:
    """The client's model object as the API's own JSON shape (camelCase keys)."""
    data = api_client.sanitize_for_serialization(model)
    return data if isinstance(data, dict) else {}


def _current_context(kubeconfig: str | None) -> str | None:
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError):
        return None
    return str(active["name"]) if active else None
