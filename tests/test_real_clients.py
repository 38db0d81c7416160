"""Real AWS clients nobody here wrote get the workload's role inside sandbox pods of both mechanisms.

One pod per mechanism runs the AWS SDK for JavaScript v3's default chain (``fromNodeProviderChain`` + STS
GetCallerIdentity) and the AWS CLI v1 (``aws sts get-caller-identity``) with exactly the environment and files
the webhooks injected; each must name the demo workload's role, the provider that served it, the sandbox's
STS endpoint (``AWS_ENDPOINT_URL``) and the region. The clients are installed once into ``.cache/real-clients/``
(tests/helpers/realclients.py); a run that cannot install them fails here with the installer's reason.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client, config

from tests.helpers import realclients
from tests.helpers.sandboxes import wait_pod_phase

ACCOUNT = "111122223333"
REGION = "eu-west-1"

# (namespace, service account, role, the JS SDK's feature id, botocore's provider METHOD)
MECHANISMS = {
    # Both pods get their region from the webhook, which adds AWS_REGION and AWS_DEFAULT_REGION in either mode
    # unless the container sets one of them [aws/amazon-eks-pod-identity-webhook@3bf80a34
    # pkg/handler/handler.go:201-205,230-239]: the JS SDK reads AWS_REGION [@smithy/core
    # dist-cjs/submodules/config/index.js:583], the CLI v1 only AWS_DEFAULT_REGION [awscli 1.46.3
    # awscli/botocore/configprovider.py:74].
    "pod-identity": (
        "finance-demo",
        "invoice-exporter-aws-sa",
        "demo-invoice-exporter",
        "CREDENTIALS_HTTP",
        "container-role",
    ),
    "irsa": (
        "billing-demo",
        "billing-worker-aws-sa",
        "demo-billing-worker",
        "CREDENTIALS_STS_ASSUME_ROLE_WEB_ID",
        "assume-role-with-web-identity",
    ),
}


def installed() -> realclients.RealClients:
    """Both clients from the cache (installed on first use); an install that fails fails the test with why."""
    try:
        return realclients.install()
    except realclients.InstallError as exc:
        pytest.fail(f"could not install the real AWS clients (tests/helpers/realclients.py): {exc}", pytrace=False)


def run_clients(kubeconfig: str, namespace: str, sa: str, clients: realclients.RealClients) -> tuple[Any, str]:
    """Run POD_CODE in a pod of ``sa``; return what it printed (its last line, as JSON) and its whole log."""
    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    args = [str(clients.node_path), str(clients.aws), realclients.JS_CODE]
    container = {"name": "clients", "image": "clients", "command": ["python3", "-c", realclients.POD_CODE]}
    container["args"] = args
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"generateName": "real-clients-"},
            "spec": {"serviceAccountName": sa, "restartPolicy": "Never", "containers": [container]},
        },
    )
    name = pod.metadata.name
    try:
        done = wait_pod_phase(core, namespace, name, ("Succeeded", "Failed"), timeout=180)
        log = core.read_namespaced_pod_log(name, namespace)
        assert done.status.phase == "Succeeded", f"pod {namespace}/{name} {done.status.phase}:\n{log[-2000:]}"
        return json.loads(log.strip().splitlines()[-1]), log
    finally:
        core.delete_namespaced_pod(name, namespace)
        api.close()


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
def test_real_clients_get_the_workload_role(sandbox, mechanism):
    namespace, sa, role, feature, method = MECHANISMS[mechanism]
    clients = installed()
    sb, connection = sandbox
    seen, log = run_clients(str(connection.kubeconfig), namespace, sa, clients)
    node, cli = seen["node"], seen["cli"]
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/"
    sandbox_aws = urlsplit(connection.env["AWS_ENDPOINT_URL"]).netloc

    assert "error" not in node, node
    assert node["arn"].startswith(session), node
    assert feature in node["sources"], node
    assert node["region"] == REGION, node
    assert node["endpoints"], node
    assert {urlsplit(u).netloc for u in node["endpoints"]} == {sandbox_aws}, node  # AWS_ENDPOINT_URL honoured

    assert "error" not in cli, cli
    assert cli["arn"].startswith(session), cli
    assert cli["method"] == method, cli
    assert cli["regions"] == [REGION], cli
    assert cli["endpoints"], cli
    assert {urlsplit(u).netloc for u in cli["endpoints"]} == {sandbox_aws}, cli

    leaks = [len(secret) for secret in sb.iam.minted if len(secret) >= 16 and secret in log]
    assert not leaks, f"the pod log holds {len(leaks)} secret(s) the sandbox minted (lengths {leaks})"


def test_an_install_that_fails_names_the_reason(tmp_path, monkeypatch):
    """No silent skip: a client that cannot be installed is an InstallError ending with the installer's output."""
    monkeypatch.setattr(realclients, "JS_SDK", ("@aws-sdk/client-sts@0.0.0-no-such-version",))
    with pytest.raises(realclients.InstallError, match=r"(?s)npm install .*exited .*0\.0\.0-no-such-version"):
        realclients.install(tmp_path / "cache")
    assert not (tmp_path / "cache" / "js" / "eksid-installed.json").exists()  # retried next time, not trusted
