"""The probe program under endpoints that do not answer: every AWS call is bounded, and a stuck step
costs only itself — the probe still prints a result with every other step before the pod's deadline."""

from __future__ import annotations

import base64
import http.server
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.probe import program
from tests.helpers.endpoints import Endpoint

ROLE_ARN = "arn:aws:iam::111122223333:role/demo-billing-worker"


def _jwt() -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {"iss": "https://oidc.example", "sub": "system:serviceaccount:ns:sa", "aud": ["sts.amazonaws.com"]}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def _irsa_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws: str, imds: str) -> dict[str, str]:
    """An IRSA pod's environment whose AWS endpoint is ``aws``; returns it as the probe reads it."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    token = tmp_path / "token"
    token.write_text(_jwt())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return dict(os.environ)


def _plan(timeout: float, step_seconds: float) -> dict[str, Any]:
    return {
        "workload": "billing-worker",
        "mechanism": "irsa",
        "region": "eu-west-1",
        "timeout": timeout,
        "imds_timeout": 0.2,
        "step_seconds": step_seconds,
        "actions": [
            {
                "id": "allow-0",
                "expect": "allowed",
                "action": "sqs:GetQueueAttributes",
                "service": "sqs",
                "operation": "GetQueueAttributes",
                "params": {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/111122223333/q", "AttributeNames": ["All"]},
                "form": "live",
                "form_note": "live call",
                "authorized_codes": [],
            }
        ],
    }


def test_the_web_identity_exchange_is_bounded_by_the_probes_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, silent: Endpoint
) -> None:
    # botocore's web-identity provider makes its own STS client; without the session's default
    # config it would wait 60 s per read, and the step budget (15 s here) would cut it off instead.
    environ = _irsa_pod(monkeypatch, tmp_path, silent.url, silent.url)
    result = program.run(_plan(timeout=0.5, step_seconds=15), environ)
    error = result["identity"]["error"]
    assert error["type"] != "StepTimeout", error
    assert "timeout" in error["message"].lower() or "timed out" in error["message"].lower(), error
    assert result["actions"][0]["why"] == "not run: the pod has no working AWS credentials"


def test_a_step_past_its_budget_is_recorded_and_the_others_still_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, silent: Endpoint
) -> None:
    environ = _irsa_pod(monkeypatch, tmp_path, silent.url, "http://127.0.0.1:9")
    result = program.run(_plan(timeout=5, step_seconds=0.5), environ)
    assert result["identity"]["error"]["type"] == "StepTimeout"
    assert result["identity"]["error"]["message"] == (
        "did not finish within 0.5s: an AWS endpoint that does not answer?"
    )
    assert result["actions"][0]["outcome"] == "error"
    # The steps without AWS calls ran beside it and are all there.
    assert result["environment"]["token_files"], result["environment"]
    assert result["imds"]["v1"]["outcome"].startswith("blocked"), result["imds"]
    assert "agent" in result
    assert set(result["seconds"]) == {"environment", "imds", "agent", "identity", "actions", "total"}


def test_actions_past_the_budget_are_not_run_and_the_earlier_ones_keep_their_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, silent: Endpoint
) -> None:
    # The step's clock moves only by what the probe waits for a call that does not answer: however long
    # building a botocore client takes on a busy machine, allow-0 finishes in time, allow-1 starts in
    # time and is cut off, and only then is the budget used up, so allow-2 is not run.
    now = [0.0]
    bounded = program._bounded

    def waited(step: Any, seconds: float) -> Any:
        try:
            return bounded(step, seconds)
        finally:
            now[0] += seconds + 0.01  # a join returns at its timeout or a little after

    monkeypatch.setattr(program, "_bounded", waited)
    _irsa_pod(monkeypatch, tmp_path, silent.url, "http://127.0.0.1:9")
    plan = _plan(timeout=5, step_seconds=0.5)  # a call would wait 2 x 10 s for its answer: far past 0.5 s
    stuck = plan["actions"][0]
    broken = dict(stuck, id="allow-0", operation="NoSuchOperation")  # fails at once, before any request
    plan["actions"] = [broken, dict(stuck, id="allow-1"), dict(stuck, id="allow-2")]
    identity = {"method": "assume-role-with-web-identity", "caller": {"arn": "arn:aws:sts::1:assumed-role/r/s"}}
    results = program.run_actions(plan, identity, deadline=0.5, clock=lambda: now[0])
    assert [r["id"] for r in results] == ["allow-0", "allow-1", "allow-2"]
    assert results[0]["outcome"] == "error"
    assert "no operation NoSuchOperation" in results[0]["message"]  # kept: it finished in time
    assert results[1]["code"] == "StepTimeout"
    assert results[1]["why"] == "the call did not answer within the actions step's budget"
    assert results[2]["code"] == "StepTimeout"
    assert results[2]["why"].startswith("not run: the actions step used up its time")


# --- the agent endpoint: status and the EKS Auth error code, from raw bodies in the agent's format ---

# Bodies as the agent writes them (aws/eks-pod-identity-agent pkg/errors/errors.go, Go's http.Error).
TRUST_DENIED = (
    "[a1b2c3d4-0000-4000-8000-000000000001]: (AccessDeniedException): Unauthorized Exception! "
    "EKS does not have permissions to assume the associated role., fault: client\n"
)
NOT_FOUND = "[a1b2c3d4-0000-4000-8000-000000000002]: (ResourceNotFoundException): No association, fault: client\n"
WRONG_HOST = (
    "Access Denied. Called agent through invalid address, please use either "
    "[169.254.170.23 fd00:ec2::23] address not 10.0.0.1\n"
)
SUCCESS = (
    '{"AccessKeyId":"ASIAEXAMPLEKEYID","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",'
    '"Token":"FwoGZXIvYXdzEXAMPLESESSIONTOKEN","AccountId":"111122223333","Expiration":"2030-01-01T00:00:00Z"}'
)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (TRUST_DENIED, "AccessDeniedException"),
        (NOT_FOUND, "ResourceNotFoundException"),
        ("[r-1]: (ThrottlingException): Rate exceeded, fault: client\n", "ThrottlingException"),
        ("[]: (InternalServerException): oops, fault: server", "InternalServerException"),
        ("(ExpiredTokenException): expired, fault: client\n", "ExpiredTokenException"),  # no ResponseError
        (WRONG_HOST, None),
        ("Service account token cannot be parsed: token is malformed\n", None),
        ("Too Many Requests\n", None),
        ("[r-1]\n", None),  # a response error without an API error: no code
        ("(AccessDenied\x1b[31m): x, fault: client\n", None),  # not a plain word
        ("(AccessDeniedException): x, fault: nobody\n", None),
        ("junk (AccessDeniedException): x, fault: client\n", None),  # the code must open the body
        ("[r]: (AccessDeniedException): " + "x" * program.AGENT_BODY_LIMIT + ", fault: client\n", None),
        ("", None),
    ],
)
def test_agent_error_code_is_read_only_from_the_agents_format(body: str, code: str | None) -> None:
    assert program.agent_error_code(body) == code


class _Agent:
    """A stand-in agent answering every GET with one status and raw body."""

    def __init__(self, status: int, body: str) -> None:
        import http.server
        import threading

        answer = (status, body.encode())

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                code, data = answer
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if code == 200 else "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/credentials"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def agent_answering() -> Any:
    agents: list[_Agent] = []

    def start(status: int, body: str) -> _Agent:
        agents.append(_Agent(status, body))
        return agents[-1]

    yield start
    for agent in agents:
        agent.close()


def _pi_environ(tmp_path: Path, uri: str) -> dict[str, str]:
    token = tmp_path / "eks-pod-identity-token"
    token.write_text(_jwt())
    return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": uri, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token)}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, TRUST_DENIED, {"outcome": "http-error", "http_status": 400, "error_code": "AccessDeniedException"}),
        (404, NOT_FOUND, {"outcome": "http-error", "http_status": 404, "error_code": "ResourceNotFoundException"}),
        (403, WRONG_HOST, {"outcome": "http-error", "http_status": 403, "error_code": None}),
        (200, SUCCESS, {"outcome": "credentials", "http_status": 200}),
    ],
)
def test_check_agent_keeps_the_status_and_the_code_and_no_body(
    tmp_path: Path, agent_answering: Any, status: int, body: str, expected: dict[str, Any]
) -> None:
    agent = agent_answering(status, body)
    result = program.check_agent(_pi_environ(tmp_path, agent.uri))
    assert result == {"configured": True, "uri": agent.uri, **expected}
    for secret in ("wJalrXUtnFEMI", "FwoGZXIvYXdz", "Unauthorized Exception", "invalid address"):
        assert secret not in json.dumps(result)


def test_a_refusal_seen_through_botocore_keeps_the_agents_status_and_code(tmp_path: Path, agent_answering: Any) -> None:
    from botocore.credentials import ContainerProvider
    from botocore.exceptions import CredentialRetrievalError
    from botocore.utils import ContainerMetadataFetcher

    agent = agent_answering(400, TRUST_DENIED)
    provider = ContainerProvider(
        _pi_environ(tmp_path, agent.uri), fetcher=ContainerMetadataFetcher(sleep=lambda _: None)
    )
    with pytest.raises(CredentialRetrievalError) as raised:
        provider.load()
    error = program._error(raised.value)
    assert error["type"] == "CredentialRetrievalError"
    assert (error["agent_status"], error["agent_code"]) == (400, "AccessDeniedException")


def test_imds_runs_beside_the_aws_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No step waits on another it does not need: IMDS is asked while the identity step talks to STS.
    The fake IMDS answers only once STS has been called; run one after the other, IMDS would time out."""
    sts_called = threading.Event()

    class Sts(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sts_called.set()
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Imds(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sts_called.wait(60)
            body = b"node-role\n" if self.path.endswith("/security-credentials/") else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (Sts, Imds)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sts, imds = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        environ = _irsa_pod(monkeypatch, tmp_path, sts, imds)
        plan = {**_plan(timeout=5, step_seconds=30), "imds_timeout": 30}
        result = program.run(plan, environ)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert sts_called.is_set()
    # answered, not timed out: IMDS was asked while (or after) the identity step reached STS
    assert result["imds"]["v1"] == {"outcome": "no-credentials", "role": "node-role", "http_status": 200}
