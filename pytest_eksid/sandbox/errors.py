"""The error codes and HTTP statuses the sandbox answers with, from botocore's service models.

A service's own errors come from its model (``botocore/data/<service>/<version>/service-2.json``,
loaded at run time with botocore's loader), so a code and its status are never typed by hand.
Errors of AWS's request front (authentication, signature, throttling by the front) are in no
service model; :data:`FRONT_ERRORS` lists them with the statuses of AWS's "Common Errors"
reference [docs.aws.amazon.com IAM/latest/APIReference/CommonErrors] where it gives one.
"""

from __future__ import annotations

import functools

# code -> HTTP status, for errors no service model declares.
FRONT_ERRORS: dict[str, int] = {
    "AccessDenied": 403,  # STS's authorization failure (AssumeRole*, trust policy)
    "ValidationError": 400,
    "IncompleteSignature": 400,
    "InvalidClientTokenId": 403,
    "MissingAuthenticationToken": 403,
    "SignatureDoesNotMatch": 403,
    # A presigned request used after X-Amz-Expires: code and status guessed (STS documents neither;
    # aws-iam-authenticator refuses such a token before it reaches STS).
    "ExpiredToken": 403,
}


@functools.cache
def model_statuses(service: str) -> dict[str, int]:
    """Every error of ``service``'s botocore model: its wire code -> its HTTP status.

    The wire code is the shape's ``error.code`` when the model gives one (STS's
    ``InvalidIdentityTokenException`` is sent as ``InvalidIdentityToken``), else the shape's name."""
    import botocore.session

    from pytest_eksid import botocore_data

    model = botocore_data.shared(botocore.session.get_session()).get_service_model(service)
    statuses: dict[str, int] = {}
    for shape in model.error_shapes:
        error = shape.metadata.get("error") or {}
        statuses[str(error.get("code") or shape.name)] = int(error.get("httpStatusCode", 400))
    return statuses


def status(service: str, code: str) -> int:
    """The HTTP status ``service`` answers ``code`` with: its model's, else the front's (KeyError if neither)."""
    found = model_statuses(service).get(code)
    return found if found is not None else FRONT_ERRORS[code]
