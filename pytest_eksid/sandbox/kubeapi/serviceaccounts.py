"""In-cluster access: the ServiceAccount admission plugin's token volume, TokenRequest, the root CA.

What kube-apiserver and its controllers give a pod so that it can call the API server:

- the ServiceAccount admission plugin (run before the mutating webhooks: kube-apiserver's
  ``AllOrderedPlugins`` lists ``ServiceAccount`` ahead of ``MutatingAdmissionWebhook``
  [kubernetes/kubernetes pkg/kubeapiserver/options/plugins.go]) adds the ``kube-api-access-<5>``
  projected volume (a service-account token for the API server's audience, ``kube-root-ca.crt``'s
  ``ca.crt``, the namespace) and mounts it read-only at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` in every initContainer and container that
  does not mount that path already, when automount is on (the pod's
  ``automountServiceAccountToken`` over the ServiceAccount's, default true)
  [kubernetes/kubernetes plugin/pkg/admission/serviceaccount/admission.go: shouldAutomount,
  mountServiceAccountToken, TokenVolumeSource];
- ``serviceaccounts/<name>/token`` (``authentication.k8s.io/v1`` TokenRequest): audiences default
  to the API server's, ``expirationSeconds`` default 3600, at least 600 and at most 2^32; bound to
  a Pod (which must run as that ServiceAccount; its node goes into the claims) or a Secret; a
  pod-bound request for exactly 3607 s of the API audience is extended (EKS: 90 days) with
  ``warnafter`` at the requested time, while the answer still says the requested expiry
  [kubernetes/kubernetes pkg/registry/core/serviceaccount/storage/token.go: Create;
  pkg/apis/authentication/validation ValidateTokenRequest];
- the root CA publisher: a ConfigMap ``kube-root-ca.crt`` with ``ca.crt`` in every namespace;
- the ``kubernetes`` Service in ``default``: the address the kubelet gives every container as
  ``KUBERNETES_SERVICE_HOST``/``PORT`` (here the API server's loopback address and port).

The signing is the sandbox's (``Store.token_minter``), so this package still knows nothing of AWS.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request
from pytest_eksid.sandbox.kubeapi.resources import Obj
from pytest_eksid.sandbox.tokens import API_AUDIENCE, EXTENDED_EXPIRATION_SECONDS, WARN_ONLY_EXPIRATION_SECONDS

API_ACCESS_PREFIX = "kube-api-access-"
API_ACCESS_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DEFAULT_TOKEN_EXPIRATION = 3600  # TokenRequestSpec.expirationSeconds' default (authentication/v1 defaults)
MIN_TOKEN_EXPIRATION = 600
MAX_TOKEN_EXPIRATION = 1 << 32
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # names.SimpleNameGenerator's alphabet
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class TokenPolicy:
    """The API server's service-account token settings (kube-apiserver flags; EKS sets them, and
    documents only the extension). ``max_expiration`` 0: no cap (EKS's is not published: guessed)."""

    api_audiences: tuple[str, ...] = (API_AUDIENCE,)  # --api-audiences
    max_expiration: int = 0  # --service-account-max-token-expiration
    extended_expiration: int = EXTENDED_EXPIRATION_SECONDS  # --service-account-extend-token-expiration's length


@dataclass(frozen=True)
class KubernetesService:
    """The ``kubernetes`` Service of ``default`` as in-cluster clients find it, and the cluster's CA."""

    host: str
    port: int
    ca_pem: bytes


class TokenLookup(Protocol):
    """Reads an object or raises the API's 404 (``Store.get``)."""

    def __call__(self, resource: str, namespace: str, name: str) -> Obj: ...


class TokenMinter(Protocol):
    """Signs a service-account token (the sandbox's issuer)."""

    def __call__(
        self,
        *,
        namespace: str,
        service_account: str,
        sa_uid: str,
        audiences: list[str],
        expiration_seconds: int,
        pod: tuple[str, str] | None,
        node_name: str,
        secret: tuple[str, str] | None,
        warn_after_seconds: int,
        now: int,
    ) -> str: ...


def should_automount(sa: Obj, pod: Obj) -> bool:
    """The pod's ``automountServiceAccountToken`` wins, then the ServiceAccount's, else true."""
    for preference in (pod.get("spec", {}).get("automountServiceAccountToken"), sa.get("automountServiceAccountToken")):
        if preference is not None:
            return bool(preference)
    return True


def api_access_volume(name: str) -> Obj:
    """``TokenVolumeSource``: no audience (the API server's), 3607 s, the CA and the namespace."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": WARN_ONLY_EXPIRATION_SECONDS}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def mount_api_access(sa: Obj, pod: Obj) -> None:
    """The ServiceAccount plugin's mutation of a pod being created (after the SA was found); mirror
    pods are left as they are."""
    spec = pod.setdefault("spec", {})
    if MIRROR_ANNOTATION in (pod.get("metadata", {}).get("annotations") or {}) or not should_automount(sa, pod):
        return
    volumes = spec.get("volumes") or []
    existing = next(
        (v["name"] for v in volumes if isinstance(v, dict) and str(v.get("name", "")).startswith(API_ACCESS_PREFIX)),
        None,
    )
    name = existing or API_ACCESS_PREFIX + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
    needs_volume = False
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            mounts = container.get("volumeMounts") or []
            if any(m.get("mountPath") == API_ACCESS_MOUNT_PATH for m in mounts):
                continue  # an existing mount at that path prevents the token's
            container["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": API_ACCESS_MOUNT_PATH}]
            needs_volume = True
    if needs_volume and existing is None:
        spec["volumes"] = [*volumes, api_access_volume(name)]


def root_ca_configmap(ca_pem: bytes) -> Obj:
    return {"metadata": {"name": ROOT_CA_CONFIGMAP}, "data": {"ca.crt": ca_pem.decode()}}


def _invalid(name: str, path: str, value: object, message: str) -> ApiError:
    shown = value if isinstance(value, int) else f'"{value}"'
    detail = f"Invalid value: {shown}: {message}"
    return ApiError(
        422,
        "Invalid",
        f'TokenRequest.authentication.k8s.io "{name}" is invalid: {path}: {detail}',
        kind="TokenRequest",
        name=name,
        group="authentication.k8s.io",
        causes=[{"reason": "FieldValueInvalid", "message": detail, "field": path}],
    )


def create_token(
    lookup: TokenLookup,
    minter: TokenMinter,
    namespace: str,
    name: str,
    body: Obj,
    *,
    policy: TokenPolicy = TokenPolicy(),
    now: float | None = None,
) -> Obj:
    """``POST .../serviceaccounts/<name>/token``: the TokenRequest with its ``status``."""
    api_audiences = policy.api_audiences
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a TokenRequest object")
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise bad_request("TokenRequest metadata and spec must be objects")
    if meta.get("name") and meta["name"] != name:
        raise _invalid(name, "metadata.name", meta["name"], "must match the service account name if specified")
    if meta.get("namespace") and meta["namespace"] != namespace:
        raise _invalid(
            name, "metadata.namespace", meta["namespace"], "must match the service account namespace if specified"
        )
    sa = lookup("serviceaccounts", namespace, name)
    audiences = spec.get("audiences") or list(api_audiences)
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise bad_request("spec.audiences must be a list of strings")
    expiration = spec.get("expirationSeconds")
    expiration = DEFAULT_TOKEN_EXPIRATION if expiration is None else expiration
    if not isinstance(expiration, int) or isinstance(expiration, bool):
        raise bad_request("spec.expirationSeconds must be an integer")
    if expiration < MIN_TOKEN_EXPIRATION:
        raise _invalid("", "spec.expirationSeconds", expiration, "may not specify a duration less than 10 minutes")
    if expiration > MAX_TOKEN_EXPIRATION:
        raise _invalid("", "spec.expirationSeconds", expiration, "may not specify a duration larger than 2^32 seconds")
    pod: tuple[str, str] | None = None
    secret: tuple[str, str] | None = None
    node_name = ""
    ref = spec.get("boundObjectRef")
    if ref:
        if not isinstance(ref, dict):
            raise bad_request("spec.boundObjectRef must be an object")
        kind, api_version = ref.get("kind"), ref.get("apiVersion") or ""
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        if group == "" and kind == "Pod":
            bound = lookup("pods", namespace, str(ref.get("name", "")))
            if bound["spec"].get("serviceAccountName") != name:
                raise bad_request(
                    f'cannot bind token for serviceaccount "{name}" to pod running with different serviceaccount name.'
                )
            pod = (bound["metadata"]["name"], bound["metadata"]["uid"])
            node_name = str(bound["spec"].get("nodeName") or "")
        elif group == "" and kind == "Secret":
            bound = lookup("secrets", namespace, str(ref.get("name", "")))
            secret = (bound["metadata"]["name"], bound["metadata"]["uid"])
        else:
            gvk = f"{api_version or '/'}, Kind={kind}" if api_version else f"/, Kind={kind}"
            raise bad_request(f"cannot bind token to object of type {gvk}")
        if ref.get("uid") and ref["uid"] != bound["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind}.{group} "{ref.get("name")}": the UID in the bound object '
                f"reference ({ref['uid']}) does not match the UID in record. The object might have been deleted "
                "and then recreated",
            )
    if policy.max_expiration and expiration > policy.max_expiration:
        expiration = policy.max_expiration
    issued = int(time.time() if now is None else now)
    exp, warn_after = expiration, 0
    if pod is not None and expiration == WARN_ONLY_EXPIRATION_SECONDS and set(audiences) <= set(api_audiences):
        exp, warn_after = policy.extended_expiration, expiration
    token = minter(
        namespace=namespace,
        service_account=name,
        sa_uid=str(sa["metadata"].get("uid", "")),
        audiences=list(audiences),
        expiration_seconds=exp,
        pod=pod,
        node_name=node_name,
        secret=secret,
        warn_after_seconds=warn_after,
        now=issued,
    )
    stamp = datetime.fromtimestamp(issued, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    expires = datetime.fromtimestamp(issued + expiration, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": stamp},
        "spec": {
            "audiences": list(audiences),
            "expirationSeconds": expiration,
            "boundObjectRef": ref or None,
        },
        "status": {"token": token, "expirationTimestamp": expires},
    }
