"""Definition of done, point 4: the node's IMDS role is unreachable from the workload's pods."""

import pytest

from pytest_eksid.checks.imds import imds_finding
from pytest_eksid.fixtures import fail_on

pytestmark = pytest.mark.imds


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_imds_blocked(eksid_profile, eksid_workload, eksid_probe, version):
    """IMDSv2 (token) and IMDSv1 (plain GET) both give the pod no credentials."""
    fail_on(imds_finding(eksid_profile.profile, eksid_workload, version, eksid_probe.imds, eksid_probe.node_name))
