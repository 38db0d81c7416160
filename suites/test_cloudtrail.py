"""CloudTrail shows the expected identity: the previous run's probe session, looked up in the account's event
history, was the workload's role, assumed with its ServiceAccount's ``sub`` or Pod Identity session tags.

Opt-in (``--eksid-cloudtrail STATE.json``): CloudTrail shows events minutes late, so each run checks the
session the previous run recorded in STATE.json and records its own (docs/cloudtrail.md)."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytest_eksid import cloudtrail
from pytest_eksid.aws import AwsError
from pytest_eksid.checks.cloudtrail import Recorded, cloudtrail_identity
from pytest_eksid.fixtures import cluster_refs, fail_on, inconclusive

pytestmark = [pytest.mark.identity, pytest.mark.eksid_cloudtrail]


def test_cloudtrail_identity(eksid_settings, eksid_profile, eksid_workload, eksid_campaign, eksid_probe, eksid_aws):
    """The previous run's probe session appears in CloudTrail as the expected role and ServiceAccount."""
    if eksid_settings.cloudtrail is None:  # the plugin deselects it then; this guards a run without the plugin's hook
        pytest.skip("opt-in: --eksid-cloudtrail STATE.json checks the previous run's probe sessions in CloudTrail")
    state = Path(eksid_settings.cloudtrail.value)
    key = f"{eksid_profile.name}/{eksid_workload.name}"
    try:
        before = cloudtrail.previous(state, key)
    except cloudtrail.StateError as exc:
        pytest.fail(str(exc), pytrace=False)
    identity = eksid_probe.identity
    arn = str((identity.get("caller") or {}).get("arn") or "")
    if identity.get("proven") and ":assumed-role/" in arn:
        now = datetime.now(UTC)
        cloudtrail.record(
            state,
            key,
            Recorded(
                run_id=eksid_campaign.run_id,
                probed_at=now,
                session_arn=arn,
                pod=eksid_probe.pod,
                namespace=eksid_workload.namespace,
                service_account=eksid_workload.service_account,
                mechanism=eksid_workload.mechanism,
            ),
        )
    if before is None:
        pytest.skip(f"no earlier run recorded {key} in {state}: this run's session is recorded for the next run")
    start, end = before.window()
    try:
        assumed, truncated = eksid_aws.lookup_events("ResourceName", before.session_arn, start, end)
        calls, _ = eksid_aws.lookup_events("Username", before.session_name, start, end)
    except AwsError as exc:
        pytest.fail(f"CloudTrail LookupEvents failed: {exc}", pytrace=False)
    finding, why = cloudtrail_identity(
        eksid_profile.profile.cluster.region,
        eksid_workload,
        before,
        assumed,
        calls,
        truncated=truncated,
        now=datetime.now(UTC),
    )
    if why is not None:
        inconclusive(eksid_settings, why)
    fail_on(cluster_refs(eksid_profile, finding))
