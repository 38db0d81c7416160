"""The sandbox cleans up after itself: no processes, no files, moto released."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.runtime import Sandbox

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo():
    return load_profile("demo", REPO)


def _core(connection):
    return client.CoreV1Api(config.new_client_from_config(config_file=str(connection.kubeconfig)))


def test_stop_leaves_no_processes(demo):
    sb = Sandbox(demo.profile)
    connection = sb.start()
    try:
        _run_sleeper(sb, _core(connection))
    finally:
        procs = [r.process for r in sb.kubelet._running.values()] if sb.kubelet else []
        sb.stop()
    assert any("time.sleep(600)" in " ".join(p.args) for p in procs)  # the sleeper, beside the workload pods
    assert len(procs) == 3
    assert all(p.poll() is not None for p in procs)
    assert not Path(sb.workdir).exists()


def _run_sleeper(sb, core):
    core.create_namespaced_pod(
        "finance-demo",
        {
            "metadata": {"name": "sleeper"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "x", "command": ["python3", "-c", "import time; time.sleep(600)"]}
                ]
            },
        },
    )
    deadline = time.monotonic() + 10
    while core.read_namespaced_pod("sleeper", "finance-demo").status.phase != "Running" or len(sb.kubelet._running) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_second_sandbox_in_one_process_is_refused(demo):
    first = Sandbox(demo.profile)
    first.start()
    try:
        with pytest.raises(RuntimeError, match="another sandbox is running"):
            Sandbox(demo.profile).start()
    finally:
        first.stop()
    again = Sandbox(demo.profile)
    again.start()
    again.stop()


def test_sandbox_runs_on_its_own_and_stops_on_ctrl_c():
    """`python -m pytest_eksid.sandbox --profile demo`: exports that real clients use, then a clean Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys

    import boto3

    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_eksid.sandbox", "--profile", "demo", "--rootdir", str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline
            line = proc.stdout.readline()
            assert line, "the sandbox exited early"
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                env[key] = value
            if line.startswith("# Ctrl-C"):
                break
        core = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
        assert "invoice-exporter-aws-sa" in [
            sa.metadata.name for sa in core.list_namespaced_service_account("finance-demo").items
        ]
        sts = boto3.client(
            "sts",
            region_name="eu-west-1",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        assert sts.get_caller_identity()["Arn"] == "arn:aws:iam::111122223333:user/eksid-runner"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "# sandbox stopped" in rest
    assert not Path(env["KUBECONFIG"]).exists()


def test_oidc_discovery_and_jwks_verify_a_pod_token(demo):
    """The issuer's discovery document and JWKS (served without auth) verify a token the kubelet projected."""
    import base64
    import json
    import ssl
    import urllib.request

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    sb = Sandbox(demo.profile)
    sb.start()
    try:
        context = ssl.create_default_context(cadata=base64.b64decode(sb.kubeapi.ca_data).decode())
        base = sb.kubeapi.https_url
        with urllib.request.urlopen(f"{base}/.well-known/openid-configuration", context=context, timeout=5) as r:
            document = json.load(r)
        with urllib.request.urlopen(f"{base}/openid/v1/jwks", context=context, timeout=5) as r:
            jwks = json.load(r)
        assert document["issuer"] == sb.issuer.url
        assert document["id_token_signing_alg_values_supported"] == ["RS256"]
        token = sb.issuer.service_account_token(
            namespace="billing-demo",
            service_account="billing-worker-aws-sa",
            sa_uid="u",
            pod_name="p",
            pod_uid="q",
            node_name="n",
            audience="sts.amazonaws.com",
            expiration_seconds=600,
        )
        header_b64, claims_b64, sig_b64 = token.split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        kid = json.loads(base64.urlsafe_b64decode(pad(header_b64)))["kid"]
        key = next(k for k in jwks["keys"] if k["kid"] == kid)
        public = rsa.RSAPublicNumbers(
            int.from_bytes(base64.urlsafe_b64decode(pad(key["e"])), "big"),
            int.from_bytes(base64.urlsafe_b64decode(pad(key["n"])), "big"),
        ).public_key()
        public.verify(
            base64.urlsafe_b64decode(pad(sig_b64)),
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    finally:
        sb.stop()


def test_stop_right_after_start_leaves_no_workload_processes(demo):
    """A pod whose start races stop() must not leave its process behind (bench/sandbox_startup.py found it)."""
    import subprocess

    for _ in range(3):
        sb = Sandbox(demo.profile)
        sb.start()
        sb.stop()
    time.sleep(0.5)  # give any racing kubelet thread the chance to (wrongly) start a process
    # only this process's children: another xdist worker may be running a sandbox with live workload pods
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "^sleep infinity"], capture_output=True, text=True, check=False
    )
    assert found.stdout.strip() == ""
