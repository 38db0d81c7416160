"""Profiles: what a run checks, loaded from YAML into a strict model.

A profile names one cluster, how to run the probe there, and the workload identities to prove.
An optional ``sandbox`` section belongs to the embedded emulator, which validates it itself
(``pytest_eksid/sandbox/model.py``); here it is an opaque mapping. A live-cluster profile has none.

Every way a profile can be wrong ends in :class:`ProfileError`, whose message names the file,
the line, the field, what was wrong and what would be right.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from pytest_eksid import profile_yaml
from pytest_eksid.iam import actions as aws_actions
from pytest_eksid.probe.actions import ActionError, plan_item
from pytest_eksid.profile_yaml import Loc, dotted, is_secret, shown

# Matched with fullmatch and re.ASCII: "\d" is 0-9 only (no full-width digits), and nothing may follow, not even "\n".
ROLE_ARN_RE = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})", re.ASCII)
ACCOUNT_RE = re.compile(r"\d{12}", re.ASCII)
REGION_RE = re.compile(r"[a-z]{2}(?:-gov)?-[a-z]+-\d", re.ASCII)
ACTION_RE = re.compile(r"[a-z0-9-]+:[A-Za-z0-9]+", re.ASCII)
DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", re.ASCII)
# trustSharedWith: matched with fullmatch (a trailing newline does not slip past "$"), ASCII only.
OIDC_ISSUER_RE = re.compile(
    r"https://[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*/?", re.ASCII
)
EKS_CLUSTER_NAME_RE = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}", re.ASCII)
EKS_CLUSTER_ARN_RE = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:eks:[a-z]{2}(?:-gov)?-[a-z]+-[0-9]:[0-9]{12}:cluster/[0-9A-Za-z][A-Za-z0-9_-]{0,99}",
    re.ASCII,
)
REASON_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,299}", re.ASCII)  # printable ASCII, not blank

# Validation context key: the profile is the input of a discovery run, which may list no workloads yet.
DISCOVERING = "discovering"

Mechanism = Literal["pod-identity", "irsa"]
MECHANISMS: tuple[str, ...] = ("pod-identity", "irsa")


class ProfileError(Exception):
    """A profile that cannot be used; the message is meant for the person who wrote it."""


class FieldError(ValueError):
    """A cross-field problem that belongs to one field: ``loc`` is relative to the model that raised it."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _role_arn(value: str) -> str:
    if not ROLE_ARN_RE.fullmatch(value):
        expected = "arn:aws:iam::<12-digit account>:role/<name>"
        raise ValueError(f"not an IAM role ARN: {shown(value, 120)}; expected {expected}")
    return value


def _account(value: str) -> str:
    if not ACCOUNT_RE.fullmatch(value):
        raise ValueError(f"not a 12-digit AWS account id: {shown(value)}")
    return value


def _region(value: str) -> str:
    if not REGION_RE.fullmatch(value):
        raise ValueError(f"not an AWS region name: {shown(value)} (for example eu-west-1)")
    return value


def _action(value: str) -> str:
    if not ACTION_RE.fullmatch(value):
        raise ValueError(f"not an IAM action: {shown(value)}; expected service:Operation, e.g. s3:GetObject")
    if aws_actions.unknown(value):  # a typo (s3:GetObjcet): AWS's Service Authorization Reference has no such action
        raise ValueError(aws_actions.unknown_message(value))
    return value


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS_LABEL_RE.fullmatch(value):
        raise ValueError(f"not a Kubernetes name (lowercase DNS label): {shown(value)}")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(f"not a Kubernetes name (lowercase DNS subdomain): {shown(value)}")
    return value


def _oidc_issuer(value: str) -> str:
    if not OIDC_ISSUER_RE.fullmatch(value):
        raise ValueError(
            f"not an OIDC issuer URL: {value!r}; expected https://<host>/<path>, as "
            "'aws eks describe-cluster --query cluster.identity.oidc.issuer' prints it"
        )
    return value


def _cluster_ref(value: str) -> str:
    if not (EKS_CLUSTER_NAME_RE.fullmatch(value) or EKS_CLUSTER_ARN_RE.fullmatch(value)):
        raise ValueError(
            f"not an EKS cluster name or ARN: {value!r}; expected a name (letters, digits, - and _) or "
            "arn:aws:eks:<region>:<12-digit account>:cluster/<name>"
        )
    return value


def _reason(value: str) -> str:
    if not REASON_RE.fullmatch(value):
        raise ValueError("expected a one-line reason in printable ASCII (1 to 300 characters)")
    return value


RoleArn = Annotated[str, AfterValidator(_role_arn)]
AccountId = Annotated[str, AfterValidator(_account)]
Region = Annotated[str, AfterValidator(_region)]
Action = Annotated[str, AfterValidator(_action)]
K8sName = Annotated[str, AfterValidator(_dns_subdomain)]
Namespace = Annotated[str, AfterValidator(_dns_label)]
OidcIssuer = Annotated[str, AfterValidator(_oidc_issuer)]
ClusterRef = Annotated[str, AfterValidator(_cluster_ref)]
Reason = Annotated[str, AfterValidator(_reason)]


class StrictModel(BaseModel):
    """Every profile model (and a provider's section model): strict types, no unknown keys, camelCase keys."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Cluster(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    region: Region
    account_id: AccountId
    kube_context: str | None = None
    kubeconfig: str | None = None
    # The AWS named profile (~/.aws/config) the runner's own calls use for this cluster;
    # default: the environment's credentials.
    aws_profile: str | None = Field(default=None, min_length=1)
    node_role_arn: RoleArn | None = None
    owner_label: str = "platform.mycompany.io/identity-owner"  # the ServiceAccount label naming the owner


class Toleration(StrictModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Probe(StrictModel):
    image: str = Field(min_length=1)
    timeout_seconds: int = Field(default=120, ge=5, le=3600)
    # How long the probe waits for each IMDS request. 1 s is what the SDKs' default chain waits
    # (botocore utils.DEFAULT_METADATA_SERVICE_TIMEOUT = 1): an IMDS that answers no faster is out of
    # the SDK's reach too. A hop limit of 1 drops the reply whatever the wait, so this only decides
    # how long "blocked" takes to prove; raise it for a node whose IMDS is known to be slow.
    imds_timeout_seconds: float = Field(default=1, gt=0, le=30)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    # IMDS is a property of the node: probe it once per node group the workloads can run on.
    node_groups: list[str] = Field(default_factory=list)
    node_group_label: str = "eks.amazonaws.com/nodegroup"


class WorkloadProbe(StrictModel):
    """Per-workload overrides of how its probe is placed (``workloads[].probe``). By default the probe mirrors
    the workload's own pod template (nodeSelector, node affinity, tolerations, hostNetwork, dnsPolicy, proxy
    and non-credential AWS_* variables); each field given here replaces the mirrored value."""

    node_selector: dict[str, str] | None = None
    node_affinity: dict[str, Any] | None = None
    tolerations: list[Toleration] | None = None
    host_network: bool | None = None
    dns_policy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"] | None = None
    env: dict[str, str] | None = None
    mirror: bool = True  # false: never read the template, use the profile's probe settings (plus these)

    @field_validator("env")
    @classmethod
    def _mirrored_names_only(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from pytest_eksid.checks.placement import MIRRORED_VARIABLES

        for name in value or {}:
            if name not in MIRRORED_VARIABLES:
                raise ValueError(
                    f"probe.env may set only proxy and AWS settings variables, not {shown(name)}; "
                    f"allowed: {', '.join(sorted(MIRRORED_VARIABLES))}"
                )
        return value


class GenericCall(StrictModel):
    service: str = Field(min_length=2)
    operation: str = Field(pattern=r"^[A-Z][A-Za-z0-9]+$")
    params: dict[str, Any] = Field(default_factory=dict)


class ActionCheck(StrictModel):
    action: Action
    resource: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    live: bool = False  # run calls with side effects for real (writes, receives)
    call: GenericCall | None = None  # for actions outside the catalogue

    @model_validator(mode="after")
    def _probe_exists(self) -> ActionCheck:
        try:
            self.plan_item("check", "allowed")
        except ActionError as exc:
            raise FieldError(exc.loc, str(exc)) from None
        return self

    def plan_item(self, ident: str, expect: str) -> dict[str, Any]:
        return plan_item(
            ident=ident,
            expect=expect,
            action=self.action,
            resource=self.resource,
            params=dict(self.params),
            live=self.live,
            call=self.call.model_dump() if self.call else None,
        )


class TrustShare(StrictModel):
    """One subject besides the workload that its role's trust policy admits on purpose.

    ``namespace``/``serviceAccount`` name another ServiceAccount (default: the workload's own);
    ``oidcIssuer`` (IRSA) or ``cluster`` (Pod Identity; a name means this account and region, or
    an EKS cluster ARN) names another cluster (default: this one).
    """

    namespace: Namespace | None = None
    service_account: K8sName | None = None
    oidc_issuer: OidcIssuer | None = None
    cluster: ClusterRef | None = None
    reason: Reason

    @model_validator(mode="after")
    def _names_something(self) -> TrustShare:
        if (self.namespace is None) != (self.service_account is None):
            raise ValueError("namespace and serviceAccount go together: name both, or neither (this workload's own)")
        if self.oidc_issuer is not None and self.cluster is not None:
            raise ValueError("name another cluster once: oidcIssuer (IRSA) or cluster (Pod Identity), not both")
        if self.namespace is None and self.oidc_issuer is None and self.cluster is None:
            raise ValueError("name what else the trust admits: namespace + serviceAccount, oidcIssuer or cluster")
        return self


class Deployer(StrictModel):
    """A Kubernetes subject expected to be able to run code as a workload's ServiceAccount (the deploy
    pipeline's ServiceAccount, the GitOps controller, an on-call group): an RBAC subject."""

    kind: Literal["User", "Group", "ServiceAccount"]
    name: str = Field(min_length=1, max_length=253)
    namespace: Namespace | None = None  # ServiceAccount only, and required there

    @model_validator(mode="after")
    def _namespace_for_service_accounts(self) -> Deployer:
        if self.kind == "ServiceAccount" and self.namespace is None:
            raise ValueError("a ServiceAccount deployer needs its namespace")
        if self.kind != "ServiceAccount" and self.namespace is not None:
            raise ValueError(f"a {self.kind} has no namespace: only a ServiceAccount deployer names one")
        return self


class NamespaceDeployers(StrictModel):
    """The deployers of every declared workload in ``namespace`` that does not list its own."""

    namespace: Namespace
    subjects: list[Deployer] = Field(min_length=1)


class IgnoredIdentity(StrictModel):
    """A workload identity of the cluster the profile knowingly does not declare (a platform add-on's),
    matched by shell-style patterns (``*``, ``?``, ``[...]``) on namespace, ServiceAccount and role (its ARN
    or name); every pattern given must match. The reason shows in the report."""

    namespace: str | None = Field(default=None, min_length=1, max_length=253)
    service_account: str | None = Field(default=None, min_length=1, max_length=253)
    role: str | None = Field(default=None, min_length=1, max_length=2048)
    reason: Reason

    @model_validator(mode="after")
    def _matches_something(self) -> IgnoredIdentity:
        if self.namespace is None and self.service_account is None and self.role is None:
            raise ValueError("name what to ignore: namespace, serviceAccount and/or role (patterns)")
        return self


# What test_inventory_changes may fail on, comparing the cluster with --eksid-inventory-baseline (docs/inventory.md).
InventoryChange = Literal["new", "removed", "role", "targetRole", "owner", "trust", "subjects"]
INVENTORY_CHANGES: tuple[str, ...] = ("new", "removed", "role", "targetRole", "owner", "trust", "subjects")


class InventoryPolicy(StrictModel):
    """How the run's inventory is held against an earlier one (``--eksid-inventory-baseline``): the kinds of
    change that fail ``test_inventory_changes``; none listed, changes are reported, not judged."""

    fail_on_changes: list[InventoryChange] = Field(default_factory=list)

    @field_validator("fail_on_changes")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"listed twice: {', '.join(repeated)}")
        return value


class Workload(StrictModel):
    name: K8sName
    namespace: Namespace
    service_account: K8sName
    mechanism: Mechanism
    role_arn: RoleArn
    # Pod Identity role chaining: the association's targetRoleArn, the identity the pods finally get.
    target_role_arn: RoleArn | None = None
    owner: str | None = None
    # How to find the workload's own pod templates (Deployments, StatefulSets, ...) in its namespace.
    selector: str | None = None  # default: app.kubernetes.io/name=<name>
    legacy_iam_user: str | None = None  # an IAM user the workload used before: it must hold no active keys
    migration: bool = False  # both mechanisms bound on purpose (IRSA -> Pod Identity migration)
    allow: list[ActionCheck] = Field(default_factory=list)
    deny: list[ActionCheck] = Field(default_factory=list)
    probe: WorkloadProbe | None = None  # how this workload's probe is placed (default: mirror its pod template)
    # Other subjects the role's trust policy admits on purpose (a shared role, another cluster).
    trust_shared_with: list[TrustShare] = Field(default_factory=list)
    # Who may run code as the ServiceAccount (create pods, tokens, exec, ...); None: the namespace's entry
    # under the profile's deployers, and without one the subjects are reported, not judged.
    deployers: list[Deployer] | None = None

    @property
    def final_role_arn(self) -> str:
        """The role the pods' calls finally run as (the target role of a chained association)."""
        return self.target_role_arn or self.role_arn

    @model_validator(mode="after")
    def _target_needs_pod_identity(self) -> Workload:
        if self.target_role_arn is not None and self.mechanism != "pod-identity":
            raise FieldError(
                ("targetRoleArn",), "targetRoleArn is a Pod Identity association setting; IRSA workloads cannot have it"
            )
        return self

    @model_validator(mode="after")
    def _trust_shares(self) -> Workload:
        seen: set[tuple[str | None, ...]] = set()
        for i, share in enumerate(self.trust_shared_with):
            where = f"trustSharedWith[{i}]"
            if self.mechanism == "irsa" and share.cluster is not None:
                raise ValueError(f"{where}: an IRSA trust names another cluster by its OIDC issuer: use oidcIssuer")
            if self.mechanism == "pod-identity" and share.oidc_issuer is not None:
                raise ValueError(f"{where}: a Pod Identity trust names another cluster by name or ARN: use cluster")
            own = (share.namespace or self.namespace, share.service_account or self.service_account)
            if own == (self.namespace, self.service_account) and share.oidc_issuer is None and share.cluster is None:
                raise ValueError(f"{where}: {self.namespace}/{self.service_account} is this workload itself")
            key = (*own, share.oidc_issuer, share.cluster)
            if key in seen:
                raise ValueError(f"{where}: the same subject is listed twice")
            seen.add(key)
        return self


class Profile(StrictModel):
    cluster: Cluster
    probe: Probe
    # At least one, except in a discovery run (--eksid-discover), which starts from the cluster alone.
    workloads: list[Workload] = Field(default_factory=list)
    # Identities of the cluster the profile knowingly leaves undeclared (test_undeclared_identities).
    ignore: list[IgnoredIdentity] = Field(default_factory=list)
    # Per namespace: who may run code as its workloads' ServiceAccounts (test_who_can_become).
    deployers: list[NamespaceDeployers] = Field(default_factory=list)
    # The changes since --eksid-inventory-baseline that fail test_inventory_changes.
    inventory: InventoryPolicy = Field(default_factory=InventoryPolicy)
    # The embedded emulator's section, opaque to the core: the sandbox's own plugin validates it
    # (pytest_eksid/sandbox/model.py). A profile without one describes a live cluster. Never in a repr
    # (--showlocals): it may hold seeded secrets.
    sandbox: dict[str, Any] | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _has_workloads(self, info: ValidationInfo) -> Profile:
        if not self.workloads and not (info.context or {}).get(DISCOVERING):
            raise FieldError(
                ("workloads",),
                "List should have at least 1 item: a profile declares the workload identities to check; "
                "to write a starter profile from the cluster, run with --eksid-discover PATH",
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        first: dict[str, int] = {}
        for i, w in enumerate(self.workloads):
            if w.name in first:
                raise FieldError(
                    ("workloads", i, "name"),
                    f"workload name {w.name!r} is used twice (also workloads[{first[w.name]}]); names must be unique",
                )
            first[w.name] = i
        namespaces: dict[str, int] = {}
        for i, entry in enumerate(self.deployers):
            if entry.namespace in namespaces:
                raise FieldError(
                    ("deployers", i, "namespace"),
                    f"namespace {entry.namespace!r} is listed twice (also deployers[{namespaces[entry.namespace]}])",
                )
            namespaces[entry.namespace] = i
        self._check_live_accounts()
        return self

    def _check_live_accounts(self) -> None:
        # A Pod Identity association's own role must be in the cluster's account; a role elsewhere is
        # reached as its targetRoleArn, assumed with the association's role (EKS user guide,
        # pod-id-assign-target-role). An IRSA role may live in another account that has an IAM OIDC
        # provider for the cluster's issuer (EKS user guide, cross-account-access): not refused.
        account = self.cluster.account_id
        for i, w in enumerate(self.workloads):
            role_account = role_arn_parts(w.role_arn)[0]
            if w.mechanism == "pod-identity" and role_account != account:
                raise FieldError(
                    ("workloads", i, "roleArn"),
                    f"workload {w.name!r}: a Pod Identity association's role must be in the cluster's account "
                    f"(cluster.accountId {account}), this one is in {role_account}; to reach a role in another "
                    "account, give it as targetRoleArn and keep roleArn a role of the cluster's account",
                )

    def deployers_of(self, w: Workload) -> list[Deployer] | None:
        """The subjects expected to be able to become ``w``'s ServiceAccount; None when the profile says none."""
        if w.deployers is not None:
            return w.deployers
        for entry in self.deployers:
            if entry.namespace == w.namespace:
                return entry.subjects
        return None

    def workload(self, name: str) -> Workload:
        """The workload of that name; KeyError if there is none."""
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)


def role_arn_parts(arn: str) -> tuple[str, str]:
    """Return (account id, role name) of a role ARN."""
    m = ROLE_ARN_RE.fullmatch(arn)
    if m is None:
        raise ValueError(f"not an IAM role ARN: {shown(arn, 120)}")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile with where it came from."""

    name: str
    path: Path
    profile: Profile
    # The line of each field path in the file: how a provider that validates a section of its own
    # (the sandbox's ``sandbox:``) names the line of a problem, through :func:`section_error`.
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False, compare=False)


def resolve_profile_path(spec: str, rootdir: Path) -> Path:
    """``NAME`` means ``<rootdir>/profiles/NAME.yaml``; anything path-like is a path."""
    looks_like_path = "/" in spec or "\\" in spec or spec.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(spec).expanduser()
        if not path.is_absolute() and not path.exists():
            path = rootdir / path
    else:
        path = rootdir / "profiles" / f"{spec}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (rootdir / "profiles").glob("*.yaml"))
        hint = f"known profiles: {', '.join(known)}" if known else f"no profiles under {rootdir / 'profiles'}"
        if not known and not looks_like_path:
            hint += (
                f"; the rootdir is {rootdir}: a path given as '--profile /a/b.yaml' or '--fleet /a/f.yaml' "
                "(with a space) can move pytest's rootdir there, write '--profile=/a/b.yaml' instead"
            )
        raise ProfileError(f"profile {spec!r}: no such file {path} ({hint}; or pass a path to a YAML file)")
    return path


def load_profile(spec: str, rootdir: Path, *, discovering: bool = False) -> LoadedProfile:
    """The profile's core model; a ``sandbox:`` section stays an opaque mapping here (the provider that
    owns it validates it, with :func:`section_error` for its messages). ``discovering``: the input of
    ``--eksid-discover``, which may declare no workloads yet."""
    path = resolve_profile_path(spec, rootdir)
    shape = "a profile is a YAML mapping with 'cluster' and 'workloads' keys"
    context = {DISCOVERING: True} if discovering else None
    profile, lines = _load_model(path, Profile, shape, context)
    return LoadedProfile(name=path.stem, path=path, profile=profile, lines=lines)


M = TypeVar("M", bound=BaseModel)


def section_error(
    loaded: LoadedProfile, exc: ValidationError | FieldError, model: type[BaseModel], at: Loc
) -> ProfileError:
    """A provider's own section failed validation: the same ``file:line: field.path: what`` message as the
    core's. ``exc`` is pydantic's error for ``model`` validated from the data at ``at`` (``("sandbox",)``),
    or one :class:`FieldError` whose ``loc`` is relative to the profile's top level."""
    if isinstance(exc, FieldError):
        line = _line_for(exc.loc, loaded.lines)
        problem = cut(f"  {loaded.path}:{line}: {dotted(exc.loc) or '(top level)'}: {exc}", _MAX_PROBLEM)
        return ProfileError(f"{loaded.path}: invalid profile (1 problem)\n{problem}")
    return ProfileError(_format_errors(loaded.path, exc, loaded.lines, model, at))


def _load_model(
    path: Path, model: type[M], shape: str, context: dict[str, Any] | None = None
) -> tuple[M, dict[Loc, int]]:
    """Parse and validate a YAML file; every problem is a ProfileError naming the file and line."""
    try:
        document = profile_yaml.read(path)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except profile_yaml.YamlProblem as exc:
        where = f"{path}:{exc.line}" if exc.line is not None else str(path)
        raise ProfileError(f"{where}: {exc.message}") from None
    if not isinstance(document.data, dict):
        raise ProfileError(f"{path}: {shape}")
    try:
        return model.model_validate(document.data, context=context), document.lines
    except ValidationError as exc:
        raise ProfileError(_format_errors(path, exc, document.lines, model)) from None


MAX_MESSAGE = 2000  # characters of one ProfileError: the first problems, then how many more
_MAX_PROBLEM = 900  # characters of one problem's line


def _format_errors(
    path: Path, exc: ValidationError, lines: Mapping[Loc, int], model: type[BaseModel], at: Loc = ()
) -> str:
    """``at``: where in the file the data ``model`` validated sits (a provider's section), else the top."""
    what = "fleet file" if model is Fleet else "profile"
    count = exc.error_count()
    out = [f"{path}: invalid {what} ({count} problem{'s' if count > 1 else ''})"]
    size = len(out[0])
    for shown_count, err in enumerate(exc.errors(include_url=False)):
        raised = (err.get("ctx") or {}).get("error")
        loc: Loc = (*at, *err["loc"], *(raised.loc if isinstance(raised, FieldError) else ()))
        line = _line_for(loc, lines)
        explained = _explain(err, loc, model, len(at))
        problem = cut(f"  {path}:{line}: {dotted(loc) or '(top level)'}: {explained}", _MAX_PROBLEM)
        if size + len(problem) > MAX_MESSAGE:
            out.append(f"  ... and {count - shown_count} more (fix these first)")
            break
        out.append(problem)
        size += len(problem) + 1
    return "\n".join(out)


def cut(text: str, limit: int = _MAX_PROBLEM) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _explain(err: Any, loc: Loc, model: type[BaseModel], depth: int = 0) -> str:
    """``loc`` is from the file's top; ``model`` was validated from ``loc[:depth]`` down."""
    kind = err["type"]
    if kind == "extra_forbidden":
        key = "(not shown)" if is_secret(loc) else shown(loc[-1])
        return f"unknown key {key}; allowed here: {', '.join(_allowed_keys(loc[depth:-1], model))}"
    if kind == "missing":
        return "required field is missing"
    # Values seeded as secrets are never echoed, not even mistyped.
    secret = is_secret(loc)
    if kind == "string_type" and secret:
        return "expected a string (the value is not shown); quote it in YAML"
    got = "(a value, not shown)" if secret else shown(err.get("input"))
    if kind == "string_type":
        value = err["input"]
        example = f' (quote it in YAML, e.g. "{shown(value, 40)}")' if isinstance(value, (int, float)) else ""
        return f"expected a string, got {got}{example or ' (quote it in YAML)'}"
    if kind == "literal_error":
        return f"{err['msg']} (got {got})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}"
    if kind == "list_type":
        return f"expected a list, got {got}: write [a, b], or one '- item' per line below the key"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (key: value lines below the key), got {got}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind.startswith(("greater_than", "less_than", "string_too", "too_short", "too_long", "string_pattern")):
        return f"{msg}, got {got}"
    return msg


def _allowed_keys(loc: tuple[str | int, ...], model: type[BaseModel]) -> list[str]:
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# --- fleets: several clusters in one run ------------------------------------------------------


class FleetCluster(StrictModel):
    profile: str = Field(min_length=1)  # NAME (profiles/NAME.yaml under the rootdir) or a path relative to the file
    kube_context: str | None = None  # overrides the profile's cluster.kubeContext
    kubeconfig: str | None = None  # overrides cluster.kubeconfig (relative to the fleet file)
    aws_profile: str | None = Field(default=None, min_length=1)  # overrides cluster.awsProfile


class Fleet(StrictModel):
    clusters: list[FleetCluster] = Field(min_length=1)


def load_fleet(spec: str, rootdir: Path, base: Path) -> list[LoadedProfile]:
    """The profiles a fleet file lists, with its per-cluster overrides applied.

    ``spec`` is relative to ``base`` (where the option came from); a cluster's ``profile`` is a NAME
    under the rootdir's ``profiles/`` or a path relative to the fleet file.
    """
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ProfileError(f"fleet file {spec!r}: no such file {path}")
    fleet, _ = _load_model(path, Fleet, "a fleet file is a YAML mapping with a 'clusters' list")
    out: list[LoadedProfile] = []
    for i, entry in enumerate(fleet.clusters):
        where = f"{path}: clusters[{i}]"
        spec_path = entry.profile
        if "/" in spec_path or spec_path.endswith((".yaml", ".yml")):
            spec_path = str(path.parent / Path(spec_path).expanduser())  # an absolute path stays as it is
        try:
            loaded = load_profile(spec_path, rootdir)
        except ProfileError as exc:
            raise ProfileError(f"{where}: {exc}") from None
        overrides: dict[str, Any] = {}
        if entry.kube_context is not None:
            overrides["kube_context"] = entry.kube_context
        if entry.kubeconfig is not None:
            overrides["kubeconfig"] = str((path.parent / Path(entry.kubeconfig).expanduser()).resolve())
        if entry.aws_profile is not None:
            overrides["aws_profile"] = entry.aws_profile
        if overrides:
            cluster = loaded.profile.cluster.model_copy(update=overrides)
            loaded = replace(loaded, profile=loaded.profile.model_copy(update={"cluster": cluster}))
        out.append(loaded)
    return out


def check_unique_names(profiles: Iterable[LoadedProfile]) -> None:
    """Profile names become test ids (``<profile>/<workload>``): two of a name would be ambiguous."""
    seen: dict[str, Path] = {}
    for loaded in profiles:
        if loaded.name in seen:
            raise ProfileError(
                f"two profiles named {loaded.name!r} in one run ({seen[loaded.name]} and {loaded.path}): "
                "test ids are <profile>/<workload>, so profile file names must differ"
            )
        seen[loaded.name] = loaded.path
