"""The sandbox cleans up after itself: no processes, no files, moto released."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox import get_token
from pytest_eksid.sandbox.runtime import Sandbox
from tests.helpers import REPO
from tests.helpers.runs import interrupt_pytest
from tests.helpers.sandboxes import runner_client, start_standalone_sandbox


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
    deadline = time.monotonic() + 60  # generous: processes start slowly on a busy machine
    while core.read_namespaced_pod("sleeper", "finance-demo").status.phase != "Running" or len(sb.kubelet._running) < 3:
        assert time.monotonic() < deadline, "the sleeper and the workload pods not all running after 60 s"
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
    import signal

    proc, env = start_standalone_sandbox("demo")
    try:
        core = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
        assert "invoice-exporter-aws-sa" in [
            sa.metadata.name for sa in core.list_namespaced_service_account("finance-demo").items
        ]
        sts = runner_client(env, "sts")
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

    before = set(threading.enumerate())
    for _ in range(3):
        sb = Sandbox(demo.profile)
        sb.start()
        sb.stop()
    # Wait for these sandboxes' kubelet threads to end: a racing one can start a process only while it runs.
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("kubelet-"):
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} still runs 30 s after stop()"
    # only this process's children: another xdist worker may be running a sandbox with live workload pods
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "^sleep infinity"], capture_output=True, text=True, check=False
    )
    assert found.stdout.strip() == ""


# --- interruptions: a second Ctrl-C or SIGTERM cannot leave secrets, processes or probe pods ----------

_BLOCKER = '''
import os
import threading

import pytest


@pytest.fixture(scope="session", autouse=True)
def _eksid_teardown_blocker(eksid_clusters):
    """Torn down before eksid_clusters: holds the run between the first interruption and its cleanup."""
    yield
    os.write(2, b"BLOCKER: teardown waits\\n")
    threading.Event().wait()
'''


def _interrupt_twice(tmp_path: Path, *args: str, signum: int, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run pytest with a session fixture whose teardown never ends; send ``signum`` once the probe pods are
    launching, and again once teardown reached that fixture (before the plugin's cleanup)."""
    (tmp_path / "eksid_blocker.py").write_text(_BLOCKER)
    return interrupt_pytest(
        "-p",
        "eksid_blocker",
        *args,
        when=("launching 4 probe pod(s)", "BLOCKER: teardown waits"),
        signum=signum,
        env={**(env or {}), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"},
        settle=0,
    )


def _processes_under(directory: str) -> list[int]:
    """Processes whose working directory is inside ``directory`` (a pod's, in the sandbox)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink(f"/proc/{pid}/cwd").startswith(directory):
                found.append(int(pid))
        except OSError:
            continue
    return found


def _slow_demo(tmp_path: Path) -> Path:
    from tests.helpers.profiles import demo_data, write_profile

    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 30  # the probe pods are still starting when interrupted
    return write_profile(tmp_path, data, "slow")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_second_interrupt_before_cleanup_still_stops_the_sandbox_and_removes_its_secrets(
    tmp_path: Path, signame: str
) -> None:
    import re
    import signal

    code, out = _interrupt_twice(tmp_path, f"--profile={_slow_demo(tmp_path)}", signum=getattr(signal, signame))
    workdir = re.search(r"\(kubeconfig (/\S+)/kubeconfig\)", out)
    assert workdir, out
    assert not Path(workdir[1]).exists(), out  # the kubeconfig (API token) and the pods' token files
    assert _processes_under(workdir[1]) == [], out  # no workload or probe process outlives the run
    assert code == 2, out
    assert "Traceback" not in out, out
    assert out.count(f"eksid: {signame} again: ") == 1, out
    assert "INTERNALERROR" not in out, out


def test_a_second_sigterm_deletes_the_runs_probe_pods_on_a_live_cluster(tmp_path: Path) -> None:
    """Against a cluster the run did not start (the sandbox on its own, as a live cluster): the probe pods
    are deleted by the run's label before the process exits."""
    import signal

    import yaml

    from pytest_eksid.kube import Kube, KubeTarget

    sandbox, env = start_standalone_sandbox(str(_slow_demo(tmp_path)))
    try:
        live = yaml.safe_load((tmp_path / "slow.yaml").read_text())
        del live["sandbox"]
        kube = Kube(KubeTarget(env["KUBECONFIG"], None))
        live["cluster"]["kubeconfig"] = env["KUBECONFIG"]
        live["cluster"]["kubeContext"] = kube.context
        (tmp_path / "live.yaml").write_text(yaml.safe_dump(live))
        code, out = _interrupt_twice(
            tmp_path, f"--profile={tmp_path / 'live.yaml'}", signum=signal.SIGTERM, env={**env, "KUBECONFIG": ""}
        )
        left = kube.list_pods("eksid.dev/run-id")
        kube.close()
    finally:
        sandbox.send_signal(signal.SIGINT)
        sandbox.communicate(timeout=30)
    assert code == 2, out
    assert left == [], out
    assert "Traceback" not in out, out


def test_the_sandbox_leaves_the_plugins_first_credential_in_its_cache(demo, monkeypatch, capsys):
    """The sandbox signs the runner's first token itself (runtime.py, _first_runner_token): before any client has
    run the plugin, the plugin run as the kubeconfig says must find it under its own key and print it without
    signing; the token authenticates the runner and is known to the secret ledger."""
    # Its own sandbox (one runs per process): no client may have run the plugin before the check.
    sandbox = Sandbox(demo.profile)
    connection = sandbox.start()
    try:
        plugin = next(u["user"]["exec"] for u in yaml.safe_load(connection.kubeconfig.read_text())["users"])
        for item in plugin["env"]:
            monkeypatch.setenv(item["name"], item["value"])
        monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)
        cache = Path(plugin["args"][plugin["args"].index("--cache-file") + 1])
        kept = json.loads(cache.read_text())["status"]["token"]
        monkeypatch.setattr(get_token, "exec_credential", lambda *a, **k: pytest.fail("the plugin signed anew"))
        assert get_token.main(plugin["args"][2:]) == 0
        printed = json.loads(capsys.readouterr().out)["status"]["token"]
        assert printed == kept
        caller = sandbox.kubeapi.authenticators[0](printed)
        assert caller is not None
        assert caller.name.endswith(":user/eksid-runner")
        assert printed in sandbox.minted_secrets
    finally:
        sandbox.stop()
