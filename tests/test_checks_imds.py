"""pytest_eksid.checks.imds.imds_finding over the result shapes of the probe's IMDS step (program.check_imds)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_eksid.checks import Finding
from pytest_eksid.checks.imds import imds_finding, node_group_of
from pytest_eksid.profile import Workload
from tests.helpers.profiles import unit_profile

ACCOUNT = "111122223333"
NODE = "ip-10-0-12-34.eu-west-1.compute.internal"
ENDPOINT = "http://169.254.169.254"
BLOCKED_TEXT = "blocked (token request times out or is refused, no credentials)"

PROFILE = unit_profile(
    [
        {
            "name": "invoice-exporter",
            "namespace": "finance-prod",
            "serviceAccount": "invoice-exporter-aws-sa",
            "mechanism": "pod-identity",
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/eks-prod-invoice-exporter",
        }
    ]
)
W: Workload = PROFILE.workload("invoice-exporter")
WHERE = f"invoice-exporter (finance-prod/invoice-exporter-aws-sa) on node {NODE}"


def imds(v2: dict[str, Any], v1: dict[str, Any], endpoint: str = ENDPOINT) -> dict[str, Any]:
    """The probe's 'imds' step result: {"endpoint", "v2", "v1"}."""
    return {"endpoint": endpoint, "v2": v2, "v1": v1}


def exposed(role: str = "eks-prod-node-role") -> dict[str, Any]:
    return {"outcome": "exposed", "role": role, "http_status": 200}


def _finding(value: Finding | None) -> Finding:
    assert value is not None, "expected a finding"
    assert isinstance(value, Finding)
    return value


# --- blocked: every shape check_imds reports for a pod without the node role ------------------

BLOCKED_SHAPES = [
    pytest.param({"outcome": "blocked-timeout"}, id="timeout"),
    pytest.param({"outcome": "blocked-refused", "detail": "refused"}, id="connection-refused"),
    pytest.param({"outcome": "blocked-refused", "detail": "error"}, id="connection-error"),
    pytest.param({"outcome": "blocked-refused", "http_status": 401}, id="http-401"),
    pytest.param({"outcome": "blocked-refused", "http_status": 403, "detail": "http-error"}, id="token-put-403"),
    pytest.param({"outcome": "no-credentials", "http_status": 404}, id="no-role-listed"),
    pytest.param({"outcome": "no-credentials", "http_status": 200}, id="empty-role-list"),
    pytest.param({"outcome": "no-credentials", "role": "eks-prod-node-role", "http_status": 404}, id="role-no-creds"),
]


@pytest.mark.parametrize("shape", BLOCKED_SHAPES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_blocked_passes(version: str, shape: dict[str, Any]) -> None:
    assert imds_finding(PROFILE, W, version, imds(v2=shape, v1=shape), NODE) is None


def test_each_version_is_judged_on_its_own() -> None:
    # Hop limit 1 blocks IMDSv2 from a pod, but IMDSv1 still answers a plain GET.
    result = imds(v2={"outcome": "blocked-timeout"}, v1=exposed())
    assert imds_finding(PROFILE, W, "v2", result, NODE) is None
    f = _finding(imds_finding(PROFILE, W, "v1", result, NODE))
    assert f.summary == f"{WHERE}: the node's instance role is reachable through IMDSv1"


# --- exposed ----------------------------------------------------------------------------------


def test_v1_exposed_names_the_node_role_and_the_fix() -> None:
    f = _finding(imds_finding(PROFILE, W, "v1", imds(v2={"outcome": "blocked-timeout"}, v1=exposed()), NODE))
    assert f.check == "imds"
    assert f.summary == f"{WHERE}: the node's instance role is reachable through IMDSv1"
    assert f.expected == BLOCKED_TEXT
    assert f.seen == "exposed: node role 'eks-prod-node-role' served its credentials to the pod"
    assert f.likely == (
        "Failure Mode 6 — IMDS Still Exposes Node Role: set the node group's launch template to "
        "HttpTokens=required (IMDSv1 off)"
    )
    assert f.next_steps == (
        f"aws ec2 describe-instances --filters Name=private-dns-name,Values={NODE} "
        "--query 'Reservations[].Instances[].MetadataOptions'",
        "aws ec2 modify-instance-metadata-options --instance-id <id> --http-tokens required "
        "--http-put-response-hop-limit 1",
    )
    assert f.details == {"endpoint": ENDPOINT}


def test_v2_exposed_points_at_the_hop_limit() -> None:
    result = imds(v2=exposed("eks-batch-node"), v1={"outcome": "blocked-refused", "http_status": 401})
    assert imds_finding(PROFILE, W, "v1", result, NODE) is None
    f = _finding(imds_finding(PROFILE, W, "v2", result, NODE))
    assert f.summary == f"{WHERE}: the node's instance role is reachable through IMDSv2"
    assert f.seen == "exposed: node role 'eks-batch-node' served its credentials to the pod"
    assert f.likely == (
        "Failure Mode 6 — IMDS Still Exposes Node Role: set the node group's metadata hop limit to 1 "
        "(HttpPutResponseHopLimit=1)"
    )
    assert "HttpTokens" not in f.likely
    assert f.next_steps[0].startswith(f"aws ec2 describe-instances --filters Name=private-dns-name,Values={NODE} ")


def test_exposed_reports_a_custom_endpoint() -> None:
    result = imds(v2=exposed(), v1=exposed(), endpoint="http://127.0.0.1:18080")
    f = _finding(imds_finding(PROFILE, W, "v2", result, NODE))
    assert f.details == {"endpoint": "http://127.0.0.1:18080"}
    assert "  endpoint: http://127.0.0.1:18080" in f.message()


def test_exposed_on_an_unknown_node() -> None:
    f = _finding(imds_finding(PROFILE, W, "v1", imds(v2=exposed(), v1=exposed()), None))
    assert f.summary == (
        "invoice-exporter (finance-prod/invoice-exporter-aws-sa) on node ?: "
        "the node's instance role is reachable through IMDSv1"
    )
    assert f.next_steps[0] == (
        "aws ec2 describe-instances --filters Name=private-dns-name,Values=<node> "
        "--query 'Reservations[].Instances[].MetadataOptions'"
    )


def test_exposed_names_the_node_group() -> None:
    f = _finding(imds_finding(PROFILE, W, "v1", imds(v2=exposed(), v1=exposed()), NODE, node_group="ng-batch"))
    assert f.summary == f"{WHERE} (node group ng-batch): the node's instance role is reachable through IMDSv1"
    assert f.details == {"endpoint": ENDPOINT, "node group": "ng-batch"}


def test_hostile_node_name_and_group_are_escaped_and_kept_out_of_commands() -> None:
    node, group = "ip-10-0-1-1\x1b]8;;http://evil\x07", "\u202eng" + "g" * 300
    f = _finding(imds_finding(PROFILE, W, "v2", imds(v2=exposed(), v1=exposed()), node, node_group=group))
    assert "\x1b" not in f.message()
    assert "\u202e" not in f.message()
    assert f.summary.startswith(
        "invoice-exporter (finance-prod/invoice-exporter-aws-sa) on node ip-10-0-1-1\\x1b\\x5d8\\x3b\\x3bhttp:"
    )
    assert "(node group \\u202eng" in f.summary
    assert f.details["node group"].endswith("...(+240 chars)")
    assert "Values=<node> " in f.next_steps[0]


def test_the_node_group_is_read_from_the_probe_nodes_labels() -> None:
    nodes = [
        {"metadata": {"name": "ip-10-0-2-10", "labels": {"eks.amazonaws.com/nodegroup": "ng-batch"}}},
        {"metadata": {"name": NODE, "labels": {"eks.amazonaws.com/nodegroup": "ng-general", "pool": "gpu"}}},
    ]
    assert node_group_of(nodes, NODE, "eks.amazonaws.com/nodegroup") == "ng-general"
    assert node_group_of(nodes, NODE, "pool") == "gpu"
    assert node_group_of(nodes, NODE, "karpenter.sh/nodepool") is None
    assert node_group_of(nodes, None, "eks.amazonaws.com/nodegroup") is None
    assert node_group_of(nodes, "ip-10-0-9-9", "eks.amazonaws.com/nodegroup") is None


def test_exposed_without_a_role_name() -> None:
    f = _finding(imds_finding(PROFILE, W, "v1", imds(v2={}, v1={"outcome": "exposed"}), NODE))
    assert f.seen == "exposed: node role '?' served its credentials to the pod"


# --- not measured ----------------------------------------------------------------------------


def test_failed_step_is_a_finding_with_the_error() -> None:
    # program.run: a step that raised is recorded as {"error": ...} instead of its result.
    error = {"type": "OSError", "code": "", "message": "[Errno 101] Network is unreachable", "http_status": None}
    f = _finding(imds_finding(PROFILE, W, "v2", {"error": error}, NODE))
    assert f.check == "imds"
    assert f.summary == f"{WHERE}: IMDSv2 was not measured"
    assert f.expected == BLOCKED_TEXT
    assert "Network is unreachable" in f.seen
    assert "OSError" in f.seen
    assert f.likely == "the probe's IMDS step failed; see the probe result"
    assert f.next_steps[0].endswith(f"kubectl -n {W.namespace} logs -l eksid.dev/workload={W.name} --tail=-1")


def test_missing_step_is_a_finding() -> None:
    # ProbeOutcome.imds is {} when the probe reported no IMDS step at all.
    f = _finding(imds_finding(PROFILE, W, "v1", {}, NODE))
    assert f.summary == f"{WHERE}: IMDSv1 was not measured"
    assert f.seen == "no result"


def test_missing_version_is_a_finding() -> None:
    f = _finding(imds_finding(PROFILE, W, "v1", {"endpoint": ENDPOINT, "v2": {"outcome": "blocked-timeout"}}, NODE))
    assert f.summary == f"{WHERE}: IMDSv1 was not measured"
    assert f.seen == "no result"


def test_unknown_outcome_is_not_a_pass() -> None:
    f = _finding(imds_finding(PROFILE, W, "v2", imds(v2={"outcome": "weird", "http_status": 500}, v1={}), NODE))
    assert f.summary == f"{WHERE}: IMDSv2 was not measured"
    assert "weird" in f.seen
    assert "500" in f.seen
