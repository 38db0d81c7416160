"""The EKS control plane: the cluster's description and its Pod Identity associations.

Served as the EKS REST API (the shapes of botocore's ``eks`` service model) by the AWS gateway,
and read in-process by the Pod Identity webhook and agent, as EKS Auth would. Error codes and
their HTTP statuses are the model's (``MODELED_ERRORS``; tests/test_sandbox_eks.py holds them
against the model botocore ships).
"""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

Obj = dict[str, Any]


# The error shapes this API answers with and their ``error.httpStatusCode``
# [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:
#  1148-1159,4532-4563,4564-4591,6092-6115,6140-6171].
MODELED_ERRORS: dict[str, int] = {
    "AccessDeniedException": 403,
    "InvalidParameterException": 400,
    "InvalidRequestException": 400,
    "ResourceInUseException": 409,
    "ResourceNotFoundException": 404,
}
# What AWS's request front answers before any service sees the call: in no service model (the
# status is what AWS answers them with; botocore maps them by code alone).
COMMON_ERRORS: dict[str, int] = {
    "MissingAuthenticationTokenException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
}

# The request members of the operations that take a body
# [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:3045-3094,7005-7046]; ``externalId``
# is an output of the association only (5907-5910): EKS generates it.
CREATE_MEMBERS = frozenset(
    {"namespace", "serviceAccount", "roleArn", "clientRequestToken", "tags"}
    | {"disableSessionTags", "targetRoleArn", "policy"}
)
UPDATE_MEMBERS = frozenset({"roleArn", "clientRequestToken", "disableSessionTags", "targetRoleArn", "policy"})


class EksError(Exception):
    """An EKS API error: ``x-amzn-ErrorType``, message and the HTTP status the model gives the code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.status = MODELED_ERRORS[code] if code in MODELED_ERRORS else COMMON_ERRORS[code]
        self.code = code
        self.message = message


def _page(items: list[Any], query: dict[str, str]) -> tuple[list[Any], str | None]:
    """One page of ``items`` as the model's list operations page: ``maxResults`` 1-100 (default 100),
    an opaque ``nextToken`` [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:4941-4963]."""
    try:
        max_results = int(query.get("maxResults", "100"))
        start = int(query.get("nextToken", "0"))
    except ValueError:
        raise EksError("InvalidParameterException", "The nextToken or maxResults is not valid.") from None
    if not 1 <= max_results <= 100 or start < 0:
        raise EksError("InvalidParameterException", "maxResults must be between 1 and 100")
    end = start + max_results
    return items[start:end], (str(end) if end < len(items) else None)


def list_clusters(names: list[str], query: dict[str, str]) -> Obj:
    """``ListClusters``: the region's cluster names, paginated on ``nextToken``/``maxResults``
    [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:737-752; paginators-1.json:3-8]."""
    page, token = _page(sorted(names), query)
    out: Obj = {"clusters": page}
    if token is not None:
        out["nextToken"] = token
    return out


@dataclass
class Association:
    cluster_name: str
    namespace: str
    service_account: str
    role_arn: str
    association_id: str
    association_arn: str
    created_at: float
    modified_at: float
    target_role_arn: str | None = None
    external_id: str | None = None
    disable_session_tags: bool = False
    policy: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def summary(self) -> Obj:
        return {
            "clusterName": self.cluster_name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "associationArn": self.association_arn,
            "associationId": self.association_id,
        }

    def describe(self) -> Obj:
        out = {
            **self.summary(),
            "roleArn": self.role_arn,
            "tags": dict(self.tags),
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "disableSessionTags": self.disable_session_tags,
        }
        if self.target_role_arn:
            out["targetRoleArn"] = self.target_role_arn
            out["externalId"] = self.external_id
        if self.policy is not None:
            out["policy"] = self.policy
        return out


class EksControlPlane:
    def __init__(
        self,
        *,
        name: str,
        region: str,
        account_id: str,
        issuer_url: str,
        endpoint: str,
        certificate_authority: str = "",
        refuse_unknown_members: bool = True,
    ) -> None:
        self.name = name
        self.region = region
        self.account_id = account_id
        self.issuer_url = issuer_url
        self.endpoint = endpoint
        self.certificate_authority = certificate_authority  # base64 PEM of the API server's CA
        # Guessed (docs/sandbox.md): whether a body member the model does not declare (``externalId``)
        # is refused; either way it is never used.
        self.refuse_unknown_members = refuse_unknown_members
        self.arn = f"arn:aws:eks:{region}:{account_id}:cluster/{name}"
        self.created_at = time.time()
        self._lock = threading.Lock()
        self._associations: dict[str, Association] = {}
        self._addons: dict[str, str] = {}

    # --- in-process API (webhook, agent, seeding) ----------------------------------------

    def create_association(
        self,
        namespace: str,
        service_account: str,
        role_arn: str,
        *,
        target_role_arn: str | None = None,
        disable_session_tags: bool = False,
        policy: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Association:
        _check_policy(policy, disable_session_tags)
        with self._lock:
            for a in self._associations.values():
                if (a.namespace, a.service_account) == (namespace, service_account):
                    raise EksError(
                        "ResourceInUseException",
                        f"Association already exists: {a.association_id}",
                    )
            alphabet = string.ascii_lowercase + string.digits
            assoc_id = "a-" + "".join(secrets.choice(alphabet) for _ in range(17))
            now = time.time()
            assoc = Association(
                cluster_name=self.name,
                namespace=namespace,
                service_account=service_account,
                role_arn=role_arn,
                association_id=assoc_id,
                association_arn=f"arn:aws:eks:{self.region}:{self.account_id}:podidentityassociation/{self.name}/{assoc_id}",
                created_at=now,
                modified_at=now,
                target_role_arn=target_role_arn,
                external_id=_external_id() if target_role_arn else None,
                disable_session_tags=disable_session_tags,
                policy=policy,
                tags=dict(tags or {}),
            )
            self._associations[assoc_id] = assoc
            return assoc

    def find_association(self, namespace: str, service_account: str) -> Association | None:
        with self._lock:
            for a in self._associations.values():
                if (a.namespace, a.service_account) == (namespace, service_account):
                    return a
        return None

    def associations(self) -> list[Association]:
        with self._lock:
            return sorted(self._associations.values(), key=lambda a: a.created_at)

    def _get(self, assoc_id: str) -> Association:
        with self._lock:
            assoc = self._associations.get(assoc_id)
        if assoc is None:
            raise EksError("ResourceNotFoundException", f"No Pod Identity Association found with id {assoc_id}")
        return assoc

    def set_addon(self, name: str, status: str) -> None:
        with self._lock:
            self._addons[name] = status

    def describe_addon(self, name: str) -> Obj:
        with self._lock:
            status = self._addons.get(name)
        if status is None:
            raise EksError("ResourceNotFoundException", f"No addon: {name} found in cluster: {self.name}")
        issues = (
            []
            if status == "ACTIVE"
            else [
                {
                    "code": "InsufficientNumberOfReplicas",
                    "message": "The add-on is unhealthy because it doesn't have the desired number of replicas.",
                    "resourceIds": [],
                }
            ]
        )
        return {
            "addonName": name,
            "clusterName": self.name,
            "status": status,
            "addonVersion": "v1.3.4-eksbuild.1",
            "health": {"issues": issues},
            "addonArn": f"arn:aws:eks:{self.region}:{self.account_id}:addon/{self.name}/{name}/sandbox",
            "createdAt": self.created_at,
            "modifiedAt": self.created_at,
            "tags": {},
        }

    def describe_cluster(self) -> Obj:
        return {
            "name": self.name,
            "arn": self.arn,
            "createdAt": self.created_at,
            "version": "1.33",
            "endpoint": self.endpoint,
            "roleArn": f"arn:aws:iam::{self.account_id}:role/{self.name}-cluster-role",
            "identity": {"oidc": {"issuer": self.issuer_url}},
            "status": "ACTIVE",
            # [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:2107-2116,2214-2217]
            "certificateAuthority": {"data": self.certificate_authority},
            "platformVersion": "eks.1",
            "tags": {},
        }

    # --- REST ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Obj) -> Obj:
        """Serve one EKS REST call; raise EksError for the error answers."""
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if len(segs) < 2 or segs[0] != "clusters":
            raise EksError("ResourceNotFoundException", f"No resource at {path}")
        if segs[1] != self.name:
            raise EksError("ResourceNotFoundException", f"No cluster found for name: {segs[1]}.")
        rest = segs[2:]
        if not rest and method == "GET":
            return {"cluster": self.describe_cluster()}
        if rest[:1] == ["addons"] and len(rest) == 2 and method == "GET":
            return {"addon": self.describe_addon(rest[1])}
        if rest[:1] != ["pod-identity-associations"]:
            raise EksError("ResourceNotFoundException", f"No resource at {path}")
        if len(rest) == 1 and method == "GET":
            return self._list(query)
        if len(rest) == 1 and method == "POST":
            self._check_members(body, CREATE_MEMBERS)
            for key in ("namespace", "serviceAccount", "roleArn"):
                if not body.get(key):
                    raise EksError("InvalidParameterException", f"{key} is required")
            assoc = self.create_association(
                body["namespace"],
                body["serviceAccount"],
                body["roleArn"],
                target_role_arn=body.get("targetRoleArn") or None,
                disable_session_tags=bool(body.get("disableSessionTags", False)),
                policy=body.get("policy"),
                tags=body.get("tags"),
            )
            return {"association": assoc.describe()}
        if len(rest) == 2:
            assoc = self._get(rest[1])
            if method == "GET":
                return {"association": assoc.describe()}
            if method == "DELETE":
                with self._lock:
                    self._associations.pop(assoc.association_id, None)
                return {"association": assoc.describe()}
            if method == "POST":
                self._check_members(body, UPDATE_MEMBERS)
                with self._lock:
                    disable = bool(body.get("disableSessionTags", assoc.disable_session_tags))
                    policy = body.get("policy", assoc.policy) or None  # guessed: "" removes the policy
                    _check_policy(policy, disable)
                    if "roleArn" in body:
                        assoc.role_arn = body["roleArn"]
                    if "targetRoleArn" in body:
                        assoc.target_role_arn = body["targetRoleArn"] or None
                        # guessed: the id is kept while a target role stays, dropped with it
                        if assoc.target_role_arn is None:
                            assoc.external_id = None
                        elif assoc.external_id is None:
                            assoc.external_id = _external_id()
                    assoc.disable_session_tags = disable
                    assoc.policy = policy
                    assoc.modified_at = time.time()
                return {"association": assoc.describe()}
        raise EksError("InvalidRequestException", f"{method} not supported on {path}")

    def _check_members(self, body: Obj, allowed: frozenset[str]) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown and self.refuse_unknown_members:
            raise EksError("InvalidParameterException", f"Unknown parameter(s) in the request: {', '.join(unknown)}")

    def _list(self, query: dict[str, str]) -> Obj:
        found = [
            a
            for a in self.associations()
            if query.get("namespace") in (None, a.namespace)
            and query.get("serviceAccount") in (None, a.service_account)
        ]
        page, token = _page(found, query)
        out: Obj = {"associations": [a.summary() for a in page]}
        if token is not None:
            out["nextToken"] = token
        return out


def _external_id() -> str:
    """EKS generates the association's ``externalId`` when it has a target role; the caller cannot set it
    [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:5907-5910]. Its format is guessed."""
    return str(uuid.uuid4())


def _check_policy(policy: str | None, disable_session_tags: bool) -> None:
    """A session policy needs ``disableSessionTags=true`` [boto/botocore@0e6e2404
    botocore/data/eks/2017-11-01/service-2.json:3089-3092]; it must be a JSON policy document."""
    if policy is None:
        return
    if not disable_session_tags:
        raise EksError("InvalidParameterException", "disableSessionTags must be true when a policy is specified")
    try:
        document = json.loads(policy)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "Statement" not in document:
        raise EksError("InvalidParameterException", "policy is not a valid JSON IAM policy document")
