"""EKS's access-policy authorizer: an access entry's associated policies, within their scopes, allow requests.

EKS consults it after RBAC (an authorizer webhook). Access policies hold allow rules only, like ClusterRoles
[awsdocs/amazon-eks-user-guide@4d52b4d0 latest/ug/manage-access/k8s-access/access-policy-reference.adoc:1-14];
their rules below are the reference's tables for AmazonEKSClusterAdminPolicy (122-146), AmazonEKSAdminPolicy
(17-118), AmazonEKSAdminViewPolicy (150-166), AmazonEKSEditPolicy (170-263) and AmazonEKSViewPolicy (267-318).
A ``namespace`` scope allows only requests in one of its namespaces; a ``cluster`` scope allows them anywhere,
cluster-scoped resources and non-resource URLs included. Callers are matched to their access entry by the
canonical ARN the EKS token authenticator put in ``extra`` (sandbox/eks_authn.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_eksid.sandbox.eks import ACCESS_POLICY_PREFIX, EksControlPlane
from pytest_eksid.sandbox.eks_authn import canonical_arn_of
from pytest_eksid.sandbox.kubeapi.request import RequestInfo
from pytest_eksid.sandbox.kubeapi.server import Caller, Decision

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")


@dataclass(frozen=True)
class Rule:
    groups: tuple[str, ...]
    resources: tuple[str, ...]  # "plural" or "plural/subresource"; "*" for all
    verbs: tuple[str, ...]
    non_resource_urls: tuple[str, ...] = ()


def _rule(group: str, resources: str, verbs: tuple[str, ...]) -> Rule:
    return Rule((group,), tuple(resources.split()), verbs)


_APPS_READ = (
    "controllerrevisions daemonsets daemonsets/status deployments deployments/scale deployments/status replicasets "
    "replicasets/scale replicasets/status statefulsets statefulsets/scale statefulsets/status"
)
_EXT_READ = (
    "daemonsets daemonsets/status deployments deployments/scale deployments/status ingresses ingresses/status "
    "networkpolicies replicasets replicasets/scale replicasets/status replicationcontrollers/scale"
)
_CORE_READ = (
    "configmaps endpoints persistentvolumeclaims persistentvolumeclaims/status pods replicationcontrollers "
    "replicationcontrollers/scale serviceaccounts services services/status"
)
_CORE_STATUS_READ = (
    "bindings events limitranges namespaces/status pods/log pods/status replicationcontrollers/status "
    "resourcequotas resourcequotas/status"
)
VIEW_RULES = (
    _rule("apps", _APPS_READ, READ),
    _rule("autoscaling", "horizontalpodautoscalers horizontalpodautoscalers/status", READ),
    _rule("batch", "cronjobs cronjobs/status jobs jobs/status", READ),
    _rule("discovery.k8s.io", "endpointslices", READ),
    _rule("extensions", _EXT_READ, READ),
    _rule("networking.k8s.io", "ingresses ingresses/status networkpolicies", READ),
    _rule("policy", "poddisruptionbudgets poddisruptionbudgets/status", READ),
    _rule("", _CORE_READ, READ),
    _rule("", _CORE_STATUS_READ, READ),
    _rule("", "namespaces", READ),
)
EDIT_RULES = (
    *VIEW_RULES,
    _rule(
        "apps",
        "daemonsets deployments deployments/rollback deployments/scale replicasets replicasets/scale statefulsets "
        "statefulsets/scale",
        WRITE,
    ),
    _rule("autoscaling", "horizontalpodautoscalers", WRITE),
    _rule("batch", "cronjobs jobs", WRITE),
    _rule(
        "extensions",
        "daemonsets deployments deployments/rollback deployments/scale ingresses networkpolicies replicasets "
        "replicasets/scale replicationcontrollers/scale",
        WRITE,
    ),
    _rule("networking.k8s.io", "ingresses networkpolicies", WRITE),
    _rule("policy", "poddisruptionbudgets", WRITE),
    _rule("", "pods/attach pods/exec pods/portforward pods/proxy secrets services/proxy", READ),
    _rule("", "serviceaccounts", ("impersonate",)),
    _rule("", "pods pods/attach pods/exec pods/portforward pods/proxy", WRITE),
    _rule(
        "",
        "configmaps events persistentvolumeclaims replicationcontrollers replicationcontrollers/scale secrets "
        "serviceaccounts services services/proxy",
        WRITE,
    ),
)
ADMIN_RULES = (
    *EDIT_RULES,
    _rule("authorization.k8s.io", "localsubjectaccessreviews", ("create",)),
    _rule("rbac.authorization.k8s.io", "rolebindings roles", (*READ, *WRITE)),
)
POLICY_RULES: dict[str, tuple[Rule, ...]] = {
    "AmazonEKSClusterAdminPolicy": (Rule(("*",), ("*",), ("*",)), Rule((), (), ("*",), ("*",))),
    "AmazonEKSAdminPolicy": ADMIN_RULES,
    "AmazonEKSAdminViewPolicy": (Rule(("*",), ("*",), READ),),
    "AmazonEKSEditPolicy": EDIT_RULES,
    "AmazonEKSViewPolicy": VIEW_RULES,
}


def rule_allows(rule: Rule, info: RequestInfo) -> bool:
    """Does ``rule`` allow ``info``, as an RBAC PolicyRule would (``*`` for any group, resource or verb)?"""
    if "*" not in rule.verbs and info.verb not in rule.verbs:
        return False
    rt = info.resource
    if rt is None:
        return any(
            u == "*" or u == info.path or (u.endswith("*") and info.path.startswith(u[:-1]))
            for u in rule.non_resource_urls
        )
    if "*" not in rule.groups and rt.group not in rule.groups:
        return False
    wanted = f"{rt.plural}/{info.subresource}" if info.subresource else rt.plural
    return "*" in rule.resources or wanted in rule.resources


def request_namespace(info: RequestInfo) -> str | None:
    """The namespace a request acts in; a namespace object is in itself (RequestInfoFactory does the same)."""
    if info.resource is not None and info.resource.plural == "namespaces" and info.resource.group == "":
        return info.name
    return info.namespace


class AccessPolicyAuthorizer:
    """``KubeApiServer.authorizers`` entry: ALLOW when one of the caller's access entry's policies allows the
    request within its scope, else NO_OPINION (the request is then forbidden unless another authorizer allows)."""

    def __init__(self, cluster: EksControlPlane) -> None:
        self.cluster = cluster

    def __call__(self, caller: Caller, info: RequestInfo) -> Decision:
        arn = canonical_arn_of(caller)
        entry = self.cluster.entry_for(arn) if arn else None
        if entry is None:
            return Decision.NO_OPINION
        namespace = request_namespace(info)
        for policy in list(entry.policies.values()):
            rules = POLICY_RULES.get(policy.policy_arn.removeprefix(ACCESS_POLICY_PREFIX), ())
            if policy.scope_type == "namespace" and namespace not in policy.namespaces:
                continue
            if any(rule_allows(rule, info) for rule in rules):
                return Decision.ALLOW
        return Decision.NO_OPINION
