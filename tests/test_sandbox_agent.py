"""The sandbox's Pod Identity agent behaves as aws/eks-pod-identity-agent does (docs/sandbox.md).

Each test builds its own agent on the module's demo sandbox (its IAM, EKS and issuer), with a
clock the test moves: the cache's refresh and expiry are proven without sleeping.
"""

from __future__ import annotations

import calendar
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_eksid.probe.program import agent_error_code
from pytest_eksid.sandbox.agent import CacheSettings, EksAuthError, PodIdentityAgent, split_host_port, target_host
from pytest_eksid.sandbox.runtime import Connection, Sandbox
from tests.helpers.sandboxes import runner_client

ACCOUNT = "111122223333"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/"
EXPORTER_ROLE = ROLE + "demo-invoice-exporter"
REPORTING_ROLE = ROLE + "demo-reporting"
PI_NS, PI_SA = "finance-demo", "invoice-exporter-aws-sa"
PI_AUDIENCE = "pods.eks.amazonaws.com"
TEXT = "text/plain; charset=utf-8"


class FakeClock:
    """The agent's time, moved by tests. It starts 30 s after the real time: tokens and credentials
    carry real times, and a token minted after the clock was made has an ``nbf`` (whole seconds)
    that a clock at exactly the real time could still be before."""

    def __init__(self) -> None:
        self.now = time.time() + 30

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def call(
    agent: PodIdentityAgent, token: str | None, *, host: str | None = None, method: str = "GET", path: str = ""
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": token} if token is not None else {}
    if host is not None:
        headers["Host"] = host
    url = f"http://127.0.0.1:{agent.port}{path or '/v1/credentials'}"
    return fetch(url, method=method, headers=headers)


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, dict(exc.headers), exc.read()
        finally:
            exc.close()


def token_for(sb: Sandbox, namespace: str = PI_NS, service_account: str = PI_SA, **kw: Any) -> str:
    return sb.issuer.service_account_token(
        namespace=namespace,
        service_account=service_account,
        sa_uid=str(uuid.uuid4()),
        pod_name=f"{service_account}-agent-test",
        pod_uid=str(uuid.uuid4()),
        node_name=sb.nodes[0].name,
        audience=kw.get("audience", PI_AUDIENCE),
        expiration_seconds=kw.get("expiration", 3600),
    )


@pytest.fixture
def agents(sandbox: tuple[Sandbox, Connection]) -> Iterator[Any]:
    """Make agents on the shared sandbox; every one is stopped at teardown."""
    sb, _ = sandbox
    made: list[PodIdentityAgent] = []

    def make(clock: FakeClock | None = None, **kw: Any) -> PodIdentityAgent:
        agent = PodIdentityAgent(sb.iam, sb.eks, sb.issuer, clock=clock or FakeClock(), **kw)
        agent.start()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


@pytest.fixture
def eks(sandbox: tuple[Sandbox, Connection]) -> Iterator[Any]:
    """The runner's EKS client; the demo association is as it was after the test."""
    _, connection = sandbox
    env = connection.env
    client = runner_client(env, "eks")
    yield client
    found = client.list_pod_identity_associations(clusterName="demo", namespace=PI_NS, serviceAccount=PI_SA)
    for assoc in found["associations"]:
        client.delete_pod_identity_association(clusterName="demo", associationId=assoc["associationId"])
    client.create_pod_identity_association(
        clusterName="demo", namespace=PI_NS, serviceAccount=PI_SA, roleArn=EXPORTER_ROLE
    )
    client.close()


def demo_association(eks: Any) -> str:
    (assoc,) = eks.list_pod_identity_associations(clusterName="demo", namespace=PI_NS, serviceAccount=PI_SA)[
        "associations"
    ]
    return str(assoc["associationId"])


# --- the per-token cache ------------------------------------------------------------------


def test_cached_credentials_are_served_after_the_association_is_deleted_until_refresh(sandbox, agents, eks):
    """Deleting an association does not revoke at once: the token's cached credentials are served
    until the cache renews them, and that renewal's ResourceNotFound drops them."""
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock, cache=CacheSettings(renewal=600))
    token = token_for(sb)
    status, _, body = call(agent, token)
    assert status == 200, body
    first = json.loads(body)["AccessKeyId"]

    eks.delete_pod_identity_association(clusterName="demo", associationId=demo_association(eks))
    clock.advance(599)
    status, _, body = call(agent, token)
    assert status == 200, body  # still served: the association is not looked up again
    assert json.loads(body)["AccessKeyId"] == first
    assert call(agent, token_for(sb))[0] == 404  # a new token has nothing cached

    clock.advance(2)  # past the refresh time: the renewal meets ResourceNotFoundException
    status, headers, body = call(agent, token)
    assert status == 404, body
    assert headers["Content-Type"] == TEXT
    assert agent_error_code(body.decode()) == "ResourceNotFoundException"
    assert token not in agent.cache


def test_a_changed_association_takes_effect_at_refresh(sandbox, agents, eks):
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock, cache=CacheSettings(renewal=600))
    token = token_for(sb)
    first = json.loads(call(agent, token)[2])["AccessKeyId"]
    eks.update_pod_identity_association(clusterName="demo", associationId=demo_association(eks), roleArn=REPORTING_ROLE)
    assert json.loads(call(agent, token)[2])["AccessKeyId"] == first
    clock.advance(601)  # the renewal is denied (the reporting role does not trust this SA): irrecoverable
    status, _, body = call(agent, token)
    assert status == 400, body
    assert agent_error_code(body.decode()) == "AccessDeniedException"


def test_a_renewal_replaces_the_credentials_while_the_association_stands(sandbox, agents):
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock, cache=CacheSettings(renewal=600))
    token = token_for(sb)
    first = json.loads(call(agent, token)[2])["AccessKeyId"]
    assert json.loads(call(agent, token)[2])["AccessKeyId"] == first
    clock.advance(601)
    status, _, body = call(agent, token)
    assert status == 200, body
    assert json.loads(body)["AccessKeyId"] != first


def test_credentials_within_the_minimum_lifetime_are_not_served_from_the_cache(sandbox, agents, eks):
    """Cached credentials are served only while they have more than 15 s left (with the agent's
    default 3 h renewal, a 1 h credential is renewed by then)."""
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock)
    token = token_for(sb, expiration=7200)
    expires = json.loads(call(agent, token)[2])["Expiration"]
    eks.delete_pod_identity_association(clusterName="demo", associationId=demo_association(eks))
    left = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ")) - clock.now
    clock.advance(left - 16)
    assert call(agent, token)[0] == 200
    clock.advance(2)
    assert call(agent, token)[0] == 404


def test_a_disabled_cache_asks_eks_auth_each_time(sandbox, agents, eks):
    sb, _ = sandbox
    agent = agents(cache=CacheSettings(renewal=0))
    token = token_for(sb)
    assert call(agent, token)[0] == 200
    eks.delete_pod_identity_association(clusterName="demo", associationId=demo_association(eks))
    assert call(agent, token)[0] == 404


def test_the_cache_keeps_at_most_max_size_tokens(sandbox, agents):
    sb, _ = sandbox
    agent = agents(cache=CacheSettings(max_size=2))
    tokens = [token_for(sb) for _ in range(3)]
    for token in tokens:
        assert call(agent, token)[0] == 200
    assert list(agent.cache) == tokens[1:]


# --- validation ---------------------------------------------------------------------------


def test_a_token_before_its_nbf_is_refused(sandbox, agents):
    sb, _ = sandbox
    clock = FakeClock()
    clock.advance(-120)  # before the token's nbf
    agent = agents(clock)
    status, headers, body = call(agent, token_for(sb))
    assert status == 400
    assert headers["Content-Type"] == TEXT
    assert (
        body
        == b"Service account token failed basic claim validations: token has invalid claims: token is not valid yet\n"
    )


@pytest.mark.parametrize(
    "host", ["169.254.170.23", "169.254.170.23:80", "[fd00:ec2::23]:80", "[fd00:ec2::23]", "fd00:ec2::23"]
)
def test_the_host_header_is_parsed_with_port_and_brackets(sandbox, agents, host):
    sb, _ = sandbox
    status, _, body = call(agents(), token_for(sb), host=host)
    assert status == 200, body


@pytest.mark.parametrize(
    ("host", "named"),
    [("evil.example:80", "evil.example"), ("[::1]:80", "::1"), ("169.254.170.23.nip.io", "169.254.170.23.nip.io")],
)
def test_other_hosts_are_refused_by_their_bare_name(sandbox, agents, host, named):
    sb, _ = sandbox
    status, headers, body = call(agents(), token_for(sb), host=host)
    assert status == 403
    assert headers["Content-Type"] == TEXT
    assert body.decode() == (
        "Access Denied. Called agent through invalid address, please use either "
        f"[169.254.170.23 fd00:ec2::23] address not {named}\n"
    )


def test_split_host_port_as_go():
    assert split_host_port("169.254.170.23:80") == ("169.254.170.23", "80")
    assert split_host_port("[fd00:ec2::23]:80") == ("fd00:ec2::23", "80")
    assert split_host_port("169.254.170.23:") == ("169.254.170.23", "")
    for bad in ("169.254.170.23", "fd00:ec2::23", "[fd00:ec2::23]", "[fd00:ec2::23]x:80", "a]:80"):
        assert split_host_port(bad) is None, bad
    assert target_host("[fd00:ec2::23]") == "fd00:ec2::23"
    assert target_host("fd00:ec2::23") == "fd00:ec2::23"


# --- router, methods, health ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_every_method_reaches_the_credentials_handler(sandbox, agents, method):
    sb, _ = sandbox
    status, _, body = call(agents(), token_for(sb), method=method)
    assert status == 200, body
    assert json.loads(body)["AccountId"] == ACCOUNT


def test_head_gets_the_status_without_a_body(sandbox, agents):
    sb, _ = sandbox
    status, _, body = call(agents(), token_for(sb), method="HEAD")
    assert (status, body) == (200, b"")


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/v1/credentials/", "/v1/other"])
def test_other_paths_are_not_found_on_the_credentials_port(agents, path):
    status, headers, body = call(agents(), None, path=path)
    assert (status, headers["Content-Type"], body) == (404, TEXT, b"404 page not found\n")


def test_health_endpoints_on_their_own_port(agents):
    agent = agents()
    assert agent.probe_port != agent.port
    for path in ("/healthz", "/readyz"):
        status, _, body = fetch(agent.probe_uri + path, method="GET")
        assert (status, body) == (200, b"")
    assert fetch(agent.probe_uri + "/v1/credentials")[0] == 404


def test_health_fails_when_the_credentials_server_does_not_answer(sandbox):
    sb, _ = sandbox
    agent = PodIdentityAgent(sb.iam, sb.eks, sb.issuer)
    agent.start()
    try:
        agent.http.stop()  # the credentials server is gone, the probe server still answers
        status, _, body = fetch(agent.probe_uri + "/healthz")
        assert (status, body) == (500, b"Internal Server Error occurred")
    finally:
        agent.probe_http.stop()
        agent._hold.close()
        agent._hold_probe.close()


# --- the rate limiter ---------------------------------------------------------------------


def test_the_rate_limiter_answers_429_and_refills_with_time(sandbox, agents):
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock, request_rate=4.0)  # burst 2, as rate.NewLimiter(r, int(r/2))
    token = token_for(sb)
    assert [call(agent, token)[0] for _ in range(3)] == [200, 200, 429]
    status, headers, body = call(agent, token)
    assert (status, headers["Content-Type"], body) == (429, TEXT, b"Too Many Requests\n")
    assert agent_error_code(body.decode()) is None
    clock.advance(0.25)  # one token back
    assert [call(agent, token)[0] for _ in range(2)] == [200, 429]


# --- EKS Auth errors ------------------------------------------------------------------------


def test_a_target_role_that_does_not_trust_the_association_role_is_access_denied(sandbox, agents, eks):
    sb, _ = sandbox
    eks.update_pod_identity_association(
        clusterName="demo", associationId=demo_association(eks), targetRoleArn=REPORTING_ROLE
    )
    status, headers, body = call(agents(), token_for(sb))
    assert status == 400, body
    assert headers["Content-Type"] == TEXT
    assert agent_error_code(body.decode()) == "AccessDeniedException"
    assert body.decode().endswith(", fault: client\n")


def test_a_recoverable_renewal_error_keeps_the_credentials_and_retries_in_a_minute(sandbox, agents, monkeypatch):
    """EKS Auth unavailable at renewal: the old credentials stay served while they last."""
    sb, _ = sandbox
    clock = FakeClock()
    agent = agents(clock, cache=CacheSettings(renewal=600))
    token = token_for(sb)
    first = json.loads(call(agent, token)[2])["AccessKeyId"]
    real = agent._assume_role_for_pod_identity

    def unavailable(token: str) -> dict[str, Any]:
        raise EksAuthError("ServiceUnavailableException", "try later")

    monkeypatch.setattr(agent, "_assume_role_for_pod_identity", unavailable)
    clock.advance(601)
    assert json.loads(call(agent, token)[2])["AccessKeyId"] == first
    assert agent.cache[token].refresh == pytest.approx(clock.now + 60)
    monkeypatch.setattr(agent, "_assume_role_for_pod_identity", real)
    clock.advance(61)
    assert json.loads(call(agent, token)[2])["AccessKeyId"] != first


def test_eks_auth_errors_in_the_agents_text_format():
    status, headers, body = EksAuthError("ServiceUnavailableException", "try later").answer()
    assert (status, headers["Content-Type"]) == (503, TEXT)
    assert agent_error_code(body.decode()) == "ServiceUnavailableException"
    assert body.decode().endswith("]: (ServiceUnavailableException): try later, fault: server\n")
    assert body.decode().startswith("[")
