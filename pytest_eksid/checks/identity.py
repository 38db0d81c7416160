"""Is the probe, running as the workload's ServiceAccount, the expected IAM role?"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pytest_eksid.checks import Finding, workload_label
from pytest_eksid.checks.agent import error_code, refusal, refusal_likely
from pytest_eksid.probe.result import IdentityResult
from pytest_eksid.profile import Profile, Workload, role_arn_parts

ASSUMED_ROLE_RE = re.compile(r"^arn:aws[\w-]*:sts::(\d{12}):assumed-role/([^/]+)/(.+)$")

# The botocore credential provider each mechanism must be served by.
EXPECTED_PROVIDER = {"pod-identity": "container-role", "irsa": "assume-role-with-web-identity"}
PROVIDER_MEANING = {
    "env": "static keys in the container's environment (AWS_ACCESS_KEY_ID) win over workload identity",
    "shared-credentials-file": "a ~/.aws/credentials file in the image or a mounted Secret wins over workload identity",
    "config-file": "a ~/.aws/config file with static keys wins over workload identity",
    "iam-role": "the node's IMDS role: the pod has no workload identity and IMDS is reachable",
    "container-role": "EKS Pod Identity (the agent's credentials endpoint)",
    "assume-role-with-web-identity": "IRSA (a projected token exchanged with STS)",
}


def next_commands(profile: Profile, w: Workload) -> tuple[str, ...]:
    cluster = profile.cluster
    sa = f"kubectl -n {w.namespace} get sa {w.service_account} -o yaml"
    if w.mechanism == "pod-identity":
        return (
            f"aws eks list-pod-identity-associations --cluster-name {cluster.name} --region {cluster.region} "
            f"--namespace {w.namespace} --service-account {w.service_account}",
            sa,
        )
    _, role = role_arn_parts(w.role_arn)
    return (sa, f"aws iam get-role --role-name {role} --query Role.AssumeRolePolicyDocument")


def role_of(caller_arn: str) -> tuple[str, str] | None:
    """(account, role name) of an assumed-role session ARN, or None for anything else."""
    m = ASSUMED_ROLE_RE.match(caller_arn)
    return (m.group(1), m.group(2)) if m else None


def _not_proven(profile: Profile, w: Workload, identity: IdentityResult, check: str, expected: str) -> Finding | None:
    """The runner could not have STS confirm the caller the probe claims: nothing about it is known."""
    why = identity.get("proof_error")
    if not why:
        return None
    return Finding(
        check,
        f"{workload_label(w)}: the probe's identity is not proven",
        expected,
        str(why),
        "the result did not come from the runner's own probe (a pod swapped in by someone who may create "
        "pods in the namespace?), or STS could not be reached from the runner to confirm it",
        (f"kubectl -n {w.namespace} get pods -l eksid.dev/workload={w.name} -o wide", *next_commands(profile, w)),
    )


def caller_role(profile: Profile, w: Workload, identity: IdentityResult) -> Finding | None:
    """The caller must be a session of exactly the expected role, as STS named it for the probe's proof."""
    unproven = _not_proven(profile, w, identity, "caller_role", w.final_role_arn)
    if unproven is not None:
        return unproven
    expected_account, expected_role = role_arn_parts(w.final_role_arn)
    caller: Mapping[str, Any] = identity.get("caller") or {}
    method = identity.get("method") or "none"
    arn = str(caller.get("arn") or "")
    details = {
        "provider": f"{method} — {PROVIDER_MEANING.get(method, 'unexpected provider')}"
        if method != "none"
        else "none resolved"
    }
    if not arn:
        err: Mapping[str, Any] = identity.get("error") or {}
        cause = err.get("code") or err.get("type")
        seen = f"no AWS identity: {cause}: {err.get('message', '')}" if cause else "no AWS identity (no error reported)"
        likely = _no_identity_hint(w, err)
        return Finding(
            "caller_role",
            f"{workload_label(w)}: the probe has no AWS identity",
            w.final_role_arn,
            seen,
            likely,
            next_commands(profile, w),
            details,
        )
    got = role_of(arn)
    if got == (expected_account, expected_role):
        return None
    if got is None:
        likely = (
            "the caller is not a role session: static IAM user keys are in use"
            if ":user/" in arn
            else "the caller is not an assumed role"
        )
    elif got[1] == expected_role:
        likely = (
            f"a role named {expected_role!r} but in account {got[0]}, not {expected_account}: "
            "the binding names another account's role"
        )
    elif method == "iam-role" or (
        profile.cluster.node_role_arn is not None and got == role_arn_parts(profile.cluster.node_role_arn)
    ):
        likely = "the pod fell through to the node's IMDS role: its own identity is missing and IMDS is reachable"
    else:
        binding = (
            "Pod Identity association" if w.mechanism == "pod-identity" else "eks.amazonaws.com/role-arn annotation"
        )
        likely = f"wrong role bound: the {binding} points at role {got[1]!r}, not {expected_role!r}"
    return Finding(
        "caller_role",
        f"{workload_label(w)}: the caller is not the expected role",
        w.final_role_arn,
        arn,
        likely,
        next_commands(profile, w),
        details,
    )


FM_TRUST = "Failure Mode 3 — Trust Policy Denied"
FM_AGENT = "Failure Mode 5 — Pod Identity Agent Missing"
FM_CONSISTENCY = "Failure Mode 7 — Association Eventual Consistency"


def wrong_caller(w: Workload, identity: IdentityResult | None) -> str | None:
    """Why the probe's calls say nothing about the workload's role: it had no identity, or another one."""
    if identity is None:
        return None
    if identity.get("proof_error"):
        return f"{identity['proof_error']} (see test_caller_role): these results are not attributable to the role"
    caller: Mapping[str, Any] = identity.get("caller") or {}
    arn = str(caller.get("arn") or "")
    if not arn:
        return (
            "the probe has no AWS identity (see test_caller_role): fix the identity first; "
            "the role's policies were never exercised"
        )
    if role_of(arn) != role_arn_parts(w.final_role_arn):
        return (
            f"the probe ran as {arn}, not as role {w.final_role_arn} (see test_caller_role): fix the binding first; "
            "these are another principal's permissions"
        )
    return None


def _no_identity_hint(w: Workload, err: Mapping[str, Any]) -> str:
    code = str(err.get("code") or err.get("type") or "")
    message = str(err.get("message") or "")
    if code == "InvalidIdentityToken":
        return "IRSA token rejected: no IAM OIDC provider for the cluster's issuer, or a wrong audience"
    if code in ("ExpiredTokenException", "ExpiredToken") and w.mechanism == "irsa":
        # STS's AssumeRoleWithWebIdentity names an expired web identity token so
        # [botocore/data/sts/2011-06-15/service-2.json ExpiredTokenException, 400].
        return (
            "STS rejected the IRSA token as expired: the file at AWS_WEB_IDENTITY_TOKEN_FILE is stale — the kubelet "
            "refreshes the projected token (aws-iam-token) well before it expires, so the file was copied out of the "
            "projected volume, the pod mounts it with subPath (never refreshed), or the kubelet is stuck; or the "
            "node's clock is skewed: check the node's time sync and restart the pod"
        )
    if code == "AccessDenied":
        return f"{FM_TRUST}: the role's trust policy does not admit this ServiceAccount (sub/aud condition mismatch)"
    if code == "CredentialRetrievalError" and w.mechanism == "pod-identity":
        # The probe reads the agent's status and EKS Auth error code out of botocore's message: the
        # code decides (a trust-policy denial is a 400 naming AccessDeniedException), as in
        # checks.agent.endpoint_findings.
        status = err.get("agent_status")
        agent_code = error_code(err.get("agent_code"))
        kind = refusal(agent_code, status) if isinstance(status, int) else None
        if kind == "trust-denied" or (kind is None and "AccessDenied" in message):
            if "TagSession" in message:
                return (
                    f"{FM_TRUST}: the role's trust policy lets pods.eks.amazonaws.com assume it but not "
                    "sts:TagSession, which Pod Identity always calls"
                )
            return refusal_likely(w, "trust-denied", agent_code)
        if kind is not None and kind != "other":
            return refusal_likely(w, kind, agent_code)
        if "connect" in message.lower() or "timed out" in message.lower():
            return f"{FM_AGENT}: nothing answers at the agent's credentials endpoint on this node"
        return (
            "the Pod Identity Agent did not serve credentials; see the probe output and the agent's log "
            "(kubectl -n kube-system logs ds/eks-pod-identity-agent)"
        )
    if code == "NoCredentialsError":
        if w.mechanism == "pod-identity":
            return (
                "no credentials injected: no Pod Identity association existed when the pod started "
                f"(if it was created since: {FM_CONSISTENCY}), or the webhook did not run; IMDS is blocked"
            )
        return (
            "no credentials injected: the ServiceAccount lacks the eks.amazonaws.com/role-arn annotation "
            "(or the webhook did not run)"
        )
    return "credential resolution failed; see the probe output"


def credential_provider(profile: Profile, w: Workload, identity: IdentityResult) -> Finding | None:
    """Credentials must come from the mechanism's own provider, not from anything earlier in the chain."""
    expected = EXPECTED_PROVIDER[w.mechanism]
    unproven = _not_proven(profile, w, identity, "credential_provider", f"{expected} — {PROVIDER_MEANING[expected]}")
    if unproven is not None:
        return unproven
    method = identity.get("method")
    if method == expected and identity.get("caller"):
        return None
    err: Mapping[str, Any] = identity.get("error") or {}
    seen = str(method or "no provider resolved")
    if method == expected:
        summary = f"{workload_label(w)}: {w.mechanism} served credentials, but they do not work"
        seen += f", but the STS call failed: {err.get('code') or err.get('type')}: {err.get('message', '')}"
        likely = _no_identity_hint(w, err)
    else:
        summary = f"{workload_label(w)}: credentials do not come from {w.mechanism}"
        likely = PROVIDER_MEANING.get(str(method), _no_identity_hint(w, err))
    return Finding(
        "credential_provider",
        summary,
        f"{expected} — {PROVIDER_MEANING[expected]}",
        seen,
        likely,
        next_commands(profile, w),
    )
