"""deploy/ grants exactly what the code uses: RBAC from kube.py, IAM from aws.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from pytest_eksid import aws, kube

REPO = Path(__file__).resolve().parent.parent


def _calls_on(module_path: Path, attributes: set[str]) -> set[str]:
    """Method names used as ``self.<attr>.<method>`` (called or passed on) in a module."""
    found = set()
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in attributes:
            found.add(node.attr)
    return found


def _requests_named(module_path: Path) -> set[str]:
    """The request names (METHODS keys) kube.py's code names: every string literal that is a client method's name
    (``list_…``, ``read_…``, ``create_…``, ``delete_…``), wherever it stands (a call, a tuple of listers)."""
    verbs = ("list_", "read_", "create_", "delete_")
    found = set()
    for node in ast.walk(ast.parse(module_path.read_text())):
        is_name = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier()
        if is_name and node.value.startswith(verbs):
            found.add(node.value)
    return found


def test_every_kubernetes_call_is_declared():
    source = REPO / "pytest_eksid" / "kube.py"
    called = _requests_named(source)
    assert called == set(kube.METHODS), (
        f"undeclared: {sorted(called - set(kube.METHODS))}, unused: {sorted(set(kube.METHODS) - called)}"
    )
    # And no request goes by the generated API classes, whose calls the names above would not show.
    assert not _calls_on(source, {"core", "apps", "rbac", "authentication"})


def test_each_request_path_is_the_apis_own():
    """The paths built from METHODS are the ones the API documents (spot checks of each shape)."""
    assert kube._path("create_namespaced_pod", "ns") == "/api/v1/namespaces/ns/pods"
    assert kube._path("read_namespaced_pod_log", "ns", "p") == "/api/v1/namespaces/ns/pods/p/log"
    assert kube._path("list_pod_for_all_namespaces") == "/api/v1/pods"
    assert kube._path("list_namespaced_deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert kube._path("list_cluster_role_binding") == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    assert kube._path("create_self_subject_review") == "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    assert kube._path("read_namespaced_pod", "a/b", "../x") == "/api/v1/namespaces/a%2Fb/pods/..%2Fx"


def test_rbac_grants_exactly_the_declared_verbs():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == kube.rbac_rules()


def test_runner_iam_policy_lists_exactly_the_actions_aws_py_uses():
    policy = json.loads((REPO / "deploy" / "runner-iam-policy.json").read_text())
    assert sorted(policy["Statement"][0]["Action"]) == sorted(aws.ACTIONS)
    source = (REPO / "pytest_eksid" / "aws.py").read_text()
    called = {
        n.func.attr
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and "_" in n.func.attr
    }
    # Every IAM/EKS/STS operation called in aws.py is in ACTIONS (snake_case -> PascalCase).
    pascal = {"".join(p.capitalize() for p in name.split("_")) for name in called}
    declared = {a.split(":", 1)[1] for a in aws.ACTIONS}
    operations = {p for p in pascal if p.startswith(("Get", "List", "Describe"))} - {"GetPaginator"}
    renamed = {
        "ListOpenIdConnectProviders": "ListOpenIDConnectProviders",
        "GetOpenIdConnectProvider": "GetOpenIDConnectProvider",
    }
    operations = {renamed.get(o, o) for o in operations}
    paginated = {
        "ListRolePolicies",
        "ListAttachedRolePolicies",
        "ListAccessKeys",
        "ListPodIdentityAssociations",
        "ListRoles",
        "LookupEvents",  # get_paginator("lookup_events")
        "GetAccountAuthorizationDetails",  # get_paginator("get_account_authorization_details")
    }
    assert operations | paginated <= declared | {"GetCallerIdentity"}, sorted((operations | paginated) - declared)
