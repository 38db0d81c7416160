"""A cluster or AWS that does not answer: every check fails at once with one message a person can act on,
instead of a urllib3 traceback per test and minutes of retries per call."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import EndpointConnectionError, NoCredentialsError

from pytest_eksid.aws import Aws, AwsError
from pytest_eksid.kube import Kube, KubeTarget, KubeUnreachable
from tests.helpers import REPO
from tests.helpers.endpoints import Endpoint
from tests.helpers.runs import run_pytest


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    return path


_NO_AWS: dict[str, str | None] = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/eksid-no-credentials",
    "AWS_CONFIG_FILE": "/nonexistent/eksid-no-config",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "COLUMNS": "4000",  # whole messages in the short summary
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_connect_timeout_makes_the_server_unreachable_and_later_calls_are_not_tried(
    tmp_path: Path, blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = Kube(KubeTarget(str(_kubeconfig(tmp_path / "kubeconfig", blackhole)), "gone"), timeout=0.3)
    with pytest.raises(KubeUnreachable) as first:
        kube.secrets("finance-prod")
    message = str(first.value)
    assert message.startswith("list secrets in finance-prod: cannot reach the Kubernetes API server " + blackhole)
    assert "no connection within 0.3s" in message
    assert f"kubectl --kubeconfig {tmp_path / 'kubeconfig'} --context gone get --raw /version" in message
    tried: list[str] = []
    monkeypatch.setattr(kube.api_client.rest_client, "request", lambda *a, **k: tried.append("request"))
    with pytest.raises(KubeUnreachable, match=r"^read pod finance-prod/p: cannot reach the Kubernetes API server"):
        kube.read_pod("finance-prod", "p")
    assert tried == []  # failed at once, without trying
    kube.close()


def test_a_server_that_never_answers_is_unreachable_after_the_first_call(tmp_path: Path, silent: Endpoint) -> None:
    # It accepts connections and stays silent: each call would cost the whole timeout, for the whole run.
    kube = Kube(KubeTarget(str(_kubeconfig(tmp_path / "kubeconfig", silent.url)), "gone"), timeout=0.3)
    with pytest.raises(KubeUnreachable) as first:
        kube.secrets("finance-prod")
    assert first.value.sent  # the request went out: a create may have happened
    message = str(first.value)
    assert message.startswith(f"list secrets in finance-prod: cannot reach the Kubernetes API server {silent.url}")
    assert "no answer within 0.3s" in message
    assert "later calls of this run are not tried" in message
    assert silent.accepted == 2  # a GET whose answer did not come is tried once more
    with pytest.raises(KubeUnreachable, match=r"^read pod finance-prod/p: cannot reach"):
        kube.read_pod("finance-prod", "p")
    assert silent.accepted == 2  # and the next call is not tried at all
    kube.close()


def test_suites_against_a_silent_api_server_stop_calling_it_after_the_first_timeout(
    tmp_path: Path, silent: Endpoint
) -> None:
    profile = yaml.safe_load((REPO / "profiles" / "finance-prod.yaml").read_text())
    profile["cluster"]["kubeconfig"] = str(_kubeconfig(tmp_path / "kubeconfig", silent.url))
    profile["cluster"]["kubeContext"] = "gone"
    (tmp_path / "silent.yaml").write_text(yaml.safe_dump(profile))
    run = run_pytest(
        f"--profile={tmp_path / 'silent.yaml'}", "--eksid-api-timeout=1", "-rfE", tmp_path=tmp_path, env=_NO_AWS
    )
    assert run.outcomes, run.stdout
    summary = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    kube_failures = [line for line in summary if "cannot reach the Kubernetes API server" in line]
    assert len(kube_failures) >= 10, run.stdout
    assert "no answer within 1s" in run.stdout
    assert "Traceback" not in run.stdout, run.stdout
    # Only what was in flight before the first timeout reached the server: the probe pods' creates (sent
    # at once), the first read and its one retry; every later call failed untried.
    targets = len(profile["workloads"]) * (1 + len(profile["probe"].get("nodeGroups", [])))
    assert silent.accepted <= targets + 4, (silent.accepted, run.stdout)


def test_refused_connection_is_retried_then_named(tmp_path: Path) -> None:
    port = _closed_port()
    kube = Kube(KubeTarget(str(_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")), None), timeout=5)
    with pytest.raises(KubeUnreachable, match=r"Connection refused \(at \d\d:\d\d:\d\d; later calls"):
        kube.nodes()
    kube.close()


def test_deleting_probe_pods_still_tries_after_the_api_server_was_unreachable(
    tmp_path: Path, blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = Kube(KubeTarget(str(_kubeconfig(tmp_path / "kubeconfig", blackhole)), None), timeout=0.3)
    with pytest.raises(KubeUnreachable):
        kube.read_pod("ns", "p")
    tried: list[str] = []
    real = kube.api_client.rest_client.pool_manager.request
    monkeypatch.setattr(
        kube.api_client.rest_client.pool_manager,
        "request",
        lambda *a, **k: (tried.append("request"), real(*a, **k))[1],
    )
    with pytest.raises(KubeUnreachable, match=r"^delete pod ns/p: "):
        kube.delete_pod("ns", "p")
    assert tried == ["request"]  # cleanup is worth one more try: the server may be back
    kube.close()


def test_aws_that_cannot_be_reached_is_tried_once() -> None:
    aws = Aws(region="eu-west-1")
    calls: list[str] = []

    def unreachable() -> None:
        calls.append("try")
        raise EndpointConnectionError(endpoint_url="https://iam.amazonaws.com/")

    with pytest.raises(AwsError, match=r"^iam\.GetRole: cannot reach AWS in eu-west-1: Could not connect"):
        aws._cached(("iam", "GetRole", "r"), unreachable)
    with pytest.raises(AwsError, match=r"^eks\.DescribeCluster: cannot reach AWS in eu-west-1: .*not tried"):
        aws._cached(("eks", "DescribeCluster", "c"), unreachable)
    assert calls == ["try"]


def test_a_runner_without_aws_credentials_is_told_how_to_get_some() -> None:
    aws = Aws(region="eu-west-1")

    def no_credentials() -> None:
        raise NoCredentialsError()

    with pytest.raises(AwsError, match=r"^sts\.GetCallerIdentity: the runner has no AWS credentials: .*AWS_PROFILE"):
        aws._cached(("sts", "GetCallerIdentity"), no_credentials)


def test_suites_against_an_unreachable_cluster_fail_at_once_with_one_message(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "profiles" / "finance-prod.yaml").read_text())
    server = f"http://127.0.0.1:{_closed_port()}"
    profile["cluster"]["kubeconfig"] = str(_kubeconfig(tmp_path / "kubeconfig", server))
    profile["cluster"]["kubeContext"] = "gone"
    (tmp_path / "gone.yaml").write_text(yaml.safe_dump(profile))
    run = run_pytest(f"--profile={tmp_path / 'gone.yaml'}", "-rfE", tmp_path=tmp_path, env=_NO_AWS)
    assert run.outcomes, run.stdout
    # Every check that reaches the cluster fails; the profile's own contract check reaches nothing.
    reaching = {k: v for k, v in run.outcomes.items() if "::test_contract_declared[" not in k}
    assert set(reaching.values()) == {"failed", "error"}, run.stdout
    summary = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert summary
    for line in summary:
        assert "cannot reach the Kubernetes API server" in line or "the runner has no AWS credentials" in line, line
    assert "Traceback" not in run.stdout, run.stdout
    assert "urllib3.exceptions" not in run.stdout, run.stdout
    # The first call found the server gone; every other check failed with its message, untried.
    assert run.stdout.count("later calls of this run are not tried") >= len(summary) - 3, run.stdout


@pytest.mark.parametrize("broken", ["newline-in-token", "garbage-file"])
def test_a_kubeconfig_that_cannot_be_used_fails_with_one_message_naming_it(tmp_path: Path, broken: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    token = "k8s-aws-v1.c2VjcmV0LXRva2Vu"
    if broken == "newline-in-token":  # a token pasted with its line break
        data = yaml.safe_load(_kubeconfig(kubeconfig, f"http://127.0.0.1:{_closed_port()}").read_text())
        data["users"][0]["user"]["token"] = f"{token}\nsecond-line"
        kubeconfig.write_text(yaml.safe_dump(data))
    else:
        kubeconfig.write_bytes(b"\x00\x01" + token.encode() + b" not: [a kubeconfig\n")
    profile = yaml.safe_load((REPO / "profiles" / "finance-prod.yaml").read_text())
    profile["cluster"]["kubeconfig"] = str(kubeconfig)
    profile["cluster"]["kubeContext"] = "gone"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(profile))
    run = run_pytest(f"--profile={tmp_path / 'broken.yaml'}", "-rfE", tmp_path=tmp_path, env=_NO_AWS)
    assert run.outcomes, run.stdout
    summary = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    kube_failures = [line for line in summary if "kubeconfig (context gone of " + str(kubeconfig) in line]
    assert len(kube_failures) >= 10, run.stdout
    assert len({line.partition(" - ")[2] for line in kube_failures}) == 1, kube_failures  # one message
    assert "Traceback" not in run.stdout, run.stdout
    assert "INTERNALERROR" not in run.stdout + run.stderr, run.stdout
    assert token not in run.stdout + run.stderr
