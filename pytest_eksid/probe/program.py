"""The probe: runs INSIDE the probe pod, as the workload's ServiceAccount.

Self-contained on purpose: the runner ships this file's source in the pod spec
(``python3 -c <source>``), so it may import only the standard library and botocore, and must
run on any image that has both. It reads its plan from the ``EKSID_PROBE_PLAN`` variable,
measures, and prints exactly one line: ``EKSID-RESULT <json>``.

It never prints a secret: for credentials it reports where they came from, the variable
*names*, and the 4-character prefix of an access key id (AKIA = long-lived user key,
ASIA = temporary session). Every step is time-boxed and recorded even when it fails.
Annotations are postponed so that the file runs on the oldest Python 3 a probe image may have.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types of the result line; never imported in the pod (this file is shipped alone)
    from pytest_eksid.probe.result import (
        AgentResult,
        AwsFile,
        Classification,
        EnvironmentResult,
        ErrorInfo,
        IdentityResult,
        ImdsResult,
        ImdsVersionResult,
        TokenFile,
    )

RESULT_MARKER = "EKSID-RESULT "
PLAN_VARIABLE = "EKSID_PROBE_PLAN"
RESULT_VERSION = 1  # of the result line's shape (pytest_eksid/probe/result.py); the runner reads only this one
# The proof of identity: a presigned sts:GetCallerIdentity with the runner's per-pod nonce as a SIGNED
# header, which the runner sends to its own STS endpoint (pytest_eksid/aws.py, Aws.prove_caller). The
# same idea as `aws eks get-token`, which signs the cluster name as x-k8s-aws-id (aws/aws-cli
# awscli/customizations/eks/get_token.py: a before-sign handler adds the header, then
# generate_presigned_url('get_caller_identity', ExpiresIn=60, HttpMethod='GET')).
NONCE_HEADER = "x-eksid-nonce"
PROOF_SECONDS = 60

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


# The Pod Identity agent's error body. The agent writes it with Go's http.Error (text/plain, one
# trailing newline): an EKS Auth error as "[<request id>]: (<ErrorCode>): <message>, fault: <fault>"
# with EKS Auth's own HTTP status (aws/eks-pod-identity-agent@984147edfc34 pkg/errors/errors.go,
# HandleCredentialFetchingError; pkg/handlers/eks_credential_handler.go@0c9c763a50df); its own
# refusals as bare text without a code: 403 "Access Denied. Called agent through invalid address…"
# (internal/validation/request.go@1cbbbf4069cc), 400 for a token it cannot parse, 429 "Too Many
# Requests" from its rate limiter. The codes EKS Auth answers are in botocore's eks-auth model
# (boto/botocore@cd9207757d45 botocore/data/eks-auth/2023-11-26/service-2.json). The body is
# hostile input: only a code of letters is kept, and only from a body of exactly that shape.
AGENT_ERROR_RE = re.compile(
    r"\A(?:\[[^\]\r\n]{0,128}\]: )?\(([A-Z][A-Za-z]{0,63})\): .{0,2048}, fault: (?:client|server|unknown)\n?\Z",
    re.S,
)
AGENT_BODY_LIMIT = 4096  # bytes read from an error body; a longer one is not parsed
# How botocore's container provider reports the agent's refusal (botocore/utils.py,
# ContainerMetadataFetcher._get_response): the status, then the body as the agent sent it.
CONTAINER_REFUSAL_RE = re.compile(r"Received non 200 response (\d{3}) from container metadata: (.*)\Z", re.S)


def agent_error_code(body: str) -> str | None:
    """The EKS Auth error code in an agent error body, or None when the body is not of that shape."""
    if len(body) > AGENT_BODY_LIMIT:
        return None
    match = AGENT_ERROR_RE.match(body)
    return match.group(1) if match else None


def _error(exc: BaseException) -> ErrorInfo:
    """A secret-free description of an exception: botocore's code and message, or the type.

    When the container provider reports the agent's refusal, the agent's status and error code
    are kept apart (``agent_status``, ``agent_code``), so that no check has to read them from the text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return {
            "type": type(exc).__name__,
            "code": str(err.get("Code", "")),
            "message": str(err.get("Message", ""))[:500],
            "http_status": response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
        }
    text = str(exc)
    out: ErrorInfo = {"type": type(exc).__name__, "code": "", "message": text[:500], "http_status": None}
    refusal = CONTAINER_REFUSAL_RE.search(text[: AGENT_BODY_LIMIT + 200])
    if refusal:
        out["agent_status"] = int(refusal.group(1))
        out["agent_code"] = agent_error_code(refusal.group(2))
    return out


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims that matter, without verifying the signature (the pod cannot, and need not)."""
    try:
        payload = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {"error": "not a JWT"}
    if not isinstance(claims, dict):
        return {"error": "not a JWT"}
    k8s = claims.get("kubernetes.io")
    k8s = k8s if isinstance(k8s, dict) else {}
    return {
        "iss": claims.get("iss"),
        "sub": claims.get("sub"),
        "aud": claims.get("aud"),
        "exp": claims.get("exp"),
        "namespace": k8s.get("namespace"),
        "serviceaccount": (k8s.get("serviceaccount") or {}).get("name"),
        "pod": (k8s.get("pod") or {}).get("name"),
    }


def audit_environment(environ: Mapping[str, str]) -> EnvironmentResult:
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
    tokens: dict[str, TokenFile] = {}
    for name in TOKEN_FILE_VARIABLES:
        path = environ.get(name)
        if not path:
            continue
        entry: TokenFile = {"path": path}
        try:
            with open(path, encoding="utf-8") as fh:
                entry["claims"] = _jwt_claims(fh.read())
        except OSError as exc:
            entry["error"] = type(exc).__name__ + ": " + str(exc.strerror or exc)
        tokens[name] = entry
    home = os.path.expanduser("~")
    files: dict[str, AwsFile] = {}
    for label, default in (("credentials", ".aws/credentials"), ("config", ".aws/config")):
        path = os.path.join(home, default)
        files[label] = {"path": path, "present": os.path.exists(path)}
    return {"aws_variables": aws, "token_files": tokens, "aws_files": files}


_SESSIONS: list[Any] = []


def _session(timeout: float = 5) -> Any:
    """The probe's one botocore session (created on first use; botocore is imported only then).

    Its default client config bounds every client the session makes, the credential providers'
    own included: the web-identity provider's STS client otherwise waits 60 s per read, with retries."""
    if not _SESSIONS:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        session.set_default_client_config(
            Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
        )
        _SESSIONS.append(session)
    return _SESSIONS[0]


def _background(step: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``step`` in a thread now; the returned function waits for its value (or raises its error).
    For steps bounded by their own timeouts (IMDS, the agent), run beside the AWS steps."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = step()
        except Exception as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="eksid-background", daemon=True)
    thread.start()

    def result() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result


def _bounded(step: Callable[[], Any], seconds: float) -> Any:
    """Run a step that calls AWS with a wall-clock limit: past it, the step is recorded as timed out
    and the probe goes on (the stuck call is left to its daemon thread), so that a hanging endpoint
    cannot keep the probe from printing its result before the pod's deadline."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = step()
        except Exception as exc:  # re-raised below, in the probe's own thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="eksid-step", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return {
            "error": {
                "type": "StepTimeout",
                "code": "",
                "message": f"did not finish within {seconds:g}s: an AWS endpoint that does not answer?",
                "http_status": None,
            }
        }
    if "error" in box:
        raise box["error"]
    return box["value"]


def resolve_identity(plan: Mapping[str, Any]) -> IdentityResult:
    """Resolve credentials through the DEFAULT chain and prove them with a real STS call."""
    out: IdentityResult = {"method": None, "caller": None, "error": None}
    try:
        from botocore.config import Config
    except ImportError as exc:
        out["error"] = {
            "type": "ImportError",
            "code": "",
            "message": "botocore is not installed in the probe image: " + str(exc),
            "http_status": None,
        }
        return out
    session = _session(plan.get("timeout", 5))
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


def prove_identity(plan: Mapping[str, Any], sts: Any = None) -> str:
    """A presigned GetCallerIdentity URL made with the pod's credentials, bound to the plan's nonce.

    It is a bearer secret for PROOF_SECONDS: only the runner reads it (the result line), and the runner
    removes it from the result before anything shows the result. It is made last, so it is fresh.
    ``sts`` is the client to sign with; the probe leaves it None (its own session's, the pod's default chain).
    The sandbox's hollow kubelet passes one holding another pod's credentials (pytest_eksid/sandbox/hollow.py)."""
    nonce = str(plan["nonce"])
    if sts is None:
        sts = _session(plan.get("timeout", 5)).create_client("sts", region_name=plan["region"])

    def bind_nonce(request: Any, **_: Any) -> None:
        request.headers[NONCE_HEADER] = nonce  # signed: the runner must send the same value

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", bind_nonce)
    return str(sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=PROOF_SECONDS, HttpMethod="GET"))


DENIAL_CODES = (
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "Forbidden",
    "403",
)
# 403s that are about the credentials, not about a policy: a broken login proves nothing.
AUTHENTICATION_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "MissingAuthenticationToken",
    "IncompleteSignature",
)
# How AWS names the policy type that denied, most specific first.
POLICY_TYPES = (
    ("service control policy", "service-control-policy"),
    ("resource control policy", "resource-control-policy"),
    ("permissions boundary", "permissions-boundary"),
    ("session policy", "session-policy"),
    ("resource-based policy", "resource-based-policy"),
    ("vpc endpoint policy", "vpc-endpoint-policy"),
    ("identity-based policy", "identity-based-policy"),
)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def classify(item: Mapping[str, Any], error: Mapping[str, Any] | None) -> Classification:
    """Turn one call's answer into allowed / denied / inconclusive / error."""
    if error is None:
        return {"outcome": "allowed", "why": "the call succeeded"}
    code = error.get("code") or ""
    message = error.get("message") or ""
    status = error.get("http_status")
    if code and code in item.get("authorized_codes", ()):
        return {"outcome": "allowed", "why": "authorized, then refused on purpose with " + code}
    if code in AUTHENTICATION_CODES:
        return {"outcome": "error", "why": "the credentials were refused (" + code + "), so nothing was decided"}
    if code in DENIAL_CODES or status == 403:
        lowered = message.lower()
        policy = next((name for phrase, name in POLICY_TYPES if phrase in lowered), None)
        explicit = "explicit deny" in lowered
        if item.get("bare_403_inconclusive") and policy is None:
            return {
                "outcome": "inconclusive",
                "why": "S3 answers a bare 403 both when GetObject is denied and when the key is missing and "
                "s3:ListBucket is not allowed; probe a key that exists",
            }
        return {
            "outcome": "denied",
            "why": "denied" + (" by an explicit deny" if explicit else ""),
            "policy_type": policy or "unspecified",
            "explicit": explicit,
        }
    return {"outcome": "error", "why": "the call failed for another reason than authorization"}


def run_actions(
    plan: Mapping[str, Any],
    identity: Mapping[str, Any] | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    session: Any = None,
) -> list[dict[str, Any]]:
    """Run each planned call with the pod's default credentials and classify the answer.

    When the identity step found no working credentials, nothing is called (each call would only
    retry the same failing provider): every action is an error that says why. Past ``deadline``
    (a ``clock()`` value) the remaining calls are not made: each is an error saying so, and those
    already made keep their results. ``clock`` is a seam for tests; the probe uses ``time.monotonic``.
    ``session`` makes the calls' clients (anything with botocore's ``Session.create_client``); the probe
    leaves it None: its own session, whose credentials are the pod's default chain's. The sandbox's hollow
    kubelet passes one whose clients hold another pod's credentials (pytest_eksid/sandbox/hollow.py).
    """
    if identity is not None and not identity.get("caller"):
        err = identity.get("error") or {}
        return [
            {
                **{k: item.get(k) for k in ("id", "expect", "action", "form", "form_note")},
                "outcome": "error",
                "why": "not run: the pod has no working AWS credentials",
                "code": err.get("code") or err.get("type"),
                "message": err.get("message"),
                "http_status": err.get("http_status"),
            }
            for item in plan.get("actions", [])
        ]
    from botocore.config import Config

    if session is None:
        session = _session(plan.get("timeout", 5))  # the identity step's: credentials are resolved once
    clients: dict[Any, Any] = {}
    results = []
    for item in plan.get("actions", []):
        entry: dict[str, Any] = {k: item.get(k) for k in ("id", "expect", "action", "form", "form_note")}
        error: Mapping[str, Any] | None = None
        t0 = clock()
        if deadline is not None and t0 > deadline:
            entry.update(
                outcome="error",
                why="not run: the actions step used up its time; the calls before it did not answer in time",
                code="StepTimeout",
                message=None,
                http_status=None,
            )
            results.append(entry)
            continue
        try:
            extra = dict(item.get("client_config") or {})
            key = (item["service"], tuple(sorted(extra.items())))
            if key not in clients:
                timeout = float(plan.get("timeout", 5))  # data calls may take longer to answer than STS
                base = {"connect_timeout": timeout, "read_timeout": 2 * timeout, "retries": {"max_attempts": 2}}
                try:
                    config = Config(**base, **extra)
                except TypeError:  # an older botocore without that option
                    config = Config(**base)
                clients[key] = session.create_client(item["service"], region_name=plan["region"], config=config)
            client = clients[key]
            by_operation = {op: name for name, op in client.meta.method_to_api_mapping.items()}
            if item["operation"] not in by_operation:
                raise ValueError("botocore's " + item["service"] + " client has no operation " + item["operation"])
            call = getattr(client, by_operation[item["operation"]])
            params = _decode(item.get("params") or {})

            def make_call(call: Any = call, params: Any = params) -> None:
                response = call(**params)
                body = response.get("Body") if isinstance(response, dict) else None
                if body is not None:
                    body.close()
                del response  # values (secrets, objects, keys) never leave this function

            if deadline is None:
                make_call()
            else:  # a call cannot outlast the step's budget (its retries and a slow DNS included)
                late = _bounded(make_call, max(0.1, deadline - clock()))
                if isinstance(late, dict) and (late.get("error") or {}).get("type") == "StepTimeout":
                    error = dict(late["error"], code="StepTimeout")
        except Exception as exc:
            error = _error(exc)
        if error is not None and error.get("code") == "StepTimeout":
            entry.update(outcome="error", why="the call did not answer within the actions step's budget")
            entry.update(code="StepTimeout", message=error.get("message"), http_status=None)
            entry["seconds"] = round(clock() - t0, 3)
            results.append(entry)
            continue
        entry.update(classify(item, error))
        if error is not None:
            entry["code"] = error.get("code") or error.get("type")
            entry["message"] = error.get("message")
            entry["http_status"] = error.get("http_status")
        entry["seconds"] = round(clock() - t0, 3)
        results.append(entry)
    return results


def _http(method: str, url: str, headers: dict[str, str], timeout: float) -> tuple[str, Any, str]:
    """(outcome, status, body); outcome is ok / http-error / timeout / refused / error. No proxies.

    The body is bounded: 8 KiB of a success, ``AGENT_BODY_LIMIT`` + 1 bytes of an error (so that a
    caller can tell an error body that was cut)."""
    import socket
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with opener.open(request, timeout=timeout) as resp:
            return "ok", resp.status, resp.read(8192).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(AGENT_BODY_LIMIT + 1).decode("utf-8", "replace")
        except (OSError, ValueError, AttributeError):  # no body, or a connection cut mid-body
            body = ""
        finally:
            exc.close()
        return "http-error", exc.code, body
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timeout", None, ""
        if isinstance(reason, ConnectionRefusedError):
            return "refused", None, ""
        return "error", None, str(reason)[:200]
    except TimeoutError:
        return "timeout", None, ""
    except ConnectionError as exc:
        return ("refused" if isinstance(exc, ConnectionRefusedError) else "error"), None, str(exc)[:200]


def check_imds(plan: Mapping[str, Any], environ: Mapping[str, str]) -> ImdsResult:
    """Can this pod reach the node's instance role through IMDS, v2 or v1? Reports the role NAME only."""
    base = (environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254").rstrip("/")
    timeout = float(plan.get("imds_timeout", 2))
    creds_path = "/latest/meta-data/iam/security-credentials/"

    def role_creds(headers: dict[str, str]) -> ImdsVersionResult:
        outcome, status, body = _http("GET", base + creds_path, headers, timeout)
        if outcome == "timeout":
            return {"outcome": "blocked-timeout"}
        if outcome in ("refused", "error"):
            return {"outcome": "blocked-refused", "detail": outcome}
        if outcome == "http-error":
            if status in (401, 403):
                return {"outcome": "blocked-refused", "http_status": status}
            return {"outcome": "no-credentials", "http_status": status}
        role = body.strip().splitlines()[0] if body.strip() else ""
        if not role:
            return {"outcome": "no-credentials", "http_status": status}
        outcome, status, body = _http("GET", base + creds_path + role, headers, timeout)
        exposed = outcome == "ok" and '"AccessKeyId"' in body
        del body
        return {"outcome": "exposed" if exposed else "no-credentials", "role": role, "http_status": status}

    def version_2() -> ImdsVersionResult:
        ttl = {"x-aws-ec2-metadata-token-ttl-seconds": "60"}
        outcome, status, token = _http("PUT", base + "/latest/api/token", ttl, timeout)
        if outcome == "ok" and token.strip():
            return role_creds({"x-aws-ec2-metadata-token": token.strip()})
        if outcome == "timeout":
            return {"outcome": "blocked-timeout"}
        return {"outcome": "blocked-refused", "http_status": status, "detail": outcome}

    # v1 and v2 at once: a blocked IMDS costs one timeout, not two.
    v1 = _background(lambda: role_creds({}))
    v2 = version_2()
    return {"endpoint": base, "v2": v2, "v1": v1()}


def check_agent(environ: Mapping[str, str]) -> AgentResult:
    """Does the Pod Identity agent answer this pod's token? Reports the status and, for a refusal, the
    EKS Auth error code parsed from the body (``error_code``, None when the body has no code); never
    the body itself (a success body holds the credentials, an error body is the agent's text)."""
    uri = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if not uri:
        return {"configured": False}
    headers = {}
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                headers["Authorization"] = fh.read().strip()
        except OSError as exc:
            return {"configured": True, "uri": uri, "outcome": "no-token", "detail": str(exc.strerror)}
    outcome, status, body = _http("GET", uri, headers, 3.0)
    answered = outcome == "ok" and '"AccessKeyId"' in body
    code = agent_error_code(body) if outcome == "http-error" else None
    del body
    out: AgentResult = {
        "configured": True,
        "uri": uri,
        "outcome": "credentials" if answered else outcome,  # type: ignore[typeddict-item]  # _http's outcomes
        "http_status": status,
    }
    if outcome == "http-error":
        out["error_code"] = code
    return out


def run(plan: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    _SESSIONS.clear()  # one run, one session (a process that runs several must not reuse credentials)
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "workload": plan.get("workload"),
        "python": sys.version.split()[0],
    }
    try:
        from importlib.metadata import version

        result["botocore"] = version("botocore")  # without importing it: a step that needs it will
    except Exception:
        result["botocore"] = None
    # The network steps that need no AWS call (IMDS, the agent) run in the background, bounded by their
    # own short timeouts, while the AWS steps run: none waits on another it does not need. The AWS steps
    # each get a wall-clock budget, so a stuck endpoint costs its step, never the whole result.
    budget = float(plan.get("step_seconds", 50))
    wanted = plan.get("steps")  # a node-group probe only looks at its node's IMDS
    seconds: dict[str, float] = {}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        try:
            return step()
        except Exception as exc:  # one step's failure must not hide the others
            return {"error": _error(exc)}
        finally:
            seconds[name] = round(time.monotonic() - t0, 3)

    def selected(name: str) -> bool:
        return not isinstance(wanted, list) or name in wanted

    def start(name: str, step: Callable[[], Any]) -> Callable[[], Any]:
        return _background(lambda: timed(name, step))

    background: dict[str, Callable[[], Any]] = {}
    if selected("imds"):
        background["imds"] = start("imds", lambda: check_imds(plan, environ))
    if selected("agent"):
        background["agent"] = start("agent", lambda: check_agent(environ))
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("environment", lambda: audit_environment(environ)),
        ("identity", lambda: _bounded(lambda: resolve_identity(plan), budget)),
        # Each call is bounded by its client's timeouts; past the budget the rest are not made.
        ("actions", lambda: run_actions(plan, result.get("identity"), deadline=time.monotonic() + budget)),
    ]
    for name, step in steps:
        if selected(name):
            result[name] = timed(name, step)
    for name, wait in background.items():
        result[name] = wait()
    result["seconds"] = dict(seconds)
    identity = result.get("identity")
    if isinstance(identity, dict) and identity.get("caller") and plan.get("nonce"):
        try:
            identity["proof"] = prove_identity(plan)
        except Exception as exc:  # the runner then says the identity is not proven, and why
            identity["proof_failure"] = _error(exc)
    result.setdefault("seconds", {})["total"] = round(time.monotonic() - started, 3)
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
