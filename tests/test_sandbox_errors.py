"""Every STS and EKS Auth error the sandbox can emit has the code and HTTP status of botocore's models.

The models are read here with botocore's own loader, as raw JSON, independently of how the sandbox
loads them (``pytest_eksid/sandbox/errors.py``). Errors of AWS's request front, which no service model
declares, are listed as such.
"""

from __future__ import annotations

import ast
import datetime
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from pytest_eksid.sandbox import agent, errors
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import Running, sa_token

SANDBOX = Path(agent.__file__).parent
IRSA_ROLE = "arn:aws:iam::111122223333:role/demo-billing-worker"

# Where each emitted error is raised: (module, the function whose first argument is the error code).
EMITTERS = {
    "sts": [("cloud.py", "_sts_error"), ("fidelity.py", "_sts_refusal")],
    "eks-auth": [("agent.py", "_eks_auth_error"), ("agent.py", "EksAuthError")],
}
# Errors the sandbox emits that belong to AWS's request front, in no model [AWS "Common Errors"].
NOT_IN_ANY_MODEL = {
    "AccessDenied",
    "ValidationError",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


def model_errors(service: str) -> dict[str, int]:
    """The raw model's error shapes: wire code -> HTTP status (botocore's loader, no sandbox code)."""
    loader = botocore.loaders.create_loader()
    raw = loader.load_service_model(service, "service-2")
    out: dict[str, int] = {}
    for name, shape in raw["shapes"].items():
        if shape.get("exception"):
            error = shape.get("error", {})
            out[error.get("code", name)] = error.get("httpStatusCode", 400)
    return out


def emitted(service: str) -> set[str]:
    codes: set[str] = set()
    for module, function in EMITTERS[service]:
        tree = ast.parse((SANDBOX / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function and node.args:
                first = node.args[0]
                if function == "EksAuthError" and isinstance(first, ast.Name):
                    continue  # _eks_auth_error passes its own argument on; its callers are walked
                where = f"{module}:{node.lineno}: {function}'s first argument must be the error code, a literal"
                assert isinstance(first, ast.Constant), where
                assert isinstance(first.value, str), where
                codes.add(first.value)
    return codes


@pytest.mark.parametrize("service", sorted(EMITTERS))
def test_every_emitted_error_has_the_models_code_and_status(service: str) -> None:
    model = model_errors(service)
    codes = emitted(service)
    assert codes, f"found no {service} error in the sandbox"
    for code in sorted(codes):
        if code in NOT_IN_ANY_MODEL:
            assert code not in model, f"{code} is in the {service} model: take it from there"
            assert errors.FRONT_ERRORS[code] == errors.status(service, code)
            continue
        assert code in model, f"{code} is not an error of botocore's {service} model"
        assert errors.status(service, code) == model[code], code


def test_the_sandbox_reads_every_model_error_as_the_model_says() -> None:
    for service in EMITTERS:
        assert errors.model_statuses(service) == model_errors(service)
    # The codes the issue names, as the models give them.
    assert errors.status("sts", "ExpiredTokenException") == 400
    assert errors.status("sts", "InvalidIdentityToken") == 400
    assert errors.status("sts", "IDPRejectedClaim") == 403
    eks_auth = errors.model_statuses("eks-auth")
    assert {c: eks_auth[c] for c in ("ResourceNotFoundException", "ThrottlingException", "ExpiredTokenException")} == {
        "ResourceNotFoundException": 404,
        "ThrottlingException": 429,
        "ExpiredTokenException": 400,
    }
    with pytest.raises(KeyError):
        agent.EksAuthError("NoSuchErrorException", "")


def test_front_errors_are_in_no_model() -> None:
    assert set(errors.FRONT_ERRORS) >= NOT_IN_ANY_MODEL
    for service in EMITTERS:
        assert not set(errors.FRONT_ERRORS) & set(model_errors(service)), service


# --- over HTTP, parsed by botocore ----------------------------------------------------------------


def _sts(run: Running) -> Any:
    return botocore.session.get_session().create_client(
        "sts",
        region_name="eu-west-1",
        endpoint_url=run.connection.env["AWS_ENDPOINT_URL"],
        config=Config(signature_version=UNSIGNED),
    )


def _assume(sts: Any, token: str) -> Any:
    return sts.assume_role_with_web_identity(RoleArn=IRSA_ROLE, RoleSessionName="errors", WebIdentityToken=token)


def test_web_identity_errors_over_http(start_sandbox: Any) -> None:
    run = start_sandbox(demo_data())
    sts = _sts(run)
    try:
        # An expired token that otherwise verifies: ExpiredTokenException, the model's 400.
        expired = sa_token(run, "billing-demo", "billing-worker-aws-sa", expiration=-60)
        with pytest.raises(ClientError) as err:
            _assume(sts, expired)
        assert isinstance(err.value, sts.exceptions.ExpiredTokenException)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # A token of the wrong audience: InvalidIdentityToken, 400.
        wrong = sa_token(run, "billing-demo", "billing-worker-aws-sa", audience="elsewhere")
        with pytest.raises(ClientError) as err:
            _assume(sts, wrong)
        assert isinstance(err.value, sts.exceptions.InvalidIdentityTokenException)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # A service account the trust policy does not name: AccessDenied, 403.
        with pytest.raises(ClientError) as err:
            _assume(sts, sa_token(run, "billing-demo", "someone-else"))
        assert (err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
            "AccessDenied",
            403,
        )
    finally:
        sts.close()


def test_presigned_caller_identity_errors_over_http(start_sandbox: Any) -> None:
    run = start_sandbox(demo_data())
    url = run.connection.env["AWS_ENDPOINT_URL"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    cases = {
        # A credential scope that is not STS's: IncompleteSignature, 400 (AWS "Common Errors").
        "IncompleteSignature": f"X-Amz-Credential=AKIA/20261207/eu-west-1/s3/aws4_request&X-Amz-Date={now}",
        # An access key no one has: InvalidClientTokenId, 403.
        "InvalidClientTokenId": (
            f"X-Amz-Credential=AKIANOSUCHKEY0000000/20261207/eu-west-1/sts/aws4_request&X-Amz-Date={now}"
        ),
    }
    for code, query in cases.items():
        request = urllib.request.Request(
            f"{url}/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&{query}"
            "&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        try:
            body = err.value.read().decode()
            assert f"<Code>{code}</Code>" in body, body
            assert err.value.code == errors.FRONT_ERRORS[code], code
        finally:
            err.value.close()
