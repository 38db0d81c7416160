"""Validation and defaults: what kube-apiserver's registry strategies check and fill in.

Object names, labels and annotations; pods', workloads' and webhooks' required fields; the
fields an update may not change; the defaults and status reset of a create.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pytest_eksid.sandbox.kubeapi.errors import (
    FieldError,
    bad_request,
    forbidden,
    invalid,
    invalid_value,
    required,
)
from pytest_eksid.sandbox.kubeapi.rbac import role_ref_errors, validate_rbac
from pytest_eksid.sandbox.kubeapi.resources import NAMESPACES, PODS, RBAC_GROUP, Obj, ResourceType
from pytest_eksid.sandbox.kubeapi.selectors import selector_matches

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    f"'{_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    f"end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{_LABEL}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    f"and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    f"validation is '({_QUALIFIED})?')"
)
_KEY_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    f"'{_QUALIFIED}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)


def _is_subdomain(s: str) -> bool:
    return len(s) <= 253 and re.fullmatch(_SUBDOMAIN, s) is not None


def _is_label(s: str) -> bool:
    return len(s) <= 63 and re.fullmatch(_LABEL, s) is not None


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not _is_subdomain(prefix):
        return False
    return 0 < len(name) <= 63 and re.fullmatch(_QUALIFIED, name) is not None


def check_string_map(meta: Obj, field: str) -> None:
    value = meta.get(field)
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise bad_request(f"metadata.{field} must be a map of string keys to string values")


def _validate_meta(rt: ResourceType, meta: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name", "")
    if rt.group == RBAC_GROUP:
        # RBAC names are path segments (``system:basic-user``): ValidateRBACName is
        # path.IsValidPathSegmentName [kubernetes/kubernetes pkg/apis/rbac/validation/validation.go].
        if name in (".", ".."):
            errors.append(invalid_value("metadata.name", name, f"may not be '{name}'"))
        for bad in ("/", "%"):
            if bad in name:
                errors.append(invalid_value("metadata.name", name, f"may not contain '{bad}'"))
    elif rt is NAMESPACES and not _is_label(name):
        errors.append(invalid_value("metadata.name", name, _LABEL_MSG))
    elif rt is not NAMESPACES and not _is_subdomain(name):
        errors.append(invalid_value("metadata.name", name, _SUBDOMAIN_MSG))
    for key, value in (meta.get("labels") or {}).items():
        if not _is_qualified_name(key):
            errors.append(invalid_value("metadata.labels", key, _KEY_MSG))
        if len(value) > 63 or re.fullmatch(f"({_QUALIFIED})?", value) is None:
            errors.append(invalid_value("metadata.labels", value, _LABEL_VALUE_MSG))
    for key in meta.get("annotations") or {}:
        if not _is_qualified_name(key):
            errors.append(invalid_value("metadata.annotations", key, _KEY_MSG))
    return errors


def _validate_containers(containers: Any, path: str) -> list[FieldError]:
    if not containers:
        return [required(path)]
    if not isinstance(containers, list):
        return [invalid_value(path, containers, "must be a list")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        name = c.get("name") if isinstance(c, dict) else None
        if not name:
            errors.append(required(f"{path}[{i}].name"))
        elif not _is_label(str(name)):
            errors.append(invalid_value(f"{path}[{i}].name", name, _LABEL_MSG))
        elif name in seen:
            errors.append((f"{path}[{i}].name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}"))
        else:
            seen.add(name)
        if isinstance(c, dict) and not c.get("image"):
            errors.append(required(f"{path}[{i}].image"))
    return errors


def _validate_workload(rt: ResourceType, obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    errors: list[FieldError] = []
    if not selector:
        errors.append(required("spec.selector"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(invalid_value("spec.selector", selector, f"empty selector is invalid for {rt.singular}"))
    elif not selector_matches(selector, labels):
        errors.append(
            invalid_value("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
        )
    errors += _validate_containers((template.get("spec") or {}).get("containers"), "spec.template.spec.containers")
    if rt.kind != "DaemonSet" and int(spec.get("replicas") or 0) < 0:
        errors.append(invalid_value("spec.replicas", spec["replicas"], "must be greater than or equal to 0"))
    return errors


def _validate_webhooks(obj: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    for i, hook in enumerate(obj.get("webhooks") or []):
        path = f"webhooks[{i}]"
        if not hook.get("name"):
            errors.append(required(f"{path}.name"))
        client = hook.get("clientConfig") or {}
        if bool(client.get("url")) == bool(client.get("service")):
            errors.append(required(f"{path}.clientConfig: exactly one of url or service"))
        if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            errors.append(
                (f"{path}.sideEffects", "FieldValueNotSupported", 'Unsupported value: must be "None" or "NoneOnDryRun"')
            )
        if not hook.get("admissionReviewVersions"):
            errors.append(required(f"{path}.admissionReviewVersions"))
    return errors


def validate(rt: ResourceType, obj: Obj, errors: list[FieldError] | None = None) -> None:
    """Raise 422 Invalid for ``obj`` (and the update ``errors`` found already)."""
    meta = obj["metadata"]
    errors = [*_validate_meta(rt, meta), *(errors or [])]
    if rt is PODS:
        errors += _validate_containers((obj.get("spec") or {}).get("containers"), "spec.containers")
    elif rt.group == "apps":
        errors += _validate_workload(rt, obj)
    elif rt.kind == "MutatingWebhookConfiguration":
        errors += _validate_webhooks(obj)
    elif rt.group == RBAC_GROUP:
        errors += validate_rbac(rt, obj)
    if errors:
        raise invalid(rt, str(meta.get("name", "")), errors)


def default(rt: ResourceType, obj: Obj) -> None:
    """Defaults and status reset on create, as kube-apiserver's registry strategies do."""
    spec = obj.setdefault("spec", {}) if rt.group == "apps" else obj.get("spec")
    if rt is NAMESPACES:
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif rt.kind == "Deployment" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault(
            "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        obj["status"] = {}
    elif rt.kind == "DaemonSet" and spec is not None:
        spec.setdefault(
            "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        obj["status"] = {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
        }
    elif rt.kind == "ReplicaSet" and spec is not None:
        spec.setdefault("replicas", 1)
        obj["status"] = {"replicas": 0}
    elif rt.kind == "MutatingWebhookConfiguration":
        for hook in obj.get("webhooks") or []:
            hook.setdefault("failurePolicy", "Fail")
            hook.setdefault("matchPolicy", "Equivalent")
            hook.setdefault("namespaceSelector", {})
            hook.setdefault("objectSelector", {})
            hook.setdefault("timeoutSeconds", 10)
            hook.setdefault("reinvocationPolicy", "Never")
    if rt.generation:
        obj["metadata"]["generation"] = 1


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations")


def _pod_spec_shape(spec: Obj) -> Obj:
    shape = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for field in ("containers", "initContainers"):
        if field in shape:
            shape[field] = [{k: v for k, v in c.items() if k != "image"} for c in shape[field]]
    return shape


def update_errors(rt: ResourceType, old: Obj, new: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    if rt is PODS and _pod_spec_shape(new.get("spec") or {}) != _pod_spec_shape(old.get("spec") or {}):
        errors.append(
            forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` "
                "(only additions to existing tolerations)",
            )
        )
    if rt.group == "apps" and (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
        errors.append(invalid_value("spec.selector", (new.get("spec") or {}).get("selector"), "field is immutable"))
    if rt.group == RBAC_GROUP and rt.kind.endswith("Binding"):
        errors += role_ref_errors(old, new)
    if rt.kind in ("Secret", "ConfigMap") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if new.get(field) != old.get(field):
                errors.append(forbidden(field, "field is immutable when `immutable` is set"))
    return errors


def check_type(rt: ResourceType, obj: Obj) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
        )
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
