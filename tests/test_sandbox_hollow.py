"""Hollow nodes (``sandbox.hollowNodes``): probe pods of one template run the real probe once; the others
run no process, and their results are adapted per pod. Phases, the per-pod proof, verdicts equal to
real probes', and a fault still caught. No timed assertion: the start latency runs on an injected clock."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pytest_eksid.aws import Aws, IdentityNotProven
from pytest_eksid.checks.identity import caller_role, role_of
from pytest_eksid.probe import program
from pytest_eksid.probe.pod import Campaign, ProbeOutcome, bind_nonce, parse_result, probe_pod_manifest
from pytest_eksid.profile import load_profile, role_arn_parts
from pytest_eksid.sandbox.hollow import HOLLOW_NOTE, HollowProbes, Timers, probe_plan, template_key
from pytest_eksid.sandbox.node import Kubelet
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox

COPIES = 2  # each demo workload twice: one template, a real probe and a hollow pod


def clones(
    *, hollow: bool, faults: list[dict[str, Any]] | None = None, own: bool = False, copies: int = COPIES
) -> dict[str, Any]:
    """The demo profile with each workload cloned (same namespace and plan), on one node group (the probe of
    each clone lands on the same node: one template per workload). ``own``: each clone has its own
    ServiceAccount and its own IAM role (a copy of the demo's policy), as real clusters and the bench have
    them; else the clones share the workload's."""
    data = demo_data()
    roles = {r["name"]: r for r in data["sandbox"]["roles"]}
    workloads = []
    for w in data["workloads"]:
        for i in range(copies):
            clone = dict(w, name=f"{w['name']}-{i}")
            if own:
                prefix, _, role = w["roleArn"].rpartition("/")
                clone.update(serviceAccount=f"{w['serviceAccount']}-{i}", roleArn=f"{prefix}/{role}-{i}")
                data["sandbox"]["roles"].append(dict(copy.deepcopy(roles[role]), name=f"{role}-{i}"))
            workloads.append(clone)
    data["workloads"] = workloads
    data["probe"].pop("nodeGroups", None)
    data["sandbox"].update(nodegroups=["ng-general"], workloadPods=False, hollowNodes=hollow, faults=faults or [])
    return data


def campaign(run: Running) -> dict[str, ProbeOutcome]:
    aws = Aws(region=run.loaded.profile.cluster.region, env=run.connection.env)
    probes = Campaign(kube=run.kube, profile=run.loaded.profile, prove=aws.prove_caller)
    try:
        return dict(probes.run(run.loaded.profile.workloads))
    finally:
        probes.cleanup()


def verdicts(run: Running, outcomes: dict[str, ProbeOutcome]) -> dict[str, Any]:
    """What the suites' verdicts are made of, per workload: the proven role and the caller_role check,
    the credential method, each action's outcome, the agent's and IMDS's outcomes."""
    profile = run.loaded.profile
    out: dict[str, Any] = {}
    for w in profile.workloads:
        o = outcomes[w.name]
        assert o.error is None, o.error
        identity = o.identity
        claimed: dict[str, Any] = dict(identity.get("caller") or {})
        imds: dict[str, Any] = dict(o.imds)
        finding = caller_role(profile, w, identity)
        out[w.name] = {
            "role": role_of(str(claimed.get("arn") or "")),
            "proven": identity.get("proven"),
            "caller_role": None if finding is None else finding.summary,
            "method": identity.get("method"),
            "actions": [(a["id"], a["outcome"], a.get("policy_type")) for a in o.actions],
            "agent": (o.agent.get("outcome"), o.agent.get("http_status"), o.agent.get("error_code")),
            "imds": {v: (imds.get(v) or {}).get("outcome") for v in ("v1", "v2")},
        }
    return out


def test_timers_run_a_callback_when_due_and_not_before() -> None:
    now = [100.0]
    timers = Timers(clock=lambda: now[0], threaded=False)
    ran: list[str] = []
    timers.call_later(30, lambda: ran.append("late"))
    timers.call_later(0, lambda: ran.append("now"))
    assert timers.run_due() == 1
    assert ran == ["now"]
    now[0] = 129.9
    assert timers.run_due() == 0
    assert timers.pending() == 1
    now[0] = 130.0
    assert timers.run_due() == 1
    assert ran == ["now", "late"]
    timers.stop()


def test_template_key_leaves_out_only_what_is_per_pod_or_redone_per_pod(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path, clones(hollow=True, own=True))), tmp_path).profile
    first, second = (w for w in profile.workloads if w.name.startswith("billing-worker"))
    other = next(w for w in profile.workloads if w.name.startswith("invoice-exporter"))

    def pod(workload: Any, nonce: str, expiration: int) -> dict[str, Any]:
        manifest = probe_pod_manifest(profile, workload, "run")
        bind_nonce(manifest, nonce)
        manifest["spec"]["volumes"] = [
            {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": expiration}}]}}
        ]
        manifest["spec"]["containers"][0]["env"].append({"name": "AWS_ROLE_ARN", "value": workload.role_arn})
        manifest["metadata"]["namespace"] = workload.namespace
        return manifest

    a, b = pod(first, "n1", 79200), pod(second, "n2", 86400)
    assert probe_plan(a) is not None
    assert probe_plan(a) != probe_plan(b)
    assert a["spec"]["serviceAccountName"] != b["spec"]["serviceAccountName"]  # each its own identity
    assert template_key(a, "node-1") == template_key(b, "node-1")  # ... redone per pod
    b["metadata"]["namespace"] = "elsewhere"
    assert template_key(a, "node-1") == template_key(b, "node-1")
    assert template_key(a, "node-1") != template_key(a, "node-2")  # another node: its own IMDS and agent
    assert template_key(a, "node-1") != template_key(pod(other, "n1", 79200), "node-1")  # another plan
    b["spec"]["containers"][0]["image"] = "another-image:1"
    assert template_key(a, "node-1") != template_key(b, "node-1")  # another image: its own files, botocore
    c = pod(second, "n3", 79200)
    c["spec"]["containers"][0]["env"].append({"name": "AWS_ACCESS_KEY_ID", "value": "AKIA"})
    assert template_key(a, "node-1") != template_key(c, "node-1")  # another credential method
    # A variable from a ConfigMap has its namespace's value: then the namespace is part of the key.
    d, e = pod(first, "n4", 79200), pod(second, "n5", 79200)
    for manifest in (d, e):
        manifest["spec"]["containers"][0]["env"].append(
            {"name": "SETTING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "setting"}}}
        )
    assert template_key(d, "node-1") == template_key(e, "node-1")
    e["metadata"]["namespace"] = "elsewhere"
    assert template_key(d, "node-1") != template_key(e, "node-1")
    plain = {"metadata": {"namespace": "x"}, "spec": {"containers": [{"name": "c", "command": ["sleep", "1"]}]}}
    assert template_key(plain, "node-1") is None  # not a probe pod: it runs for real


def _on_a_manual_clock(run: Running, monkeypatch: pytest.MonkeyPatch) -> tuple[Kubelet, list[float]]:
    """The hollow kubelet with its timers on a clock the test moves (``now[0]``) and a 30 s start latency."""
    kubelet = run.sandbox.kubelet
    assert kubelet is not None
    assert kubelet.hollow is not None
    assert kubelet.timers is not None
    now = [0.0]
    kubelet.timers.stop()
    monkeypatch.setattr(kubelet, "timers", Timers(clock=lambda: now[0], threaded=False))
    monkeypatch.setattr(kubelet, "start_latency", 30.0)
    return kubelet, now


def test_phases_in_order_on_an_injected_clock_and_the_hollow_pod_proves_its_own_nonce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = open_sandbox(clones(hollow=True), tmp_path)
    try:
        kubelet, now = _on_a_manual_clock(run, monkeypatch)
        profile = run.loaded.profile
        leader_w, follower_w = profile.workloads[2], profile.workloads[3]  # billing-worker-0, -1 (IRSA)
        since = run.sandbox.store.resource_version
        pods = {}
        for w, nonce in ((leader_w, "nonce-leader"), (follower_w, "nonce-follower")):
            manifest = probe_pod_manifest(profile, w, "hollow-test")
            bind_nonce(manifest, nonce)
            pods[w.name] = run.kube.create_pod(w.namespace, manifest)["metadata"]["name"]
        assert kubelet.settle()
        namespace = leader_w.namespace
        for name in pods.values():
            pod = run.sandbox.store.get("pods", namespace, name)
            assert pod["spec"]["nodeName"]
            assert pod["status"].get("phase") == "Pending"
            assert not pod["status"].get("containerStatuses")
        now[0] = 29.9
        assert kubelet.timers.run_due() == 0  # the start latency is not over
        now[0] = 30.0
        assert kubelet.timers.run_due() == 2
        phases: dict[str, list[str]] = {name: [] for name in pods.values()}
        ended: list[str] = []
        for _, obj in run.sandbox.store.watch("pods", namespace, resource_version=since, timeout=120):
            name, phase = obj["metadata"]["name"], str(obj["status"].get("phase") or "Pending")
            if name in phases and (not phases[name] or phases[name][-1] != phase):
                phases[name].append(phase)
                if phase in ("Succeeded", "Failed"):
                    ended.append(name)
            if len(ended) == 2:
                break
        assert all(p == ["Pending", "Running", "Succeeded"] for p in phases.values()), phases
        # Which of the two runs the real probe is the one whose start came first (the pool's order).
        logs = {name: run.kube.pod_log(namespace, name) for name in pods.values()}
        follower = next(name for name, text in logs.items() if text.startswith(HOLLOW_NOTE))
        leader = next(name for name in pods.values() if name != follower)
        follower_w = next(w for w in (leader_w, follower_w) if pods[w.name] == follower)
        nonce = "nonce-follower" if follower_w.name == "billing-worker-1" else "nonce-leader"
        assert ended == [leader, follower]  # the hollow pod ends with its template's real run, not before
        assert (kubelet.hollow.real_runs, kubelet.hollow.adapted, kubelet.peak) == (1, 1, 1)
        status = run.sandbox.store.get("pods", namespace, follower)["status"]["containerStatuses"][0]
        assert status["state"]["terminated"]["reason"] == "Completed"

        log = logs[follower]
        assert log.startswith(HOLLOW_NOTE)
        assert leader in log.splitlines()[0]
        result = parse_result(log)
        assert result is not None
        assert result["workload"] == follower_w.name
        identity = result["identity"]
        leader_result = parse_result(logs[leader])
        assert leader_result is not None
        assert identity["proof"] != leader_result["identity"]["proof"]
        claims = result["environment"]["token_files"]["AWS_WEB_IDENTITY_TOKEN_FILE"]["claims"]
        assert claims["pod"] == follower  # its own projected token, not the template's
        signature = parse_qs(urlsplit(identity["proof"]).query)["X-Amz-Signature"][0]
        assert signature in run.sandbox.iam.minted  # the secret ledger knows it before anything sends it
        aws = Aws(region=profile.cluster.region, env=run.connection.env)
        caller = aws.prove_caller(identity["proof"], nonce)
        assert role_of(caller["arn"]) == role_arn_parts(follower_w.role_arn)
        assert caller["arn"] == dict(identity.get("caller") or {}).get("arn")
        with pytest.raises(IdentityNotProven):
            aws.prove_caller(identity["proof"], "nonce-other")  # bound to this pod's nonce only
        run.kube.delete_pod(namespace, leader)
        run.kube.delete_pod(namespace, follower)
    finally:
        close_sandbox(run)


def test_hollow_verdicts_equal_real_probes_verdicts_with_a_role_and_serviceaccount_per_workload(
    tmp_path: Path,
) -> None:
    """Every clone has its own ServiceAccount and IAM role (as the bench's workloads): one real run per plan
    shape stands for both, and each hollow pod's role, proof and actions are its own, as real probes'."""
    results = {}
    for hollow in (False, True):
        run = open_sandbox(clones(hollow=hollow, own=True), tmp_path, f"hollow-{hollow}")
        try:
            outcomes = campaign(run)
            results[hollow] = verdicts(run, outcomes)
            kubelet = run.sandbox.kubelet
            assert kubelet is not None
            if hollow:
                assert kubelet.hollow is not None
                assert (kubelet.hollow.real_runs, kubelet.hollow.adapted) == (2, 2)  # one real probe per template
                adapted = [o for o in outcomes.values() if o.log.startswith(HOLLOW_NOTE + "no process")]
                assert len(adapted) == 2
                for o in adapted:  # its own role, not its template's
                    assert role_of(str(dict(o.identity.get("caller") or {}).get("arn"))) == role_arn_parts(
                        o.workload.role_arn
                    )
        finally:
            close_sandbox(run)
    assert results[True] == results[False]
    assert {v["role"][1] for v in results[True].values()} == {
        f"demo-{kind}-{i}" for kind in ("invoice-exporter", "billing-worker") for i in range(COPIES)
    }
    assert all(v["proven"] and v["caller_role"] is None for v in results[True].values())


def test_a_wrong_role_is_caught_in_hollow_mode_and_an_unadapted_method_runs_the_real_probe(tmp_path: Path) -> None:
    faults = [
        {"fault": "wrong-role", "workload": "billing-worker-0", "role": "demo-reporting"},  # IRSA: the annotation
        # The image's ~/.aws/credentials beat Pod Identity (not IRSA): a method the hollow kubelet does not adapt.
        {"fault": "image-baked-credentials"},
    ]
    run = open_sandbox(clones(hollow=True, faults=faults), tmp_path)
    try:
        outcomes = campaign(run)
        found = verdicts(run, outcomes)
        kubelet = run.sandbox.kubelet
        assert kubelet is not None
        assert kubelet.hollow is not None
        assert (kubelet.hollow.real_runs, kubelet.hollow.adapted) == (3, 1)  # two templates, one fallback
    finally:
        close_sandbox(run)
    for name in ("billing-worker-0", "billing-worker-1"):  # one ServiceAccount: the real probe and the hollow pod
        assert found[name]["role"] == ("111122223333", "demo-reporting"), found[name]
        assert found[name]["proven"]
        assert found[name]["caller_role"] is not None
    adapted = next(o for o in outcomes.values() if o.log.startswith(HOLLOW_NOTE + "no process"))
    assert adapted.workload.name.startswith("billing-worker")
    assert "demo-reporting" in json.dumps(adapted.identity.get("caller"))
    assert program.NONCE_HEADER not in adapted.log  # the proof left the log (the runner masks it)
    fallback = next(o for o in outcomes.values() if o.log.startswith(HOLLOW_NOTE + "running the real probe"))
    assert "shared-credentials-file" in fallback.log.splitlines()[0]
    for name in ("invoice-exporter-0", "invoice-exporter-1"):
        assert found[name]["method"] == "shared-credentials-file"
        assert found[name]["proven"]
        assert found[name]["caller_role"] is not None
        assert "ci-image-builder" in json.dumps(outcomes[name].identity.get("caller"))


def test_excess_permissions_of_one_role_are_caught_on_the_pod_adapted_from_a_clean_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workloads of one plan shape, each with its own role; only the second's role has the fault's
    ``s3:*``. The clean one's pod runs the real probe (it starts first, on an injected clock); the faulted
    one's runs no process, yet its own calls show its deny actions allowed; the third, clean again, is adapted
    after it with the same action clients (hollow._Slot), which must now sign as the third pod: its denials
    stay denied."""
    faults = [{"fault": "excess-permissions", "workload": "invoice-exporter-1"}]
    run = open_sandbox(clones(hollow=True, faults=faults, own=True, copies=3), tmp_path)
    try:
        kubelet, now = _on_a_manual_clock(run, monkeypatch)
        profile = run.loaded.profile
        clean, faulted, after = (
            next(w for w in profile.workloads if w.name == f"invoice-exporter-{i}") for i in (0, 1, 2)
        )
        names = {}
        for w in (clean, faulted, after):  # one after the other, each to its end: the clean one is the template
            since = run.sandbox.store.resource_version
            manifest = probe_pod_manifest(profile, w, "hollow-test")
            bind_nonce(manifest, f"nonce-{w.name}")
            names[w.name] = name = run.kube.create_pod(w.namespace, manifest)["metadata"]["name"]
            assert kubelet.settle()
            now[0] += 30.0
            assert kubelet.timers.run_due() == 1
            assert kubelet.settle()
            for _, obj in run.sandbox.store.watch("pods", clean.namespace, resource_version=since, timeout=120):
                if obj["metadata"]["name"] == name and obj["status"].get("phase") in ("Succeeded", "Failed"):
                    break
        assert (kubelet.hollow.real_runs, kubelet.hollow.adapted) == (1, 2)
        logs = {w: run.kube.pod_log(clean.namespace, name) for w, name in names.items()}
    finally:
        close_sandbox(run)
    assert not logs[clean.name].startswith(HOLLOW_NOTE)  # the real probe
    assert logs[faulted.name].startswith(HOLLOW_NOTE + "no process")
    assert logs[after.name].startswith(HOLLOW_NOTE + "no process")
    results = {w: parse_result(text) for w, text in logs.items()}
    outcomes = {}
    for w, result in results.items():
        assert result is not None
        assert role_of(result["identity"]["caller"]["arn"])[1] == f"demo-{w}"
        outcomes[w] = {a["id"]: (a["action"], a["outcome"]) for a in result["actions"]}
    # s3:* on every bucket: the S3 denials become allowed; SQS and KMS are as the clean role's.
    assert outcomes[clean.name]["deny-0"] == ("s3:DeleteObject", "denied")
    assert outcomes[faulted.name]["deny-0"] == ("s3:DeleteObject", "allowed")
    assert outcomes[faulted.name]["deny-1"] == ("s3:GetObject", "allowed")
    assert {k: v for k, v in outcomes[faulted.name].items() if v[0].startswith(("sqs:", "kms:"))} == {
        k: v for k, v in outcomes[clean.name].items() if v[0].startswith(("sqs:", "kms:"))
    }
    assert outcomes[after.name] == outcomes[clean.name]  # signed as itself, not as the faulted pod before it


def test_a_pod_runs_the_real_probe_where_its_own_answers_cannot_be_redone_in_process(tmp_path: Path) -> None:
    """No sandbox needed: these are decided before any call. A template without working credentials stands
    only for the same identity; an AWS variable or a proxy the in-process calls would not honour, never."""
    token = tmp_path / "token"
    token.write_text("x." + base64.urlsafe_b64encode(b'{"sub": "system:serviceaccount:a:one"}').decode() + ".y")

    def env(role: str, **extra: str) -> dict[str, str]:
        plan = {"workload": "w", "region": "eu-west-1", "nonce": "n", "actions": []}
        return {
            program.PLAN_VARIABLE: json.dumps(plan),
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ROLE_ARN": role,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
            **extra,
        }

    leader = env("arn:aws:iam::111122223333:role/one")
    failed = {
        "version": program.RESULT_VERSION,
        "environment": program.audit_environment(leader),
        "identity": {"method": None, "caller": None, "error": {"type": "AccessDenied"}},
        "actions": [],
    }
    probes = HollowProbes()
    line, why = probes.adapt(failed, env("arn:aws:iam::111122223333:role/one"))
    assert line is not None, why  # the same identity: the template's failure is this pod's
    line, why = probes.adapt(failed, env("arn:aws:iam::111122223333:role/two"))
    assert line is None
    assert "another identity" in why
    working = dict(failed, identity={"method": "assume-role-with-web-identity", "caller": {"arn": "x"}})
    for extra, named in (({"AWS_MAX_ATTEMPTS": "9"}, "AWS_MAX_ATTEMPTS"), ({"HTTPS_PROXY": "http://p:3128"}, "proxy")):
        line, why = probes.adapt(working, env("arn:aws:iam::111122223333:role/two", **extra))
        assert line is None
        assert named in why


@pytest.mark.parametrize(("code", "kept"), [(None, 1), ("StepTimeout", 0)])
def test_a_slot_whose_call_outlived_the_step_is_not_reused(monkeypatch: pytest.MonkeyPatch, code, kept) -> None:
    """A call past the actions step's budget keeps running on its own thread (program._bounded); its retries
    would sign with whatever keys the slot holds next, so that slot must never serve another pod."""
    probes = HollowProbes()

    def run_actions(plan, identity, deadline=None, clock=None, session=None):
        assert session is not None
        return [{"id": "allow-0", "outcome": "error" if code else "allowed", "code": code}]

    monkeypatch.setattr(program, "run_actions", run_actions)
    actions = probes._actions({"region": "eu-west-1"}, {}, ("AKIAPOD", "secret", None), {})
    assert actions[0]["code"] == code
    assert len(probes._slots) == kept
