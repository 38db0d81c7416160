"""The sandbox's section of a profile: what the emulator seeds and which faults it injects.

The core sees ``sandbox:`` as an opaque mapping (``Profile.sandbox``); this module is the model
of it, the catalogue of faults, and the checks of the section against the profile's workloads.
Its errors read as the core's do (``file:line: field.path: what``), through
:func:`pytest_eksid.profile.section_error`. Imports pydantic and the core only, never moto.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pytest_eksid.probe.actions import ActionError, json_value
from pytest_eksid.profile import (
    FieldError,
    K8sName,
    LoadedProfile,
    Namespace,
    Profile,
    ProfileError,
    StrictModel,
    cut,
    role_arn_parts,
    section_error,
)
from pytest_eksid.profile_yaml import shown
from pytest_eksid.sandbox import latency as latency_

if TYPE_CHECKING:
    from pytest_eksid.sandbox.kubeapi.resources import ResourceType

# pydantic's own patterns run on Rust's regex, where \w and \d are Unicode classes: spell ASCII out.
IAM_NAME_PATTERN = r"^[A-Za-z0-9_+=,.@-]{1,64}$"
ImdsVersion = Literal["v1", "v2"]
IMDS_VERSIONS: tuple[ImdsVersion, ...] = ("v1", "v2")

FaultName = Literal[
    "wrong-role",
    "default-service-account",
    "missing-association",
    "missing-annotation",
    "wildcard-trust-sub",
    "missing-aud-condition",
    "missing-tag-session",
    "static-keys-in-secret",
    "static-keys-in-env",
    "excess-permissions",
    "both-mechanisms",
    "legacy-user-active-key",
    "association-after-pod",
    "imds-exposed",
    "agent-down",
    "image-pull-error",
    "webhook-not-injecting",
    "no-oidc-provider",
    "kms-key-policy-deny",
    "missing-owner-label",
    "static-keys-in-configmap",
    "exact-key-delete-grant",
    "image-baked-credentials",
    "kms-via-service-missing",
    "proxy-captures-agent",
    "host-network",
    "agent-throttling",
    "session-tags-disabled",
    "webhook-cache-miss",
    "undeclared-identity",
    "extra-deployer",
]
# Faults that change one workload's setup, and the mechanism they apply to (None: either).
WORKLOAD_FAULTS: dict[str, str | None] = {
    "wrong-role": None,
    "default-service-account": None,
    "missing-association": "pod-identity",
    "missing-annotation": "irsa",
    "wildcard-trust-sub": "irsa",
    "missing-aud-condition": "irsa",
    "missing-tag-session": "pod-identity",
    "static-keys-in-secret": None,
    "static-keys-in-env": None,
    "excess-permissions": None,
    "both-mechanisms": None,
    "legacy-user-active-key": None,
    "association-after-pod": "pod-identity",
    "kms-key-policy-deny": None,
    "missing-owner-label": None,
    "static-keys-in-configmap": None,
    "exact-key-delete-grant": None,
    "kms-via-service-missing": None,
    "proxy-captures-agent": "pod-identity",
    "host-network": "pod-identity",
    "session-tags-disabled": "pod-identity",
    "webhook-cache-miss": "irsa",
    "extra-deployer": None,
}


# What a verbatim trust policy may name that the sandbox makes only at start (the issuer's id is random): the
# shell variables of the EKS user guide's IRSA trust example ("Assign IAM roles to Kubernetes service accounts",
# docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html), replaced in keys and values.
TRUST_VARIABLES = ("$oidc_provider", "$account_id")
# The IAM JSON policy elements a role trust policy may hold (docs.aws.amazon.com/IAM/latest/UserGuide/
# reference_policies_elements.html). Resource/NotResource are refused as IAM refuses them in a trust policy
# ("MalformedPolicyDocument: Has prohibited field Resource"; moto's IAMTrustPolicyDocumentValidator says the same).
_POLICY_KEYS = ("Version", "Id", "Statement")
# NotAction is left out: the sandbox's IAM (moto) reads only Action in a trust policy and refuses the rest.
_STATEMENT_KEYS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "Condition")
# IAM's condition operators (reference_policies_elements_condition_operators.html), as moto checks them too.
CONDITION_OPERATORS = (
    *(f"String{op}" for op in ("Equals", "NotEquals", "EqualsIgnoreCase", "NotEqualsIgnoreCase", "Like", "NotLike")),
    *(
        f"Numeric{op}"
        for op in ("Equals", "NotEquals", "LessThan", "LessThanEquals", "GreaterThan", "GreaterThanEquals")
    ),
    *(f"Date{op}" for op in ("Equals", "NotEquals", "LessThan", "LessThanEquals", "GreaterThan", "GreaterThanEquals")),
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
)


def _operator(name: str) -> bool:
    """``StringLike``, ``ForAnyValue:StringLike``, ``StringLikeIfExists``: a condition operator IAM knows."""
    base = name.split(":", 1)[1] if name.startswith(("ForAnyValue:", "ForAllValues:")) else name
    return base in CONDITION_OPERATORS or base.removesuffix("IfExists") in CONDITION_OPERATORS


_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
_POLICY_VERSIONS = ("2012-10-17", "2008-10-17")
# The actions the sandbox's IAM (moto 5.2.5) accepts in a trust policy: exactly these, no wildcards
# [moto iam/policy_validation.py IAMTrustPolicyDocumentValidator._validate_trust_policy_action].
TRUST_ACTIONS = (
    "sts:AssumeRole",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoleWithWebIdentity",
    "sts:DecodeAuthorizationMessage",
    "sts:GetAccessKeyInfo",
    "sts:GetCallerIdentity",
    "sts:GetFederationToken",
    "sts:GetServiceBearerToken",
    "sts:GetSessionToken",
    "sts:SetSourceIdentity",
    "sts:TagSession",
)


def _strings(value: Any, *, empty: bool = False) -> bool:
    """A string, or a list of strings (non-empty unless ``empty``), as IAM's string-or-array elements are."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and (empty or bool(value)) and all(isinstance(v, str) for v in value)


def check_trust_policy(doc: Any) -> None:
    """A role trust policy's shape, as IAM checks it at CreateRole: a :class:`FieldError` whose loc is inside
    the document (``Statement.0.Effect``). What a statement means is left to the checks under test."""
    if not isinstance(doc, Mapping):
        raise FieldError((), "expected a policy document: a mapping with Version and Statement, or its JSON text")
    extra = [k for k in doc if k not in _POLICY_KEYS]
    if extra:
        raise FieldError(
            (str(extra[0]),), f"unknown policy element {shown(extra[0])}; allowed: {', '.join(_POLICY_KEYS)}"
        )
    if "Version" in doc and doc["Version"] not in _POLICY_VERSIONS:
        raise FieldError(("Version",), f"expected {' or '.join(_POLICY_VERSIONS)}, got {shown(doc['Version'])}")
    statements = doc.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise FieldError(("Statement",), "required: a statement, or a non-empty list of statements")
    sids: set[Any] = {None}
    for i, st in enumerate(statements):
        at: tuple[str | int, ...] = ("Statement", i) if isinstance(doc["Statement"], list) else ("Statement",)
        if not isinstance(st, Mapping):
            raise FieldError(at, "expected a statement: a mapping with Effect, Principal and Action")
        for key in st:
            if key in ("Resource", "NotResource"):
                raise FieldError((*at, key), f"a trust policy has no {key}: the role is the resource (IAM refuses it)")
            if key not in _STATEMENT_KEYS:
                raise FieldError(
                    (*at, str(key)), f"unknown statement element {shown(key)}; allowed: {', '.join(_STATEMENT_KEYS)}"
                )
        if st.get("Effect") not in ("Allow", "Deny"):
            raise FieldError((*at, "Effect"), f"expected Allow or Deny, got {shown(st.get('Effect'))}")
        principals = [k for k in ("Principal", "NotPrincipal") if k in st]
        if len(principals) != 1:
            raise FieldError(at, "a trust statement needs exactly one of Principal or NotPrincipal")
        principal = st[principals[0]]
        if principal != "*":
            if not isinstance(principal, Mapping) or not principal:
                raise FieldError(
                    (*at, principals[0]), f'expected "*" or a mapping of {", ".join(_PRINCIPAL_TYPES)} to ARNs or names'
                )
            for kind, value in principal.items():
                if kind not in _PRINCIPAL_TYPES:
                    raise FieldError(
                        (*at, principals[0], str(kind)),
                        f"unknown principal type {shown(kind)}; allowed: {', '.join(_PRINCIPAL_TYPES)}",
                    )
                if not _strings(value):
                    raise FieldError((*at, principals[0], kind), "expected a string or a non-empty list of strings")
        actions = [k for k in ("Action",) if k in st]
        if len(actions) != 1:
            raise FieldError(at, "a trust statement needs its Action (sts:AssumeRole...)")
        if not _strings(st[actions[0]]):
            raise FieldError((*at, actions[0]), "expected an action (sts:AssumeRole...) or a non-empty list of them")
        listed = [st[actions[0]]] if isinstance(st[actions[0]], str) else st[actions[0]]
        for action in listed:
            if action not in TRUST_ACTIONS:
                raise FieldError(
                    (*at, actions[0]),
                    cut(
                        f"{shown(action)} is not an action the sandbox's IAM takes in a trust policy "
                        f"(no wildcards); choose from: {', '.join(TRUST_ACTIONS)}"
                    ),
                )
        if "Sid" in st and not isinstance(st["Sid"], str):
            raise FieldError((*at, "Sid"), "expected a string")
        if "Sid" in st and st["Sid"] in sids:
            raise FieldError((*at, "Sid"), f"Sid {shown(st['Sid'])} is used twice: IAM wants them unique in a policy")
        sids.add(st.get("Sid"))
        condition = st.get("Condition", {})
        if not isinstance(condition, Mapping):
            raise FieldError((*at, "Condition"), "expected a mapping: operator -> condition key -> value(s)")
        for op, clauses in condition.items():
            if not _operator(str(op)):
                raise FieldError(
                    (*at, "Condition", str(op)),
                    cut(f"unknown condition operator {shown(op)}; IAM's: {', '.join(CONDITION_OPERATORS)}"),
                )
            if not isinstance(clauses, Mapping) or not clauses:
                raise FieldError((*at, "Condition", str(op)), "expected a mapping of condition keys to values")
            for key, value in clauses.items():
                scalar = (str, bool, int, float)
                if not (
                    isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))
                ):
                    raise FieldError(
                        (*at, "Condition", str(op), str(key)),
                        "expected a value or a list of values (strings, booleans, numbers)",
                    )


# Faults that change a role's generated trust policy: meaningless on a role whose trust is written verbatim.
TRUST_FAULTS = frozenset({"wildcard-trust-sub", "missing-aud-condition", "missing-tag-session", "both-mechanisms"})


class SandboxRole(StrictModel):
    name: str = Field(pattern=IAM_NAME_PATTERN)
    policy: dict[str, Any]
    # The role's trust policy as written, instead of the one the sandbox derives from the workloads bound to it
    # (and the trust faults); $oidc_provider and $account_id are replaced at start (TRUST_VARIABLES).
    trust_policy: dict[str, Any] | None = None

    @field_validator("policy")
    @classmethod
    def _policy_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json_value(value)
        except ActionError as exc:
            raise FieldError(exc.loc, f"not JSON: {exc}") from None
        return value

    @field_validator("trust_policy", mode="before")
    @classmethod
    def _trust_document(cls, value: Any) -> Any:
        if isinstance(value, str):  # the JSON text, as `aws iam get-role` prints it or a file holds it
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise FieldError((), f"not a JSON policy document: {exc}") from None
        if value is None:
            return value
        try:
            json_value(value)
        except ActionError as exc:
            raise FieldError(exc.loc, f"not JSON: {exc}") from None
        check_trust_policy(value)
        return value


# undeclared-identity: the ServiceAccount it binds when the fault names none.
UNDECLARED_SERVICE_ACCOUNT = "reporting-export-aws-sa"
# extra-deployer: the group bound when the fault names none.
EXTRA_DEPLOYER_GROUP = "developers"
_RBAC_NAME = r"^[A-Za-z0-9][A-Za-z0-9:._@-]{0,252}$"  # a group name as identity providers write them (no spaces)


class SandboxFault(StrictModel):
    fault: FaultName
    workload: str | None = None  # wrong-role, extra-deployer and the other workload faults: which workload
    role: str | None = None  # wrong-role: the role bound instead; undeclared-identity: the role bound
    # undeclared-identity: where the ServiceAccount is (default: the first workload's namespace), its name, how it
    # is bound (irsa: the role annotation; pod-identity: an association) and its owner label (none by default)
    namespace: Namespace | None = None
    service_account: K8sName | None = None
    mechanism: Literal["irsa", "pod-identity"] = "irsa"
    owner: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")  # a label value
    group: str | None = Field(default=None, pattern=_RBAC_NAME)  # extra-deployer: the group (default developers)
    key: str | None = None  # kms-key-policy-deny: the key alias whose policy leaves the workload out
    nodegroup: str | None = None  # imds-exposed, agent-down, agent-throttling: one node group (default: all)
    versions: list[ImdsVersion] = Field(default_factory=lambda: list(IMDS_VERSIONS))  # imds-exposed


class SandboxTable(StrictModel):
    name: str
    key: str = "pk"


class SandboxValue(StrictModel):
    name: str
    value: str = Field(repr=False)  # seeded as a secret or parameter: never in a repr (--showlocals)


class SandboxKey(StrictModel):
    alias: str = Field(pattern=r"^[a-zA-Z0-9/_-]{1,250}$")  # without "alias/"
    # A fixed key id, so that policies and probes can name the key's ARN; default: a random one.
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class SandboxBucket(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    kms_key: str | None = None  # SSE-KMS by default with this key (an alias under sandbox.keys)


class SandboxRateLimit(StrictModel):
    """A token bucket per account (``sandbox.throttle.<service>``): ``rate`` requests a second, ``burst``
    held at most (default: one second's worth)."""

    rate: float = Field(gt=0, le=100_000)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)


class SandboxThrottle(StrictModel):
    """The benchmark setting's rate limits (sandbox/latency.py): none by default."""

    iam: SandboxRateLimit | None = None


def _latency_ranges(value: Any) -> Any:
    """``sandbox.latency``: target -> seconds per request, a number or ``[low, high]`` (uniform), each
    within 0..MAX_SECONDS; the targets are ``kubernetes``, the AWS services the sandbox answers and
    ``default`` (every other AWS service). Returned as ``(low, high)`` tuples."""
    if not isinstance(value, Mapping):
        return value  # pydantic says what it expected
    out: dict[Any, Any] = {}
    for key, spec in value.items():
        if key not in latency_.LATENCY_KEYS:
            raise FieldError(
                (str(key),), f"unknown latency target {shown(key)}; choose from: {', '.join(latency_.LATENCY_KEYS)}"
            )
        pair = [spec, spec] if not isinstance(spec, list) else spec
        if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
            raise FieldError((key,), "expected seconds per request: a number or [low, high] (e.g. [0.005, 0.02])")
        low, high = float(pair[0]), float(pair[1])
        if not (0 <= low <= high <= latency_.MAX_SECONDS):
            raise FieldError(
                (key,), f"expected 0 <= low <= high <= {latency_.MAX_SECONDS:g} seconds, got {shown(spec)}"
            )
        out[key] = (low, high)
    return out


# The label the sandbox's Deployment selects its pods by: a template may add labels, not change this one.
SELECTOR_LABEL = "app.kubernetes.io/name"
_TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")


class SandboxTemplate(StrictModel):
    """Pod template fields of one workload's Deployment (``sandbox.templates[]``), so a misconfigured
    placement or environment is written as it is on a cluster; they reach the workload's running pod too.
    The faults that change the template (host-network, proxy-captures-agent, static-keys-in-env) add to these."""

    workload: str
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    host_network: bool | None = None
    # Appended to the application container's env, as Kubernetes writes it ({name, value} or {name, valueFrom}).
    env: list[dict[str, Any]] = Field(default_factory=list, repr=False)  # may hold planted keys: never in a repr
    init_containers: list[dict[str, Any]] = Field(default_factory=list, repr=False)
    annotations: dict[str, str] = Field(default_factory=dict)  # the pod template's
    labels: dict[str, str] = Field(default_factory=dict)  # the pod template's, beside the selector's

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, t in enumerate(value):
            extra = [k for k in t if k not in _TOLERATION_KEYS]
            if extra:
                raise FieldError((i, extra[0]), f"unknown toleration field; allowed: {', '.join(_TOLERATION_KEYS)}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(value):
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise FieldError((i, "name"), "required: the variable's name")
            extra = [k for k in item if k not in ("name", "value", "valueFrom")]
            if extra:
                raise FieldError((i, extra[0]), "unknown env field; allowed: name, value, valueFrom")
            if "value" in item and not isinstance(item["value"], str):
                raise FieldError((i, "value"), "expected a string (the value is not shown); quote it in YAML")
            if "valueFrom" in item and not isinstance(item["valueFrom"], dict):
                raise FieldError((i, "valueFrom"), "expected a mapping (secretKeyRef, configMapKeyRef, fieldRef...)")
        return value

    @field_validator("init_containers")
    @classmethod
    def _init_containers(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, c in enumerate(value):
            for key in ("name", "image"):
                if not isinstance(c.get(key), str) or not c[key]:
                    raise FieldError((i, key), f"required: the init container's {key}")
            try:
                json_value(c)
            except ActionError as exc:
                raise FieldError((i, *exc.loc), f"not JSON: {exc}") from None
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if SELECTOR_LABEL in value:
            raise FieldError(
                (SELECTOR_LABEL,), "the sandbox's Deployment selects its pods by this label: set any other label"
            )
        return value


def served_kinds() -> dict[tuple[str, str], ResourceType] | None:
    """(apiVersion, kind) -> the resource the sandbox's API server serves for it, read from its resource table
    (so a kind added there can be seeded at once); None without the ``sandbox`` extra (the run then ends
    naming it, before anything is seeded)."""
    try:
        from pytest_eksid.sandbox.kubeapi.resources import RESOURCES
    except ImportError:
        return None
    return {(r.api_version, r.kind): r for r in RESOURCES}


def check_manifest(obj: Mapping[str, Any], kinds: Mapping[tuple[str, str], ResourceType] | None) -> None:
    """One ``sandbox.manifests`` object: a kind the sandbox serves, named, and in a namespace if namespaced.
    A :class:`FieldError` whose loc is inside the object."""
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise FieldError(
                (key,), f"required: the object's {key} (e.g. {'v1' if key == 'apiVersion' else 'ConfigMap'})"
            )
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise FieldError(("metadata",), "required: a mapping with the object's name (and namespace)")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise FieldError(("metadata", "name"), "required: the object's name (a seeded object is named, not generated)")
    if kinds is None:
        return
    rt = kinds.get((obj["apiVersion"], obj["kind"]))
    if rt is None:
        served = ", ".join(sorted(f"{k} ({v})" for v, k in kinds))
        raise FieldError(
            ("kind",),
            cut(
                f"{shown(obj['kind'])} ({shown(obj['apiVersion'])}) is not a kind the sandbox serves; served: {served}"
            ),
        )
    namespace = meta.get("namespace")
    if rt.namespaced and (not isinstance(namespace, str) or not namespace):
        raise FieldError(("metadata", "namespace"), f"required: {rt.kind} is namespaced")
    if not rt.namespaced and namespace is not None:
        raise FieldError(("metadata", "namespace"), f"{rt.kind} is cluster-scoped: remove the namespace")


class SandboxSection(StrictModel):
    roles: list[SandboxRole] = Field(default_factory=list)
    # A bucket is a name, or {name, kmsKey} for default SSE-KMS encryption.
    buckets: list[SandboxBucket] = Field(default_factory=list)
    objects: list[str] = Field(default_factory=list)  # s3 object ARNs to create (1 byte each)
    queues: list[str] = Field(default_factory=list)
    # A KMS key is an alias (without "alias/"), or {alias, id} to fix its key id.
    keys: list[SandboxKey] = Field(default_factory=list)
    tables: list[SandboxTable] = Field(default_factory=list)
    secrets: list[SandboxValue] = Field(default_factory=list)
    parameters: list[SandboxValue] = Field(default_factory=list)
    nodegroups: list[str] = Field(default_factory=lambda: ["ng-general", "ng-batch"], min_length=1)
    pod_start_seconds: float = Field(default=0.0, ge=0, le=60)  # injected pod start latency
    workload_pods: bool = True  # run one pod per workload (for --eksid-exec); off for large benchmarks
    # Hollow nodes (sandbox/hollow.py, for benchmarks of the runner): a probe pod runs the real probe once
    # per template; the others run no process, their result adapted from it (docs/sandbox.md).
    hollow_nodes: bool = False
    # python -c containers forked from an interpreter that has imported botocore (sandbox/warm.py): the same
    # process, less CPU; off, each starts cold (the benchmark's real-probe timing turns it off).
    warm_python: bool = True
    faults: list[SandboxFault] = Field(default_factory=list)
    templates: list[SandboxTemplate] = Field(default_factory=list)  # workloads' pod template fields
    # Kubernetes objects created as given after the sandbox's own (Namespaces before everything else).
    manifests: list[dict[str, Any]] = Field(default_factory=list, repr=False)  # may hold Secrets: never in a repr
    # The benchmark setting (docs/sandbox.md): per-request latency by target, rate limits by service; off by default.
    latency: dict[str, tuple[float, float]] = Field(default_factory=dict)
    throttle: SandboxThrottle = Field(default_factory=SandboxThrottle)

    @field_validator("latency", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        return _latency_ranges(value)

    @field_validator("manifests")
    @classmethod
    def _manifests(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kinds = served_kinds() if value else None
        seen: set[tuple[str, str, str]] = set()
        for i, obj in enumerate(value):
            try:
                json_value(obj)
                check_manifest(obj, kinds)
            except ActionError as exc:
                raise FieldError((i, *exc.loc), f"not JSON: {exc}") from None
            except FieldError as exc:
                raise FieldError((i, *exc.loc), str(exc)) from None
            key = (obj["kind"], str(obj["metadata"].get("namespace") or ""), obj["metadata"]["name"])
            if key in seen:
                raise FieldError((i, "metadata", "name"), f"{manifest_name(obj)} is listed twice")
            seen.add(key)
        return value

    @field_validator("keys", mode="before")
    @classmethod
    def _key_shorthand(cls, value: Any) -> Any:
        return [{"alias": k} if isinstance(k, str) else k for k in value] if isinstance(value, list) else value

    @field_validator("buckets", mode="before")
    @classmethod
    def _bucket_shorthand(cls, value: Any) -> Any:
        return [{"name": b} if isinstance(b, str) else b for b in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _references(self) -> SandboxSection:
        aliases = [k.alias for k in self.keys]
        for i, b in enumerate(self.buckets):
            if b.kms_key is not None and b.kms_key not in aliases:
                raise FieldError(
                    ("buckets", i, "kmsKey"),
                    f"bucket {shown(b.name)}: kmsKey {shown(b.kms_key)} is not under sandbox.keys",
                )
        for i, f in enumerate(self.faults):
            if f.fault == "kms-key-policy-deny" and f.key not in aliases:
                choices = ", ".join(aliases) or "none seeded: add one under sandbox.keys"
                raise FieldError(
                    ("faults", i, "key"),
                    cut(f"fault 'kms-key-policy-deny' needs 'key': a key alias under sandbox.keys ({choices})"),
                )
        return self


def cross_check(profile: Profile, sandbox: SandboxSection) -> None:
    """The section against the profile it is in: seeded roles for every workload, faults naming real workloads,
    roles, node groups and keys. A :class:`FieldError` whose loc is from the profile's top level."""
    roles = {r.name for r in sandbox.roles}
    account = profile.cluster.account_id
    for i, w in enumerate(profile.workloads):
        for field, arn in (("roleArn", w.role_arn), ("targetRoleArn", w.target_role_arn)):
            if arn is None:
                continue
            role_account, name = role_arn_parts(arn)
            if role_account != account:
                raise FieldError(
                    ("workloads", i, field),
                    f"workload {w.name!r}: role {arn} is in account {role_account}, not the cluster's "
                    f"(cluster.accountId {account}); the sandbox seeds roles in the cluster's account only: "
                    f"write arn:aws:iam::{account}:role/{name}",
                )
            if name not in roles:
                raise FieldError(
                    ("workloads", i, field),
                    f"workload {w.name!r}: role {arn} is not seeded; add a role named "
                    f"{name!r} under sandbox.roles (account {account})",
                )
    names = {w.name for w in profile.workloads}
    verbatim = {r.name for r in sandbox.roles if r.trust_policy is not None}
    for i, t in enumerate(sandbox.templates):
        if t.workload not in names:
            raise FieldError(
                ("sandbox", "templates", i, "workload"),
                cut(f"{shown(t.workload)} is not in workloads (choose one of: {', '.join(sorted(names))})"),
            )
        if [u.workload for u in sandbox.templates].index(t.workload) != i:
            raise FieldError(("sandbox", "templates", i, "workload"), f"workload {t.workload!r} has a template already")
    # Namespaced objects go into a namespace that exists: one the sandbox seeds, or one of the manifests.
    namespaces = {"default", "kube-system", "kube-public", "kube-node-lease", *(w.namespace for w in profile.workloads)}
    namespaces |= {str(m["metadata"]["name"]) for m in sandbox.manifests if m["kind"] == "Namespace"}
    for i, m in enumerate(sandbox.manifests):
        ns = m["metadata"].get("namespace")
        if ns is not None and ns not in namespaces:
            raise FieldError(
                ("sandbox", "manifests", i, "metadata", "namespace"),
                cut(
                    f"{manifest_name(m)}: namespace {shown(ns)} is neither seeded by the sandbox nor a Namespace "
                    f"under sandbox.manifests (seeded: {', '.join(sorted(namespaces))})"
                ),
            )
    for i, f in enumerate(sandbox.faults):
        if f.fault in TRUST_FAULTS and f.workload in names:
            role = role_arn_parts(profile.workload(str(f.workload)).role_arn)[1]
            if role in verbatim:
                raise FieldError(
                    ("sandbox", "faults", i, "fault"),
                    f"fault {f.fault!r} changes the generated trust of role {role!r}, which carries its trust "
                    "policy verbatim (trustPolicy): write the fault into that policy, or drop trustPolicy",
                )
    for i, f in enumerate(sandbox.faults):
        at = ("sandbox", "faults", i)
        if f.nodegroup is not None and f.nodegroup not in sandbox.nodegroups:
            groups = ", ".join(sandbox.nodegroups)
            raise FieldError(
                (*at, "nodegroup"),
                cut(f"fault {f.fault!r} names node group {shown(f.nodegroup)}; choose one of: {groups}"),
            )
        if f.fault == "undeclared-identity":
            _check_undeclared(profile, sandbox, f, at, roles, namespaces)
        if f.fault not in WORKLOAD_FAULTS:
            continue
        if f.workload not in names:
            raise FieldError(
                (*at, "workload"),
                cut(
                    f"fault {f.fault!r} names workload {shown(f.workload)}, which is not in workloads "
                    f"(choose one of: {', '.join(sorted(names))})"
                ),
            )
        workload = profile.workload(str(f.workload))
        mechanism = WORKLOAD_FAULTS[f.fault]
        if mechanism is not None and workload.mechanism != mechanism:
            raise FieldError(
                (*at, "workload"), f"fault {f.fault!r} applies to {mechanism} workloads; {f.workload!r} is not one"
            )
        if f.fault == "legacy-user-active-key" and workload.legacy_iam_user is None:
            raise FieldError(
                (*at, "workload"),
                f"fault 'legacy-user-active-key' needs workload {f.workload!r} to name legacyIamUser",
            )
        if f.fault == "exact-key-delete-grant" and not any(
            c.action == "s3:DeleteObject" and c.resource for c in workload.deny
        ):
            raise FieldError(
                (*at, "workload"),
                f"fault 'exact-key-delete-grant' needs workload {f.workload!r} to deny s3:DeleteObject "
                "on a key (an entry with its resource)",
            )
        if f.fault == "wrong-role" and (f.role is None or f.role not in roles):
            raise FieldError(
                (*at, "role") if f.role is not None else at,
                cut(
                    "fault 'wrong-role' needs 'role': the name of another role under sandbox.roles "
                    f"(choose one of: {', '.join(sorted(roles))})"
                ),
            )


def _check_undeclared(
    profile: Profile,
    sandbox: SandboxSection,
    f: SandboxFault,
    at: tuple[str | int, ...],
    roles: set[str],
    namespaces: set[str],
) -> None:
    """undeclared-identity: a seeded role, in a namespace that exists, on a ServiceAccount no workload declares."""
    if f.role is None or f.role not in roles:
        raise FieldError(
            (*at, "role") if f.role is not None else at,
            cut(
                "fault 'undeclared-identity' needs 'role': the name of a role under sandbox.roles "
                f"(choose one of: {', '.join(sorted(roles))})"
            ),
        )
    namespace = f.namespace or profile.workloads[0].namespace
    if namespace not in namespaces:
        raise FieldError(
            (*at, "namespace"),
            cut(
                f"fault 'undeclared-identity' names namespace {shown(namespace)}, which the sandbox does not seed "
                f"(seeded: {', '.join(sorted(namespaces))})"
            ),
        )
    sa = f.service_account or UNDECLARED_SERVICE_ACCOUNT
    if any((w.namespace, w.service_account) == (namespace, sa) for w in profile.workloads):
        raise FieldError(
            (*at, "serviceAccount"),
            f"fault 'undeclared-identity': {namespace}/{sa} is a workload's ServiceAccount; name one no workload uses",
        )


def manifest_name(obj: Mapping[str, Any]) -> str:
    """``kind/namespace/name`` (``kind/name`` when cluster-scoped), as errors name a seeded object."""
    meta = obj.get("metadata") or {}
    parts = [str(obj.get("kind")), *([str(meta["namespace"])] if meta.get("namespace") else []), str(meta.get("name"))]
    return shown("/".join(parts))


def section(loaded: LoadedProfile) -> SandboxSection:
    """The profile's ``sandbox:`` section, validated and checked against the profile; a
    :class:`~pytest_eksid.profile.ProfileError` naming the file, line and field otherwise."""
    if loaded.profile.sandbox is None:
        raise ProfileError(f"{loaded.path} has no 'sandbox' section: it describes a live cluster")
    try:
        validated = SandboxSection.model_validate(loaded.profile.sandbox)
    except ValidationError as exc:
        raise section_error(loaded, exc, SandboxSection, ("sandbox",)) from None
    try:
        cross_check(loaded.profile, validated)
    except FieldError as exc:
        raise section_error(loaded, exc, SandboxSection, ()) from None
    return validated


def of(profile: Profile) -> SandboxSection:
    """The section of a profile made in code (no file): errors name ``<profile>`` line 1."""
    return section(LoadedProfile(name="profile", path=Path("<profile>"), profile=profile))
