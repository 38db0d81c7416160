"""The two EKS mutating webhooks, applied to pods at admission.

- IRSA (amazon-eks-pod-identity-webhook): a pod whose ServiceAccount carries
  ``eks.amazonaws.com/role-arn`` gets ``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE`` and the
  ``aws-iam-token`` projected volume.
- EKS Pod Identity: a pod whose (namespace, ServiceAccount) has an association *at creation
  time* gets ``AWS_CONTAINER_CREDENTIALS_FULL_URI``, ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``
  and the ``eks-pod-identity-token`` volume.

Both leave a container's variables alone where it already sets one of the group, as upstream
does. Both are ``failurePolicy: Ignore`` in EKS: when they are off, pods are admitted bare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_eksid.sandbox.eks import EksControlPlane
from pytest_eksid.sandbox.kubeapi.store import Store

Obj = dict[str, Any]

IRSA_ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
IRSA_AUDIENCE_ANNOTATION = "eks.amazonaws.com/audience"
IRSA_REGIONAL_STS_ANNOTATION = "eks.amazonaws.com/sts-regional-endpoints"
IRSA_EXPIRATION_ANNOTATION = "eks.amazonaws.com/token-expiration"
IRSA_SKIP_CONTAINERS_ANNOTATION = "eks.amazonaws.com/skip-containers"
IRSA_SKIP_LABEL = "eks.amazonaws.com/skip-pod-identity-webhook"
IRSA_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
PI_TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
PI_AUDIENCE = "pods.eks.amazonaws.com"
PI_AGENT_URI = "http://169.254.170.23/v1/credentials"
# Where pods reach the node's agent: IPv4 and (unconfirmed exact URI) IPv6 clusters.
AGENT_ADDRESSES = ("http://169.254.170.23", "http://[fd00:ec2::23]")


@dataclass
class WebhookConfig:
    region: str | None
    agent_uri: str = PI_AGENT_URI
    irsa_enabled: bool = True
    pod_identity_enabled: bool = True


def _set_env_group(container: Obj, group: dict[str, str]) -> None:
    env = container.setdefault("env", [])
    names = {e.get("name") for e in env}
    if names & set(group):
        return
    env.extend({"name": k, "value": v} for k, v in group.items())


def _add_volume(pod: Obj, volume: Obj, mount_path: str, containers: list[Obj]) -> None:
    spec = pod["spec"]
    if any(v.get("name") == volume["name"] for v in spec.setdefault("volumes", [])):
        return
    spec["volumes"].append(volume)
    for c in containers:
        c.setdefault("volumeMounts", []).append({"name": volume["name"], "mountPath": mount_path, "readOnly": True})


def _projected_token(name: str, audience: str, path: str, expiration: int) -> Obj:
    return {
        "name": name,
        "projected": {
            "sources": [{"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration, "path": path}}]
        },
    }


class Webhooks:
    def __init__(self, store: Store, eks: EksControlPlane, config: WebhookConfig) -> None:
        self.store = store
        self.eks = eks
        self.config = config

    def install(self) -> None:
        self.store.mutators.append(self.mutate)

    def mutate(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if IRSA_SKIP_LABEL in (meta.get("labels") or {}):
            return  # the webhook's objectSelector excludes the pod
        sa = self.store.find("serviceaccounts", meta["namespace"], pod["spec"]["serviceAccountName"])
        if sa is None:
            return
        # Container credentials take precedence: with an association, the IRSA variables are not
        # injected even when the ServiceAccount is also annotated (as upstream does).
        if self.config.pod_identity_enabled and self._pod_identity(pod, sa):
            return
        if self.config.irsa_enabled:
            self._irsa(pod, sa)

    def _containers(self, pod: Obj) -> list[Obj]:
        """The containers to inject: all but those named in skip-containers (CSV, kept verbatim)."""
        raw = (pod["metadata"].get("annotations") or {}).get(IRSA_SKIP_CONTAINERS_ANNOTATION, "")
        skip = set(raw.split(",")) if raw else set()
        return [c for c in pod["spec"]["containers"] if c.get("name") not in skip]

    def _expiration(self, pod: Obj, sa: Obj, default: int) -> int:
        sa_value = (sa["metadata"].get("annotations") or {}).get(IRSA_EXPIRATION_ANNOTATION)
        pod_value = (pod["metadata"].get("annotations") or {}).get(IRSA_EXPIRATION_ANNOTATION)
        for raw in (pod_value, sa_value):  # an unparseable pod value falls back to the SA's
            try:
                return max(600, int(str(raw)))
            except ValueError:
                continue
        return default

    def _region(self, containers: list[Obj]) -> None:
        if self.config.region:
            for c in containers:
                _set_env_group(c, {"AWS_DEFAULT_REGION": self.config.region, "AWS_REGION": self.config.region})

    def _irsa(self, pod: Obj, sa: Obj) -> None:
        annotations = sa["metadata"].get("annotations") or {}
        role = annotations.get(IRSA_ROLE_ANNOTATION)
        if not role:
            return
        audience = annotations.get(IRSA_AUDIENCE_ANNOTATION, "sts.amazonaws.com")
        expiration = self._expiration(pod, sa, 86400)
        group = {"AWS_ROLE_ARN": role, "AWS_WEB_IDENTITY_TOKEN_FILE": f"{IRSA_TOKEN_DIR}/token"}
        if _parse_bool(annotations.get(IRSA_REGIONAL_STS_ANNOTATION, "")):
            group["AWS_STS_REGIONAL_ENDPOINTS"] = "regional"
        containers = self._containers(pod)
        for c in containers:
            _set_env_group(c, group)
        self._region(containers)
        _add_volume(pod, _projected_token("aws-iam-token", audience, "token", expiration), IRSA_TOKEN_DIR, containers)

    def _pod_identity(self, pod: Obj, sa: Obj) -> bool:
        """Inject container credentials when an association exists now; whether it did."""
        meta = pod["metadata"]
        if self.eks.find_association(meta["namespace"], pod["spec"]["serviceAccountName"]) is None:
            return False
        group = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.config.agent_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": f"{PI_TOKEN_DIR}/eks-pod-identity-token",
        }
        containers = self._containers(pod)
        for c in containers:
            _set_env_group(c, group)
        self._region(containers)
        expiration = self._expiration(pod, sa, 86400)
        _add_volume(
            pod,
            _projected_token("eks-pod-identity-token", PI_AUDIENCE, "eks-pod-identity-token", expiration),
            PI_TOKEN_DIR,
            containers,
        )
        meta.setdefault("labels", {})["eks.amazonaws.com/pod-identity"] = "enabled"
        return True


def _parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, for the true values."""
    return text in ("1", "t", "T", "TRUE", "true", "True")
