"""Is the node's instance role out of the pod's reach?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_eksid.checks import Finding
from pytest_eksid.profile import Profile, Workload

BLOCKED = ("blocked-timeout", "blocked-refused", "no-credentials")


def imds_finding(
    profile: Profile, w: Workload, version: str, imds: Mapping[str, Any], node: str | None
) -> Finding | None:
    """IMDS ``version`` ("v1" or "v2") must give the pod no credentials."""
    seen = dict(imds.get(version) or {})
    outcome = seen.get("outcome")
    if outcome in BLOCKED:
        return None
    where = f"{w.name} ({w.namespace}/{w.service_account}) on node {node or '?'}"
    if outcome != "exposed":
        return Finding(
            "imds",
            f"{where}: IMDS{version} was not measured",
            "blocked (token request times out or is refused, no credentials)",
            ", ".join(f"{k}={v}" for k, v in seen.items()) or str(imds.get("error") or "no result"),
            "the probe's IMDS step failed; see the probe result",
            (
                "pytest --eksid-keep-pods ... then: "
                f"kubectl -n {w.namespace} logs -l eksid.dev/workload={w.name} --tail=-1",
            ),
        )
    role = seen.get("role", "?")
    fix = (
        "set the node group's launch template to HttpTokens=required (IMDSv1 off)"
        if version == "v1"
        else "set the node group's metadata hop limit to 1 (HttpPutResponseHopLimit=1)"
    )
    return Finding(
        "imds",
        f"{where}: the node's instance role is reachable through IMDS{version}",
        "blocked (token request times out or is refused, no credentials)",
        f"exposed: node role {role!r} served its credentials to the pod",
        f"Failure Mode 6 — IMDS Still Exposes Node Role: {fix}",
        (
            "aws ec2 describe-instances --filters Name=private-dns-name,Values="
            f"{node or '<node>'} --query 'Reservations[].Instances[].MetadataOptions'",
            "aws ec2 modify-instance-metadata-options --instance-id <id> --http-tokens required "
            "--http-put-response-hop-limit 1",
        ),
        {"endpoint": str(imds.get("endpoint", ""))},
    )
