"""End to end on the embedded sandbox, through real clients only (kubernetes, boto3, botocore)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from kubernetes import client, config

from pytest_eksid.aws import Aws
from pytest_eksid.kube import Kube, KubeTarget
from pytest_eksid.probe.pod import MANAGED_BY, Campaign
from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.runtime import Sandbox
from tests.helpers.runs import pytester_run
from tests.helpers.sandboxes import runner_client

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo():
    return load_profile("demo", REPO)


@pytest.fixture(scope="module")
def sandbox(demo):
    sb = Sandbox(demo.profile)
    connection = sb.start()
    yield sb, connection
    sb.stop()


def _core(connection):
    return client.CoreV1Api(config.new_client_from_config(config_file=str(connection.kubeconfig)))


def _run_pod(core, namespace, sa, code, timeout=30.0):
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"generateName": "t-", "labels": {MANAGED_BY: "tests"}},
            "spec": {
                "serviceAccountName": sa,
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "python", "command": ["python3", "-c", code]}],
            },
        },
    )
    name = pod.metadata.name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = core.read_namespaced_pod(name, namespace)
        if p.status.phase in ("Succeeded", "Failed"):
            log = core.read_namespaced_pod_log(name, namespace)
            core.delete_namespaced_pod(name, namespace)
            return p, log
        time.sleep(0.1)
    raise AssertionError(f"pod {namespace}/{name} did not finish: {p.status}")


def test_campaign_runs_probe_through_default_chain(sandbox, demo):
    """Each mechanism's probe resolves credentials by its own provider, as a separate process."""
    sb, connection = sandbox
    prove = Aws(region=demo.profile.cluster.region, env=connection.env).prove_caller  # the runner checks the proof
    kube = Kube(KubeTarget(str(connection.kubeconfig), None))
    campaign = Campaign(kube=kube, profile=demo.profile, prove=prove)
    try:
        outcomes = campaign.run(demo.profile.workloads)
    finally:
        deleted = campaign.cleanup()
        kube.close()
    assert len(deleted) == 2
    pi = outcomes["invoice-exporter"]
    irsa = outcomes["billing-worker"]
    assert pi.error is None, pi.error
    assert irsa.error is None, irsa.error
    assert pi.identity["method"] == "container-role"
    assert irsa.identity["method"] == "assume-role-with-web-identity"
    assert pi.identity["caller"]["arn"].startswith(
        "arn:aws:sts::111122223333:assumed-role/demo-invoice-exporter/eks-demo-"
    )
    assert irsa.identity["caller"]["arn"].startswith("arn:aws:sts::111122223333:assumed-role/demo-billing-worker/")
    # The webhooks' injection, as the probe saw it.
    env_pi = pi.environment["aws_variables"]
    assert env_pi["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].endswith("eks-pod-identity-token")
    assert "AWS_ROLE_ARN" not in env_pi
    env_irsa = irsa.environment["aws_variables"]
    assert env_irsa["AWS_ROLE_ARN"] == "arn:aws:iam::111122223333:role/demo-billing-worker"
    claims = irsa.environment["token_files"]["AWS_WEB_IDENTITY_TOKEN_FILE"]["claims"]
    assert claims["sub"] == "system:serviceaccount:billing-demo:billing-worker-aws-sa"
    assert claims["aud"] == ["sts.amazonaws.com"]
    # No secret left the pod.
    for outcome in (pi, irsa):
        for secret in sb.minted_secrets:
            assert secret not in outcome.log


def test_role_policy_is_enforced_for_pod_credentials(sandbox):
    """A pod's credentials are allowed what the role allows and refused the rest (moto authz)."""
    _, connection = sandbox
    code = textwrap.dedent(
        """
        import botocore.session, json
        s3 = botocore.session.Session().create_client("s3", region_name="eu-west-1")
        out = {}
        for name, call in (
            ("put", lambda: s3.put_object(Bucket="company-demo-finance", Key="invoices/2026/11/29/a.pdf", Body=b"x")),
            ("put_elsewhere", lambda: s3.put_object(Bucket="company-demo-finance", Key="reports/a.pdf", Body=b"x")),
            ("delete", lambda: s3.delete_object(Bucket="company-demo-finance", Key="invoices/2026/11/29/a.pdf")),
        ):
            try:
                call()
                out[name] = "allowed"
            except Exception as exc:
                out[name] = exc.response["Error"]["Code"]
        print(json.dumps(out))
        """
    )
    pod, log = _run_pod(_core(connection), "finance-demo", "invoice-exporter-aws-sa", code)
    assert pod.status.phase == "Succeeded", log
    result = json.loads(log.strip().splitlines()[-1])
    assert result == {"put": "allowed", "put_elsewhere": "AccessDenied", "delete": "AccessDenied"}


def test_pod_without_identity_gets_no_credentials(sandbox):
    """The default SA has no binding, and the node's IMDS is blocked: the chain finds nothing."""
    _, connection = sandbox
    code = "import botocore.session; print(botocore.session.Session().get_credentials())"
    pod, log = _run_pod(_core(connection), "finance-demo", "default", code)
    assert pod.status.phase == "Succeeded", log
    assert log.strip() == "None"


def test_eks_api_through_boto3(sandbox):
    _, connection = sandbox
    env = connection.env
    eks = runner_client(env, "eks")
    issuer = eks.describe_cluster(name="demo")["cluster"]["identity"]["oidc"]["issuer"]
    assert issuer.startswith("https://oidc.eks.eu-west-1.amazonaws.com/id/")
    found = eks.list_pod_identity_associations(clusterName="demo", namespace="finance-demo")["associations"]
    assert [(a["namespace"], a["serviceAccount"]) for a in found] == [("finance-demo", "invoice-exporter-aws-sa")]
    with pytest.raises(ClientError) as err:
        eks.describe_cluster(name="nope")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    unknown = boto3.client(
        "eks",
        region_name="eu-west-1",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="AKIAUNKNOWNUNKNOWN00",
        aws_secret_access_key="x" * 40,
    )
    with pytest.raises(ClientError) as err:
        unknown.list_pod_identity_associations(clusterName="demo")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


COLLECT_ONLY = """
import socket, sys
import pytest

used = []
for name in ("bind", "connect"):
    original = getattr(socket.socket, name)
    def spy(self, address, _name=name, _original=original):
        if (_name, address) != ("bind", ("::1", 0)):  # urllib3's IPv6 support check, at import
            used.append((_name, address))
        return _original(self, address)
    setattr(socket.socket, name, spy)
code = pytest.main(["-p", "no:cacheprovider", "--profile", "demo", "--collect-only", "-q"])
loaded = [m for m in ("moto", "pytest_eksid.sandbox.runtime", "pytest_eksid.sandbox.cloud") if m in sys.modules]
print("EKSID-CHECK", int(code), used, loaded)
"""


def test_collect_only_starts_nothing(tmp_path):
    """No sandbox, no cluster, no AWS: no socket bound or connected, no sandbox work dir, and the
    sandbox (moto) not even imported."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EKSID_"))} | {"TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, "-c", COLLECT_ONLY], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert "suites/test_identity.py::test_caller_role[demo/invoice-exporter]" in proc.stdout
    assert "suites/test_identity.py::test_caller_role[demo/billing-worker]" in proc.stdout
    check = next(line for line in proc.stdout.splitlines() if line.startswith("EKSID-CHECK"))
    assert check == "EKSID-CHECK 0 [] []", proc.stdout + proc.stderr
    assert list(scratch.iterdir()) == []


def test_fixtures_listing_works_without_a_profile(user_pytester: pytest.Pytester) -> None:
    """`pytest --fixtures` is documentation: it must work offline and without --profile, in a user's directory."""
    result = pytester_run(user_pytester, "--fixtures", timeout=120)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    for name in ("eksid_probe", "eksid_node_probe", "eksid_campaign", "eksid_kube", "eksid_aws"):
        result.stdout.fnmatch_lines([f"{name} *"])
