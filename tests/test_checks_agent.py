"""pytest_eksid.checks.agent over hand-made DaemonSet/Pod/Node JSON, add-on answers and probe results."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.agent import (
    CHART_DAEMONSETS,
    addon_findings,
    agent_pod_selectors,
    daemonset_findings,
    endpoint_findings,
    node_coverage,
    oidc_provider_findings,
    tolerates,
)
from pytest_eksid.profile import Workload

PI = Workload.model_validate(
    {
        "name": "checkout-api",
        "namespace": "checkout-prod",
        "serviceAccount": "checkout-api-aws-sa",
        "mechanism": "pod-identity",
        "roleArn": "arn:aws:iam::111122223333:role/eks-prod-checkout-api-s3-read",
    }
)
IRSA = PI.model_copy(update={"mechanism": "irsa"})
FM5 = "Failure Mode 5 — Pod Identity Agent Missing"
DESCRIBE = "kubectl -n kube-system describe daemonset eks-pod-identity-agent"
PODS = "kubectl -n kube-system get pods -l app.kubernetes.io/name=eks-pod-identity-agent -o wide"


def _one(findings: list[Finding], needle: str) -> Finding:
    hits = [f for f in findings if needle in f.summary]
    assert len(hits) == 1, f"expected one finding with {needle!r}, got: {[f.summary for f in findings]}"
    return hits[0]


# --- daemonset_findings ---------------------------------------------------------------------

HEALTHY_DS: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "eks-pod-identity-agent", "namespace": "kube-system", "generation": 3},
    "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "eks-pod-identity-agent"}}},
    "status": {
        "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3,
        "numberReady": 3,
        "numberAvailable": 3,
        "updatedNumberScheduled": 3,
        "observedGeneration": 3,
    },
}


def ds_with(status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    ds = copy.deepcopy(HEALTHY_DS)
    ds["status"].update(status or {})
    ds["metadata"].update(metadata)
    return ds


def test_daemonset_healthy() -> None:
    assert daemonset_findings(HEALTHY_DS) == []
    assert daemonset_findings(ds_with({"numberUnavailable": 0})) == []


def test_daemonset_missing() -> None:
    (f,) = daemonset_findings(None)
    assert f.summary == "Pod Identity Agent DaemonSet not found"
    assert f.check == "pod_identity_agent"
    assert f.likely.startswith(FM5)
    assert f.expected == "DaemonSet kube-system/eks-pod-identity-agent"
    assert "kubectl -n kube-system get daemonsets" in f.next_steps


@pytest.mark.parametrize(
    ("status", "summary", "seen"),
    [
        pytest.param(
            {"numberReady": 2, "numberAvailable": 2, "numberUnavailable": 1},
            "2 of 3 agent pods ready",
            "desired 3, ready 2, available 2, unavailable 1, updated 3",
            id="not-ready",
        ),
        pytest.param(
            {"numberUnavailable": 1},
            "3 of 3 agent pods ready",
            "unavailable 1",
            id="unavailable-only",
        ),
        pytest.param(
            {"updatedNumberScheduled": 1},
            "1 of 3 agent pods run the current template",
            "updated 1",
            id="not-updated",
        ),
        pytest.param(
            {"desiredNumberScheduled": 0, "numberReady": 0, "numberAvailable": 0, "updatedNumberScheduled": 0},
            "scheduled on no node",
            "desired 0",
            id="no-node",
        ),
        pytest.param(
            {"observedGeneration": 2},
            "the controller has not observed the latest spec",
            "metadata.generation 3, status.observedGeneration 2",
            id="stale-generation",
        ),
        pytest.param(
            {"observedGeneration": None},
            "the controller has not observed the latest spec",
            "status.observedGeneration unset",
            id="no-observed-generation",
        ),
    ],
)
def test_daemonset_unhealthy(status: dict[str, Any], summary: str, seen: str) -> None:
    found = daemonset_findings(ds_with(status))
    assert len(found) == 1, [f.summary for f in found]
    f = found[0]
    assert f.summary == f"Pod Identity Agent DaemonSet kube-system/eks-pod-identity-agent: {summary}"
    assert seen in f.seen
    assert f.next_steps == (DESCRIBE, PODS)


def test_daemonset_uses_its_own_selector_and_name() -> None:
    ds = ds_with({"numberReady": 0})
    ds["metadata"].update(name="pod-identity", namespace="platform")
    ds["spec"]["selector"]["matchLabels"] = {"app": "pia", "tier": "node"}
    f = daemonset_findings(ds, namespace="platform", name="pod-identity")[0]
    assert f.next_steps == (
        "kubectl -n platform describe daemonset pod-identity",
        "kubectl -n platform get pods -l app=pia,tier=node -o wide",
    )
    assert f.likely.startswith(FM5)


def test_daemonset_empty_status_reports_nothing_scheduled_and_stale() -> None:
    ds = {"metadata": {"name": "eks-pod-identity-agent", "generation": 1}}
    summaries = [f.summary.split(": ", 1)[1] for f in daemonset_findings(ds)]
    assert summaries == ["scheduled on no node", "the controller has not observed the latest spec"]


# --- node_coverage: findings -----------------------------------------------------------------


NG = "eks.amazonaws.com/nodegroup"
COMPUTE = "eks.amazonaws.com/compute-type"


def node(name: str, ready: str = "True", **labels: str) -> dict[str, Any]:
    """A v1 Node as the kubelet registers it (os/arch/hostname labels), plus ``labels``."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                **labels,
            },
        },
        "spec": {"providerID": f"aws:///eu-west-1a/i-0{name.encode().hex()[:16]}"},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]},
    }


def agent_pod(
    name: str,
    node_name: str,
    phase: str = "Running",
    ready: str = "True",
    waiting: str | None = None,
    restarts: int = 0,
    daemonset: str = "eks-pod-identity-agent",
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/name": daemonset, "app.kubernetes.io/instance": "eks-pod-identity-agent"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": daemonset, "controller": True}],
        },
        "spec": {"nodeName": node_name},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [{"name": "eks-pod-identity-agent", "state": state, "restartCount": restarts}],
        },
    }


NODES = [
    node("ip-10-0-1-1", group="general", **{NG: "ng-general"}),
    node("ip-10-0-1-2", group="general", **{NG: "ng-general"}),
    node("ip-10-0-2-1", group="batch", **{NG: "ng-batch"}),
    node("ip-10-0-3-1", ready="False", group="general", **{NG: "ng-general"}),
]
GOOD_PODS = [agent_pod("a1", "ip-10-0-1-1"), agent_pod("a2", "ip-10-0-1-2"), agent_pod("a3", "ip-10-0-2-1")]


def test_all_nodes_covered() -> None:
    assert node_coverage(GOOD_PODS, NODES, node_selector={}).findings == []
    assert node_coverage(GOOD_PODS[:2], NODES, node_selector={"group": "general"}).findings == []


def test_old_crashing_pod_next_to_a_healthy_one_is_covered() -> None:
    pods = [*GOOD_PODS, agent_pod("old", "ip-10-0-1-1", waiting="CrashLoopBackOff", ready="False")]
    assert node_coverage(pods, NODES, node_selector={}).findings == []


@pytest.mark.parametrize(
    ("pods", "selector", "seen", "likely"),
    [
        pytest.param(GOOD_PODS[1:], {}, "no agent pod on the node", "does not schedule onto this node", id="missing"),
        pytest.param(
            [agent_pod("a1", "ip-10-0-1-1", ready="False", waiting="CrashLoopBackOff", restarts=7), *GOOD_PODS[1:]],
            {"group": "general"},
            "pod a1 phase Running, Ready False, eks-pod-identity-agent: CrashLoopBackOff, 7 restarts",
            "keeps crashing",
            id="crashloop",
        ),
        pytest.param(
            [agent_pod("a1", "ip-10-0-1-1", ready="False"), *GOOD_PODS[1:]],
            {},
            "pod a1 phase Running, Ready False",
            "not ready",
            id="not-ready",
        ),
        pytest.param(
            [
                agent_pod("a1", "ip-10-0-1-1", phase="Pending", ready="False", waiting="ImagePullBackOff"),
                *GOOD_PODS[1:],
            ],
            {},
            "pod a1 phase Pending, Ready False, eks-pod-identity-agent: ImagePullBackOff",
            "not ready",
            id="pending",
        ),
    ],
)
def test_uncovered_node(pods: list[dict[str, Any]], selector: dict[str, str], seen: str, likely: str) -> None:
    found = node_coverage(pods, NODES, node_selector=selector).findings
    assert len(found) == 1
    f = found[0]
    assert f.summary == "node ip-10-0-1-1 (node group ng-general): no running Pod Identity Agent"
    assert f.expected == "a Running, Ready eks-pod-identity-agent pod on the node"
    assert f.seen == seen
    assert likely in f.likely
    assert f.likely.startswith(FM5)
    assert f.details["node"] == "ip-10-0-1-1"
    assert f.details["node group"] == "ng-general"
    assert f.details["daemonset"].startswith("kube-system/eks-pod-identity-agent (Linux amd64/arm64 nodes")
    assert f.next_steps[0] == (
        "kubectl get pods -A -l app.kubernetes.io/name=eks-pod-identity-agent -o wide "
        "--field-selector spec.nodeName=ip-10-0-1-1"
    )


def test_crashloop_points_at_previous_logs() -> None:
    pods = [agent_pod("a1", "ip-10-0-1-1", ready="False", waiting="CrashLoopBackOff"), *GOOD_PODS[1:]]
    f = node_coverage(pods, NODES, node_selector={}).findings[0]
    assert f.next_steps[1] == "kubectl -n kube-system logs a1 --previous"


def test_selector_excludes_nodes_and_not_ready_nodes_are_skipped() -> None:
    assert node_coverage([], NODES, node_selector={"group": "nowhere"}).findings == []
    found = node_coverage([], NODES, node_selector={"group": "general"}).findings
    assert [f.details["node"] for f in found] == ["ip-10-0-1-1", "ip-10-0-1-2"]  # ip-10-0-3-1 is NotReady


# --- the chart's hybrid DaemonSets, compute the agent does not run on, node groups -------------
# Shapes: aws/eks-pod-identity-agent@d4dc0f3f charts/eks-pod-identity-agent (values.yaml affinity,
# hack/testdata/expected_eks_pod_identity_agent_hybrid*_helm_template.yaml).

HYBRID, HYBRID_BR = "eks-pod-identity-agent-hybrid", "eks-pod-identity-agent-hybrid-bottlerocket"
LINUX = [
    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
]
CHART_AFFINITY = {
    "eks-pod-identity-agent": [*LINUX, {"key": COMPUTE, "operator": "NotIn", "values": ["fargate", "hybrid", "auto"]}],
    HYBRID: [
        *LINUX,
        {"key": COMPUTE, "operator": "In", "values": ["hybrid"]},
        {"key": "os.bottlerocket.aws/variant", "operator": "DoesNotExist"},
        {"key": "os.bottlerocket.aws/version", "operator": "DoesNotExist"},
    ],
    HYBRID_BR: [
        *LINUX,
        {"key": COMPUTE, "operator": "In", "values": ["hybrid"]},
        {"key": "os.bottlerocket.aws/variant", "operator": "Exists"},
        {"key": "os.bottlerocket.aws/version", "operator": "Exists"},
    ],
}


def chart_ds(name: str, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    """A DaemonSet as the chart renders it (release eks-pod-identity-agent in kube-system)."""
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "eks-pod-identity-agent"}
    pod_spec: dict[str, Any] = {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "tolerations": [{"operator": "Exists"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": CHART_AFFINITY[name]}]
                }
            }
        },
        "containers": [{"name": "eks-pod-identity-agent", "image": "eks/eks-pod-identity-agent:v0.1.20"}],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {**selector, "app": "eks-pod-identity-agent"}},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": pod_spec},
        },
        "status": {"desiredNumberScheduled": 1, "numberReady": 1},
    }


CLOUD_ONLY: dict[str, dict[str, Any] | None] = {
    "eks-pod-identity-agent": chart_ds("eks-pod-identity-agent"),
    HYBRID: None,
    HYBRID_BR: None,
}
ALL_THREE: dict[str, dict[str, Any] | None] = {name: chart_ds(name) for name in CHART_AFFINITY}
# A hybrid node registered through SSM (its name is the managed instance id), and one on Bottlerocket.
HYBRID_NODE = node("mi-0123456789abcdef0", **{COMPUTE: "hybrid", "eks.amazonaws.com/hybrid-credential-provider": "ssm"})
BR_NODE = node(
    "mi-0fedcba9876543210",
    **{COMPUTE: "hybrid", "os.bottlerocket.aws/variant": "metal-k8s-1.31", "os.bottlerocket.aws/version": "1.26.0"},
)
FARGATE_NODE = node(
    "fargate-ip-10-0-9-9.eu-west-1.compute.internal",
    **{COMPUTE: "fargate", "eks.amazonaws.com/fargate-profile": "fp-default"},
)
AUTO_NODE = node("i-0abcdef1234567890", **{COMPUTE: "auto", "karpenter.sh/nodepool": "general-purpose"})
WINDOWS_NODE = node("ip-10-0-4-1", **{"kubernetes.io/os": "windows", NG: "ng-windows"})


def test_agent_pods_are_listed_by_each_installed_daemonsets_own_selector() -> None:
    chart_label = "app.kubernetes.io/instance=eks-pod-identity-agent,app.kubernetes.io/name="
    assert agent_pod_selectors(CLOUD_ONLY) == [chart_label + "eks-pod-identity-agent"]
    assert agent_pod_selectors(ALL_THREE) == [chart_label + n for n in ("eks-pod-identity-agent", HYBRID, HYBRID_BR)]
    # The default DaemonSet not found: still listed (by the chart's label), the opt-in ones not.
    assert agent_pod_selectors({}) == ["app.kubernetes.io/name=eks-pod-identity-agent"]
    assert [d.name for d in CHART_DAEMONSETS] == list(CHART_AFFINITY)


def test_a_hybrid_agent_pod_covers_its_hybrid_node() -> None:
    pods = [*GOOD_PODS, agent_pod("h1", HYBRID_NODE["metadata"]["name"], daemonset=HYBRID)]
    pods.append(agent_pod("b1", BR_NODE["metadata"]["name"], daemonset=HYBRID_BR))
    coverage = node_coverage(pods, [*NODES, HYBRID_NODE, BR_NODE], node_selector={}, daemonsets=ALL_THREE)
    assert coverage.findings == []
    assert coverage.notes == []


@pytest.mark.parametrize(
    ("hybrid", "daemonset"),
    [pytest.param(HYBRID_NODE, HYBRID, id="hybrid"), pytest.param(BR_NODE, HYBRID_BR, id="hybrid-bottlerocket")],
)
def test_an_installed_hybrid_daemonset_missing_from_its_node_is_named(hybrid: dict[str, Any], daemonset: str) -> None:
    coverage = node_coverage(GOOD_PODS, [*NODES, hybrid], node_selector={}, daemonsets=ALL_THREE)
    (f,) = coverage.findings
    name = hybrid["metadata"]["name"]
    assert f.summary == f"node {name} (no {NG} label): no running Pod Identity Agent"
    assert f.expected == f"a Running, Ready {daemonset} pod on the node"
    assert f.details["daemonset"].startswith(f"kube-system/{daemonset} (hybrid nodes")
    assert f.next_steps[0] == (
        f"kubectl get pods -A -l app.kubernetes.io/name={daemonset} -o wide --field-selector spec.nodeName={name}"
    )
    assert f"kubectl -n kube-system describe daemonset {daemonset}" in f.next_steps
    assert coverage.notes == []


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        pytest.param(HYBRID_NODE, "opt-in DaemonSet kube-system/eks-pod-identity-agent-hybrid, which is not", id="hyb"),
        pytest.param(BR_NODE, "--set daemonsets.hybrid-bottlerocket.create=true", id="hybrid-bottlerocket"),
        pytest.param(FARGATE_NODE, "EKS Pod Identity is not available on Fargate", id="fargate"),
        pytest.param(AUTO_NODE, "Auto Mode runs Pod Identity itself, no agent pod is expected", id="auto"),
        pytest.param(WINDOWS_NODE, "no agent DaemonSet admits it (os windows, arch amd64, compute type", id="win"),
    ],
)
def test_a_node_no_agent_daemonset_is_due_on_is_a_note_not_a_failure(extra: dict[str, Any], phrase: str) -> None:
    coverage = node_coverage(GOOD_PODS, [*NODES, extra], node_selector={}, daemonsets=CLOUD_ONLY)
    assert coverage.findings == []
    (note,) = coverage.notes
    assert note.startswith(f"node {extra['metadata']['name']} (")
    assert phrase in note
    assert node_coverage(GOOD_PODS, [*NODES, extra], node_selector={}, daemonsets=CLOUD_ONLY).findings == []


def test_a_fargate_node_with_its_taint_is_not_even_noted() -> None:
    fargate = {
        **FARGATE_NODE,
        "spec": {"taints": [{"key": COMPUTE, "value": "fargate", "effect": "NoSchedule"}]},
    }
    assert node_coverage(GOOD_PODS, [*NODES, fargate], node_selector={}, daemonsets=CLOUD_ONLY).notes == []


def test_a_live_daemonset_narrowed_by_hand_fails_the_nodes_it_leaves_out() -> None:
    narrowed = {**CLOUD_ONLY, "eks-pod-identity-agent": chart_ds("eks-pod-identity-agent", {NG: "ng-general"})}
    (f,) = node_coverage(GOOD_PODS[:2], NODES, node_selector={}, daemonsets=narrowed).findings
    assert f.summary == "node ip-10-0-2-1 (node group ng-batch): no running Pod Identity Agent"
    assert "DaemonSet kube-system/eks-pod-identity-agent's own nodeSelector, node affinity or tolerations" in f.likely
    # The chart's own DaemonSet admits the node: the agent just is not there.
    (f,) = node_coverage(GOOD_PODS[:2], NODES, node_selector={}, daemonsets=CLOUD_ONLY).findings
    assert "does not schedule onto this node" in f.likely


def test_a_pod_listed_by_two_selectors_counts_once() -> None:
    crashing = agent_pod("a1", "ip-10-0-1-1", ready="False", waiting="CrashLoopBackOff")
    (f,) = node_coverage([crashing, crashing, *GOOD_PODS[1:]], NODES, node_selector={}).findings
    assert f.seen == "pod a1 phase Running, Ready False, eks-pod-identity-agent: CrashLoopBackOff"


def test_hostile_node_labels_and_names_are_escaped_bounded_and_kept_out_of_commands() -> None:
    hostile_group = "\x1b[2J\x1b[31mpwned" + "x" * 200
    hostile = node("evil;rm -rf ~\u202e", **{NG: hostile_group})
    (f,) = node_coverage(GOOD_PODS, [*NODES, hostile], node_selector={}).findings
    text = f.message()
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert f.summary.startswith("node evil\\x3brm\\x20-rf\\x20\\x7e\\u202e (node group \\x1b\\x5b2J\\x1b\\x5b31mpwned")
    assert f.details["node group"].endswith("...(+151 chars)")
    assert len(f.details["node group"]) < 120
    for command in f.next_steps:
        assert "evil" not in command
        assert "pwned" not in command
        assert "<node>" in command or "daemonset" in command
    (note,) = node_coverage(
        GOOD_PODS, [*NODES, {**AUTO_NODE, "metadata": {**AUTO_NODE["metadata"], "name": "\x07bell"}}], node_selector={}
    ).notes
    assert note.startswith("node \\x07bell (no eks.amazonaws.com/nodegroup label)")


# --- addon_findings -------------------------------------------------------------------------


def test_addon_absent_or_active() -> None:
    assert addon_findings(None) == []
    assert addon_findings({"addonName": "eks-pod-identity-agent", "clusterName": "prod", "status": "ACTIVE"}) == []


@pytest.mark.parametrize(
    ("status", "likely"),
    [
        ("DEGRADED", "installed but unhealthy"),
        ("CREATE_FAILED", "failed to install"),
        ("UPDATE_FAILED", "hand-edited fields"),
        ("CREATING", "still being installed"),
        ("SOMETHING_NEW", "not ACTIVE"),
    ],
)
def test_addon_not_active(status: str, likely: str) -> None:
    addon = {
        "addonName": "eks-pod-identity-agent",
        "clusterName": "prod-platform-a",
        "status": status,
        "addonVersion": "v1.3.4-eksbuild.1",
        "health": {"issues": [{"code": "InsufficientNumberOfReplicas", "message": "2 of 3 ready", "resourceIds": []}]},
    }
    (f,) = addon_findings(addon)
    assert f.summary == f"EKS add-on eks-pod-identity-agent on cluster prod-platform-a is {status}"
    assert f.seen == (
        f"status {status}, version v1.3.4-eksbuild.1; health issues: InsufficientNumberOfReplicas: 2 of 3 ready"
    )
    assert likely in f.likely
    assert f.details == {"issues": "InsufficientNumberOfReplicas"}
    assert (
        f.next_steps[0] == "aws eks describe-addon --cluster-name prod-platform-a --addon-name eks-pod-identity-agent"
    )


def test_addon_without_health() -> None:
    (f,) = addon_findings({"addonName": "eks-pod-identity-agent", "clusterName": "c", "status": "DEGRADED"})
    assert f.seen == "status DEGRADED, version unknown"
    assert f.details == {}


# --- endpoint_findings ----------------------------------------------------------------------

URI = "http://169.254.170.23/v1/credentials"


def test_endpoint_good_and_irsa() -> None:
    assert endpoint_findings(PI, {"configured": True, "uri": URI, "outcome": "credentials", "http_status": 200}) == []
    assert endpoint_findings(IRSA, {"configured": False}) == []


def test_endpoint_not_configured() -> None:
    (f,) = endpoint_findings(PI, {"configured": False}, cluster="prod-platform-a")
    assert f.summary.startswith("checkout-api (checkout-prod/checkout-api-aws-sa, pod-identity): the pod has no ")
    assert "Failure Mode 7 — Association Eventual Consistency" in f.likely
    assert f.next_steps[0] == (
        "aws eks list-pod-identity-associations --cluster-name prod-platform-a "
        "--namespace checkout-prod --service-account checkout-api-aws-sa"
    )


@pytest.mark.parametrize(
    ("result", "seen", "likely"),
    [
        ({"outcome": "refused"}, f"GET {URI}: refused", "nothing answers on the pod's node"),
        ({"outcome": "timeout"}, f"GET {URI}: timeout", FM5),
        ({"outcome": "http-error", "http_status": 400}, f"GET {URI}: http-error, HTTP 400", "agent itself rejected"),
        ({"outcome": "http-error", "http_status": 403}, "HTTP 403", "NO_PROXY=169.254.170.23,fd00:ec2::23"),
        ({"outcome": "http-error", "http_status": 404}, "HTTP 404", "found no Pod Identity association"),
        ({"outcome": "http-error", "http_status": 429}, "HTTP 429", "the agent rate-limits its own callers"),
        ({"outcome": "http-error", "http_status": 500}, "HTTP 500", "EKS Auth behind it failed"),
        ({"outcome": "http-error", "http_status": 503}, "HTTP 503", "EKS Auth behind it failed"),
        ({"outcome": "no-token", "detail": "No such file"}, f"GET {URI}: no-token", "eks-pod-identity-token"),
        ({"outcome": "error"}, f"GET {URI}: error", "did not hand out credentials"),
        ({}, f"GET {URI}: error", "did not hand out credentials"),
    ],
)
def test_endpoint_failures(result: dict[str, Any], seen: str, likely: str) -> None:
    (f,) = endpoint_findings(PI, {"configured": True, "uri": URI, **result})
    assert f.summary.endswith(": the Pod Identity Agent did not return credentials")
    assert seen in f.seen
    assert likely in f.likely
    assert f.next_steps


def _refused(status: int, code: str | None) -> Finding:
    (f,) = endpoint_findings(
        PI, {"configured": True, "uri": URI, "outcome": "http-error", "http_status": status, "error_code": code}
    )
    return f


FM3 = "Failure Mode 3 — Trust Policy Denied"


@pytest.mark.parametrize(
    ("status", "code", "likely"),
    [
        (400, "AccessDeniedException", FM3),
        (404, "ResourceNotFoundException", "deleted after the pod started"),
        (404, "ResourceNotFoundException", "Failure Mode 7"),
        (400, "InvalidTokenException", "rejected the pod's token as invalid"),
        (400, "ExpiredTokenException", "rejected the pod's token as expired"),
        (400, "InvalidParameterException", "refused the agent's request as malformed"),
        (400, "InvalidRequestException", "refused the agent's request as malformed"),
        (429, "ThrottlingException", "retry later"),
        (500, "InternalServerException", "EKS Auth behind it failed"),
        (503, "ServiceUnavailableException", "EKS Auth behind it failed"),
        (400, "SomethingNewException", "SomethingNewException"),
    ],
)
def test_endpoint_refusal_is_diagnosed_by_the_eks_auth_code(status: int, code: str, likely: str) -> None:
    f = _refused(status, code)
    assert f.seen == f"GET {URI}: http-error, HTTP {status}, {code}"
    assert likely in f.likely


def test_a_trust_policy_denial_reads_as_failure_mode_3_not_as_a_bad_token() -> None:
    # EKS Auth answers a trust-policy denial with 400, the status of its token errors too.
    f = _refused(400, "AccessDeniedException")
    assert f.likely.startswith(FM3)
    assert "sts:TagSession" in f.likely
    assert "pods.eks.amazonaws.com" in f.likely
    assert "invalid or expired" not in f.likely
    assert "rejected the pod's token" not in f.likely
    assert f.next_steps[0] == (
        "aws iam get-role --role-name eks-prod-checkout-api-s3-read --query Role.AssumeRolePolicyDocument"
    )


def test_a_403_with_a_code_is_not_taken_for_a_wrong_address() -> None:
    assert _refused(403, "AccessDeniedException").likely.startswith(FM3)
    assert "NO_PROXY" in _refused(403, None).likely


def test_a_no_association_answer_points_at_the_association_first() -> None:
    f = _refused(404, "ResourceNotFoundException")
    assert f.next_steps[0].startswith("aws eks list-pod-identity-associations --cluster-name <cluster>")
    assert "checkout-prod/checkout-api-aws-sa" in f.likely


@pytest.mark.parametrize("code", ["Access\x1b[31mDenied", "AccessDeniedException; rm -rf /", "", 7, "A" * 65])
def test_an_error_code_that_is_not_a_plain_word_is_ignored(code: Any) -> None:
    f = _refused(400, code)
    assert f.seen == f"GET {URI}: http-error, HTTP 400"
    assert "agent itself rejected" in f.likely


# --- oidc_provider_findings -----------------------------------------------------------------

ISSUER = "https://oidc.eks.ap-southeast-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PATH = "oidc.eks.ap-southeast-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
OTHER = "oidc.eks.eu-west-1.amazonaws.com/id/OTHER"


@pytest.mark.parametrize(
    "providers",
    [
        {PATH: ["sts.amazonaws.com"], OTHER: []},
        {f"https://{PATH}/": ["sts.amazonaws.com", "other"]},
        {f"arn:aws:iam::111122223333:oidc-provider/{PATH}": ["sts.amazonaws.com"]},
        {PATH.lower(): ["sts.amazonaws.com"]},
    ],
)
def test_oidc_provider_good(providers: dict[str, list[str]]) -> None:
    assert oidc_provider_findings(ISSUER, providers) == []


@pytest.mark.parametrize(
    ("issuer", "providers", "summary", "seen", "likely"),
    [
        (
            None,
            {PATH: ["sts.amazonaws.com"]},
            "cluster prod-platform-a has no OIDC issuer",
            "no issuer",
            "IRSA cannot work",
        ),
        (ISSUER, {}, "no IAM OIDC provider for its issuer", "providers in the account: none", "InvalidIdentityToken"),
        (
            ISSUER,
            {OTHER: ["sts.amazonaws.com"]},
            "no IAM OIDC provider",
            f"providers in the account: {OTHER}",
            "recreated",
        ),
        (
            ISSUER,
            {PATH: ["vault"]},
            "does not list sts.amazonaws.com as a client id",
            "client ids: vault",
            "incorrect token audience",
        ),
        (ISSUER, {PATH: []}, "does not list sts.amazonaws.com", "client ids: none", "InvalidIdentityToken"),
    ],
)
def test_oidc_provider_failures(
    issuer: str | None, providers: dict[str, list[str]], summary: str, seen: str, likely: str
) -> None:
    (f,) = oidc_provider_findings(issuer, providers, cluster="prod-platform-a", region="ap-southeast-1")
    assert f.check == "oidc_provider"
    assert summary in f.summary
    assert f.seen == seen
    assert likely in f.likely
    assert "Failure Mode 3 — Trust Policy Denied" in f.likely
    if "does not list" not in summary:
        assert f.next_steps[-2:] == (
            "aws iam list-open-id-connect-providers",
            "eksctl utils associate-iam-oidc-provider --cluster prod-platform-a --region ap-southeast-1 --approve",
        )
    else:
        assert "--client-id sts.amazonaws.com" in f.next_steps[0]


def test_oidc_provider_without_cluster_name_uses_placeholder() -> None:
    (f,) = oidc_provider_findings(ISSUER, {})
    assert f.next_steps[1] == "eksctl utils associate-iam-oidc-provider --cluster <cluster> --approve"


def tainted(name: str, *taints: dict[str, str]) -> dict[str, Any]:
    return {**node(name, group="gpu"), "spec": {"taints": list(taints)}}


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def test_a_node_the_workload_cannot_run_on_needs_no_agent() -> None:
    nodes = [*NODES, tainted("ip-10-0-9-1", GPU_TAINT)]
    assert node_coverage(GOOD_PODS, nodes, node_selector={}).findings == []
    # Tolerating the taint, the workload could land there: then the node needs its agent.
    found = node_coverage(
        GOOD_PODS, nodes, node_selector={}, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]
    ).findings
    assert [f.summary for f in found] == [f"node ip-10-0-9-1 (no {NG} label): no running Pod Identity Agent"]


def test_a_prefer_no_schedule_taint_does_not_keep_the_workload_away() -> None:
    nodes = [*NODES, tainted("ip-10-0-9-2", {"key": "spot", "value": "true", "effect": "PreferNoSchedule"})]
    assert len(node_coverage(GOOD_PODS, nodes, node_selector={}).findings) == 1


@pytest.mark.parametrize(
    ("toleration", "covers"),
    [
        ({"operator": "Exists"}, True),  # tolerates everything
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "value": "present"}, True),  # Equal is the default; no effect: any effect
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "dedicated", "operator": "Exists"}, False),
        ({"operator": "Equal", "value": "present"}, False),  # an empty key needs Exists
    ],
)
def test_tolerations_follow_kubernetes_rules(toleration: dict[str, str], covers: bool) -> None:
    assert tolerates([toleration], GPU_TAINT) is covers
