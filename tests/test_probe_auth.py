"""A probe result counts only when it is authentic: from the pod the runner created, with an identity
STS confirmed for the runner's own nonce. Here a tenant forges results and swaps pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_eksid.aws import Aws, IdentityNotProven, _proof_query, proof_endpoints
from pytest_eksid.checks.identity import caller_role, credential_provider, wrong_caller
from pytest_eksid.kube import Kube, KubeTarget
from pytest_eksid.probe import program
from pytest_eksid.probe.pod import Campaign, PodWatch, ProbeOutcome
from pytest_eksid.redact import redact_text
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest
from tests.tenant import swap

ENDPOINT = "https://sts.eu-west-1.amazonaws.com"
GOOD = (
    "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20261204%2Feu-west-1%2Fsts%2Faws4_request"
    "&X-Amz-Date=20261204T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-eksid-nonce&X-Amz-Signature=ab"
)


def test_a_proof_for_this_runners_sts_endpoint_is_sent_there():
    endpoint, query = _proof_query(GOOD, proof_endpoints(ENDPOINT, "eu-west-1"))
    assert endpoint == ENDPOINT
    assert query.startswith("Action=GetCallerIdentity")
    # The legacy global endpoint is AWS's too.
    assert _proof_query(GOOD.replace("sts.eu-west-1.", "sts."), proof_endpoints(ENDPOINT, "eu-west-1"))[0] == (
        "https://sts.amazonaws.com"
    )
    # A runner that reaches STS at its own VPC endpoint name still takes a proof for AWS's standard name.
    vpce = "https://vpce-0abc.sts.eu-west-1.vpce.amazonaws.com"
    assert _proof_query(GOOD, proof_endpoints(vpce, "eu-west-1"))[0] == ENDPOINT
    # In the sandbox (a loopback endpoint), AWS's own names are allowed too, no one else's.
    assert proof_endpoints("http://127.0.0.1:5000", "eu-west-1") == (
        "http://127.0.0.1:5000",
        ENDPOINT,
        "https://sts.amazonaws.com",
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (GOOD.replace("sts.eu-west-1.amazonaws.com", "attacker.example"), "another endpoint"),
        (GOOD.replace("https://", "http://"), "another endpoint"),
        (GOOD.replace("amazonaws.com/", "amazonaws.com:8443/"), "another endpoint"),
        (GOOD.replace("https://", "https://user@"), "another endpoint"),
        (GOOD.replace("GetCallerIdentity", "AssumeRole"), "not a presigned sts:GetCallerIdentity"),
        (GOOD.replace("%3Bx-eksid-nonce", ""), "does not sign the x-eksid-nonce header"),
        (GOOD.replace("%2Fsts%2F", "%2Fs3%2F"), "not signed for STS"),
        (GOOD + "&Action=GetCallerIdentity", "repeats a query parameter"),
    ],
)
def test_a_proof_not_for_this_runners_sts_is_refused_before_anything_is_sent(url, why):
    with pytest.raises(IdentityNotProven, match=why) as raised:
        _proof_query(url, proof_endpoints(ENDPOINT, "eu-west-1"))
    assert "X-Amz-Signature" not in str(raised.value)


def _campaign(prove: Any) -> Campaign:
    return Campaign(kube=None, profile=None, prove=prove)  # type: ignore[arg-type]


def _forged(proof: str | None) -> ProbeOutcome:
    w = demo_data_workload()
    identity: dict[str, Any] = {
        "method": "container-role",
        "caller": {"arn": "arn:aws:sts::111122223333:assumed-role/demo-invoice-exporter/forged"},
    }
    if proof is not None:
        identity["proof"] = proof
    result = {"identity": identity, "actions": []}
    return ProbeOutcome(w, result=result, log=program.RESULT_MARKER + json.dumps(result))


def demo_data_workload() -> Any:
    from pytest_eksid.profile import Profile

    return Profile.model_validate(demo_data()).workloads[0]


def test_a_forged_result_without_proof_fails_every_identity_check():
    from pytest_eksid.profile import Profile

    profile = Profile.model_validate(demo_data())
    called: list[str] = []
    outcome = _forged(None)
    _campaign(lambda url, nonce: called.append(url) or {})._authenticate(outcome, "n")
    assert called == []
    ident = outcome.identity
    assert ident["caller"] is None
    assert "identity not proven: " in ident["proof_error"]
    for finding in (
        caller_role(profile, outcome.workload, ident),
        credential_provider(profile, outcome.workload, ident),
    ):
        assert finding is not None
        assert "identity not proven" in finding.seen
    assert "identity not proven" in (wrong_caller(outcome.workload, ident) or "")


def test_the_caller_is_the_one_sts_names_and_the_proof_leaves_result_and_log():
    outcome = _forged(GOOD)
    seen: list[tuple[str, str]] = []

    def prove(url: str, nonce: str) -> dict[str, str]:
        seen.append((url, nonce))
        return {"arn": "arn:aws:sts::111122223333:assumed-role/other/s", "account": "111122223333", "user_id": "x"}

    _campaign(prove)._authenticate(outcome, "the-nonce")
    assert seen == [(GOOD, "the-nonce")]
    assert outcome.identity["caller"]["arn"].endswith("assumed-role/other/s")  # not the claimed one
    assert "proof" not in outcome.identity
    assert GOOD not in outcome.log


def test_a_presigned_url_is_redacted():
    assert "X-Amz-Signature=ab" not in redact_text(f"see {GOOD} here")
    assert "X-Amz-Security-Token" not in redact_text(GOOD + "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjE")


# --- in the sandbox, over the real STS and Kubernetes clients ------------------------------------


def _only_exporter(data: dict[str, Any]) -> dict[str, Any]:
    data["workloads"] = [w for w in data["workloads"] if w["name"] == "invoice-exporter"]
    return data


def _aws(run: Any) -> Aws:
    return Aws(region=run.loaded.profile.cluster.region, env=run.connection.env)


def test_a_genuine_probe_is_proven_by_sts(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))
    aws = _aws(run)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, prove=aws.prove_caller)
    outcome = campaign.run(run.loaded.profile.workloads)["invoice-exporter"]
    campaign.cleanup()
    assert outcome.error is None, outcome.error
    assert outcome.identity["proven"] is True, outcome.identity
    assert outcome.identity["caller"]["arn"].startswith("arn:aws:sts::111122223333:assumed-role/demo-invoice-exporter/")
    assert caller_role(run.loaded.profile, outcome.workload, outcome.identity) is None
    assert "X-Amz-Signature" not in outcome.log
    assert "proof" not in outcome.identity


def test_a_proof_for_another_nonce_is_refused_by_sts(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))
    aws = _aws(run)
    urls: list[str] = []
    nonces: list[str] = []

    def keep(url: str, nonce: str) -> dict[str, str]:
        urls.append(url)
        nonces.append(nonce)
        return aws.prove_caller(url, nonce)

    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, prove=keep)
    campaign.run(run.loaded.profile.workloads)
    campaign.cleanup()
    assert aws.prove_caller(urls[0], nonces[0])["arn"]  # the right nonce is accepted (within the URL's minute)
    with pytest.raises(IdentityNotProven, match="SignatureDoesNotMatch"):
        aws.prove_caller(urls[0], "another-pods-nonce")


@pytest.mark.parametrize("when", ["pending", "running", "after-success"])
def test_a_pod_swapped_by_a_tenant_gives_no_result(start_sandbox, monkeypatch, request, when):
    run = start_sandbox(_only_exporter(demo_data()))
    tenant = Kube(KubeTarget(str(run.connection.kubeconfig), None))
    request.addfinalizer(tenant.close)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, prove=_aws(run).prove_caller)
    swapped: list[str] = []
    real_create, real_log = run.kube.create_pod, run.kube.pod_log

    def create_then_swap(namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        pod = real_create(namespace, manifest)
        swapped.append(swap(tenant, namespace, pod["metadata"]["name"], wait_done=False))
        return pod

    def swap_then_log(namespace: str, name: str, tail_lines: int | None = None) -> str:
        swapped.append(swap(tenant, namespace, name, wait_done=True))
        return real_log(namespace, name, tail_lines)

    real_read = PodWatch.read  # how the campaign sees its pods (by watch)

    def swap_when_running(self: PodWatch, namespace: str, name: str, since: float) -> dict[str, Any]:
        pod = real_read(self, namespace, name, since)
        if not swapped and (pod.get("status") or {}).get("phase") == "Running":
            swapped.append(swap(tenant, namespace, name, wait_done=False))
        return pod

    if when == "pending":
        monkeypatch.setattr(run.kube, "create_pod", create_then_swap)
    elif when == "running":  # the probe waits out IMDS's 2 s timeouts: the runner sees it Running
        monkeypatch.setattr(PodWatch, "read", swap_when_running)
    else:
        monkeypatch.setattr(run.kube, "pod_log", swap_then_log)
    outcome = campaign.run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is not None
    assert "replaced by another party" in outcome.error, outcome
    assert f"uid {swapped[0]}" in outcome.error
    # Cleanup does not delete the tenant's pod blindly: the UID precondition keeps it.
    assert campaign.cleanup() == []
    assert tenant.read_pod(outcome.workload.namespace, outcome.pod)["metadata"]["uid"] == swapped[0]
    tenant.close()


def test_in_a_suite_run_every_probe_based_test_of_a_swapped_workload_fails(tmp_path):
    """The tenant swaps each of invoice-exporter's probe pods after it succeeded, before its log is read:
    every identity, permission and other probe-based test of that workload fails, the other workload passes."""
    from tests.test_faults import PI, demo_target, every_probe_test

    run = run_pytest(
        f"--profile={write_profile(tmp_path, demo_data(), 'fault')}",
        "-p",
        "tests.tenant",
        tmp_path=tmp_path,
        env={"TENANT_SWAP_WORKLOAD": PI},
    )
    assert "INTERNALERROR" not in run.stdout + run.stderr
    expected = every_probe_test(demo_target("fault", PI), "probe pod replaced by another party (uid ")
    assert set(run.failed()) == set(expected), run.stdout[-4000:]
    for test, phrases in expected.items():
        for phrase in phrases:
            assert phrase in run.messages[test], run.messages[test]
    assert "X-Amz-Signature" not in run.stdout + run.stderr


def test_the_probe_presigns_get_caller_identity_with_the_nonce_signed(monkeypatch):
    from urllib.parse import parse_qs, urlsplit

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s" * 40)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t" * 60)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)
    program._SESSIONS.clear()
    url = program.prove_identity({"region": "eu-west-1", "nonce": "n-1"})
    program._SESSIONS.clear()
    query = parse_qs(urlsplit(url).query)
    assert query["Action"] == ["GetCallerIdentity"]
    assert query["X-Amz-Expires"] == [str(program.PROOF_SECONDS)]
    assert "x-eksid-nonce" in query["X-Amz-SignedHeaders"][0].split(";")
    assert "n-1" not in url  # the nonce is signed as a header, not carried in the URL
    assert _proof_query(url, proof_endpoints(ENDPOINT, "eu-west-1"))[0] in proof_endpoints(ENDPOINT, "eu-west-1")
