"""The sandbox's service-account token issuer: RS256 sign/verify and the JWKS."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pytest_eksid.sandbox.tokens import Issuer, TokenError, audiences, b64url, b64url_decode, unverified_claims

URL = "https://oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(URL)


@pytest.fixture(scope="module")
def other_issuer() -> Issuer:
    return Issuer(URL)  # same URL, different key


def _sa_token(issuer: Issuer, expiration_seconds: int = 3600) -> str:
    return issuer.service_account_token(
        namespace="billing-demo",
        service_account="billing-worker-aws-sa",
        sa_uid="sa-uid-1",
        pod_name="probe-abc",
        pod_uid="pod-uid-1",
        node_name="node-1",
        audience="sts.amazonaws.com",
        expiration_seconds=expiration_seconds,
    )


def _parts(token: str) -> tuple[dict, dict, bytes]:
    h, c, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(c)), b64url_decode(s)


def test_b64url_round_trip_without_padding() -> None:
    for data in (b"", b"a", b"ab", b"abc", b"\xff\xfe\xfd\xfc"):
        encoded = b64url(data)
        assert "=" not in encoded
        assert "+" not in encoded
        assert "/" not in encoded
        assert b64url_decode(encoded) == data


def test_host_path(issuer: Issuer) -> None:
    assert issuer.host_path == "oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789"


def test_sign_verify_round_trip(issuer: Issuer) -> None:
    token = _sa_token(issuer)
    header, _, _ = _parts(token)
    assert header == {"alg": "RS256", "kid": issuer.kid, "typ": "JWT"}
    claims = issuer.verify(token)
    assert claims["iss"] == URL
    assert claims["sub"] == "system:serviceaccount:billing-demo:billing-worker-aws-sa"
    assert claims["aud"] == ["sts.amazonaws.com"]
    assert claims["kubernetes.io"]["namespace"] == "billing-demo"
    assert claims["kubernetes.io"]["pod"] == {"name": "probe-abc", "uid": "pod-uid-1"}
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "billing-worker-aws-sa", "uid": "sa-uid-1"}
    assert claims["kubernetes.io"]["node"]["name"] == "node-1"
    now = time.time()
    assert now - 60 <= claims["iat"] <= now + 1
    assert claims["exp"] - claims["iat"] == 3600
    assert audiences(claims) == ["sts.amazonaws.com"]


def test_arbitrary_claims_round_trip(issuer: Issuer) -> None:
    claims = {"iss": URL, "exp": int(time.time()) + 60, "sub": "x", "aud": "pods.eks.amazonaws.com"}
    assert issuer.verify(issuer.sign(claims)) == claims
    assert audiences(claims) == ["pods.eks.amazonaws.com"]


def test_surrounding_whitespace_is_ignored(issuer: Issuer) -> None:
    assert issuer.verify(f"  {_sa_token(issuer)}\n")["iss"] == URL


def test_tampered_claims_rejected(issuer: Issuer) -> None:
    token = _sa_token(issuer)
    h, _, s = token.split(".")
    _, claims, _ = _parts(token)
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = f"{h}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}.{s}"
    with pytest.raises(TokenError, match="signature does not verify"):
        issuer.verify(forged)


def test_tampered_signature_rejected(issuer: Issuer) -> None:
    token = _sa_token(issuer)
    h, c, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    sig[-1] ^= 0x01
    with pytest.raises(TokenError, match="signature does not verify"):
        issuer.verify(f"{h}.{c}.{b64url(bytes(sig))}")


def test_token_from_another_key_rejected(issuer: Issuer, other_issuer: Issuer) -> None:
    with pytest.raises(TokenError, match="signature does not verify"):
        issuer.verify(_sa_token(other_issuer))


def test_expired_token_rejected(issuer: Issuer) -> None:
    with pytest.raises(TokenError, match=r"^token is expired$"):
        issuer.verify(_sa_token(issuer, expiration_seconds=-5))
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(issuer.sign({"iss": URL}))  # no exp at all


def test_wrong_issuer_rejected(issuer: Issuer) -> None:
    token = issuer.sign({"iss": "https://oidc.eks.us-east-1.amazonaws.com/id/OTHER", "exp": time.time() + 60})
    with pytest.raises(TokenError) as excinfo:
        issuer.verify(token)
    assert str(excinfo.value) == (f"token issuer 'https://oidc.eks.us-east-1.amazonaws.com/id/OTHER' is not {URL!r}")


def test_not_a_jwt(issuer: Issuer) -> None:
    with pytest.raises(TokenError, match="three dot-separated parts"):
        issuer.verify("abc.def")


def test_malformed_parts(issuer: Issuer) -> None:
    with pytest.raises(TokenError, match="token is malformed"):
        issuer.verify(f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'sig')}")


def test_alg_none_rejected(issuer: Issuer) -> None:
    token = _sa_token(issuer)
    _, c, _ = token.split(".")
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    with pytest.raises(TokenError, match="unsupported signing algorithm 'none'"):
        issuer.verify(f"{none_header}.{c}.")


def test_non_object_header_is_a_token_error(issuer: Issuer) -> None:
    with pytest.raises(TokenError):
        issuer.verify(f"{b64url(b'[]')}.{b64url(b'{}')}.{b64url(b'sig')}")


def test_unverified_claims_are_read_without_the_signature(issuer: Issuer) -> None:
    token = _sa_token(issuer)
    h, c, _ = token.split(".")
    assert unverified_claims(token) == _parts(token)[1]
    assert unverified_claims(f"{h}.{c}.forged") == _parts(token)[1]


@pytest.mark.parametrize(
    "token",
    ["", "abc", f"x.{b64url(b'not json')}.y", f"x.{b64url(b'[1]')}.y", "x.%%%.y"],
    ids=["empty", "one-part", "not-json", "not-an-object", "not-base64url"],
)
def test_unreadable_claims_are_none(token: str) -> None:
    assert unverified_claims(token) is None


def test_jwks_publishes_the_public_key(issuer: Issuer) -> None:
    jwks = issuer.jwks()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert key["kid"] == issuer.kid
    assert key["kty"] == "RSA"
    assert key["alg"] == "RS256"
    assert key["use"] == "sig"
    assert key["e"] == "AQAB"  # 65537
    numbers = issuer.key.public_key().public_numbers()
    assert int.from_bytes(b64url_decode(key["n"]), "big") == numbers.n
    assert int.from_bytes(b64url_decode(key["e"]), "big") == numbers.e
    # what a verifier fetching the JWKS would rebuild is the issuer's key
    rebuilt = rsa.RSAPublicNumbers(
        int.from_bytes(b64url_decode(key["e"]), "big"), int.from_bytes(b64url_decode(key["n"]), "big")
    )
    assert rebuilt == numbers


def test_issuers_get_distinct_kids(issuer: Issuer, other_issuer: Issuer) -> None:
    assert issuer.kid != other_issuer.kid
    assert len(issuer.kid) == 16
