"""Definition of done, point 1: the workload's pods are the expected IAM role, by the expected provider."""

import pytest

from pytest_eksid.checks import identity
from pytest_eksid.fixtures import cluster_refs, fail_on

pytestmark = pytest.mark.identity


def test_caller_role(eksid_profile, eksid_workload, eksid_probe):
    """A pod running as the workload's ServiceAccount is a session of exactly the expected role."""
    fail_on(
        cluster_refs(eksid_profile, identity.caller_role(eksid_profile.profile, eksid_workload, eksid_probe.identity))
    )


def test_credential_provider(eksid_profile, eksid_workload, eksid_probe):
    """The default SDK chain serves the credentials from the workload's own mechanism."""
    fail_on(
        cluster_refs(
            eksid_profile, identity.credential_provider(eksid_profile.profile, eksid_workload, eksid_probe.identity)
        )
    )
