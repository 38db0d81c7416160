"""The probe: runs INSIDE the probe pod, as the workload's ServiceAccount.

Self-contained on purpose: the runner ships this file's source in the pod spec
(``python3 -c <source>``), so it may import only the standard library and botocore, and must
run on any image that has both. It reads its plan from the ``EKSID_PROBE_PLAN`` variable,
measures, and prints exactly one line: ``EKSID-RESULT <json>``.

It never prints a secret: for credentials it reports where they came from, the variable
*names*, and the 4-character prefix of an access key id (AKIA = long-lived user key,
ASIA = temporary session). Every step is time-boxed and recorded even when it fails.
"""

import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

RESULT_MARKER = "EKSID-RESULT "
PLAN_VARIABLE = "EKSID_PROBE_PLAN"
RESULT_VERSION = 1

# Variables whose values are not secret and help a human diagnose; every other AWS_* variable
# is reported as present only.
SHOWN_VARIABLES = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
TOKEN_FILE_VARIABLES = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
KEY_ID_VARIABLES = ("AWS_ACCESS_KEY_ID",)


def _error(exc: BaseException) -> dict[str, Any]:
    """A secret-free description of an exception: botocore's code and message, or the type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return {
            "type": type(exc).__name__,
            "code": str(err.get("Code", "")),
            "message": str(err.get("Message", ""))[:500],
            "http_status": response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
        }
    return {"type": type(exc).__name__, "code": "", "message": str(exc)[:500], "http_status": None}


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims that matter, without verifying the signature (the pod cannot, and need not)."""
    try:
        payload = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {"error": "not a JWT"}
    k8s = claims.get("kubernetes.io") or {}
    return {
        "iss": claims.get("iss"),
        "sub": claims.get("sub"),
        "aud": claims.get("aud"),
        "exp": claims.get("exp"),
        "namespace": k8s.get("namespace"),
        "serviceaccount": (k8s.get("serviceaccount") or {}).get("name"),
        "pod": (k8s.get("pod") or {}).get("name"),
    }


def audit_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    aws: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith("AWS_"):
            continue
        value = environ[name]
        if name in SHOWN_VARIABLES:
            aws[name] = value
        elif name in KEY_ID_VARIABLES:
            aws[name] = "set, prefix " + value[:4]
        else:
            aws[name] = "set"
    tokens: dict[str, dict[str, Any]] = {}
    for name in TOKEN_FILE_VARIABLES:
        path = environ.get(name)
        if not path:
            continue
        entry: dict[str, Any] = {"path": path}
        try:
            with open(path, encoding="utf-8") as fh:
                entry["claims"] = _jwt_claims(fh.read())
        except OSError as exc:
            entry["error"] = type(exc).__name__ + ": " + str(exc.strerror or exc)
        tokens[name] = entry
    home = os.path.expanduser("~")
    files: dict[str, dict[str, Any]] = {}
    for label, default in (("credentials", ".aws/credentials"), ("config", ".aws/config")):
        path = os.path.join(home, default)
        files[label] = {"path": path, "present": os.path.exists(path)}
    return {"aws_variables": aws, "token_files": tokens, "aws_files": files}


def resolve_identity(plan: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve credentials through the DEFAULT chain and prove them with a real STS call."""
    out: dict[str, Any] = {"method": None, "caller": None, "error": None}
    try:
        import botocore.session
        from botocore.config import Config
    except ImportError as exc:
        out["error"] = {
            "type": "ImportError",
            "code": "",
            "message": "botocore is not installed in the probe image: " + str(exc),
            "http_status": None,
        }
        return out
    session = botocore.session.Session()
    try:
        credentials = session.get_credentials()
    except Exception as exc:  # a provider that fails hard (bad token file, agent refusing)
        out["error"] = _error(exc)
        return out
    if credentials is None:
        out["error"] = {
            "type": "NoCredentialsError",
            "code": "",
            "message": "the default credential chain found no credentials",
            "http_status": None,
        }
        return out
    out["method"] = credentials.method
    config = Config(
        connect_timeout=plan.get("timeout", 5),
        read_timeout=plan.get("timeout", 5),
        retries={"max_attempts": 2, "mode": "standard"},
    )
    try:
        sts = session.create_client("sts", region_name=plan["region"], config=config)
        ident = sts.get_caller_identity()
        out["caller"] = {"arn": ident["Arn"], "account": ident["Account"], "user_id": ident["UserId"]}
        frozen = credentials.get_frozen_credentials()
        out["access_key_prefix"] = (frozen.access_key or "")[:4]
        out["method"] = credentials.method  # deferred providers stamp their method on first use
    except Exception as exc:
        out["error"] = _error(exc)
    return out


def run(plan: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "workload": plan.get("workload"),
        "python": sys.version.split()[0],
    }
    try:
        import botocore

        result["botocore"] = botocore.__version__
    except ImportError:
        result["botocore"] = None
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("environment", lambda: audit_environment(environ)),
        ("identity", lambda: resolve_identity(plan)),
    ]
    for name, step in steps:
        t0 = time.monotonic()
        try:
            result[name] = step()
        except Exception as exc:  # one step's failure must not hide the others
            result[name] = {"error": _error(exc)}
        result.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 3)
    result["seconds"]["total"] = round(time.monotonic() - started, 3)
    return result


def main() -> int:
    try:
        plan = json.loads(os.environ.get(PLAN_VARIABLE, "{}"))
    except ValueError as exc:
        plan = {"error": "unreadable plan: " + str(exc)}
    result = run(plan, dict(os.environ))
    sys.stdout.write(RESULT_MARKER + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
