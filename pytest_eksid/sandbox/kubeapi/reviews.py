"""The review APIs: who am I, may I, may they, what may I (create-only, never stored).

``authorization.k8s.io/v1`` SelfSubjectAccessReview, SubjectAccessReview,
LocalSubjectAccessReview and SelfSubjectRulesReview (pkg/registry/authorization/*), and
``authentication.k8s.io/v1`` SelfSubjectReview (pkg/registry/authentication/selfsubjectreview):
their bodies (JSON, YAML or the protobuf kubectl's ``auth can-i``/``auth whoami`` post) and
statuses. The server decides them with its authorizer chain and ``rbac.Rbac``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request
from pytest_eksid.sandbox.kubeapi.protobuf import PROTOBUF, PbSchema
from pytest_eksid.sandbox.kubeapi.rbac import Attributes, Resolved, decode_envelope, rule_strings
from pytest_eksid.sandbox.kubeapi.request import Request, RequestInfo
from pytest_eksid.sandbox.kubeapi.resources import BY_PATH, Obj, ResourceType


def review_attributes(spec: Obj, namespace_override: str | None = None) -> tuple[Attributes, RequestInfo]:
    """A review's ``resourceAttributes``/``nonResourceAttributes`` as authorizer attributes and the
    ``RequestInfo`` other authorizers take; 400 unless exactly one of them is given."""
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (res is None) == (non is None) or not isinstance(res or non, dict):
        raise ApiError(
            422,
            "Invalid",
            'spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or '
            "resourceAttributes must be specified",
        )
    if isinstance(non, dict):
        attrs = Attributes(str(non.get("verb") or ""), str(non.get("path") or ""))
        return attrs, RequestInfo(attrs.verb, attrs.path)
    assert isinstance(res, dict)
    group, resource = str(res.get("group") or ""), str(res.get("resource") or "")
    version = str(res.get("version") or "")
    namespace = str(res.get("namespace") or "") if namespace_override is None else namespace_override
    attrs = Attributes(
        str(res.get("verb") or ""),
        "",
        group,
        resource,
        str(res.get("subresource") or ""),
        namespace,
        str(res.get("name") or ""),
        True,
    )
    rt = next((r for (g, _, p), r in BY_PATH.items() if (g, p) == (group, resource)), None)
    if rt is None:  # a kind the sandbox does not serve may still be asked about
        rt = ResourceType(group, version or "v1", resource, "", bool(namespace))
    info = RequestInfo(attrs.verb, "", rt, namespace or None, attrs.name or None, attrs.subresource or None)
    return attrs, info


def access_review_status(allowed: bool, reason: str) -> Obj:
    status: Obj = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return status


def rules_review_status(resolved: Resolved) -> Obj:
    """SelfSubjectRulesReview's status from RBAC's rules (rbac.go's RulesFor)."""
    resource_rules, non_resource_rules = [], []
    for rule in resolved.rules:
        if rule.get("resources"):
            entry: Obj = {"verbs": rule_strings(rule.get("verbs"))}
            for key in ("apiGroups", "resources", "resourceNames"):
                if rule.get(key):
                    entry[key] = rule_strings(rule.get(key))
            resource_rules.append(entry)
        if rule.get("nonResourceURLs"):
            non_resource_rules.append(
                {"verbs": rule_strings(rule.get("verbs")), "nonResourceURLs": rule_strings(rule.get("nonResourceURLs"))}
            )
    status: Obj = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}
    if resolved.errors:
        status["evaluationError"] = "; ".join(resolved.errors)
    return status


def user_info(name: str, groups: Iterable[str], uid: str = "", extra: Obj | None = None) -> Obj:
    info: Obj = {"username": name}
    if uid:
        info["uid"] = uid
    info["groups"] = list(groups)
    if extra:
        info["extra"] = extra
    return info


# kubectl's ``auth can-i`` and ``auth whoami`` post protobuf; the field numbers are
# [kubernetes/kubernetes@0612003 staging/src/k8s.io/api/authorization/v1/generated.proto] and
# authentication/v1's (SelfSubjectReview: metadata 1, status 2).
_PB_RESOURCE_ATTRIBUTES: PbSchema = {
    n + 1: (f, "string")
    for n, f in enumerate(("namespace", "verb", "group", "version", "resource", "subresource", "name"))
}
_PB_NON_RESOURCE_ATTRIBUTES: PbSchema = {1: ("path", "string"), 2: ("verb", "string")}
_PB_SSAR_SPEC: PbSchema = {
    1: ("resourceAttributes", _PB_RESOURCE_ATTRIBUTES),
    2: ("nonResourceAttributes", _PB_NON_RESOURCE_ATTRIBUTES),
}
_PB_SAR_SPEC: PbSchema = {**_PB_SSAR_SPEC, 3: ("user", "string"), 4: ("groups", "strings"), 6: ("uid", "string")}
REVIEW_PROTOBUF: dict[tuple[str, str], PbSchema] = {
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {2: ("spec", _PB_SSAR_SPEC)},
    ("authorization.k8s.io/v1", "SubjectAccessReview"): {2: ("spec", _PB_SAR_SPEC)},
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): {2: ("spec", _PB_SAR_SPEC)},
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {2: ("spec", {1: ("namespace", "string")})},
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {},
}


def review_body(req: Request, rt: ResourceType) -> Obj:
    """The posted review (JSON, YAML or protobuf) reduced to kind, apiVersion and spec."""
    body = decode_envelope(req.body, REVIEW_PROTOBUF) if req.content_type == PROTOBUF else req.json()
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be an object")
    if body.get("kind") not in (None, rt.kind) or body.get("apiVersion") not in (None, rt.api_version):
        raise bad_request(f"the body must be a {rt.api_version} {rt.kind}")
    out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"creationTimestamp": None}}
    spec = body.get("spec")
    out["spec"] = copy.deepcopy(spec) if isinstance(spec, dict) else {}
    return out
