"""Where moto answers differently from AWS in ways the probe depends on, answer as AWS does.

- S3 ``GetObject`` of a missing key: AWS answers 403, not 404, when the caller lacks
  ``s3:ListBucket`` (moto always says 404).
- S3 ``PutObject`` whose ``Content-MD5`` does not match the body: ``BadDigest`` after
  authorization, and nothing is stored (moto ignores the header and stores the object).
  *Assumed* order (authorize, then check the digest): see docs/sandbox.md.
- Denials of JSON-protocol services (SQS, KMS, DynamoDB, Secrets Manager, SSM): moto answers
  an XML body with code ``403``; AWS answers JSON with ``AccessDeniedException`` (``AccessDenied``
  for SQS) and names the policy type that denied.
- S3 denials name the caller, the action and the policy type, as same-account S3 denials do.
- KMS ``DryRun``: ``DryRunOperationException`` (HTTP 412) when the caller is allowed.
- KMS authorizes against the key's ARN (moto uses ``*``), and the key policy decides too: a key
  policy that neither names the caller nor delegates to IAM (the account root) denies, "because no
  resource-based policy allows" it.
- STS ``GetCallerIdentity`` presigned (query-string SigV4, as ``aws eks get-token`` makes it): moto
  reads credentials only from an Authorization header and answers an unsigned request as a default
  ``user/moto``; here the signature (signed headers included), the session token and the expiry are
  checked as STS does, and the caller is the session's.
- S3 on an SSE-KMS bucket: PutObject needs ``kms:GenerateDataKey`` and GetObject needs
  ``kms:Decrypt`` on the bucket's key, checked with ``kms:ViaService`` = S3 (moto checks neither).

Authorization questions are put to moto's authorizer, which the sandbox has handed to its one IAM
evaluator (``authorizer``/``iam_eval``): the answers here agree with the enforcement of the same
policies, and every denial names the policy type that denied, as AWS does.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from moto.iam.models import get_account_id_from, iam_backends
from moto.kms.models import kms_backends
from moto.sts.models import sts_backends
from werkzeug.wrappers import Request, Response

from pytest_eksid.sandbox import errors
from pytest_eksid.sandbox.trust import trust_allows

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
JSON_DENIAL_CODE = {"sqs": "AccessDenied"}  # everything else: AccessDeniedException
# moto's authentication failures, and how each JSON-protocol service names them.
AUTH_FAILURES = {b"InvalidClientTokenId", b"SignatureDoesNotMatch", b"InvalidToken", b"AuthFailure"}
JSON_AUTH_CODE = {"sqs": "InvalidClientTokenId"}  # everything else: UnrecognizedClientException


def credential_scope(authorization: str) -> list[str]:
    """``[key id, date, region, service, "aws4_request"]`` from a SigV4 Authorization header."""
    cred = authorization.partition("Credential=")[2].partition(",")[0]
    return cred.split("/")


def caller_arn(access_key: str) -> str:
    account = get_account_id_from(access_key)
    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        return str(assumed.arn)
    user = iam_backends[account]["aws"].get_user_from_access_key_id(access_key)
    return str(user.arn) if user is not None else f"arn:aws:iam::{account}:user/unknown"


def caller_principal(access_key: str) -> tuple[str, str]:
    """(the caller's ARN as AWS prints it, the principal policies name): the role for a role session."""
    account = get_account_id_from(access_key)
    assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    if assumed is not None:
        return str(assumed.arn), str(assumed.role_arn)
    arn = caller_arn(access_key)
    return arn, arn


_KEY_ID = re.compile(r"^(mrk-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def kms_key(account: str, region: str, key_id: str) -> Any | None:
    """The moto key a KeyId (key id, key ARN, alias name or alias ARN) names; None when none."""
    backend = kms_backends[account][region]
    name = key_id
    if name.startswith("arn:") and ":alias/" in name:
        name = "alias/" + name.split(":alias/", 1)[1]
    if name.startswith("alias/"):
        found = next((k for k in backend.keys.values() if name in k.aliases), None)
        return found
    if name.startswith("arn:") and ":key/" in name:
        name = name.split(":key/", 1)[1]
    return backend.keys.get(name)


def kms_key_from_ciphertext(account: str, region: str, blob: bytes) -> Any | None:
    """The key a ciphertext was made with (the sandbox's ciphertexts start with the key id, as moto writes them)."""
    head = blob[:36].decode("ascii", "replace")
    return kms_key(account, region, head) if _KEY_ID.match(head) else None


def key_policy_denial(
    key: Any, *, caller: str, principal: str, action: str, via_service: str | None = None
) -> str | None:
    """None when the key policy lets ``principal`` perform ``action`` (by naming it, or by delegating to
    IAM through the account root), else the AccessDenied message KMS gives.

    The IAM side is decided separately (by the sandbox's authorizer, against the key's ARN).
    Simplification: a key policy that names the role still needs an identity-policy allow here; on AWS
    the key policy alone suffices within the account.
    """
    try:
        document = json.loads(key.policy)
    except (TypeError, ValueError):
        document = {}
    account = str(key.account_id)
    context: dict[str, list[str]] = {
        "aws:PrincipalArn": [principal],
        "aws:PrincipalAccount": [account],
        "kms:CallerAccount": [account],
    }
    if via_service:
        context["kms:ViaService"] = [via_service]
    allowed, reason = trust_allows(
        document if isinstance(document, dict) else {},
        principal_kind="AWS",
        principal=principal,
        actions=[action],
        context=context,
    )
    if allowed:
        return None
    why = (
        "with an explicit deny in a resource-based policy"
        if "explicitly denied" in reason
        else f"because no resource-based policy allows the {action} action"
    )
    return f"User: {caller} is not authorized to perform: {action} on resource: {key.arn} {why}"


def kms_denial(request: Request, body: bytes, key: Any, action: str, via_service: str | None = None) -> str | None:
    """The caller's identity policies and the key policy, as KMS evaluates both; None when allowed."""
    scope = credential_scope(request.headers.get("Authorization", ""))
    if len(scope) < 4 or not scope[0]:
        return "Missing Authentication Token"
    context = {"kms:ViaService": [via_service]} if via_service else None
    denied = authorize(request, body, action, str(key.arn), context=context)
    if denied is not None and not denied.startswith("User: "):
        return denied  # not a policy decision: the credentials were refused
    try:
        caller, principal = caller_principal(scope[0])
    except Exception:  # an unknown key id: moto answers the authentication failure itself
        return None
    if denied is not None:
        return denied
    return key_policy_denial(key, caller=caller, principal=principal, action=action, via_service=via_service)


def authorize(
    request: Request, body: bytes, action: str, resource: str, *, context: dict[str, list[str]] | None = None
) -> str | None:
    """Ask the sandbox's authorizer (moto's, decided by :mod:`iam_eval`) about ``service:Action`` on
    ``resource`` with extra request ``context``; None when allowed, else AWS's message (or moto's
    authentication failure)."""
    from moto.iam.access_control import IAMRequest, S3IAMRequest

    scope = credential_scope(request.headers.get("Authorization", ""))
    if len(scope) < 4:
        return "Missing Authentication Token"
    operation = action.split(":", 1)[1]
    # The signature is checked as the request's own service signs; the action may be another
    # service's (S3 asking KMS on the caller's behalf).
    cls = S3IAMRequest if scope[3] == "s3" else IAMRequest
    try:
        iam_request = cls(
            account_id=get_account_id_from(scope[0]),
            method=request.method,
            # As sent (RAW_URI): the signature covers the encoded path (an EKS access entry's ARN holds %2F).
            path=str(request.environ.get("RAW_URI") or request.full_path).rstrip("?"),
            data={},
            body=body,
            headers=dict(request.headers.items()),
            action=operation,
        )
        iam_request._action = action  # moto would prefix the request's service
        iam_request.eksid_context = context or {}  # type: ignore[union-attr]  # read by authorizer.decide
        iam_request.check_signature()
        iam_request.check_action_permitted(resource)
    except Exception as exc:
        found = getattr(exc, "eksid_message", None) or getattr(exc, "message", None)
        return str(found or getattr(exc, "description", None) or exc)
    return None


def _denial_reason(action: str) -> str:
    # Only for a denial the authorizer did not word (it always names the policy type).
    return f"because no identity-based policy allows the {action} action"


def _worded(message: str) -> bool:
    return " because no " in message or " with an explicit deny in " in message


def _s3_target(request: Request) -> tuple[str, str]:
    """(bucket, key) of a path-style S3 request."""
    parts = request.path.lstrip("/").split("/", 1)
    return unquote(parts[0]), unquote(parts[1]) if len(parts) > 1 else ""


def _s3_action(method: str, key: str, args: dict[str, str]) -> str:
    if key:
        return {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
            method, "PutObject"
        )
    if method == "GET" and not ({"policy", "acl", "location", "versioning", "tagging"} & set(args)):
        return "ListBucket"
    return {"PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, "ListBucket")


def _s3_error(code: str, message: str, status: int, extra: str = "") -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"{extra}<RequestId>EKSIDSANDBOX</RequestId></Error>"
    )
    return Response(body, status=status, content_type="application/xml")


def _is_streaming(request: Request) -> bool:
    return request.headers.get("x-amz-content-sha256", "").startswith("STREAMING-") or "aws-chunked" in (
        request.headers.get("Content-Encoding", "")
    )


class Captured:
    """A WSGI response held back so it can be inspected and rewritten."""

    def __init__(self, app: WsgiApp, environ: dict[str, Any]) -> None:
        self.status = "500 INTERNAL SERVER ERROR"
        self.headers: list[tuple[str, str]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            self.status, self.headers = status, list(headers)
            return lambda _data: None

        self.body = b"".join(app(environ, start_response))

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def response(self) -> Response:
        answer = Response(self.body, status=self.status, headers=self.headers)
        length = next((v for k, v in self.headers if k.lower() == "content-length"), None)
        if length is not None:  # a HEAD answer has no body but the object's real length
            answer.headers["Content-Length"] = length
        return answer


def _s3_kms_check(request: Request, bucket: str, key: str, args: dict[str, str]) -> tuple[Any, str] | None:
    """(the KMS key, the KMS action) an object read or write of an SSE-KMS object needs; None otherwise."""
    if not key or args or request.method not in ("GET", "HEAD", "PUT"):
        return None
    scope = credential_scope(request.headers.get("Authorization", ""))
    if len(scope) < 4 or not scope[0]:
        return None
    from moto.s3.models import s3_backends

    try:
        account = get_account_id_from(scope[0])
        found = s3_backends[account]["aws"].buckets.get(bucket)
        if found is None:
            return None
        if request.method == "PUT":
            key_id = request.headers.get("x-amz-server-side-encryption-aws-kms-key-id")
            algorithm = request.headers.get("x-amz-server-side-encryption")
            default = ((found.encryption or {}).get("Rule") or {}).get("ApplyServerSideEncryptionByDefault") or {}
            if algorithm is None:
                algorithm, key_id = default.get("SSEAlgorithm"), key_id or default.get("KMSMasterKeyID")
            kms_action = "kms:GenerateDataKey"
        else:
            stored = found.keys.get(key)
            if stored is None:
                return None
            algorithm, key_id, kms_action = stored.encryption, stored.kms_key_id, "kms:Decrypt"
        if algorithm != "aws:kms" or not key_id:
            return None
        kms_key_obj = kms_key(account, scope[2], str(key_id))
    except Exception:  # anything unexpected: moto answers as it would
        return None
    return (kms_key_obj, kms_action) if kms_key_obj is not None else None


def s3(request: Request, body: bytes, moto: WsgiApp, environ: dict[str, Any]) -> Response:
    bucket, key = _s3_target(request)
    args = dict(request.args.items())
    action = "s3:" + _s3_action(request.method, key, args)
    resource = f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"
    kms_check = _s3_kms_check(request, bucket, key, args)
    if kms_check is not None and authorize(request, body, action, resource) is None:
        kms_key_obj, kms_action = kms_check
        region = credential_scope(request.headers.get("Authorization", ""))[2]
        denied = kms_denial(request, body, kms_key_obj, kms_action, via_service=f"s3.{region}.amazonaws.com")
        if denied is not None and denied.startswith("User: "):
            # S3 passes KMS's denial on as its own 403 (assumed: before the Content-MD5 check).
            return _s3_error("AccessDenied", denied, 403)
    md5 = request.headers.get("Content-MD5")
    if request.method == "PUT" and key and md5 and not _is_streaming(request) and not args:
        actual = base64.b64encode(hashlib.md5(body).digest()).decode()
        if actual != md5 and authorize(request, body, action, resource) is None:
            return _s3_error(
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
                400,
                f"<ExpectedDigest>{escape(md5)}</ExpectedDigest><CalculatedDigest>{actual}</CalculatedDigest>",
            )
    answer = Captured(moto, environ)
    missing = answer.code == 404 and request.method in ("GET", "HEAD") and key and b"NoSuchKey" in answer.body
    if missing and authorize(request, body, "s3:ListBucket", f"arn:aws:s3:::{bucket}") is not None:
        return _s3_error("AccessDenied", "Access Denied", 403)
    if answer.code == 403 and b"<Code>AccessDenied</Code>" in answer.body:
        scope = credential_scope(request.headers.get("Authorization", ""))
        who = caller_arn(scope[0]) if scope and scope[0] else "anonymous"
        denied = authorize(request, body, action, resource) or ""
        why = denied.rpartition(f" {resource} ")[2] if _worded(denied) else _denial_reason(action)
        return _s3_error(
            "AccessDenied", f'User: {who} is not authorized to perform: {action} on resource: "{resource}" {why}', 403
        )
    return answer.response()


_XML_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.S)
_ACTION_IN_MESSAGE = re.compile(r"perform: ([\w-]+:\w+)")


def json_service(request: Request, body: bytes, moto: WsgiApp, environ: dict[str, Any], service: str) -> Response:
    target = request.headers.get("X-Amz-Target", "")
    operation = target.rsplit(".", 1)[-1]
    if service == "kms" and operation and body:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        key = _kms_request_key(request, payload)
        action = f"kms:{operation}"
        if key is not None:
            denied = kms_denial(request, body, key, action)
            if denied is not None and denied.startswith("User: "):
                return _json_denial(service, denied)
        dry_run = isinstance(payload, dict) and payload.get("DryRun") is True
        resource = str(key.arn) if key is not None else "*"
        if dry_run and authorize(request, body, action, resource) is None:
            return Response(
                json.dumps(
                    {
                        "__type": "DryRunOperationException",
                        "message": "The request would have succeeded, but the DryRun option is set.",
                    }
                ),
                status=412,
                content_type="application/x-amz-json-1.1",
                headers={"x-amzn-ErrorType": "DryRunOperationException"},
            )
    answer = Captured(moto, environ)
    auth_failure = next((code for code in AUTH_FAILURES if b"<Code>" + code + b"</Code>" in answer.body), None)
    if answer.code == 403 and auth_failure is not None:
        code = JSON_AUTH_CODE.get(service, "UnrecognizedClientException")
        if auth_failure == b"SignatureDoesNotMatch" and service != "sqs":
            code = "InvalidSignatureException"
        found = _XML_MESSAGE.search(answer.body)
        return Response(
            json.dumps({"__type": code, "message": found.group(1).decode("utf-8", "replace") if found else code}),
            status=400 if service != "sqs" else 403,
            content_type="application/x-amz-json-1.0",
            headers={
                "x-amzn-ErrorType": code,
                **({"x-amzn-query-error": f"{code};Sender"} if service == "sqs" else {}),
            },
        )
    if answer.code == 403 and answer.body.lstrip().startswith(b"<") and b"<Code>AccessDenied</Code>" in answer.body:
        found = _XML_MESSAGE.search(answer.body)
        message = found.group(1).decode("utf-8", "replace") if found else "Access denied"
        if _worded(message):
            return _json_denial(service, message)
        acted = _ACTION_IN_MESSAGE.search(message)
        action = acted.group(1) if acted else f"{service}:{operation}"
        return _json_denial(service, f"{message} {_denial_reason(action)}")
    return answer.response()


def _json_denial(service: str, message: str) -> Response:
    code = JSON_DENIAL_CODE.get(service, "AccessDeniedException")
    headers = {"x-amzn-ErrorType": code}
    if service == "sqs":
        headers["x-amzn-query-error"] = "AccessDenied;Sender"
    return Response(
        json.dumps({"__type": code, "message": message}),
        status=400 if service != "sqs" else 403,
        content_type="application/x-amz-json-1.0",
        headers=headers,
    )


def _kms_request_key(request: Request, payload: Any) -> Any | None:
    """The key a KMS request is about (KeyId, else the ciphertext's key); None when it names none."""
    scope = credential_scope(request.headers.get("Authorization", ""))
    if len(scope) < 4 or not scope[0] or not isinstance(payload, dict):
        return None
    try:
        account, region = get_account_id_from(scope[0]), scope[2]
        if isinstance(payload.get("KeyId"), str):
            return kms_key(account, region, payload["KeyId"])
        if isinstance(payload.get("CiphertextBlob"), str):
            return kms_key_from_ciphertext(account, region, base64.b64decode(payload["CiphertextBlob"]))
    except Exception:  # malformed input: KMS reports it itself
        return None
    return None


def _sts_xml(status: int, body: str) -> Response:
    return Response(body, status=status, content_type="text/xml")


def _sts_refusal(code: str, message: str) -> Response:
    """A refused presigned GetCallerIdentity: errors of AWS's request front, in no model (:mod:`errors`)."""
    return _sts_xml(
        errors.status("sts", code),
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></ErrorResponse>",
    )


PRESIGNED_CALLER_IDENTITY_LIFETIME = datetime.timedelta(minutes=15)


def presigned_caller_identity(request: Request, now: Callable[[], datetime.datetime]) -> Response:
    """A presigned GetCallerIdentity, checked as STS checks query-string SigV4 (``now``: the verifier's clock)."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    args = {k: v for k, v in request.args.items()}
    scope = args.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or scope[3] != "sts":
        return _sts_refusal("IncompleteSignature", "Credential scope is malformed")
    key_id, region = scope[0], scope[2]
    # A role session (its secret and session token from moto's STS), or an IAM user's long-lived key (no
    # session token): STS answers both with the caller's ARN.
    secret: str | None = None
    token: str | None = None
    arn = user_id = ""
    try:
        account = get_account_id_from(key_id)
        assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(key_id)
        if assumed is not None:
            secret, token, arn, user_id = assumed.secret_access_key, assumed.session_token, assumed.arn, assumed.user_id
        else:
            user = iam_backends[account]["aws"].get_user_from_access_key_id(key_id)
            key = next((k for k in (user.access_keys if user else []) if k.access_key_id == key_id), None)
            if user is not None and key is not None and key.status == "Active":
                secret, arn, user_id = key.secret_access_key, user.arn, user.id
    except Exception:
        secret = None
    if secret is None or args.get("X-Amz-Security-Token") != token:
        return _sts_refusal("InvalidClientTokenId", "The security token included in the request is invalid.")
    try:
        signed_at = datetime.datetime.strptime(args.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC
        )
        expires = int(args.get("X-Amz-Expires", ""))
    except ValueError:
        return _sts_refusal("IncompleteSignature", "X-Amz-Date or X-Amz-Expires is malformed")
    # STS honours a presigned GetCallerIdentity for 15 minutes from X-Amz-Date whatever X-Amz-Expires says
    # (``aws eks get-token`` signs 60 s and its token is good for 14 minutes) [kubernetes-sigs/aws-iam-authenticator
    # @81b1daba pkg/token/token.go:92-99,657-661]; X-Amz-Expires must still be a number, as SigV4 query signing has it.
    if expires < 0 or now() > signed_at + PRESIGNED_CALLER_IDENTITY_LIFETIME:
        return _sts_refusal("ExpiredToken", "Signature expired")
    names = [n for n in args.get("X-Amz-SignedHeaders", "").split(";") if n]
    headers = {n: request.headers.get(n, "") for n in names if n != "host"}
    query = "&".join(
        part for part in request.query_string.decode().split("&") if not part.startswith("X-Amz-Signature=")
    )
    url = f"{request.scheme}://{request.host}{request.path}?{query}"
    unsigned = AWSRequest(method="GET", url=url, headers=headers)
    unsigned.context["timestamp"] = args["X-Amz-Date"]
    signer = SigV4QueryAuth(Credentials(key_id, secret, token), "sts", region)
    canonical = signer.canonical_request(unsigned)
    expected = signer.signature(signer.string_to_sign(unsigned, canonical), unsigned)
    if not hmac.compare_digest(expected, args.get("X-Amz-Signature", "")):
        return _sts_refusal(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return _sts_xml(
        200,
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
        f"<Arn>{escape(str(arn))}</Arn><UserId>{escape(str(user_id))}</UserId>"
        f"<Account>{escape(str(account))}</Account></GetCallerIdentityResult>"
        "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>",
    )
