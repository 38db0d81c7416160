"""RBAC: the authorizer, escalation checks, ClusterRole aggregation, validation and the default roles.

Decides as kube-apiserver's RBAC authorizer does [kubernetes/kubernetes@01aa0f3
plugin/pkg/auth/authorizer/rbac/rbac.go:165-180 (RuleAllows)] with the rule helpers of
[kubernetes/kubernetes@03bf11a pkg/apis/rbac/v1/evaluation_helpers.go:33-125] (VerbMatches,
APIGroupMatches, ResourceMatches with ``*/subresource``, ResourceNameMatches, NonResourceURLMatches
with a trailing ``*``). Rules come from every ClusterRoleBinding, then the RoleBindings of the
request's namespace (a RoleBinding may name a ClusterRole); subjects are Users, Groups and
ServiceAccounts (``system:serviceaccount:<ns>:<name>``, a RoleBinding's subject without a
namespace is in the binding's), as pkg/registry/rbac/validation/rule.go's ``appliesTo``.
RBAC only allows: what no rule allows gets no opinion, and the chain forbids it.

The ClusterRole aggregation controller (pkg/controller/clusterroleaggregation) is emulated
synchronously: after every write of a ClusterRole, each ClusterRole with an ``aggregationRule``
gets the rules of the ClusterRoles its selectors match (by name order, without duplicates).
The review APIs that report these decisions are in ``reviews``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

from pytest_eksid.sandbox.kubeapi.errors import ApiError, FieldError, bad_request, invalid_value, not_found, required
from pytest_eksid.sandbox.kubeapi.protobuf import _PB_META as PB_META
from pytest_eksid.sandbox.kubeapi.protobuf import PROTOBUF, PbSchema, _pb_fields, _pb_message
from pytest_eksid.sandbox.kubeapi.request import Request, RequestInfo
from pytest_eksid.sandbox.kubeapi.resources import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    RBAC_GROUP,
    ROLEBINDINGS,
    ROLES,
    Obj,
    ResourceType,
)
from pytest_eksid.sandbox.kubeapi.selectors import selector_matches

SA_PREFIX = "system:serviceaccount:"
ALL = "*"


class User(Protocol):
    """Who is asking (the server's ``Caller``)."""

    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> tuple[str, ...]: ...


class RbacStore(Protocol):
    """What RBAC reads from the store."""

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = ...,
        label_selector: str = ...,
        field_selector: str = ...,
    ) -> list[Obj]: ...

    def find(self, resource: str | ResourceType, namespace: str, name: str) -> Obj | None: ...


# -- rule matching (pkg/apis/rbac/v1/evaluation_helpers.go) --


def rule_strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def verb_matches(rule: Obj, verb: str) -> bool:
    return any(v in (ALL, verb) for v in rule_strings(rule.get("verbs")))


def api_group_matches(rule: Obj, group: str) -> bool:
    return any(g in (ALL, group) for g in rule_strings(rule.get("apiGroups")))


def resource_matches(rule: Obj, combined: str, subresource: str) -> bool:
    """``*``, the exact ``resource[/subresource]``, or ``*/<subresource>`` for a subresource request.
    (``pods/*`` is no wildcard upstream: it matches only a subresource literally named ``*``.)"""
    star = f"*/{subresource}" if subresource else None
    return any(r in (ALL, combined, star) for r in rule_strings(rule.get("resources")))


def resource_name_matches(rule: Obj, name: str) -> bool:
    """No ``resourceNames`` matches any name; else the request must name one of them, so a
    list, watch or create (no name on the request) never matches a rule with ``resourceNames``."""
    names = rule_strings(rule.get("resourceNames"))
    return not names or name in names


def non_resource_url_matches(rule: Obj, path: str) -> bool:
    for url in rule_strings(rule.get("nonResourceURLs")):
        if url in (ALL, path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


@dataclass(frozen=True)
class Attributes:
    """What authorizers decide on (k8s.io/apiserver ``authorizer.Attributes``), for requests and reviews."""

    verb: str
    path: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    resource_request: bool = False

    @classmethod
    def of(cls, info: RequestInfo) -> Attributes:
        rt = info.resource
        if rt is None:
            return cls(info.verb, info.path)
        return cls(
            info.verb,
            info.path,
            rt.group,
            rt.plural,
            info.subresource or "",
            info.namespace or "",
            info.name or "",
            True,
        )


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    """RuleAllows: a resource request against resource rules, else the path against nonResourceURLs."""
    if attrs.resource_request:
        combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        return (
            verb_matches(rule, attrs.verb)
            and api_group_matches(rule, attrs.group)
            and resource_matches(rule, combined, attrs.subresource)
            and resource_name_matches(rule, attrs.name)
        )
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


# -- subjects and rule resolution (pkg/registry/rbac/validation/rule.go) --


def applies_to(subject: Obj, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and user.name == f"{SA_PREFIX}{ns}:{name}"
    return False


@dataclass(frozen=True)
class Resolved:
    rules: list[Obj]
    sources: list[str]  # per rule, the binding that grants it (rule.go's describers)
    errors: list[str]  # roles that bindings name but do not exist, as RBAC reports them


def _describe_subject(subject: Obj, binding_namespace: str) -> str:
    kind, name = str(subject.get("kind") or ""), str(subject.get("name") or "")
    if kind == "ServiceAccount":
        name = f"{name}/{subject.get('namespace') or binding_namespace}"
    return f"{kind} {json.dumps(name)}"


def _describe(binding: Obj, subject: Obj, namespace: str) -> str:
    """As pkg/registry/rbac/validation/rule.go's (cluster)roleBindingDescriber."""
    ref = binding.get("roleRef") or {}
    name = str(binding["metadata"]["name"])
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    shown = f"{name}/{namespace}" if namespace else name
    return (
        f"{kind} {json.dumps(shown)} of {ref.get('kind', '')} {json.dumps(str(ref.get('name', '')))} "
        f"to {_describe_subject(subject, namespace)}"
    )


def _qualified(rt: ResourceType) -> str:
    return f"{rt.singular}.{rt.group}"


class Rbac:
    """The RBAC authorizer over ``store``; ``allows`` answers for one request."""

    def __init__(self, store: RbacStore) -> None:
        self.store = store

    def _role_rules(self, ref: Obj, namespace: str, errors: list[str]) -> list[Obj]:
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        if kind == "ClusterRole":
            role = self.store.find(CLUSTERROLES, "", name)
            what = f'{_qualified(CLUSTERROLES)} "{name}" not found'
        elif kind == "Role" and namespace:
            role = self.store.find(ROLES, namespace, name)
            what = f'{_qualified(ROLES)} "{name}" not found'
        else:
            return []
        if role is None:
            errors.append(what)
            return []
        return [r for r in role.get("rules") or [] if isinstance(r, dict)]

    def resolve(self, user: User, namespace: str) -> Resolved:
        """Every rule that applies to ``user`` in ``namespace`` ("" for cluster-wide)."""
        rules: list[Obj] = []
        sources: list[str] = []
        errors: list[str] = []
        bindings = [(b, "") for b in self.store.list(CLUSTERROLEBINDINGS)]
        if namespace:
            bindings += [(b, namespace) for b in self.store.list(ROLEBINDINGS, namespace)]
        for binding, ns in bindings:
            subject = next((s for s in _subjects(binding) if applies_to(s, user, ns)), None)
            if subject is None:
                continue
            granted = self._role_rules(binding.get("roleRef") or {}, ns, errors)
            rules += granted
            sources += [_describe(binding, subject, ns)] * len(granted)
        return Resolved(rules, sources, errors)

    def allows(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason), as rbac.go's Authorize: ``RBAC: allowed by <binding>`` or, for a
        denial, the roles that bindings refer to but are missing, ``RBAC: <errors>``."""
        resolved = self.resolve(user, attrs.namespace)
        for rule, source in zip(resolved.rules, resolved.sources, strict=True):
            if rule_allows(rule, attrs):
                return True, f"RBAC: allowed by {source}"
        if not resolved.errors:
            return False, ""
        joined = resolved.errors[0] if len(resolved.errors) == 1 else "[" + ", ".join(resolved.errors) + "]"
        return False, f"RBAC: {joined}"

    def confirm_no_escalation(
        self, user: User, rt: ResourceType, namespace: str, obj: Obj, authorized: Callable[[RequestInfo], bool]
    ) -> None:
        """Refuse (403) a Role/ClusterRole or binding write that grants more than ``user`` holds,
        unless ``authorized`` allows ``escalate`` on the role (``bind`` on the bound role), as
        the RBAC registry's policy-based storage does. ``system:masters`` never reaches here."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        if rt in (ROLES, CLUSTERROLES):
            if authorized(RequestInfo("escalate", "", rt, namespace or None, name or None)):
                return
            if rt is CLUSTERROLES and obj.get("aggregationRule") is not None:
                raise _forbidden(rt, name, "must have cluster-admin privileges to use the aggregationRule")
            rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        elif rt in (ROLEBINDINGS, CLUSTERROLEBINDINGS):
            ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
            assert isinstance(ref, dict)
            target = ROLES if ref.get("kind") == "Role" else CLUSTERROLES
            role_name = str(ref.get("name") or "")
            if authorized(RequestInfo("bind", "", target, namespace or None, role_name or None)):
                return
            role = self.store.find(target, namespace if target is ROLES else "", role_name)
            if role is None:
                raise not_found(target, role_name)
            rules = [r for r in role.get("rules") or [] if isinstance(r, dict)]
        else:
            return
        owned = self.resolve(user, namespace)
        missing = uncovered(owned.rules, rules)
        if missing:
            raise _forbidden(rt, name, escalation_message(user, missing, owned.errors))


def _forbidden(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        403, "Forbidden", f'{rt.qualified} "{name}" is forbidden: {why}', kind=rt.plural, group=rt.group, name=name
    )


def _subjects(binding: Obj) -> list[Obj]:
    return [s for s in binding.get("subjects") or [] if isinstance(s, dict)]


# -- escalation prevention (pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/policybased,
#    pkg/registry/rbac/validation/policy_comparator.go and escalation_check.go) --


def breakdown(rule: Obj) -> list[Obj]:
    """One rule per group x resource x verb (x name), and per URL x verb (BreakdownRule)."""
    out: list[Obj] = []
    verbs, names = rule_strings(rule.get("verbs")), rule_strings(rule.get("resourceNames"))
    for group in rule_strings(rule.get("apiGroups")):
        for resource in rule_strings(rule.get("resources")):
            for verb in verbs:
                base: Obj = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                out += [{**base, "resourceNames": [n]} for n in names] if names else [base]
    for url in rule_strings(rule.get("nonResourceURLs")):
        out += [{"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs]
    return out


def _resources_cover(owned: list[str], wanted: list[str]) -> bool:
    if ALL in owned:
        return True
    return all(r in owned or ("/" in r and f"*/{r.split('/', 1)[1]}" in owned) for r in wanted)


def _urls_cover(owned: list[str], wanted: list[str]) -> bool:
    return all(any(o == w or (o.endswith("*") and w.startswith(o.rstrip("*"))) for o in owned) for w in wanted)


def rule_covers(owner: Obj, sub: Obj) -> bool:
    """ruleCovers: ``owner`` grants everything ``sub`` (a broken-down rule) grants."""
    o_verbs, o_groups, o_names = (rule_strings(owner.get(k)) for k in ("verbs", "apiGroups", "resourceNames"))
    s_names = rule_strings(sub.get("resourceNames"))
    return (
        (ALL in o_verbs or set(rule_strings(sub.get("verbs"))) <= set(o_verbs))
        and (ALL in o_groups or set(rule_strings(sub.get("apiGroups"))) <= set(o_groups))
        and _resources_cover(rule_strings(owner.get("resources")), rule_strings(sub.get("resources")))
        and _urls_cover(rule_strings(owner.get("nonResourceURLs")), rule_strings(sub.get("nonResourceURLs")))
        and (not o_names or (bool(s_names) and set(s_names) <= set(o_names)))
    )


def uncovered(owner_rules: list[Obj], rules: Iterable[Obj]) -> list[Obj]:
    """Covers' missing rights: the broken-down ``rules`` no owner rule covers."""
    return [sub for rule in rules for sub in breakdown(rule) if not any(rule_covers(o, sub) for o in owner_rules)]


def _go_strings(values: list[str]) -> str:
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def compact_string(rule: Obj) -> str:
    """rbacv1helpers.CompactString: ``{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}``."""
    parts = [
        f"{label}:{_go_strings(rule_strings(rule.get(key)))}"
        for label, key in (
            ("APIGroups", "apiGroups"),
            ("Resources", "resources"),
            ("NonResourceURLs", "nonResourceURLs"),
            ("ResourceNames", "resourceNames"),
            ("Verbs", "verbs"),
        )
        if rule.get(key)
    ]
    return "{" + ", ".join(parts) + "}"


def compact(rules: list[Obj]) -> list[Obj]:
    """CompactRules: simple rules (one group, one resource, at most one name) differing only by verb merge."""
    out: list[Obj] = []
    simple: dict[tuple[str, str, str | None], Obj] = {}
    for rule in rules:
        names = rule_strings(rule.get("resourceNames"))
        if rule.get("nonResourceURLs") or len(names) > 1 or len(rule.get("apiGroups") or []) != 1:
            out.append(rule)
            continue
        if len(rule.get("resources") or []) != 1:
            out.append(rule)
            continue
        key = (rule["apiGroups"][0], rule["resources"][0], names[0] if names else None)
        if key in simple:
            simple[key]["verbs"] = [*simple[key]["verbs"], *rule_strings(rule.get("verbs"))]
        else:
            simple[key] = copy.deepcopy(rule)
    return out + list(simple.values())


def escalation_message(user: User, missing: list[Obj], errors: list[str]) -> str:
    """ConfirmNoEscalation's error, as the registry puts it inside NewForbidden."""
    described = "\n".join(sorted({compact_string(r) for r in compact(missing)}))
    message = (
        f"user {json.dumps(user.name)} (groups={_go_strings(list(user.groups))}) is attempting to grant RBAC "
        f"permissions not currently held:\n{described}"
    )
    if errors:
        message += f"; resolution errors: [{', '.join(errors)}]"
    return message


# -- aggregation (pkg/controller/clusterroleaggregation/clusterroleaggregation_controller.go) --


def aggregated_rules(role: Obj, roles: Iterable[Obj]) -> list[Obj]:
    """The rules the controller gives an aggregating ClusterRole: for each selector, the rules
    of the matching ClusterRoles (other than itself) by name, each rule once."""
    out: list[Obj] = []
    ordered = sorted(roles, key=lambda r: str(r["metadata"]["name"]))
    for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
        for other in ordered:
            if other["metadata"]["name"] == role["metadata"]["name"]:
                continue
            if not selector_matches(selector, other["metadata"].get("labels") or {}):
                continue
            for rule in other.get("rules") or []:
                if rule not in out:
                    out.append(copy.deepcopy(rule))
    return out


def aggregate(roles: list[Obj], update: Callable[[str, list[Obj]], None]) -> None:
    """Bring every aggregating ClusterRole's rules up to date; repeated until nothing changes,
    so chains (view -> edit -> admin) settle in one write as the controller's requeues do."""
    for _ in range(len(roles) + 1):
        changed = False
        by_name = {str(r["metadata"]["name"]): r for r in roles}
        for role in roles:
            if not isinstance(role.get("aggregationRule"), dict):
                continue
            rules = aggregated_rules(role, by_name.values())
            if rules != (role.get("rules") or []):
                role["rules"] = rules
                update(str(role["metadata"]["name"]), rules)
                changed = True
        if not changed:
            return


# -- validation (pkg/apis/rbac/validation/validation.go) --


def default_rbac(obj: Obj) -> None:
    """The API group defaults of roleRef and subjects, applied on every decode
    [kubernetes/kubernetes@7c30c06 pkg/apis/rbac/v1/defaults.go:27-51]."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = RBAC_GROUP
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = RBAC_GROUP


def validate_rbac(rt: ResourceType, obj: Obj) -> list[FieldError]:
    """Field errors of a Role, ClusterRole, RoleBinding or ClusterRoleBinding (defaulted first)."""
    if isinstance(obj.get("subjects"), list) or isinstance(obj.get("roleRef"), dict):
        default_rbac(obj)
    errors: list[FieldError] = []
    if rt in (ROLES, CLUSTERROLES):
        rules = obj.get("rules")
        if rules is not None and not isinstance(rules, list):
            return [invalid_value("rules", rules, "must be a list")]
        for i, rule in enumerate(rules or []):
            errors += _validate_rule(rule, rt is ROLES, f"rules[{i}]")
        return errors
    if rt in (ROLEBINDINGS, CLUSTERROLEBINDINGS):
        ref = obj.get("roleRef")
        if not isinstance(ref, dict):
            return [required("roleRef")]
        kinds = ("Role", "ClusterRole") if rt is ROLEBINDINGS else ("ClusterRole",)
        if ref.get("apiGroup") != RBAC_GROUP:
            errors.append(
                (
                    "roleRef.apiGroup",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{ref.get("apiGroup") or ""}": supported values: "{RBAC_GROUP}"',
                )
            )
        if ref.get("kind") not in kinds:
            supported = ", ".join(f'"{k}"' for k in kinds)
            errors.append(
                (
                    "roleRef.kind",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{ref.get("kind") or ""}": supported values: {supported}',
                )
            )
        if not ref.get("name"):
            errors.append(required("roleRef.name"))
        subjects = obj.get("subjects")
        if subjects is not None and not isinstance(subjects, list):
            return [*errors, invalid_value("subjects", subjects, "must be a list")]
        for i, subject in enumerate(subjects or []):
            errors += _validate_subject(subject, rt is ROLEBINDINGS, f"subjects[{i}]")
    return errors


def _validate_rule(rule: object, namespaced: bool, path: str) -> list[FieldError]:
    if not isinstance(rule, dict):
        return [invalid_value(path, rule, "must be an object")]
    errors: list[FieldError] = []
    if not rule_strings(rule.get("verbs")):
        errors.append((f"{path}.verbs", "FieldValueRequired", "Required value: verbs must contain at least one value"))
    urls = rule_strings(rule.get("nonResourceURLs"))
    if urls:
        if namespaced:
            errors.append(
                invalid_value(f"{path}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs")
            )
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            errors.append(
                invalid_value(
                    f"{path}.nonResourceURLs",
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        return errors
    if not rule.get("apiGroups"):
        errors.append(
            (
                f"{path}.apiGroups",
                "FieldValueRequired",
                "Required value: resource rules must supply at least one api group",
            )
        )
    if not rule.get("resources"):
        errors.append(
            (
                f"{path}.resources",
                "FieldValueRequired",
                "Required value: resource rules must supply at least one resource",
            )
        )
    return errors


def _validate_subject(subject: object, namespaced: bool, path: str) -> list[FieldError]:
    if not isinstance(subject, dict):
        return [invalid_value(path, subject, "must be an object")]
    errors: list[FieldError] = []
    kind, name = subject.get("kind"), subject.get("name")
    if not name:
        errors.append(required(f"{path}.name"))
    if kind == "ServiceAccount":
        if subject.get("apiGroup"):
            errors.append(
                (
                    f"{path}.apiGroup",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{subject["apiGroup"]}": supported values: ""',
                )
            )
        if not namespaced and not subject.get("namespace"):
            errors.append(required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if subject.get("apiGroup") != RBAC_GROUP:
            errors.append(
                (
                    f"{path}.apiGroup",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{subject.get("apiGroup") or ""}": supported values: "{RBAC_GROUP}"',
                )
            )
    else:
        errors.append(
            (
                f"{path}.kind",
                "FieldValueNotSupported",
                f'Unsupported value: "{kind or ""}": supported values: "ServiceAccount", "User", "Group"',
            )
        )
    return errors


def role_ref_errors(old: Obj, new: Obj) -> list[FieldError]:
    """roleRef is immutable (pkg/apis/rbac/validation ValidateRoleBindingUpdate)."""
    if old.get("roleRef") != new.get("roleRef"):
        return [invalid_value("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


# -- RBAC objects in protobuf --


# ``kubectl create role|clusterrole|rolebinding|clusterrolebinding`` post protobuf too
# [kubernetes/kubernetes@081ac6b staging/src/k8s.io/api/rbac/v1/generated.proto].
_PB_RULE: PbSchema = {
    n + 1: (f, "strings") for n, f in enumerate(("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"))
}
_PB_SELECTOR: PbSchema = {
    1: ("matchLabels", "map"),
    2: ("matchExpressions", ("repeated", {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "strings")})),
}
_PB_ROLE: PbSchema = {1: ("metadata", PB_META), 2: ("rules", ("repeated", _PB_RULE))}
_PB_BINDING: PbSchema = {
    1: ("metadata", PB_META),
    2: (
        "subjects",
        ("repeated", {n + 1: (f, "string") for n, f in enumerate(("kind", "apiGroup", "name", "namespace"))}),
    ),
    3: ("roleRef", {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")}),
}
RBAC_PROTOBUF: dict[tuple[str, str], PbSchema] = {
    (f"{RBAC_GROUP}/v1", "Role"): _PB_ROLE,
    (f"{RBAC_GROUP}/v1", "ClusterRole"): {
        **_PB_ROLE,
        3: ("aggregationRule", {1: ("clusterRoleSelectors", ("repeated", _PB_SELECTOR))}),
    },
    (f"{RBAC_GROUP}/v1", "RoleBinding"): _PB_BINDING,
    (f"{RBAC_GROUP}/v1", "ClusterRoleBinding"): _PB_BINDING,
}


def json_request(req: Request) -> Request:
    """``req`` with a protobuf RBAC object re-encoded as JSON, for the object handlers."""
    if req.content_type != PROTOBUF:
        return req
    headers = Message()
    for key, value in req.headers.items():
        if key.lower() != "content-type":
            headers[key] = value
    headers["Content-Type"] = "application/json"
    body = json.dumps(decode_envelope(req.body, RBAC_PROTOBUF)).encode()
    return dataclasses.replace(req, headers=headers, body=body)


def decode_envelope(body: bytes, kinds: dict[tuple[str, str], PbSchema]) -> Obj:
    """One of ``kinds`` in the Kubernetes protobuf envelope (``k8s\\0`` + runtime.Unknown{typeMeta, raw})."""
    try:
        if not body.startswith(b"k8s\x00"):
            raise ValueError("no Kubernetes envelope")
        unknown = dict(_pb_fields(body[4:]))
        type_meta, raw = unknown.get(1, b""), unknown.get(2, b"")
        if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
            raise ValueError("malformed envelope")
        tm = _pb_message(type_meta, {1: ("apiVersion", "string"), 2: ("kind", "string")})
        schema = kinds.get((tm.get("apiVersion", ""), tm.get("kind", "")))
        if schema is None:
            raise ValueError(f"unexpected kind {tm.get('apiVersion')} {tm.get('kind')}")
        return {**tm, **_pb_message(raw, schema)}
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid {PROTOBUF}: {exc}") from None


# -- the default roles every cluster has --
# From [kubernetes/kubernetes@025f283 plugin/pkg/auth/authorizer/rbac/bootstrappolicy/testdata/cluster-roles.yaml]
# and cluster-role-bindings.yaml, kept to the resources the sandbox serves plus what decides who
# can create pods (workload controllers, pods/exec, serviceaccounts/token, impersonation).

_RW = ["create", "delete", "deletecollection", "patch", "update"]
_RO = ["get", "list", "watch"]
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_BOOTSTRAP = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AGG = "rbac.authorization.k8s.io/aggregate-to-"


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _cluster_role(name: str, rules: list[Obj] | None, labels: dict[str, str] | None = None, agg: str = "") -> Obj:
    role: Obj = {
        "metadata": {"name": name, "labels": {**_BOOTSTRAP, **(labels or {})}, "annotations": dict(_AUTOUPDATE)},
        "rules": rules or [],
    }
    if agg:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {f"{_AGG}{agg}": "true"}}]}
    return role


_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _r(groups: str, resources: str, verbs: list[str] | str) -> Obj:
    """A rule from space-separated groups (``-`` for core) and resources."""
    return _rule(
        ["" if g == "-" else g for g in groups.split()],
        resources.split(),
        verbs.split() if isinstance(verbs, str) else verbs,
    )


_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz"]
_DISCOVERY_URLS += ["/version", "/version/"]

DEFAULT_CLUSTER_ROLES: tuple[Obj, ...] = (
    _cluster_role("cluster-admin", [_r("*", "*", "*"), {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
    _cluster_role("admin", None, agg="admin"),
    _cluster_role("edit", None, {f"{_AGG}admin": "true"}, agg="edit"),
    _cluster_role("view", None, {f"{_AGG}edit": "true"}, agg="view"),
    _cluster_role(
        "system:aggregate-to-admin",
        [
            _r("authorization.k8s.io", "localsubjectaccessreviews", "create"),
            _r(RBAC_GROUP, "rolebindings roles", sorted([*_RW, *_RO])),
        ],
        {f"{_AGG}admin": "true"},
    ),
    _cluster_role(
        "system:aggregate-to-edit",
        [
            _r("-", "pods/attach pods/exec pods/portforward pods/proxy secrets", _RO),
            _r("-", "serviceaccounts", "impersonate"),
            _r("-", "pods pods/attach pods/exec pods/portforward pods/proxy", _RW),
            _r("-", "pods/eviction", "create"),
            _r("-", "configmaps events secrets serviceaccounts", _RW),
            _r("-", "serviceaccounts/token", "create"),
            _r(
                "apps",
                "daemonsets deployments deployments/rollback deployments/scale replicasets replicasets/scale "
                "statefulsets statefulsets/scale",
                _RW,
            ),
            _r("batch", "cronjobs jobs", _RW),
        ],
        {f"{_AGG}edit": "true"},
    ),
    _cluster_role(
        "system:aggregate-to-view",
        [
            _r("-", "configmaps pods serviceaccounts", _RO),
            _r("-", "events limitranges namespaces/status pods/log pods/status resourcequotas", _RO),
            _r("-", "namespaces", _RO),
            _r(
                "apps",
                "controllerrevisions daemonsets daemonsets/status deployments deployments/scale deployments/status "
                "replicasets replicasets/scale replicasets/status statefulsets statefulsets/scale statefulsets/status",
                _RO,
            ),
            _r("batch", "cronjobs cronjobs/status jobs jobs/status", _RO),
        ],
        {f"{_AGG}view": "true"},
    ),
    _cluster_role(
        "system:basic-user",
        [
            _r("authorization.k8s.io", "selfsubjectaccessreviews selfsubjectrulesreviews", "create"),
            _r("authentication.k8s.io", "selfsubjectreviews", "create"),
        ],
    ),
    _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
    _cluster_role("system:public-info-viewer", [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}]),
)


def _binding(role: str, *groups: str) -> Obj:
    return {
        "metadata": {"name": role, "labels": dict(_BOOTSTRAP), "annotations": dict(_AUTOUPDATE)},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups],
    }


DEFAULT_CLUSTER_ROLE_BINDINGS: tuple[Obj, ...] = (
    _binding("cluster-admin", "system:masters"),
    _binding("system:basic-user", "system:authenticated"),
    _binding("system:discovery", "system:authenticated"),
    _binding("system:public-info-viewer", "system:authenticated", "system:unauthenticated"),
)


class RbacHost(RbacStore, Protocol):
    """The store RBAC installs itself into: creates the defaults, reconciles aggregation."""

    on_change: list[Callable[[ResourceType], None]]

    def create(self, resource: str | ResourceType, namespace: str, obj: Obj, *, dry_run: bool = ...) -> Obj: ...

    def update(self, resource: str | ResourceType, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj: ...


def install(store: RbacHost) -> None:
    """Seed the default ClusterRoles and bindings (those missing) and run aggregation on every
    ClusterRole write from now on."""

    def reconcile(rt: ResourceType) -> None:
        if rt is not CLUSTERROLES:
            return

        def write(name: str, rules: list[Obj]) -> None:
            store.update(CLUSTERROLES, "", name, lambda role: role.__setitem__("rules", copy.deepcopy(rules)))

        aggregate(store.list(CLUSTERROLES), write)

    store.on_change.append(reconcile)
    for rt, objs in ((CLUSTERROLES, DEFAULT_CLUSTER_ROLES), (CLUSTERROLEBINDINGS, DEFAULT_CLUSTER_ROLE_BINDINGS)):
        for obj in objs:
            if store.find(rt, "", obj["metadata"]["name"]) is None:
                store.create(rt, "", copy.deepcopy(obj))
