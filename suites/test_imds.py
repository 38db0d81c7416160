"""Definition of done, point 4: the node's IMDS role is unreachable from the workload's pods."""

import pytest

from pytest_eksid.checks.imds import imds_finding, node_group_of
from pytest_eksid.fixtures import fail_on

pytestmark = pytest.mark.imds


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_imds_blocked(eksid_profile, eksid_workload, eksid_nodegroup, eksid_node_probe, eksid_kube, version):
    """IMDSv2 (token) and IMDSv1 (plain GET) both give the pod no credentials — on every node group
    listed in probe.nodeGroups (one probe pinned to each), else wherever the probe landed."""
    profile, probe = eksid_profile.profile, eksid_node_probe
    finding = imds_finding(profile, eksid_workload, version, probe.imds, probe.node_name, node_group=eksid_nodegroup)
    if finding is not None and eksid_nodegroup is None:  # name the node group the probe landed in
        group = node_group_of(eksid_kube.nodes(), probe.node_name, profile.probe.node_group_label)
        finding = imds_finding(profile, eksid_workload, version, probe.imds, probe.node_name, node_group=group)
    fail_on(finding)
