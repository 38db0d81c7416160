"""Sandboxes for tests: one started in this process from profile data, or as ``python -m pytest_eksid.sandbox``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_eksid.kube import Kube, KubeTarget
from pytest_eksid.profile import LoadedProfile, load_profile
from pytest_eksid.sandbox.runtime import Connection, Sandbox
from tests.helpers import REPO
from tests.helpers.profiles import write_profile


@dataclass
class Running:
    loaded: LoadedProfile
    sandbox: Sandbox
    connection: Connection
    kube: Kube


def open_sandbox(data: dict[str, Any], tmp_path: Path, name: str = "variant") -> Running:
    """Start a sandbox for a profile given as data; the caller stops it with close_sandbox()."""
    loaded = load_profile(str(write_profile(tmp_path, data, name)), REPO)
    sandbox = Sandbox(loaded.profile)
    connection = sandbox.start()
    return Running(loaded, sandbox, connection, Kube(KubeTarget(str(connection.kubeconfig), None)))


def close_sandbox(running: Running) -> None:
    running.kube.close()
    running.sandbox.stop()


def start_standalone_sandbox(profile: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``python -m pytest_eksid.sandbox --profile PROFILE``, read until it is ready: (the process, what it
    exports). The caller stops it (SIGINT) and kills it in a ``finally``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_eksid.sandbox", "--profile", profile, "--rootdir", str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 60  # generous: it imports moto and starts every service on a busy machine
    try:
        while True:
            assert time.monotonic() < deadline, "the sandbox did not get ready in 60 s"
            line = proc.stdout.readline()
            assert line, "the sandbox exited early"
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                exports[key] = value
            if line.startswith("# Ctrl-C"):
                return proc, exports
    except BaseException:
        proc.kill()
        raise


def wait_pod_phase(
    core: Any, namespace: str, name: str, phases: tuple[str, ...] = ("Running",), timeout: float = 20.0
) -> Any:
    """Poll a pod through the kubernetes client until it is in one of ``phases``."""
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {namespace}/{name} not {phases} after {timeout}s: {pod.status if pod else None}")


def runner_client(env: Any, service: str, region: str = "eu-west-1") -> Any:
    """A boto3 client with the sandbox runner's credentials, from a connection's environment."""
    import boto3

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def sa_token(
    running: Any,
    namespace: str,
    service_account: str,
    *,
    audience: str = "sts.amazonaws.com",
    expiration: int = 3600,
    issuer: Any = None,
) -> str:
    """A projected service-account token as the sandbox's kubelet would write it (``running``: a Running)."""
    import uuid

    return str(
        (issuer or running.sandbox.issuer).service_account_token(
            namespace=namespace,
            service_account=service_account,
            sa_uid=str(uuid.uuid4()),
            pod_name=f"{service_account}-test",
            pod_uid=str(uuid.uuid4()),
            node_name=running.sandbox.nodes[0].name,
            audience=audience,
            expiration_seconds=expiration,
        )
    )
