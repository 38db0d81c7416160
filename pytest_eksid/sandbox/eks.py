"""The EKS control plane: the cluster's description, its Pod Identity associations and access entries.

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
# Access entries' request members [botocore/data/eks/2017-11-01/service-2.json shapes CreateAccessEntryRequest,
# UpdateAccessEntryRequest, AssociateAccessPolicyRequest].
ENTRY_CREATE_MEMBERS = frozenset({"principalArn", "kubernetesGroups", "tags", "clientRequestToken", "username", "type"})
ENTRY_UPDATE_MEMBERS = frozenset({"kubernetesGroups", "clientRequestToken", "username"})
ASSOCIATE_MEMBERS = frozenset({"policyArn", "accessScope"})

# The cluster's ``accessConfig.authenticationMode`` [shape AuthenticationMode]; the access-entry operations need
# an API* mode (EKS answers InvalidRequestException in CONFIG_MAP mode).
AUTHENTICATION_MODES = ("API", "API_AND_CONFIG_MAP", "CONFIG_MAP")
# Access-entry types (CreateAccessEntryRequest.type's documentation); node types take no groups and no policies.
ENTRY_TYPES = ("STANDARD", "FARGATE_LINUX", "EC2_LINUX", "EC2_WINDOWS", "EC2", "HYBRID_LINUX", "HYPERPOD_LINUX")
NODE_ENTRY_TYPES = frozenset(ENTRY_TYPES) - {"STANDARD"}
# A custom username may not start with these [awsdocs/amazon-eks-user-guide@21adee18
# latest/ug/manage-access/k8s-access/set-custom-username.adoc "Requirements for custom usernames"].
RESERVED_USERNAME_PREFIXES = ("system:", "eks:", "aws:", "amazon:", "iam:")
# The access policies the sandbox knows and enforces (sandbox/eks_access.py holds their rules); ARNs as
# ``aws eks list-access-policies`` prints them [awsdocs/amazon-eks-user-guide@4d52b4d0
# latest/ug/manage-access/k8s-access/access-policy-reference.adoc].
ACCESS_POLICY_PREFIX = "arn:aws:eks::aws:cluster-access-policy/"
ACCESS_POLICIES = (
    "AmazonEKSAdminPolicy",
    "AmazonEKSAdminViewPolicy",
    "AmazonEKSClusterAdminPolicy",
    "AmazonEKSEditPolicy",
    "AmazonEKSViewPolicy",
)


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


def list_access_policies(query: dict[str, str]) -> Obj:
    """``ListAccessPolicies`` (``GET /access-policies``, no cluster in the path): the policies the sandbox
    enforces, paginated [shape ListAccessPoliciesRequest; paginators-1.json ListAccessPolicies]."""
    page, token = _page([{"name": n, "arn": ACCESS_POLICY_PREFIX + n} for n in ACCESS_POLICIES], query)
    out: Obj = {"accessPolicies": page}
    if token is not None:
        out["nextToken"] = token
    return out


def default_username(principal_arn: str, entry_type: str = "STANDARD") -> str:
    """The username EKS derives when an access entry names none: an IAM user's ARN; for a role its STS
    session ARN with ``{{SessionName}}``, the role's path removed [set-custom-username.adoc "Default username
    generation"]. For node entries the aws-auth convention ``system:node:{{EC2PrivateDNSName}}`` (guessed)."""
    if entry_type in NODE_ENTRY_TYPES:
        return "system:node:{{EC2PrivateDNSName}}"
    account, kind, name = _split_principal(principal_arn)
    if kind == "role":
        return f"arn:aws:sts::{account}:assumed-role/{name.rsplit('/', 1)[-1]}/{{{{SessionName}}}}"
    return principal_arn


def _split_principal(arn: str) -> tuple[str, str, str]:
    """(account, "user"|"role", name with path) of an IAM user or role ARN; InvalidParameterException otherwise.
    Sessions (``sts::...:assumed-role/...``) cannot have entries (CreateAccessEntryRequest.principalArn)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam" or not parts[4].isdigit():
        raise EksError("InvalidParameterException", f"The principalArn parameter format is not valid: {arn}")
    kind, _, name = parts[5].partition("/")
    if kind not in ("user", "role") or not name:
        raise EksError("InvalidParameterException", f"The principalArn parameter format is not valid: {arn}")
    return parts[4], kind, name


def same_principal(entry_arn: str, canonical_arn: str) -> bool:
    """Does an access entry's principal ARN name the caller's canonical ARN? A role session's ARN carries no
    path, so a role is matched without its path (guessed: EKS matches on the role's unique id)."""
    if entry_arn == canonical_arn:
        return True
    try:
        a, b = _split_principal(entry_arn), _split_principal(canonical_arn)
    except EksError:
        return False
    return a[:2] == b[:2] and a[1] == "role" and a[2].rsplit("/", 1)[-1] == b[2].rsplit("/", 1)[-1]


@dataclass
class AssociatedPolicy:
    policy_arn: str
    scope_type: str  # "cluster" | "namespace"
    namespaces: tuple[str, ...]
    associated_at: float
    modified_at: float

    def describe(self) -> Obj:
        return {
            "policyArn": self.policy_arn,
            "accessScope": {"type": self.scope_type, "namespaces": list(self.namespaces)},
            "associatedAt": self.associated_at,
            "modifiedAt": self.modified_at,
        }


@dataclass
class AccessEntry:
    cluster_name: str
    principal_arn: str
    access_entry_arn: str
    kubernetes_groups: list[str]
    username: str
    type: str
    created_at: float
    modified_at: float
    tags: dict[str, str] = field(default_factory=dict)
    policies: dict[str, AssociatedPolicy] = field(default_factory=dict)

    def describe(self) -> Obj:
        return {
            "clusterName": self.cluster_name,
            "principalArn": self.principal_arn,
            "kubernetesGroups": list(self.kubernetes_groups),
            "accessEntryArn": self.access_entry_arn,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "tags": dict(self.tags),
            "username": self.username,
            "type": self.type,
        }


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
        authentication_mode: str = "API_AND_CONFIG_MAP",
        bootstrap_admin: bool = True,
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
        if authentication_mode not in AUTHENTICATION_MODES:
            raise ValueError(f"authentication_mode must be one of {', '.join(AUTHENTICATION_MODES)}")
        self.authentication_mode = authentication_mode
        self.bootstrap_admin = bootstrap_admin  # accessConfig.bootstrapClusterCreatorAdminPermissions
        self._entries: dict[str, AccessEntry] = {}

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
            # [shape AccessConfigResponse]
            "accessConfig": {
                "bootstrapClusterCreatorAdminPermissions": self.bootstrap_admin,
                "authenticationMode": self.authentication_mode,
            },
            "tags": {},
        }

    # --- access entries (in process: the sandbox's seeding and the API server's authenticator) ------------

    def _need_api_mode(self) -> None:
        if self.authentication_mode == "CONFIG_MAP":
            raise EksError(
                "InvalidRequestException",
                "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] "
                "to perform this operation.",
            )

    def create_access_entry(
        self,
        principal_arn: str,
        *,
        kubernetes_groups: list[str] | None = None,
        username: str | None = None,
        entry_type: str = "STANDARD",
        tags: dict[str, str] | None = None,
    ) -> AccessEntry:
        self._need_api_mode()
        account, kind, name = _split_principal(principal_arn)
        if entry_type not in ENTRY_TYPES:
            raise EksError("InvalidParameterException", f"The type {entry_type} is not valid.")
        if entry_type in NODE_ENTRY_TYPES and (kind != "role" or kubernetes_groups or username):
            raise EksError(
                "InvalidParameterException",
                f"An access entry of type {entry_type} takes an IAM role and no kubernetesGroups or username.",
            )
        _check_username(username)
        _check_groups(kubernetes_groups)
        with self._lock:
            if principal_arn in self._entries:
                raise EksError(
                    "ResourceInUseException", "The specified access entry resource is already in use on this cluster."
                )
            now = time.time()
            entry = AccessEntry(
                cluster_name=self.name,
                principal_arn=principal_arn,
                # The ARN's form is guessed: the entry's kind, account and name, then a random suffix.
                access_entry_arn=f"arn:aws:eks:{self.region}:{self.account_id}:access-entry/{self.name}/"
                f"{kind}/{account}/{name.rsplit('/', 1)[-1]}/{uuid.uuid4()}",
                kubernetes_groups=list(kubernetes_groups or []),
                username=username or default_username(principal_arn, entry_type),
                type=entry_type,
                created_at=now,
                modified_at=now,
                tags=dict(tags or {}),
            )
            self._entries[principal_arn] = entry
            return entry

    def access_entry(self, principal_arn: str) -> AccessEntry:
        self._need_api_mode()
        with self._lock:
            entry = self._entries.get(principal_arn)
        if entry is None:
            raise EksError(
                "ResourceNotFoundException", f"The specified principalArn could not be found: {principal_arn}"
            )
        return entry

    def entry_for(self, canonical_arn: str) -> AccessEntry | None:
        """The access entry that maps an authenticated caller (its canonical ARN), or None; always None in
        CONFIG_MAP mode, where access entries play no part."""
        if self.authentication_mode == "CONFIG_MAP":
            return None
        with self._lock:
            entries = list(self._entries.values())
        return next((e for e in entries if same_principal(e.principal_arn, canonical_arn)), None)

    def associate_access_policy(
        self, principal_arn: str, policy_arn: str, scope_type: str, namespaces: list[str] | None = None
    ) -> AssociatedPolicy:
        entry = self.access_entry(principal_arn)
        if (
            not policy_arn.startswith(ACCESS_POLICY_PREFIX)
            or policy_arn[len(ACCESS_POLICY_PREFIX) :] not in ACCESS_POLICIES
        ):
            raise EksError("InvalidParameterException", f"The policyArn {policy_arn} is not a valid access policy.")
        if entry.type in NODE_ENTRY_TYPES:
            raise EksError(
                "InvalidParameterException", f"Access policies cannot be associated with a {entry.type} access entry."
            )
        names = tuple(namespaces or ())
        if scope_type == "cluster" and names:
            raise EksError(
                "InvalidParameterException", "namespaces can only be specified with an access scope of type namespace."
            )
        if scope_type == "namespace" and not names:
            raise EksError(
                "InvalidParameterException", "At least one namespace is required for an access scope of type namespace."
            )
        if scope_type not in ("cluster", "namespace"):
            raise EksError("InvalidParameterException", f"The access scope type {scope_type} is not valid.")
        with self._lock:
            now = time.time()
            old = entry.policies.get(policy_arn)
            # Associating again replaces the scope (guessed: the pair is one association, updated in place).
            assoc = AssociatedPolicy(policy_arn, scope_type, names, old.associated_at if old else now, now)
            entry.policies[policy_arn] = assoc
            return assoc

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
        if rest[:1] == ["access-entries"]:
            return self._access_entries(method, path, query, body)
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

    def _access_entries(self, method: str, path: str, query: dict[str, str], body: Obj) -> Obj:
        """``/clusters/{name}/access-entries[/{principalArn}[/access-policies[/{policyArn}]]]``. The ARNs hold
        ``/``: the path is split at the fixed words, not at every slash (the gateway may hand it decoded)."""
        tail = path.split("/access-entries", 1)[1].strip("/")
        principal, _, policies = tail.partition("/access-policies")
        principal, policy = unquote(principal), unquote(policies.strip("/"))
        in_policies = "/access-policies" in tail
        if not principal:
            if method == "GET":
                self._need_api_mode()
                wanted = query.get("associatedPolicyArn")
                with self._lock:
                    found = [e.principal_arn for e in self._entries.values() if wanted in (None, *e.policies)]
                page, token = _page(found, query)
                out: Obj = {"accessEntries": page}
                if token is not None:
                    out["nextToken"] = token
                return out
            if method == "POST":
                self._check_members(body, ENTRY_CREATE_MEMBERS)
                if not body.get("principalArn"):
                    raise EksError("InvalidParameterException", "principalArn is required")
                entry = self.create_access_entry(
                    body["principalArn"],
                    kubernetes_groups=body.get("kubernetesGroups"),
                    username=body.get("username"),
                    entry_type=body.get("type") or "STANDARD",
                    tags=body.get("tags"),
                )
                return {"accessEntry": entry.describe()}
        elif not in_policies:
            entry = self.access_entry(principal)
            if method == "GET":
                return {"accessEntry": entry.describe()}
            if method == "DELETE":
                with self._lock:
                    self._entries.pop(entry.principal_arn, None)
                return {}
            if method == "POST":
                self._check_members(body, ENTRY_UPDATE_MEMBERS)
                _check_username(body.get("username"))
                _check_groups(body.get("kubernetesGroups"))
                if entry.type in NODE_ENTRY_TYPES and (body.get("username") or body.get("kubernetesGroups")):
                    raise EksError(
                        "InvalidParameterException",
                        f"A {entry.type} access entry takes no kubernetesGroups or username.",
                    )
                with self._lock:
                    if "kubernetesGroups" in body:
                        entry.kubernetes_groups = list(body["kubernetesGroups"] or [])
                    if body.get("username"):
                        entry.username = body["username"]
                    entry.modified_at = time.time()
                return {"accessEntry": entry.describe()}
        else:
            entry = self.access_entry(principal)
            if not policy and method == "GET":
                with self._lock:
                    associated = sorted(entry.policies.values(), key=lambda a: a.associated_at)
                page, token = _page([a.describe() for a in associated], query)
                out = {"clusterName": self.name, "principalArn": entry.principal_arn, "associatedAccessPolicies": page}
                if token is not None:
                    out["nextToken"] = token
                return out
            if not policy and method == "POST":
                self._check_members(body, ASSOCIATE_MEMBERS)
                scope = body.get("accessScope")
                if not body.get("policyArn") or not isinstance(scope, dict):
                    raise EksError("InvalidParameterException", "policyArn and accessScope are required")
                assoc = self.associate_access_policy(
                    principal, body["policyArn"], str(scope.get("type") or ""), scope.get("namespaces")
                )
                return {
                    "clusterName": self.name,
                    "principalArn": entry.principal_arn,
                    "associatedAccessPolicy": assoc.describe(),
                }
            if policy and method == "DELETE":
                with self._lock:
                    removed = entry.policies.pop(policy, None)
                if removed is None:
                    raise EksError(
                        "ResourceNotFoundException", f"The policy {policy} is not associated with {principal}."
                    )
                return {}
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


def _check_username(username: str | None) -> None:
    if username and username.startswith(RESERVED_USERNAME_PREFIXES):
        raise EksError(
            "InvalidParameterException",
            f"The username can't start with any of {', '.join(RESERVED_USERNAME_PREFIXES)}",
        )


def _check_groups(groups: Any) -> None:
    if groups is None:
        return
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise EksError("InvalidParameterException", "kubernetesGroups must be a list of names")
    # Guessed from the username rule: EKS refuses system: groups (system:masters) in access entries.
    if any(g.startswith("system:") for g in groups):
        raise EksError("InvalidParameterException", "kubernetesGroups can't start with system:")


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
