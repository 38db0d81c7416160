"""Every check is shown to fail on the sandbox fault it exists to catch, and only there.

One row per fault: a sandbox with that fault switched on is checked by the real suites, in a
subprocess, as a user runs them. Exactly the row's tests must fail, each with the row's phrases in
its own failure message (a message a person can act on); a fault that broke anything else would
hide what the suites really catch. The clean demo must pass entirely. A new fault is one row.

Rows share runs (a run costs a pytest start, a sandbox and its probe pods), in batches chosen so
that no row's proof leans on another's:

- A workload fault (``on=PI`` or ``on=IRSA``) changes only objects named by its workload: its
  ServiceAccount, Deployment, pods, association, trust and permission policies, its namespace's
  Secrets and ConfigMaps, the key policy's list of its roles, its legacy IAM user
  (``pytest_eksid/sandbox/runtime.py`` asks ``faulted(fault, workload)`` for each). So each row
  gets its own copy of the demo workload, named after the row, in its own namespace, with its own
  ServiceAccount, role (a copy of the demo role) and legacy user; the rows of one mechanism share
  one sandbox. The demo's own two workloads ride along unfaulted as controls. "Only there" still
  holds per row: the run's failures must be exactly the union of the rows' expectations, whose
  test ids are disjoint (each names the row's workload or namespace), so a fault that broke a
  control's test, a cluster test, or a test of its own copy beyond its row shows as a failure beyond
  the batch. A fault cannot hide behind another row's expected failure: the sandbox applies it only
  to objects of its own workload, which no other copy shares (the copies share only the demo's
  bucket, queue and KMS key, and the one fault on the key, ``kms-key-policy-deny``, only leaves its
  own roles out of the key policy). ``extra-deployer`` is one of these: its Role and RoleBinding are in
  its copy's namespace, and each copy's namespace declares the ``deployers`` its base's does, so who can
  become each copy is judged as the demo's is and only the faulted copy's ``test_who_can_become`` fails.
- A cluster fault (the agent, IMDS, the webhook, the OIDC provider, the probe image) touches every
  workload of its family, so it runs in the demo with its two workloads, alone — except faults of
  disjoint families, which share a sandbox: ``agent-down`` breaks only what Pod Identity uses (the
  agent serves nothing else, and its pods' chain stops at the container provider), and
  ``no-oidc-provider`` only IRSA's web-identity exchange; their expectations are disjoint and the
  cluster tests each names (the agent's DaemonSet and add-on; the OIDC provider) are different.
  An exposed IMDS reaches a probe only through its IMDS step (a request of its own, whatever the
  credentials) or as the last link of the SDK's credential chain, which no probe reaches beside
  ``agent-down`` on ng-batch (only IMDS-only probes run there; each workload's own probe runs on
  ng-general, whose agent is up) or ``image-baked-credentials`` (the baked file, or IRSA's web
  identity, comes before it): those pairs share a sandbox too, their expectations disjoint (IMDS
  tests against agent and identity tests). Never with a fault that leaves a probe without
  credentials (``webhook-not-injecting``): its chain would fall through to the exposed IMDS.
  Variants of one fault (all node groups, one node group, IMDSv1 only) change the same nodes:
  never together. ``agent-throttling`` runs alone: it is of ``agent-down``'s family (the same
  agents, the same endpoint and identity tests), and beside an exposed IMDS a throttled probe's
  chain is not one this table has proven to stop at the container provider.
- ``undeclared-identity`` adds a ServiceAccount no workload declares (and its role's trust in it): it
  fails the one cluster test ``test_undeclared_identities``, so each of its variants (annotation,
  association) runs alone; nothing else reads a ServiceAccount or association no workload names.

A batch is one parametrized test; its rows are subtests, so a row that is not caught is reported
under its own name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from pytest_eksid.sandbox.model import FaultName
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import SuiteRun, run_pytest

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
UNDECLARED = "suites/test_identities.py::test_undeclared_identities"
BECOME = "suites/test_identities.py::test_who_can_become"

Expected = dict[str, tuple[str, ...]]  # failing test id -> phrases its own failure message must carry


@dataclass(frozen=True)
class Target:
    """A workload as a run's test ids and messages name it."""

    cluster: str  # the profile's file name: test ids are <cluster>/<workload>
    base: str  # the demo workload it is (or copies): its allow/deny lists
    name: str
    namespace: str
    service_account: str
    role: str

    @property
    def id(self) -> str:
        return f"{self.cluster}/{self.name}"


@dataclass(frozen=True)
class At:
    """Where a row's fault is: its cluster, and the Pod Identity and IRSA workloads it may break."""

    cluster: str
    pi: Target
    irsa: Target


def demo_target(cluster: str, base: str) -> Target:
    w = next(w for w in demo_data()["workloads"] if w["name"] == base)
    return Target(cluster, base, base, w["namespace"], w["serviceAccount"], w["roleArn"].rsplit("/", 1)[1])


def copy_target(cluster: str, base: str, row: str) -> Target:
    """The row's own copy of a demo workload: named after the row, in a namespace of that name."""
    return Target(cluster, base, row, row, f"{row}-aws-sa", f"demo-{row}")


def fails(test: str, w: Target, *phrases: str) -> Expected:
    return {f"{test}[{w.id}]": phrases}


def fails_once(test: str, at: At, *phrases: str, namespace: str | None = None) -> Expected:
    """A cluster test (or, with ``namespace``, a namespace test): one failure however many workloads it serves."""
    return {f"{test}[{at.cluster}{f'/ns/{namespace}' if namespace else ''}]": phrases}


def actions(w: Target, *phrases: str, only: str = "") -> Expected:
    """The workload's permission tests (``only``: "allow" or "deny"), as the demo profile lists them."""
    spec = next(d for d in demo_data()["workloads"] if d["name"] == w.base)
    return {
        f"{ACTION}[{w.id}/{kind}-{i}:{check['action']}]": phrases
        for kind in ("allow", "deny")
        if only in ("", kind)
        for i, check in enumerate(spec.get(kind) or [])
    }


def imds(workloads: tuple[Target, ...], groups: tuple[str, ...], versions: tuple[str, ...], *phrases: str) -> Expected:
    return {f"{IMDS}[{w.id}@{g}-{v}]": phrases for w in workloads for g in groups for v in versions}


def every_probe_test(w: Target, *phrases: str) -> Expected:
    out = {
        **fails(IDENTITY, w, *phrases),
        **fails(PROVIDER, w, *phrases),
        **fails(PROBE_ENV, w, *phrases),
        **actions(w, *phrases),
        **imds((w,), GROUPS, ("v1", "v2"), *phrases),
    }
    if w.base == PI:
        out |= fails(ENDPOINT, w, *phrases)
    return out


NO_IDENTITY = "the probe has no AWS identity (see test_caller_role)"


@dataclass(frozen=True)
class Row:
    fault: dict[str, object]  # the entry under sandbox.faults (``workload`` is filled in for ``on``)
    expected: Callable[[At], Expected]  # exactly the tests that must fail, and their phrases
    on: str | None = None  # a workload fault: the demo workload its copy is made from


FAULTS: dict[str, Row] = {
    "wrong-role": Row(
        {"fault": "wrong-role", "role": "demo-reporting"},
        lambda at: (
            fails(
                IDENTITY,
                at.pi,
                "wrong role bound: the Pod Identity association points at role 'demo-reporting'",
                # a failure says what was expected, what was seen and the next command to run
                f"expected: arn:aws:iam::{ACCOUNT}:role/{at.pi.role}",
                f"seen:     arn:aws:sts::{ACCOUNT}:assumed-role/demo-reporting/",
                f"kubectl -n {at.pi.namespace} get sa {at.pi.service_account} -o yaml",
            )
            | fails(BINDING, at.pi, "wrong role bound: demo-reporting")
            | actions(at.pi, f"the probe ran as arn:aws:sts::{ACCOUNT}:assumed-role/demo-reporting/", only="allow")
            # the role really bound is in no workload of the profile, but its trust now pins only the copy's
            # (declared) ServiceAccount: accounted for by that binding, which test_binding judges (no
            # test_undeclared_identities failure: the "pinning it to declared subjects")
        ),
        on=PI,
    ),
    "default-service-account": Row(
        {"fault": "default-service-account"},
        lambda at: (
            fails(DEDICATED_SA, at.pi, "Failure Mode 1", "runs as ServiceAccount 'default'")
            | fails(RUNNING, at.pi, "the pod runs as ServiceAccount 'default'")
        ),
        on=PI,
    ),
    "missing-association": Row(
        {"fault": "missing-association"},
        lambda at: (
            fails(IDENTITY, at.pi, "no Pod Identity association existed when the pod started")
            | fails(PROVIDER, at.pi, "no Pod Identity association existed when the pod started")
            | fails(BINDING, at.pi, "no Pod Identity association", "aws eks list-pod-identity-associations")
            | fails(ENDPOINT, at.pi, f"no Pod Identity association for {at.pi.namespace}/{at.pi.service_account}")
            | actions(at.pi, NO_IDENTITY)
            | fails(RUNNING, at.pi, "no Pod Identity credentials injected")
        ),
        on=PI,
    ),
    "missing-annotation": Row(
        {"fault": "missing-annotation"},
        lambda at: (
            fails(IDENTITY, at.irsa, "lacks the eks.amazonaws.com/role-arn annotation")
            | fails(PROVIDER, at.irsa, "lacks the eks.amazonaws.com/role-arn annotation")
            | fails(BINDING, at.irsa, "no eks.amazonaws.com/role-arn annotation")
            | actions(at.irsa, NO_IDENTITY)
            | fails(RUNNING, at.irsa, "IRSA not injected")
        ),
        on=IRSA,
    ),
    "wildcard-trust-sub": Row(
        {"fault": "wildcard-trust-sub"},
        lambda at: fails(TRUST, at.irsa, f"system:serviceaccount:{at.irsa.namespace}:*"),
        on=IRSA,
    ),
    "missing-aud-condition": Row(
        {"fault": "missing-aud-condition"},
        lambda at: fails(TRUST, at.irsa, "no aud condition", "sts.amazonaws.com"),
        on=IRSA,
    ),
    "missing-tag-session": Row(
        {"fault": "missing-tag-session"},
        lambda at: (
            fails(IDENTITY, at.pi, "not sts:TagSession, which Pod Identity always calls")
            | fails(PROVIDER, at.pi, "not sts:TagSession, which Pod Identity always calls")
            | fails(TRUST, at.pi, "may not call sts:TagSession")
            | fails(ENDPOINT, at.pi, "HTTP 400, AccessDeniedException", "Failure Mode 3 — Trust Policy Denied")
            | actions(at.pi, NO_IDENTITY)
        ),
        on=PI,
    ),
    "agent-down": Row(
        {"fault": "agent-down"},
        lambda at: (
            fails(IDENTITY, at.pi, "Failure Mode 5 — Pod Identity Agent Missing", f"see {DAEMONSET}[{at.cluster}]")
            | fails(PROVIDER, at.pi, "Failure Mode 5 — Pod Identity Agent Missing", f"see {DAEMONSET}[{at.cluster}]")
            | fails_once(DAEMONSET, at, "0 of 2 agent pods ready")
            | fails(COVERAGE, at.pi, "no running Pod Identity Agent", "CrashLoopBackOff")
            | fails_once(ADDON, at, "is DEGRADED")
            | fails(ENDPOINT, at.pi, "refused", f"see {DAEMONSET}[{at.cluster}]")
            | actions(at.pi, NO_IDENTITY)
        ),
    ),
    "agent-down-one-node-group": Row(
        {"fault": "agent-down", "nodegroup": "ng-batch"},
        lambda at: (
            fails_once(DAEMONSET, at, "1 of 2 agent pods ready")
            | fails(COVERAGE, at.pi, "ip-10-0-2-10")
            | fails_once(ADDON, at, "is DEGRADED")
        ),
    ),
    "imds-exposed": Row(
        {"fault": "imds-exposed"},
        lambda at: imds((at.pi, at.irsa), GROUPS, ("v1", "v2"), "Failure Mode 6", "demo-node"),
    ),
    "imds-exposed-v1": Row(
        {"fault": "imds-exposed", "versions": ["v1"]},
        lambda at: imds((at.pi, at.irsa), GROUPS, ("v1",), "HttpTokens=required"),
    ),
    "imds-exposed-one-node-group": Row(
        {"fault": "imds-exposed", "nodegroup": "ng-batch"},
        lambda at: imds((at.pi, at.irsa), ("ng-batch",), ("v1", "v2"), "ip-10-0-2-10"),
    ),
    "static-keys-in-secret": Row(
        {"fault": "static-keys-in-secret"},
        lambda at: fails_once(
            SECRETS,
            at,
            f"Secret {at.pi.namespace}/{at.pi.name}-aws-credentials",
            "aws_access_key_id",
            namespace=at.pi.namespace,
        ),
        on=PI,
    ),
    "static-keys-in-configmap": Row(
        {"fault": "static-keys-in-configmap"},
        lambda at: fails_once(
            SECRETS,
            at,
            f"ConfigMap {at.irsa.namespace}/{at.irsa.name}-aws-config",
            "AKIA…",
            namespace=at.irsa.namespace,
        ),
        on=IRSA,
    ),
    "static-keys-in-env": Row(
        {"fault": "static-keys-in-env"},
        lambda at: (
            fails(TEMPLATES, at.pi, "AWS_ACCESS_KEY_ID", "literal values")
            | fails(RUNNING, at.pi, "static AWS keys in the environment")
        ),
        on=PI,
    ),
    "image-baked-credentials": Row(
        {"fault": "image-baked-credentials"},
        lambda at: (
            fails(IDENTITY, at.pi, f"arn:aws:iam::{ACCOUNT}:user/ci-image-builder", "static IAM user keys are in use")
            | fails(PROVIDER, at.pi, "shared-credentials-file", "~/.aws/credentials file in the image")
            | fails(PROBE_ENV, at.pi, "credentials file")
            | actions(at.pi, f"the probe ran as arn:aws:iam::{ACCOUNT}:user/ci-image-builder", only="allow")
            # IRSA's web identity comes before the shared file in the SDK's chain: only the file is a finding.
            | fails(PROBE_ENV, at.irsa, "credentials file")
        ),
    ),
    "excess-permissions": Row(
        {"fault": "excess-permissions"},
        lambda at: (
            fails(PERMISSION_POLICY, at.pi, "temporary-debug-access")
            | {  # s3:* on *: the S3 denials of the contract fall, the SQS one stands
                f"{ACTION}[{at.pi.id}/deny-0:s3:DeleteObject]": ("allowed by temporary-debug-access#Debug",),
                f"{ACTION}[{at.pi.id}/deny-1:s3:GetObject]": ("allowed by temporary-debug-access#Debug",),
            }
        ),
        on=PI,
    ),
    "exact-key-delete-grant": Row(
        {"fault": "exact-key-delete-grant"},
        lambda at: (
            fails(PERMISSION_POLICY, at.pi, "probe-object-cleanup", "allows destructive actions: s3:DeleteObject")
            | {
                f"{ACTION}[{at.pi.id}/deny-0:s3:DeleteObject]": (
                    "denied on the safe form's stand-in beside it, but probe-object-cleanup#Cleanup allow",
                )
            }
        ),
        on=PI,
    ),
    "both-mechanisms": Row(
        {"fault": "both-mechanisms"},
        lambda at: fails(BINDING, at.pi, "both mechanisms") | fails(TRUST, at.pi, "extra principal", "oidc-provider/"),
        on=PI,
    ),
    "webhook-not-injecting": Row(
        {"fault": "webhook-not-injecting"},
        lambda at: (
            fails(IDENTITY, at.pi, "no credentials injected")
            | fails(PROVIDER, at.pi, "no credentials injected")
            | fails(ENDPOINT, at.pi, "AWS_CONTAINER_CREDENTIALS_FULL_URI not injected")
            | actions(at.pi, NO_IDENTITY)
            | fails(RUNNING, at.pi, "no Pod Identity credentials injected")
            | fails(IDENTITY, at.irsa, "no credentials injected")
            | fails(PROVIDER, at.irsa, "no credentials injected")
            | actions(at.irsa, NO_IDENTITY)
            | fails(RUNNING, at.irsa, "IRSA not injected")
        ),
    ),
    "no-oidc-provider": Row(
        {"fault": "no-oidc-provider"},
        lambda at: (
            fails_once(
                OIDC,
                at,
                "cluster demo: no IAM OIDC provider",
                "eksctl utils associate-iam-oidc-provider --cluster demo",
            )
            | fails(IDENTITY, at.irsa, "InvalidIdentityToken", "IRSA token rejected", f"see {OIDC}[{at.cluster}]")
            | fails(PROVIDER, at.irsa, "InvalidIdentityToken")
            | actions(at.irsa, NO_IDENTITY)
        ),
    ),
    "legacy-user-active-key": Row(
        {"fault": "legacy-user-active-key"},
        lambda at: fails(LEGACY, at.irsa, f"{at.irsa.name}-legacy", "update-access-key"),
        on=IRSA,
    ),
    "association-after-pod": Row(
        {"fault": "association-after-pod"},
        lambda at: fails(
            RUNNING,
            at.pi,
            "association created after the pod started",
            f"rollout restart deployment/{at.pi.name}",
        ),
        on=PI,
    ),
    "webhook-cache-miss": Row(
        {"fault": "webhook-cache-miss"},
        # The pod created right after its ServiceAccount missed the webhook's informer cache; the probe,
        # created later, is mutated: only the running-containers check sees it.
        lambda at: fails(
            RUNNING,
            at.irsa,
            "IRSA not injected as expected",
            "AWS_ROLE_ARN not set",
            "the webhook did not run: restart the pods",
            f"rollout restart deployment/{at.irsa.name}",
        ),
        on=IRSA,
    ),
    "kms-key-policy-deny": Row(
        {"fault": "kms-key-policy-deny", "key": "demo-finance"},
        lambda at: {
            f"{ACTION}[{at.pi.id}/allow-0:s3:PutObject]": (
                "the KMS key policy does not allow kms:GenerateDataKey",
                "the object is SSE-KMS",
                "aws kms get-key-policy --key-id",
            ),
        },
        on=PI,
    ),
    "kms-via-service-missing": Row(
        {"fault": "kms-via-service-missing"},
        lambda at: {
            f"{ACTION}[{at.pi.id}/deny-3:kms:Decrypt]": (f"allowed by {at.pi.role}-permissions#UseFinanceKeyThroughS3",)
        },
        on=PI,
    ),
    "missing-owner-label": Row(
        {"fault": "missing-owner-label"},
        lambda at: fails(OWNER, at.pi, "no platform.mycompany.io/identity-owner label"),
        on=PI,
    ),
    "proxy-captures-agent": Row(
        {"fault": "proxy-captures-agent"},
        lambda at: fails(
            REACH, at.pi, "sets an HTTP proxy that would carry the agent's requests", "169.254.170.23,fd00:ec2::23"
        ),
        on=PI,
    ),
    "host-network": Row(
        {"fault": "host-network"},
        lambda at: fails(REACH, at.pi, "runs its pods with hostNetwork", "IMDS hop limit"),
        on=PI,
    ),
    "agent-throttling": Row(
        {"fault": "agent-throttling"},
        lambda at: (
            fails(IDENTITY, at.pi, "throttled")
            | fails(PROVIDER, at.pi, "throttled")
            | fails(ENDPOINT, at.pi, "throttled", "HTTP 429 without a code: the agent rate-limits its own callers")
            | actions(at.pi, NO_IDENTITY)
        ),
    ),
    "session-tags-disabled": Row(
        {"fault": "session-tags-disabled"},
        lambda at: (
            # The trust lint reads the association's disableSessionTags: its aws:RequestTag conditions cannot hold.
            fails(TRUST, at.pi, "conditions exclude", "the association disables session tags", "disableSessionTags")
            | fails(IDENTITY, at.pi, "Failure Mode 3", "aws:RequestTag/kubernetes-namespace", "does not match")
            | fails(PROVIDER, at.pi, "Failure Mode 3", "aws:RequestTag/kubernetes-namespace", "does not match")
            | fails(ENDPOINT, at.pi, "HTTP 400, AccessDeniedException", "Failure Mode 3 — Trust Policy Denied")
            | actions(at.pi, NO_IDENTITY)
        ),
        on=PI,
    ),
    "undeclared-identity": Row(
        {"fault": "undeclared-identity", "role": "demo-reporting", "owner": "reporting-team"},
        lambda at: fails_once(
            UNDECLARED,
            at,
            f"irsa binding {at.pi.namespace}/reporting-export-aws-sa -> arn:aws:iam::{ACCOUNT}:role/demo-reporting "
            "is not in the profile",
            "owner reporting-team",
            "created 20",
            "from ServiceAccount annotation",
            f"kubectl get serviceaccount -n {at.pi.namespace} reporting-export-aws-sa -o yaml",
            # the role's trust admits that ServiceAccount: a second way in, named as such
            f"role arn:aws:iam::{ACCOUNT}:role/demo-reporting trusts this cluster's ServiceAccounts",
            "aws iam get-role --role-name demo-reporting",
        ),
    ),
    "undeclared-identity-pod-identity": Row(
        {"fault": "undeclared-identity", "role": "demo-reporting", "mechanism": "pod-identity"},
        lambda at: fails_once(
            UNDECLARED,
            at,
            f"pod-identity binding {at.pi.namespace}/reporting-export-aws-sa -> "
            f"arn:aws:iam::{ACCOUNT}:role/demo-reporting is not in the profile",
            "no owner label",
            "from association a-",
            f"aws eks list-pod-identity-associations --cluster-name demo --namespace {at.pi.namespace} "
            "--service-account reporting-export-aws-sa",
        ),
    ),
    "extra-deployer": Row(
        {"fault": "extra-deployer"},
        lambda at: fails(
            BECOME,
            at.pi,
            f"Group developers can run code as {at.pi.namespace}/{at.pi.service_account} and is not a declared "
            "deployer",
            "only the profile's deployers can: ServiceAccount ci/deployer",
            f"create pods (Role {at.pi.namespace}/developers-run-pods via RoleBinding "
            f"{at.pi.namespace}/developers-run-pods)",
            f"kubectl auth can-i create pods -n {at.pi.namespace} --as=someone --as-group=developers",
            f"kubectl get rolebinding developers-run-pods -n {at.pi.namespace} -o yaml",
        ),
        on=PI,
    ),
    "image-pull-error": Row(
        {"fault": "image-pull-error"},
        lambda at: (
            every_probe_test(at.pi, "ErrImagePull", "Failed to pull image")
            | every_probe_test(at.irsa, "ErrImagePull", "Failed to pull image")
        ),
    ),
}

# Cluster faults of disjoint families that share a sandbox (see the module docstring).
SHARED_CLUSTER_RUNS = {
    "agent-down-and-no-oidc-provider": ("agent-down", "no-oidc-provider"),
    "imds-exposed-and-agent-down-on-ng-batch": ("imds-exposed", "agent-down-one-node-group"),
    "imds-v1-and-image-baked-credentials": ("imds-exposed-v1", "image-baked-credentials"),
}


# The rows whose checks read IAM (a role's trust, its permission policies, which role it is), run again with IAM
# read in bulk (--eksid-iam-bulk 1: GetAccountAuthorizationDetails) where every other batch reads it role by role
# (--eksid-iam-bulk 0): the two ways of reading must come to the same verdicts, each fault caught by both.
READ_IN_BULK = "iam-faults-read-in-bulk"
IAM_ROWS = (
    "exact-key-delete-grant",
    "excess-permissions",
    "missing-aud-condition",
    "missing-tag-session",
    "wildcard-trust-sub",
    "wrong-role",
)


def runs() -> dict[str, tuple[str, ...]]:
    """Every run of this module: the batches, and the IAM rows again with IAM read in bulk."""
    return {**batches(), READ_IN_BULK: IAM_ROWS}


def batches() -> dict[str, tuple[str, ...]]:
    """Run name (its profile's file name, so its test ids' cluster) -> the rows it proves."""
    out: dict[str, tuple[str, ...]] = {
        "pod-identity-workload-faults": tuple(sorted(n for n, r in FAULTS.items() if r.on == PI)),
        "irsa-workload-faults": tuple(sorted(n for n, r in FAULTS.items() if r.on == IRSA)),
        **SHARED_CLUSTER_RUNS,
    }
    shared = {n for rows in SHARED_CLUSTER_RUNS.values() for n in rows}
    out |= {n: (n,) for n, r in FAULTS.items() if r.on is None and n not in shared}
    return out


def at_of(batch: str, row: str) -> At:
    """Where the row's fault is in its batch's run: its own copy for a workload fault, else the demo's two."""
    on = FAULTS[row].on
    pi = copy_target(batch, PI, row) if on == PI else demo_target(batch, PI)
    irsa = copy_target(batch, IRSA, row) if on == IRSA else demo_target(batch, IRSA)
    return At(batch, pi, irsa)


def batch_profile(batch: str) -> dict[str, Any]:
    """The demo profile with the batch's faults: each workload fault on its row's own workload copy."""
    data = demo_data()
    for row in runs()[batch]:
        spec = FAULTS[row]
        fault = dict(spec.fault)
        if spec.on is not None:
            target = at_of(batch, row).pi if spec.on == PI else at_of(batch, row).irsa
            base = next(w for w in data["workloads"] if w["name"] == spec.on)
            base_role = base["roleArn"].rsplit("/", 1)[1]
            workload = copy.deepcopy(base)
            workload.update(
                name=target.name,
                namespace=target.namespace,
                serviceAccount=target.service_account,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{target.role}",
            )
            if "legacyIamUser" in workload:
                workload["legacyIamUser"] = f"{target.name}-legacy"
            data["workloads"].append(workload)
            # The copy's namespace has the deployers its base's has (who may become it is judged as there).
            data["deployers"] = [
                *data.get("deployers", []),
                *(
                    {**copy.deepcopy(entry), "namespace": target.namespace}
                    for entry in data.get("deployers", [])
                    if entry["namespace"] == base["namespace"]
                ),
            ]
            role = next(r for r in data["sandbox"]["roles"] if r["name"] == base_role)
            data["sandbox"]["roles"].append({**copy.deepcopy(role), "name": target.role})
            fault["workload"] = target.name
        data["sandbox"]["faults"].append(fault)
    # The emulated IMDS answers from the sandbox's own process, which a loaded test machine can stall past the
    # SDKs' 1 s (an exposed IMDS then looks blocked). A real node's IMDS answers in milliseconds; the verdicts
    # here are about what the answers say, so the batches wait longer for them. Blocked nodes cost the wait.
    data["probe"]["imdsTimeoutSeconds"] = 3
    return data


def test_every_fault_kind_has_a_row():
    assert {str(row.fault["fault"]) for row in FAULTS.values()} == set(get_args(FaultName))


def test_every_row_is_in_one_batch_and_no_two_rows_of_a_batch_expect_the_same_test():
    placed = [row for rows in batches().values() for row in rows]
    assert sorted(placed) == sorted(FAULTS)
    for batch, rows in batches().items():
        seen: dict[str, str] = {}
        for row in rows:
            expected = FAULTS[row].expected(at_of(batch, row))
            assert expected, f"{row}: a fault that fails nothing is not caught"
            for test in expected:
                assert test not in seen, f"{batch}: {test} is expected by both {seen[test]} and {row}"
                seen[test] = row


def test_clean_demo_passes_every_check(tmp_path):
    """The demo as shipped, named as a user names it."""
    run = run_pytest("--profile", "demo", "--eksid-exec", tmp_path=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
    assert run.failed() == []
    assert len(run.outcomes) >= 30
    assert [k for k, v in run.outcomes.items() if v == "skipped"] == []
    # Opt-in checks this run does not ask for are deselected, not skipped.
    assert not any("test_inventory_changes" in k or "test_cloudtrail_identity" in k for k in run.outcomes)
    # Who can become each workload is judged (the demo declares its deployers), and passes.
    for w in (PI, IRSA):
        assert run.outcomes[f"{BECOME}[demo/{w}]"] == "passed"
    assert run.outcomes[f"{UNDECLARED}[demo]"] == "passed"
    assert "eksid: profile demo: profiles/demo.yaml (from --profile)" in run.stdout
    for w in (PI, IRSA):
        assert run.outcomes[f"{IDENTITY}[demo/{w}]"] == "passed"
    assert "eksid: deleted 4 probe pod(s)" in run.stdout


def run_batch(batch: str, tmp_path: Path) -> SuiteRun:
    profile = write_profile(tmp_path, batch_profile(batch), batch)
    bulk = "1" if batch == READ_IN_BULK else "0"
    return run_pytest(f"--profile={profile}", "--eksid-exec", f"--eksid-iam-bulk={bulk}", "-v", tmp_path=tmp_path)


def own_tests(failed: set[str], at: At, row: str) -> set[str]:
    """The failed tests of a workload fault's own copy: its workload's tests and its namespace's."""
    own = (f"[{at.cluster}/{row}]", f"[{at.cluster}/{row}/", f"[{at.cluster}/{row}@", f"[{at.cluster}/ns/{row}]")
    return {test for test in failed if any(mark in test for mark in own)}


@pytest.mark.parametrize("batch", sorted(runs()))
def test_faults_are_caught(tmp_path: Path, subtests: pytest.Subtests, batch: str) -> None:
    run = run_batch(batch, tmp_path)
    assert "INTERNALERROR" not in run.stdout + run.stderr
    # IAM was read the way the run asked for (-v lists the run's AWS calls).
    in_bulk = "iam:GetAccountAuthorizationDetails 1," in run.stdout
    assert in_bulk == (batch == READ_IN_BULK), run.stdout[-3000:]
    assert ("iam:GetRole " in run.stdout) == (batch != READ_IN_BULK), run.stdout[-3000:]
    failed = set(run.failed())
    everything: set[str] = set()
    for row in runs()[batch]:
        at = at_of(batch, row)
        expected = FAULTS[row].expected(at)
        everything |= set(expected)
        with subtests.test(row):
            assert set(expected) <= failed, f"{row}: not caught: {sorted(set(expected) - failed)}\n{run.stdout[-6000:]}"
            for test, phrases in expected.items():
                message = run.messages[test]
                for phrase in phrases:
                    assert phrase in message, f"{row}: {test}: {phrase!r} not in its failure message:\n{message}"
            if FAULTS[row].on is not None:
                beyond = own_tests(failed, at, row) - set(expected)
                assert not beyond, f"{row}: failed beyond the row: {sorted(beyond)}\n{run.stdout[-6000:]}"
    beyond = sorted(failed - everything)
    assert not beyond, f"failed beyond the rows of {batch} {runs()[batch]}: {beyond}\n{run.stdout[-6000:]}"
