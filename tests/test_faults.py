"""Every check is shown to fail on the sandbox fault it exists to catch, and only there.

One row per fault: the demo profile with that fault switched on is run with the real suites, in
a subprocess, as a user runs them. The row's tests must fail (with a message a person can act
on), and every failure must belong to the faulted workload: a fault that breaks unrelated
checks would hide what the suites really catch. The clean demo must pass entirely.
A new fault is one row.
"""

from __future__ import annotations

import pytest

from tests.conftest import demo_data, run_pytest, write_profile

PI, IRSA = "invoice-exporter", "billing-worker"


def ids(*tests: str, workload: str) -> set[str]:
    return {f"{t}[fault/{workload}]" for t in tests}


IDENTITY = "suites/test_identity.py::test_caller_role"
PROVIDER = "suites/test_identity.py::test_credential_provider"
BINDING = "suites/test_configuration.py::test_binding"
TRUST = "suites/test_configuration.py::test_trust_policy"
PERMISSION_POLICY = "suites/test_configuration.py::test_permission_policy"
DEDICATED_SA = "suites/test_configuration.py::test_dedicated_service_account"
ENDPOINT = "suites/test_agent.py::test_agent_endpoint_answers"
DAEMONSET = "suites/test_agent.py::test_agent_daemonset_available"
COVERAGE = "suites/test_agent.py::test_agent_on_every_node"
ADDON = "suites/test_agent.py::test_agent_addon_active"
OIDC = "suites/test_agent.py::test_oidc_provider"
SECRETS = "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps"
IMDS = "suites/test_imds.py::test_imds_blocked"
GROUPS = ("ng-general", "ng-batch")
TEMPLATES = "suites/test_static_credentials.py::test_pod_templates"

# fault -> (the fault's entry, the workloads it may break, tests that must fail, text the messages must carry)
FAULTS: dict[str, tuple[dict[str, object], set[str], set[str], list[str]]] = {
    "wrong-role": (
        {"fault": "wrong-role", "workload": PI, "role": "demo-reporting"},
        {PI},
        ids(IDENTITY, BINDING, workload=PI),
        ["wrong role bound", "demo-reporting"],
    ),
    "default-service-account": (
        {"fault": "default-service-account", "workload": PI},
        {PI},
        ids(DEDICATED_SA, workload=PI),
        ["Failure Mode 1"],
    ),
    "missing-association": (
        {"fault": "missing-association", "workload": PI},
        {PI},
        ids(IDENTITY, PROVIDER, BINDING, ENDPOINT, workload=PI),
        ["no Pod Identity association", "aws eks list-pod-identity-associations"],
    ),
    "missing-annotation": (
        {"fault": "missing-annotation", "workload": IRSA},
        {IRSA},
        ids(IDENTITY, PROVIDER, BINDING, workload=IRSA),
        ["no eks.amazonaws.com/role-arn annotation"],
    ),
    "wildcard-trust-sub": (
        {"fault": "wildcard-trust-sub", "workload": IRSA},
        {IRSA},
        ids(TRUST, workload=IRSA),
        ["system:serviceaccount:billing-demo:*"],
    ),
    "missing-aud-condition": (
        {"fault": "missing-aud-condition", "workload": IRSA},
        {IRSA},
        ids(TRUST, workload=IRSA),
        ["sts.amazonaws.com"],
    ),
    "missing-tag-session": (
        {"fault": "missing-tag-session", "workload": PI},
        {PI},
        ids(IDENTITY, TRUST, ENDPOINT, workload=PI),
        ["sts:TagSession"],
    ),
    "agent-down": (
        {"fault": "agent-down"},
        {PI},
        ids(IDENTITY, DAEMONSET, COVERAGE, ADDON, ENDPOINT, workload=PI),
        ["Pod Identity Agent"],
    ),
    "agent-down-one-node-group": (
        {"fault": "agent-down", "nodegroup": "ng-batch"},
        {PI},
        ids(DAEMONSET, COVERAGE, ADDON, workload=PI),
        ["ip-10-0-2-10"],
    ),
    "imds-exposed": (
        {"fault": "imds-exposed"},
        {PI, IRSA},
        {f"{IMDS}[fault/{w}@{g}-{v}]" for w in (PI, IRSA) for g in GROUPS for v in ("v1", "v2")},
        ["Failure Mode 6", "demo-node"],
    ),
    "imds-exposed-v1": (
        {"fault": "imds-exposed", "versions": ["v1"]},
        {PI, IRSA},
        {f"{IMDS}[fault/{w}@{g}-v1]" for w in (PI, IRSA) for g in GROUPS},
        ["HttpTokens=required"],
    ),
    "imds-exposed-one-node-group": (
        {"fault": "imds-exposed", "nodegroup": "ng-batch"},
        {f"{w}@ng-batch" for w in (PI, IRSA)},
        {f"{IMDS}[fault/{w}@ng-batch-{v}]" for w in (PI, IRSA) for v in ("v1", "v2")},
        ["ip-10-0-2-10"],
    ),
    "static-keys-in-secret": (
        {"fault": "static-keys-in-secret", "workload": PI},
        {PI},
        ids(SECRETS, workload=PI),
        ["invoice-exporter-aws-credentials", "aws_access_key_id"],
    ),
    "static-keys-in-env": (
        {"fault": "static-keys-in-env", "workload": PI},
        {PI},
        ids(TEMPLATES, "suites/test_static_credentials.py::test_running_containers", workload=PI),
        ["AWS_ACCESS_KEY_ID"],
    ),
    "excess-permissions": (
        {"fault": "excess-permissions", "workload": PI},
        {PI},
        ids(PERMISSION_POLICY, workload=PI)
        | {
            f"suites/test_permissions.py::test_action[fault/{PI}/deny-0:s3:DeleteObject]",
            f"suites/test_permissions.py::test_action[fault/{PI}/deny-1:s3:GetObject]",
        },
        ["temporary-debug-access"],
    ),
    "both-mechanisms": (
        {"fault": "both-mechanisms", "workload": PI},
        {PI},
        ids(BINDING, workload=PI),
        ["both mechanisms"],
    ),
    "webhook-not-injecting": (
        {"fault": "webhook-not-injecting"},
        {PI, IRSA},
        ids(IDENTITY, PROVIDER, workload=PI) | ids(IDENTITY, PROVIDER, workload=IRSA),
        ["no credentials injected"],
    ),
    "no-oidc-provider": (
        {"fault": "no-oidc-provider"},
        {IRSA},
        ids(IDENTITY, OIDC, workload=IRSA),
        ["InvalidIdentityToken"],
    ),
    "legacy-user-active-key": (
        {"fault": "legacy-user-active-key", "workload": IRSA},
        {IRSA},
        ids("suites/test_static_credentials.py::test_legacy_iam_user_has_no_active_keys", workload=IRSA),
        ["billing-worker-legacy", "update-access-key"],
    ),
    "association-after-pod": (
        {"fault": "association-after-pod", "workload": PI},
        {PI},
        ids("suites/test_static_credentials.py::test_running_containers", workload=PI),
        ["association created after the pod started", "rollout restart deployment/invoice-exporter"],
    ),
    "kms-key-policy-deny": (
        {"fault": "kms-key-policy-deny", "workload": PI, "key": "demo-finance"},
        {PI},
        {
            f"suites/test_permissions.py::test_action[fault/{PI}/allow-0:s3:PutObject]",
            f"suites/test_permissions.py::test_action[fault/{PI}/allow-2:kms:Decrypt]",
        },
        ["no resource-based policy allows the kms:Decrypt action", "aws kms get-key-policy --key-id"],
    ),
    "image-pull-error": (
        {"fault": "image-pull-error"},
        {PI, IRSA},
        ids(IDENTITY, workload=PI) | ids(IDENTITY, workload=IRSA),
        ["ErrImagePull", "Failed to pull image"],
    ),
}


def test_clean_demo_passes_every_check(tmp_path):
    run = run_pytest(f"--profile={write_profile(tmp_path, demo_data(), 'fault')}", "--eksid-exec", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
    assert run.failed() == []
    assert len(run.outcomes) >= 30
    skipped = sorted(k for k, v in run.outcomes.items() if v == "skipped")
    assert skipped == [], skipped


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_is_caught(tmp_path, name):
    fault, workloads, must_fail, texts = FAULTS[name]
    data = demo_data()
    data["sandbox"]["faults"] = [fault]
    run = run_pytest(f"--profile={write_profile(tmp_path, data, 'fault')}", "--eksid-exec", tmp_path=tmp_path)
    failed = set(run.failed())
    assert must_fail <= failed, f"not caught: {sorted(must_fail - failed)}\n{run.stdout[-8000:]}"
    strays = sorted(t for t in failed if not any(f"fault/{w}" in t for w in workloads))
    assert strays == [], f"failures outside the faulted workload(s): {strays}"
    for text in texts:
        assert text in run.stdout, f"{text!r} not in the failure messages:\n{run.stdout[-8000:]}"
    assert "INTERNALERROR" not in run.stdout + run.stderr
