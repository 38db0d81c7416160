"""A node's EKS Pod Identity agent, with EKS Auth's AssumeRoleForPodIdentity behind it.

Modelled on aws/eks-pod-identity-agent@d4dc0f3 (read, not copied): the credentials server with its
rate limiter, request validation and refreshing per-token cache, and the probe server beside it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from pytest_eksid.sandbox import errors
from pytest_eksid.sandbox.cloud import Iam
from pytest_eksid.sandbox.eks import Association, EksControlPlane
from pytest_eksid.sandbox.latency import Latency
from pytest_eksid.sandbox.loopback import Answer, LoopbackServer
from pytest_eksid.sandbox.tokens import Issuer, TokenError, TokenExpired, audiences, unverified_claims
from pytest_eksid.sandbox.trust import trust_allows
from pytest_eksid.sandbox.webhooks import PI_AUDIENCE

Clock = Callable[[], float]  # seconds since the epoch, as time.time


def _agent_text(code: int, text: str) -> Answer:
    """An answer as Go's http.Error writes it: text/plain, nosniff, the text and one newline."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return code, headers, (text + "\n").encode()


# Go's ServeMux answers a path no handler is registered for with http.NotFound.
NOT_FOUND = "404 page not found"

# EKS Auth's errors as the agent passes them on: EKS Auth's status (botocore's eks-auth model,
# botocore/data/eks-auth/2023-11-26/service-2.json, loaded at run time) and the body
# "[<request id>]: (<ErrorCode>): <message>, fault: <fault>" [aws/eks-pod-identity-agent@d4dc0f3
# pkg/errors/errors.go:61-107]. The messages are the sandbox's own.
EKS_AUTH = "eks-auth"
# The errors after which the cache drops a token's credentials instead of keeping them
# [aws/eks-pod-identity-agent@d4dc0f3 internal/cloud/eksauth/errors.go:12-26,
# internal/credsretriever/refreshing_cache.go:259-264].
IRRECOVERABLE = frozenset(
    {"ResourceNotFoundException", "ExpiredTokenException", "InvalidTokenException", "AccessDeniedException"}
)


class EksAuthError(Exception):
    """An AssumeRoleForPodIdentity error, with EKS Auth's code and status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = errors.model_statuses(EKS_AUTH)[code]  # KeyError: not an EKS Auth error
        self.request_id = str(uuid.uuid4())

    def answer(self) -> Answer:
        fault = "client" if self.status < 500 else "server"
        return _agent_text(self.status, f"[{self.request_id}]: ({self.code}): {self.message}, fault: {fault}")


def _eks_auth_error(code: str, message: str) -> EksAuthError:
    return EksAuthError(code, message)


def split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: (host, port), or None where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        return None  # missing port
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 == len(hostport) or end + 1 != i:
            return None  # missing ']', missing port, or too many colons
        host, j, k = hostport[1:end], 1, end + 1
    else:
        host, j, k = hostport[:i], 0, 0
        if ":" in host:
            return None  # too many colons (a bare IPv6 address)
    if "[" in hostport[j:] or "]" in hostport[k:]:
        return None
    return host, hostport[i + 1 :]


def target_host(host_header: str) -> str:
    """The Host header as the agent compares it: its port dropped, then its brackets
    [aws/eks-pod-identity-agent@d4dc0f3 internal/validation/request.go:75-90]."""
    split = split_host_port(host_header)
    host = split[0] if split is not None else host_header
    if len(host) > 1 and host[0] == "[" and host[-1] == "]":
        host = host[1:-1]
    return host


# The hosts the agent answers on EKS [aws/eks-pod-identity-agent@d4dc0f3 configuration/config.go:3-7],
# as its 403 names them (Go's %s of a []string); the sandbox's loopback stand-in is accepted besides.
EKS_TARGET_HOSTS = ("169.254.170.23", "fd00:ec2::23")
SANDBOX_TARGET_HOSTS = frozenset({*EKS_TARGET_HOSTS, "127.0.0.1"})


class RateLimiter:
    """golang.org/x/time/rate's token bucket as the agent builds it: ``rate`` per second, burst
    ``int(rate / 2)`` [aws/eks-pod-identity-agent@d4dc0f3 internal/middleware/rate_limiter/
    rate_limiter.go:9-13; configuration/config.go:9-10 (1000/s)]. A rate of 0 never allows."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = int(rate / 2)
        self.clock = clock
        self.tokens = float(self.burst)
        self.last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


@dataclass
class _Entry:
    token: str
    body: dict[str, Any]  # the credentials as served
    expires: float  # the credentials' expiration
    refresh: float  # when the janitor renews them


@dataclass(frozen=True)
class CacheSettings:
    """The agent's cache settings, with its defaults [aws/eks-pod-identity-agent@d4dc0f3
    cmd/server.go:140-145 (3 h, 2000 entries); internal/credsretriever/refreshing_cache.go:76-86
    (15 s minimum credential lifetime, 1 min retry interval plus up to 1 min jitter)]. The jitter
    is ``retry_jitter`` here (default 0: the sandbox stays deterministic). ``renewal`` 0 or
    ``max_size`` 0 switch the cache off, as the agent's flags do (pkg/handlers/
    eks_credential_handler.go:50)."""

    renewal: float = 3 * 3600.0
    max_size: int = 2000
    min_ttl: float = 15.0
    retry_interval: float = 60.0
    retry_jitter: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.renewal > 0 and self.max_size > 0


class PodIdentityAgent:
    """The eks-pod-identity-agent of one node, with EKS Auth's AssumeRoleForPodIdentity inside.

    Its refusals have the real agent's shapes: 429 from its rate limiter, 403 for a Host header
    that is not its address, 400 for a token it cannot parse or whose exp/nbf fail (the agent
    checks no signature), and EKS Auth's own errors with their status. Credentials are cached per
    token and served until they need refreshing, also after the association is deleted or changed:
    revocation is not immediate on EKS either. ``clock`` is the agent's time (tests move it)."""

    def __init__(
        self,
        iam: Iam,
        eks: EksControlPlane,
        issuer: Issuer,
        *,
        running: bool = True,
        clock: Clock = time.time,
        cache: CacheSettings | None = None,
        request_rate: float = 1000.0,
    ) -> None:
        self.iam = iam
        self.eks = eks
        self.issuer = issuer
        self.running = running
        self.clock = clock
        self.settings = cache or CacheSettings()
        self.limiter = RateLimiter(request_rate, clock)
        self.latency: Latency | None = None  # the benchmark setting's EKS Auth latency (runtime sets it)
        self.cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_lock = threading.RLock()
        self.http = LoopbackServer("eksid-agent", _headless(self._handle))
        self.probe_http = LoopbackServer("eksid-agent-probe", _headless(self._handle_probe))
        for server in (self.http, self.probe_http):
            _serve_every_method(server)
        # A stopped agent: its addresses are held (bound, not listening), so connections are refused.
        self._hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._hold.bind(("127.0.0.1", 0))
        self._hold_probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._hold_probe.bind(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return self.http.port if self.running else int(self._hold.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials"

    @property
    def probe_port(self) -> int:
        """The health port (localhost:2703 on EKS [aws/eks-pod-identity-agent@d4dc0f3 cmd/server.go:107,137])."""
        return self.probe_http.port if self.running else int(self._hold_probe.getsockname()[1])

    @property
    def probe_uri(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def start(self) -> None:
        if self.running:
            self.http.start()
            self.probe_http.start()

    def stop(self) -> None:
        if self.running:
            self.http.stop()
            self.probe_http.stop()
        else:  # bound at construction, never served
            self.http.server.server_close()
            self.probe_http.server.server_close()
        self._hold.close()
        self._hold_probe.close()

    # --- the probe server ------------------------------------------------------------------

    def _handle_probe(self, req: BaseHTTPRequestHandler, method: str) -> Answer | None:
        """/readyz and /healthz probe each credentials address and expect its 404 for "/": 200
        with no body, 408 on a timeout, 500 otherwise [aws/eks-pod-identity-agent@d4dc0f3
        pkg/handlers/probe_handler.go:37-90]."""
        if req.path.split("?")[0] not in ("/healthz", "/readyz"):
            return _agent_text(404, NOT_FOUND)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.http.port, timeout=10)
            try:
                conn.request("GET", "/")
                status = conn.getresponse().status
            finally:
                conn.close()
        except TimeoutError:
            return 408, {}, b""
        except OSError:
            status = 0
        if status != 404:
            return 500, {"Content-Type": "text/plain; charset=utf-8"}, b"Internal Server Error occurred"
        return 200, {}, b""

    # --- the credentials server --------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> Answer | None:
        # The only pattern is "/v1/credentials", without a method: the router passes every method
        # [aws/eks-pod-identity-agent@d4dc0f3 pkg/handlers/eks_credential_handler.go:66-68].
        if req.path.split("?")[0] != "/v1/credentials":
            return _agent_text(404, NOT_FOUND)
        # The rate limiter wraps the handler [pkg/server/server.go:109-128]: its 429 comes first.
        if not self.limiter.allow():
            return _agent_text(429, "Too Many Requests")
        host = target_host(str(req.headers.get("Host") or ""))
        if host not in SANDBOX_TARGET_HOSTS:
            return _agent_text(
                403,
                "Access Denied. Called agent through invalid address, please use either "
                f"[{' '.join(EKS_TARGET_HOSTS)}] address not {host}",
            )
        token = str(req.headers.get("Authorization") or "")
        refused = self._validate_token(token)
        if refused is not None:
            return refused
        try:
            body = self._cached_credentials(token)
        except EksAuthError as exc:
            return exc.answer()
        except _Stale as exc:
            return _agent_text(500, str(exc))
        return 200, {"Content-Type": "application/json"}, _json(body)

    def _validate_token(self, token: str) -> Answer | None:
        """The agent parses the token unverified (EKS Auth checks the signature) and checks exp and
        nbf as golang-jwt's default validator does [internal/validation/request.go:55-71]."""
        if not token:
            return _agent_text(400, "Service account token cannot be empty")
        # The agent needs all three parts of the JWT to parse it.
        unverified = unverified_claims(token) if token.count(".") == 2 else None
        if unverified is None:
            return _agent_text(400, "Service account token cannot be parsed: token is malformed")
        now = self.clock()
        exp, nbf = unverified.get("exp"), unverified.get("nbf")
        why = None
        if isinstance(exp, (int, float)) and now >= exp:
            why = "token is expired"
        elif isinstance(nbf, (int, float)) and now < nbf:
            why = "token is not valid yet"
        if why is not None:
            return _agent_text(
                400, f"Service account token failed basic claim validations: token has invalid claims: {why}"
            )
        return None

    # --- the refreshing cache --------------------------------------------------------------

    def _cached_credentials(self, token: str) -> dict[str, Any]:
        """Credentials for the token from the cache, else from EKS Auth [internal/credsretriever/
        refreshing_cache.go:138-222]. The agent's janitor renews entries once a minute in the
        background; the sandbox runs it on each request, before the lookup (:meth:`sweep`)."""
        if not self.settings.enabled:
            return self._assume_role_for_pod_identity(token)
        with self._cache_lock:
            self.sweep()
            entry = self.cache.get(token)
            if entry is not None:
                if entry.expires - self.clock() > self.settings.min_ttl:
                    return entry.body
                del self.cache[token]
        # EKS Auth is called with no lock held, then the answer stored: concurrent requests of other pods wait
        # concurrently, as the agent's GetIamCredentials calls its delegate and then upserts into its cache
        # [aws/eks-pod-identity-agent internal/credsretriever/refreshing_cache.go callDelegateAndCache].
        body = self._assume_role_for_pod_identity(token)
        with self._cache_lock:
            return self._store(token, body).body

    def _fetch_and_cache(self, token: str) -> _Entry:
        return self._store(token, self._assume_role_for_pod_identity(token))

    def _store(self, token: str, body: dict[str, Any]) -> _Entry:
        expires = _epoch(str(body["Expiration"]))
        lifetime = expires - self.clock()
        if lifetime <= self.settings.min_ttl:
            raise _Stale(
                "error getting credentials to cache: fetched credentials are expired or will expire within "
                f"the next {lifetime:.2f} seconds"
            )
        entry = _Entry(token, body, expires, self.clock() + min(lifetime, self.settings.renewal))
        self.cache[token] = entry
        self.cache.move_to_end(token)
        while len(self.cache) > self.settings.max_size:  # the LRU's oldest set goes first
            self.cache.popitem(last=False)
        return entry

    def sweep(self) -> None:
        """The cache's janitor: renew the entries whose refresh time has passed; an irrecoverable
        EKS Auth error drops the entry, any other keeps the old credentials while they last and
        retries later; expired entries go [internal/cache/expiring/cache.go:439-477;
        internal/credsretriever/refreshing_cache.go:239-284]."""
        with self._cache_lock:
            now = self.clock()
            for token, entry in list(self.cache.items()):
                if entry.refresh and now > entry.refresh:
                    self._renew(token, entry)
            now = self.clock()
            for token, entry in list(self.cache.items()):
                if now > entry.expires:
                    del self.cache[token]

    def _renew(self, token: str, entry: _Entry) -> None:
        try:
            self._fetch_and_cache(token)
            return
        except EksAuthError as exc:
            if exc.code in IRRECOVERABLE:
                self.cache.pop(token, None)
                return
        except _Stale:
            pass
        left = entry.expires - self.clock()
        if left > self.settings.min_ttl:
            retry = self.settings.retry_interval + self.settings.retry_jitter
            entry.refresh = self.clock() + min(left, retry)
        else:
            self.cache.pop(token, None)

    # --- EKS Auth ----------------------------------------------------------------------------

    def _assume_role_for_pod_identity(self, token: str) -> dict[str, Any]:
        """EKS Auth's AssumeRoleForPodIdentity for the token: the credentials, or EksAuthError."""
        if self.latency is not None:
            self.latency.apply(EKS_AUTH)
        try:  # EKS Auth verifies the signature and the issuer, and the expiry by its own clock
            claims = self.issuer.verify(token)
        except TokenExpired as exc:  # one the agent let through (its node's clock is behind) or a stale refresh
            # [botocore/data/eks-auth/2023-11-26/service-2.json ExpiredTokenException: "The specified Kubernetes
            # service account token is expired", 400]
            raise _eks_auth_error("ExpiredTokenException", f"Service account token has expired: {exc}") from None
        except TokenError as exc:
            raise _eks_auth_error("InvalidTokenException", f"Service account token is invalid: {exc}") from None
        if PI_AUDIENCE not in audiences(claims):
            raise _eks_auth_error("InvalidTokenException", f"Service account token audience is not {PI_AUDIENCE}")
        k8s = claims.get("kubernetes.io", {})
        ns = k8s.get("namespace", "")
        sa = k8s.get("serviceaccount", {}).get("name", "")
        pod = k8s.get("pod", {})
        assoc = self.eks.find_association(ns, sa)
        if assoc is None:
            raise _eks_auth_error("ResourceNotFoundException", f"No Pod Identity Association found for {ns}/{sa}")
        trust = self.iam.role_trust(assoc.role_arn)
        actions = ["sts:AssumeRole"] if assoc.disable_session_tags else ["sts:AssumeRole", "sts:TagSession"]
        context = {
            "aws:RequestTag/eks-cluster-arn": [self.eks.arn],
            "aws:RequestTag/eks-cluster-name": [self.eks.name],
            "aws:RequestTag/kubernetes-namespace": [ns],
            "aws:RequestTag/kubernetes-service-account": [sa],
            "aws:RequestTag/kubernetes-pod-name": [str(pod.get("name", ""))],
            "aws:RequestTag/kubernetes-pod-uid": [str(pod.get("uid", ""))],
            "aws:SourceAccount": [self.eks.account_id],
            "aws:SourceArn": [self.eks.arn],
        }
        if assoc.disable_session_tags:  # no session tags, so no aws:RequestTag/* to match
            # [boto/botocore@0e6e2404 botocore/data/eks/2017-11-01/service-2.json:3081-3084]
            context = {k: v for k, v in context.items() if not k.startswith("aws:RequestTag/")}
        allowed, reason = (
            (False, "role not found")
            if trust is None
            else trust_allows(trust, principal_kind="Service", principal=PI_AUDIENCE, actions=actions, context=context)
        )
        if not allowed:
            raise _eks_auth_error("AccessDeniedException", f"EKS Pod Identity cannot assume {assoc.role_arn}: {reason}")
        session = f"eks-{self.eks.name}-{pod.get('name', '')}-{uuid.uuid4()}"[:64]
        final = assoc.role_arn
        if assoc.target_role_arn:
            # EKS chains to the target role itself; the target must trust the association's role.
            target_trust = self.iam.role_trust(assoc.target_role_arn)
            chained, why = (
                (False, "role not found")
                if target_trust is None
                else trust_allows(
                    target_trust,
                    principal_kind="AWS",
                    principal=assoc.role_arn,
                    actions=actions,
                    # EKS passes the association's generated externalId [boto/botocore@0e6e2404
                    # botocore/data/eks/2017-11-01/service-2.json:5907-5910]
                    context={**context, "sts:ExternalId": [assoc.external_id or ""]},
                )
            )
            if not chained:
                raise _eks_auth_error(
                    "AccessDeniedException", f"cannot assume target role {assoc.target_role_arn}: {why}"
                )
            final = assoc.target_role_arn
        creds = self.iam.mint(final, session, policy=assoc.policy)
        tags = {} if assoc.disable_session_tags else {k.split("/", 1)[1]: v[0] for k, v in context.items() if "/" in k}
        self._record(final, session, tags, creds, ns, sa, assoc)
        return {
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key,
            "Token": creds.session_token,
            "AccountId": final.split(":")[4],
            "Expiration": creds.iso_expiration(),
        }

    def _record(
        self, role_arn: str, session: str, tags: dict[str, str], creds: Any, ns: str, sa: str, assoc: Association
    ) -> None:
        """The trail's two events: EKS Auth's AssumeRoleForPodIdentity, and the AssumeRole EKS makes for the pod,
        an ``AWSService`` identity invoked by ``pods.eks.amazonaws.com`` carrying the session tags."""
        trail = self.iam.trail
        region = self.eks.arn.split(":")[3]
        trail.record(
            event_name="AssumeRoleForPodIdentity",
            event_source="eks-auth.amazonaws.com",
            user_identity={"type": "AssumedRole", "accountId": self.eks.account_id},  # the node role: not modelled
            username=None,
            request_parameters={"clusterName": self.eks.name},
            response_elements={
                "subject": {"namespace": ns, "serviceAccount": sa},
                "audience": PI_AUDIENCE,
                "podIdentityAssociation": {
                    "associationArn": assoc.association_arn,
                    "associationId": assoc.association_id,
                },
                "assumedRoleUser": {"arn": creds.assumed_role_arn, "assumeRoleId": creds.assumed_role_id},
            },
            resources=[("AWS::EKS::Cluster", self.eks.arn)],
            region=region,
        )
        trail.record(
            event_name="AssumeRole",
            event_source="sts.amazonaws.com",
            user_identity={"type": "AWSService", "invokedBy": PI_AUDIENCE},
            username=None,
            request_parameters={
                "roleArn": role_arn,
                "roleSessionName": session,
                **({"tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]} if tags else {}),
                **({"transitiveTagKeys": sorted(tags)} if tags else {}),
            },
            response_elements={
                "credentials": {"accessKeyId": creds.access_key_id, "expiration": creds.iso_expiration()},
                "assumedRoleUser": {"assumedRoleId": creds.assumed_role_id, "arn": creds.assumed_role_arn},
            },
            resources=[
                ("AWS::IAM::AccessKey", creds.access_key_id),
                ("AWS::STS::AssumedRole", creds.assumed_role_arn),
                ("AWS::IAM::Role", role_arn),
            ],
            read_only=True,
            region=region,
        )


class _Stale(Exception):
    """EKS Auth's credentials would expire within the cache's minimum lifetime (the agent: a 500)."""


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _serve_every_method(server: LoopbackServer) -> None:
    """Go's ServeMux passes every method to a pattern registered without one; the loopback
    handler knows GET and PUT, so teach this server's handler class the others."""
    cls: Any = server.server.RequestHandlerClass
    for method in ("POST", "DELETE", "PATCH", "OPTIONS", "HEAD"):
        setattr(cls, f"do_{method}", _method(method))


def _method(method: str) -> Callable[[Any], None]:
    def do(self: Any) -> None:
        self._go(method)

    return do


def _headless(
    handler: Callable[[BaseHTTPRequestHandler, str], Answer | None],
) -> Callable[[BaseHTTPRequestHandler, str], Answer | None]:
    """A HEAD request gets the status and headers of the answer, without its body."""

    def handle(req: BaseHTTPRequestHandler, method: str) -> Answer | None:
        answer = handler(req, method)
        if answer is None or method != "HEAD":
            return answer
        return answer[0], answer[1], b""

    return handle
