"""The action catalogue: how the probe exercises each IAM action, and what that costs.

Every entry names the botocore call, its side effect when run for real, and — where running it
for real would change something — a side-effect-free *safe form* whose answer still proves
whether the caller is authorized (the call passes authorization, then is rejected on purpose).
Writes and queue receives run for real only where the profile says ``live: true``.

The probe program (inside the pod) executes the resulting plan; this module runs in the runner.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Params = dict[str, Any]


class ActionError(ValueError):
    """An action the profile asks for that cannot be probed as written.

    ``loc`` is the field of the profile's check it is about (``("params", "Item")``), if it is one field.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def json_value(value: object, loc: tuple[str | int, ...] = ()) -> None:
    """Refuse what the probe's JSON plan cannot carry: only text, numbers, booleans, null, lists and
    mappings with text keys (no dates, bytes, sets, NaN or infinity)."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ActionError(f"keys must be text, got {type(key).__name__} {_shown(key)}", where)
                stack.append((sub, (*where, key)))
        elif isinstance(item, list):
            stack.extend((sub, (*where, i)) for i, sub in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ActionError(f"{item} is not a JSON number", where)
        elif item is not None and not isinstance(item, (str, int, float)):  # bool is an int
            raise ActionError(
                f"a {type(item).__name__} cannot go into the probe's JSON plan; write text (quote dates), "
                "a number, true/false, null, a list or a mapping",
                where,
            )


def _bytes(data: bytes) -> dict[str, str]:
    """Bytes travel through the JSON plan as ``{"__bytes__": <base64>}``."""
    return {"__bytes__": base64.b64encode(data).decode("ascii")}


def _s3(resource: str | None, action: str) -> tuple[str, str]:
    m = re.fullmatch(r"arn:aws[\w-]*:s3:::([^/]+)(?:/(.*))?", resource or "", re.ASCII)
    if not m:
        raise ActionError(
            f"{action} needs resource arn:aws:s3:::<bucket>[/<key>], got {_shown(resource)}", ("resource",)
        )
    return m.group(1), m.group(2) or ""


def _s3_object(resource: str | None, action: str) -> tuple[str, str]:
    bucket, key = _s3(resource, action)
    if not key or "*" in key:
        raise ActionError(
            f"{action} needs a concrete object key: arn:aws:s3:::<bucket>/<key>, got {_shown(resource)}", ("resource",)
        )
    return bucket, key


def _arn_parts(resource: str | None, service: str, action: str) -> tuple[str, str, str]:
    """(region, account, resource part) of arn:aws:<service>:<region>:<account>:<rest>."""
    parts = (resource or "").split(":", 5)
    if len(parts) != 6 or parts[2] != service:
        expected = f"arn:aws:{service}:<region>:<account>:..."
        raise ActionError(f"{action} needs an {expected} resource, got {_shown(resource)}", ("resource",))
    return parts[3], parts[4], parts[5]


def _queue_url(resource: str | None, action: str) -> str:
    region, account, name = _arn_parts(resource, "sqs", action)
    return f"https://sqs.{region}.amazonaws.com/{account}/{name}"


def _need(params: Params, keys: tuple[str, ...], action: str) -> None:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ActionError(f"{action} needs params: {', '.join(missing)} (add them under 'params')", ("params",))


# DynamoDB's AttributeValue: exactly one of these type keys (botocore's dynamodb service model).
_ATTRIBUTE_TYPES = ("B", "BOOL", "BS", "L", "M", "N", "NS", "NULL", "S", "SS")


def _attribute_map(params: Params, name: str, action: str) -> dict[str, Any]:
    """``params[name]`` as DynamoDB wants a key or an item: {attribute: {S|N|B|...: value}}, at least one."""
    value = params[name]
    example = '{pk: {S: "1"}}'
    if not isinstance(value, dict) or not value:
        raise ActionError(
            f"{action}: params.{name} must be a mapping of attribute names to typed values, e.g. {example}; "
            f"got {_shown(value)}",
            ("params", name),
        )
    for attribute, typed in value.items():
        if not (isinstance(typed, dict) and len(typed) == 1 and next(iter(typed)) in _ATTRIBUTE_TYPES):
            raise ActionError(
                f'{action}: params.{name}.{attribute} must be one typed value such as {{S: "text"}} or '
                f'{{N: "1"}} (one of {", ".join(_ATTRIBUTE_TYPES)}); got {_shown(typed)}',
                ("params", name, attribute),
            )
    return value


def _text_param(params: Params, name: str, action: str) -> None:
    if name in params and not isinstance(params[name], str):
        raise ActionError(f"{action}: params.{name} must be text, got {_shown(params[name])}", ("params", name))


@dataclass(frozen=True)
class Probe:
    """How one IAM action is exercised."""

    action: str
    service: str
    operation: str
    side_effect: str  # of the live call
    live_params: Callable[[str | None, Params], Params]
    safe: str | None = None  # how the safe form works; None: the live call has no side effect
    safe_params: Callable[[str | None, Params], Params] | None = None
    # Error codes meaning "authorized" (the call got past authorization and then failed on purpose).
    authorized_codes: tuple[str, ...] = ()
    # A bare 403 here cannot tell denied from allowed (S3 GetObject of a missing key without ListBucket).
    bare_403_inconclusive: bool = False
    client_config: tuple[tuple[str, str], ...] = ()
    # The safe form calls on another resource than the one named (a stand-in beside it), so a grant on
    # exactly the named resource is out of its reach: the runner then reads the role's policies too.
    stand_in: bool = False
    # The params a profile may give (under 'params'); None: any, passed through to the call.
    accepts: tuple[str, ...] | None = ()

    @property
    def has_side_effect(self) -> bool:
        return self.safe is not None


_NO_S3_CHECKSUM = (("request_checksum_calculation", "when_required"),)


def _s3_get(r: str | None, p: Params) -> Params:
    bucket, key = _s3_object(r, "s3:GetObject")
    return {"Bucket": bucket, "Key": key}


def _s3_put_live(r: str | None, p: Params) -> Params:
    bucket, key = _s3_object(r, "s3:PutObject")
    return {"Bucket": bucket, "Key": key, "Body": _bytes(b"pytest-eksid probe\n")}


def _s3_put_safe(r: str | None, p: Params) -> Params:
    bucket, key = _s3_object(r, "s3:PutObject")
    wrong = base64.b64encode(hashlib.md5(b"not the body").digest()).decode()
    return {"Bucket": bucket, "Key": key, "Body": _bytes(b"pytest-eksid probe\n"), "ContentMD5": wrong}


def _s3_delete_live(r: str | None, p: Params) -> Params:
    bucket, key = _s3_object(r, "s3:DeleteObject")
    return {"Bucket": bucket, "Key": key}


def _s3_delete_safe(r: str | None, p: Params) -> Params:
    bucket, key = _s3_object(r, "s3:DeleteObject")
    return {"Bucket": bucket, "Key": f"{key}.eksid-absent-{uuid.uuid4().hex[:8]}"}


def _s3_list(r: str | None, p: Params) -> Params:
    bucket, prefix = _s3(r, "s3:ListBucket")
    _text_param(p, "Prefix", "s3:ListBucket")
    return {"Bucket": bucket, "Prefix": p.get("Prefix", prefix.rstrip("*")), "MaxKeys": 1}


def _sqs_send_live(r: str | None, p: Params) -> Params:
    return {"QueueUrl": _queue_url(r, "sqs:SendMessage"), "MessageBody": "pytest-eksid probe"}


def _sqs_send_safe(r: str | None, p: Params) -> Params:
    return {"QueueUrl": _queue_url(r, "sqs:SendMessage"), "MessageBody": "pytest-eksid probe", "DelaySeconds": 901}


def _sqs_receive_live(r: str | None, p: Params) -> Params:
    url = _queue_url(r, "sqs:ReceiveMessage")
    return {"QueueUrl": url, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0, "VisibilityTimeout": 0}


def _sqs_receive_safe(r: str | None, p: Params) -> Params:
    return {"QueueUrl": _queue_url(r, "sqs:ReceiveMessage"), "MaxNumberOfMessages": 11}


def _sqs_attrs(r: str | None, p: Params) -> Params:
    return {"QueueUrl": _queue_url(r, "sqs:GetQueueAttributes"), "AttributeNames": ["QueueArn"]}


def _kms(operation: str) -> Callable[[str | None, Params], Params]:
    def params(r: str | None, p: Params) -> Params:
        _arn_parts(r, "kms", f"kms:{operation}")
        base: Params = {"KeyId": r, "DryRun": True}
        if operation == "Decrypt":
            base["CiphertextBlob"] = _bytes(b"\x01" * 64)
        elif operation == "Encrypt":
            base["Plaintext"] = _bytes(b"pytest-eksid")
        elif operation == "GenerateDataKey":
            base["KeySpec"] = "AES_256"
        return base

    return params


def _table(r: str | None, action: str) -> str:
    _, _, rest = _arn_parts(r, "dynamodb", action)
    if not rest.startswith("table/"):
        raise ActionError(
            f"{action} needs arn:aws:dynamodb:<region>:<account>:table/<name>, got {_shown(r)}", ("resource",)
        )
    return rest.split("/")[1]


def _ddb_get(r: str | None, p: Params) -> Params:
    _need(p, ("Key",), "dynamodb:GetItem")
    return {"TableName": _table(r, "dynamodb:GetItem"), "Key": _attribute_map(p, "Key", "dynamodb:GetItem")}


def _ddb_query(r: str | None, p: Params) -> Params:
    _need(p, ("KeyConditionExpression", "ExpressionAttributeValues"), "dynamodb:Query")
    _text_param(p, "KeyConditionExpression", "dynamodb:Query")
    _attribute_map(p, "ExpressionAttributeValues", "dynamodb:Query")
    return {"TableName": _table(r, "dynamodb:Query"), "Limit": 1, **p}


def _ddb_put_live(r: str | None, p: Params) -> Params:
    _need(p, ("Item",), "dynamodb:PutItem")
    return {"TableName": _table(r, "dynamodb:PutItem"), "Item": _attribute_map(p, "Item", "dynamodb:PutItem")}


def _ddb_put_safe(r: str | None, p: Params) -> Params:
    item = _ddb_put_live(r, p)
    first = next(iter(p["Item"]))
    return {
        **item,
        "ConditionExpression": "attribute_exists(#k) AND attribute_not_exists(#k)",
        "ExpressionAttributeNames": {"#k": first},
    }


def _secret(r: str | None, p: Params) -> Params:
    _arn_parts(r, "secretsmanager", "secretsmanager:GetSecretValue")
    return {"SecretId": r}


def _parameter(r: str | None, p: Params) -> Params:
    _, _, rest = _arn_parts(r, "ssm", "ssm:GetParameter")
    if not rest.startswith("parameter/"):
        raise ActionError(
            f"ssm:GetParameter needs arn:aws:ssm:<region>:<account>:parameter/<name>, got {_shown(r)}", ("resource",)
        )
    return {"Name": "/" + rest.removeprefix("parameter/").lstrip("/"), "WithDecryption": False}


def _assume(r: str | None, p: Params) -> Params:
    if not re.match(r"arn:aws[\w-]*:iam::\d{12}:role/", r or "", re.ASCII):
        raise ActionError(f"sts:AssumeRole needs a role ARN resource, got {_shown(r)}", ("resource",))
    _text_param(p, "ExternalId", "sts:AssumeRole")
    out: Params = {"RoleArn": r, "RoleSessionName": "pytest-eksid-probe", "DurationSeconds": 900}
    if "ExternalId" in p:
        out["ExternalId"] = p["ExternalId"]
    return out


CATALOGUE: dict[str, Probe] = {
    p.action: p
    for p in (
        Probe(
            "s3:GetObject",
            "s3",
            "GetObject",
            "none (reads the object; the body is discarded in the pod)",
            _s3_get,
            authorized_codes=("NoSuchKey",),
            bare_403_inconclusive=True,
        ),
        Probe(
            "s3:PutObject",
            "s3",
            "PutObject",
            "writes a 19-byte object at the key",
            _s3_put_live,
            safe="PutObject with a Content-MD5 that cannot match: S3 authorizes, then refuses the body (BadDigest); "
            "nothing is stored",
            safe_params=_s3_put_safe,
            authorized_codes=("BadDigest", "InvalidDigest"),
            client_config=_NO_S3_CHECKSUM,
        ),
        Probe(
            "s3:DeleteObject",
            "s3",
            "DeleteObject",
            "deletes the object at the key",
            _s3_delete_live,
            safe="DeleteObject of an absent key beside it (<key>.eksid-absent-<random>): nothing to delete; "
            "on a versioned bucket S3 records a delete marker",
            safe_params=_s3_delete_safe,
            stand_in=True,
        ),
        Probe("s3:ListBucket", "s3", "ListObjectsV2", "none (lists at most one key)", _s3_list, accepts=("Prefix",)),
        Probe(
            "sqs:SendMessage",
            "sqs",
            "SendMessage",
            "publishes a message 'pytest-eksid probe' to the queue",
            _sqs_send_live,
            safe="SendMessage with DelaySeconds=901 (out of range): SQS authorizes, then refuses the parameter",
            safe_params=_sqs_send_safe,
            authorized_codes=("InvalidParameterValue", "InvalidParameterValueException"),
        ),
        Probe(
            "sqs:ReceiveMessage",
            "sqs",
            "ReceiveMessage",
            "receives up to one message (raises its receive count; visibility timeout 0)",
            _sqs_receive_live,
            safe="ReceiveMessage with MaxNumberOfMessages=11 (out of range): SQS authorizes, then refuses",
            safe_params=_sqs_receive_safe,
            authorized_codes=("InvalidParameterValue", "InvalidParameterValueException"),
        ),
        Probe("sqs:GetQueueAttributes", "sqs", "GetQueueAttributes", "none", _sqs_attrs),
        *(
            Probe(
                f"kms:{op}",
                "kms",
                op,
                "none (KMS DryRun: authorization only)",
                _kms(op),
                authorized_codes=("DryRunOperationException",),
            )
            for op in ("Decrypt", "Encrypt", "GenerateDataKey")
        ),
        Probe("dynamodb:GetItem", "dynamodb", "GetItem", "none (reads one item)", _ddb_get, accepts=("Key",)),
        Probe("dynamodb:Query", "dynamodb", "Query", "none (reads at most one item)", _ddb_query, accepts=None),
        Probe(
            "dynamodb:PutItem",
            "dynamodb",
            "PutItem",
            "writes the item",
            _ddb_put_live,
            safe="PutItem with a condition that can never hold: DynamoDB authorizes, then refuses the write",
            safe_params=_ddb_put_safe,
            authorized_codes=("ConditionalCheckFailedException",),
            accepts=("Item",),
        ),
        Probe(
            "secretsmanager:GetSecretValue",
            "secretsmanager",
            "GetSecretValue",
            "none (the value is discarded in the pod, never reported)",
            _secret,
        ),
        Probe("ssm:GetParameter", "ssm", "GetParameter", "none (WithDecryption=false)", _parameter),
        Probe(
            "sts:AssumeRole",
            "sts",
            "AssumeRole",
            "creates a 15-minute session of the target role (recorded in CloudTrail)",
            _assume,
            accepts=("ExternalId",),
        ),
    )
}

GENERIC_HINT = (
    "for any other action use the generic form: "
    "{action: <service>:<Operation>, call: {service: <botocore service>, operation: <Operation>, params: {...}}, "
    "live: true}"
)


def probes_stand_in(action: str) -> bool:
    """Whether the safe form of ``action`` exercises a stand-in beside the named resource."""
    probe = CATALOGUE.get(action)
    return probe is not None and probe.stand_in


def supported() -> str:
    return ", ".join(sorted(CATALOGUE))


def check_known(action: str, has_call: bool) -> None:
    if action not in CATALOGUE and not has_call:
        raise ActionError(f"no probe for {action}; supported: {supported()}; {GENERIC_HINT}", ("action",))


def plan_item(
    *,
    ident: str,
    expect: str,
    action: str,
    resource: str | None,
    params: Params,
    live: bool,
    call: Params | None,
) -> Params:
    """One entry of the probe's plan: what to call, how, and how to read the answer."""
    json_value(params, ("params",))
    if call is not None:
        json_value(call.get("params"), ("call", "params"))
        if not live:
            raise ActionError(
                f"{action}: the generic form runs the call for real; set live: true to allow it", ("live",)
            )
        return {
            "id": ident,
            "expect": expect,
            "action": action,
            "service": call["service"],
            "operation": call["operation"],
            "params": dict(call.get("params") or {}),
            "form": "live",
            "form_note": "generic call, run for real",
            "authorized_codes": [],
            "bare_403_inconclusive": False,
            "client_config": {},
        }
    probe = CATALOGUE.get(action)
    if probe is None:
        raise ActionError(f"no probe for {action}; supported: {supported()}; {GENERIC_HINT}", ("action",))
    unknown = sorted(set(params) - set(probe.accepts)) if probe.accepts is not None else []
    if unknown:
        takes = f"takes only {', '.join(probe.accepts or ())}" if probe.accepts else "takes no params"
        raise ActionError(
            f"{action} {takes} (got {_shown(unknown[0])}); for other parameters use the generic form "
            "(call: {service, operation, params}, live: true)",
            ("params", unknown[0]),
        )
    use_safe = probe.safe is not None and not live
    build = probe.safe_params if use_safe and probe.safe_params else probe.live_params
    return {
        "id": ident,
        "expect": expect,
        "action": action,
        "service": probe.service,
        "operation": probe.operation,
        "params": build(resource, params),
        "form": "safe" if use_safe else "live",
        "form_note": probe.safe if use_safe else f"live call; side effect: {probe.side_effect}",
        "authorized_codes": list(probe.authorized_codes),
        "bare_403_inconclusive": probe.bare_403_inconclusive,
        "client_config": dict(probe.client_config),
    }
