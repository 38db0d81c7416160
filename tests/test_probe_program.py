"""The probe program under endpoints that do not answer: every AWS call is bounded, and a stuck step
costs only itself — the probe still prints a result with every other step before the pod's deadline."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_eksid.probe import program
from tests.conftest import Endpoint

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
    # The steps without AWS calls ran first and are all there.
    assert result["environment"]["token_files"], result["environment"]
    assert result["imds"]["v1"]["outcome"].startswith("blocked"), result["imds"]
    assert "agent" in result
    assert list(result["seconds"])[:3] == ["environment", "imds", "agent"]


def test_actions_past_the_budget_are_not_run_and_the_earlier_ones_keep_their_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, silent: Endpoint
) -> None:
    _irsa_pod(monkeypatch, tmp_path, silent.url, "http://127.0.0.1:9")
    plan = _plan(timeout=5, step_seconds=0.5)  # a call would wait 2 x 10 s for its answer
    stuck = plan["actions"][0]
    broken = dict(stuck, id="allow-0", operation="NoSuchOperation")  # fails at once, before any request
    plan["actions"] = [broken, dict(stuck, id="allow-1"), dict(stuck, id="allow-2")]
    identity = {"method": "assume-role-with-web-identity", "caller": {"arn": "arn:aws:sts::1:assumed-role/r/s"}}
    results = program.run_actions(plan, identity, deadline=time.monotonic() + 0.5)
    assert [r["id"] for r in results] == ["allow-0", "allow-1", "allow-2"]
    assert results[0]["outcome"] == "error"
    assert "no operation NoSuchOperation" in results[0]["message"]  # kept: it finished in time
    assert results[1]["code"] == "StepTimeout"
    assert results[1]["why"] == "the call did not answer within the actions step's budget"
    assert results[2]["code"] == "StepTimeout"
    assert results[2]["why"].startswith("not run: the actions step used up its time")
