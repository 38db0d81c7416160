"""Definition of done, point 4: the node's IMDS role is unreachable from the workload's pods."""

import pytest

from pytest_eksid.checks.imds import imds_finding
from pytest_eksid.fixtures import fail_on

pytestmark = pytest.mark.imds


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_imds_blocked(eksid_profile, eksid_workload, eksid_nodegroup, eksid_node_probe, version):
    """IMDSv2 (token) and IMDSv1 (plain GET) both give the pod no credentials — on every node group
    listed in probe.nodeGroups (one probe pinned to each), else wherever the probe landed."""
    probe = eksid_node_probe
    fail_on(imds_finding(eksid_profile.profile, eksid_workload, version, probe.imds, probe.node_name))
