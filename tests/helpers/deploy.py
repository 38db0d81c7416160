"""The nightly runner of ``deploy/`` as a pod of a sandbox: its RBAC, IAM policy, CronJob template and image.

Everything is read from ``deploy/`` as shipped: ``rbac.yaml`` is seeded unchanged (``sandbox.manifests``),
``runner-iam-policy.json`` is the runner role's only policy, and the pod is the CronJob's ``jobTemplate``
pod with the Dockerfile's ENTRYPOINT as its command (the sandbox's kubelet pulls no image: it runs the
command as a local process). Used by ``tests/test_deploy_in_cluster.py``.
"""

from __future__ import annotations

import copy
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.helpers import REPO

DEPLOY = REPO / "deploy"
NAMESPACE = "pytest-eksid"
SERVICE_ACCOUNT = "pytest-eksid-runner"
ROLE_NAME = "pytest-eksid-runner"  # the IAM role the runner's ServiceAccount is associated with
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"  # its Kubernetes username
IMAGE_ROOT = "/opt/pytest-eksid"  # the Dockerfile's WORKDIR, which its ENTRYPOINT names
PROFILE_CONFIGMAP = "eksid-profile"
# The trust EKS Pod Identity needs (EKS user guide, pod-id-role): the service principal, AssumeRole and
# TagSession, narrowed to the runner's ServiceAccount by the session tags EKS sets (pod-id-abac). Pod
# Identity rather than IRSA: no IAM OIDC provider and issuer-specific trust per cluster, and the binding
# is an association made through the EKS API, as an operator makes it. Without the conditions the runner's
# own suites flag the role (test_undeclared_identities: "any namespace, any ServiceAccount").
POD_IDENTITY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {
                "StringEquals": {
                    "aws:RequestTag/kubernetes-namespace": NAMESPACE,
                    "aws:RequestTag/kubernetes-service-account": SERVICE_ACCOUNT,
                }
            },
        }
    ],
}


def rbac_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d]


def cluster_role() -> dict[str, Any]:
    return next(d for d in rbac_documents() if d["kind"] == "ClusterRole")


def rbac_triples(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every rule of a ClusterRole."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def runner_policy() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "runner-iam-policy.json").read_text())
    return loaded


def policy_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def cronjob() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "cronjob.yaml").read_text())
    return loaded


def dockerfile_instruction(name: str) -> list[str]:
    """Every line of the Dockerfile's instruction ``name`` (without the keyword)."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    return [line.split(None, 1)[1] for line in lines if line.split(None, 1)[:1] == [name]]


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form), its WORKDIR replaced by this checkout."""
    (text,) = dockerfile_instruction("ENTRYPOINT")
    return [part.replace(IMAGE_ROOT, str(REPO)) for part in json.loads(text)]


def image_env() -> list[dict[str, str]]:
    """The image's ENV lines as container variables (``KEY=VALUE`` forms)."""
    env = []
    for text in dockerfile_instruction("ENV"):
        for pair in text.split():
            key, _, value = pair.partition("=")
            env.append({"name": key, "value": value})
    return env


def live_profile(demo: dict[str, Any]) -> dict[str, Any]:
    """The profile the runner checks: the sandbox cluster as a live cluster (no ``sandbox:`` section), with
    the runner's own identity knowingly undeclared (it is no workload)."""
    profile = {k: copy.deepcopy(v) for k, v in demo.items() if k != "sandbox"}
    profile["ignore"] = [
        {
            # By role: it matches the association and the role's trust (an iam-trust identity names no
            # ServiceAccount), both the runner's own.
            "role": ROLE_NAME,
            "reason": "the pytest-eksid runner itself (deploy/): read-only, checked by tests/test_deploy_in_cluster.py",
        }
    ]
    return profile


def runner_sandbox(demo: dict[str, Any]) -> dict[str, Any]:
    """The demo sandbox plus the runner: deploy/rbac.yaml unchanged, the profile ConfigMap, and an IAM role
    with exactly deploy/runner-iam-policy.json (bound to the ServiceAccount after start, through EKS)."""
    data = copy.deepcopy(demo)
    sandbox = data["sandbox"]
    sandbox["roles"].append({"name": ROLE_NAME, "policy": runner_policy(), "trustPolicy": POD_IDENTITY_TRUST})
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROFILE_CONFIGMAP, "namespace": NAMESPACE},
        "data": {"cluster.yaml": yaml.safe_dump(live_profile(demo), sort_keys=False)},
    }
    sandbox["manifests"] = [*rbac_documents(), configmap]
    return data


def runner_pod(name: str, extra_args: list[str]) -> dict[str, Any]:
    """The CronJob's jobTemplate pod, as its Job would create it, runnable by the sandbox's kubelet.

    Kept from the template: labels, serviceAccountName, restartPolicy, securityContext (pod and
    container), args, resources, volumeMounts and the profile and tmp volumes. Changed: the image
    (a name the kubelet accepts: ``<registry>/`` is a placeholder), the command (the Dockerfile's
    ENTRYPOINT, which an image would supply, plus its ENV), the results PersistentVolumeClaim (an
    emptyDir: the sandbox serves no PVCs) and ``extra_args`` appended."""
    template = copy.deepcopy(cronjob()["spec"]["jobTemplate"]["spec"]["template"])
    spec = template["spec"]
    (container,) = spec["containers"]
    container["image"] = container["image"].split("/", 1)[1]
    container["command"] = entrypoint()
    container["args"] = [*container["args"], *extra_args]
    container["env"] = [*image_env(), *(container.get("env") or [])]
    for volume in spec["volumes"]:
        if "persistentVolumeClaim" in volume:
            del volume["persistentVolumeClaim"]
            volume["emptyDir"] = {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


@dataclass
class RunnerRun:
    phase: str
    log: str
    outcomes: dict[str, str]  # JUnit "classname::name" -> passed/failed/error/skipped
    messages: dict[str, str]  # the same keys -> failure/error message and text
    results: list[str]  # the files the run left on its results volume
    report: str  # its JUnit XML and inventory, as text (for leak checks)

    def failed(self) -> list[str]:
        return sorted(k for k, v in self.outcomes.items() if v in ("failed", "error"))


def run_runner_pod(running: Any, name: str, extra_args: list[str], timeout: float = 900) -> RunnerRun:
    """Create the runner pod through the API as the admin, wait until it ends, read its log and its results
    volume, then delete it. ``running``: a tests.helpers.sandboxes.Running."""
    core = client.CoreV1Api(running.kube.api_client)
    pod = core.create_namespaced_pod(NAMESPACE, runner_pod(name, extra_args))
    results = running.sandbox.workdir / "pods" / pod.metadata.uid / "volumes" / "results"
    try:
        deadline = time.monotonic() + timeout
        while True:
            pod = core.read_namespaced_pod(name, NAMESPACE)
            if pod.status.phase in ("Succeeded", "Failed"):
                break
            waiting = [s.state.waiting for s in pod.status.container_statuses or [] if s.state.waiting]
            if waiting and waiting[0].reason not in ("ContainerCreating",):
                raise AssertionError(f"the runner pod cannot start: {waiting[0].reason}: {waiting[0].message}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the runner pod did not finish in {timeout}s: {pod.status.phase}")
            time.sleep(0.5)  # polling the pod's phase, as `kubectl wait` does
        log = core.read_namespaced_pod_log(name, NAMESPACE)
        outcomes, messages = _junit(results / "junit.xml")
        files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
        report = "".join(
            (results / f).read_text(errors="replace") for f in ("junit.xml", "inventory.json") if (results / f).exists()
        )
        return RunnerRun(str(pod.status.phase), log, outcomes, messages, files, report)
    finally:
        core.delete_namespaced_pod(name, NAMESPACE)


def _junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    if not path.exists():
        return outcomes, messages
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name')}"
        outcome = "passed"
        for tag, label in (("skipped", "skipped"), ("failure", "failed"), ("error", "error")):
            found = case.find(tag)
            if found is not None:
                outcome = label
                messages[key] = f"{found.get('message', '')}\n{found.text or ''}"
        outcomes[key] = outcome
    return outcomes, messages
