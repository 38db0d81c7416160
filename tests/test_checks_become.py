"""Who can become a workload identity, computed from RBAC objects (pytest_eksid/checks/become.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.checks.become import (
    RbacObjects,
    Subject,
    become_findings,
    become_notes,
    can_i,
    who_can_become,
)

NS, SA = "finance-demo", "invoice-api-sa"


def _role(name: str, *rules: dict[str, Any], ns: str | None = NS) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {"metadata": meta, "rules": list(rules)}


def _rule(verbs: list[str], resources: list[str], groups: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": groups if groups is not None else [""], "resources": resources, **more}


def _binding(
    name: str, kind: str, role: str, *subjects: dict[str, Any], ns: str | None = NS, **meta: Any
) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, **meta}
    if ns is not None:
        m["namespace"] = ns
    return {"metadata": m, "roleRef": {"kind": kind, "name": role}, "subjects": list(subjects)}


GROUP_DEV = {"kind": "Group", "name": "developers"}
USER_ALICE = {"kind": "User", "name": "alice@example.com"}


def _subjects(rbac: RbacObjects, **kw: Any) -> set[tuple[str, str]]:
    return {(g.subject.label(), g.action) for g in who_can_become(NS, SA, rbac, **kw)}


def test_role_creating_pods_in_the_namespace() -> None:
    rbac = RbacObjects(
        roles=[_role("dev", _rule(["create", "get"], ["pods"]))],
        role_bindings=[_binding("dev", "Role", "dev", GROUP_DEV)],
    )
    [grant] = who_can_become(NS, SA, rbac)
    assert grant.subject == Subject("Group", "developers")
    assert grant.action == "create pods"
    assert grant.binding == f"RoleBinding {NS}/dev"
    assert grant.role == f"Role {NS}/dev"
    assert not grant.platform


def test_a_binding_in_another_namespace_grants_nothing_here() -> None:
    rbac = RbacObjects(
        roles=[_role("dev", _rule(["create"], ["pods"]), ns="other")],
        role_bindings=[_binding("dev", "Role", "dev", GROUP_DEV, ns="other")],
    )
    assert who_can_become(NS, SA, rbac) == []


def test_cluster_role_binding_with_wildcards() -> None:
    rbac = RbacObjects(
        cluster_roles=[_role("all", _rule(["*"], ["*"], ["*"]), ns=None)],
        cluster_role_bindings=[_binding("all", "ClusterRole", "all", USER_ALICE, ns=None)],
    )
    actions = {g.action for g in who_can_become(NS, SA, rbac)}
    assert {"create pods", "update deployments.apps", "create serviceaccounts/token", "impersonate users"} <= actions


def test_role_binding_to_a_cluster_role_counts_in_its_namespace_only() -> None:
    edit = _role("edit", _rule(["create", "update", "patch"], ["deployments"], ["apps"]), ns=None)
    here = RbacObjects(cluster_roles=[edit], role_bindings=[_binding("e", "ClusterRole", "edit", GROUP_DEV)])
    there = RbacObjects(cluster_roles=[edit], role_bindings=[_binding("e", "ClusterRole", "edit", GROUP_DEV, ns="x")])
    assert ("Group developers", "update deployments.apps") in _subjects(here)
    assert who_can_become(NS, SA, there) == []


def test_resource_names_do_not_restrict_create_of_a_new_object_they_cannot_name() -> None:
    rbac = RbacObjects(
        roles=[_role("r", _rule(["create"], ["pods"], resourceNames=["some-pod"]))],
        role_bindings=[_binding("r", "Role", "r", GROUP_DEV)],
    )
    # kube's RBAC: a rule with resourceNames matches only requests that name an object; create names none
    assert who_can_become(NS, SA, rbac) == []


@pytest.mark.parametrize(
    ("names", "expected"),
    [(None, True), ([SA], True), (["other-sa"], False)],
)
def test_token_requests_for_the_service_account(names: list[str] | None, expected: bool) -> None:
    more = {"resourceNames": names} if names else {}
    rbac = RbacObjects(
        roles=[_role("t", _rule(["create"], ["serviceaccounts/token"], **more))],
        role_bindings=[_binding("t", "Role", "t", USER_ALICE)],
    )
    assert (("User alice@example.com", "create serviceaccounts/token") in _subjects(rbac)) is expected


def test_exec_into_any_pod_of_the_namespace() -> None:
    rbac = RbacObjects(
        roles=[_role("x", _rule(["get"], ["*/exec"]), _rule(["patch"], ["pods/ephemeralcontainers"]))],
        role_bindings=[_binding("x", "Role", "x", USER_ALICE)],
    )
    # no running pod needed: a pod of the ServiceAccount may run at any time; `get` on pods/exec runs nothing
    # since Kubernetes 1.30 (the WebSocket upgrade is authorized as create), so only the ephemeral container counts
    assert _subjects(rbac) == {("User alice@example.com", "patch pods/ephemeralcontainers")}
    rbac = RbacObjects(
        roles=[_role("x", _rule(["create"], ["*/exec"]))],
        role_bindings=[_binding("x", "Role", "x", USER_ALICE)],
    )
    assert _subjects(rbac) == {("User alice@example.com", "create pods/exec")}


def test_exec_restricted_by_name_counts_for_the_service_accounts_running_pods_only() -> None:
    rbac = RbacObjects(
        roles=[_role("x", _rule(["create"], ["pods/attach"], resourceNames=["invoice-api-1"]))],
        role_bindings=[_binding("x", "Role", "x", USER_ALICE)],
    )
    assert who_can_become(NS, SA, rbac) == []
    assert who_can_become(NS, SA, rbac, pod_names=["other-pod"]) == []
    [grant] = who_can_become(NS, SA, rbac, pod_names=["invoice-api-1"])
    assert (grant.action, grant.name) == ("create pods/attach", "invoice-api-1")


def test_pods_star_is_not_a_subresource_wildcard() -> None:
    rbac = RbacObjects(
        roles=[_role("x", _rule(["create"], ["pods/*"]))],
        role_bindings=[_binding("x", "Role", "x", USER_ALICE)],
    )
    # kube's ResourceMatches knows "*" and "*/sub", not "pods/*"
    assert who_can_become(NS, SA, rbac, pod_names=["p"]) == []
    # (and this rule does not grant create pods either)


def test_jobs_cannot_be_repointed_but_cronjobs_can() -> None:
    rbac = RbacObjects(
        roles=[_role("b", _rule(["update", "patch"], ["jobs", "cronjobs"], ["batch"]))],
        role_bindings=[_binding("b", "Role", "b", GROUP_DEV)],
    )
    assert {a for _, a in _subjects(rbac)} == {"update cronjobs.batch", "patch cronjobs.batch"}


def test_impersonating_the_service_account_user_needs_a_cluster_role_binding() -> None:
    imp = _role("imp", _rule(["impersonate"], ["users"], resourceNames=[f"system:serviceaccount:{NS}:{SA}"]), ns=None)
    crb = RbacObjects(
        cluster_roles=[imp], cluster_role_bindings=[_binding("i", "ClusterRole", "imp", USER_ALICE, ns=None)]
    )
    rb = RbacObjects(cluster_roles=[imp], role_bindings=[_binding("i", "ClusterRole", "imp", USER_ALICE)])
    assert ("User alice@example.com", "impersonate users") in _subjects(crb)
    assert who_can_become(NS, SA, rb) == []  # users are cluster-scoped: a RoleBinding cannot grant them


def test_impersonation_is_followed_to_whoever_can_create_pods() -> None:
    rbac = RbacObjects(
        roles=[
            _role("deploy", _rule(["create"], ["pods"])),
            _role("imp", _rule(["impersonate"], ["serviceaccounts"], resourceNames=["deployer"]), ns="ci"),
        ],
        role_bindings=[
            _binding("deploy", "Role", "deploy", {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}),
            _binding("imp", "Role", "imp", USER_ALICE, ns="ci"),
        ],
    )
    grants = {g.subject.label(): g for g in who_can_become(NS, SA, rbac)}
    assert set(grants) == {"ServiceAccount ci/deployer", "User alice@example.com"}
    alice = grants["User alice@example.com"]
    assert alice.via == (Subject("ServiceAccount", "deployer", "ci"),)
    assert "by impersonating ServiceAccount ci/deployer" in alice.how()


def test_group_impersonation_counts_only_with_a_user_to_act_as() -> None:
    roles = [_role("dev", _rule(["create"], ["pods"]))]
    bindings = [_binding("dev", "Role", "dev", GROUP_DEV)]
    groups_only = _role("g", _rule(["impersonate"], ["groups"]), ns=None)
    users_too = _role("g", _rule(["impersonate"], ["groups", "users"]), ns=None)
    crb = [_binding("g", "ClusterRole", "g", USER_ALICE, ns=None)]
    only = RbacObjects(roles=roles, role_bindings=bindings, cluster_roles=[groups_only], cluster_role_bindings=crb)
    both = RbacObjects(roles=roles, role_bindings=bindings, cluster_roles=[users_too], cluster_role_bindings=crb)
    assert "User alice@example.com" not in {s for s, _ in _subjects(only)}
    assert "User alice@example.com" in {s for s, _ in _subjects(both)}


def test_service_account_subject_defaults_to_the_bindings_namespace() -> None:
    rbac = RbacObjects(
        roles=[_role("dev", _rule(["create"], ["pods"]))],
        role_bindings=[_binding("dev", "Role", "dev", {"kind": "ServiceAccount", "name": "ci"})],
    )
    [grant] = who_can_become(NS, SA, rbac)
    assert grant.subject == Subject("ServiceAccount", "ci", NS)


def test_platform_bindings_are_marked_and_sorted_last() -> None:
    rbac = RbacObjects(
        cluster_roles=[
            _role("system:controller:replicaset-controller", _rule(["create"], ["pods"]), ns=None),
            _role("dev", _rule(["create"], ["pods"]), ns=None),
        ],
        cluster_role_bindings=[
            _binding(
                "system:controller:replicaset-controller",
                "ClusterRole",
                "system:controller:replicaset-controller",
                {"kind": "ServiceAccount", "name": "replicaset-controller", "namespace": "kube-system"},
                ns=None,
                labels={"kubernetes.io/bootstrapping": "rbac-defaults"},
            ),
            _binding("dev", "ClusterRole", "dev", GROUP_DEV, ns=None),
        ],
    )
    grants = who_can_become(NS, SA, rbac)
    assert [(g.subject.name, g.platform) for g in grants] == [("developers", False), ("replicaset-controller", True)]


def test_a_binding_named_like_the_platform_is_not_platform_unless_its_role_is_too() -> None:
    rbac = RbacObjects(
        cluster_roles=[_role("admin-ish", _rule(["create"], ["pods"]), ns=None)],
        cluster_role_bindings=[_binding("eks:looks-official", "ClusterRole", "admin-ish", GROUP_DEV, ns=None)],
    )
    [grant] = who_can_become(NS, SA, rbac)
    assert not grant.platform


def test_junk_objects_are_ignored() -> None:
    rbac = RbacObjects(
        roles=[{"metadata": {"name": "x", "namespace": NS}, "rules": ["junk", {"verbs": "create"}]}],
        role_bindings=[
            {"metadata": {"name": "b", "namespace": NS}, "roleRef": "nope", "subjects": [1]},
            _binding("b2", "Role", "x", {"kind": "Robot", "name": "r"}, 7),
        ],
        cluster_role_bindings=[{"metadata": None}],
    )
    assert who_can_become(NS, SA, rbac) == []


def test_can_i_commands() -> None:
    rbac = RbacObjects(
        roles=[_role("t", _rule(["create"], ["serviceaccounts/token", "pods"]), _rule(["create"], ["pods/exec"]))],
        role_bindings=[
            _binding("t", "Role", "t", GROUP_DEV, {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"})
        ],
    )
    commands = {can_i(g, NS) for g in who_can_become(NS, SA, rbac)}
    assert commands == {
        f"kubectl auth can-i create pods -n {NS} --as=someone --as-group=developers",
        f"kubectl auth can-i create serviceaccounts/{SA} --subresource=token -n {NS} --as=someone "
        "--as-group=developers",
        f"kubectl auth can-i create pods --subresource=exec -n {NS} --as=someone --as-group=developers",
        f"kubectl auth can-i create pods -n {NS} --as=system:serviceaccount:ci:ci",
        f"kubectl auth can-i create serviceaccounts/{SA} --subresource=token -n {NS} --as=system:serviceaccount:ci:ci",
        f"kubectl auth can-i create pods --subresource=exec -n {NS} --as=system:serviceaccount:ci:ci",
    }


def test_can_i_never_passes_hostile_names_to_a_shell() -> None:
    rbac = RbacObjects(
        roles=[_role("t", _rule(["create"], ["pods"]))],
        role_bindings=[
            _binding(
                "t", "Role", "t", {"kind": "User", "name": "x; rm -rf / #"}, {"kind": "Group", "name": "--as=admin"}
            )
        ],
    )
    commands = {can_i(g, NS) for g in who_can_become(NS, SA, rbac)}
    assert commands == {
        f"kubectl auth can-i create pods -n {NS} --as=<user>",
        f"kubectl auth can-i create pods -n {NS} --as=someone --as-group=<group>",
    }


# --- judging against the profile's deployers ---------------------------------------------------

PIPELINE = Subject("ServiceAccount", "deployer", "ci")
WIDE = RbacObjects(
    cluster_roles=[
        _role("deploy", _rule(["create", "update"], ["deployments"], ["apps"]), ns=None),
        _role("system:controller:job-controller", _rule(["create"], ["pods"]), ns=None),
    ],
    role_bindings=[
        _binding(
            "pipeline", "ClusterRole", "deploy", {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}
        ),
        _binding("devs", "ClusterRole", "deploy", GROUP_DEV),
    ],
    cluster_role_bindings=[
        _binding(
            "system:controller:job-controller",
            "ClusterRole",
            "system:controller:job-controller",
            {"kind": "ServiceAccount", "name": "job-controller", "namespace": "kube-system"},
            ns=None,
        )
    ],
)


def test_extra_subjects_fail_naming_the_binding_and_the_can_i_command() -> None:
    grants = who_can_become(NS, SA, WIDE)
    [finding] = become_findings("invoice-api", NS, SA, grants, [PIPELINE])
    assert finding.summary == (
        f"invoice-api: Group developers can run code as {NS}/{SA} and is not a declared deployer"
    )
    assert finding.expected == "only the profile's deployers can: ServiceAccount ci/deployer"
    assert f"create deployments.apps (ClusterRole deploy via RoleBinding {NS}/devs)" in finding.seen
    assert finding.next_steps == (
        f"kubectl auth can-i create deployments.apps -n {NS} --as=someone --as-group=developers",
        f"kubectl auth can-i update deployments.apps -n {NS} --as=someone --as-group=developers",
        f"kubectl get rolebinding devs -n {NS} -o yaml",
    )


def test_declared_deployers_and_platform_controllers_pass() -> None:
    grants = who_can_become(NS, SA, WIDE)
    assert become_findings("w", NS, SA, grants, [PIPELINE, Subject("Group", "developers")]) == []


def test_without_deployers_subjects_are_reported_not_judged() -> None:
    grants = who_can_become(NS, SA, WIDE)
    assert become_findings("w", NS, SA, grants, None) == []
    notes = become_notes(grants, None)
    assert notes == [
        "2 subjects can run code as this ServiceAccount: Group developers, ServiceAccount ci/deployer",
        "and 1 of the platform's own (Kubernetes/EKS controllers, this gate's runner; not judged): "
        "ServiceAccount kube-system/job-controller",
        "no deployers declared for this workload or its namespace: reported, not judged",
    ]


def test_a_declared_deployer_without_rights_is_noted() -> None:
    grants = who_can_become(NS, SA, WIDE)
    notes = become_notes(grants, [PIPELINE, Subject("Group", "developers"), Subject("User", "gone")])
    assert notes[-1] == "declared deployer User gone cannot run code as it (stale entry?)"


def test_the_gates_own_runner_is_reported_not_judged() -> None:
    from pytest_eksid.checks.become import as_the_gates, subject_of_user

    runner = {"kind": "ServiceAccount", "name": "pytest-eksid-runner", "namespace": "pytest-eksid"}
    rbac = RbacObjects(
        cluster_roles=[_role("pytest-eksid-runner", _rule(["create", "delete"], ["pods"]), ns=None)],
        cluster_role_bindings=[_binding("pytest-eksid-runner", "ClusterRole", "pytest-eksid-runner", runner, ns=None)],
    )
    grants = who_can_become(NS, SA, rbac)
    assert become_findings("w", NS, SA, grants, [PIPELINE])  # without knowing who the runner is: an extra subject
    own = as_the_gates(grants, "system:serviceaccount:pytest-eksid:pytest-eksid-runner")
    assert become_findings("w", NS, SA, own, [PIPELINE]) == []
    assert "this gate's runner" in become_notes(own, [PIPELINE])[1]
    assert as_the_gates(grants, "arn:aws:iam::111122223333:user/ci") == grants  # someone else: unchanged
    assert subject_of_user("arn:aws:iam::1:user/x") == Subject("User", "arn:aws:iam::1:user/x")
    assert subject_of_user("system:serviceaccount:a:b") == Subject("ServiceAccount", "b", "a")
    assert subject_of_user("system:serviceaccount:a") == Subject("User", "system:serviceaccount:a")
