"""EKS's authentication of IAM principals: ``k8s-aws-v1.`` bearer tokens, checked and mapped as EKS does.

A token (what ``aws eks get-token`` prints) is ``k8s-aws-v1.`` + base64url (unpadded) of a presigned STS
``GetCallerIdentity`` URL whose SigV4 signature covers the ``x-k8s-aws-id`` header, the cluster's name.
``EksTokenAuthenticator`` checks it as aws-iam-authenticator's verifier does
[kubernetes-sigs/aws-iam-authenticator@81b1daba pkg/token/token.go:594-735]: size (4 KiB), prefix, encoding,
scheme/host/path, the whitelisted query parameters once each, ``Action=GetCallerIdentity``, a signed
``x-k8s-aws-id``, ``X-Amz-Expires`` 0-900, ``X-Amz-Date`` at most 15 minutes old; then it has STS answer the URL
with the header set to *this* cluster's name (so a token made for another cluster fails its signature), and
canonicalises the ARN (an ``assumed-role`` session becomes its role; pkg/arn/arn.go:38-80).

Differences from EKS, all forced by the sandbox having no real STS: the URL must name the sandbox's STS
endpoint (``AWS_ENDPOINT_URL``, plain http on loopback) instead of ``https://sts[.<region>].amazonaws.com``,
and STS is the emulated one (``fidelity.presigned_caller_identity``, called in process, not over HTTP).

The principal is then mapped to a Kubernetes user, by the cluster's authentication mode: an access entry
(``API``, ``API_AND_CONFIG_MAP``; the entry wins), else the ``kube-system/aws-auth`` ConfigMap's ``mapRoles``,
``mapUsers`` and ``mapAccounts`` (``API_AND_CONFIG_MAP``, ``CONFIG_MAP``) as aws-iam-authenticator's ConfigMap
mapper does (pkg/mapper/configmap/mapper.go:46-74: canonical ARN compared case-insensitively, roles first).
Usernames and groups may hold ``{{AccountID}}``, ``{{SessionName}}`` (``@`` becomes ``-``),
``{{SessionNameRaw}}`` and ``{{AccessKeyID}}`` (pkg/server/server.go:529-549). The caller's uid and ``extra``
are those the authenticator's TokenReview answers with (server.go:425-458).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree

import yaml
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from pytest_eksid.sandbox import fidelity
from pytest_eksid.sandbox.eks import EksControlPlane
from pytest_eksid.sandbox.kubeapi.server import Caller

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
MAX_TOKEN_BYTES = 4 * 1024
PRESIGNED_URL_LIFETIME = datetime.timedelta(minutes=15)
# token.go:166-176
ALLOWED_PARAMETERS = frozenset(
    {
        "action",
        "version",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-signedheaders",
    }
)
AUTHENTICATED = "system:authenticated"


class TokenRejected(Exception):
    """Why a token does not authenticate (aws-iam-authenticator's FormatError/STSError text)."""


@dataclass(frozen=True)
class Identity:
    """aws-iam-authenticator's ``token.Identity``."""

    arn: str
    canonical_arn: str
    account_id: str
    user_id: str
    session_name: str
    access_key_id: str


def canonicalize(arn: str) -> str:
    """IAM users and roles as they are; an STS ``assumed-role`` session as its role (arn.go:38-80)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise TokenRejected(f"arn '{arn}' is invalid")
    _, partition, service, _, account, resource = parts
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role":
        role = rest.rsplit("/", 1)[0] if "/" in rest else ""
        if not role:
            raise TokenRejected(f"assumed-role arn '{arn}' does not have a role")
        return f"arn:{partition}:iam::{account}:role/{role}"
    if (service == "sts" and kind == "federated-user") or (service == "iam" and kind in ("role", "user", "root")):
        return arn
    raise TokenRejected(f"arn '{arn}' is not a principal the authenticator accepts")


def render(template: str, identity: Identity) -> str:
    """A username or group template filled in (server.go:529-549). ``{{EC2PrivateDNSName}}`` needs EC2's
    DescribeInstances, which the sandbox does not emulate: such a mapping does not authenticate."""
    if "{{EC2PrivateDNSName}}" in template:
        raise TokenRejected("{{EC2PrivateDNSName}} is not supported by the sandbox")
    return (
        template.replace("{{AccountID}}", identity.account_id)
        .replace("{{SessionName}}", identity.session_name.replace("@", "-"))
        .replace("{{SessionNameRaw}}", identity.session_name)
        .replace("{{AccessKeyID}}", identity.access_key_id)
    )


def aws_auth_mapping(data: dict[str, Any], identity: Identity) -> tuple[str, list[str]] | None:
    """(username template, groups) for ``identity`` from the aws-auth ConfigMap's ``data``, or None.
    Hostile input: an entry or a key that does not parse maps nobody."""

    def entries(key: str) -> list[dict[str, Any]]:
        try:
            loaded = yaml.safe_load(str(data.get(key) or "")) or []
        except yaml.YAMLError:
            return []
        return [e for e in loaded if isinstance(e, dict)] if isinstance(loaded, list) else []

    canonical = identity.canonical_arn.lower()
    for key, arn_key in (("mapRoles", "rolearn"), ("mapUsers", "userarn")):
        for entry in entries(key):
            if str(entry.get(arn_key) or "").lower() == canonical:
                groups = entry.get("groups") or []
                return str(entry.get("username") or ""), [str(g) for g in groups] if isinstance(groups, list) else []
    try:
        accounts = yaml.safe_load(str(data.get("mapAccounts") or "")) or []
    except yaml.YAMLError:
        accounts = []
    if isinstance(accounts, list) and identity.account_id in [str(a) for a in accounts]:
        return identity.canonical_arn, []  # server.go:496-498
    return None


class EksTokenAuthenticator:
    """The API server's authenticator for ``k8s-aws-v1.`` tokens (``KubeApiServer.authenticators``)."""

    def __init__(
        self,
        cluster: EksControlPlane,
        sts_endpoint: str,
        *,
        aws_auth: Callable[[], dict[str, Any] | None],
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        remember: Callable[[str], None] | None = None,
    ) -> None:
        self.cluster = cluster
        endpoint = urlsplit(sts_endpoint)
        self.sts_scheme, self.sts_host = endpoint.scheme, endpoint.netloc
        self.aws_auth = aws_auth
        self.now = now
        self.remember = remember  # the secret ledger: a token is a bearer credential
        self._remembered: set[str] = set()

    def __call__(self, token: str) -> Caller | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        try:
            identity = self.verify(token)
        except TokenRejected:
            return None
        if self.remember is not None and token not in self._remembered:
            self._remembered.add(token)  # once per token: a client sends the same one on every request
            self.remember(token)
        return self.map(identity)

    def verify(self, token: str) -> Identity:
        """The principal that signed ``token`` for this cluster; TokenRejected otherwise (token.go:594-735)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("token is too large")
        encoded = token[len(TOKEN_PREFIX) :]
        try:
            if "=" in encoded:
                raise ValueError("padding")  # base64.RawURLEncoding: unpadded
            url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
            parsed = urlsplit(url)
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise TokenRejected(f"input token was not properly formatted: {exc}") from None
        if (parsed.scheme, parsed.netloc) != (self.sts_scheme, self.sts_host):
            raise TokenRejected(f"unexpected hostname {parsed.netloc!r} in pre-signed URL")
        if parsed.path != "/":
            raise TokenRejected("unexpected path in pre-signed URL")
        pairs = parse_qsl(parsed.query, keep_blank_values=True)
        params: dict[str, str] = {}
        for key, value in pairs:
            lower = key.lower()
            if lower in params:
                raise TokenRejected(f"duplicate query parameter found: {key!r}")
            if lower not in ALLOWED_PARAMETERS:
                raise TokenRejected(f"non-whitelisted query parameter {key!r}")
            params[lower] = value
        if params.get("action") != "GetCallerIdentity":
            raise TokenRejected("unexpected action parameter in pre-signed URL")
        signed = [h.lower() for h in params.get("x-amz-signedheaders", "").split(";")]
        if CLUSTER_ID_HEADER not in signed:
            raise TokenRejected(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
        try:
            expires = int(params.get("x-amz-expires", ""))
        except ValueError:
            expires = -1
        if not 0 <= expires <= 900:
            raise TokenRejected("invalid X-Amz-Expires parameter in pre-signed URL")
        try:
            signed_at = datetime.datetime.strptime(params.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.UTC
            )
        except ValueError:
            raise TokenRejected("X-Amz-Date parameter must be present and valid in pre-signed URL") from None
        if self.now() > signed_at + PRESIGNED_URL_LIFETIME:
            raise TokenRejected("X-Amz-Date parameter is expired (15 minute expiration)")
        return self._call_sts(parsed.query, params)

    def _call_sts(self, query: str, params: dict[str, str]) -> Identity:
        # STS answers the URL with the verifier's own x-k8s-aws-id (token.go:685-692), at the verifier's time: the
        # emulated STS honours the URL for 15 minutes from X-Amz-Date whatever X-Amz-Expires says, as STS does
        # (token.go:92-98; aws eks get-token signs with 60 s and caches 14 min).
        environ = EnvironBuilder(
            path="/",
            base_url=f"{self.sts_scheme}://{self.sts_host}",
            query_string=query,
            headers=[(CLUSTER_ID_HEADER, self.cluster.name), ("Accept", "application/json")],
        ).get_environ()
        answer = fidelity.presigned_caller_identity(Request(environ), self.now)
        if answer.status_code != 200:
            raise TokenRejected(
                f"sts getCallerIdentity failed: error from AWS (expected 200, got {answer.status_code})"
            )
        try:
            root = ElementTree.fromstring(answer.get_data())
        except ElementTree.ParseError:
            raise TokenRejected("sts getCallerIdentity failed: unreadable answer") from None
        found = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        arn, user_id, account = found.get("Arn", ""), found.get("UserId", ""), found.get("Account", "")
        canonical = canonicalize(arn)
        session = ""
        if ":assumed-role/" in arn:
            user_id, sep, session = user_id.partition(":")
            if not sep:
                raise TokenRejected(f"malformed UserID {user_id!r}")
        access_key = params.get("x-amz-credential", "").split("/")[0]
        return Identity(arn, canonical, account, user_id, session, access_key)

    def map(self, identity: Identity) -> Caller | None:
        """The Kubernetes user ``identity`` is, by the cluster's authentication mode; None when unmapped."""
        mode = self.cluster.authentication_mode
        username: str | None = None
        groups: list[str] = []
        entry = self.cluster.entry_for(identity.canonical_arn) if mode != "CONFIG_MAP" else None
        if entry is not None:
            username, groups = entry.username, list(entry.kubernetes_groups)
            if entry.type != "STANDARD":  # node roles (guessed as the aws-auth convention for nodes)
                groups = ["system:bootstrappers", "system:nodes"]
        elif mode != "API":
            data = self.aws_auth()
            mapping = aws_auth_mapping(data, identity) if data else None
            if mapping is not None:
                username, groups = mapping
        if not username:
            return None
        try:
            name = render(username, identity)
            rendered = [render(g, identity) for g in groups]
        except TokenRejected:
            return None
        extra = (
            ("accessKeyId", (identity.access_key_id,)),
            ("arn", (identity.arn,)),
            ("canonicalArn", (identity.canonical_arn,)),
            ("principalId", (identity.user_id,)),
            ("sessionName", (identity.session_name,)),
            ("sigs.k8s.io/aws-iam-authenticator/principalId", (identity.user_id,)),
        )
        return Caller(
            name,
            (*rendered, AUTHENTICATED),
            uid=f"aws-iam-authenticator:{identity.account_id}:{identity.user_id}",
            extra=extra,
        )


def canonical_arn_of(caller: Caller) -> str | None:
    """The canonical IAM ARN an EKS-token caller was authenticated as (its ``extra``), or None."""
    for key, values in caller.extra:
        if key == "canonicalArn" and values:
            return values[0]
    return None
