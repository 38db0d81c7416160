"""Protobuf request bodies: what kubectl's imperative ``create`` verbs post.

kubectl 1.37's ``create sa|configmap|secret|namespace|deployment`` post
``application/vnd.kubernetes.protobuf`` and do not fall back to JSON on 415 (measured: the
command fails). No maintained Python package ships the Kubernetes protobuf types, so these
kinds are decoded here with their field numbers from the Kubernetes .proto files
(k8s.io/api/core/v1, k8s.io/apimachinery/pkg/apis/meta/v1); anything else is 415, which makes
kubectl print what to do instead.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from pytest_eksid.sandbox.kubeapi.errors import ApiError, bad_request
from pytest_eksid.sandbox.kubeapi.resources import Obj

PROTOBUF = "application/vnd.kubernetes.protobuf"
_PB_MAGIC = b"k8s\x00"
PbSchema = dict[int, tuple[str, Any]]
_PB_OWNER: PbSchema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_META: PbSchema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    13: ("ownerReferences", ("repeated", _PB_OWNER)),
    14: ("finalizers", "strings"),
}
_PB_OBJECT_REF: PbSchema = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
}
_PB_KINDS: dict[tuple[str, str], PbSchema] = {
    ("v1", "ConfigMap"): {
        1: ("metadata", _PB_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _PB_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _PB_META),
        2: ("secrets", ("repeated", _PB_OBJECT_REF)),
        3: ("imagePullSecrets", ("repeated", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "bool"),
    },
    ("v1", "Namespace"): {1: ("metadata", _PB_META), 2: ("spec", {1: ("finalizers", "strings")})},
    # kubectl create token [kubernetes/kubernetes@07ef5fd staging/src/k8s.io/api/authentication/v1/generated.proto]
    ("authentication.k8s.io/v1", "TokenRequest"): {
        1: ("metadata", _PB_META),
        2: (
            "spec",
            {
                1: ("audiences", "strings"),
                3: (
                    "boundObjectRef",
                    {1: ("kind", "string"), 2: ("apiVersion", "string"), 3: ("name", "string"), 4: ("uid", "string")},
                ),
                4: ("expirationSeconds", "int"),
            },
        ),
    },
}


def _pb_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = data[i]
            value |= (b & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not b & 0x80:
                return value, i

    i = 0
    while i < len(data):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            value, i = varint(i)
            yield key >> 3, value
        elif wire == 2:
            n, i = varint(i)
            yield key >> 3, data[i : i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _pb_message(data: bytes, schema: PbSchema) -> Obj:
    out: Obj = {}
    for number, value in _pb_fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "bool":
            out[name] = bool(value)
        elif kind == "int":
            if isinstance(value, int):
                out[name] = value
        elif isinstance(value, int):
            continue
        elif kind == "string":
            if value:
                out[name] = value.decode()
        elif kind == "strings":
            out.setdefault(name, []).append(value.decode())
        elif kind in ("map", "bytesmap"):
            entry = dict(_pb_fields(value))
            key, raw = entry.get(1, b""), entry.get(2, b"")
            if isinstance(key, bytes) and isinstance(raw, bytes):
                text = base64.b64encode(raw).decode() if kind == "bytesmap" else raw.decode()
                out.setdefault(name, {})[key.decode()] = text
        elif isinstance(kind, tuple):
            out.setdefault(name, []).append(_pb_message(value, kind[1]))
        else:
            out[name] = _pb_message(value, kind)
    return out


def decode_protobuf(body: bytes) -> Obj:
    """A Kubernetes protobuf envelope (``runtime.Unknown``) holding one of ``_PB_KINDS``."""
    if not body.startswith(_PB_MAGIC):
        raise bad_request("the protobuf body lacks the Kubernetes envelope")
    try:
        unknown = dict(_pb_fields(body[len(_PB_MAGIC) :]))
        type_meta = unknown.get(1, b"")
        raw = unknown.get(2, b"")
        if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
            raise ValueError("malformed envelope")
        tm = _pb_message(type_meta, {1: ("apiVersion", "string"), 2: ("kind", "string")})
        schema = _PB_KINDS.get((tm.get("apiVersion", ""), tm.get("kind", "")))
        if schema is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the sandbox apiserver decodes protobuf only for {', '.join(k for _, k in _PB_KINDS)}, "
                f"not {tm.get('apiVersion')} {tm.get('kind')}: send JSON (e.g. `kubectl create ... "
                "--dry-run=client -o yaml | kubectl apply -f -`)",
            )
        return {**tm, **_pb_message(raw, schema)}
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid {PROTOBUF}: {exc}") from None
