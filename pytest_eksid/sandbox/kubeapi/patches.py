"""Patches: JSON merge (RFC 7386), strategic merge, and JSON patch (RFC 6902, by ``jsonpatch``).

A patch that cannot apply is answered as kube-apiserver answers it: 400 for a malformed patch,
422 for a ``test`` that fails or a path that is not in the object.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request, unsupported_media_type
from pytest_eksid.sandbox.kubeapi.resources import Obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# Lists that a strategic merge patch merges by key (patchMergeKey in the Kubernetes API types).
STRATEGIC_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "secrets": "name",
    "webhooks": "name",
    "hostAliases": "ip",
    "addresses": "type",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch: a JSON merge patch whose well-known lists merge by key.

    ``$patch: replace|delete`` are honoured; the other directives (``$setElementOrder``,
    ``$retainKeys``, ``$deleteFromPrimitiveList``) are dropped.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None or (isinstance(v, dict) and v.get("$patch") == "delete"):
            result.pop(k, None)
        elif isinstance(v, list) and k in STRATEGIC_MERGE_KEYS and isinstance(result.get(k), list):
            result[k] = _merge_keyed_list(result[k], v, STRATEGIC_MERGE_KEYS[k])
        elif isinstance(v, list):
            result[k] = [strategic_merge_patch(None, i) if isinstance(i, dict) else copy.deepcopy(i) for i in v]
        else:
            result[k] = strategic_merge_patch(result.get(k), v)
    return result


def _merge_keyed_list(current: list[Any], items: list[Any], key: str) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in items):
        return [strategic_merge_patch(None, i) for i in items if not (isinstance(i, dict) and "$patch" in i)]
    out = copy.deepcopy(current)
    for item in items:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test; all or nothing."""
    if not isinstance(ops, list):
        raise bad_request("a JSON patch must be a list of operations")
    try:
        jsonpatch.JsonPatch(ops)  # validates every operation and pointer before any applies
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException) as exc:
        raise bad_request(f"invalid JSON patch: {exc}") from None
    doc = copy.deepcopy(doc)
    for op in ops:
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed:  # (an AssertionError: before the conflicts)
            raise ApiError(422, "Invalid", f"testing value {op['path']} failed") from None
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException):
            raise ApiError(
                422,
                "Invalid",
                f"jsonpatch {op['op']} operation does not apply: doc is missing path: {op.get('from', op['path'])}",
            ) from None
        except jsonpatch.InvalidJsonPatch as exc:  # e.g. an ``add`` without a value
            raise bad_request(f"invalid JSON patch operation {op!r}: {exc}") from None
    return doc


PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def apply_patch(obj: Obj, patch: Any, patch_type: str) -> Any:
    """``patch_type``: ``merge``, ``strategic``, ``json`` or their content types."""
    kind = PATCH_TYPES.get(patch_type, patch_type)
    if kind == "merge":
        return merge_patch(obj, patch)
    if kind == "strategic":
        return strategic_merge_patch(obj, patch)
    if kind == "json":
        return json_patch(obj, patch)
    raise unsupported_media_type(list(PATCH_TYPES))
