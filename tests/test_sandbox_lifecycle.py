"""The sandbox cleans up after itself: no processes, no files, moto released."""

from __future__ import annotations

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
    core = _core(connection)
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
    while core.read_namespaced_pod("sleeper", "finance-demo").status.phase != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sb.kubelet is not None
    procs = [r.process for r in sb.kubelet._running.values()]
    assert len(procs) == 1
    sb.stop()
    assert all(p.poll() is not None for p in procs)
    assert not Path(sb.workdir).exists()


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
