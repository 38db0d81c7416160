"""Building a misconfiguration without a workaround: a role's trust policy written verbatim, arbitrary
Kubernetes objects under ``sandbox.manifests``, and pod template fields of a workload's Deployment
(``sandbox.templates``). Each is refused at profile load when malformed (``file:line: field.path: what``),
seeded as written, and caught by the suites' own checks as the same misconfiguration on EKS would be."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.probe.pod import Campaign
from pytest_eksid.profile import ProfileError, load_profile
from pytest_eksid.sandbox.model import section
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest
from tests.helpers.sandboxes import Running

Data = dict[str, Any]
PI, IRSA = "invoice-exporter", "billing-worker"
NODEGROUP = "eks.amazonaws.com/nodegroup"
# A key pair that looks real to the static-credential checks (the id's shape, a 40-character secret).
PLANTED_ID = "AKIA" + "EXPRESSIVE000001"
PLANTED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXPRESSIVE"


def role(data: Data, name: str) -> Data:
    return next(r for r in data["sandbox"]["roles"] if r["name"] == name)


def wildcard_irsa_trust() -> Data:
    """Any ServiceAccount of any namespace may assume the role: the EKS user guide's example, with its
    ``$oidc_provider``/``$account_id`` variables, widened as a copy-paste often widens it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::$account_id:oidc-provider/$oidc_provider"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {"$oidc_provider:aud": "sts.amazonaws.com"},
                    "StringLike": {"$oidc_provider:sub": "system:serviceaccount:*:*"},
                },
            }
        ],
    }


def profile_error(tmp_path: Path, change: Callable[[Data], None]) -> str:
    data = demo_data()
    change(data)
    path = write_profile(tmp_path, data)
    with pytest.raises(ProfileError) as raised:
        section(load_profile(str(path), REPO))
    return str(raised.value)


def line_of(tmp_path: Path, text: str, after: str = "sandbox:") -> int:
    """The 1-based line of the profile written by profile_error that holds ``text`` (the first one after
    the line holding ``after``)."""
    lines = (tmp_path / "variant.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if after in line)
    return next(i for i, line in enumerate(lines, 1) if i >= start and text in line)


# --- refused at profile load ---------------------------------------------------------------------


def _trust(document: Any) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        role(data, "demo-billing-worker")["trustPolicy"] = document

    return change


@pytest.mark.parametrize(
    ("document", "where", "what", "line"),
    [
        (
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Permit", "Principal": "*", "Action": "sts:AssumeRole"}],
            },
            "trustPolicy.Statement[0].Effect",
            "expected Allow or Deny, got 'Permit'",
            "Effect: Permit",
        ),
        (
            {"Statement": {"Effect": "Allow", "Principal": {"AWS": "x"}, "Action": "sts:AssumeRole", "Resource": "*"}},
            "trustPolicy.Statement.Resource",
            "a trust policy has no Resource",
            "Resource: '*'",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]},
            "trustPolicy.Statement[0]",
            "a trust statement needs exactly one of Principal or NotPrincipal",
            "- Effect: Allow",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Principal": {"Human": "me"}, "Action": "sts:AssumeRole"}]},
            "trustPolicy.Statement[0].Principal.Human",
            "unknown principal type 'Human'; allowed: AWS, Service, Federated, CanonicalUser",
            "Human: me",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:*"}]},
            "trustPolicy.Statement[0].Action",
            "'sts:*' is not an action the sandbox's IAM takes in a trust policy (no wildcards)",
            "Action: sts:*",
        ),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Condition": {"StringEqualz": {}}}
                ]
            },
            "trustPolicy.Statement[0].Condition.StringEqualz",
            "unknown condition operator 'StringEqualz'",
            "StringEqualz",
        ),
        (
            {
                "Statement": [
                    {"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
                    {"Effect": "Deny", "Principal": "*", "Action": "sts:TagSession", "Sid": "A"},
                ]
            },
            "trustPolicy.Statement[1].Sid",
            "Sid 'A' is used twice",
            "Effect: Deny|Sid: A",
        ),
        ({"Version": "2012-10-17"}, "trustPolicy.Statement", "required: a statement", "trustPolicy"),
        ('{"Version": "2012-10-17", "Statement": [', "trustPolicy", "not a JSON policy document", "trustPolicy"),
    ],
    ids=[
        "effect",
        "resource",
        "no-principal",
        "principal-type",
        "action-wildcard",
        "condition-operator",
        "sid-twice",
        "no-statement",
        "bad-json-text",
    ],
)
def test_a_malformed_trust_policy_is_refused_naming_its_field(tmp_path, document, where, what, line):
    message = profile_error(tmp_path, _trust(document))
    after, _, text = line.rpartition("|")
    assert (
        f"variant.yaml:{line_of(tmp_path, text, after or 'trustPolicy')}: sandbox.roles[1].{where}: {what}" in message
    ), message


def test_a_trust_policy_may_be_json_text(tmp_path):
    import json

    data = demo_data()
    role(data, "demo-billing-worker")["trustPolicy"] = json.dumps(wildcard_irsa_trust())
    loaded = section(load_profile(str(write_profile(tmp_path, data)), REPO))
    trust = next(r for r in loaded.roles if r.name == "demo-billing-worker").trust_policy
    assert trust == wildcard_irsa_trust()


def test_a_trust_fault_on_a_verbatim_trust_is_refused(tmp_path):
    def change(data: Data) -> None:
        _trust(wildcard_irsa_trust())(data)
        data["sandbox"]["faults"] = [{"fault": "missing-aud-condition", "workload": IRSA}]

    message = profile_error(tmp_path, change)
    assert "sandbox.faults[0].fault: fault 'missing-aud-condition' changes the generated trust" in message
    assert "carries its trust policy verbatim" in message


def _manifest(obj: Data) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        data["sandbox"]["manifests"] = [obj]

    return change


def test_a_kind_the_sandbox_does_not_serve_is_refused_naming_the_served_kinds(tmp_path):
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "finance-demo"}}
    message = profile_error(tmp_path, _manifest(widget))
    line = line_of(tmp_path, "kind: Widget")
    assert f"variant.yaml:{line}: sandbox.manifests[0].kind: 'Widget' ('example.com/v1') is not a kind" in message
    assert "ConfigMap (v1)," in message
    assert "Deployment (apps/v1)" in message


def test_a_manifest_without_a_name_is_refused(tmp_path):
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "finance-demo"}}
    message = profile_error(tmp_path, _manifest(nameless))
    assert "sandbox.manifests[0].metadata.name: required: the object's name" in message


@pytest.mark.parametrize(
    ("obj", "what"),
    [
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            "sandbox.manifests[0].metadata.namespace: required: ConfigMap is namespaced",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "elsewhere"}},
            "namespace 'elsewhere' is neither seeded by the sandbox nor a Namespace under sandbox.manifests",
        ),
        (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "finance-demo"}},
            "Namespace is cluster-scoped: remove the namespace",
        ),
        ({"kind": "ConfigMap", "metadata": {"name": "c"}}, "sandbox.manifests[0].apiVersion: required"),
    ],
    ids=["no-namespace", "unknown-namespace", "cluster-scoped", "no-api-version"],
)
def test_a_manifest_out_of_place_is_refused(tmp_path, obj, what):
    assert what in profile_error(tmp_path, _manifest(obj))


@pytest.mark.parametrize(
    ("template", "what"),
    [
        ({"workload": "nobody"}, "sandbox.templates[0].workload: 'nobody' is not in workloads"),
        (
            {"workload": PI, "labels": {"app.kubernetes.io/name": "other"}},
            "selects its pods by this label",
        ),
        ({"workload": PI, "env": [{"value": "x"}]}, "sandbox.templates[0].env[0].name: required"),
        ({"workload": PI, "initContainers": [{"name": "init"}]}, "initContainers[0].image: required"),
        ({"workload": PI, "tolerations": [{"key": "k", "colour": "red"}]}, "unknown toleration field"),
    ],
    ids=["unknown-workload", "selector-label", "env-name", "init-image", "toleration"],
)
def test_a_malformed_template_is_refused(tmp_path, template, what):
    def change(data: Data) -> None:
        data["sandbox"]["templates"] = [template]

    assert what in profile_error(tmp_path, change)


# --- seeded as written ---------------------------------------------------------------------------


def test_manifests_are_seeded_in_order_through_the_api_server(start_sandbox: Callable[[Data], Running]) -> None:
    data = demo_data()
    data["sandbox"]["manifests"] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reporter", "namespace": "reports"}},
        # a namespace the sandbox also seeds: the profile's comes first, with its labels
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "finance-demo", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "reports"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "odd-keys", "namespace": "reports"},
            "data": {"aws.credentials": "x", "my-app.SECRET_TOKEN": "s3cr3t-in-a-configmap"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "legacy", "namespace": "reports"},
            "data": {"key": base64.b64encode(b"seeded-secret-value").decode()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "reporter", "namespace": "reports"},
            "spec": {
                "selector": {"matchLabels": {"app": "reporter"}},
                "template": {
                    "metadata": {"labels": {"app": "reporter"}},
                    "spec": {
                        "serviceAccountName": "reporter",
                        "hostNetwork": True,
                        "containers": [{"name": "r", "image": "reporter:1"}],
                    },
                },
            },
        },
    ]
    run = start_sandbox(data)
    store = run.sandbox.store
    assert store.get("namespaces", "", "finance-demo")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    assert store.get("serviceaccounts", "reports", "reporter")["kind"] == "ServiceAccount"
    assert store.get("configmaps", "reports", "odd-keys")["data"]["aws.credentials"] == "x"
    assert store.get("deployments", "reports", "reporter")["spec"]["template"]["spec"]["hostNetwork"] is True
    # the sandbox's own objects are there too: the manifests came after them
    assert store.get("deployments", "finance-demo", PI)["metadata"]["name"] == PI
    # secret values go to the ledger, so the leak tests look for them
    assert "seeded-secret-value" in run.sandbox.minted_secrets
    assert "s3cr3t-in-a-configmap" in run.sandbox.minted_secrets


def test_a_manifest_the_api_refuses_names_the_object_and_the_api_message(tmp_path):
    from pytest_eksid.sandbox.runtime import Sandbox, SandboxSeedError

    data = demo_data()
    clash = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": PI, "namespace": "finance-demo"}}
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    data["sandbox"]["manifests"] = [{**clash, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template}}]
    sandbox = Sandbox(load_profile(str(write_profile(tmp_path, data)), REPO).profile)
    with pytest.raises(SandboxSeedError) as raised:
        sandbox.start()  # stops what it started before raising
    assert str(raised.value) == (
        "sandbox.manifests: cannot create 'Deployment/finance-demo/invoice-exporter': "
        'deployments.apps "invoice-exporter" already exists'
    )


def _scheduled(run: Running, workload: str) -> Data:
    """The workload's running pod once the kubelet has placed it (a watch with a timeout, no sleeps)."""
    ns = next(w.namespace for w in run.loaded.profile.workloads if w.name == workload)
    seen: Data = {}
    for _, pod in run.sandbox.store.watch("pods", ns, f"app.kubernetes.io/name={workload}", timeout=60):
        seen = pod
        if pod.get("spec", {}).get("nodeName"):
            return pod
    raise AssertionError(f"the {workload} pod was not scheduled in 60 s; last seen: {seen.get('spec')}")


@pytest.mark.parametrize(("group", "node"), [("ng-batch", "ip-10-0-2-"), ("ng-general", "ip-10-0-1-")])
def test_template_fields_reach_the_deployment_the_running_pod_and_the_probe(
    start_sandbox: Callable[[Data], Running], group: str, node: str
) -> None:
    """Both node groups in turn, so that a pod the scheduler put there by chance cannot pass for placed."""
    data = demo_data()
    data["sandbox"]["templates"] = [
        {
            "workload": PI,
            "nodeSelector": {NODEGROUP: group},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
            "env": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
            "initContainers": [{"name": "migrate", "image": "registry.example/migrate:1", "command": ["true"]}],
            "annotations": {"example.com/team": "finance"},
            "labels": {"tier": "batch"},
        }
    ]
    run = start_sandbox(data)
    template = run.sandbox.store.get("deployments", "finance-demo", PI)["spec"]["template"]
    assert template["metadata"]["labels"] == {"tier": "batch", "app.kubernetes.io/name": PI}
    assert template["metadata"]["annotations"] == {"example.com/team": "finance"}
    pod = _scheduled(run, PI)
    assert pod["spec"]["nodeName"].startswith(node), pod["spec"]["nodeName"]  # the group's one node
    assert pod["spec"]["nodeSelector"] == {NODEGROUP: group}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["metadata"]["annotations"]["example.com/team"] == "finance"
    assert pod["metadata"]["labels"]["tier"] == "batch"
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate"]
    assert {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"} in pod["spec"]["containers"][0]["env"]
    # the product mirrors the template's placement for the workload's probe
    outcome = Campaign(kube=run.kube, profile=run.loaded.profile).run(
        [w for w in run.loaded.profile.workloads if w.name == PI]
    )[PI]
    assert outcome.node_name is not None
    assert outcome.node_name.startswith(node), outcome.node_name


def test_a_workload_without_a_template_runs_where_the_scheduler_puts_it(
    start_sandbox: Callable[[Data], Running],
) -> None:
    """The control of the test above: without the nodeSelector the Deployment pins nothing."""
    run = start_sandbox(demo_data())
    template = run.sandbox.store.get("deployments", "finance-demo", PI)["spec"]["template"]
    assert "nodeSelector" not in template["spec"]
    assert "annotations" not in template["metadata"]


# --- caught by the suites ------------------------------------------------------------------------


def test_each_expressed_misconfiguration_fails_its_check(tmp_path: Path) -> None:
    """One sandbox, three misconfigurations on disjoint tests: a verbatim wildcard trust (IRSA role), a
    ConfigMap with static keys in the IRSA workload's namespace, and static keys in the Pod Identity
    workload's template env. Each fails its own check, and the same checks pass elsewhere."""
    data = demo_data()
    role(data, "demo-billing-worker")["trustPolicy"] = wildcard_irsa_trust()
    data["sandbox"]["manifests"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "legacy-aws", "namespace": "billing-demo"},
            "data": {"AWS_ACCESS_KEY_ID": PLANTED_ID, "AWS_SECRET_ACCESS_KEY": PLANTED_SECRET},
        },
    ]
    data["sandbox"]["templates"] = [
        {
            "workload": PI,
            "env": [
                {"name": "AWS_ACCESS_KEY_ID", "value": PLANTED_ID},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": PLANTED_SECRET},
            ],
        }
    ]
    profile = write_profile(tmp_path, data)
    run = run_pytest(
        f"--profile={profile}",
        "suites/test_configuration.py::test_trust_policy",
        "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps",
        "suites/test_static_credentials.py::test_pod_templates",
        tmp_path=tmp_path,
    )
    assert "INTERNALERROR" not in run.stdout + run.stderr
    trust = f"suites/test_configuration.py::test_trust_policy[variant/{IRSA}]"
    stored = "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps[variant/ns/billing-demo]"
    env = f"suites/test_static_credentials.py::test_pod_templates[variant/{PI}]"
    assert run.failed() == sorted([trust, stored, env]), run.stdout[-6000:]
    assert "system:serviceaccount:*:*" in run.messages[trust]
    assert "legacy-aws" in run.messages[stored]
    assert "AWS_ACCESS_KEY_ID" in run.messages[env]
    for control in (
        f"suites/test_configuration.py::test_trust_policy[variant/{PI}]",
        f"suites/test_static_credentials.py::test_pod_templates[variant/{IRSA}]",
        "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps[variant/ns/finance-demo]",
    ):
        assert run.outcomes[control] == "passed", control
    assert PLANTED_SECRET not in run.stdout + run.stderr
