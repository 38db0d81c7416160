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


def test_every_kubernetes_call_is_declared():
    called = _calls_on(REPO / "pytest_eksid" / "kube.py", {"core", "apps", "rbac", "authentication"})
    assert called == set(kube.METHODS), (
        f"undeclared: {sorted(called - set(kube.METHODS))}, unused: {sorted(set(kube.METHODS) - called)}"
    )


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
    }
    assert operations | paginated <= declared | {"GetCallerIdentity"}, sorted((operations | paginated) - declared)
