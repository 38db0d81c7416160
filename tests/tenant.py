"""The tenant: someone who may create and delete pods in a workload's namespace swaps the probe pod for one
of the same name, labels, ServiceAccount and image whose log prints a forged, passing result.

Used by tests/test_probe_auth.py directly, and as a plugin (``-p tests.tenant``) in a suite run: with
``TENANT_SWAP_WORKLOAD`` set, each of that workload's probe pods is swapped just before the runner
reads its log, after the runner saw it succeed (the latest moment, the hardest to notice).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pytest_eksid.kube import Kube
from pytest_eksid.probe import program
from pytest_eksid.probe.pod import WORKLOAD_LABEL

FORGED = {
    "identity": {
        "method": "container-role",
        "caller": {"arn": "arn:aws:sts::111122223333:assumed-role/demo-invoice-exporter/forged"},
    },
    "actions": [],
}


def swap(tenant: Kube, namespace: str, name: str, wait_done: bool) -> str:
    """Replace the pod; with ``wait_done``, until the forged pod has printed its line. Its new UID."""
    original = tenant.read_pod(namespace, name)
    tenant.delete_pod(namespace, name)
    container = original["spec"]["containers"][0]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": original["metadata"]["labels"]},
        "spec": {
            "serviceAccountName": original["spec"]["serviceAccountName"],
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "command": ["python3", "-c", f"print({program.RESULT_MARKER + json.dumps(FORGED)!r})"],
                }
            ],
        },
    }
    created = tenant.create_pod(namespace, pod)
    deadline = time.monotonic() + 30
    while wait_done and (tenant.read_pod(namespace, name).get("status") or {}).get("phase") != "Succeeded":
        if time.monotonic() > deadline:
            raise AssertionError(f"the forged pod {namespace}/{name} did not finish within 30s")
        time.sleep(0.05)  # polling a condition, with a deadline
    return str(created["metadata"]["uid"])


def pytest_configure(config: Any) -> None:
    workload = os.environ.get("TENANT_SWAP_WORKLOAD")
    if not workload:
        return
    real_log = Kube.pod_log

    def swap_then_log(self: Kube, namespace: str, name: str, tail_lines: int | None = None) -> str:
        labels = (self.read_pod(namespace, name).get("metadata") or {}).get("labels") or {}
        if labels.get(WORKLOAD_LABEL) == workload:
            tenant = Kube(self.target)
            try:
                swap(tenant, namespace, name, wait_done=True)
            finally:
                tenant.close()
        return real_log(self, namespace, name, tail_lines)

    Kube.pod_log = swap_then_log  # type: ignore[method-assign]  # the tenant's doing, for this process only
