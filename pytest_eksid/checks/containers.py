"""What the workload's own running containers have: its identity injected, no static keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pytest_eksid.checks import Finding, command_name
from pytest_eksid.profile import Profile, Workload

STATIC = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The variables either webhook injects: a container with one of them has an identity of some kind.
IDENTITY_VARIABLES = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI")

# Pod annotation (CSV of container names) read by the IRSA webhook, in both of its modes: the named
# containers and initContainers are deliberately left without identity (EKS_FACTS.md, IRSA;
# amazon-eks-pod-identity-webhook handler.go getContainersToSkip and
# testdata/containercredentials/rawPodSkip.pod.yaml).
SKIP_CONTAINERS_ANNOTATION = "eks.amazonaws.com/skip-containers"
# A tenant writes the annotation: read at most this much of it, and at most this many names.
_SKIP_MAX_CHARS = 4096
_SKIP_MAX_NAMES = 64
# A container name is a DNS-1123 label: anything else names no container (and is never echoed).
_CONTAINER_NAME_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def skipped_containers(annotations: Mapping[str, Any] | None) -> frozenset[str]:
    """The container names a pod's ``eks.amazonaws.com/skip-containers`` annotation names.

    Hostile input, parsed defensively: only the first 4096 characters and 64 names are read;
    entries are trimmed of blanks and of CSV double quotes, empty ones are ignored, and an entry
    that cannot be a container name (not a DNS-1123 label) is dropped. The webhook itself compares
    entries verbatim, so with ``"a, b"`` it still injects ``b``; :func:`skip_note` says so when a
    container named here has identity variables after all.
    """
    raw = (annotations or {}).get(SKIP_CONTAINERS_ANNOTATION)
    if not isinstance(raw, str):
        return frozenset()
    names: set[str] = set()
    for entry in raw[:_SKIP_MAX_CHARS].split(","):
        name = entry.strip().strip('"').strip()
        if name and _CONTAINER_NAME_RE.fullmatch(name):
            names.add(name)
            if len(names) >= _SKIP_MAX_NAMES:
                break
    return frozenset(names)


def skip_note(w: Workload, pod: str, container: str, variables: set[str]) -> str:
    """What the report says of a container the pod's skip-containers annotation names."""
    where = f"{w.name}: container {container} of running pod {w.namespace}/{pod}"
    note = (
        f"{where}: skipped by design ({SKIP_CONTAINERS_ANNOTATION}): the webhook leaves it without identity; "
        "its identity is not checked, its static keys are"
    )
    present = [v for v in IDENTITY_VARIABLES if v in variables]
    if present:
        note += (
            f"; it has {', '.join(present)} all the same: set by the container itself, or the webhook did not "
            "match the name (it compares the CSV entries verbatim, so a blank after a comma defeats the skip)"
        )
    return note


def container_findings(
    profile: Profile,
    w: Workload,
    pod: str,
    container: str,
    variables: set[str],
    values: dict[str, str],
    files: dict[str, bool],
    service_account: str | None = None,
    *,
    skipped: bool = False,
) -> list[Finding]:
    """``service_account``: the one the pod runs as (its spec), when known.

    ``skipped``: the pod's skip-containers annotation names this container (:func:`skipped_containers`).
    The webhook deliberately gives it no identity, so only its static keys are checked; nothing
    says "not injected, restart the pods" for it (the caller reports :func:`skip_note` instead).
    """
    where = f"{w.name}: container {container} of running pod {w.namespace}/{pod}"
    restart = f"kubectl -n {w.namespace} rollout restart deployment/{w.name}"
    # Cluster-sourced names go into the commands only where they are names (pytest_eksid/escape.py).
    cmd_pod, cmd_container = command_name(pod, "<pod>"), command_name(container, "<container>")
    out: list[Finding] = []
    not_injected: str | None = None
    if service_account is not None and service_account != w.service_account:
        # Not a timing problem: restarting changes nothing, the pod template names another ServiceAccount.
        not_injected = (
            f"the pod runs as ServiceAccount {service_account!r}, not {w.service_account!r}, which is the one bound: "
            f"set serviceAccountName: {w.service_account} in the pod template"
        )
        if service_account == "default":
            not_injected = f"Failure Mode 1 — Pod Uses default ServiceAccount: {not_injected}"
        restart = f"kubectl -n {w.namespace} get pod {cmd_pod} -o jsonpath='{{.spec.serviceAccountName}}'"
    static = [v for v in STATIC if v in variables]
    if static:
        out.append(
            Finding(
                "static_credentials",
                f"{where}: static AWS keys in the environment",
                "no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN "
                "(the SDK would use them before workload identity)",
                ", ".join(static) + " set",
                "static keys in the container's environment win over workload identity (Failure Mode 4)",
                (f"kubectl -n {w.namespace} get pod {cmd_pod} -o jsonpath='{{.spec.containers[*].env[*].name}}'",),
            )
        )
    if files.get("aws_credentials_file"):
        out.append(
            Finding(
                "static_credentials",
                f"{where}: ~/.aws/credentials exists",
                "no shared credentials file in the container",
                "present",
                "a credentials file in the image or a mounted Secret wins over workload identity",
                (f"kubectl -n {w.namespace} exec {cmd_pod} -c {cmd_container} -- ls -l ~/.aws",),
            )
        )
    if skipped:
        return out
    if w.mechanism == "pod-identity":
        if "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in variables:
            out.append(
                Finding(
                    "identity",
                    f"{where}: no Pod Identity credentials injected",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "not set",
                    not_injected
                    or "association created after the pod started (Failure Mode 7), or the webhook did not run: "
                    "the pod has no identity until it is restarted",
                    (restart,),
                )
            )
        elif not files.get("pod_identity_token_readable"):
            out.append(
                Finding(
                    "identity",
                    f"{where}: the Pod Identity token file is not readable",
                    "a readable eks-pod-identity-token",
                    "missing or unreadable",
                    "the container's user cannot read the projected token (fsGroup / runAsUser)",
                    (f"kubectl -n {w.namespace} get pod {cmd_pod} -o yaml",),
                )
            )
    else:
        role = values.get("AWS_ROLE_ARN")
        if role != w.role_arn:
            out.append(
                Finding(
                    "identity",
                    f"{where}: IRSA not injected as expected",
                    f"AWS_ROLE_ARN={w.role_arn}",
                    f"AWS_ROLE_ARN={role}" if role else "AWS_ROLE_ARN not set",
                    not_injected
                    or "the annotation changed after the pod started, or the webhook did not run: restart the pods",
                    (restart,),
                )
            )
        elif not files.get("web_identity_token_readable"):
            out.append(
                Finding(
                    "identity",
                    f"{where}: the web identity token file is not readable",
                    "a readable token at AWS_WEB_IDENTITY_TOKEN_FILE",
                    "missing or unreadable",
                    "the container's user cannot read the projected token (fsGroup / runAsUser)",
                    (f"kubectl -n {w.namespace} get pod {cmd_pod} -o yaml",),
                )
            )
    return out
