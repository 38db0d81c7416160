"""The cluster's service-account token issuer: RS256 JWTs, as kube-apiserver signs them.

EKS publishes the issuer as ``https://oidc.eks.<region>.amazonaws.com/id/<ID>``; the sandbox uses
that name, keeps the signing key in memory and verifies with the same key where AWS would fetch
the JWKS (the STS web-identity front and the Pod Identity agent's call to EKS Auth). JWS/JWT
signing and verification are ``joserfc``'s (RFC 7515/7519); the messages of ``TokenError`` are
ours, worded as AWS words its refusals.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import RSAKey

# The API server's own audience (kube-apiserver --api-audiences): a token minted for no audience
# (the kube-api-access volume, a TokenRequest without ``audiences``) carries it, and the API
# server's service-account authenticator accepts only tokens for it. EKS documents no value; the
# tokens EKS pods carry show this one (guessed, docs/sandbox.md).
API_AUDIENCE = "https://kubernetes.default.svc"
# What the ServiceAccount admission plugin asks for, and kube-apiserver's signal to extend such a
# pod-bound token (serviceaccount.WarnOnlyBoundTokenExpirationSeconds) [kubernetes/kubernetes
# pkg/serviceaccount/claims.go, pkg/registry/core/serviceaccount/storage/token.go].
WARN_ONLY_EXPIRATION_SECONDS = 60 * 60 + 7
# What EKS extends it to: "For Amazon EKS clusters, the extended expiry period is 90 days"
# [EKS user guide, service-accounts.html] (upstream's default is a year).
EXTENDED_EXPIRATION_SECONDS = 90 * 24 * 60 * 60


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's claims read without checking its signature (to learn who should verify it), or None."""
    try:
        claims = json.loads(b64url_decode(token.split(".")[1]))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


class TokenError(Exception):
    """A token that does not verify; the message says why, as AWS would."""


class TokenExpired(TokenError):
    """A token whose signature and issuer verify, past its ``exp``."""


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    on_sign: Callable[[str], None] | None = None  # told every token signed (the leak tests' ledger)
    _jwk: RSAKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._jwk = RSAKey.import_key(self.key)

    @property
    def host_path(self) -> str:
        """The issuer without scheme: how IAM names the OIDC provider and the condition keys."""
        return self.url.split("://", 1)[-1]

    def sign(self, claims: dict[str, Any]) -> str:
        token = jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, claims, self._jwk, algorithms=["RS256"])
        if self.on_sign is not None:
            self.on_sign(token)
        return token

    def service_account_token(
        self,
        *,
        namespace: str,
        service_account: str,
        sa_uid: str,
        pod_name: str = "",
        pod_uid: str = "",
        node_name: str = "",
        audience: str = "",
        expiration_seconds: int,
        audiences: list[str] | None = None,
        secret: tuple[str, str] | None = None,
        warn_after_seconds: int = 0,
        now: int | None = None,
    ) -> str:
        """A service-account JWT as kube-apiserver's token.Claims builds it: bound to a pod (with its
        node) or to a secret, or to nothing; ``warnafter`` when the expiry was extended."""
        now = int(time.time()) if now is None else now
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": sa_uid},
        }
        if pod_name:
            private["pod"] = {"name": pod_name, "uid": pod_uid}
            if node_name:
                private["node"] = {"name": node_name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, node_name))}
        if secret is not None:
            private["secret"] = {"name": secret[0], "uid": secret[1]}
        if warn_after_seconds:
            private["warnafter"] = now + warn_after_seconds
        return self.sign(
            {
                "aud": list(audiences) if audiences else [audience or API_AUDIENCE],
                "exp": now + expiration_seconds,
                "iat": now,
                "nbf": now,
                "iss": self.url,
                "jti": str(uuid.uuid4()),
                "sub": f"system:serviceaccount:{namespace}:{service_account}",
                "kubernetes.io": private,
            }
        )

    def verify(self, token: str) -> dict[str, Any]:
        """Check signature, issuer and time; return the claims. Audience is the caller's check."""
        token = token.strip()
        if token.count(".") != 2:
            raise TokenError("token is not a JWT (expected three dot-separated parts)")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError) as exc:
            raise TokenError(f"token is malformed: {exc}") from None
        if header.get("alg") != "RS256":
            raise TokenError(f"unsupported signing algorithm {header.get('alg')!r}")
        try:
            claims = jwt.decode(token, self._jwk, algorithms=["RS256"]).claims
        except BadSignatureError:
            raise TokenError("token signature does not verify against the issuer's keys") from None
        except (JoseError, ValueError) as exc:  # e.g. claims that are not a JSON object
            raise TokenError(f"token is malformed: {exc}") from None
        if claims.get("iss") != self.url:
            raise TokenError(f"token issuer {claims.get('iss')!r} is not {self.url!r}")
        if int(claims.get("exp", 0)) < time.time():
            raise TokenExpired("token is expired")
        return dict(claims)

    def jwks(self) -> dict[str, Any]:
        public = self._jwk.as_dict(private=False)
        return {
            "keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": public["n"], "e": public["e"]}]
        }


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud", [])
    return [aud] if isinstance(aud, str) else [str(a) for a in aud]
