"""The probe, run for real in probe pods on the sandbox: every measurement and every diagnosis."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pytest_eksid.checks.podsecurity import restricted_violations
from pytest_eksid.kube import KubeError, KubeUnreachable
from pytest_eksid.probe.pod import (
    MANAGED_BY,
    MANAGED_BY_VALUE,
    POLL_SECONDS,
    RUN_ID_LABEL,
    Campaign,
    Target,
    probe_pod_manifest,
)
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import interrupt_pytest
from tests.helpers.sandboxes import runner_client

REPORTER = {
    "name": "reporter",
    "namespace": "finance-demo",
    "serviceAccount": "reporter-aws-sa",
    "mechanism": "pod-identity",
    "roleArn": "arn:aws:iam::111122223333:role/demo-reporting",
    "owner": "finance-team",
    # GetObject is allowed on reports/*, ListBucket is not, and the key does not exist: S3's 403
    # cannot say which, so the probe must say inconclusive.
    "allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::company-demo-finance/reports/missing.csv"}],
}


def by_id(outcome):
    return {a["id"]: a for a in outcome.actions}


def test_actions_allowed_denied_and_inconclusive(start_sandbox):
    data = demo_data()
    data["workloads"].append(REPORTER)
    run = start_sandbox(data)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    outcomes = campaign.run(run.loaded.profile.workloads)
    campaign.cleanup()
    exporter = by_id(outcomes["invoice-exporter"])
    assert exporter["allow-0"]["outcome"] == "allowed"  # PutObject, safe form
    assert exporter["allow-0"]["form"] == "safe"
    assert exporter["allow-0"]["code"] == "BadDigest"
    assert exporter["allow-1"]["outcome"] == "allowed"  # SendMessage, safe form
    for deny in ("deny-0", "deny-1", "deny-2"):
        assert exporter[deny]["outcome"] == "denied", exporter[deny]
        assert exporter[deny]["policy_type"] == "identity-based-policy"
    reporter = by_id(outcomes["reporter"])
    assert reporter["allow-0"]["outcome"] == "inconclusive", reporter
    assert "s3:ListBucket" in reporter["allow-0"]["why"]


def test_nothing_was_written_by_safe_forms(start_sandbox):

    run = start_sandbox(demo_data())
    Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)
    env = run.connection.env
    s3 = runner_client(env, "s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="company-demo-finance").get("Contents", [])]
    assert keys == ["payroll/2026-11.csv"]


def test_imds_blocked_by_default_and_agent_answers(start_sandbox):
    run = start_sandbox(demo_data())
    outcomes = Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)
    for outcome in outcomes.values():
        assert outcome.imds["v2"] == {"outcome": "blocked-timeout"}
        assert outcome.imds["v1"]["outcome"] == "blocked-refused"
    assert outcomes["invoice-exporter"].agent["outcome"] == "credentials"
    assert outcomes["billing-worker"].agent == {"configured": False}


@pytest.mark.parametrize(
    ("versions", "v1", "v2"),
    [
        (["v1", "v2"], "exposed", "exposed"),
        (["v2"], "blocked-refused", "exposed"),
        (["v1"], "exposed", "blocked-timeout"),
    ],
)
def test_imds_exposed(start_sandbox, versions, v1, v2):
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "imds-exposed", "versions": versions}]
    run = start_sandbox(data)
    outcome = Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)["billing-worker"]
    assert outcome.imds["v1"]["outcome"] == v1
    assert outcome.imds["v2"]["outcome"] == v2
    for version, expected in (("v1", v1), ("v2", v2)):
        if expected == "exposed":
            assert outcome.imds[version]["role"] == "demo-node"
    # The node role's keys were minted, and none of them left the pod.
    for secret in run.sandbox.minted_secrets:
        assert secret not in outcome.log


def test_imds_exposed_on_one_node_group_only(start_sandbox):
    data = demo_data()
    billing = next(w for w in data["workloads"] if w["name"] == "billing-worker")
    billing["probe"] = {"nodeSelector": {"eks.amazonaws.com/nodegroup": "ng-batch"}}  # the workload's placement
    data["sandbox"]["faults"] = [{"fault": "imds-exposed", "nodegroup": "ng-general"}]
    run = start_sandbox(data)
    outcome = Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)["billing-worker"]
    assert outcome.node_name is not None
    assert outcome.node_name.startswith("ip-10-0-2-")
    assert outcome.imds["v1"]["outcome"] == "blocked-refused"


def test_agent_down(start_sandbox):
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "agent-down"}]
    run = start_sandbox(data)
    outcome = Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is None
    assert outcome.agent["outcome"] == "refused"
    assert outcome.identity["caller"] is None
    assert outcome.identity["error"] is not None


def _campaign(run, hook=None):
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    if hook is not None:
        campaign.manifest_hook = hook
    return campaign


def _only_exporter(data):
    data["workloads"] = [w for w in data["workloads"] if w["name"] == "invoice-exporter"]
    return data


def test_image_pull_error_is_diagnosed_at_once(start_sandbox):
    data = _only_exporter(demo_data())
    data["sandbox"]["faults"] = [{"fault": "image-pull-error"}]
    run = start_sandbox(data)
    t0 = time.monotonic()
    outcome = _campaign(run).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert time.monotonic() - t0 < 30  # not the 60 s timeout (a generous margin either way on a busy machine)
    assert outcome.error is not None
    assert "ErrImagePull" in outcome.error
    assert "cannot pull the probe image" in outcome.error
    assert any("Failed to pull image" in e for e in outcome.events)


def test_unschedulable_is_diagnosed(start_sandbox):
    data = _only_exporter(demo_data())
    data["workloads"][0]["probe"] = {"nodeSelector": {"eks.amazonaws.com/nodegroup": "gpu"}}  # over the template's
    run = start_sandbox(data)
    outcome = _campaign(run).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is not None
    assert "Unschedulable" in outcome.error
    assert any("FailedScheduling" in e for e in outcome.events)


def test_create_container_config_error(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))

    def missing_secret(manifest, workload):
        manifest["spec"]["containers"][0]["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
        )

    outcome = _campaign(run, missing_secret).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is not None
    assert "CreateContainerConfigError" in outcome.error
    assert 'secret "absent" not found' in outcome.error


def test_crash_reports_exit_code_and_log_tail(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))

    def crash(manifest, workload):
        manifest["spec"]["containers"][0]["command"] = [
            "python3",
            "-c",
            "print('probe went boom'); raise SystemExit(3)",
        ]

    outcome = _campaign(run, crash).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is not None
    assert "exit code 3" in outcome.error
    assert "probe went boom" in outcome.error


def test_unparseable_output(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))

    def garbage(manifest, workload):
        manifest["spec"]["containers"][0]["command"] = ["python3", "-c", "print('EKSID-RESULT {not json')"]

    outcome = _campaign(run, garbage).run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.error is not None
    assert "without a result line" in outcome.error
    assert "EKSID-RESULT {not json" in outcome.error


def test_twenty_workloads_run_concurrently(start_sandbox):
    data = demo_data()
    base = data["workloads"][1]  # billing-worker (IRSA)
    data["workloads"] = [dict(base, name=f"worker-{i:02d}") for i in range(20)]
    data["sandbox"]["podStartSeconds"] = 1.0
    run = start_sandbox(data)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, max_parallel=20)
    outcomes = campaign.run(run.loaded.profile.workloads)
    assert all(o.result is not None for o in outcomes.values()), [o.error for o in outcomes.values()]
    assert run.sandbox.kubelet is not None
    assert run.sandbox.kubelet.peak >= 10  # they ran side by side, not one after another
    assert len(campaign.cleanup()) == 20
    assert run.kube.list_pods(f"{MANAGED_BY}={MANAGED_BY_VALUE}") == []


def test_no_secret_in_any_probe_output(start_sandbox):
    data = demo_data()
    data["sandbox"]["secrets"] = [{"name": "billing-demo/api-token", "value": "s3cr3t-value-that-must-not-leak"}]
    data["sandbox"]["roles"][1]["policy"]["Statement"].append(
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": ["*"]}
    )
    data["workloads"][1]["allow"].append(
        {
            "action": "secretsmanager:GetSecretValue",
            "resource": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:billing-demo/api-token",
        }
    )
    run = start_sandbox(data)
    outcomes = Campaign(kube=run.kube, profile=run.loaded.profile).run(run.loaded.profile.workloads)
    assert by_id(outcomes["billing-worker"])["allow-1"]["outcome"] == "allowed"
    secrets = run.sandbox.minted_secrets
    assert "s3cr3t-value-that-must-not-leak" in secrets
    for outcome in outcomes.values():
        text = outcome.log + json.dumps(outcome.result)
        for secret in secrets:
            assert secret not in text


def test_probe_pod_passes_restricted_pod_security(start_sandbox):
    run = start_sandbox(demo_data())
    for workload in run.loaded.profile.workloads:
        assert restricted_violations(probe_pod_manifest(run.loaded.profile, workload, "run")) == []
    privileged = probe_pod_manifest(run.loaded.profile, run.loaded.profile.workloads[0], "run")
    privileged["spec"]["containers"][0]["securityContext"]["privileged"] = True
    privileged["spec"]["hostNetwork"] = True
    assert restricted_violations(privileged) == [
        "spec.hostNetwork must not be true",
        "container 'probe': privileged",
    ]


def test_sweep_deletes_old_probe_pods_of_other_runs(start_sandbox):
    run = start_sandbox(_only_exporter(demo_data()))
    old = Campaign(kube=run.kube, profile=run.loaded.profile, keep_pods=True)
    old.run(run.loaded.profile.workloads)
    assert old.cleanup() == []  # kept
    kept = run.kube.list_pods(f"{RUN_ID_LABEL}={old.run_id}", "finance-demo")
    assert len(kept) == 1
    new = Campaign(kube=run.kube, profile=run.loaded.profile)
    assert new.sweep(60) == []  # not old enough
    assert new.sweep(0) == [f"finance-demo/{kept[0]['metadata']['name']}"]
    assert run.kube.list_pods(f"{MANAGED_BY}={MANAGED_BY_VALUE}") == []


def test_sigterm_deletes_probe_pods_too(tmp_path):
    """A CI job cancelled or timed out gets SIGTERM: the probe pods on the cluster are deleted all the same."""
    import signal

    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 30
    profile = write_profile(tmp_path, data, "slow")
    code, out = interrupt_pytest(
        f"--profile={profile}", when="launching 4 probe pod(s)", wait=60, signum=signal.SIGTERM
    )
    assert code == 2, out
    assert "KeyboardInterrupt" in out
    assert "eksid: deleted 4 probe pod(s)" in out
    assert "eksid: sandbox stopped" in out


def test_sigint_deletes_probe_pods(tmp_path):
    """A real Ctrl-C while probe pods are starting: the run stops and deletes its pods."""
    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 30
    profile = write_profile(tmp_path, data, "slow")
    # 2 workloads on the first node group, + an IMDS-only probe each on the second
    code, out = interrupt_pytest(f"--profile={profile}", when="launching 4 probe pod(s)", wait=60)
    assert code == 2, out
    assert "KeyboardInterrupt" in out
    assert "eksid: deleted 4 probe pod(s)" in out
    assert "INTERNALERROR" not in out


def test_chained_association_ends_as_the_target_role(start_sandbox):
    """Pod Identity with targetRoleArn: EKS chains, and the pod's calls run as the target role."""
    data = _only_exporter(demo_data())
    data["workloads"][0]["roleArn"] = "arn:aws:iam::111122223333:role/demo-reporting"
    data["workloads"][0]["targetRoleArn"] = "arn:aws:iam::111122223333:role/demo-invoice-exporter"
    run = start_sandbox(data)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, prove=_prover(run))
    outcome = campaign.run(run.loaded.profile.workloads)["invoice-exporter"]
    assert outcome.identity["proven"] is True
    assert outcome.identity["caller"]["arn"].startswith(
        "arn:aws:sts::111122223333:assumed-role/demo-invoice-exporter/eks-demo-"
    )
    from pytest_eksid.checks.identity import caller_role

    assert caller_role(run.loaded.profile, run.loaded.profile.workloads[0], outcome.identity) is None
    assert by_id(outcome)["allow-0"]["outcome"] == "allowed"  # the target role's permissions apply


def _prover(run):
    """The runner's check of a probe's proof of identity, against the sandbox's STS (as the plugin does it)."""
    from pytest_eksid.aws import Aws

    return Aws(region=run.loaded.profile.cluster.region, env=run.connection.env).prove_caller


def _count_aws_requests(run) -> list[str]:
    """Every request reaching the sandbox's AWS endpoint, by its action (werkzeug reads server.app per request)."""
    seen: list[str] = []
    server = run.sandbox.aws._server
    inner = server.app

    def app(environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "X-Amz-Signature=" in environ.get("QUERY_STRING", ""):
            seen.append("presigned")  # the probe's proof of identity, sent by the runner
        else:
            seen.append(auth.split("Credential=", 1)[1].split("/")[3] if "Credential=" in auth else "unsigned")
        return inner(environ, start_response)

    server.app = app
    return seen


def test_probe_resolves_credentials_once_and_node_probes_measure_only_imds(start_sandbox):
    data = demo_data()
    data["workloads"] = [w for w in data["workloads"] if w["name"] == "billing-worker"]  # IRSA: STS is visible
    run = start_sandbox(data)
    seen = _count_aws_requests(run)
    worker = run.loaded.profile.workloads[0]
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, prove=_prover(run))
    outcome = campaign.run([Target(worker)])["billing-worker"]
    assert outcome.identity["caller"]["arn"].startswith("arn:aws:sts::111122223333:assumed-role/demo-billing-worker/")
    # One AssumeRoleWithWebIdentity for the whole probe (identity and actions share the session),
    # then GetCallerIdentity, one call per planned action, and the runner's check of the probe's proof.
    assert seen.count("unsigned") == 1, seen
    assert seen.count("presigned") == 1, seen
    assert len(seen) == 1 + 1 + len(worker.allow) + len(worker.deny) + 1, seen
    seen.clear()
    node = Campaign(kube=run.kube, profile=run.loaded.profile).run([Target(worker, "ng-batch")])
    result = node["billing-worker@ng-batch"].result
    assert result is not None
    assert set(result) >= {"environment", "imds"}
    assert "identity" not in result
    assert "actions" not in result
    assert result["imds"]["v2"]["outcome"].startswith("blocked")
    assert seen == []  # no AWS call at all: a node probe does not need the workload's credentials


def test_with_node_groups_the_workload_probe_runs_on_the_first_and_imds_only_probes_on_the_others():
    from pytest_eksid.probe.pod import probe_target
    from pytest_eksid.probe.program import PLAN_VARIABLE
    from pytest_eksid.profile import load_profile

    profile = load_profile("demo", REPO).profile  # nodeGroups: [ng-general, ng-batch]
    w = profile.workloads[0]
    assert probe_target(profile, w) == Target(w)
    assert probe_target(profile, w, "ng-general") == Target(w)  # the workload's own probe stands for it
    assert probe_target(profile, w, "ng-batch") == Target(w, "ng-batch")

    def plan_and_selector(nodegroup):
        spec = probe_pod_manifest(profile, w, "run", nodegroup)["spec"]
        plan = json.loads(next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == PLAN_VARIABLE))
        return plan.get("steps"), spec["nodeSelector"]

    label = profile.probe.node_group_label
    assert plan_and_selector(None) == (None, {label: "ng-general"})  # every step
    assert plan_and_selector("ng-batch") == (["environment", "imds"], {label: "ng-batch"})
    # Without node groups: no pinning, every step.
    bare = profile.model_copy(update={"probe": profile.probe.model_copy(update={"node_groups": []})})
    assert probe_target(bare, w, None) == Target(w)
    assert "nodeSelector" not in probe_pod_manifest(bare, w, "run")["spec"]


def test_a_node_selector_naming_a_group_keeps_the_workload_probe_there():
    from pytest_eksid.probe.pod import probe_target
    from pytest_eksid.profile import load_profile

    profile = load_profile("demo", REPO).profile
    label = profile.probe.node_group_label
    chosen = profile.model_copy(
        update={"probe": profile.probe.model_copy(update={"node_selector": {label: "ng-batch"}})}
    )
    w = chosen.workloads[0]
    assert probe_pod_manifest(chosen, w, "run")["spec"]["nodeSelector"] == {label: "ng-batch"}
    # it is not on the first group, so that group gets a probe of its own
    assert probe_target(chosen, w, "ng-general") == Target(w, "ng-general")
    # Any nodeSelector: pinning on top of it could leave the workload's probe nowhere to run.
    arm = profile.model_copy(
        update={"probe": profile.probe.model_copy(update={"node_selector": {"kubernetes.io/arch": "arm64"}})}
    )
    assert probe_pod_manifest(arm, w, "run")["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert probe_target(arm, w, "ng-general") == Target(w, "ng-general")


def test_cleanup_deletes_every_pod_it_can_and_says_how_to_delete_the_rest(start_sandbox, monkeypatch):
    run = start_sandbox(demo_data())
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    campaign.run(run.loaded.profile.workloads)
    real_delete = run.kube.delete_pod
    calls = []

    def refusing_delete(namespace, name, uid=None):
        calls.append(name)
        if len(calls) == 1:
            raise KubeError("delete pod: 403 Forbidden", 403)  # the API refused this one
        return real_delete(namespace, name, uid)

    monkeypatch.setattr(run.kube, "delete_pod", refusing_delete)
    with pytest.raises(KubeError) as err:
        campaign.cleanup()
    assert len(calls) == 2  # the other pod was still deleted
    assert "could not delete 1 probe pod(s) (deleted 1)" in str(err.value)
    assert f"kubectl delete pods -A -l eksid.dev/run-id={campaign.run_id}" in str(err.value)


def test_cleanup_deletes_the_pods_after_the_first_at_once_and_stops_where_the_server_is_gone(
    start_sandbox, monkeypatch
):
    """The first delete alone (one try tells an unreachable server); the rest concurrently, max_parallel at a
    time: a thousand one by one were a thousand round trips at the end of a run. A delete that finds the server
    gone leaves the ones not yet begun untried."""
    run = start_sandbox(demo_data())
    calls: list[str] = []

    def campaign_of(names: list[str], max_parallel: int, delete) -> Campaign:
        campaign = Campaign(kube=run.kube, profile=run.loaded.profile, max_parallel=max_parallel)
        campaign._created.update({name: "ns" for name in names})
        calls.clear()
        monkeypatch.setattr(run.kube, "delete_pod", delete)
        return campaign

    together = threading.Barrier(3)  # the three after the first must be in flight at once to pass it

    def meeting(namespace, name, uid=None):
        calls.append(name)
        if name != "probe-0":
            together.wait(timeout=60)  # BrokenBarrierError, so a failed delete, if they came one by one
        return True

    names = [f"probe-{i}" for i in range(4)]
    assert campaign_of(names, 3, meeting).cleanup() == [f"ns/{name}" for name in names]  # in creation order
    assert calls[0] == "probe-0"

    def gone_at_the_second(namespace, name, uid=None):
        calls.append(name)
        if name == "probe-1":
            raise KubeUnreachable("delete pod: cannot reach the Kubernetes API server https://x: no answer")
        return True

    with pytest.raises(KubeError) as err:  # one at a time: what follows the failure has not begun
        campaign_of([f"probe-{i}" for i in range(5)], 1, gone_at_the_second).cleanup()
    assert calls == ["probe-0", "probe-1"]
    assert "could not delete 4 probe pod(s) (deleted 1)" in str(err.value)
    assert "ns/probe-1 (delete pod: cannot reach" in str(err.value)
    assert "ns/probe-2 (not tried)" in str(err.value)


@pytest.mark.parametrize(
    "failure",
    [
        KubeUnreachable("delete pod: cannot reach the Kubernetes API server https://x: no connection within 30s"),
        ConnectionError("connect timeout"),  # anything unexpected below the client
    ],
)
def test_cleanup_stops_trying_when_the_api_server_is_unreachable(start_sandbox, monkeypatch, failure):
    """Each try against an unreachable endpoint can take minutes: one is enough to know."""
    run = start_sandbox(demo_data())
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    campaign.run(run.loaded.profile.workloads)
    calls = []

    def unreachable(namespace, name, uid=None):
        calls.append(name)
        raise failure

    monkeypatch.setattr(run.kube, "delete_pod", unreachable)
    with pytest.raises(KubeError) as err:
        campaign.cleanup()
    assert len(calls) == 1
    assert "could not delete 2 probe pod(s) (deleted 0)" in str(err.value)
    assert "(not tried)" in str(err.value)


def test_pod_list_refusals_fall_back_and_passing_errors_do_not(start_sandbox, monkeypatch):
    """Without watch: cluster-wide LIST refused -> per namespace; refused there too -> each pod alone; a 500 is
    retried."""
    run = start_sandbox(demo_data())
    _refuse_watch(monkeypatch, run.kube)
    real_list = run.kube.list_pods
    asked = []

    def list_pods(selector, namespace=None, field_selector=""):
        asked.append(namespace or "*")
        if namespace is None:
            raise KubeError("list pods: 403 Forbidden", 403)
        if namespace == "billing-demo" and asked.count("billing-demo") == 1:
            raise KubeError("list pods: 500 InternalError", 500)  # passing: listed again next tick
        if namespace == "finance-demo":
            raise KubeError("list pods: 403 Forbidden", 403)
        return real_list(selector, namespace, field_selector)

    monkeypatch.setattr(run.kube, "list_pods", list_pods)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    outcomes = campaign.run(run.loaded.profile.workloads)
    assert all(o.result is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
    assert asked.count("*") == 1  # refused for good after one try
    assert asked.count("finance-demo") == 1
    assert asked.count("billing-demo") > 1
    assert campaign._board.refused == {"*", "finance-demo"}
    campaign.cleanup()


def _refuse_watch(monkeypatch, kube):
    """The runner's RBAC without ``watch`` on pods: the API server refuses every watch with 403."""

    def watch_pods(*_args, **_kwargs):
        raise KubeError("watch pods: 403 Forbidden: pods is forbidden: cannot watch resource", 403, "Forbidden")
        yield  # a generator, as the real one

    monkeypatch.setattr(kube, "watch_pods", watch_pods)


def _count_calls(monkeypatch, kube, *names: str) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(kube, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(kube, name, counted)
    return counts


def test_waiting_probes_watch_their_pods_instead_of_polling(start_sandbox, monkeypatch):
    """One LIST and one watch for all the run's pods, whatever their number and however long they take: no
    polling LIST, and each pod read alone only once, after its log (the check that it was not swapped)."""
    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 1.5  # polling would list several times meanwhile
    run = start_sandbox(data)
    counts = _count_calls(monkeypatch, run.kube, "read_pod", "list_pods", "list_pods_at", "watch_pods")
    said: list[str] = []
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, progress=said.append)
    targets = [Target(w, g) for w in run.loaded.profile.workloads for g in (None, "ng-batch")]
    outcomes = campaign.run(targets)
    assert all(o.result is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
    assert counts == {"read_pod": len(targets), "list_pods": 0, "list_pods_at": 1, "watch_pods": 1}, counts
    assert not [m for m in said if "polling" in m]
    campaign.cleanup()


def test_a_watch_the_server_ends_resumes_from_its_version_and_a_gone_one_lists_again(start_sandbox, monkeypatch):
    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 1.5
    run = start_sandbox(data)
    counts = _count_calls(monkeypatch, run.kube, "list_pods", "list_pods_at")
    real_watch = run.kube.watch_pods
    versions: list[str] = []

    def watch_pods(selector, namespace, version, timeout_seconds, watcher):
        versions.append(version)
        if len(versions) == 1:  # the first watch: its version already left the server's history
            raise KubeError("watch pods: 410 Expired: too old resource version", 410, "Expired")
        if len(versions) == 2:  # the second: ended by the server after its first event
            for event in real_watch(selector, namespace, version, timeout_seconds, watcher):
                yield event
                return
        yield from real_watch(selector, namespace, version, timeout_seconds, watcher)

    monkeypatch.setattr(run.kube, "watch_pods", watch_pods)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    outcomes = campaign.run(run.loaded.profile.workloads)
    assert all(o.result is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
    assert counts == {"list_pods": 0, "list_pods_at": 2}, counts  # listed again after the 410 only
    assert len(versions) >= 3, versions
    assert int(versions[2]) > int(versions[1]) > 0, versions  # resumed from the version last seen
    campaign.cleanup()


def test_without_watch_waiting_probes_share_one_pod_list_per_namespace(start_sandbox, monkeypatch):
    """Where watch is refused (403): polling is one LIST per namespace per tick for all waiting probes, not one
    GET per pod per tick, and the progress output says so once."""
    data = demo_data()
    data["sandbox"]["podStartSeconds"] = 1.5  # every probe waits through several ticks
    run = start_sandbox(data)
    _refuse_watch(monkeypatch, run.kube)
    counts = {"get": 0, "list": 0}
    real_read, real_list = run.kube.read_pod, run.kube.list_pods

    def read_pod(namespace, name):
        counts["get"] += 1
        return real_read(namespace, name)

    def list_pods(*args, **kwargs):
        counts["list"] += 1
        return real_list(*args, **kwargs)

    monkeypatch.setattr(run.kube, "read_pod", read_pod)
    monkeypatch.setattr(run.kube, "list_pods", list_pods)
    said: list[str] = []
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile, progress=said.append)
    workloads = run.loaded.profile.workloads
    targets = [Target(w, g) for w in workloads for g in (None, "ng-batch")]
    started = time.monotonic()
    outcomes = campaign.run(targets)
    ticks = (time.monotonic() - started) / POLL_SECONDS
    assert all(o.result is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
    # each pod is read alone about once (when it leaves the list of unfinished pods; once more if the watch was
    # refused while it waited for its pod to show), not once per tick ...
    assert counts["get"] <= 3 * len(targets), counts
    # ... and the waiting is at most one (cluster-wide) LIST per tick, plus one per new pod
    assert 0 < counts["list"] <= ticks + 1 + len(targets), (counts, ticks)
    polling = [m for m in said if "polling" in m]
    assert len(polling) == 1, said
    assert "403 Forbidden" in polling[0]
    campaign.cleanup()


def test_a_slow_pod_list_holds_up_the_other_waiters_one_tick_at_most(start_sandbox, monkeypatch):
    run = start_sandbox(demo_data())
    _refuse_watch(monkeypatch, run.kube)  # polling, as where watch is refused
    real_list, real_log = run.kube.list_pods, run.kube.pod_log
    other_finished = threading.Event()
    slow: list[bool] = []  # whether the other waiter finished while the first LIST hung

    def list_pods(*args, **kwargs):
        if not slow:
            # The first LIST hangs (a stuck connection) until the other waiter has read its finished pod's log:
            # it can only get there on its own GETs, a tick after the LIST stopped answering.
            slow.append(False)
            slow[0] = other_finished.wait(timeout=90)
        return real_list(*args, **kwargs)

    def pod_log(*args, **kwargs):
        other_finished.set()  # the thread in the slow LIST cannot be here
        return real_log(*args, **kwargs)

    monkeypatch.setattr(run.kube, "list_pods", list_pods)
    monkeypatch.setattr(run.kube, "pod_log", pod_log)
    campaign = Campaign(kube=run.kube, profile=run.loaded.profile)
    outcomes = campaign.run(run.loaded.profile.workloads)
    assert all(o.result is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
    assert slow == [True], "the other waiter waited for the slow LIST"
    campaign.cleanup()


def test_the_probe_pod_spec_carries_the_profiles_image_placement_and_pull_secrets():
    from pytest_eksid.probe.program import PLAN_VARIABLE
    from pytest_eksid.profile import load_profile

    profile = load_profile("finance-prod", REPO).profile
    probe = profile.probe.model_validate(
        {
            "image": "registry.example/eksid-probe:2",
            "timeoutSeconds": 90,
            "nodeSelector": {"eks.amazonaws.com/nodegroup": "finance"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "finance", "effect": "NoSchedule"}],
            "imagePullSecrets": ["ecr-pull"],
        }
    )
    custom = profile.model_copy(update={"probe": probe})
    manifest = probe_pod_manifest(custom, custom.workloads[0], "run-1")
    spec = manifest["spec"]
    assert spec["serviceAccountName"] == "invoice-exporter-aws-sa"
    assert spec["containers"][0]["image"] == "registry.example/eksid-probe:2"
    assert spec["activeDeadlineSeconds"] == 90
    assert spec["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "finance"}
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "finance", "effect": "NoSchedule"}
    ]
    assert spec["imagePullSecrets"] == [{"name": "ecr-pull"}]
    plan = json.loads(next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == PLAN_VARIABLE))
    assert plan["step_seconds"] == 35  # (90 - 20) / 2: identity and actions both fit in the deadline
    assert restricted_violations(manifest) == []


def test_a_pod_whose_create_got_no_answer_is_still_deleted(start_sandbox, monkeypatch):
    """The POST went out and the pod was made, but the answer was lost (a read timeout): the campaign
    does not know the pod's name; cleanup finds it by the run's label."""
    run = start_sandbox(demo_data())
    real_create = run.kube.create_pod

    def create_then_lose_the_answer(namespace, manifest):
        real_create(namespace, manifest)
        raise KubeError(f"create pod in namespace {namespace}: no complete answer: no answer within 30s")

    monkeypatch.setattr(run.kube, "create_pod", create_then_lose_the_answer)
    profile = run.loaded.profile
    campaign = Campaign(kube=run.kube, profile=profile)
    outcomes = campaign.run(profile.workloads[:1])
    assert "no answer within 30s" in str(outcomes[profile.workloads[0].name].error)
    label = f"{RUN_ID_LABEL}={campaign.run_id}"
    assert len(run.kube.list_pods(label)) == 1  # it exists, nameless to the campaign
    assert len(campaign.cleanup()) == 1
    assert run.kube.list_pods(label) == []
