"""Who can become a workload identity: the Kubernetes subjects that can run code as a ServiceAccount.

Anyone who can get a process running under a ServiceAccount holds its IAM role, whatever the
trust policy says: the trust admits the ServiceAccount, not the person who started the pod. The
ways, computed from RBAC objects as the API server's RBAC authorizer decides them
[kubernetes/kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go; pkg/apis/rbac/v1/evaluation_helpers.go
VerbMatches, APIGroupMatches, ResourceMatches, ResourceNameMatches]:

- create a pod in the namespace (it may name any ServiceAccount there), or create any pod
  controller (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController);
  update or patch one whose pod template is mutable (all but Job's) to point it at the
  ServiceAccount [EKS_FACTS "Who can become a workload identity"; rbac-police's assign_sa rule];
- create a token for it (``serviceaccounts/token``), or impersonate it (``impersonate`` on
  ``serviceaccounts``, or on the user ``system:serviceaccount:<ns>:<sa>``);
- run commands in its running pods: ``pods/exec`` or ``pods/attach`` (``create``: since Kubernetes 1.30 the
  WebSocket upgrade needs it too, so ``get`` runs nothing), or add an ephemeral container
  (``pods/ephemeralcontainers`` update/patch);
- impersonate a user, group or ServiceAccount that can do one of the above (followed to a fixpoint).

Aggregated ClusterRoles are taken as the API returns them (the aggregation controller has already
filled their rules). Bindings Kubernetes or EKS create for their own controllers are *platform*
grants: reported, never a failure (every cluster's replicaset-controller can create pods).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_eksid.checks import Finding, shown

__all__ = [
    "Grant",
    "RbacObjects",
    "Subject",
    "as_the_gates",
    "become_findings",
    "become_notes",
    "can_i",
    "subject_of_user",
    "subjects_of",
    "who_can_become",
]

# RoleBindings/ClusterRoleBindings Kubernetes creates for itself carry this label
# [kubernetes/kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go: bootstrappingLabel].
BOOTSTRAP_LABEL = ("kubernetes.io/bootstrapping", "rbac-defaults")
# EKS's own control-plane bindings are named eks:* (eks:addon-manager, eks:node-manager, ...);
# system:masters and system:nodes are the apiserver's/node authorizer's, not RBAC subjects one binds.
PLATFORM_BINDING_PREFIXES = ("system:", "eks:")
PLATFORM_GROUPS = frozenset({"system:masters", "system:nodes"})
# The users EKS's own components authenticate as (eks:addon-manager, eks:node-manager, ...).
EKS_USER_PREFIX = "eks:"

_POD_CONTROLLERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("create",)),
    ("apps", "deployments", ("create", "update", "patch")),
    ("apps", "replicasets", ("create", "update", "patch")),
    ("apps", "statefulsets", ("create", "update", "patch")),
    ("apps", "daemonsets", ("create", "update", "patch")),
    ("batch", "jobs", ("create",)),  # a Job's pod template is immutable once created
    ("batch", "cronjobs", ("create", "update", "patch")),
    ("", "replicationcontrollers", ("create", "update", "patch")),
)


@dataclass(frozen=True, order=True)
class Subject:
    """An RBAC subject (``rbac.authorization.k8s.io/v1`` Subject): User, Group or ServiceAccount."""

    kind: str
    name: str
    namespace: str = ""

    @property
    def user(self) -> str | None:
        """The user name this subject authenticates as (None for a group)."""
        if self.kind == "ServiceAccount":
            return f"system:serviceaccount:{self.namespace}:{self.name}"
        return self.name if self.kind == "User" else None

    def label(self) -> str:
        """``ServiceAccount ns/name``, ``Group name``: names from the cluster bounded and escaped."""
        where = f"{shown(self.namespace)}/" if self.kind == "ServiceAccount" else ""
        return f"{self.kind} {where}{shown(self.name, 120)}"


@dataclass(frozen=True)
class Grant:
    """One way ``subject`` can run code as the ServiceAccount: ``verb`` on ``resource`` (``group``),
    given by ``role`` through ``binding``; ``via`` when it works by impersonating another subject."""

    subject: Subject
    verb: str
    resource: str
    group: str
    name: str | None
    binding: str
    role: str
    platform: bool = False
    via: tuple[Subject, ...] = field(default=())

    @property
    def action(self) -> str:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}"

    def how(self) -> str:
        chain = "".join(f" by impersonating {s.label()}" for s in self.via)
        return f"{self.action} ({self.role} via {self.binding}){chain}"


@dataclass(frozen=True)
class RbacObjects:
    """The RBAC objects of a cluster, as the API lists them (dicts of ``items``)."""

    roles: Sequence[Mapping[str, Any]] = ()
    cluster_roles: Sequence[Mapping[str, Any]] = ()
    role_bindings: Sequence[Mapping[str, Any]] = ()
    cluster_role_bindings: Sequence[Mapping[str, Any]] = ()


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


@dataclass(frozen=True)
class _Rule:
    verbs: tuple[str, ...]
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    names: tuple[str, ...]

    def allows(self, verb: str, group: str, resource: str, name: str | None) -> bool:
        if not ("*" in self.verbs or verb in self.verbs):
            return False
        if not ("*" in self.groups or group in self.groups):
            return False
        sub = resource.partition("/")[2]
        if not any(r in ("*", resource) or (sub and r == f"*/{sub}") for r in self.resources):
            return False
        if not self.names:
            return True
        # resourceNames restrict requests that name an object; create of a new object names none
        return name is not None and name in self.names


def _rules(role: Mapping[str, Any] | None) -> list[_Rule]:
    if role is None or not isinstance(role.get("rules"), list):
        return []
    out = []
    for raw in role["rules"]:
        if not isinstance(raw, Mapping) or raw.get("nonResourceURLs"):
            continue
        out.append(
            _Rule(
                tuple(_strs(raw.get("verbs"))),
                tuple(_strs(raw.get("apiGroups"))),
                tuple(_strs(raw.get("resources"))),
                tuple(_strs(raw.get("resourceNames"))),
            )
        )
    return out


@dataclass(frozen=True)
class _Binding:
    label: str  # "RoleBinding ns/name" or "ClusterRoleBinding name"
    role: str  # "ClusterRole name" or "Role ns/name"
    namespace: str | None  # None: cluster-wide
    subjects: tuple[Subject, ...]
    rules: tuple[_Rule, ...]
    platform: bool


def _is_platform(binding: Mapping[str, Any], role_name: str) -> bool:
    meta = _meta(binding)
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and labels.get(BOOTSTRAP_LABEL[0]) == BOOTSTRAP_LABEL[1]:
        return True
    name = meta.get("name")
    if not (isinstance(name, str) and name.startswith(PLATFORM_BINDING_PREFIXES)):
        return False
    if role_name.startswith(PLATFORM_BINDING_PREFIXES):
        return True
    # EKS also binds a role of its own name-less kind to its own users: every cluster with managed add-ons has
    # ClusterRoleBinding eks:addon-cluster-admin -> ClusterRole cluster-admin -> User eks:addon-manager [EKS user
    # guide, "Amazon EKS add-ons"]. Only eks: users: a binding so named that reaches anyone else is judged.
    subjects = [s for s in binding.get("subjects") or [] if isinstance(s, Mapping)]
    return bool(subjects) and all(
        s.get("kind") == "User" and isinstance(s.get("name"), str) and s["name"].startswith(EKS_USER_PREFIX)
        for s in subjects
    )


def _subjects(binding: Mapping[str, Any], namespace: str | None) -> tuple[Subject, ...]:
    out = []
    for raw in binding.get("subjects") or []:
        if not isinstance(raw, Mapping):
            continue
        kind, name = raw.get("kind"), raw.get("name")
        if kind not in ("User", "Group", "ServiceAccount") or not isinstance(name, str):
            continue
        ns = raw.get("namespace") if isinstance(raw.get("namespace"), str) else ""
        if kind == "ServiceAccount" and not ns:
            ns = namespace or ""  # the RBAC authorizer defaults it to the binding's namespace
        out.append(Subject(str(kind), name, str(ns) if kind == "ServiceAccount" else ""))
    return tuple(out)


def _ref(binding: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = binding.get("roleRef")
    return ref if isinstance(ref, Mapping) else {}


def _bindings(rbac: RbacObjects) -> list[_Binding]:
    cluster_roles = {_meta(r).get("name"): r for r in rbac.cluster_roles}
    roles = {(_meta(r).get("namespace"), _meta(r).get("name")): r for r in rbac.roles}
    out: list[_Binding] = []
    for b in rbac.cluster_role_bindings:
        ref = _ref(b)
        name = str(ref.get("name", ""))
        if ref.get("kind") != "ClusterRole":
            continue
        out.append(
            _Binding(
                f"ClusterRoleBinding {shown(_meta(b).get('name'), 120)}",
                f"ClusterRole {shown(name, 120)}",
                None,
                _subjects(b, None),
                tuple(_rules(cluster_roles.get(name))),
                _is_platform(b, name),
            )
        )
    for b in rbac.role_bindings:
        ns = str(_meta(b).get("namespace", ""))
        ref = _ref(b)
        name = str(ref.get("name", ""))
        if ref.get("kind") == "ClusterRole":
            role, label = cluster_roles.get(name), f"ClusterRole {shown(name, 120)}"
        elif ref.get("kind") == "Role":
            role, label = roles.get((ns, name)), f"Role {shown(ns)}/{shown(name, 120)}"
        else:
            continue
        out.append(
            _Binding(
                f"RoleBinding {shown(ns)}/{shown(_meta(b).get('name'), 120)}",
                label,
                ns,
                _subjects(b, ns),
                tuple(_rules(role)),
                _is_platform(b, name),
            )
        )
    return out


def _direct_rights(
    namespace: str, service_account: str, pod_names: Sequence[str]
) -> list[tuple[str, str, str, str | None, bool]]:
    """(verb, group, resource, name, cluster_scoped) requests any of which lets the caller run code as the SA."""
    out: list[tuple[str, str, str, str | None, bool]] = []
    for group, resource, verbs in _POD_CONTROLLERS:
        out += [(verb, group, resource, None, False) for verb in verbs]
    out.append(("create", "", "serviceaccounts/token", service_account, False))
    out.append(("impersonate", "", "serviceaccounts", service_account, False))
    out.append(("impersonate", "", "users", f"system:serviceaccount:{namespace}:{service_account}", True))
    # Rights on the SA's pods: any pod of the namespace (a rule without resourceNames; a pod of the SA may
    # run at any time), or one of its running pods by name. Exec and attach need `create`: SPDY always posted,
    # and since Kubernetes 1.30 the WebSocket upgrade (a GET) is authorized as `create` too
    # (AuthorizePodWebsocketUpgradeCreatePermission, on by default; every EKS version in support is newer), so a
    # read-only role's `get` on pods/exec runs nothing.
    for pod in (None, *pod_names):
        for sub in ("exec", "attach"):
            out.append(("create", "", f"pods/{sub}", pod, False))
        out += [(verb, "", "pods/ephemeralcontainers", pod, False) for verb in ("update", "patch")]
    return out


def _applies(binding: _Binding, namespace: str | None) -> bool:
    """Whether the binding's rules count for a request in ``namespace`` (None: a cluster-scoped resource)."""
    return binding.namespace is None or binding.namespace == namespace


def who_can_become(
    namespace: str, service_account: str, rbac: RbacObjects, *, pod_names: Iterable[str] = ()
) -> list[Grant]:
    """Every grant by which a subject can run code as ``namespace/service_account``, one per (subject,
    binding, right), platform grants last. ``pod_names``: the running pods of the ServiceAccount (exec,
    attach and ephemeral containers are rights on named pods)."""
    bindings = _bindings(rbac)
    grants: dict[tuple[Subject, str, str, str], Grant] = {}
    for verb, group, resource, name, cluster_scoped in _direct_rights(
        namespace, service_account, sorted(set(pod_names))
    ):
        for b in bindings:
            if _applies(b, None if cluster_scoped else namespace) and any(
                rule.allows(verb, group, resource, name) for rule in b.rules
            ):
                for s in b.subjects:
                    grants.setdefault(
                        (s, b.label, verb, resource), Grant(s, verb, resource, group, name, b.label, b.role, b.platform)
                    )
    # Impersonation: whoever can impersonate a subject that can become the SA can become it too. Acting as
    # a group needs a user to act as as well (kube-apiserver refuses Impersonate-Group alone).
    any_user = {s for b in bindings if b.namespace is None for s in b.subjects if _impersonates_any_user(b)}
    frontier = {g.subject: g for g in grants.values()}
    while frontier:
        found: dict[Subject, Grant] = {}
        for target, through in frontier.items():
            for resource, name, ns in _impersonations(target):
                for b in bindings:
                    if not _applies(b, ns) or not any(r.allows("impersonate", "", resource, name) for r in b.rules):
                        continue
                    for s in b.subjects:
                        if target.kind == "Group" and s not in any_user:
                            continue
                        if s == target or any(g.subject == s for g in grants.values()) or s in found:
                            continue
                        found[s] = Grant(
                            s,
                            "impersonate",
                            resource,
                            "",
                            name,
                            b.label,
                            b.role,
                            b.platform,
                            (target, *through.via),
                        )
        for s, g in found.items():
            grants[(s, g.binding, g.verb, g.resource)] = g
        frontier = found
    return sorted(grants.values(), key=lambda g: (g.platform, g.subject, g.binding, g.verb, g.resource))


def _impersonates_any_user(b: _Binding) -> bool:
    return any(r.allows("impersonate", "", "users", None) for r in b.rules)


def _impersonations(target: Subject) -> list[tuple[str, str, str | None]]:
    """(resource, name, namespace or None for cluster-scoped) of the impersonation requests acting as ``target``."""
    if target.kind == "Group":
        return [("groups", target.name, None)]
    if target.kind == "ServiceAccount":
        return [("serviceaccounts", target.name, target.namespace), ("users", target.user or "", None)]
    return [("users", target.name, None)]


_SHELL_SAFE = re.compile(r"[A-Za-z0-9@%+=:,./_-]{1,256}")


def _safe(text: str, placeholder: str) -> str:
    return text if _SHELL_SAFE.fullmatch(text) and not text.startswith("-") else placeholder


def can_i(grant: Grant, namespace: str) -> str:
    """The ``kubectl auth can-i`` command that shows ``grant`` from the subject's side (names from the
    cluster that are not shell-safe become placeholders)."""
    s = grant.subject
    flags = f"--as={_safe(s.user, '<user>')}" if s.user is not None else "--as=someone"
    if s.kind == "Group":
        flags += f" --as-group={_safe(s.name, '<group>')}"
    base, _, sub = grant.resource.partition("/")
    what = f"{base}.{grant.group}" if grant.group else base
    if grant.name is not None:
        what += f"/{_safe(grant.name, '<name>')}"
    if sub:
        what += f" --subresource={sub}"
    where = "" if base in ("users", "groups") else f" -n {_safe(namespace, '<namespace>')}"
    return f"kubectl auth can-i {grant.verb} {what}{where} {flags}"


def subject_of_user(user: str) -> Subject:
    """The RBAC subject an authenticated user name is: ``system:serviceaccount:<ns>:<name>`` a ServiceAccount,
    anything else a User."""
    prefix, _, rest = user.partition("system:serviceaccount:")
    ns, sep, name = rest.partition(":")
    if not prefix and sep and ns and name:
        return Subject("ServiceAccount", name, ns)
    return Subject("User", user)


def as_the_gates(grants: Sequence[Grant], runner: str | None) -> list[Grant]:
    """``grants`` with the runner's own (its user name, from SelfSubjectReview) counted as the platform's: the
    gate creates probe pods as every workload's ServiceAccount by design (deploy/rbac.yaml), so it can become
    each of them; that is reported, never judged against a workload's deployers."""
    if runner is None:
        return list(grants)
    own = subject_of_user(runner)
    return [replace(g, platform=True) if g.subject == own else g for g in grants]


def subjects_of(grants: Iterable[Grant], *, platform: bool = False) -> list[Subject]:
    """The distinct subjects of ``grants`` (platform grants' only when ``platform``), sorted."""
    return sorted({g.subject for g in grants if platform or not g.platform})


def _binding_command(binding: str) -> str:
    kind, _, ref = binding.partition(" ")
    ns, _, name = ref.rpartition("/") if kind == "RoleBinding" else ("", "", ref)
    where = f" -n {_safe(ns, '<namespace>')}" if ns else ""
    return f"kubectl get {kind.lower()} {_safe(name, '<name>')}{where} -o yaml"


def become_findings(
    label: str, namespace: str, service_account: str, grants: Sequence[Grant], expected: Iterable[Subject] | None
) -> list[Finding]:
    """One finding per subject that can run code as the ServiceAccount and is not among ``expected``
    (the profile's deployers); none when the profile names no deployers. Platform grants never fail."""
    if expected is None:
        return []
    allowed = set(expected)
    named = ", ".join(s.label() for s in sorted(allowed)) or "nobody"
    out: list[Finding] = []
    for subject in subjects_of(grants):
        if subject in allowed:
            continue
        ways = [g for g in grants if g.subject == subject and not g.platform]
        steps = [can_i(g, namespace) for g in ways[:2]]
        steps += sorted({_binding_command(g.binding) for g in ways})[:2]
        out.append(
            Finding(
                "who_can_become",
                f"{label}: {subject.label()} can run code as {namespace}/{service_account} and is not a "
                "declared deployer",
                f"only the profile's deployers can: {named}",
                "; ".join(g.how() for g in ways[:5]) + (f"; and {len(ways) - 5} more" if len(ways) > 5 else ""),
                f"whoever runs code as {namespace}/{service_account} holds its IAM role, whatever the trust policy "
                "says: a binding wider than the deploy path (a developer group, a namespace-wide edit role, "
                "a controller's token) lets it use the role's permissions directly",
                tuple(steps),
            )
        )
    return out


def become_notes(grants: Sequence[Grant], expected: Iterable[Subject] | None) -> list[str]:
    """For the report: who can become the identity (and the platform's own), and declared deployers with no grant."""
    people = subjects_of(grants)
    platform = [s for s in subjects_of(grants, platform=True) if s not in people]
    notes = [
        f"{len(people)} subject{'s' if len(people) != 1 else ''} can run code as this ServiceAccount: "
        + (", ".join(s.label() for s in people) or "none")
    ]
    if platform:
        notes.append(
            f"and {len(platform)} of the platform's own (Kubernetes/EKS controllers, this gate's runner; not judged): "
            + ", ".join(s.label() for s in platform[:10])
            + (" ..." if len(platform) > 10 else "")
        )
    if expected is None:
        notes.append("no deployers declared for this workload or its namespace: reported, not judged")
    else:
        for s in sorted(set(expected)):
            if s not in people:
                notes.append(f"declared deployer {s.label()} cannot run code as it (stale entry?)")
    return notes
