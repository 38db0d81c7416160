"""The HTTP server: every request's path through authentication, authorization and routing.

``KubeApiServer.handle`` is the one entry point, in kube-apiserver's filter order: the public
issuer-discovery endpoints, then ``authenticate`` (who is calling: today the bearer token of the
kubeconfig), then ``request_info`` (what the request does), then ``authorize`` (may they do it:
the place for RBAC), then ``route`` to the handlers for discovery, objects, watch, logs and exec.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pytest_eksid.sandbox.kubeapi.discovery import (
    discovery_aggregated,
    discovery_groups,
    discovery_resources,
    legacy_group,
    negotiate,
    openapi_v3_document,
    openapi_v3_index,
)
from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request, method_not_allowed, path_not_found
from pytest_eksid.sandbox.kubeapi.patches import PATCH_TYPES, apply_patch
from pytest_eksid.sandbox.kubeapi.rbac import SA_PREFIX, Attributes, Rbac
from pytest_eksid.sandbox.kubeapi.rbac import install as rbac_install
from pytest_eksid.sandbox.kubeapi.rbac import json_request as rbac_json_request
from pytest_eksid.sandbox.kubeapi.request import Request, RequestInfo, Response, resource_verb
from pytest_eksid.sandbox.kubeapi.resources import (
    BY_PATH,
    PODS,
    RBAC_GROUP,
    REVIEWS,
    SERVICEACCOUNTS,
    Obj,
    ResourceType,
    api_groups,
)
from pytest_eksid.sandbox.kubeapi.reviews import (
    access_review_status,
    review_attributes,
    review_body,
    rules_review_status,
    user_info,
)
from pytest_eksid.sandbox.kubeapi.serviceaccounts import (
    ROOT_CA_CONFIGMAP,
    KubernetesService,
    create_token,
    root_ca_configmap,
)
from pytest_eksid.sandbox.kubeapi.store import Store
from pytest_eksid.sandbox.kubeapi.streaming import serve_exec
from pytest_eksid.sandbox.kubeapi.tables import to_table
from pytest_eksid.sandbox.kubeapi.tls import HttpAndTlsServer, ServingCertificate
from pytest_eksid.sandbox.latency import KUBERNETES, Latency

OIDC_PATHS = ("/.well-known/openid-configuration", "/openid/v1/jwks")


class _ImpersonationTarget:
    """What ``impersonate`` is checked on (core users and groups, authentication.k8s.io uids)."""

    USERS = ResourceType("", "v1", "users", "", False)
    GROUPS = ResourceType("", "v1", "groups", "", False)
    UIDS = ResourceType("authentication.k8s.io", "v1", "uids", "", False)


@dataclass(frozen=True)
class Caller:
    """Who is calling, as an authenticator names them (k8s.io/apiserver's ``user.Info``)."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


# The holder of the kubeconfig's token: the cluster creator, whom EKS maps to system:masters.
ADMIN = Caller("eksid-sandbox-admin", ("system:masters", "system:authenticated"))

# kube-apiserver's privileged group: its authorizer chain starts with one that allows this group
# everything, before Node/RBAC/webhook (k8s.io/apiserver authorizerfactory.NewPrivilegedGroups).
PRIVILEGED_GROUP = "system:masters"


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the API server decided it, for tests that ask what a caller used (the audit
    log's who/verb/resource, without bodies): ``allowed`` False when authorization refused it."""

    user: str
    verb: str
    group: str  # "" for core and for non-resource requests
    resource: str  # "pods", "pods/exec"; the path for a non-resource request
    namespace: str
    allowed: bool


class Decision(enum.Enum):
    """An authorizer's answer (k8s.io/apiserver's ``authorizer.Decision``)."""

    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


# A bearer token -> the caller it proves, or None when this authenticator does not know it
# (kube-apiserver's union of token authenticators: the first that knows the token answers).
Authenticator = Callable[[str], "Caller | None"]
# (caller, request) -> a decision; the chain stops at the first ALLOW or DENY (the union authorizer).
Authorizer = Callable[["Caller", RequestInfo], Decision]


def forbidden_message(caller: Caller, info: RequestInfo, reason: str = "") -> str:
    """A 403's message as kube-apiserver writes it: responsewriters.forbiddenMessage (plus
    ``: <reason>``, HTML metacharacters escaped) inside apierrors.NewForbidden's
    ``<resource>[.<group>] ["<name>"] is forbidden: `` or ``forbidden: ``
    [kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go,
    staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go NewForbidden]."""
    rt = info.resource
    if rt is None:
        message = f"User {_go_quote(caller.name)} cannot {info.verb} path {_go_quote(info.path)}"
    else:
        resource = f"{rt.plural}/{info.subresource}" if info.subresource else rt.plural
        scope = f"in the namespace {_go_quote(info.namespace)}" if info.namespace else "at the cluster scope"
        message = (
            f"User {_go_quote(caller.name)} cannot {info.verb} resource {_go_quote(resource)} "
            f"in API group {_go_quote(rt.group)} {scope}"
        )
    message = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if reason:
        message = f"{message}: {reason}"
    if rt is None:
        return f"forbidden: {message}"
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    if info.name:
        return f"{qualified} {_go_quote(info.name)} is forbidden: {message}"
    return f"{qualified} is forbidden: {message}"


def forbidden_error(caller: Caller, info: RequestInfo, reason: str = "") -> ApiError:
    """The 403 ``Status``: reason Forbidden, details name/group/kind (kind is the resource)."""
    rt = info.resource
    return ApiError(
        403,
        "Forbidden",
        forbidden_message(caller, info, reason),
        kind=rt.plural if rt else "",
        group=rt.group if rt else "",
        name=info.name or "",
        always_details=True,
    )


def _go_quote(s: str) -> str:
    """Go's %q for the printable strings Kubernetes names are."""
    return json.dumps(s, ensure_ascii=False)


def request_info(req: Request) -> RequestInfo:
    """What ``req`` does. A path that names no served resource is a non-resource request (and
    ``route`` answers 404 for it), as kube-apiserver's RequestInfoFactory does."""
    non_resource = RequestInfo(req.method.lower(), req.path)
    if req.path.startswith("/api/v1/"):
        group, version, rest = "", "v1", req.path[len("/api/v1/") :]
    elif req.path.startswith("/apis/"):
        group, _, tail = req.path[len("/apis/") :].partition("/")
        version, _, rest = tail.partition("/")
    else:
        return non_resource
    if not rest:
        return non_resource
    segs = rest.split("/")
    ns: str | None = None
    if segs[0] == "namespaces" and len(segs) >= 3 and (group or segs[2] != "status"):
        ns, segs = segs[1], segs[2:]
    rt = BY_PATH.get((group, version, segs[0]))
    if rt is None or len(segs) > 3 or (ns is not None and not rt.namespaced):
        return non_resource
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else None
    if (sub is not None and sub not in rt.subresources) or (rt.namespaced and name is not None and ns is None):
        return non_resource
    # An exec's WebSocket upgrade is a GET, authorized as "create" (AuthorizePodWebsocketUpgradeCreatePermission).
    verb = "create" if sub == "exec" else resource_verb(req.method, name, req.flag("watch"))
    return RequestInfo(verb, req.path, rt, ns, name, sub)


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
        # Static tokens (kube-apiserver's --token-auth-file): the kubeconfig's token is the admin's.
        self.static_tokens: dict[str, Caller] = {self.token: ADMIN}
        # Token authenticators after the static tokens, in order; the sandbox appends its own.
        self.authenticators: list[Authenticator] = []
        # Authorizers after the privileged group, in order (EKS: Node, RBAC, then its webhook).
        self.rbac = Rbac(store)
        self.authorizers: list[Authorizer] = [self._rbac_decision]
        rbac_install(store)  # the default ClusterRoles and bindings, and ClusterRole aggregation
        self.read_log = log_reader
        # Every authenticated request's caller, verb and resource, in arrival order (tests read it).
        self.requests: list[LoggedRequest] = []
        # Service-account issuer discovery (set by the sandbox): the OIDC document and the JWKS.
        self.oidc_discovery: Callable[[], tuple[Obj, Obj]] | None = None
        # The benchmark setting's per-request delay (sandbox/latency.py; set by the sandbox, None: none).
        self.latency: Latency | None = None
        self.certificate = ServingCertificate(
            [host, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        )
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = HttpAndTlsServer((host, 0), handler)
        self._server.tls = self.certificate.server_context() if tls else None
        # Polled every 0.1 s as the sandbox's other servers are: stop() waits for the loop to notice (socketserver's
        # default 0.5 s was most of a sandbox's stop, and tests start and stop a hundred and more).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="eksid-kubeapi", daemon=True
        )
        self._publish_kubernetes_service(host)

    def _publish_kubernetes_service(self, host: str) -> None:
        """What in-cluster clients find: the ``kubernetes`` Service's address (this server, over HTTPS)
        and, in every namespace, the ``kube-root-ca.crt`` ConfigMap with its CA."""
        port = int(self._server.server_address[1])
        self.store.kubernetes_service = KubernetesService(host, port, self.certificate.ca_pem)
        for ns in self.store.list("namespaces"):
            if self.store.find("configmaps", ns["metadata"]["name"], ROOT_CA_CONFIGMAP) is None:
                self.store.create("configmaps", ns["metadata"]["name"], root_ca_configmap(self.certificate.ca_pem))

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

    def kubeconfig(self, name: str, user: str, exec_plugin: Obj | None = None) -> Obj:
        """A kubeconfig for this server: HTTPS, its CA, and the user's credential: a
        ``client.authentication.k8s.io`` exec plugin when given (as ``aws eks update-kubeconfig`` writes
        one), else the static admin token."""
        credential: Obj = {"exec": exec_plugin} if exec_plugin is not None else {"token": self.token}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": self.https_url, "certificate-authority-data": self.ca_data}}
            ],
            "users": [{"name": user, "user": credential}],
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

    # -- the request path --

    def handle(self, req: Request, handler: _Handler) -> Response | None:
        """Answer ``req``; None when the handler already streamed the answer. The injected latency is paid
        once here, before anything else: a watch, a log follow or an exec pays it on being established."""
        if self.latency is not None:
            self.latency.apply(KUBERNETES)
        discovery = self.oidc_discovery
        if req.method == "GET" and discovery is not None and req.path in OIDC_PATHS:
            # Public, like EKS's issuer and kube-apiserver's service-account-issuer-discovery.
            document, jwks = discovery()
            return Response(200, document if req.path == OIDC_PATHS[0] else jwks)
        caller = self.impersonate(self.authenticate(req), req)
        info = request_info(req)
        try:
            self.authorize(caller, info)
        except ApiError:
            self._record(caller, info, allowed=False)
            raise
        self._record(caller, info, allowed=True)
        if info.resource in REVIEWS:
            return self._review(req, caller, info)
        if info.resource is not None and info.resource.group == RBAC_GROUP:
            req = rbac_json_request(req)  # kubectl create role|rolebinding|... post protobuf
        if (
            info.resource is not None
            and info.resource.group == RBAC_GROUP
            and info.verb in ("create", "update", "patch")
        ):
            self._confirm_no_escalation(req, caller, info, info.resource)
        return self.route(req, info, handler)

    def _record(self, caller: Caller, info: RequestInfo, *, allowed: bool) -> None:
        rt = info.resource
        resource = info.path if rt is None else f"{rt.plural}/{info.subresource}" if info.subresource else rt.plural
        self.requests.append(
            LoggedRequest(caller.name, info.verb, rt.group if rt else "", resource, info.namespace or "", allowed)
        )

    def authenticate(self, req: Request) -> Caller:
        """Who sent ``req``; 401 when nobody we know. The one place for authentication:
        the static tokens, then each of ``authenticators`` in order."""
        scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            caller = self.static_tokens.get(token)
            for authenticator in self.authenticators:
                if caller is not None:
                    break
                caller = authenticator(token)
            if caller is not None:
                return caller
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def authorize(self, caller: Caller, info: RequestInfo) -> None:
        """May ``caller`` do ``info``? The one place for authorization: refuse with a 403 ``ApiError``.

        The privileged group first, then ``authorizers`` in order; the first ALLOW or DENY decides,
        and when none has an opinion the request is forbidden.
        """
        if not self.allowed(caller, info):
            raise forbidden_error(caller, info, self.rbac.allows(caller, Attributes.of(info))[1])

    def allowed(self, caller: Caller, info: RequestInfo) -> bool:
        """The authorizer chain's verdict, for requests and for the access reviews."""
        if PRIVILEGED_GROUP in caller.groups:
            return True
        for authorizer in self.authorizers:
            decision = authorizer(caller, info)
            if decision is Decision.ALLOW:
                return True
            if decision is Decision.DENY:
                return False
        return False

    def _rbac_decision(self, caller: Caller, info: RequestInfo) -> Decision:
        return Decision.ALLOW if self.rbac.allows(caller, Attributes.of(info))[0] else Decision.NO_OPINION

    def impersonate(self, caller: Caller, req: Request) -> Caller:
        """Act as ``Impersonate-User``/``Impersonate-Group``/``Impersonate-Uid`` once each is
        authorized (verb ``impersonate`` on users, groups, serviceaccounts, uids), as
        kube-apiserver's WithImpersonation filter does
        [kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation.go]."""
        user = (req.headers.get("Impersonate-User") or "").strip()
        groups = [g.strip() for g in req.headers.get_all("Impersonate-Group") or []]
        uid = (req.headers.get("Impersonate-Uid") or "").strip()
        if not user:
            if groups or uid:
                raise bad_request(f"requested {groups or [uid]} without impersonating a user")
            return caller
        checks: list[RequestInfo] = []
        if user.startswith(SA_PREFIX) and user.count(":") == 3:
            ns, name = user[len(SA_PREFIX) :].split(":")
            checks.append(RequestInfo("impersonate", "", SERVICEACCOUNTS, ns, name))
            if not groups:
                groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
        else:
            checks.append(RequestInfo("impersonate", "", _ImpersonationTarget.USERS, None, user))
        checks += [RequestInfo("impersonate", "", _ImpersonationTarget.GROUPS, None, g) for g in groups]
        if uid:
            checks.append(RequestInfo("impersonate", "", _ImpersonationTarget.UIDS, None, uid))
        for check in checks:
            if not self.allowed(caller, check):
                raise forbidden_error(caller, check)
        if user != "system:anonymous" and not {"system:authenticated", "system:unauthenticated"} & set(groups):
            groups.append("system:authenticated")
        return Caller(user, tuple(groups), uid)

    def _confirm_no_escalation(self, req: Request, caller: Caller, info: RequestInfo, rt: ResourceType) -> None:
        """A write of a role or binding may grant only what the caller holds (or may escalate/bind)."""
        if PRIVILEGED_GROUP in caller.groups:
            return
        ns = info.namespace or ""
        if info.verb in ("create", "update"):
            obj = req.json()
        else:
            patch_type = PATCH_TYPES.get(req.content_type)
            if patch_type is None or info.name is None:
                return  # route answers 415
            obj = self.store.patch(rt, ns, info.name, req.json(), patch_type, dry_run=True)
        if isinstance(obj, dict):
            self.rbac.confirm_no_escalation(caller, rt, ns, obj, lambda check: self.allowed(caller, check))

    def _review(self, req: Request, caller: Caller, info: RequestInfo) -> Response:
        """The create-only review APIs: access reviews, rules review, SelfSubjectReview."""
        rt = info.resource
        assert rt is not None
        if req.method != "POST" or info.name is not None:
            raise method_not_allowed()
        review = review_body(req, rt)
        spec = review["spec"]
        if rt.kind == "SelfSubjectReview":
            review.pop("spec")
            review["status"] = {
                "userInfo": user_info(caller.name, caller.groups, caller.uid, {k: list(v) for k, v in caller.extra})
            }
        elif rt.kind == "SelfSubjectRulesReview":
            review["status"] = rules_review_status(self.rbac.resolve(caller, str(spec.get("namespace") or "")))
        else:
            subject = caller
            if rt.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
                if not spec.get("user") and not spec.get("groups"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f'{rt.kind}.authorization.k8s.io "" is invalid: spec.user: Invalid value: '
                        '"": at least one of user or group must be specified',
                    )
                subject = Caller(str(spec.get("user") or ""), tuple(str(g) for g in spec.get("groups") or []))
            namespace = info.namespace if rt.kind == "LocalSubjectAccessReview" else None
            attrs, target = review_attributes(spec, namespace)
            allowed = self.allowed(subject, target)
            rbac_allowed, reason = self.rbac.allows(subject, attrs)
            if rbac_allowed != allowed or PRIVILEGED_GROUP in subject.groups:
                reason = ""  # decided by another authorizer, whose reasons are its own
            review["status"] = access_review_status(allowed, reason)
        return Response(201, review)

    def route(self, req: Request, info: RequestInfo, handler: _Handler) -> Response | None:
        if info.resource is not None:
            return self._resource(req, info, info.resource, handler)
        path = req.path
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, "ok", "text/plain")
        if req.method == "GET" and path == "/version":
            return Response(
                200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-eks-sandbox", "platform": "linux/amd64"}
            )
        if req.method == "GET" and path in ("/api", "/apis"):
            form, ctype = negotiate(req.headers.get("Accept") or "", discovery=True)
            if form == "aggregated":
                return Response(200, discovery_aggregated(path == "/api"), ctype)
            if path == "/api":
                return Response(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                    },
                )
            return Response(200, discovery_groups())
        if req.method == "GET" and path == "/openapi/v3":
            return Response(200, openapi_v3_index())
        if req.method == "GET" and path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/") :].split("/")
            if gv[0] == "api" and gv[1:] == ["v1"]:
                return Response(200, openapi_v3_document("", "v1"))
            if gv[0] == "apis" and len(gv) == 3 and gv[2] in api_groups().get(gv[1], {}):
                return Response(200, openapi_v3_document(gv[1], gv[2]))
            raise path_not_found()
        if path == "/api/v1" or path.startswith("/api/v1/"):
            group, version, rest = "", "v1", path[len("/api/v1/") :]
        elif path.startswith("/apis/"):
            group, _, tail = path[len("/apis/") :].partition("/")
            version, _, rest = tail.partition("/")
            versions = api_groups().get(group) if group else None
            if not versions or (version and version not in versions):
                raise path_not_found()
            if req.method == "GET" and not version:
                return Response(200, {"kind": "APIGroup", "apiVersion": "v1", **legacy_group(group, versions)})
        else:
            raise path_not_found()
        if rest:  # under a group version, but no resource this server serves
            raise path_not_found()
        if req.method != "GET":
            raise method_not_allowed()
        return Response(200, discovery_resources(group, version))

    # -- objects --

    def _resource(self, req: Request, info: RequestInfo, rt: ResourceType, handler: _Handler) -> Response | None:
        ns, name, sub, method = info.namespace, info.name, info.subresource, req.method
        ns_key = ns or ""
        if name is None:
            if method == "GET":
                return self._list(req, handler, rt, ns)
            if method == "POST":
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                body = req.json()
                if not isinstance(body, dict):
                    raise bad_request("the body of the request must be an object")
                return Response(201, self.store.create(rt, ns_key, body, dry_run=req.dry_run))
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
                return Response(200, self._list_body(rt, items))
            raise method_not_allowed()
        if sub == "exec":
            if method not in ("GET", "POST"):
                raise method_not_allowed()
            self.store.get(PODS, ns_key, name)
            try:
                serve_exec(
                    self.store.exec_handler,
                    ns_key,
                    name,
                    req.query,
                    req.headers,
                    handler.path,
                    handler.rfile,
                    handler.wfile,
                )
            finally:
                handler.close_connection = True
            return None
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return self._log(req, handler, ns_key, name)
        if sub == "token":  # TokenRequest (kubeapi/serviceaccounts.py)
            if method != "POST" or self.store.token_minter is None:
                raise method_not_allowed()
            minted = create_token(
                self.store.get, self.store.token_minter, ns_key, name, req.json(), policy=self.store.token_policy
            )
            return Response(201, minted)
        if method == "GET":
            obj = self.store.get(rt, ns_key, name)
            return self._render(req, rt, [obj], single=True)
        if method == "PUT":
            body = req.json()
            return Response(200, self.store.replace(rt, ns_key, name, body, subresource=sub, dry_run=req.dry_run))
        if method == "PATCH":
            patch_type = PATCH_TYPES.get(req.content_type)
            if patch_type is None:
                apply_patch({}, None, req.content_type)  # raises 415
                raise AssertionError("unreachable")
            return Response(
                200, self.store.patch(rt, ns_key, name, req.json(), patch_type, subresource=sub, dry_run=req.dry_run)
            )
        if method == "DELETE" and sub is None:
            return self._delete(req, rt, ns_key, name)
        raise method_not_allowed()

    def _delete(self, req: Request, rt: ResourceType, ns: str, name: str) -> Response:
        options = self._delete_options(req)
        obj = self.store.delete(
            rt,
            ns,
            name,
            dry_run=req.dry_run or options.get("dryRun") == ["All"],
            propagation=str(options.get("propagationPolicy") or req.q("propagationPolicy") or "Background"),
            preconditions=options.get("preconditions"),
        )
        if rt.delete_returns_object:
            return Response(200, obj)
        details = {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural}
        return Response(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {**details, "uid": obj["metadata"]["uid"]},
            },
        )

    def _delete_options(self, req: Request) -> Obj:
        body = req.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise bad_request("DeleteOptions must be an object")
        if isinstance(body.get("dryRun"), list) and any(v != "All" for v in body["dryRun"]):
            raise bad_request("unsupported dry run value (supported: All)")
        return body

    def _list_body(self, rt: ResourceType, items: list[Obj], rv: str | None = None) -> Obj:
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": self.store.resource_version if rv is None else rv},
            "items": items,
        }

    def _render(
        self, req: Request, rt: ResourceType, objs: list[Obj], *, single: bool, rv: str | None = None
    ) -> Response:
        """``rv``: the version a list is as of (Store.list_at), read with its items."""
        form, ctype = negotiate(req.headers.get("Accept") or "")
        rv = self.store.resource_version if rv is None else rv
        if form.startswith("table/"):
            table = to_table(
                rt,
                objs,
                resource_version=rv,
                include_object=req.q("includeObject", "Metadata"),
                version=form.split("/")[1],
            )
            return Response(200, table, ctype)
        if form.startswith("partial/"):
            version = form.split("/")[1]
            partial = [
                {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": o["metadata"]}
                for o in objs
            ]
            if single:
                return Response(200, partial[0], ctype)
            return Response(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": f"meta.k8s.io/{version}",
                    "metadata": {"resourceVersion": rv},
                    "items": partial,
                },
                ctype,
            )
        return Response(200, objs[0] if single else self._list_body(rt, objs, rv))

    def _list(self, req: Request, handler: _Handler, rt: ResourceType, ns: str | None) -> Response | None:
        if req.flag("watch"):
            self._watch(req, handler, rt, ns)
            return None
        items, rv = self.store.list_at(rt, ns, req.q("labelSelector"), req.q("fieldSelector"))
        return self._render(req, rt, items, single=False, rv=rv)

    # -- streaming: watch and log follow (exec: ``streaming``) --

    def _watch(self, req: Request, handler: _Handler, rt: ResourceType, ns: str | None) -> None:
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

    def _log(self, req: Request, handler: _Handler, ns: str, name: str) -> Response | None:
        pod = self.store.get(PODS, ns, name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = req.q("container")
        if container and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if req.flag("previous"):
            raise bad_request(f'previous terminated container "{container or containers[0]}" in pod "{name}" not found')
        text = self.read_log(ns, name, pod)
        if not req.flag("follow"):
            return Response(200, _tail(text, req), "text/plain")
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


def _tail(text: str, req: Request) -> str:
    lines = req.q("tailLines")
    if lines.isdigit():
        kept = text.splitlines(keepends=True)
        text = "".join(kept[-int(lines) :]) if int(lines) else ""
    limit = req.q("limitBytes")
    if limit.isdigit():
        text = text.encode()[: int(limit)].decode(errors="ignore")
    return text


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

    def _send(self, response: Response) -> None:
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
        req = Request(
            method=method,
            path=parts.path.rstrip("/") or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=raw,
        )
        try:
            response = self.api.handle(req, self)
            if response is not None:
                self._send(response)
        except ApiError as exc:
            self._send(Response(exc.code, exc.status()))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # the server must answer, as kube-apiserver does
            self._send(Response(500, ApiError(500, "InternalError", f"sandbox apiserver: {exc!r}").status()))
