"""A node's instance metadata service (IMDS), as a pod on the node reaches it."""

from __future__ import annotations

import uuid
from http.server import BaseHTTPRequestHandler

from pytest_eksid.sandbox.cloud import Iam
from pytest_eksid.sandbox.kubeapi.store import now_rfc3339
from pytest_eksid.sandbox.loopback import Answer, LoopbackServer, reply


class Imds:
    """IMDS of one node, as a pod on it sees it.

    The recommended node setting (hop limit 1, HttpTokens=required) is the default: the v2 token
    PUT gets no reply (the hop limit drops it) and v1 GETs are refused (401). ``v2_exposed``: hop
    limit 2, so pods get a token and the node role's credentials. ``v1_exposed``: HttpTokens
    optional, so a plain GET serves the credentials."""

    def __init__(
        self, iam: Iam, node_role_arn: str | None, *, v1_exposed: bool = False, v2_exposed: bool = False
    ) -> None:
        self.iam = iam
        self.node_role_arn = node_role_arn
        self.v1_exposed = v1_exposed
        self.v2_exposed = v2_exposed
        self.http = LoopbackServer("eksid-imds", self._handle)
        self._tokens: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> Answer | None:
        path = req.path.split("?")[0]
        if method == "PUT" and path == "/latest/api/token":
            if not self.v2_exposed:
                self.http.stopping.wait(30)  # the reply never reaches the pod
                return None
            token = uuid.uuid4().hex
            self._tokens.add(token)
            return reply(200, token)
        if method != "GET":
            return reply(405, "Method Not Allowed")
        v2_token = req.headers.get("x-aws-ec2-metadata-token")
        if v2_token not in self._tokens and not self.v1_exposed:
            return reply(401, "Unauthorized")
        prefix = "/latest/meta-data/iam/security-credentials/"
        role_name = (self.node_role_arn or "").rsplit("/", 1)[-1]
        if path == prefix.rstrip("/") or path == prefix:
            return reply(200, role_name) if role_name else reply(404, "Not Found")
        if path == prefix + role_name and role_name and self.node_role_arn:
            creds = self.iam.mint(self.node_role_arn, f"i-{uuid.uuid4().hex[:17]}")
            return reply(
                200,
                {
                    "Code": "Success",
                    "LastUpdated": now_rfc3339(),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": creds.access_key_id,
                    "SecretAccessKey": creds.secret_access_key,
                    "Token": creds.session_token,
                    "Expiration": creds.iso_expiration(),
                },
            )
        return reply(404, "Not Found")
