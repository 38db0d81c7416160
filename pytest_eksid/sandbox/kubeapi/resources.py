"""The resource table: the kinds the sandbox apiserver serves, their URL names and verbs.

Everything else in the package looks a kind up here, by any name kubectl would use for it
(``pods``, ``po``, ``v1/pods``, ``daemonsets.apps``, ``apps/v1/daemonsets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_eksid.sandbox.kubeapi.errors import ApiError

Obj = dict[str, Any]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "token": ["create"],  # serviceaccounts/token: TokenRequest
}
RBAC_GROUP = "rbac.authorization.k8s.io"
_CREATE_ONLY = ("create",)
META_FIELDS = ("metadata.name", "metadata.namespace")  # field selectors every kind supports


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
    verbs: tuple[str, ...] = tuple(VERBS)  # as discovery lists them

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
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), (), ("token",), (), False, True),
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
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("all",), _STATUS, generation=True),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
        generation=True,
    ),
    # RBAC (k8s.io/api rbac/v1) and the review APIs, which are create-only and never stored
    # (pkg/registry/authorization/*, pkg/registry/authentication/selfsubjectreview).
    ResourceType(RBAC_GROUP, "v1", "roles", "Role", True),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", True),
    ResourceType(RBAC_GROUP, "v1", "clusterroles", "ClusterRole", False),
    ResourceType(RBAC_GROUP, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType(
        "authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True, verbs=_CREATE_ONLY
    ),
    ResourceType(
        "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, verbs=_CREATE_ONLY
    ),
    ResourceType(
        "authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False, verbs=_CREATE_ONLY
    ),
    ResourceType(
        "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, verbs=_CREATE_ONLY
    ),
    ResourceType("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, verbs=_CREATE_ONLY),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_ALIASES: dict[str, ResourceType] = {}
for _r in reversed(RESOURCES):
    for _alias in (_r.singular, *_r.short_names, _r.plural, _r.qualified, _r.key):
        _ALIASES[_alias] = _r
NAMESPACES = _ALIASES["namespaces"]
PODS = _ALIASES["pods"]
SERVICEACCOUNTS = _ALIASES["serviceaccounts"]
EVENTS = _ALIASES["events"]
ROLES = _ALIASES["roles.rbac.authorization.k8s.io"]
ROLEBINDINGS = _ALIASES["rolebindings.rbac.authorization.k8s.io"]
CLUSTERROLES = _ALIASES["clusterroles.rbac.authorization.k8s.io"]
CLUSTERROLEBINDINGS = _ALIASES["clusterrolebindings.rbac.authorization.k8s.io"]
REVIEWS = tuple(r for r in RESOURCES if r.verbs == _CREATE_ONLY)


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
