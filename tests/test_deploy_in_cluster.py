"""The nightly runner of ``deploy/`` runs inside a cluster as its CronJob's pod, with exactly its least privilege.

One demo sandbox seeds ``deploy/rbac.yaml`` unchanged (``sandbox.manifests``), an IAM role with exactly
``deploy/runner-iam-policy.json`` and the ``eksid-profile`` ConfigMap (a live profile of this very
cluster); after start the admin associates the role with ``pytest-eksid/pytest-eksid-runner`` through
the EKS API (Pod Identity). The CronJob's jobTemplate pod (``tests/helpers/deploy.py`` says what is kept
and what changed) then runs the real suites in the sandbox, reaching the API server with in-cluster
config and AWS with the pod's webhook-injected identity.

"Remove any permission and the run fails naming it" is proven in two parts (a run per permission would
cost minutes each):

- usage: during the passing run the API server and the AWS endpoint log every request of the runner's
  identity; every rule of the ClusterRole and every action of the IAM policy must have been used and
  allowed, so none is superfluous (``pods/exec`` through ``--eksid-exec``; the few a passing run cannot
  use are listed with their reasons in ``NOT_USED_BY_A_PASSING_RUN``), and none of the runner's requests
  was refused, so none is missing;
- removal: with one RBAC verb and one IAM action taken away, the run fails and its report names each.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from kubernetes import client

from pytest_eksid.sandbox import fidelity
from tests.helpers import deploy
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox

# Rules a passing run cannot use, each for its reason; tests/test_deploy.py still holds them against the
# calls kube.py makes, so none of them is granted for nothing.
NOT_USED_BY_A_PASSING_RUN = {
    # only the second Ctrl-C/SIGTERM path (pytest_eksid/interrupts.py); it deletes no more than `delete` may
    ("", "pods", "deletecollection"): "interrupt path",
    # only when a probe pod fails: its events go into the failure (probe/pod.py _events); without the
    # verb the report says "(events unavailable: ...)" and the run's verdicts are unchanged
    ("", "events", "list"): "probe failure diagnostics",
    # the workload's ServiceAccount comes from the cluster-wide list (kube.all_service_accounts); a GET only
    # where that list is refused
    ("", "serviceaccounts", "get"): "fallback when list is refused",
}
# IAM actions of deploy/runner-iam-policy.json a run uses only with an option the CronJob does not pass.
OPTIONAL_ACTIONS = {
    # --eksid-cloudtrail (opt-in): the previous run's probe sessions in CloudTrail (docs/cloudtrail.md)
    "cloudtrail:LookupEvents": "only with --eksid-cloudtrail",
    # IAM read in bulk: only when the run reads at least --eksid-iam-bulk distinct roles (25), the demo two
    "iam:GetAccountAuthorizationDetails": "only from --eksid-iam-bulk distinct roles",
}
DEMO_WORKLOADS = ("invoice-exporter", "billing-worker")


@pytest.fixture(scope="module")
def runner_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = open_sandbox(deploy.runner_sandbox(demo_data()), tmp_path_factory.mktemp("runner"), "runner")
    try:
        profile = running.loaded.profile
        env = running.sandbox.runner_env
        admin = {
            "region_name": profile.cluster.region,
            "endpoint_url": env["AWS_ENDPOINT_URL"],
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        }
        # A customer managed policy attached to a demo role (the same grant as its inline one), so that the
        # runner reads attached policies too (iam:GetPolicy, iam:GetPolicyVersion) as on most real roles.
        iam = boto3.client("iam", **admin)
        billing = iam.get_role_policy(RoleName="demo-billing-worker", PolicyName="demo-billing-worker-permissions")
        attached = iam.create_policy(PolicyName="demo-billing-send", PolicyDocument=_json(billing["PolicyDocument"]))
        iam.attach_role_policy(RoleName="demo-billing-worker", PolicyArn=attached["Policy"]["Arn"])
        boto3.client("eks", **admin).create_pod_identity_association(
            clusterName=profile.cluster.name,
            namespace=deploy.NAMESPACE,
            serviceAccount=deploy.SERVICE_ACCOUNT,
            roleArn=f"arn:aws:iam::{profile.cluster.account_id}:role/{deploy.ROLE_NAME}",
        )
        yield running
    finally:
        close_sandbox(running)


def _runner_arn_prefix(running: Running) -> str:
    return f"arn:aws:sts::{running.loaded.profile.cluster.account_id}:assumed-role/{deploy.ROLE_NAME}/"


def _aws_requests(running: Running, since: int) -> list[tuple[str, int]]:
    """(action, status) of every request the runner's role sessions signed after entry ``since``."""
    prefix = _runner_arn_prefix(running)
    arns: dict[str, str] = {}
    out = []
    for entry in running.sandbox.aws.requests.entries[since:]:
        if entry.access_key_id not in arns:
            arns[entry.access_key_id] = fidelity.caller_arn(entry.access_key_id)
        if arns[entry.access_key_id].startswith(prefix):
            out.append((entry.action, entry.status))
    return out


def test_the_nightly_runner_passes_in_cluster_and_uses_every_permission(runner_cluster: Running) -> None:
    api_log, aws_log = runner_cluster.sandbox.kubeapi.requests, runner_cluster.sandbox.aws.requests.entries
    api_start, aws_start = len(api_log), len(aws_log)

    run = deploy.run_runner_pod(runner_cluster, "pytest-eksid-nightly-manual", ["--eksid-exec"])

    assert run.phase == "Succeeded", run.log[-4000:]
    assert run.outcomes, run.log[-4000:]
    assert not run.failed(), run.log[-4000:]
    for workload in DEMO_WORKLOADS:  # the real suites ran for the demo's workloads, not an empty selection
        assert any(workload in key and v == "passed" for key, v in run.outcomes.items()), workload
    assert {"junit.xml", "inventory.json"} <= set(run.results), run.results
    assert any(f.startswith("allure/") for f in run.results), run.results
    # No secret the sandbox handed out (keys, session tokens, ServiceAccount tokens, the seeded Secrets'
    # values the runner scanned) is in its log or its reports.
    output = run.log + run.report
    leaked = sum(1 for s in runner_cluster.sandbox.minted_secrets if len(s) >= 16 and s in output)
    assert leaked == 0, f"{leaked} of the sandbox's secrets are in the runner's log or reports"
    # It cleaned up every probe pod it created (its requests came as the pod's ServiceAccount: below).
    managed = client.CoreV1Api(runner_cluster.kube.api_client).list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/managed-by=pytest-eksid"
    )
    assert [p.metadata.name for p in managed.items] == []

    # Usage: every RBAC rule was exercised and allowed, no request of the runner was refused.
    mine = [r for r in api_log[api_start:] if r.user == deploy.USER]
    refused = sorted({(r.verb, r.group, r.resource, r.namespace) for r in mine if not r.allowed})
    assert refused == [], f"the runner was refused: {refused}"
    used = {(r.group, r.resource, r.verb) for r in mine}
    unused = deploy.rbac_triples(deploy.cluster_role()) - used - set(NOT_USED_BY_A_PASSING_RUN)
    assert unused == set(), f"granted by deploy/rbac.yaml but never used: {sorted(unused)}"

    # ... and every IAM action, by the runner's own role sessions.
    aws = _aws_requests(runner_cluster, aws_start)
    denied = sorted({a for a, status in aws if status == 403})
    assert denied == [], f"the runner's role was denied: {denied}"
    unused_actions = (
        deploy.policy_actions(deploy.runner_policy()) - {a for a, status in aws if status < 400} - set(OPTIONAL_ACTIONS)
    )
    assert unused_actions == set(), f"allowed by deploy/runner-iam-policy.json but never used: {sorted(unused_actions)}"


def test_removing_a_permission_fails_the_run_naming_it(runner_cluster: Running) -> None:
    """One RBAC verb (list secrets) and one IAM action (iam:GetRole) taken away, in one run of the tests that
    need them: the run fails and its report names the verb and resource, and the action."""
    admin = client.RbacAuthorizationV1Api(runner_cluster.kube.api_client)
    role = admin.read_cluster_role(deploy.SERVICE_ACCOUNT)
    original_rules = copy.deepcopy(role.rules)
    for rule in role.rules:
        if rule.resources == ["secrets"]:
            rule.verbs = [v for v in rule.verbs if v != "list"] or ["get"]
    admin.replace_cluster_role(deploy.SERVICE_ACCOUNT, role)
    env = runner_cluster.sandbox.runner_env
    iam = boto3.client(
        "iam",
        region_name=runner_cluster.loaded.profile.cluster.region,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    narrowed = deploy.runner_policy()
    narrowed["Statement"][0]["Action"].remove("iam:GetRole")
    policy_name = f"{deploy.ROLE_NAME}-permissions"
    iam.put_role_policy(RoleName=deploy.ROLE_NAME, PolicyName=policy_name, PolicyDocument=_json(narrowed))
    try:
        run = deploy.run_runner_pod(
            runner_cluster,
            "pytest-eksid-nightly-narrowed",
            ["-k", "test_namespace_secrets_and_configmaps or test_trust_policy"],
        )
    finally:
        role = admin.read_cluster_role(deploy.SERVICE_ACCOUNT)
        role.rules = original_rules
        admin.replace_cluster_role(deploy.SERVICE_ACCOUNT, role)
        iam.put_role_policy(
            RoleName=deploy.ROLE_NAME, PolicyName=policy_name, PolicyDocument=_json(deploy.runner_policy())
        )

    assert run.phase == "Failed", run.log[-4000:]
    secrets = [run.messages[k] for k in run.failed() if "test_namespace_secrets_and_configmaps" in k]
    trust = [run.messages[k] for k in run.failed() if "test_trust_policy" in k]
    assert secrets, run.log[-4000:]
    assert trust, run.log[-4000:]
    for message in secrets:
        assert f'User "{deploy.USER}" cannot list resource "secrets"' in message, message
    for message in trust:
        assert "AccessDenied" in message, message
        assert "iam:GetRole" in message, message


def _json(document: object) -> str:
    return json.dumps(document)


def test_the_runner_pod_is_the_cronjobs_template() -> None:
    """What the in-cluster run changes of deploy/cronjob.yaml's pod: only the image's registry placeholder,
    the command (the Dockerfile's ENTRYPOINT), the results volume (emptyDir for the PVC) and appended args."""
    template = deploy.cronjob()["spec"]["jobTemplate"]["spec"]["template"]
    pod = deploy.runner_pod("p", ["--eksid-exec"])
    spec, want = pod["spec"], copy.deepcopy(template["spec"])
    (container,) = spec["containers"]
    (wanted,) = want["containers"]
    assert container["args"] == [*wanted["args"], "--eksid-exec"]
    assert container["command"][:3] == ["python", "-m", "pytest"]
    assert container["command"][-1] == str(Path(deploy.REPO) / "suites")
    assert wanted["image"].endswith("/" + container["image"])
    for key in ("securityContext", "resources", "volumeMounts", "name"):
        assert container[key] == wanted[key]
    for key in ("serviceAccountName", "restartPolicy", "securityContext"):
        assert spec[key] == want[key]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["results"] == {"name": "results", "emptyDir": {}}
    assert volumes["profile"] == next(v for v in want["volumes"] if v["name"] == "profile")


def test_the_kubelet_rewrites_arguments_under_unmounted_paths(tmp_path: Path) -> None:
    """What lets the CronJob's ``--profile=/profiles/cluster.yaml`` work where ``/profiles`` cannot be mounted:
    a path argument, or an option's ``=path``, under a mountPath gets the volume's host path; others stay."""
    from pytest_eksid.sandbox.node import _rewrite_arg

    mounts = {"/profiles": tmp_path / "profile", "/results": tmp_path / "results"}
    assert _rewrite_arg("--profile=/profiles/cluster.yaml", mounts) == f"--profile={tmp_path}/profile/cluster.yaml"
    assert _rewrite_arg("/results", mounts) == str(tmp_path / "results")
    assert _rewrite_arg("--junitxml=/resultsx/j.xml", mounts) == "--junitxml=/resultsx/j.xml"
    assert _rewrite_arg("-p", mounts) == "-p"
    assert _rewrite_arg("no:cacheprovider", mounts) == "no:cacheprovider"
    # The image's own files are the host's: a path that exists stays, even under a mountPath (a clone under /tmp
    # with the CronJob's emptyDir at /tmp: its interpreter and --rootdir must not become the emptyDir's).
    existing = tmp_path / "repo"
    existing.mkdir()
    under = {str(tmp_path): tmp_path / "emptydir"}
    assert _rewrite_arg(f"--rootdir={existing}", under) == f"--rootdir={existing}"
    assert _rewrite_arg(f"{tmp_path}/not-there", under) == f"{tmp_path}/emptydir/not-there"
