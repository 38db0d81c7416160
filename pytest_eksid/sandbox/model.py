"""The sandbox's section of a profile: what the emulator seeds and which faults it injects.

The core sees ``sandbox:`` as an opaque mapping (``Profile.sandbox``); this module is the model
of it, the catalogue of faults, and the checks of the section against the profile's workloads.
Its errors read as the core's do (``file:line: field.path: what``), through
:func:`pytest_eksid.profile.section_error`. Imports pydantic and the core only, never moto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pytest_eksid.probe.actions import ActionError, json_value
from pytest_eksid.profile import (
    FieldError,
    LoadedProfile,
    Profile,
    ProfileError,
    StrictModel,
    cut,
    role_arn_parts,
    section_error,
)
from pytest_eksid.profile_yaml import shown

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
}


class SandboxRole(StrictModel):
    name: str = Field(pattern=IAM_NAME_PATTERN)
    policy: dict[str, Any]

    @field_validator("policy")
    @classmethod
    def _policy_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json_value(value)
        except ActionError as exc:
            raise FieldError(exc.loc, f"not JSON: {exc}") from None
        return value


class SandboxFault(StrictModel):
    fault: FaultName
    workload: str | None = None  # wrong-role: whose binding changes
    role: str | None = None  # wrong-role: the role bound instead
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
    faults: list[SandboxFault] = Field(default_factory=list)

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
    for i, f in enumerate(sandbox.faults):
        at = ("sandbox", "faults", i)
        if f.nodegroup is not None and f.nodegroup not in sandbox.nodegroups:
            groups = ", ".join(sandbox.nodegroups)
            raise FieldError(
                (*at, "nodegroup"),
                cut(f"fault {f.fault!r} names node group {shown(f.nodegroup)}; choose one of: {groups}"),
            )
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
