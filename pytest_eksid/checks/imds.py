"""Is the node's instance role out of the pod's reach?"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pytest_eksid.checks import Finding, command_name, shown
from pytest_eksid.probe.result import ImdsResult
from pytest_eksid.profile import Profile, Workload

BLOCKED = ("blocked-timeout", "blocked-refused", "no-credentials")


def node_group_of(nodes: Iterable[Mapping[str, Any]], node: str | None, label: str) -> str | None:
    """The value of the node group ``label`` (``probe.nodeGroupLabel``) on the node named ``node``."""
    for n in nodes:
        meta = n.get("metadata") or {}
        if node is not None and meta.get("name") == node:
            group = (meta.get("labels") or {}).get(label)
            return None if group is None else str(group)
    return None


def imds_finding(
    profile: Profile,
    w: Workload,
    version: Literal["v1", "v2"],
    imds: ImdsResult,
    node: str | None,
    *,
    node_group: str | None = None,
) -> Finding | None:
    """IMDS ``version`` ("v1" or "v2") must give the pod no credentials.

    ``node`` (the probe pod's ``spec.nodeName``) and ``node_group`` (its node group, if known)
    come from the cluster: printed escaped and bounded, in a command only as a valid DNS name.
    """
    seen = dict(imds.get(version) or {})
    outcome = seen.get("outcome")
    if outcome in BLOCKED:
        return None
    group = f" (node group {shown(node_group)})" if node_group else ""
    where = f"{w.name} ({w.namespace}/{w.service_account}) on node {shown(node, 253) if node else '?'}{group}"
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
            f"{command_name(node or '', '<node>')} --query 'Reservations[].Instances[].MetadataOptions'",
            "aws ec2 modify-instance-metadata-options --instance-id <id> --http-tokens required "
            "--http-put-response-hop-limit 1",
        ),
        {"endpoint": str(imds.get("endpoint", "")), **({"node group": shown(node_group)} if node_group else {})},
    )
