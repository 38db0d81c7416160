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

Authorization questions are put to moto's own authorizer, so the answers agree with moto's
enforcement of the same policies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from moto.iam.models import get_account_id_from, iam_backends
from moto.sts.models import sts_backends
from werkzeug.wrappers import Request, Response

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


def authorize(request: Request, body: bytes, action: str, resource: str) -> str | None:
    """Ask moto's authorizer about ``service:Action`` on ``resource``; None when allowed, else why not."""
    from moto.iam.access_control import IAMRequest, S3IAMRequest

    scope = credential_scope(request.headers.get("Authorization", ""))
    if len(scope) < 4:
        return "Missing Authentication Token"
    service, operation = action.split(":", 1)
    cls = S3IAMRequest if service == "s3" else IAMRequest
    try:
        iam_request = cls(
            account_id=get_account_id_from(scope[0]),
            method=request.method,
            path=request.full_path.rstrip("?"),
            data={},
            body=body,
            headers=dict(request.headers.items()),
            action=operation,
        )
        iam_request.check_signature()
        iam_request.check_action_permitted(resource)
    except Exception as exc:
        return str(getattr(exc, "message", None) or getattr(exc, "description", None) or exc)
    return None


def _denial_reason(action: str) -> str:
    # moto evaluates identity-based policies only: a denial is "no identity-based policy allows".
    return f"because no identity-based policy allows the {action} action"


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


def s3(request: Request, body: bytes, moto: WsgiApp, environ: dict[str, Any]) -> Response:
    bucket, key = _s3_target(request)
    args = dict(request.args.items())
    action = "s3:" + _s3_action(request.method, key, args)
    resource = f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"
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
        return _s3_error(
            "AccessDenied",
            f'User: {who} is not authorized to perform: {action} on resource: "{resource}" {_denial_reason(action)}',
            403,
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
        dry_run = isinstance(payload, dict) and payload.get("DryRun") is True
        if dry_run and authorize(request, body, f"kms:{operation}", "*") is None:
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
        acted = _ACTION_IN_MESSAGE.search(message)
        action = acted.group(1) if acted else f"{service}:{operation}"
        code = JSON_DENIAL_CODE.get(service, "AccessDeniedException")
        headers = {"x-amzn-ErrorType": code}
        if service == "sqs":
            headers["x-amzn-query-error"] = "AccessDenied;Sender"
        return Response(
            json.dumps({"__type": code, "message": f"{message} {_denial_reason(action)}"}),
            status=400 if service != "sqs" else 403,
            content_type="application/x-amz-json-1.0",
            headers=headers,
        )
    return answer.response()
