"""A node's EKS Pod Identity agent, with EKS Auth's AssumeRoleForPodIdentity behind it."""

from __future__ import annotations

import socket
import time
import uuid
from http.server import BaseHTTPRequestHandler

from pytest_eksid.sandbox.cloud import Iam
from pytest_eksid.sandbox.eks import EksControlPlane
from pytest_eksid.sandbox.loopback import Answer, LoopbackServer, reply
from pytest_eksid.sandbox.tokens import Issuer, TokenError, audiences, unverified_claims
from pytest_eksid.sandbox.trust import trust_allows
from pytest_eksid.sandbox.webhooks import PI_AUDIENCE


def _agent_text(code: int, text: str) -> Answer:
    """An answer as Go's http.Error writes it: text/plain, nosniff, the text and one newline."""
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return code, headers, (text + "\n").encode()


# EKS Auth's errors as the agent passes them on: EKS Auth's status (botocore's eks-auth model,
# boto/botocore@cd9207757d45 botocore/data/eks-auth/2023-11-26/service-2.json) and the body
# "[<request id>]: (<ErrorCode>): <message>, fault: <fault>" (aws/eks-pod-identity-agent@984147edfc34
# pkg/errors/errors.go, HandleCredentialFetchingError). The messages are the sandbox's own.
EKS_AUTH_STATUS = {
    "AccessDeniedException": 400,
    "InvalidTokenException": 400,
    "ResourceNotFoundException": 404,
}


def _eks_auth_error(code: str, message: str) -> Answer:
    status = EKS_AUTH_STATUS[code]
    fault = "client" if status < 500 else "server"
    return _agent_text(status, f"[{uuid.uuid4()}]: ({code}): {message}, fault: {fault}")


def _bare_host(host: str) -> str:
    """A Host header without its port and brackets, as the agent names it in its 403."""
    if host.startswith("[") and "]" in host:
        return host[1 : host.index("]")]
    return host.split(":")[0] if host.count(":") == 1 else host


class PodIdentityAgent:
    """The eks-pod-identity-agent of one node, with EKS Auth's AssumeRoleForPodIdentity inside.

    Its refusals have the real agent's shapes: 403 for a Host header that is not its address, 400
    for a token it cannot parse or whose exp has passed (the agent checks no signature:
    internal/validation/request.go@1cbbbf4069cc), and EKS Auth's own errors with their status."""

    def __init__(self, iam: Iam, eks: EksControlPlane, issuer: Issuer, *, running: bool = True) -> None:
        self.iam = iam
        self.eks = eks
        self.issuer = issuer
        self.running = running
        self.http = LoopbackServer("eksid-agent", self._handle)
        # A stopped agent: its address is held (bound, not listening), so connections are refused.
        self._hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._hold.bind(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return self.http.port if self.running else int(self._hold.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials"

    def start(self) -> None:
        if self.running:
            self.http.start()

    def stop(self) -> None:
        if self.running:
            self.http.stop()
        else:
            self.http.server.server_close()  # bound at construction, never served
        self._hold.close()

    def _allowed_hosts(self) -> set[str]:
        # EKS: 169.254.170.23 or [fd00:ec2::23]. The sandbox agent listens on loopback instead.
        return {"169.254.170.23", "[fd00:ec2::23]", f"127.0.0.1:{self.port}"}

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> Answer | None:
        path = req.path.split("?")[0]
        if path in ("/healthz", "/readyz"):
            return reply(200, "ok")
        if path != "/v1/credentials" or method != "GET":
            return reply(404, "Not Found")
        host = str(req.headers.get("Host") or "")
        if host not in self._allowed_hosts():
            return _agent_text(
                403,
                "Access Denied. Called agent through invalid address, please use either "
                f"[169.254.170.23 fd00:ec2::23] address not {_bare_host(host)}",
            )
        token = str(req.headers.get("Authorization") or "")
        if not token:
            return _agent_text(400, "Service account token cannot be empty")
        # The agent parses the token unverified (EKS Auth checks the signature) and needs all three parts.
        unverified = unverified_claims(token) if token.count(".") == 2 else None
        if unverified is None:
            return _agent_text(400, "Service account token cannot be parsed: token is malformed")
        exp = unverified.get("exp")
        if isinstance(exp, (int, float)) and exp < time.time():
            return _agent_text(
                400, "Service account token failed basic claim validations: token has invalid claims: token is expired"
            )
        try:  # EKS Auth verifies the signature and the issuer
            claims = self.issuer.verify(token)
        except TokenError as exc:
            return _eks_auth_error("InvalidTokenException", f"Service account token is invalid: {exc}")
        if PI_AUDIENCE not in audiences(claims):
            return _eks_auth_error("InvalidTokenException", f"Service account token audience is not {PI_AUDIENCE}")
        k8s = claims.get("kubernetes.io", {})
        ns = k8s.get("namespace", "")
        sa = k8s.get("serviceaccount", {}).get("name", "")
        pod = k8s.get("pod", {})
        assoc = self.eks.find_association(ns, sa)
        if assoc is None:
            return _eks_auth_error("ResourceNotFoundException", f"No Pod Identity Association found for {ns}/{sa}")
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
            return _eks_auth_error(
                "AccessDeniedException", f"EKS Pod Identity cannot assume {assoc.role_arn}: {reason}"
            )
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
                return reply(
                    403,
                    {"message": f"AccessDeniedException: cannot assume target role {assoc.target_role_arn}: {why}"},
                )
            final = assoc.target_role_arn
        creds = self.iam.mint(final, session, policy=assoc.policy)
        return reply(
            200,
            {
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "Token": creds.session_token,
                "AccountId": final.split(":")[4],
                "Expiration": creds.iso_expiration(),
            },
        )
