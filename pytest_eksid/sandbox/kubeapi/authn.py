"""Service-account token authentication: the API server's own JWTs, as kube-apiserver checks them.

A bearer JWT authenticates when the cluster's issuer signed it (``verify``: signature, ``iss``, ``exp``), one of
its audiences is the API server's (``API_AUDIENCE``), and the objects it is bound to still exist with the uids
it names: the ServiceAccount always, the Pod when the token names one
[kubernetes/kubernetes@031075d1 pkg/serviceaccount/claims.go (validator.Validate); pkg/serviceaccount/jwt.go
(the audience check)]. The caller is ``system:serviceaccount:<ns>:<name>`` in ``system:serviceaccounts``,
``system:serviceaccounts:<ns>`` and ``system:authenticated``, with the pod's and node's names and uids and the
token's ``jti`` in ``extra`` (k8s.io/apiserver serviceaccount.ServiceAccountInfo.UserInfo).

Tokens minted for AWS (IRSA: ``sts.amazonaws.com``; Pod Identity: ``pods.eks.amazonaws.com``) carry no API
server audience and so do not authenticate here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_eksid.sandbox.kubeapi.resources import PODS, SERVICEACCOUNTS
from pytest_eksid.sandbox.kubeapi.server import Caller
from pytest_eksid.sandbox.kubeapi.store import Store
from pytest_eksid.sandbox.tokens import API_AUDIENCE

# The API server's audience (``tokens.API_AUDIENCE``): what a kube-api-access token (and ``kubectl create
# token`` without ``--audience``) is minted for; no AWS document states EKS's value: guessed.

AUTHENTICATED = "system:authenticated"
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
EXTRA_NODE_UID = "authentication.kubernetes.io/node-uid"
EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


class ServiceAccountTokenAuthenticator:
    """``KubeApiServer.authenticators`` entry for the cluster's service-account JWTs.

    ``verify`` returns a token's claims when the issuer signed it and it is unexpired, else raises
    (``tokens.Issuer.verify``); ``audiences`` are those the API server accepts.
    """

    def __init__(
        self,
        store: Store,
        verify: Callable[[str], dict[str, Any]],
        *,
        audiences: tuple[str, ...] = (API_AUDIENCE,),
    ) -> None:
        self.store = store
        self.verify = verify
        self.audiences = audiences

    def __call__(self, token: str) -> Caller | None:
        if token.count(".") != 2:
            return None
        try:
            claims = self.verify(token)
        except Exception:  # any refusal of the issuer: not a token of this cluster
            return None
        aud = claims.get("aud")
        token_audiences = [aud] if isinstance(aud, str) else [str(a) for a in aud] if isinstance(aud, list) else []
        if not set(token_audiences) & set(self.audiences):
            return None
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            return None
        namespace = private.get("namespace")
        sa_ref = private.get("serviceaccount")
        if not isinstance(namespace, str) or not isinstance(sa_ref, dict):
            return None
        sa_name, sa_uid = str(sa_ref.get("name") or ""), str(sa_ref.get("uid") or "")
        if claims.get("sub") != f"system:serviceaccount:{namespace}:{sa_name}":
            return None
        sa = self.store.find(SERVICEACCOUNTS, namespace, sa_name)
        if sa is None or _uid(sa) != sa_uid:
            return None  # "service account ... has been deleted" / "UID ... does not match claim"
        extra: list[tuple[str, tuple[str, ...]]] = []
        pod_ref = private.get("pod")
        if isinstance(pod_ref, dict):
            pod = self.store.find(PODS, namespace, str(pod_ref.get("name") or ""))
            if pod is None or _uid(pod) != str(pod_ref.get("uid") or ""):
                return None  # "service account token has been invalidated"
            extra += [(EXTRA_POD_NAME, (str(pod_ref["name"]),)), (EXTRA_POD_UID, (str(pod_ref["uid"]),))]
        node_ref = private.get("node")
        if isinstance(node_ref, dict) and node_ref.get("name"):
            extra.append((EXTRA_NODE_NAME, (str(node_ref["name"]),)))
            if node_ref.get("uid"):
                extra.append((EXTRA_NODE_UID, (str(node_ref["uid"]),)))
        if claims.get("jti"):
            extra.append((EXTRA_CREDENTIAL_ID, (f"JTI={claims['jti']}",)))
        return Caller(
            f"system:serviceaccount:{namespace}:{sa_name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
            uid=sa_uid,
            extra=tuple(sorted(extra)),
        )


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
