"""CloudTrail shows the expected identity: the pure check, the sandbox's event history, and two runs end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from pytest_eksid import cloudtrail
from pytest_eksid.checks.cloudtrail import LAG, Recorded, cloudtrail_identity
from pytest_eksid.profile import Workload
from pytest_eksid.sandbox.trail import Trail, TrailError
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest
from tests.helpers.sandboxes import sa_token

ACCOUNT = "111122223333"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/exporter"
OTHER = f"arn:aws:iam::{ACCOUNT}:role/reporting"
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def workload(mechanism: str) -> Workload:
    return Workload.model_validate(
        {
            "name": "exporter",
            "namespace": "finance",
            "serviceAccount": "exporter-sa",
            "mechanism": mechanism,
            "roleArn": ROLE,
        }
    )


def recorded(mechanism: str, role: str = ROLE) -> Recorded:
    name = role.rsplit("/", 1)[-1]
    return Recorded(
        run_id="20261207120000-abc123",
        probed_at=T0,
        session_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/eks-demo-probe-1",
        pod="eksid-probe-exporter-x1",
        namespace="finance",
        service_account="exporter-sa",
        mechanism=mechanism,
    )


def assume_event(rec: Recorded, *, name: str, role: str, user: str | None = None, tags: dict[str, str] | None = None):
    detail: dict[str, Any] = {
        "eventName": name,
        "userIdentity": {"type": "WebIdentityUser", "userName": user}
        if user
        else {"type": "AWSService", "invokedBy": "pods.eks.amazonaws.com"},
        "requestParameters": {"roleArn": role, "roleSessionName": rec.session_name}
        | ({"tags": [{"key": k, "value": v} for k, v in tags.items()]} if tags else {}),
        "responseElements": {"assumedRoleUser": {"arn": rec.session_arn}},
    }
    return {"EventName": name, "CloudTrailEvent": json.dumps(detail)}


TAGS = {
    "kubernetes-namespace": "finance",
    "kubernetes-service-account": "exporter-sa",
    "kubernetes-pod-name": "eksid-probe-exporter-x1",
}
SUB = "system:serviceaccount:finance:exporter-sa"


def check(mechanism: str, events: list[dict[str, Any]], *, now: datetime = T0 + timedelta(hours=2), calls=()):
    return cloudtrail_identity(
        "eu-west-1", workload(mechanism), recorded(mechanism), events, list(calls), truncated=False, now=now
    )


def test_expected_sessions_pass():
    rec = recorded("irsa")
    assert check("irsa", [assume_event(rec, name="AssumeRoleWithWebIdentity", role=ROLE, user=SUB)]) == (None, None)
    rec = recorded("pod-identity")
    assert check("pod-identity", [assume_event(rec, name="AssumeRole", role=ROLE, tags=TAGS)]) == (None, None)
    # An association with disableSessionTags: no tags to compare, not a failure.
    assert check("pod-identity", [assume_event(rec, name="AssumeRole", role=ROLE)]) == (None, None)


def test_another_role_fails_with_the_query():
    rec = recorded("pod-identity")
    finding, why = check("pod-identity", [assume_event(rec, name="AssumeRole", role=OTHER, tags=TAGS)])
    assert why is None
    assert finding is not None
    assert f"role {OTHER}, not {ROLE}" in finding.seen
    assert finding.next_steps[0] == (
        "aws cloudtrail lookup-events --region eu-west-1 --lookup-attributes "
        f"AttributeKey=ResourceName,AttributeValue={rec.session_arn} "
        "--start-time 2026-12-07T11:50:00Z --end-time 2026-12-07T13:00:00Z"
    )


def test_another_subject_or_tags_fail():
    rec = recorded("irsa")
    finding, _ = check(
        "irsa", [assume_event(rec, name="AssumeRoleWithWebIdentity", role=ROLE, user="system:serviceaccount:x:y")]
    )
    assert finding is not None
    assert "web identity system:serviceaccount:x:y" in finding.seen
    rec = recorded("pod-identity")
    finding, _ = check(
        "pod-identity", [assume_event(rec, name="AssumeRole", role=ROLE, tags=TAGS | {"kubernetes-namespace": "other"})]
    )
    assert finding is not None
    assert "session tag kubernetes-namespace=other, not finance" in finding.seen

    def call(arn: str) -> dict[str, Any]:
        identity = {"arn": arn, "sessionContext": {"sessionIssuer": {"arn": OTHER}}}
        return {"EventName": "Decrypt", "CloudTrailEvent": json.dumps({"userIdentity": identity})}

    assumed = [assume_event(rec, name="AssumeRole", role=ROLE, tags=TAGS)]
    finding, _ = check("pod-identity", assumed, calls=[call(rec.session_arn)])
    assert finding is not None
    assert f"Decrypt made as role {OTHER}" in finding.seen
    # Looked up by session name, which another session may share (IRSA's botocore-session-<epoch seconds>):
    # only this session's own calls count.
    namesake = rec.session_arn.replace("assumed-role/", "assumed-role/other-")
    assert check("pod-identity", assumed, calls=[call(namesake)]) == (None, None)


def test_missing_events_fail_when_old_and_are_inconclusive_while_young():
    finding, why = check("irsa", [])
    assert why is None
    assert finding is not None
    assert "no AssumeRoleWithWebIdentity event" in finding.summary
    assert finding.next_steps[0].startswith("aws cloudtrail lookup-events --region eu-west-1 --lookup-attributes")
    finding, why = check("irsa", [], now=T0 + LAG - timedelta(seconds=1))
    assert finding is None
    assert why is not None
    assert "run again later" in why


def test_trail_lookup_pages_lag_and_refusals(tmp_path):
    clock = [1000.0]
    trail = Trail(clock=lambda: clock[0], lag=60, path=str(tmp_path / "trail.jsonl"))
    for i in range(3):
        trail.record(
            event_name=f"E{i}",
            event_source="sts.amazonaws.com",
            user_identity={},
            username="s",
            resources=[("AWS::IAM::Role", ROLE)],
        )
        clock[0] += 1
    request = {"LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": ROLE}]}
    assert trail.lookup(request)["Events"] == []  # not delivered yet
    clock[0] += 60
    first = trail.lookup(request | {"MaxResults": 2})
    assert [e["EventName"] for e in first["Events"]] == ["E2", "E1"]
    rest = trail.lookup(request | {"MaxResults": 2, "NextToken": first["NextToken"]})
    assert [e["EventName"] for e in rest["Events"]] == ["E0"]
    assert "NextToken" not in rest
    # A later sandbox (the next run) reads the same history back from the file.
    again = Trail(clock=lambda: clock[0], lag=0, path=str(tmp_path / "trail.jsonl"))
    assert len(again.lookup({})["Events"]) == 3
    for bad, code in (
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"StartTime": 5, "EndTime": 1}, "InvalidTimeRangeException"),
        ({"LookupAttributes": [{"AttributeKey": "Nope", "AttributeValue": "x"}]}, "InvalidLookupAttributesException"),
    ):
        with pytest.raises(TrailError) as info:
            trail.lookup(bad)
        assert info.value.code == code


def test_state_file_keeps_other_entries_and_refuses_garbage(tmp_path):
    state = tmp_path / "state.json"
    assert cloudtrail.previous(state, "demo/exporter") is None
    cloudtrail.record(state, "demo/a", recorded("irsa"))
    cloudtrail.record(state, "demo/b", recorded("pod-identity"))
    assert cloudtrail.previous(state, "demo/a") == recorded("irsa")
    assert cloudtrail.previous(state, "demo/b") == recorded("pod-identity")
    state.write_text("[]")
    with pytest.raises(cloudtrail.StateError, match="not a CloudTrail state file"):
        cloudtrail.previous(state, "demo/a")


CT = "suites/test_cloudtrail.py::test_cloudtrail_identity"


def _run(tmp_path: Path, name: str, profile: Path, state: Path, trail: Path, *args: str):
    out = tmp_path / name
    out.mkdir()
    return run_pytest(
        f"--profile={profile}",
        f"--eksid-cloudtrail={state}",
        CT,
        *args,
        tmp_path=out,
        env={"EKSID_SANDBOX_CLOUDTRAIL": str(trail), "EKSID_SANDBOX_CLOUDTRAIL_LAG": "0"},
    )


def test_previous_run_shows_in_cloudtrail_on_the_sandbox(tmp_path):
    """Run 1 under wrong-role records its sessions; run 2 (clean) finds them in CloudTrail as the wrong role and
    fails naming the query; run 3 (under xdist) finds run 2's clean sessions and passes, and records its own."""
    clean = demo_data()
    faulted = demo_data()
    faulted["sandbox"]["faults"] = [{"fault": "wrong-role", "workload": "invoice-exporter", "role": "demo-reporting"}]
    (tmp_path / "p").mkdir()
    clean_profile = write_profile(tmp_path / "p", clean, "demo")
    (tmp_path / "f").mkdir()
    faulted_profile = write_profile(tmp_path / "f", faulted, "demo")
    state, trail = tmp_path / "state.json", tmp_path / "trail.jsonl"

    first = _run(tmp_path, "run1", faulted_profile, state, trail)
    assert set(first.outcomes.values()) == {"skipped"}, first.stdout[-4000:]
    assert "no earlier run recorded" in first.messages[f"{CT}[demo/invoice-exporter]"]
    assert f"eksid: cloudtrail state {state} (from --eksid-cloudtrail)" in first.stdout

    second = _run(tmp_path, "run2", clean_profile, state, trail)
    assert second.outcomes[f"{CT}[demo/invoice-exporter]"] == "failed", second.stdout[-4000:]
    assert second.outcomes[f"{CT}[demo/billing-worker]"] == "passed", second.stdout[-4000:]
    message = second.messages[f"{CT}[demo/invoice-exporter]"]
    assert "CloudTrail shows the previous run's probe session as another identity" in message
    assert (
        f"role arn:aws:iam::{ACCOUNT}:role/demo-reporting, not arn:aws:iam::{ACCOUNT}:role/demo-invoice-exporter"
        in message
    )
    assert "aws cloudtrail lookup-events --region eu-west-1 --lookup-attributes AttributeKey=ResourceName," in message

    third = _run(tmp_path, "run3", clean_profile, state, trail, "-n", "2")  # xdist workers share the state file
    assert set(third.outcomes.values()) == {"passed"}, third.stdout[-4000:]
    sessions = json.loads(state.read_text())["sessions"]
    assert sorted(sessions) == ["demo/billing-worker", "demo/invoice-exporter"]
    assert sessions["demo/invoice-exporter"]["session_arn"].startswith(
        f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-invoice-exporter/eks-demo-eksid-probe-invoice-exporter-"
    )


def test_without_the_option_the_check_is_not_collected(tmp_path):
    run = run_pytest("--profile=demo", "--collect-only", "-q", "suites/test_cloudtrail.py", tmp_path=tmp_path)
    assert "2 deselected" in run.stdout, run.stdout[-2000:]
    with_option = run_pytest(
        "--profile=demo", f"--eksid-cloudtrail={tmp_path / 's.json'}", "--collect-only", "-q", CT, tmp_path=tmp_path
    )
    assert f"{CT}[demo/invoice-exporter]" in with_option.stdout, with_option.stdout[-2000:]
    assert not (tmp_path / "s.json").exists()  # collecting writes nothing


def _client(running, service: str, keys: dict[str, str] | None = None, **kw: Any):
    env = running.connection.env
    keys = keys or {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    return boto3.client(service, region_name="eu-west-1", endpoint_url=env["AWS_ENDPOINT_URL"], **keys, **kw)


def test_sandbox_lookup_events_over_http(start_sandbox):
    """A web identity session, then its own call: both in LookupEvents as AWS shapes them; a role without
    cloudtrail:LookupEvents is refused."""
    running = start_sandbox(demo_data())
    role = f"arn:aws:iam::{ACCOUNT}:role/demo-billing-worker"
    token = sa_token(running, "billing-demo", "billing-worker-aws-sa")
    sts = _client(running, "sts", {}, config=Config(signature_version=UNSIGNED))
    answer = sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="ct-test", WebIdentityToken=token)
    session_arn = answer["AssumedRoleUser"]["Arn"]
    c = answer["Credentials"]
    keys = {
        "aws_access_key_id": c["AccessKeyId"],
        "aws_secret_access_key": c["SecretAccessKey"],
        "aws_session_token": c["SessionToken"],
    }
    _client(running, "sts", keys).get_caller_identity()
    trail = _client(running, "cloudtrail")
    found = trail.lookup_events(LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": session_arn}])
    [event] = found["Events"]
    record = json.loads(event["CloudTrailEvent"])
    assert (event["EventName"], event["Username"]) == (
        "AssumeRoleWithWebIdentity",
        "system:serviceaccount:billing-demo:billing-worker-aws-sa",
    )
    assert record["userIdentity"]["type"] == "WebIdentityUser"
    assert record["requestParameters"] == {"roleArn": role, "roleSessionName": "ct-test", "durationSeconds": 3600}
    calls = trail.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "ct-test"}])["Events"]
    assert [e["EventName"] for e in calls] == ["GetCallerIdentity"]
    issuer = json.loads(calls[0]["CloudTrailEvent"])["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    assert issuer == role
    with pytest.raises(ClientError) as refused:
        _client(running, "cloudtrail", keys).lookup_events()
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "cloudtrail:LookupEvents" in refused.value.response["Error"]["Message"]
