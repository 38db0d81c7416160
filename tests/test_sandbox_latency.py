"""The benchmark setting (docs/sandbox.md): per-request latency for the Kubernetes API and per AWS service, and
IAM throttled to a rate with IAM's own ``Throttling`` error. Every delay goes through an injected ``sleep`` and
every token through an injected clock: the tests assert on recorded delays and counts, never on wall time."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore import retryhandler, translate
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from botocore.retries.standard import (
    RetryContext,
    RetryEventAdapter,
    ThrottledRetryableChecker,
    ThrottlingErrorDetector,
)

from pytest_eksid.profile import ProfileError, load_profile
from pytest_eksid.sandbox.cloud import iam_throttling
from pytest_eksid.sandbox.latency import MAX_SECONDS, Latency, Throttle, TokenBucket
from pytest_eksid.sandbox.model import SandboxSection, section
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox

RANGES = {
    "kubernetes": [0.005, 0.02],
    "iam": [0.05, 0.1],
    "sts": [0.02, 0.04],
    "eks": [0.03, 0.06],
    "default": [0.001, 0.003],
    "eks-auth": [0.01, 0.02],
}


class Ticks:
    """A clock that moves ``step`` seconds each time it is read: a request stream at a known pace."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# --- the parts, with injected time -----------------------------------------------------------------


def test_latency_waits_the_range_of_the_target_and_records_it() -> None:
    slept: list[float] = []
    latency = Latency(
        {"kubernetes": (0.005, 0.02), "iam": (0.05, 0.1), "default": (0.001, 0.003)},
        sleep=slept.append,
        uniform=lambda low, high: high,
    )
    assert [latency.apply(t) for t in ("kubernetes", "iam", "sqs", "iam")] == [0.02, 0.1, 0.003, 0.1]
    assert slept == [0.02, 0.1, 0.003, 0.1]
    assert latency.count == {"kubernetes": 1, "iam": 2, "sqs": 1}
    assert latency.total["iam"] == pytest.approx(0.2)


def test_latency_default_is_for_aws_services_only_and_off_means_no_sleep() -> None:
    slept: list[float] = []
    latency = Latency({"default": (0.01, 0.01)}, sleep=slept.append)
    assert latency.apply("kubernetes") == 0.0  # the Kubernetes API is no AWS service
    assert latency.apply("s3") == 0.01
    assert slept == [0.01]
    off = Latency({}, sleep=slept.append)
    assert not off.enabled
    assert off.apply("iam") == 0.0
    assert slept == [0.01]


def test_latency_keeps_a_delay_within_its_bounds() -> None:
    slept: list[float] = []
    Latency({"iam": (0.0, 1.0)}, sleep=slept.append, uniform=lambda low, high: 99.0).apply("iam")
    Latency({"iam": (0.0, 1.0)}, sleep=slept.append, uniform=lambda low, high: -1.0).apply("iam")
    assert slept == [MAX_SECONDS, 0.0]


def test_the_bucket_refuses_the_request_over_its_burst_within_a_second_and_refills_at_its_rate() -> None:
    now = [100.0]
    throttle = Throttle(20, 20, clock=lambda: now[0])
    assert [throttle.allow("111122223333") for _ in range(20)] == [True] * 20
    assert throttle.allow("111122223333") is False  # the 21st, in the same instant
    assert throttle.allow("444455556666") is True  # another account has its own bucket
    now[0] += 0.999 / 20  # not yet one token's worth
    assert throttle.allow("111122223333") is False
    now[0] += 0.002 / 20
    assert throttle.allow("111122223333") is True
    assert (throttle.allowed, throttle.refused) == (22, 2)
    now[0] += 60
    assert throttle.buckets["111122223333"].tokens == 20  # never more than the burst


def test_the_burst_defaults_to_one_seconds_worth() -> None:
    assert Throttle(2.5).burst == 3
    assert Throttle(0.2).burst == 1
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0, 1, clock=lambda: 0.0)


# --- IAM's error, as botocore reads it ----------------------------------------------------------------


def _http(status: int, headers: dict[str, str], body: bytes) -> AWSResponse:
    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield body

    return AWSResponse("https://iam.amazonaws.com/", status, headers, Raw())


def test_botocore_reads_the_answer_as_iam_throttling_and_every_retry_mode_retries_it() -> None:
    session = botocore.session.get_session()
    operation = session.get_service_model("iam").operation_model("GetRole")
    answer = iam_throttling()
    headers = {k: v for k, v in answer.headers.items()}
    body = answer.get_data()
    parsed = create_parser("query").parse(
        {"status_code": answer.status_code, "headers": headers, "body": body}, operation.output_shape
    )
    assert answer.status_code == 400
    assert parsed["Error"] == {"Type": "Sender", "Code": "Throttling", "Message": "Rate exceeded"}
    assert parsed["ResponseMetadata"]["RequestId"]
    http = _http(400, headers, body)
    # standard mode retries it by its code; adaptive mode also slows its own client-side rate for it
    context = RetryContext(attempt_number=1, operation_model=operation, parsed_response=parsed, http_response=http)
    assert ThrottledRetryableChecker().is_retryable(context)
    assert ThrottlingErrorDetector(RetryEventAdapter()).is_throttling_error_from_context(context)
    # legacy mode: _retry.json's "throttling" policy (code Throttling, HTTP 400)
    loaded = session.get_component("data_loader").load_data("_retry")
    config = translate.build_retry_config("iam", loaded["retry"], loaded["definitions"])
    checker = retryhandler.create_checker_from_retry_config(config, "GetRole")
    assert checker(attempt_number=1, response=(http, parsed), caught_exception=None, retries_context={})


# --- the sandbox, configured by its profile ---------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = demo_data()
    data["sandbox"]["workloadPods"] = False
    data["sandbox"]["latency"] = RANGES
    data["sandbox"]["throttle"] = {"iam": {"rate": 500, "burst": 400}}
    started = open_sandbox(data, tmp_path_factory.mktemp("latency"), "latency")
    seeded = [e for e in started.sandbox.aws.requests.entries if e.action.startswith("iam:")]
    throttle = started.sandbox.gateway.throttles["iam"]
    # seeding's IAM writes went over HTTP and paid neither: the setting came on after them
    assert len(seeded) > 5, seeded
    assert (started.sandbox.latency.count, throttle.allowed, throttle.refused) == ({}, 0, 0)
    yield started
    close_sandbox(started)


@pytest.fixture
def slept(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sandbox's delays from now on, recorded instead of slept; each the top of its range."""
    recorded: list[float] = []
    monkeypatch.setattr(running.sandbox.latency, "sleep", recorded.append)
    monkeypatch.setattr(running.sandbox.latency, "uniform", lambda low, high: high)
    return recorded


def client(running: Running, service: str, **config: Any) -> Any:
    env = running.sandbox.runner_env
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=running.loaded.profile.cluster.region,
        config=Config(**config),
    )


def test_the_profile_switches_the_setting_on_after_seeding(running: Running) -> None:
    sandbox = running.sandbox
    assert sandbox.latency.ranges["iam"] == (0.05, 0.1)
    assert sandbox.kubeapi.latency is sandbox.latency
    assert sandbox.gateway.latency is sandbox.latency
    throttle = sandbox.gateway.throttles["iam"]
    assert (throttle.rate, throttle.burst) == (500, 400)


def test_each_aws_service_pays_its_own_latency(running: Running, slept: list[float]) -> None:
    cluster = running.loaded.profile.cluster.name
    client(running, "iam").list_roles()
    client(running, "sts").get_caller_identity()
    client(running, "eks").describe_cluster(name=cluster)
    client(running, "sqs").list_queues()  # not named: the default range
    assert slept == [0.1, 0.04, 0.06, 0.003]


def test_the_agents_call_to_eks_auth_pays_eks_auth_latency(running: Running, slept: list[float]) -> None:
    agent = running.sandbox.nodes[0].agent
    assert agent.latency is running.sandbox.latency
    with pytest.raises(Exception, match=r"(?i)token"):  # a token from nowhere: refused, after its round trip
        agent._assume_role_for_pod_identity("e30.e30.e30")
    assert slept == [0.02]


def test_the_unsigned_sts_call_pays_sts_latency(running: Running, slept: list[float]) -> None:
    sts = client(running, "sts")
    with pytest.raises(ClientError):  # a token from nowhere: refused, after its round trip
        sts.assume_role_with_web_identity(
            RoleArn="arn:aws:iam::111122223333:role/x", RoleSessionName="latency", WebIdentityToken="e30.e30.e30"
        )
    assert slept == [0.04]


def _kube(running: Running) -> http.client.HTTPConnection:
    host, port = running.sandbox.kubeapi.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _headers(running: Running) -> dict[str, str]:
    return {"Authorization": f"Bearer {running.sandbox.kubeapi.token}", "Content-Type": "application/json"}


def test_kubernetes_requests_pay_latency_and_a_watch_only_on_being_established(
    running: Running, slept: list[float]
) -> None:
    with closing(_kube(running)) as watch, closing(_kube(running)) as writer:
        watch.request("GET", "/api/v1/namespaces/default/configmaps?watch=1", headers=_headers(running))
        stream = watch.getresponse()
        first = json.loads(stream.readline())  # the existing kube-root-ca.crt, as ADDED
        assert first["type"] == "ADDED"
        assert slept == [0.02]
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "latency-watched"}}
        writer.request("POST", "/api/v1/namespaces/default/configmaps", json.dumps(body), _headers(running))
        created = writer.getresponse()
        assert (created.status, json.loads(created.read())["metadata"]["name"]) == (201, "latency-watched")
        event = json.loads(stream.readline())
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "latency-watched")
        writer.request("DELETE", "/api/v1/namespaces/default/configmaps/latency-watched", headers=_headers(running))
        deleted = writer.getresponse()
        assert (deleted.status, deleted.read() != b"") == (200, True)
        assert json.loads(stream.readline())["type"] == "DELETED"
        assert slept == [0.02, 0.02, 0.02]  # the watch, the create, the delete: not one per event


def test_iam_over_its_rate_answers_throttling_and_boto3_retries_it(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One token a second, one held; every request arrives half a second after the one before (by the bucket's
    # clock, not the wall's): so every other request finds the bucket empty. Standard mode: the other modes
    # classify the answer alike (above), and each retry costs up to a second of real backoff.
    throttle = Throttle(1, 1, clock=Ticks(0.5))
    monkeypatch.setitem(running.sandbox.gateway.throttles, "iam", throttle)
    retrying = client(running, "iam", retries={"mode": "standard", "total_max_attempts": 3})
    assert retrying.list_roles()["ResponseMetadata"]["RetryAttempts"] == 0
    assert retrying.list_roles()["ResponseMetadata"]["RetryAttempts"] == 1  # throttled once, then served
    once = client(running, "iam", retries={"mode": "standard", "total_max_attempts": 1})
    with pytest.raises(ClientError) as raised:
        once.list_roles()
    error = raised.value.response
    assert error["Error"] == {"Type": "Sender", "Code": "Throttling", "Message": "Rate exceeded"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert (throttle.allowed, throttle.refused) == (2, 2)


# --- refused at profile load ----------------------------------------------------------------------------


def _section_error(tmp_path: Path, sandbox: dict[str, Any]) -> str:
    data = demo_data()
    data["sandbox"].update(sandbox)
    path = write_profile(tmp_path, data)
    with pytest.raises(ProfileError) as raised:
        section(load_profile(str(path), REPO))
    return str(raised.value)


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ({"latency": {"kubernets": 0.01}}, "sandbox.latency.kubernets: unknown latency target 'kubernets'; choose"),
        ({"latency": {"iam": [0.1, 0.05]}}, "sandbox.latency.iam: expected 0 <= low <= high <= 10 seconds"),
        ({"latency": {"iam": -0.1}}, "sandbox.latency.iam: expected 0 <= low <= high <= 10 seconds"),
        ({"latency": {"iam": 50}}, "sandbox.latency.iam: expected 0 <= low <= high <= 10 seconds"),
        ({"latency": {"sts": [0.1]}}, "sandbox.latency.sts: expected seconds per request: a number or [low, high]"),
        ({"latency": {"sts": "fast"}}, "sandbox.latency.sts: expected seconds per request"),
        ({"latency": {"eks": True}}, "sandbox.latency.eks: expected seconds per request"),
        ({"throttle": {"iam": {"rate": 0}}}, "sandbox.throttle.iam.rate:"),
        ({"throttle": {"iam": {"rate": 20, "burst": 0}}}, "sandbox.throttle.iam.burst:"),
        ({"throttle": {"sts": {"rate": 20}}}, "sandbox.throttle.sts:"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tmp_path: Path, sandbox: dict[str, Any], expected: str) -> None:
    assert expected in _section_error(tmp_path, sandbox)


def test_the_setting_is_off_by_default() -> None:
    default = SandboxSection()
    assert default.latency == {}
    assert default.throttle.iam is None
    assert not Latency(default.latency).enabled
