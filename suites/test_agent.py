"""Definition of done, point 5: the Pod Identity Agent is healthy where the workload runs.

For IRSA workloads the counterpart is the cluster's IAM OIDC provider.
"""

import pytest

from pytest_eksid.checks import agent
from pytest_eksid.checks.placement import network_findings
from pytest_eksid.fixtures import cluster_refs, fail_on

pytestmark = pytest.mark.agent

AGENT_NS, AGENT_NAME = "kube-system", "eks-pod-identity-agent"
pod_identity_only = pytest.mark.eksid_applies(lambda w: w.mechanism == "pod-identity")
irsa_only = pytest.mark.eksid_applies(lambda w: w.mechanism == "irsa")


@pod_identity_only
def test_agent_daemonset_available(eksid_cluster, eksid_kube):
    """Once per cluster with Pod Identity workloads: desired = ready = updated, none unavailable, observed
    generation current."""
    fail_on(agent.daemonset_findings(eksid_kube.daemon_set(AGENT_NS, AGENT_NAME)))


@pod_identity_only
def test_agent_on_every_node(eksid_profile, eksid_workload, eksid_kube, eksid_campaign, record_property, request):
    """A ready agent pod on every node where the workload's pods can be scheduled (its pod template's
    nodeSelector and tolerations, as the probe mirrors them), from the agent DaemonSet due there (the default
    one, or the opt-in hybrid ones); nodes where none is due (Fargate, Auto Mode, hybrid without the hybrid
    DaemonSet) are noted, not failed."""
    probe = eksid_profile.profile.probe
    placement = eksid_campaign.placement(eksid_workload)  # the template was read once, for the probe
    record_property("placement", placement.source)
    daemonsets = {d.name: eksid_kube.daemon_set(AGENT_NS, d.name) for d in agent.CHART_DAEMONSETS}
    pods = [p for selector in agent.agent_pod_selectors(daemonsets) for p in eksid_kube.pods_once(selector, AGENT_NS)]
    coverage = agent.node_coverage(
        pods,
        eksid_kube.nodes(),
        node_selector=placement.node_selector,
        tolerations=placement.tolerations,
        daemonsets=daemonsets,
        node_group_label=probe.node_group_label,
    )
    for note in coverage.notes:
        record_property("agent_note", note)
    if coverage.notes:
        request.node.add_report_section("call", "eksid agent notes", "\n".join(coverage.notes))
    fail_on(coverage.findings)


@pod_identity_only
def test_agent_addon_active(eksid_cluster, eksid_aws):
    """Once per cluster with Pod Identity workloads: where the agent is the EKS add-on, EKS reports it ACTIVE."""
    fail_on(agent.addon_findings(eksid_aws.addon(eksid_cluster.profile.cluster.name, AGENT_NAME)))


@pod_identity_only
def test_agent_endpoint_answers(eksid_profile, eksid_workload, eksid_probe):
    """The probe pod reached the agent's credentials endpoint with its token."""
    cluster = eksid_profile.profile.cluster
    findings = agent.endpoint_findings(eksid_workload, eksid_probe.agent, cluster=cluster.name, region=cluster.region)
    fail_on(cluster_refs(eksid_profile, findings))


@irsa_only
def test_oidc_provider(eksid_cluster, eksid_aws):
    """Once per cluster with IRSA workloads: the cluster's OIDC issuer has an IAM OIDC provider with
    sts.amazonaws.com as a client id."""
    cluster = eksid_cluster.profile.cluster
    issuer = eksid_aws.oidc_issuer(cluster.name)
    fail_on(
        agent.oidc_provider_findings(issuer, eksid_aws.oidc_providers(), cluster=cluster.name, region=cluster.region)
    )


@pod_identity_only
def test_pods_reach_the_agent_directly(eksid_workload, eksid_kube):
    """The workload's pod templates let its pods reach the agent: no HTTP proxy without NO_PROXY for the agent's
    address, no hostNetwork."""
    selector = eksid_workload.selector or f"app.kubernetes.io/name={eksid_workload.name}"
    templates = eksid_kube.workloads(eksid_workload.namespace, selector)
    fail_on(network_findings(eksid_workload.name, eksid_workload.mechanism, templates))
