"""The EKS pod identity webhook, applied to pods at admission (its IRSA and Pod Identity modes).

One Modifier does both in upstream [aws/amazon-eks-pod-identity-webhook@3bf80a34
pkg/handler/handler.go:440-508]; the sandbox can switch each mode off (``failurePolicy: Ignore``
in EKS: when the webhook is off, pods are admitted bare, silently).

- Pod Identity ("container credentials", takes precedence): a pod whose (namespace,
  ServiceAccount) has an association *at creation time* gets ``AWS_CONTAINER_CREDENTIALS_FULL_URI``,
  ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` and the ``eks-pod-identity-token`` volume.
- IRSA: a pod whose ServiceAccount, as the webhook's informer cache holds it, carries
  ``eks.amazonaws.com/role-arn`` gets ``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE`` and the
  ``aws-iam-token`` volume.

Every container and initContainer not named in ``skip-containers`` gets, group by group, what it
does not set already: ``AWS_STS_REGIONAL_ENDPOINTS``, the region pair, the mode's credential pair
[aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:172-285, 325-345].
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
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
REGIONAL_STS = "AWS_STS_REGIONAL_ENDPOINTS"
# The default lifetime, the floor of its jitter, the kube-apiserver minimum
# [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/constants.go:17-25].
DEFAULT_TOKEN_EXPIRATION = 86400
DEFAULT_MIN_TOKEN_EXPIRATION = 79200
MIN_TOKEN_EXPIRATION = 600


@dataclass
class WebhookConfig:
    """The webhook's flags, as far as the sandbox models them
    [aws/amazon-eks-pod-identity-webhook@3bf80a34 main.go:78-97]."""

    region: str | None  # --aws-default-region
    agent_uri: str = PI_AGENT_URI  # --container-credentials-full-uri
    irsa_enabled: bool = True
    pod_identity_enabled: bool = True
    # --sts-regional-endpoint (upstream default false; what the EKS-managed webhook sets is guessed).
    regional_sts: bool = False
    # --token-expiration (default 86400, raised to at least 600)
    # [aws/amazon-eks-pod-identity-webhook@3bf80a34 main.go:81,150].
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION
    # --service-account-lookup-grace-period (default 0: a ServiceAccount missing from the informer
    # cache means no mutation; above 0 the webhook asks the API server)
    # [aws/amazon-eks-pod-identity-webhook@3bf80a34 main.go:97]
    # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:463-486].
    sa_lookup_grace_seconds: float = 0.0
    # The jitter's random source; upstream's is math/rand seeded with the time
    # [aws/amazon-eks-pod-identity-webhook@3bf80a34 main.go:54].
    # Tests inject one.
    random: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True)
class CacheEntry:
    """A ServiceAccount as the webhook's cache parses it
    [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:215-259]."""

    role_arn: str
    audience: str
    regional_sts: bool
    token_expiration: int


class ServiceAccountCache:
    """The webhook's informer cache of ServiceAccounts
    [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:115-177,333-360].

    The sandbox reads the store, except for the ServiceAccounts whose informer event has not been
    delivered yet (:meth:`lag`, the ``webhook-cache-miss`` fault): for those the cache misses until
    :meth:`catch_up`.
    """

    def __init__(self, store: Store, config: WebhookConfig) -> None:
        self.store = store
        self.config = config
        self._lock = threading.Lock()
        self._lagging: set[tuple[str, str]] = set()

    def lag(self, namespace: str, name: str) -> None:
        """The informer has not delivered this ServiceAccount's ADDED event yet."""
        with self._lock:
            self._lagging.add((namespace, name))

    def catch_up(self) -> None:
        """The informer delivers every pending event."""
        with self._lock:
            self._lagging.clear()

    def get(self, namespace: str, name: str) -> CacheEntry | None:
        """The cached entry; None on a miss."""
        with self._lock:
            if (namespace, name) in self._lagging:
                return None
        return self.fetch(namespace, name)

    def fetch(self, namespace: str, name: str) -> CacheEntry | None:
        """The ServiceAccount read from the API server: the grace period's path
        [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:382-400]."""
        sa = self.store.find("serviceaccounts", namespace, name)
        return None if sa is None else self._entry(sa)

    def _entry(self, sa: Obj) -> CacheEntry:
        annotations = sa["metadata"].get("annotations") or {}
        regional = _parse_bool(annotations.get(IRSA_REGIONAL_STS_ANNOTATION, ""))
        expiration = _parse_int(annotations.get(IRSA_EXPIRATION_ANNOTATION, ""))
        return CacheEntry(
            role_arn=annotations.get(IRSA_ROLE_ANNOTATION, ""),
            audience=annotations.get(IRSA_AUDIENCE_ANNOTATION, "sts.amazonaws.com"),
            # An unparseable value keeps the flag's
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:238-246].
            regional_sts=self.config.regional_sts if regional is None else regional,
            token_expiration=(
                max(MIN_TOKEN_EXPIRATION, self.config.token_expiration)
                if expiration is None
                else max(MIN_TOKEN_EXPIRATION, expiration)
            ),
        )


@dataclass(frozen=True)
class PatchConfig:
    """What one pod gets [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:127-137]."""

    credential: tuple[str, str]  # the mode's credential variable and its value
    token_file_variable: str  # the variable that names the token file (mount path + token path)
    skip: frozenset[str]
    expiration: int
    regional_sts: bool
    audience: str
    mount_path: str
    volume: str
    token_path: str


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
        self.cache = ServiceAccountCache(store, config)

    def install(self) -> None:
        self.store.mutators.append(self.mutate)

    def mutate(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if IRSA_SKIP_LABEL in (meta.get("labels") or {}):
            # The webhook's objectSelector excludes the pod
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 deploy/mutatingwebhook.yaml:15-19].
            return
        patch = self._patch_config(pod)
        if patch is None:
            return
        spec = pod["spec"]
        token_file = f"{patch.mount_path}/{patch.token_path}"
        selector = spec.get("nodeSelector") or {}
        if "windows" in (selector.get("kubernetes.io/os"), selector.get("beta.kubernetes.io/os")):
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:314-321]
            token_file = "C:" + token_file.replace("/", "\\")
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            if c.get("name") not in patch.skip:
                self._container(c, patch, token_file)
        volumes = spec.setdefault("volumes", [])
        if not any(v.get("name") == patch.volume for v in volumes):
            # Added first, as the patch's /spec/volumes/0 does
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:386-412].
            volumes.insert(0, _projected_token(patch.volume, patch.audience, patch.token_path, patch.expiration))
        if patch.volume == "eks-pod-identity-token":
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:366-384]
            meta.setdefault("labels", {})["eks.amazonaws.com/pod-identity"] = "enabled"

    def _patch_config(self, pod: Obj) -> PatchConfig | None:
        """buildPodPatchConfig: container credentials first, then IRSA
        [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:440-508]."""
        namespace, sa = pod["metadata"]["namespace"], pod["spec"]["serviceAccountName"]
        if self.config.pod_identity_enabled and self.eks.find_association(namespace, sa) is not None:
            # GetCommonConfigurations: the cached SA's settings, else false / 86400
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:156-166].
            entry = self.cache.get(namespace, sa)
            regional, expiration = (
                (entry.regional_sts, entry.token_expiration) if entry else (False, DEFAULT_TOKEN_EXPIRATION)
            )
            expiration = self._jitter(_pod_expiration(pod, expiration))
            return PatchConfig(
                credential=("AWS_CONTAINER_CREDENTIALS_FULL_URI", self.config.agent_uri),
                token_file_variable="AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                skip=_skip_containers(pod),
                expiration=expiration,
                regional_sts=regional,
                audience=PI_AUDIENCE,
                mount_path=PI_TOKEN_DIR,
                volume="eks-pod-identity-token",
                token_path="eks-pod-identity-token",
            )
        if not self.config.irsa_enabled:
            return None
        entry = self.cache.get(namespace, sa)
        if entry is None and self.config.sa_lookup_grace_seconds > 0:
            # The miss asks the API server, and the answer comes within the grace period (the sandbox's
            # API answers at once; upstream's 10/s rate limit is not modelled)
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/cache/cache.go:312-331].
            entry = self.cache.fetch(namespace, sa)
        if entry is None or not entry.role_arn:
            # A cache miss with grace period 0 is not mutated
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:467-469,506-507].
            return None
        return PatchConfig(
            credential=("AWS_ROLE_ARN", entry.role_arn),
            token_file_variable="AWS_WEB_IDENTITY_TOKEN_FILE",
            skip=_skip_containers(pod),
            expiration=_pod_expiration(pod, entry.token_expiration),  # no jitter in IRSA mode
            regional_sts=entry.regional_sts,
            audience=entry.audience,
            mount_path=IRSA_TOKEN_DIR,
            volume="aws-iam-token",
            token_path="token",
        )

    def _jitter(self, expiration: int) -> int:
        """addJitterToDefaultToken: exactly 86400 becomes uniform in 79200..86400
        [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:510-517]."""
        if expiration != DEFAULT_TOKEN_EXPIRATION:
            return expiration
        span = DEFAULT_TOKEN_EXPIRATION - DEFAULT_MIN_TOKEN_EXPIRATION + 1
        return self.config.random.randrange(span) + DEFAULT_MIN_TOKEN_EXPIRATION  # Int63n(span): [0, span)

    def _container(self, container: Obj, patch: PatchConfig, token_file: str) -> None:
        """addEnvToContainer: each group skipped only where the container sets one of it
        [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:172-285]."""
        env = container.setdefault("env", [])
        names = {e.get("name") for e in env}
        creds_set = bool(names & {patch.credential[0], patch.token_file_variable})
        region_set = bool(names & {"AWS_REGION", "AWS_DEFAULT_REGION"})
        sts_set = REGIONAL_STS in names
        if creds_set and region_set and sts_set:
            # Everything present: not even the volume mount is added
            # [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:212-217].
            return
        if not sts_set and patch.regional_sts:
            env.append({"name": REGIONAL_STS, "value": "regional"})
        if not region_set and self.config.region:
            env.append({"name": "AWS_DEFAULT_REGION", "value": self.config.region})
            env.append({"name": "AWS_REGION", "value": self.config.region})
        if not creds_set:
            env.append({"name": patch.credential[0], "value": patch.credential[1]})
            env.append({"name": patch.token_file_variable, "value": token_file})
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("name") == patch.volume for m in mounts):
            mounts.append({"name": patch.volume, "mountPath": patch.mount_path, "readOnly": True})


def _skip_containers(pod: Obj) -> frozenset[str]:
    """The containers and initContainers to leave alone: the annotation's first CSV record, names
    kept verbatim; none where Go's CSV reader errs [aws/amazon-eks-pod-identity-webhook@3bf80a34
    pkg/handler/handler.go:153-170]."""
    raw = (pod["metadata"].get("annotations") or {}).get(IRSA_SKIP_CONTAINERS_ANNOTATION)
    record = go_csv_first_record(raw) if raw is not None else None
    return frozenset(record or ())


def go_csv_first_record(text: str) -> list[str] | None:
    """``csv.NewReader(strings.NewReader(text)).Read()`` with Go's defaults (comma ``,``, no
    LazyQuotes, no TrimLeadingSpace): empty lines skipped, quoted fields with ``""`` and line
    breaks, and None where Go returns an error (EOF, a bare or stray quote)."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0] in ("\n", "\r\n"):
        lines.pop(0)
    if not lines:
        return None  # io.EOF
    rest, fields = "".join(lines), []
    while True:
        if not rest.startswith('"'):
            end = min((i for i in (rest.find(","), rest.find("\n")) if i >= 0), default=len(rest))
            field = rest[:end].removesuffix("\r") if rest[end : end + 1] == "\n" else rest[:end]
            if '"' in field:
                return None  # ErrBareQuote
            fields.append(field)
            if rest[end : end + 1] != ",":
                return fields
            rest = rest[end + 1 :]
            continue
        i, field = 1, ""
        while True:
            close = rest.find('"', i)
            if close < 0:
                return None  # ErrQuote: no closing quote before the end
            field += rest[i:close]
            after = rest[close + 1 : close + 2]
            if after == '"':
                field, i = field + '"', close + 2
                continue
            tail = rest[close + 1 :]
            if after == ",":
                fields.append(field)
                rest = tail[1:]
                break
            if tail == "" or tail.startswith(("\n", "\r\n")):
                fields.append(field)
                return fields
            return None  # ErrQuote: extraneous text after the closing quote


def _pod_expiration(pod: Obj, default: int) -> int:
    """The pod's token-expiration annotation over ``default``; unparseable keeps it
    [aws/amazon-eks-pod-identity-webhook@3bf80a34 pkg/handler/handler.go:292-303]."""
    value = _parse_int((pod["metadata"].get("annotations") or {}).get(IRSA_EXPIRATION_ANNOTATION, ""))
    return default if value is None else max(MIN_TOKEN_EXPIRATION, value)


def _parse_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 10, 64): an optional sign and decimal digits."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)


def _parse_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool; None where it errs."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None
