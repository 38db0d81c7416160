"""The probe's reading of AWS answers, from the raw HTTP error responses the services really send.

Each error is parsed by botocore's own protocol parser (rest-xml for S3, query for STS, JSON for
SQS/KMS/DynamoDB, with SQS's query-compatible ``x-amzn-query-error`` header) and wrapped in the
``ClientError`` a client would raise, so ``program._error`` and ``program.classify`` see exactly
what they see in the pod. IMDS and the environment audit run against local stdlib servers and
temporary files.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.parsers
import botocore.session
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from pytest_eksid.probe import program
from pytest_eksid.probe.actions import plan_item

ROLE_SESSION = "arn:aws:sts::111122223333:assumed-role/app/botocore-session-1700000000"
BUCKET_KEY = "arn:aws:s3:::company-finance/invoices/2026/11/29/eksid-probe.pdf"
QUEUE = "arn:aws:sqs:eu-west-1:111122223333:invoice-exported"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TABLE = "arn:aws:dynamodb:eu-west-1:111122223333:table/orders"
OTHER_ROLE = "arn:aws:iam::111122223333:role/other"

_SESSION = botocore.session.get_session()


def _parse(service: str, operation: str, status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What botocore makes of one raw HTTP answer (headers lower-cased, as botocore passes them)."""
    model = _SESSION.get_service_model(service)
    op = model.operation_model(operation)
    parser = botocore.parsers.create_parser(model.protocol)
    parsed: dict[str, Any] = parser.parse({"status_code": status, "headers": headers, "body": body}, op.output_shape)
    return parsed


def _client_error(service: str, operation: str, status: int, headers: dict[str, str], body: bytes) -> ClientError:
    return ClientError(_parse(service, operation, status, headers, body), operation)


def _s3_error(operation: str, status: int, code: str, message: str) -> ClientError:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>4442587FB7D0A2F9</RequestId>"
        "<HostId>vjjB3aK8sxNg2wFzXmFXzTbMZy0a8W5q2C3hGRIQ+Lw=</HostId></Error>"
    ).encode()
    headers = {"x-amz-request-id": "4442587FB7D0A2F9", "content-type": "application/xml"}
    return _client_error("s3", operation, status, headers, body)


def _json_error(
    service: str,
    operation: str,
    status: int,
    type_: str,
    message: str,
    query_error: str | None = None,
    message_key: str = "message",
) -> ClientError:
    headers = {"x-amzn-requestid": "c3b4a1e6-0000-4000-8000-000000000000", "content-type": "application/x-amz-json-1.0"}
    if query_error is not None:
        headers["x-amzn-query-error"] = query_error
    body = json.dumps({"__type": type_, message_key: message}).encode()
    return _client_error(service, operation, status, headers, body)


def _query_error(service: str, operation: str, status: int, code: str, message: str) -> ClientError:
    body = (
        f'<ErrorResponse xmlns="https://{service}.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>6b5d4c3a-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
    ).encode()
    return _client_error(service, operation, status, {"content-type": "text/xml"}, body)


def _item(
    action: str,
    resource: str,
    *,
    live: bool = False,
    params: dict[str, Any] | None = None,
    ident: str = "t",
    expect: str = "denied",
) -> dict[str, Any]:
    """A plan item as the runner builds it, so authorized codes and forms are the catalogue's own."""
    return plan_item(
        ident=ident, expect=expect, action=action, resource=resource, params=params or {}, live=live, call=None
    )


def _classify(action: str, resource: str, exc: BaseException, **kw: Any) -> dict[str, Any]:
    return program.classify(_item(action, resource, **kw), program._error(exc))


def _not_authorized(action: str, resource: str, reason: str) -> str:
    return f'User: {ROLE_SESSION} is not authorized to perform: {action} on resource: "{resource}" {reason}'


# --- S3 (rest-xml) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "policy_type", "explicit"),
    [
        ("because no identity-based policy allows the s3:PutObject action", "identity-based-policy", False),
        ("with an explicit deny in a service control policy", "service-control-policy", True),
        ("with an explicit deny in a resource control policy", "resource-control-policy", True),
        ("because no permissions boundary allows the s3:PutObject action", "permissions-boundary", False),
        ("because no session policy allows the s3:PutObject action", "session-policy", False),
        ("with an explicit deny in a resource-based policy", "resource-based-policy", True),
        ("because no VPC endpoint policy allows the s3:PutObject action", "vpc-endpoint-policy", False),
        ("with an explicit deny in an identity-based policy", "identity-based-policy", True),
    ],
)
def test_s3_access_denied_names_the_policy_type(reason: str, policy_type: str, explicit: bool) -> None:
    exc = _s3_error("PutObject", 403, "AccessDenied", _not_authorized("s3:PutObject", BUCKET_KEY, reason))
    assert program._error(exc)["code"] == "AccessDenied"
    assert program._error(exc)["http_status"] == 403
    result = _classify("s3:PutObject", BUCKET_KEY, exc)
    assert result["outcome"] == "denied"
    assert result["policy_type"] == policy_type
    assert result["explicit"] is explicit
    assert result["why"] == ("denied by an explicit deny" if explicit else "denied")


def test_s3_get_object_denial_that_names_a_policy_is_conclusive() -> None:
    reason = "because no identity-based policy allows the s3:GetObject action"
    exc = _s3_error("GetObject", 403, "AccessDenied", _not_authorized("s3:GetObject", BUCKET_KEY, reason))
    result = _classify("s3:GetObject", BUCKET_KEY, exc)
    assert result == {
        "outcome": "denied",
        "why": "denied",
        "policy_type": "identity-based-policy",
        "explicit": False,
    }


def test_s3_get_object_bare_403_is_inconclusive() -> None:
    exc = _s3_error("GetObject", 403, "AccessDenied", "Access Denied")
    item = _item("s3:GetObject", BUCKET_KEY)
    assert item["bare_403_inconclusive"] is True
    result = program.classify(item, program._error(exc))
    assert result["outcome"] == "inconclusive"
    assert "s3:ListBucket" in result["why"]
    assert "policy_type" not in result


def test_s3_put_object_bare_403_is_denied_unspecified() -> None:
    exc = _s3_error("PutObject", 403, "AccessDenied", "Access Denied")
    item = _item("s3:PutObject", BUCKET_KEY)
    assert item["bare_403_inconclusive"] is False
    result = program.classify(item, program._error(exc))
    assert result == {"outcome": "denied", "why": "denied", "policy_type": "unspecified", "explicit": False}


def test_s3_head_style_403_without_body_is_a_denial() -> None:
    # HEAD answers carry no body: botocore falls back to the status code as the error code.
    parsed = _parse("s3", "HeadObject", 403, {"x-amz-request-id": "R"}, b"")
    error = program._error(ClientError(parsed, "HeadObject"))
    assert error == {"type": "ClientError", "code": "403", "message": "Forbidden", "http_status": 403}
    assert program.classify(_item("s3:PutObject", BUCKET_KEY), error)["outcome"] == "denied"


def test_s3_no_such_key_on_get_object_is_allowed() -> None:
    exc = _s3_error("GetObject", 404, "NoSuchKey", "The specified key does not exist.")
    result = _classify("s3:GetObject", BUCKET_KEY, exc)
    assert result == {"outcome": "allowed", "why": "authorized, then refused on purpose with NoSuchKey"}


def test_s3_bad_digest_on_safe_put_object_is_allowed() -> None:
    item = _item("s3:PutObject", BUCKET_KEY, live=False)
    assert item["form"] == "safe"
    exc = _s3_error("PutObject", 400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    result = program.classify(item, program._error(exc))
    assert result["outcome"] == "allowed"
    assert result["why"].endswith("BadDigest")


def test_s3_no_such_bucket_is_an_error() -> None:
    exc = _s3_error("GetObject", 404, "NoSuchBucket", "The specified bucket does not exist")
    assert program._error(exc)["code"] == "NoSuchBucket"
    result = _classify("s3:GetObject", BUCKET_KEY, exc)
    assert result == {"outcome": "error", "why": "the call failed for another reason than authorization"}


def test_s3_no_such_key_is_not_authorization_for_put_object() -> None:
    # authorized_codes are per action: NoSuchKey proves GetObject, not PutObject.
    exc = _s3_error("PutObject", 404, "NoSuchKey", "The specified key does not exist.")
    assert _classify("s3:PutObject", BUCKET_KEY, exc)["outcome"] == "error"


def test_s3_slow_down_is_an_error() -> None:
    exc = _s3_error("PutObject", 503, "SlowDown", "Please reduce your request rate.")
    assert _classify("s3:PutObject", BUCKET_KEY, exc)["outcome"] == "error"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
        ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."),
        ("RequestTimeTooSkewed", "The difference between the request time and the current time is too large."),
    ],
)
def test_s3_authentication_failure_403_is_not_a_denial(code: str, message: str) -> None:
    exc = _s3_error("PutObject", 403, code, message)
    assert _classify("s3:PutObject", BUCKET_KEY, exc)["outcome"] == "error"


# --- SQS (JSON, query-compatible) --------------------------------------------------------------


def test_sqs_json_access_denied_with_query_error_header() -> None:
    message = _not_authorized(
        "sqs:sendmessage", QUEUE, "because no identity-based policy allows the sqs:sendmessage action"
    )
    exc = _json_error(
        "sqs",
        "SendMessage",
        403,
        "com.amazon.coral.service#AccessDeniedException",
        message,
        query_error="AccessDenied;Sender",
        message_key="Message",
    )
    parsed = exc.response["Error"]
    assert parsed["Code"] == "AccessDenied"  # the query-compatible code wins over __type
    assert parsed["QueryErrorCode"] == "AccessDeniedException"
    error = program._error(exc)
    assert error == {"type": "ClientError", "code": "AccessDenied", "message": message, "http_status": 403}
    result = program.classify(_item("sqs:SendMessage", QUEUE), error)
    assert result["outcome"] == "denied"
    assert result["policy_type"] == "identity-based-policy"
    assert result["explicit"] is False


def test_sqs_json_access_denied_without_query_error_header() -> None:
    exc = _json_error(
        "sqs",
        "ReceiveMessage",
        400,
        "com.amazon.coral.service#AccessDeniedException",
        "Access to the resource is denied.",
    )
    assert program._error(exc)["code"] == "AccessDeniedException"
    result = _classify("sqs:ReceiveMessage", QUEUE, exc)
    assert result == {"outcome": "denied", "why": "denied", "policy_type": "unspecified", "explicit": False}


@pytest.mark.parametrize(
    ("type_", "query_error", "code"),
    [
        ("com.amazonaws.sqs#InvalidParameterValueException", "InvalidParameterValue;Sender", "InvalidParameterValue"),
        ("com.amazonaws.sqs#InvalidParameterValueException", None, "InvalidParameterValueException"),
    ],
)
def test_sqs_invalid_parameter_on_safe_send_message_is_allowed(type_: str, query_error: str | None, code: str) -> None:
    item = _item("sqs:SendMessage", QUEUE, live=False)
    assert item["params"]["DelaySeconds"] == 901
    message = "Value 901 for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
    exc = _json_error("sqs", "SendMessage", 400, type_, message, query_error=query_error)
    error = program._error(exc)
    assert error["code"] == code
    assert error["http_status"] == 400
    assert program.classify(item, error) == {
        "outcome": "allowed",
        "why": f"authorized, then refused on purpose with {code}",
    }


def test_sqs_queue_does_not_exist_is_an_error() -> None:
    exc = _json_error(
        "sqs",
        "SendMessage",
        400,
        "com.amazonaws.sqs#QueueDoesNotExist",
        "The specified queue does not exist.",
        query_error="AWS.SimpleQueueService.NonExistentQueue;Sender",
    )
    assert program._error(exc)["code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert _classify("sqs:SendMessage", QUEUE, exc)["outcome"] == "error"


# --- KMS, DynamoDB (JSON) ----------------------------------------------------------------------


def test_kms_access_denied_exception_400_is_denied() -> None:
    message = (
        f"User: {ROLE_SESSION} is not authorized to perform: kms:Decrypt on resource: {KMS_KEY} "
        "because no resource-based policy allows the kms:Decrypt action"
    )
    exc = _json_error("kms", "Decrypt", 400, "AccessDeniedException", message)
    error = program._error(exc)
    assert error["code"] == "AccessDeniedException"
    assert error["http_status"] == 400  # not a 403: the code alone must carry the denial
    result = program.classify(_item("kms:Decrypt", KMS_KEY), error)
    assert result["outcome"] == "denied"
    assert result["policy_type"] == "resource-based-policy"


def test_kms_dry_run_operation_exception_is_allowed() -> None:
    exc = _json_error(
        "kms",
        "Encrypt",
        412,
        "DryRunOperationException",
        "The request would have succeeded, but the DryRun option is set.",
    )
    assert program._error(exc)["http_status"] == 412
    result = _classify("kms:Encrypt", KMS_KEY, exc)
    assert result == {"outcome": "allowed", "why": "authorized, then refused on purpose with DryRunOperationException"}


def test_kms_throttling_is_an_error() -> None:
    exc = _json_error("kms", "GenerateDataKey", 400, "ThrottlingException", "Rate exceeded")
    assert program._error(exc)["code"] == "ThrottlingException"
    assert _classify("kms:GenerateDataKey", KMS_KEY, exc)["outcome"] == "error"


def test_dynamodb_access_denied_exception_is_denied() -> None:
    message = (
        f"User: {ROLE_SESSION} is not authorized to perform: dynamodb:GetItem on resource: {TABLE} "
        "with an explicit deny in a service control policy"
    )
    exc = _json_error(
        "dynamodb",
        "GetItem",
        400,
        "com.amazonaws.dynamodb.v20120810#AccessDeniedException",
        message,
        message_key="Message",
    )
    error = program._error(exc)
    assert error["code"] == "AccessDeniedException"  # botocore strips the namespace before '#'
    assert error["message"] == message
    result = program.classify(_item("dynamodb:GetItem", TABLE, params={"Key": {"pk": {"S": "1"}}}), error)
    assert result == {
        "outcome": "denied",
        "why": "denied by an explicit deny",
        "policy_type": "service-control-policy",
        "explicit": True,
    }


def test_dynamodb_conditional_check_failed_on_safe_put_item_is_allowed() -> None:
    item = _item("dynamodb:PutItem", TABLE, live=False, params={"Item": {"pk": {"S": "1"}}})
    assert item["form"] == "safe"
    exc = _json_error(
        "dynamodb",
        "PutItem",
        400,
        "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "The conditional request failed",
    )
    result = program.classify(item, program._error(exc))
    assert result["outcome"] == "allowed"
    assert result["why"].endswith("ConditionalCheckFailedException")


def test_dynamodb_throttling_exception_is_an_error() -> None:
    exc = _json_error(
        "dynamodb",
        "Query",
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    )
    item = _item(
        "dynamodb:Query",
        TABLE,
        params={"KeyConditionExpression": "pk = :v", "ExpressionAttributeValues": {":v": {"S": "1"}}},
    )
    error = program._error(exc)
    assert error["code"] == "ThrottlingException"
    assert program.classify(item, error) == {
        "outcome": "error",
        "why": "the call failed for another reason than authorization",
    }


# --- STS (query XML) ---------------------------------------------------------------------------


def test_sts_assume_role_access_denied_is_denied() -> None:
    message = f"User: {ROLE_SESSION} is not authorized to perform: sts:AssumeRole on resource: {OTHER_ROLE}"
    exc = _query_error("sts", "AssumeRole", 403, "AccessDenied", message)
    error = program._error(exc)
    assert error == {"type": "ClientError", "code": "AccessDenied", "message": message, "http_status": 403}
    result = program.classify(_item("sts:AssumeRole", OTHER_ROLE), error)
    assert result == {"outcome": "denied", "why": "denied", "policy_type": "unspecified", "explicit": False}


def test_sts_throttling_is_an_error() -> None:
    exc = _query_error("sts", "AssumeRole", 400, "Throttling", "Rate exceeded")
    assert _classify("sts:AssumeRole", OTHER_ROLE, exc)["outcome"] == "error"


def test_sts_invalid_client_token_403_is_not_a_denial() -> None:
    exc = _query_error(
        "sts", "AssumeRole", 403, "InvalidClientTokenId", "The security token included in the request is invalid."
    )
    assert _classify("sts:AssumeRole", OTHER_ROLE, exc)["outcome"] == "error"


# --- _error itself -----------------------------------------------------------------------------


def test_error_of_a_non_client_error_gives_its_type() -> None:
    exc = EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/")
    error = program._error(exc)
    assert error == {
        "type": "EndpointConnectionError",
        "code": "",
        "message": 'Could not connect to the endpoint URL: "https://sqs.eu-west-1.amazonaws.com/"',
        "http_status": None,
    }
    result = program.classify(_item("sqs:SendMessage", QUEUE), error)
    assert result["outcome"] == "error"


def test_error_keeps_only_type_code_message_status() -> None:
    exc = _s3_error("GetObject", 403, "AccessDenied", "Access Denied")
    assert exc.response["ResponseMetadata"]["HTTPHeaders"]  # botocore kept headers and request ids ...
    error = program._error(exc)
    assert set(error) == {"type", "code", "message", "http_status"}  # ... which _error drops
    assert "4442587FB7D0A2F9" not in json.dumps(error)


def test_error_message_truncated_to_500_characters() -> None:
    long_message = "x" * 2000
    for exc in (
        _s3_error("GetObject", 403, "AccessDenied", long_message),
        _json_error("kms", "Decrypt", 400, "AccessDeniedException", long_message),
        RuntimeError(long_message),
    ):
        assert program._error(exc)["message"] == "x" * 500


def test_classify_without_error_is_allowed() -> None:
    assert program.classify(_item("s3:GetObject", BUCKET_KEY), None) == {
        "outcome": "allowed",
        "why": "the call succeeded",
    }


# --- audit_environment -------------------------------------------------------------------------


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


CLAIMS = {
    "iss": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
    "sub": "system:serviceaccount:finance:invoice-exporter-aws-sa",
    "aud": ["sts.amazonaws.com"],
    "exp": 1893456000,
    "kubernetes.io": {
        "namespace": "finance",
        "serviceaccount": {"name": "invoice-exporter-aws-sa", "uid": "u-1"},
        "pod": {"name": "invoice-exporter-7d9f", "uid": "u-2"},
    },
}
SIGNATURE = "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr"
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "eyJhbGciOiJSUzI1NiJ9.agent-token.sig",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


def test_audit_environment_hides_secrets_and_decodes_tokens(tmp_path: Path, home: Path) -> None:
    token = f"{_b64url({'alg': 'RS256'})}.{_b64url(CLAIMS)}.{SIGNATURE}"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    (home / ".aws").mkdir()
    (home / ".aws" / "config").write_text("[default]\n", encoding="utf-8")
    environ = {
        **SECRETS,
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/app",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "PATH": "/usr/bin",
    }
    out = program.audit_environment(environ)
    aws = out["aws_variables"]
    assert aws == {
        "AWS_ACCESS_KEY_ID": "set, prefix AKIA",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "set",
        "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/app",
        "AWS_SECRET_ACCESS_KEY": "set",
        "AWS_SESSION_TOKEN": "set",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
    }
    assert out["token_files"] == {
        "AWS_WEB_IDENTITY_TOKEN_FILE": {
            "path": str(token_file),
            "claims": {
                "iss": CLAIMS["iss"],
                "sub": "system:serviceaccount:finance:invoice-exporter-aws-sa",
                "aud": ["sts.amazonaws.com"],
                "exp": 1893456000,
                "namespace": "finance",
                "serviceaccount": "invoice-exporter-aws-sa",
                "pod": "invoice-exporter-7d9f",
            },
        }
    }
    assert out["aws_files"] == {
        "credentials": {"path": str(home / ".aws" / "credentials"), "present": False},
        "config": {"path": str(home / ".aws" / "config"), "present": True},
    }
    dumped = json.dumps(out)
    for secret in (*SECRETS.values(), "AKIAIOSFODNN7EXAMPLE", SIGNATURE, token):
        assert secret not in dumped


def test_audit_environment_reports_a_missing_token_file(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "no-such-token"
    out = program.audit_environment({"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(missing)})
    assert out["aws_variables"] == {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(missing)}
    assert out["token_files"] == {
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": {
            "path": str(missing),
            "error": "FileNotFoundError: No such file or directory",
        }
    }


def test_audit_environment_reports_a_token_that_is_not_a_jwt(tmp_path: Path, home: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token", encoding="utf-8")
    out = program.audit_environment({"AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file)})
    assert out["token_files"]["AWS_WEB_IDENTITY_TOKEN_FILE"]["claims"] == {"error": "not a JWT"}


def test_audit_environment_ignores_non_aws_variables(home: Path) -> None:
    out = program.audit_environment(
        {"HOME": str(home), "KUBERNETES_SERVICE_HOST": "10.0.0.1", "AWS_REGION": "eu-west-1"}
    )
    assert out["aws_variables"] == {"AWS_REGION": "eu-west-1"}
    assert out["token_files"] == {}


def test_jwt_claims_of_a_non_object_payload_is_not_a_jwt() -> None:
    assert program._jwt_claims(f"h.{base64.urlsafe_b64encode(b'[1]').decode()}.s") == {"error": "not a JWT"}


# --- check_imds against local servers ----------------------------------------------------------

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]
ROLE = "eks-node-role"
NODE_KEY_ID = "ASIANODEKEYEXAMPLE01"
NODE_SECRET = "nodeSecretAccessKeyEXAMPLEvalue0123456789"
CREDS_PATH = "/latest/meta-data/iam/security-credentials/"


def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: str = "") -> None:
    data = body.encode()
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _Server:
    """A tiny threaded HTTP server on 127.0.0.1; each HTTP method is answered by a plain callable."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.release = threading.Event()
        outer = self

        class RequestHandler(http.server.BaseHTTPRequestHandler):
            def _dispatch(self) -> None:
                outer.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                handlers[self.command](self)

            do_GET = do_PUT = do_POST = _dispatch

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


Serve = Callable[..., _Server]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start servers with ``serve(PUT=..., GET=...)``; all are shut down at teardown."""
    servers: list[_Server] = []

    def start(**handlers: Handler) -> _Server:
        server = _Server(handlers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _token(handler: http.server.BaseHTTPRequestHandler) -> None:
    _reply(handler, 200, "AQAEAEXAMPLETOKEN==")


def _credentials(handler: http.server.BaseHTTPRequestHandler) -> None:
    if handler.path == CREDS_PATH:
        _reply(handler, 200, ROLE + "\n")
    elif handler.path == CREDS_PATH + ROLE:
        body = {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": NODE_KEY_ID, "SecretAccessKey": NODE_SECRET}
        _reply(handler, 200, json.dumps(body))
    else:
        _reply(handler, 404)


def test_imds_put_hangs_and_get_refused(serve: Serve) -> None:
    server: _Server

    def hang(handler: http.server.BaseHTTPRequestHandler) -> None:
        server.release.wait(timeout=60)  # far past the probe's timeout; released at teardown

    server = serve(PUT=hang, GET=lambda h: _reply(h, 401))
    t0 = time.monotonic()
    result = program.check_imds({"imds_timeout": 0.5}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.endpoint})
    assert time.monotonic() - t0 < 30  # the probe's own timeout cut the PUT short, not the server
    assert result == {
        "endpoint": server.endpoint.rstrip("/"),
        "v2": {"outcome": "blocked-timeout"},
        "v1": {"outcome": "blocked-refused", "http_status": 401},
    }
    # v1 and v2 are asked at once: the order of their requests is the scheduler's
    assert sorted((m, p) for m, p, _ in server.requests) == [("GET", CREDS_PATH), ("PUT", "/latest/api/token")]
    put = next(h for m, _, h in server.requests if m == "PUT")
    assert put["x-aws-ec2-metadata-token-ttl-seconds"] == "60"


def test_imds_exposed_reports_the_role_name_only(serve: Serve) -> None:
    server = serve(PUT=_token, GET=_credentials)
    result = program.check_imds({"imds_timeout": 2}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.endpoint})
    assert result["v2"] == {"outcome": "exposed", "role": ROLE, "http_status": 200}
    assert result["v1"] == {"outcome": "exposed", "role": ROLE, "http_status": 200}
    dumped = json.dumps(result)
    assert NODE_KEY_ID not in dumped
    assert NODE_SECRET not in dumped
    gets = [(p, h.get("x-aws-ec2-metadata-token")) for m, p, h in server.requests if m == "GET"]
    # each version's requests in order; the two versions run at once
    assert [p for p, token in gets if token] == [CREDS_PATH, CREDS_PATH + ROLE]
    assert {token for _, token in gets if token} == {"AQAEAEXAMPLETOKEN=="}
    assert [p for p, token in gets if not token] == [CREDS_PATH, CREDS_PATH + ROLE]


def test_imds_v2_only_exposes_v2_and_refuses_v1(serve: Serve) -> None:
    def get(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.headers.get("x-aws-ec2-metadata-token") is None:
            _reply(handler, 401)
        else:
            _credentials(handler)

    server = serve(PUT=_token, GET=get)
    result = program.check_imds({"imds_timeout": 2}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.endpoint})
    assert result["v2"]["outcome"] == "exposed"
    assert result["v1"] == {"outcome": "blocked-refused", "http_status": 401}


def test_imds_without_an_instance_role_has_no_credentials(serve: Serve) -> None:
    server = serve(PUT=_token, GET=lambda h: _reply(h, 404))
    result = program.check_imds({"imds_timeout": 2}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.endpoint})
    assert result["v2"] == {"outcome": "no-credentials", "http_status": 404}
    assert result["v1"] == {"outcome": "no-credentials", "http_status": 404}


def test_imds_nothing_listening_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = program.check_imds({"imds_timeout": 1}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint})
    assert result == {
        "endpoint": endpoint,
        "v2": {"outcome": "blocked-refused", "http_status": None, "detail": "refused"},
        "v1": {"outcome": "blocked-refused", "detail": "refused"},
    }


# --- run_actions over HTTP, against a local stand-in for the AWS endpoints -----------------------


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakeAws:
    """A local stand-in for every AWS endpoint: answers requests in order, records what it was sent."""

    server: _Server
    answers: list[Answer]
    bodies: list[bytes]


@pytest.fixture
def fake_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Serve) -> FakeAws:
    """botocore's default chain finds static keys; every endpoint (AWS_ENDPOINT_URL) is the local server."""
    lock = threading.Lock()
    answers: list[Answer] = []
    bodies: list[bytes] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        with lock:
            bodies.append(handler.rfile.read(length) if length else b"")
            status, headers, body = answers.pop(0)
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    fake = FakeAws(serve(GET=answer, PUT=answer, POST=answer), answers, bodies)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLELOCAL0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "localSecretEXAMPLE")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", fake.server.endpoint.rstrip("/"))
    return fake


S3_XML = {"content-type": "application/xml", "x-amz-request-id": "R1"}
AWS_JSON = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "R2"}


def test_run_actions_classifies_real_http_answers(fake_aws: FakeAws) -> None:
    object_secret = "payroll row: 4111-1111-1111-1111"
    fake_aws.answers += [
        (200, {**S3_XML, "content-type": "text/csv"}, object_secret.encode()),
        (
            400,
            S3_XML,
            b"<Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did not match what we "
            b"received.</Message></Error>",
        ),
        (
            403,
            {**AWS_JSON, "x-amzn-query-error": "AccessDenied;Sender"},
            json.dumps(
                {
                    "__type": "com.amazon.coral.service#AccessDeniedException",
                    "Message": _not_authorized(
                        "sqs:sendmessage", QUEUE, "with an explicit deny in a service control policy"
                    ),
                }
            ).encode(),
        ),
        (412, AWS_JSON, b'{"__type":"DryRunOperationException","message":"The request would have succeeded."}'),
    ]
    plan: dict[str, Any] = {
        "region": "eu-west-1",
        "actions": [
            _item("s3:GetObject", BUCKET_KEY, ident="get", expect="allowed"),
            _item("s3:PutObject", BUCKET_KEY, ident="put", expect="allowed"),
            _item("sqs:SendMessage", QUEUE, ident="send"),
            _item("kms:Decrypt", KMS_KEY, ident="kms", expect="allowed"),
        ],
    }
    results = program.run_actions(plan)
    by_id = {r["id"]: r for r in results}
    assert [r["outcome"] for r in results] == ["allowed", "allowed", "denied", "allowed"]
    assert by_id["get"]["why"] == "the call succeeded"
    assert "code" not in by_id["get"]
    assert by_id["put"]["code"] == "BadDigest"
    assert by_id["put"]["http_status"] == 400
    assert by_id["put"]["form"] == "safe"
    assert by_id["send"]["code"] == "AccessDenied"
    assert by_id["send"]["policy_type"] == "service-control-policy"
    assert by_id["send"]["explicit"] is True
    assert by_id["kms"]["code"] == "DryRunOperationException"
    assert object_secret not in json.dumps(results)
    # What went over the wire: the safe PutObject carried the planned wrong Content-MD5 and the probe body.
    put_headers = fake_aws.server.requests[1][2]
    assert put_headers["content-md5"] == plan["actions"][1]["params"]["ContentMD5"]
    assert not [h for h in put_headers if h.startswith("x-amz-checksum-")]  # client_config: no flexible checksum
    assert fake_aws.bodies[1] == b"pytest-eksid probe\n"
    assert json.loads(fake_aws.bodies[2])["DelaySeconds"] == 901
    assert fake_aws.server.requests[2][2]["x-amz-target"] == "AmazonSQS.SendMessage"
    kms_request = json.loads(fake_aws.bodies[3])
    assert kms_request["DryRun"] is True
    assert base64.b64decode(kms_request["CiphertextBlob"]) == b"\x01" * 64


def test_run_actions_reports_an_unknown_operation_as_an_error(fake_aws: FakeAws) -> None:
    item = plan_item(
        ident="g",
        expect="allowed",
        action="s3:GetObjectFoo",
        resource=None,
        params={},
        live=True,
        call={"service": "s3", "operation": "GetObjectFoo", "params": {}},
    )
    [result] = program.run_actions({"region": "eu-west-1", "actions": [item]})
    assert result["outcome"] == "error"
    assert result["code"] == "ValueError"
    assert result["message"] == "botocore's s3 client has no operation GetObjectFoo"
    assert fake_aws.server.requests == []


# --- Secrets Manager, SSM (JSON 1.1) -------------------------------------------------------------

SECRET = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:finance/db-AbCdEf"
PARAMETER = "arn:aws:ssm:eu-west-1:111122223333:parameter/finance/db-url"
AWS_JSON_11 = {"content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "R3"}


def _identity_denial(action: str, resource: str) -> str:
    return (
        f"User: {ROLE_SESSION} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


@pytest.mark.parametrize(
    ("service", "operation", "action", "resource", "message_key"),
    [
        pytest.param("secretsmanager", "GetSecretValue", "secretsmanager:GetSecretValue", SECRET, "Message", id="sm"),
        pytest.param("ssm", "GetParameter", "ssm:GetParameter", PARAMETER, "message", id="ssm"),
    ],
)
def test_json11_access_denied_exception_400_is_denied(
    service: str, operation: str, action: str, resource: str, message_key: str
) -> None:
    message = _identity_denial(action, resource)
    exc = _json_error(service, operation, 400, "AccessDeniedException", message, message_key=message_key)
    error = program._error(exc)
    assert error == {"type": "ClientError", "code": "AccessDeniedException", "message": message, "http_status": 400}
    result = program.classify(_item(action, resource), error)
    assert result == {
        "outcome": "denied",
        "why": "denied",
        "policy_type": "identity-based-policy",
        "explicit": False,
    }


@pytest.mark.parametrize(
    ("service", "operation", "action", "resource"),
    [
        pytest.param("secretsmanager", "GetSecretValue", "secretsmanager:GetSecretValue", SECRET, id="sm"),
        pytest.param("ssm", "GetParameter", "ssm:GetParameter", PARAMETER, id="ssm"),
    ],
)
def test_json11_explicit_deny_in_an_identity_based_policy(
    service: str, operation: str, action: str, resource: str
) -> None:
    message = (
        f"User: {ROLE_SESSION} is not authorized to perform: {action} on resource: {resource} "
        "with an explicit deny in an identity-based policy"
    )
    exc = _json_error(service, operation, 400, "AccessDeniedException", message)
    result = _classify(action, resource, exc)
    assert result == {
        "outcome": "denied",
        "why": "denied by an explicit deny",
        "policy_type": "identity-based-policy",
        "explicit": True,
    }


@pytest.mark.parametrize(
    ("action", "resource", "form_note"),
    [
        pytest.param(
            "secretsmanager:GetSecretValue",
            SECRET,
            "live call; side effect: none (the value is discarded in the pod, never reported)",
            id="sm",
        ),
        pytest.param("ssm:GetParameter", PARAMETER, "live call; side effect: none (WithDecryption=false)", id="ssm"),
    ],
)
def test_json11_reads_are_live_with_no_authorized_codes(action: str, resource: str, form_note: str) -> None:
    # No safe form and no "authorized, then refused" code: only success proves the read is allowed.
    item = _item(action, resource)
    assert item["form"] == "live"
    assert item["form_note"] == form_note
    assert item["authorized_codes"] == []
    assert program.classify(item, None) == {"outcome": "allowed", "why": "the call succeeded"}


def test_secretsmanager_resource_not_found_is_an_error() -> None:
    # Like S3 NoSuchBucket and SQS's NonExistentQueue: the named resource is missing, so nothing about
    # authorization on it was decided (GetSecretValue has no authorized_codes, unlike GetObject's NoSuchKey).
    exc = _json_error(
        "secretsmanager",
        "GetSecretValue",
        400,
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
        message_key="Message",
    )
    error = program._error(exc)
    assert error == {
        "type": "ClientError",
        "code": "ResourceNotFoundException",
        "message": "Secrets Manager can't find the specified secret.",
        "http_status": 400,
    }
    result = program.classify(_item("secretsmanager:GetSecretValue", SECRET), error)
    assert result == {"outcome": "error", "why": "the call failed for another reason than authorization"}


def test_ssm_parameter_not_found_is_an_error() -> None:
    exc = _json_error("ssm", "GetParameter", 400, "ParameterNotFound", "")
    error = program._error(exc)
    assert error["code"] == "ParameterNotFound"
    assert error["http_status"] == 400
    result = program.classify(_item("ssm:GetParameter", PARAMETER), error)
    assert result == {"outcome": "error", "why": "the call failed for another reason than authorization"}


def test_run_actions_secretsmanager_and_ssm_over_http(fake_aws: FakeAws) -> None:
    secret_value = "postgres://exporter:s3cr3t-EXAMPLE@db.internal:5432/finance"
    parameter_value = "db.internal:5432/finance-EXAMPLE"
    fake_aws.answers += [
        (
            200,
            AWS_JSON_11,
            json.dumps(
                {
                    "ARN": SECRET,
                    "Name": "finance/db",
                    "VersionId": "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1",
                    "SecretString": secret_value,
                    "VersionStages": ["AWSCURRENT"],
                    "CreatedDate": 1700000000.0,
                }
            ).encode(),
        ),
        (
            200,
            AWS_JSON_11,
            json.dumps(
                {
                    "Parameter": {
                        "Name": "/finance/db-url",
                        "Type": "String",
                        "Value": parameter_value,
                        "Version": 1,
                        "ARN": PARAMETER,
                        "DataType": "text",
                    }
                }
            ).encode(),
        ),
        (
            400,
            AWS_JSON_11,
            json.dumps(
                {
                    "__type": "AccessDeniedException",
                    "Message": _identity_denial("secretsmanager:GetSecretValue", SECRET),
                }
            ).encode(),
        ),
        (
            400,
            AWS_JSON_11,
            json.dumps(
                {
                    "__type": "AccessDeniedException",
                    "message": _identity_denial("ssm:GetParameter", PARAMETER),
                }
            ).encode(),
        ),
        (
            400,
            AWS_JSON_11,
            json.dumps(
                {"__type": "ResourceNotFoundException", "Message": "Secrets Manager can't find the specified secret."}
            ).encode(),
        ),
        (400, AWS_JSON_11, b'{"__type":"ParameterNotFound"}'),
    ]
    plan: dict[str, Any] = {
        "region": "eu-west-1",
        "actions": [
            _item("secretsmanager:GetSecretValue", SECRET, ident="sm-ok", expect="allowed"),
            _item("ssm:GetParameter", PARAMETER, ident="ssm-ok", expect="allowed"),
            _item("secretsmanager:GetSecretValue", SECRET, ident="sm-denied"),
            _item("ssm:GetParameter", PARAMETER, ident="ssm-denied"),
            _item("secretsmanager:GetSecretValue", SECRET, ident="sm-missing", expect="allowed"),
            _item("ssm:GetParameter", PARAMETER, ident="ssm-missing", expect="allowed"),
        ],
    }
    results = program.run_actions(plan)
    by_id = {r["id"]: r for r in results}
    assert [r["outcome"] for r in results] == ["allowed", "allowed", "denied", "denied", "error", "error"]
    for ident in ("sm-ok", "ssm-ok"):
        assert by_id[ident]["why"] == "the call succeeded"
        assert "code" not in by_id[ident]
    for ident in ("sm-denied", "ssm-denied"):
        assert by_id[ident]["code"] == "AccessDeniedException"
        assert by_id[ident]["http_status"] == 400
        assert by_id[ident]["policy_type"] == "identity-based-policy"
        assert by_id[ident]["explicit"] is False
    assert by_id["sm-denied"]["message"] == _identity_denial("secretsmanager:GetSecretValue", SECRET)
    assert by_id["ssm-denied"]["message"] == _identity_denial("ssm:GetParameter", PARAMETER)
    assert by_id["sm-missing"]["code"] == "ResourceNotFoundException"
    assert by_id["ssm-missing"]["code"] == "ParameterNotFound"
    # The values read never leave run_actions.
    dumped = json.dumps(results)
    assert secret_value not in dumped
    assert parameter_value not in dumped
    # What went over the wire: the catalogue's own parameters, to each service's JSON 1.1 target.
    targets = [headers["x-amz-target"] for _, _, headers in fake_aws.server.requests]
    assert targets == ["secretsmanager.GetSecretValue", "AmazonSSM.GetParameter"] * 3
    assert json.loads(fake_aws.bodies[0]) == {"SecretId": SECRET}
    assert json.loads(fake_aws.bodies[1]) == {"Name": "/finance/db-url", "WithDecryption": False}
