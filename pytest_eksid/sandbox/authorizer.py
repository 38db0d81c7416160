"""Where moto authorizes a request, decide it with :mod:`iam_eval` against the request's real resource.

moto 5.2.5 authorizes DynamoDB, Secrets Manager, SSM and KMS against ``*``, ignores conditions and
session policies (TOOLING_NOTES "Measured 2026-12-04"). While a sandbox runs, this module replaces
moto's ``check_action_permitted`` (both its SigV4 and its S3 request classes) and gives those
services' responses the resource ARN AWS authorizes against, so every service is decided by one
evaluator, with the request context of :func:`request_context`.

Context keys supplied (anything else is absent, and evaluated as AWS evaluates an absent key):
``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``aws:PrincipalType``, ``aws:userid``,
``aws:username`` (IAM users), ``aws:PrincipalTag/*`` (the role's or user's tags),
``aws:RequestedRegion``, ``aws:SecureTransport`` (``false``: the sandbox endpoint is plain HTTP),
``aws:CurrentTime``, ``aws:EpochTime``, ``s3:prefix`` (ListBucket), ``kms:CallerAccount`` (KMS),
``kms:ViaService`` (when S3 asks KMS on the caller's behalf), ``secretsmanager:SecretId``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from moto.core.exceptions import AccessDeniedError
from moto.iam.models import iam_backends
from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError
from moto.sts.models import sts_backends

from pytest_eksid.sandbox.iam_eval import Decision, as_list, evaluate

Clock = Callable[[], datetime.datetime]


class PolicyDenied(AccessDeniedError):
    """moto's AccessDenied, with AWS's whole message: the resource and the policy type that denied."""

    def __init__(self, message: str) -> None:
        super(AccessDeniedError, self).__init__("AccessDenied", message)
        self.eksid_message = message


def _documents(policies: list[Any]) -> list[dict[str, Any]]:
    """moto's ``collect_policies`` items (inline documents, inline dicts, managed policies) as JSON."""
    out: list[dict[str, Any]] = []
    for policy in policies:
        if isinstance(policy, str):
            text = policy
        elif isinstance(policy, Mapping):
            text = str(policy.get("policy_document", "{}"))
        else:
            text = next((str(v.document) for v in getattr(policy, "versions", []) if v.is_default), "{}")
        try:
            parsed = json.loads(text)
        except ValueError:
            try:
                parsed = json.loads(unquote(text))
            except ValueError:
                continue
        if isinstance(parsed, dict):
            out.append(parsed)
    return out


def _tags(entity: Any) -> dict[str, str]:
    tags = getattr(entity, "tags", None) or {}
    if isinstance(tags, Mapping):
        return {str(k): str(v.get("Value", "") if isinstance(v, Mapping) else v) for k, v in tags.items()}
    return {}


def principal_context(account: str, partition: str, access_key_id: str) -> tuple[dict[str, list[str]], Any]:
    """(the principal's context keys, its moto session or None) for an access key moto accepted."""
    context: dict[str, list[str]] = {"aws:PrincipalAccount": [account]}
    session = next(
        (r for r in sts_backends[account][partition].assumed_roles if r.access_key_id == access_key_id), None
    )
    backend = iam_backends[account][partition]
    entity: Any = None
    if session is not None:
        entity = next((r for r in backend.roles.values() if r.arn == session.role_arn), None)
        context["aws:PrincipalArn"] = [str(session.role_arn)]
        context["aws:PrincipalType"] = ["AssumedRole"]
        if entity is not None:
            context["aws:userid"] = [f"{entity.id}:{session.session_name}"]
    else:
        entity = backend.get_user_from_access_key_id(access_key_id)
        if entity is not None:
            context["aws:PrincipalArn"] = [str(entity.arn)]
            context["aws:PrincipalType"] = ["User"]
            context["aws:username"] = [str(entity.name)]
            context["aws:userid"] = [str(entity.id)]
    for key, value in _tags(entity).items():
        context[f"aws:PrincipalTag/{key}"] = [value]
    return context, session


def request_context(
    *, action: str, region: str, path: str, body: bytes, now: datetime.datetime, account: str
) -> dict[str, list[str]]:
    """The request's own context keys (not the principal's)."""
    context: dict[str, list[str]] = {
        "aws:RequestedRegion": [region],
        "aws:SecureTransport": ["false"],
        "aws:CurrentTime": [now.strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:EpochTime": [str(int(now.timestamp()))],
    }
    service = action.split(":", 1)[0].lower()
    if action.lower() == "s3:listbucket":
        prefix = parse_qs(urlparse(path).query).get("prefix")
        if prefix:
            context["s3:prefix"] = [prefix[-1]]
    if service == "kms":
        context["kms:CallerAccount"] = [account]
    if service == "secretsmanager":
        payload = _json(body)
        if isinstance(payload.get("SecretId"), str):
            context["secretsmanager:SecretId"] = [payload["SecretId"]]
    return context


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def decide(request: Any, resource: str, now: datetime.datetime) -> Decision:
    """The decision for a moto ``IAMRequestBase`` (already authenticated) on ``resource``."""
    key = request._access_key
    account, partition = str(key.account_id), str(key.partition)
    context, session = principal_context(account, partition, str(key._access_key_id))
    context.update(
        request_context(
            action=request._action,
            region=request._region,
            path=request._path,
            body=request._body if isinstance(request._body, bytes) else b"",
            now=now,
            account=account,
        )
    )
    context.update({k: list(as_list(v)) for k, v in (getattr(request, "eksid_context", None) or {}).items()})
    session_policy: list[dict[str, Any]] | None = None
    if session is not None and session.policy:
        session_policy = _documents([session.policy])
    return evaluate(
        identity=_documents(list(key.collect_policies())),
        action=request._action,
        resource=resource,
        context=context,
        session=session_policy,
    )


def _check_action_permitted(self: Any, resource: str) -> None:
    """Replaces moto's ``IAMRequestBase.check_action_permitted``: :mod:`iam_eval` decides, against the
    resource the request names (``eksid_resource``, set by the sandbox) or moto's."""
    from moto.iam.access_control import S3IAMRequest

    if self._action == "sts:GetCallerIdentity":  # always allowed, even with an explicit deny
        return
    resource = str(getattr(self, "eksid_resource", None) or resource)
    decision = decide(self, resource, datetime.datetime.now(datetime.UTC))
    assuming = decision.allowed and self._is_assuming_role_operation(resource)
    if assuming and not self._check_role_trust_relationship(resource):
        decision = Decision("implicit-deny", "resource-based")
    if decision.allowed:
        return
    message = (
        f"User: {self._access_key.arn} is not authorized to perform: {self._action} on resource: "
        f"{resource} {decision.reason(self._action)}"
    )
    if isinstance(self, S3IAMRequest):
        bucket = self._data.get("BucketName") if isinstance(self._data, Mapping) else None
        s3_denied = BucketAccessDeniedError(bucket=str(bucket)) if bucket else S3AccessDeniedError()
        s3_denied.eksid_message = message  # type: ignore[attr-defined]
        raise s3_denied
    raise PolicyDenied(message)


# --- the resource each service authorizes against --------------------------------------------------


def _dynamodb_resource(self: Any) -> str:
    table = self._get_param("TableName")
    if not isinstance(table, str) or not table:
        return "*"
    arn = table if table.startswith("arn:") else f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"
    index = self._get_param("IndexName")
    return f"{arn}/index/{index}" if isinstance(index, str) and index else arn


def _secret_resource(self: Any) -> str:
    """The secret's ARN, random 6-character suffix included; for a secret that does not exist (or is
    being created) ``secret:<name>`` (guessed: AWS does not document that case)."""
    from moto.secretsmanager.models import secretsmanager_backends

    name = self._get_param("SecretId") or self._get_param("Name")
    if not isinstance(name, str) or not name:
        return "*"
    found = secretsmanager_backends[self.current_account][self.region].secrets.get(name)
    if found is not None:
        return str(found.arn)
    if name.startswith("arn:"):
        return name
    return f"arn:aws:secretsmanager:{self.region}:{self.current_account}:secret:{name}"


def parameter_arn(region: str, account: str, name: str) -> str:
    """``arn:aws:ssm:<region>:<account>:parameter/<name>``: a hierarchical name's leading ``/`` is the
    ARN's separator (``/app/db`` -> ``parameter/app/db``, ``db`` -> ``parameter/db``)."""
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.removeprefix('/')}"


def _ssm_resource(self: Any) -> str:
    name = self._get_param("Name") or self._get_param("Path")
    if not isinstance(name, str) or not name:
        names = self._get_param("Names")
        name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    return parameter_arn(self.region, self.current_account, name) if name else "*"


def _kms_resource(self: Any) -> str:
    """The key's ARN (from KeyId, else from the ciphertext's key); ``*`` when the request names none."""
    from pytest_eksid.sandbox.fidelity import kms_key, kms_key_from_ciphertext

    key_id = self._get_param("KeyId")
    key = None
    if isinstance(key_id, str) and key_id:
        key = kms_key(self.current_account, self.region, key_id)
    elif isinstance(self._get_param("CiphertextBlob"), bytes):  # moto's _get_param decodes it
        key = kms_key_from_ciphertext(self.current_account, self.region, self._get_param("CiphertextBlob"))
    return str(key.arn) if key is not None else "*"


# The moto response classes whose resource moto leaves at ``*``, by qualified name: naming them rather than
# importing them keeps a sandbox's start from importing moto.ssm (which imports moto.ec2: ~1 s of CPU per
# start) for profiles that never call SSM.
_RESOLVERS: dict[str, Callable[[Any], str]] = {
    "moto.dynamodb.responses.DynamoHandler": _dynamodb_resource,
    "moto.kms.responses.KmsResponse": _kms_resource,
    "moto.secretsmanager.responses.SecretsManagerResponse": _secret_resource,
    "moto.ssm.responses.SimpleSystemManagerResponse": _ssm_resource,
}


def _determine_resource(self: Any) -> str:
    """BaseResponse's resource for the classes above (a class defining its own, as IAM's, STS's and SQS's do,
    keeps it); ``*`` otherwise, as moto's call_action uses without the method."""
    cls = type(self)
    resolve = _RESOLVERS.get(f"{cls.__module__}.{cls.__qualname__}")
    if resolve is None:
        return "*"
    try:
        return resolve(self)
    except Exception:  # malformed input: the service reports it after authorization
        return "*"


def install() -> None:
    """Make moto authorize with :mod:`iam_eval` and real resources (undone by :func:`uninstall`)."""
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequest, S3IAMRequest

    for cls in (IAMRequest, S3IAMRequest):
        cls.check_action_permitted = _check_action_permitted  # type: ignore[method-assign]
    BaseResponse._determine_resource = _determine_resource  # type: ignore[attr-defined]


def uninstall() -> None:
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequest, S3IAMRequest

    for cls in (IAMRequest, S3IAMRequest):
        if "check_action_permitted" in vars(cls):
            del cls.check_action_permitted
    if "_determine_resource" in vars(BaseResponse):
        del BaseResponse._determine_resource  # type: ignore[attr-defined]
