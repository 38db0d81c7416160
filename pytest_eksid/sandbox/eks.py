"""The EKS control plane: the cluster's description and its Pod Identity associations.

Served as the EKS REST API (the shapes of botocore's ``eks`` service model) by the AWS gateway,
and read in-process by the Pod Identity webhook and agent, as EKS Auth would.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

Obj = dict[str, Any]


class EksError(Exception):
    """An EKS API error: HTTP status, ``x-amzn-ErrorType`` and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
        return out


class EksControlPlane:
    def __init__(self, *, name: str, region: str, account_id: str, issuer_url: str, endpoint: str) -> None:
        self.name = name
        self.region = region
        self.account_id = account_id
        self.issuer_url = issuer_url
        self.endpoint = endpoint
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
        external_id: str | None = None,
        disable_session_tags: bool = False,
        tags: dict[str, str] | None = None,
    ) -> Association:
        with self._lock:
            for a in self._associations.values():
                if (a.namespace, a.service_account) == (namespace, service_account):
                    raise EksError(
                        409,
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
                external_id=external_id if target_role_arn else None,
                disable_session_tags=disable_session_tags,
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
            raise EksError(404, "ResourceNotFoundException", f"No Pod Identity Association found with id {assoc_id}")
        return assoc

    def set_addon(self, name: str, status: str) -> None:
        with self._lock:
            self._addons[name] = status

    def describe_addon(self, name: str) -> Obj:
        with self._lock:
            status = self._addons.get(name)
        if status is None:
            raise EksError(404, "ResourceNotFoundException", f"No addon: {name} found in cluster: {self.name}")
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
            "platformVersion": "eks.1",
            "tags": {},
        }

    # --- REST ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Obj) -> Obj:
        """Serve one EKS REST call; raise EksError for the error answers."""
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if len(segs) < 2 or segs[0] != "clusters":
            raise EksError(404, "ResourceNotFoundException", f"No resource at {path}")
        if segs[1] != self.name:
            raise EksError(404, "ResourceNotFoundException", f"No cluster found for name: {segs[1]}.")
        rest = segs[2:]
        if not rest and method == "GET":
            return {"cluster": self.describe_cluster()}
        if rest[:1] == ["addons"] and len(rest) == 2 and method == "GET":
            return {"addon": self.describe_addon(rest[1])}
        if rest[:1] != ["pod-identity-associations"]:
            raise EksError(404, "ResourceNotFoundException", f"No resource at {path}")
        if len(rest) == 1 and method == "GET":
            return self._list(query)
        if len(rest) == 1 and method == "POST":
            for key in ("namespace", "serviceAccount", "roleArn"):
                if not body.get(key):
                    raise EksError(400, "InvalidParameterException", f"{key} is required")
            assoc = self.create_association(
                body["namespace"],
                body["serviceAccount"],
                body["roleArn"],
                target_role_arn=body.get("targetRoleArn"),
                external_id=body.get("externalId"),
                disable_session_tags=bool(body.get("disableSessionTags", False)),
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
                with self._lock:
                    if "roleArn" in body:
                        assoc.role_arn = body["roleArn"]
                    if "targetRoleArn" in body:
                        assoc.target_role_arn = body["targetRoleArn"] or None
                    if "disableSessionTags" in body:
                        assoc.disable_session_tags = bool(body["disableSessionTags"])
                    assoc.modified_at = time.time()
                return {"association": assoc.describe()}
        raise EksError(405, "InvalidRequestException", f"{method} not supported on {path}")

    def _list(self, query: dict[str, str]) -> Obj:
        found = [
            a
            for a in self.associations()
            if query.get("namespace") in (None, a.namespace)
            and query.get("serviceAccount") in (None, a.service_account)
        ]
        try:
            max_results = int(query.get("maxResults", "100"))
            start = int(query.get("nextToken", "0"))
        except ValueError:
            raise EksError(400, "InvalidParameterException", "bad maxResults or nextToken") from None
        if not 1 <= max_results <= 100:
            raise EksError(400, "InvalidParameterException", "maxResults must be between 1 and 100")
        page = found[start : start + max_results]
        out: Obj = {"associations": [a.summary() for a in page]}
        if start + max_results < len(found):
            out["nextToken"] = str(start + max_results)
        return out
