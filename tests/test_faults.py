"""Every check is shown to fail on the sandbox fault it exists to catch, and only there.

One row per fault: the demo profile with that fault switched on is run with the real suites, in
a subprocess, as a user runs them. Exactly the row's tests must fail, each with the row's phrases
in its own failure message (a message a person can act on); a fault that broke anything else
would hide what the suites really catch. The clean demo must pass entirely. A new fault is one row.
"""

from __future__ import annotations

from typing import get_args

import pytest

from pytest_eksid.profile import FaultName
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

PI, IRSA = "invoice-exporter", "billing-worker"
ACCOUNT = "111122223333"
GROUPS = ("ng-general", "ng-batch")

IDENTITY = "suites/test_identity.py::test_caller_role"
PROVIDER = "suites/test_identity.py::test_credential_provider"
BINDING = "suites/test_configuration.py::test_binding"
TRUST = "suites/test_configuration.py::test_trust_policy"
PERMISSION_POLICY = "suites/test_configuration.py::test_permission_policy"
DEDICATED_SA = "suites/test_configuration.py::test_dedicated_service_account"
OWNER = "suites/test_configuration.py::test_owner_label"
ENDPOINT = "suites/test_agent.py::test_agent_endpoint_answers"
DAEMONSET = "suites/test_agent.py::test_agent_daemonset_available"
COVERAGE = "suites/test_agent.py::test_agent_on_every_node"
ADDON = "suites/test_agent.py::test_agent_addon_active"
OIDC = "suites/test_agent.py::test_oidc_provider"
REACH = "suites/test_agent.py::test_pods_reach_the_agent_directly"
SECRETS = "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps"
TEMPLATES = "suites/test_static_credentials.py::test_pod_templates"
PROBE_ENV = "suites/test_static_credentials.py::test_probe_environment"
RUNNING = "suites/test_static_credentials.py::test_running_containers"
LEGACY = "suites/test_static_credentials.py::test_legacy_iam_user_has_no_active_keys"
IMDS = "suites/test_imds.py::test_imds_blocked"
ACTION = "suites/test_permissions.py::test_action"

Expected = dict[str, tuple[str, ...]]  # failing test id -> phrases its own failure message must carry


def fails(test: str, workload: str, *phrases: str) -> Expected:
    return {f"{test}[fault/{workload}]": phrases}


def fails_once(test: str, *phrases: str, namespace: str | None = None) -> Expected:
    """A cluster test (or, with ``namespace``, a namespace test): one failure however many workloads it serves."""
    return {f"{test}[fault{f'/ns/{namespace}' if namespace else ''}]": phrases}


def actions(workload: str, *phrases: str, only: str = "") -> Expected:
    """The workload's permission tests (``only``: "allow" or "deny"), as the demo profile lists them."""
    w = next(w for w in demo_data()["workloads"] if w["name"] == workload)
    return {
        f"{ACTION}[fault/{workload}/{kind}-{i}:{check['action']}]": phrases
        for kind in ("allow", "deny")
        if only in ("", kind)
        for i, check in enumerate(w.get(kind) or [])
    }


def imds(workloads: tuple[str, ...], groups: tuple[str, ...], versions: tuple[str, ...], *phrases: str) -> Expected:
    return {f"{IMDS}[fault/{w}@{g}-{v}]": phrases for w in workloads for g in groups for v in versions}


def every_probe_test(workload: str, *phrases: str) -> Expected:
    out = {
        **fails(IDENTITY, workload, *phrases),
        **fails(PROVIDER, workload, *phrases),
        **fails(PROBE_ENV, workload, *phrases),
        **actions(workload, *phrases),
        **imds((workload,), GROUPS, ("v1", "v2"), *phrases),
    }
    if workload == PI:
        out |= fails(ENDPOINT, workload, *phrases)
    return out


NO_IDENTITY = "the probe has no AWS identity (see test_caller_role)"

# fault -> (the fault's entry under sandbox.faults, exactly the tests that must fail and their phrases)
FAULTS: dict[str, tuple[dict[str, object], Expected]] = {
    "wrong-role": (
        {"fault": "wrong-role", "workload": PI, "role": "demo-reporting"},
        fails(IDENTITY, PI, "wrong role bound: the Pod Identity association points at role 'demo-reporting'")
        | fails(BINDING, PI, "wrong role bound: demo-reporting")
        | actions(PI, f"the probe ran as arn:aws:sts::{ACCOUNT}:assumed-role/demo-reporting/", only="allow"),
    ),
    "default-service-account": (
        {"fault": "default-service-account", "workload": PI},
        fails(DEDICATED_SA, PI, "Failure Mode 1", "runs as ServiceAccount 'default'")
        | fails(RUNNING, PI, "the pod runs as ServiceAccount 'default'"),
    ),
    "missing-association": (
        {"fault": "missing-association", "workload": PI},
        fails(IDENTITY, PI, "no Pod Identity association existed when the pod started")
        | fails(PROVIDER, PI, "no Pod Identity association existed when the pod started")
        | fails(BINDING, PI, "no Pod Identity association", "aws eks list-pod-identity-associations")
        | fails(ENDPOINT, PI, "no Pod Identity association for finance-demo/invoice-exporter-aws-sa")
        | actions(PI, NO_IDENTITY)
        | fails(RUNNING, PI, "no Pod Identity credentials injected"),
    ),
    "missing-annotation": (
        {"fault": "missing-annotation", "workload": IRSA},
        fails(IDENTITY, IRSA, "lacks the eks.amazonaws.com/role-arn annotation")
        | fails(PROVIDER, IRSA, "lacks the eks.amazonaws.com/role-arn annotation")
        | fails(BINDING, IRSA, "no eks.amazonaws.com/role-arn annotation")
        | actions(IRSA, NO_IDENTITY)
        | fails(RUNNING, IRSA, "IRSA not injected"),
    ),
    "wildcard-trust-sub": (
        {"fault": "wildcard-trust-sub", "workload": IRSA},
        fails(TRUST, IRSA, "system:serviceaccount:billing-demo:*"),
    ),
    "missing-aud-condition": (
        {"fault": "missing-aud-condition", "workload": IRSA},
        fails(TRUST, IRSA, "no aud condition", "sts.amazonaws.com"),
    ),
    "missing-tag-session": (
        {"fault": "missing-tag-session", "workload": PI},
        fails(IDENTITY, PI, "not sts:TagSession, which Pod Identity always calls")
        | fails(PROVIDER, PI, "not sts:TagSession, which Pod Identity always calls")
        | fails(TRUST, PI, "may not call sts:TagSession")
        | fails(ENDPOINT, PI, "HTTP 400, AccessDeniedException", "Failure Mode 3 — Trust Policy Denied")
        | actions(PI, NO_IDENTITY),
    ),
    "agent-down": (
        {"fault": "agent-down"},
        fails(IDENTITY, PI, "Failure Mode 5 — Pod Identity Agent Missing", f"see {DAEMONSET}[fault]")
        | fails(PROVIDER, PI, "Failure Mode 5 — Pod Identity Agent Missing", f"see {DAEMONSET}[fault]")
        | fails_once(DAEMONSET, "0 of 2 agent pods ready")
        | fails(COVERAGE, PI, "no running Pod Identity Agent", "CrashLoopBackOff")
        | fails_once(ADDON, "is DEGRADED")
        | fails(ENDPOINT, PI, "refused", f"see {DAEMONSET}[fault]")
        | actions(PI, NO_IDENTITY),
    ),
    "agent-down-one-node-group": (
        {"fault": "agent-down", "nodegroup": "ng-batch"},
        fails_once(DAEMONSET, "1 of 2 agent pods ready")
        | fails(COVERAGE, PI, "ip-10-0-2-10")
        | fails_once(ADDON, "is DEGRADED"),
    ),
    "imds-exposed": (
        {"fault": "imds-exposed"},
        imds((PI, IRSA), GROUPS, ("v1", "v2"), "Failure Mode 6", "demo-node"),
    ),
    "imds-exposed-v1": (
        {"fault": "imds-exposed", "versions": ["v1"]},
        imds((PI, IRSA), GROUPS, ("v1",), "HttpTokens=required"),
    ),
    "imds-exposed-one-node-group": (
        {"fault": "imds-exposed", "nodegroup": "ng-batch"},
        imds((PI, IRSA), ("ng-batch",), ("v1", "v2"), "ip-10-0-2-10"),
    ),
    "static-keys-in-secret": (
        {"fault": "static-keys-in-secret", "workload": PI},
        fails_once(
            SECRETS,
            "Secret finance-demo/invoice-exporter-aws-credentials",
            "aws_access_key_id",
            namespace="finance-demo",
        ),
    ),
    "static-keys-in-configmap": (
        {"fault": "static-keys-in-configmap", "workload": IRSA},
        fails_once(SECRETS, "ConfigMap billing-demo/billing-worker-aws-config", "AKIA…", namespace="billing-demo"),
    ),
    "static-keys-in-env": (
        {"fault": "static-keys-in-env", "workload": PI},
        fails(TEMPLATES, PI, "AWS_ACCESS_KEY_ID", "literal values")
        | fails(RUNNING, PI, "static AWS keys in the environment"),
    ),
    "image-baked-credentials": (
        {"fault": "image-baked-credentials"},
        fails(IDENTITY, PI, f"arn:aws:iam::{ACCOUNT}:user/ci-image-builder", "static IAM user keys are in use")
        | fails(PROVIDER, PI, "shared-credentials-file", "~/.aws/credentials file in the image")
        | fails(PROBE_ENV, PI, "credentials file")
        | actions(PI, f"the probe ran as arn:aws:iam::{ACCOUNT}:user/ci-image-builder", only="allow")
        # IRSA's web identity comes before the shared file in the SDK's chain: only the file is a finding.
        | fails(PROBE_ENV, IRSA, "credentials file"),
    ),
    "excess-permissions": (
        {"fault": "excess-permissions", "workload": PI},
        fails(PERMISSION_POLICY, PI, "temporary-debug-access")
        | {  # s3:* on *: the S3 denials of the contract fall, the SQS one stands
            f"{ACTION}[fault/{PI}/deny-0:s3:DeleteObject]": ("allowed by temporary-debug-access#Debug",),
            f"{ACTION}[fault/{PI}/deny-1:s3:GetObject]": ("allowed by temporary-debug-access#Debug",),
        },
    ),
    "exact-key-delete-grant": (
        {"fault": "exact-key-delete-grant", "workload": PI},
        fails(PERMISSION_POLICY, PI, "probe-object-cleanup", "allows destructive actions: s3:DeleteObject")
        | {
            f"{ACTION}[fault/{PI}/deny-0:s3:DeleteObject]": (
                "denied on the safe form's stand-in beside it, but probe-object-cleanup#Cleanup allow",
            )
        },
    ),
    "both-mechanisms": (
        {"fault": "both-mechanisms", "workload": PI},
        fails(BINDING, PI, "both mechanisms") | fails(TRUST, PI, "extra principal", "oidc-provider/"),
    ),
    "webhook-not-injecting": (
        {"fault": "webhook-not-injecting"},
        fails(IDENTITY, PI, "no credentials injected")
        | fails(PROVIDER, PI, "no credentials injected")
        | fails(ENDPOINT, PI, "AWS_CONTAINER_CREDENTIALS_FULL_URI not injected")
        | actions(PI, NO_IDENTITY)
        | fails(RUNNING, PI, "no Pod Identity credentials injected")
        | fails(IDENTITY, IRSA, "no credentials injected")
        | fails(PROVIDER, IRSA, "no credentials injected")
        | actions(IRSA, NO_IDENTITY)
        | fails(RUNNING, IRSA, "IRSA not injected"),
    ),
    "no-oidc-provider": (
        {"fault": "no-oidc-provider"},
        fails_once(
            OIDC, "cluster demo: no IAM OIDC provider", "eksctl utils associate-iam-oidc-provider --cluster demo"
        )
        | fails(IDENTITY, IRSA, "InvalidIdentityToken", "IRSA token rejected", f"see {OIDC}[fault]")
        | fails(PROVIDER, IRSA, "InvalidIdentityToken")
        | actions(IRSA, NO_IDENTITY),
    ),
    "legacy-user-active-key": (
        {"fault": "legacy-user-active-key", "workload": IRSA},
        fails(LEGACY, IRSA, "billing-worker-legacy", "update-access-key"),
    ),
    "association-after-pod": (
        {"fault": "association-after-pod", "workload": PI},
        fails(
            RUNNING,
            PI,
            "association created after the pod started",
            "rollout restart deployment/invoice-exporter",
        ),
    ),
    "kms-key-policy-deny": (
        {"fault": "kms-key-policy-deny", "workload": PI, "key": "demo-finance"},
        {
            f"{ACTION}[fault/{PI}/allow-0:s3:PutObject]": (
                "the KMS key policy does not allow kms:GenerateDataKey",
                "the object is SSE-KMS",
                "aws kms get-key-policy --key-id",
            ),
        },
    ),
    "kms-via-service-missing": (
        {"fault": "kms-via-service-missing", "workload": PI},
        {
            f"{ACTION}[fault/{PI}/deny-3:kms:Decrypt]": (
                "allowed by demo-invoice-exporter-permissions#UseFinanceKeyThroughS3",
            )
        },
    ),
    "missing-owner-label": (
        {"fault": "missing-owner-label", "workload": PI},
        fails(OWNER, PI, "no platform.mycompany.io/identity-owner label"),
    ),
    "proxy-captures-agent": (
        {"fault": "proxy-captures-agent", "workload": PI},
        fails(REACH, PI, "sets an HTTP proxy that would carry the agent's requests", "169.254.170.23,fd00:ec2::23"),
    ),
    "host-network": (
        {"fault": "host-network", "workload": PI},
        fails(REACH, PI, "runs its pods with hostNetwork", "IMDS hop limit"),
    ),
    "image-pull-error": (
        {"fault": "image-pull-error"},
        every_probe_test(PI, "ErrImagePull", "Failed to pull image")
        | every_probe_test(IRSA, "ErrImagePull", "Failed to pull image"),
    ),
}


def test_every_fault_kind_has_a_row():
    assert {str(entry["fault"]) for entry, _ in FAULTS.values()} == set(get_args(FaultName))


def test_clean_demo_passes_every_check(tmp_path):
    run = run_pytest(f"--profile={write_profile(tmp_path, demo_data(), 'fault')}", "--eksid-exec", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
    assert run.failed() == []
    assert len(run.outcomes) >= 30
    skipped = sorted(k for k, v in run.outcomes.items() if v == "skipped")
    assert skipped == [], skipped


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_is_caught(tmp_path, name):
    fault, expected = FAULTS[name]
    assert expected, "a fault that fails nothing is not caught"
    data = demo_data()
    data["sandbox"]["faults"] = [fault]
    run = run_pytest(f"--profile={write_profile(tmp_path, data, 'fault')}", "--eksid-exec", tmp_path=tmp_path)
    assert "INTERNALERROR" not in run.stdout + run.stderr
    failed = set(run.failed())
    assert failed == set(expected), (
        f"not caught: {sorted(set(expected) - failed)}\nfailed beyond the row: {sorted(failed - set(expected))}\n"
        f"{run.stdout[-6000:]}"
    )
    for test, phrases in expected.items():
        message = run.messages[test]
        for phrase in phrases:
            assert phrase in message, f"{test}: {phrase!r} not in its failure message:\n{message}"
