"""The machinery each mechanism depends on: the Pod Identity Agent (DaemonSet, per-node pods,
EKS add-on, the endpoint as a pod sees it) and, for IRSA, the cluster's IAM OIDC provider.

Inputs are Kubernetes JSON (apps/v1 DaemonSet, v1 Pod, v1 Node), boto3 answers
(``eks.describe_addon()["addon"]``, IAM OIDC providers) and the probe's ``agent`` result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_eksid.checks import Finding, command_labels, command_name, shown, workload_label
from pytest_eksid.probe.result import AgentResult
from pytest_eksid.profile import Workload, role_arn_parts

AGENT_NAME = "eks-pod-identity-agent"
AGENT_NAMESPACE = "kube-system"
AGENT_LABEL = f"app.kubernetes.io/name={AGENT_NAME}"
AGENT_HOSTS = "169.254.170.23,fd00:ec2::23"
STS_AUDIENCE = "sts.amazonaws.com"

FM_AGENT = "Failure Mode 5 — Pod Identity Agent Missing"
FM_CONSISTENCY = "Failure Mode 7 — Association Eventual Consistency"
FM_TRUST = "Failure Mode 3 — Trust Policy Denied"

# Why the agent refused a pod's token. EKS Auth's errors keep their HTTP status through the agent
# and name their code in a text/plain body "[<request id>]: (<ErrorCode>): <message>, fault: …"
# (aws/eks-pod-identity-agent@984147edfc34 pkg/errors/errors.go); the codes and statuses are
# botocore's eks-auth model (boto/botocore@cd9207757d45 botocore/data/eks-auth/2023-11-26/
# service-2.json): AccessDenied, InvalidToken, ExpiredToken, InvalidRequest, InvalidParameter 400;
# ResourceNotFound 404; Throttling 429; InternalServer 500; ServiceUnavailable 503. Without a code
# the answer is the agent's own: 400 an unparseable token or bad exp/nbf/iat, 403 a Host header
# that is not its address (internal/validation/request.go@1cbbbf4069cc), 429 its rate limiter,
# 500 EKS Auth out of reach. So the code decides first: a trust-policy denial is a 400.
Refusal = Literal[
    "trust-denied",
    "no-association",
    "token-rejected",
    "token-invalid",
    "token-expired",
    "bad-request",
    "throttled",
    "wrong-address",
    "eks-auth",
    "other",
]
EKS_AUTH_CODES: dict[str, Refusal] = {
    "AccessDeniedException": "trust-denied",
    "ResourceNotFoundException": "no-association",
    "InvalidTokenException": "token-invalid",
    "ExpiredTokenException": "token-expired",
    "InvalidRequestException": "bad-request",
    "InvalidParameterException": "bad-request",
    "ThrottlingException": "throttled",
    "InternalServerException": "eks-auth",
    "ServiceUnavailableException": "eks-auth",
}
_STATUS_ONLY: dict[int, Refusal] = {
    400: "token-rejected",
    403: "wrong-address",
    404: "no-association",
    429: "throttled",
}
_CODE_RE = re.compile(r"[A-Za-z]{1,64}")


def error_code(value: Any) -> str | None:
    """An error code from a probe result, or None unless it is a plain word (probe output is hostile)."""
    return value if isinstance(value, str) and _CODE_RE.fullmatch(value) else None


def refusal(code: str | None, status: Any) -> Refusal:
    """Why the agent refused, by the EKS Auth error code in its body first, then by the HTTP status."""
    if code is not None:
        return EKS_AUTH_CODES.get(code, "other")
    if isinstance(status, int) and status >= 500:
        return "eks-auth"
    return _STATUS_ONLY.get(status, "other") if isinstance(status, int) else "other"


def refusal_likely(w: Workload, kind: Refusal, code: str | None) -> str:
    """The likely failure mode behind an agent refusal, for the endpoint and the identity checks."""
    said = f" ({code})" if code else ""
    if kind == "trust-denied":
        chained = (
            "; with a targetRoleArn, also the target role's trust must admit the association's role"
            if w.target_role_arn
            else ""
        )
        return (
            f"{FM_TRUST}: EKS Auth was denied assuming the associated role{said}: its trust policy does not "
            "admit pods.eks.amazonaws.com with both sts:AssumeRole and sts:TagSession, or one of its conditions "
            f"(such as aws:RequestTag/kubernetes-namespace or aws:RequestTag/kubernetes-service-account) does not "
            f"match {w.namespace}/{w.service_account} (an association with disableSessionTags sends no "
            f"aws:RequestTag keys at all){chained}"
        )
    if kind == "no-association":
        return (
            f"EKS Auth found no Pod Identity association for {w.namespace}/{w.service_account}{said}: it was deleted "
            f"after the pod started, or it was recreated and is not visible yet ({FM_CONSISTENCY}); a pod that "
            "started before any association existed gets no endpoint at all — restart the pod once it exists"
        )
    if kind == "token-rejected":
        return (
            "the agent itself rejected the pod's token (HTTP 400 without an EKS Auth code): it cannot be parsed "
            "or its exp/nbf/iat fail (a truncated or stale token file, or the node's clock is off)"
        )
    if kind == "token-invalid":
        return (
            f"EKS Auth rejected the pod's token as invalid{said}: its audience is not pods.eks.amazonaws.com, "
            "or it was issued by another cluster"
        )
    if kind == "token-expired":
        return (
            f"EKS Auth rejected the pod's token as expired{said}: the token file at "
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is stale — the kubelet refreshes the projected token "
            "(volume eks-pod-identity-token) well before it expires, so the file was copied out of the volume, "
            "the pod mounts it with subPath (never refreshed), or the kubelet is stuck; or the node's clock runs "
            "behind (the agent let the token through, EKS Auth did not): check the node's time sync, then "
            "restart the pod"
        )
    if kind == "bad-request":
        return (
            f"EKS Auth refused the agent's request as malformed{said}: the agent is configured for another cluster "
            "name or region; its logs show the request"
        )
    if kind == "throttled":
        return (
            f"throttled{said or ' (HTTP 429 without a code: the agent rate-limits its own callers)'}: too many "
            "credential requests at once (a restart storm, a client that does not cache); retry later"
        )
    if kind == "wrong-address":
        return (
            "the agent refused the address it was called at (HTTP 403 without an EKS Auth code: the Host header "
            "was not 169.254.170.23 or [fd00:ec2::23]): a proxy in the path (set "
            f"NO_PROXY={AGENT_HOSTS}), or AWS_CONTAINER_CREDENTIALS_FULL_URI names another host"
        )
    if kind == "eks-auth":
        return (
            f"{FM_AGENT}: the agent or EKS Auth behind it failed{said} (a 5xx: EKS Auth is unavailable, or the "
            "node cannot reach it); retry later; the agent's logs show which"
        )
    return f"{FM_AGENT}: the agent did not hand out credentials{said}; its logs show why"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _selector(ds: Mapping[str, Any] | None, name: str) -> str:
    """The DaemonSet's own pod selector as a ``-l`` argument (the add-on's labels are not the chart's); the
    chart's label where it has none, or where one is not label syntax (it goes into ``next:`` commands and
    into the agent pods' listing: cluster text that is neither may be anything)."""
    labels = ((ds or {}).get("spec") or {}).get("selector", {}).get("matchLabels") or {}
    chart = f"app.kubernetes.io/name={name}"
    return command_labels(labels, chart) if isinstance(labels, Mapping) else chart


def daemonset_findings(
    ds: Mapping[str, Any] | None, *, namespace: str = AGENT_NAMESPACE, name: str = AGENT_NAME
) -> list[Finding]:
    """The agent DaemonSet must exist, run on some node, be fully ready and fully rolled out.

    Reported: no DaemonSet; ``desiredNumberScheduled`` 0 (the agent runs nowhere); not every
    desired pod ready or some unavailable (one finding with all the numbers); not every pod
    updated to the current template; ``status.observedGeneration`` behind ``metadata.generation``.
    """
    nxt = (
        f"kubectl -n {namespace} describe daemonset {name}",
        f"kubectl -n {namespace} get pods -l {_selector(ds, name)} -o wide",
    )
    if ds is None:
        return [
            Finding(
                "pod_identity_agent",
                "Pod Identity Agent DaemonSet not found",
                f"DaemonSet {namespace}/{name}",
                f"no DaemonSet {name} in namespace {namespace}",
                f"{FM_AGENT}: the eks-pod-identity-agent add-on (or chart) is not installed, or is installed under "
                "another name or namespace; no pod can get Pod Identity credentials",
                (f"kubectl get daemonsets -A -l {AGENT_LABEL}", f"kubectl -n {namespace} get daemonsets"),
            )
        ]
    status = ds.get("status") or {}
    meta = ds.get("metadata") or {}
    desired = _int(status.get("desiredNumberScheduled"))
    ready = _int(status.get("numberReady"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    unavailable = _int(status.get("numberUnavailable"))
    counts = f"desired {desired}, ready {ready}, available {available}, unavailable {unavailable}, updated {updated}"
    where = f"Pod Identity Agent DaemonSet {namespace}/{name}"
    out: list[Finding] = []

    def finding(summary: str, expected: str, likely: str, seen: str = counts) -> None:
        out.append(Finding("pod_identity_agent", f"{where}: {summary}", expected, seen, likely, nxt))

    if desired == 0:
        finding(
            "scheduled on no node",
            "desiredNumberScheduled > 0: an agent pod on every node that runs Pod Identity workloads",
            f"{FM_AGENT}: the DaemonSet's nodeSelector, affinity or tolerations match no node (or every node is "
            "Fargate, hybrid or Auto Mode, where the agent does not run)",
        )
    elif ready < desired or unavailable > 0:
        finding(
            f"{ready} of {desired} agent pods ready",
            f"numberReady == desiredNumberScheduled ({desired}), numberUnavailable 0",
            f"{FM_AGENT}: on the nodes whose agent pod is not ready, every Pod Identity workload fails to get "
            "credentials (crash-looping agent, image pull failure, or a port conflict with another hostNetwork pod)",
        )
    if desired > 0 and updated < desired:
        finding(
            f"{updated} of {desired} agent pods run the current template",
            f"updatedNumberScheduled == desiredNumberScheduled ({desired})",
            "a rollout of a new agent version is in progress or stuck (maxUnavailable reached by failing pods); "
            "nodes still run the old version",
        )
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    observed_text = "unset" if observed is None else str(observed)
    if generation is not None and _int(observed) < _int(generation):
        finding(
            "the controller has not observed the latest spec",
            f"status.observedGeneration >= metadata.generation ({generation})",
            "the status above describes an older spec: the DaemonSet was just changed, or the controller "
            "manager is not processing it",
            seen=f"metadata.generation {generation}, status.observedGeneration {observed_text}",
        )
    return out


def _condition(obj: Mapping[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def _pod_state(pod: Mapping[str, Any]) -> tuple[bool, str]:
    """(healthy, description) of one agent pod."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    ready = _condition(pod, "Ready") == "True"
    reasons: list[str] = []
    restarts = 0
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        restarts += _int(cs.get("restartCount"))
        for key in ("waiting", "terminated"):
            reason = (state.get(key) or {}).get("reason")
            if reason:
                reasons.append(f"{cs.get('name')}: {reason}")
    description = f"pod {meta.get('name')} phase {phase}, Ready {'True' if ready else 'False'}"
    if reasons:
        description += f", {', '.join(reasons)}"
    if restarts:
        description += f", {restarts} restarts"
    return phase == "Running" and ready, description


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Whether a pod with these tolerations may be scheduled despite ``taint`` (Kubernetes' rules:
    an empty key with Exists tolerates everything; an empty effect matches every effect)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        operator = t.get("operator") or "Equal"
        if not t.get("key"):
            if operator == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if operator == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


# The chart's DaemonSets and the nodes each one's required node affinity admits
# [aws/eks-pod-identity-agent@d4dc0f3f, charts/eks-pod-identity-agent/values.yaml: `affinity` (the
# default DaemonSet), `daemonsets.hybrid.affinity`, `daemonsets.hybrid-bottlerocket.affinity`; the
# hybrid ones are opt-in (`create: false`)]. Each DaemonSet is named after its pods' label
# app.kubernetes.io/name: nameOverride `eks-pod-identity-agent` plus the `nameSuffix`
# (templates/_helpers.tpl, "selectorLabels"). All tolerate every taint (`tolerations: [{operator: Exists}]`).
# Whether the managed EKS add-on uses the same names, labels and affinity is *unconfirmed*: the
# checks take these as a parameter, and agent pods are listed by each live DaemonSet's own selector.
COMPUTE_TYPE = "eks.amazonaws.com/compute-type"
NODE_GROUP_LABEL = "eks.amazonaws.com/nodegroup"
Expr = tuple[str, str, tuple[str, ...]]  # a nodeSelectorTerm's matchExpression: key, operator, values
_LINUX = (("kubernetes.io/os", "In", ("linux",)), ("kubernetes.io/arch", "In", ("amd64", "arm64")))
_BOTTLEROCKET = ("os.bottlerocket.aws/variant", "os.bottlerocket.aws/version")


@dataclass(frozen=True)
class AgentDaemonSet:
    """One DaemonSet of the agent: its name (and its pods' ``app.kubernetes.io/name``), the
    matchExpressions of its required node affinity, the nodes they admit in words, and, where it
    is opt-in, how to install it."""

    name: str
    affinity: tuple[Expr, ...]
    admits: str
    install: str = ""

    @property
    def pod_label(self) -> str:
        return f"app.kubernetes.io/name={self.name}"


CHART_DAEMONSETS: tuple[AgentDaemonSet, ...] = (
    AgentDaemonSet(
        AGENT_NAME,
        (*_LINUX, (COMPUTE_TYPE, "NotIn", ("fargate", "hybrid", "auto"))),
        f"Linux amd64/arm64 nodes whose {COMPUTE_TYPE} is not fargate, hybrid or auto",
    ),
    AgentDaemonSet(
        f"{AGENT_NAME}-hybrid",
        (*_LINUX, (COMPUTE_TYPE, "In", ("hybrid",)), *((k, "DoesNotExist", ()) for k in _BOTTLEROCKET)),
        "hybrid nodes not running Bottlerocket",
        "helm upgrade eks-pod-identity-agent ... --set daemonsets.hybrid.create=true",
    ),
    AgentDaemonSet(
        f"{AGENT_NAME}-hybrid-bottlerocket",
        (*_LINUX, (COMPUTE_TYPE, "In", ("hybrid",)), *((k, "Exists", ()) for k in _BOTTLEROCKET)),
        "hybrid nodes running Bottlerocket",
        "helm upgrade eks-pod-identity-agent ... --set daemonsets.hybrid-bottlerocket.create=true",
    ),
)
# Compute types whose nodes serve Pod Identity without an agent pod. EKS user guide,
# pod-id-agent-setup: "You do not need to install the EKS Pod Identity Agent on EKS Auto Mode
# Clusters. This capability is built into EKS Auto Mode." Which address it answers on there is
# *unconfirmed*; test_agent_endpoint_answers measures it from the probe pod.
BUILT_IN_AGENT_COMPUTE: Mapping[str, str] = {
    "auto": "an EKS Auto Mode node: Auto Mode runs Pod Identity itself, no agent pod is expected (EKS user guide; "
    "unconfirmed how it answers: test_agent_endpoint_answers measures it)",
}
# Compute types where EKS Pod Identity cannot work at all, and what to use instead.
NO_POD_IDENTITY_COMPUTE: Mapping[str, str] = {
    "fargate": "a Fargate node: EKS Pod Identity is not available on Fargate (use IRSA there, or keep the "
    "workload off Fargate profiles)",
}


def _expr_holds(expr: Expr, labels: Mapping[str, Any]) -> bool:
    """A nodeSelectorRequirement (In, NotIn, Exists, DoesNotExist, Gt, Lt) against a node's labels."""
    key, op, values = expr
    present = key in labels
    value = str(labels.get(key))
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def _live_admits(ds: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether the live DaemonSet's pod template may run on ``node``: its nodeSelector, its required
    node affinity (terms ORed, expressions ANDed) and its tolerations of the node's taints."""
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    fields = {"metadata.name": (node.get("metadata") or {}).get("name")}

    def expr(e: Mapping[str, Any]) -> Expr:
        return str(e.get("key")), str(e.get("operator")), tuple(str(v) for v in e.get("values") or ())

    def term_admits(term: Mapping[str, Any]) -> bool:  # an empty term admits no node
        exprs = [(e, labels) for e in term.get("matchExpressions") or []]
        exprs += [(e, fields) for e in term.get("matchFields") or []]
        return bool(exprs) and all(_expr_holds(expr(e), where) for e, where in exprs)

    if terms and not any(term_admits(t) for t in terms):
        return False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = spec.get("tolerations") or []
    return not any(t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t) for t in taints)


def agent_pod_selectors(
    daemonsets: Mapping[str, Mapping[str, Any] | None], chart: Sequence[AgentDaemonSet] = CHART_DAEMONSETS
) -> list[str]:
    """The label selectors that list every agent pod: each installed DaemonSet's own
    ``spec.selector.matchLabels`` (whatever labels an install uses; the chart's label where it
    has none). An opt-in DaemonSet that is not installed (``None`` or left out) has no pods; the
    default one is always listed, by the chart's label when it was not found."""
    out: list[str] = []
    for spec in chart:
        ds = daemonsets.get(spec.name)
        if ds is None and spec.name != AGENT_NAME:
            continue
        selector = _selector(ds, spec.name)
        if selector not in out:
            out.append(selector)
    return out


@dataclass(frozen=True)
class Coverage:
    """What :func:`node_coverage` found: failures, and notes on nodes where no agent pod is due."""

    findings: list[Finding]
    notes: list[str]


def _node_where(name: str, labels: Mapping[str, Any], group_label: str) -> str:
    """``node <name> (node group <group>)``, both bounded and escaped (they are cluster-sourced)."""
    group = labels.get(group_label)
    group_text = f"node group {shown(group)}" if group else f"no {shown(group_label)} label"
    return f"node {shown(name, 253)} ({group_text})"


def node_coverage(
    agent_pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    *,
    node_selector: Mapping[str, str],
    tolerations: Iterable[Mapping[str, Any]] = (),
    daemonsets: Mapping[str, Mapping[str, Any] | None] | None = None,
    node_group_label: str = NODE_GROUP_LABEL,
    chart: Sequence[AgentDaemonSet] = CHART_DAEMONSETS,
) -> Coverage:
    """Every Ready node the workload can run on needs a Running, Ready agent pod (``spec.nodeName``
    == the node) of the agent DaemonSet due there.

    The workload can run where the probe's placement says: labels matching ``node_selector`` (all
    when it is empty) and no NoSchedule/NoExecute taint its ``tolerations`` do not cover (its
    affinity is not considered). The DaemonSet due on a node is the first of ``chart`` whose node
    affinity admits the node's labels and that is installed: ``daemonsets`` maps the names of
    ``chart`` to the live DaemonSets (``None``, or left out: not installed); the default DaemonSet
    is due wherever it admits the node, installed or not (:func:`daemonset_findings` reports it
    missing). A healthy pod of any agent DaemonSet covers the node.

    Findings: a node whose due DaemonSet has no healthy pod there, saying what its pod shows (none,
    a waiting reason such as CrashLoopBackOff, not ready) and, where the live DaemonSet's own
    nodeSelector, affinity or tolerations leave the node out, so. Notes (not failures): a node no
    installed DaemonSet is due on: Fargate, Auto Mode (Pod Identity built in), hybrid nodes without
    the opt-in hybrid DaemonSet, compute the chart's affinity leaves out (not Linux, not amd64/arm64).
    Each names the node and its ``node_group_label``, escaped and bounded.
    """
    tolerations = list(tolerations)
    installed = dict(daemonsets or {})
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    seen_pods: set[tuple[str, str]] = set()
    for pod in agent_pods:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("uid") or meta.get("name") or id(pod)))
        if key in seen_pods:
            continue  # listed by two selectors
        seen_pods.add(key)
        by_node.setdefault(str((pod.get("spec") or {}).get("nodeName") or ""), []).append(pod)
    findings: list[Finding] = []
    notes: list[str] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        node_name = str(meta.get("name") or "?")
        if any(labels.get(k) != v for k, v in node_selector.items()):
            continue
        if _condition(node, "Ready") != "True":
            continue
        taints = (node.get("spec") or {}).get("taints") or []
        if any(t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t) for t in taints):
            continue  # the workload cannot run there either
        pods = by_node.get(node_name, [])
        states = [_pod_state(p) for p in pods]
        if any(ok for ok, _ in states):
            continue
        where = _node_where(node_name, labels, node_group_label)
        compute = str(labels.get(COMPUTE_TYPE) or "")
        admitting = [d for d in chart if all(_expr_holds(e, labels) for e in d.affinity)]
        due = next((d for d in admitting if d.name == AGENT_NAME or installed.get(d.name) is not None), None)
        if due is None:
            if compute in BUILT_IN_AGENT_COMPUTE:
                why = BUILT_IN_AGENT_COMPUTE[compute]
            elif compute in NO_POD_IDENTITY_COMPUTE:
                why = NO_POD_IDENTITY_COMPUTE[compute]
            elif admitting:
                opt_in = admitting[0]
                why = (
                    f"{opt_in.admits}: the agent runs there only from the opt-in DaemonSet "
                    f"{AGENT_NAMESPACE}/{opt_in.name}, which is not installed; Pod Identity workloads there get no "
                    f"credentials until it is ({opt_in.install})"
                )
            else:
                os_arch = ", ".join(
                    f"{k.split('/')[-1]} {shown(labels.get(k, 'unset'))}"
                    for k in ("kubernetes.io/os", "kubernetes.io/arch")
                )
                why = (
                    f"no agent DaemonSet admits it ({os_arch}, compute type {shown(compute or 'unset')}; the agent "
                    f"runs on {chart[0].admits if chart else 'no node'}): Pod Identity workloads there get no "
                    "credentials"
                )
            notes.append(f"{where}: no Pod Identity Agent pod is due there: {why}")
            continue
        live = installed.get(due.name)
        cmd_node = command_name(node_name, "<node>")
        nxt = [f"kubectl get pods -A -l {due.pod_label} -o wide --field-selector spec.nodeName={cmd_node}"]
        if not pods:
            seen = "no agent pod on the node"
            if live is not None and not _live_admits(live, node):
                likely = (
                    f"{FM_AGENT}: DaemonSet {AGENT_NAMESPACE}/{due.name}'s own nodeSelector, node affinity or "
                    f"tolerations leave this node out (the chart's admit {due.admits}): it was changed, and Pod "
                    "Identity workloads scheduled here get no credentials"
                )
            else:
                likely = (
                    f"{FM_AGENT}: DaemonSet {AGENT_NAMESPACE}/{due.name} does not schedule onto this node (its "
                    "tolerations do not cover the node's taints, or a nodeSelector/affinity excludes it), or it is "
                    "not installed"
                )
            nxt += [f"kubectl describe node {cmd_node}", f"kubectl -n {AGENT_NAMESPACE} describe daemonset {due.name}"]
        else:
            seen = "; ".join(desc for _, desc in states)
            crash = any("CrashLoopBackOff" in desc or "Error" in desc for _, desc in states)
            likely = (
                f"{FM_AGENT}: the agent on this node keeps crashing (its logs tell why: a port conflict on "
                "80/2703, or it cannot reach EKS Auth)"
                if crash
                else f"{FM_AGENT}: the agent pod on this node is not ready; Pod Identity workloads there get no "
                "credentials"
            )
            for pod in pods:
                pmeta = pod.get("metadata") or {}
                pod_ns = command_name(pmeta.get("namespace") or AGENT_NAMESPACE, "<namespace>")
                pod_name = command_name(pmeta.get("name"), "<pod>")
                nxt.append(
                    f"kubectl -n {pod_ns} logs {pod_name} --previous"
                    if crash
                    else f"kubectl -n {pod_ns} describe pod {pod_name}"
                )
        details = {"node": shown(node_name, 253), "daemonset": f"{AGENT_NAMESPACE}/{due.name} ({due.admits})"}
        group = labels.get(node_group_label)
        if group:
            details["node group"] = shown(group)
        findings.append(
            Finding(
                "pod_identity_agent",
                f"{where}: no running Pod Identity Agent",
                f"a Running, Ready {due.name} pod on the node",
                seen,
                likely,
                tuple(nxt),
                details,
            )
        )
    return Coverage(findings, notes)


def addon_findings(addon: Mapping[str, Any] | None) -> list[Finding]:
    """The ``eks-pod-identity-agent`` EKS add-on must be ACTIVE when it is installed.

    ``None`` (the add-on is not installed) is not a finding: the agent can be installed with Helm
    or manifests instead; :func:`daemonset_findings` decides whether an agent runs at all.
    """
    if addon is None:
        return []
    status = str(addon.get("status") or "UNKNOWN")
    if status == "ACTIVE":
        return []
    name = str(addon.get("addonName") or AGENT_NAME)
    cluster = str(addon.get("clusterName") or "<cluster>")
    issues = (addon.get("health") or {}).get("issues") or []
    described = [f"{i.get('code')}: {i.get('message')}" for i in issues]
    seen = f"status {status}, version {addon.get('addonVersion') or 'unknown'}"
    if described:
        seen += f"; health issues: {'; '.join(described)}"
    likely = {
        "CREATING": "the add-on is still being installed: agents may not be running on every node yet",
        "UPDATING": "the add-on is being updated: agents restart node by node",
        "DELETING": "the add-on is being removed: agents are going away",
        "DEGRADED": f"{FM_AGENT}: the add-on is installed but unhealthy (see the health issues)",
        "CREATE_FAILED": f"{FM_AGENT}: the add-on failed to install (see the health issues)",
        "UPDATE_FAILED": "the add-on update failed, often a conflict with hand-edited fields (see the health issues)",
        "DELETE_FAILED": "the add-on removal failed (see the health issues)",
    }.get(status, f"{FM_AGENT}: the add-on is not ACTIVE")
    return [
        Finding(
            "pod_identity_agent",
            f"EKS add-on {name} on cluster {cluster} is {status}",
            "add-on status ACTIVE with no health issues",
            seen,
            likely,
            (
                f"aws eks describe-addon --cluster-name {cluster} --addon-name {name}",
                f"kubectl -n {AGENT_NAMESPACE} describe daemonset {AGENT_NAME}",
            ),
            {"issues": ", ".join(str(i.get("code")) for i in issues)} if issues else {},
        )
    ]


def endpoint_findings(
    w: Workload, agent_result: AgentResult, *, cluster: str | None = None, region: str | None = None
) -> list[Finding]:
    """The agent endpoint as the probe pod sees it (the probe's ``agent`` result).

    For a Pod Identity workload: the webhook must have injected the endpoint
    (``configured``), and the agent must hand out credentials for the pod's token
    (``outcome`` "credentials"). IRSA workloads do not use the agent: always empty.
    ``cluster`` (the cluster name) and ``region`` only fill in the ``aws eks`` command.
    """
    if w.mechanism != "pod-identity":
        return []
    where = workload_label(w)
    cluster_arg = cluster or "<cluster>"
    assoc = (
        f"aws eks list-pod-identity-associations --cluster-name {cluster_arg}"
        + (f" --region {region}" if region else "")
        + f" --namespace {w.namespace} --service-account {w.service_account}"
    )
    agent_pods = f"kubectl -n {AGENT_NAMESPACE} get pods -l {AGENT_LABEL} -o wide"
    if not agent_result.get("configured"):
        return [
            Finding(
                "pod_identity_agent",
                f"{where}: the pod has no Pod Identity endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI not injected)",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials and "
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE injected by EKS",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI not set in the pod",
                f"no Pod Identity association for {w.namespace}/{w.service_account} existed when the pod started "
                f"({FM_CONSISTENCY}: pods started before the association keep no identity until restarted), "
                "or EKS's admission webhook did not mutate the pod",
                (assoc, f"kubectl -n {w.namespace} get sa {w.service_account} -o yaml"),
            )
        ]
    outcome = str(agent_result.get("outcome") or "error")
    if outcome == "credentials":
        return []
    status = agent_result.get("http_status")
    code = error_code(agent_result.get("error_code"))
    uri = str(agent_result.get("uri") or "?")
    seen = f"GET {uri}: {outcome}" + (f", HTTP {status}" if status is not None else "") + (f", {code}" if code else "")
    nxt: tuple[str, ...] = (agent_pods, f"kubectl -n {AGENT_NAMESPACE} describe daemonset {AGENT_NAME}")
    logs = f"kubectl -n {AGENT_NAMESPACE} logs -l {AGENT_LABEL} --tail=100"
    if outcome in ("refused", "timeout"):
        likely = (
            f"{FM_AGENT}: nothing answers on the pod's node (the agent is missing, crash-looping or not yet "
            "started there), or a NetworkPolicy/host firewall blocks 169.254.170.23:80; hostNetwork pods "
            "cannot reach it"
        )
    elif outcome == "no-token":
        likely = (
            "the projected eks-pod-identity-token volume is missing or unreadable in the pod (the pod was "
            "mutated partially, or its securityContext cannot read the file)"
        )
        nxt = (f"kubectl -n {w.namespace} get pods -o yaml | grep -n eks-pod-identity-token", assoc)
    elif outcome == "http-error":
        kind = refusal(code, status)
        likely = refusal_likely(w, kind, code)
        if kind == "trust-denied":
            _, role = role_arn_parts(w.role_arn)
            nxt = (f"aws iam get-role --role-name {role} --query Role.AssumeRolePolicyDocument", assoc)
        elif kind == "no-association":
            nxt = (assoc, f"kubectl -n {w.namespace} get pods -o wide")
        elif kind in ("token-rejected", "token-invalid", "token-expired"):
            nxt = (f"kubectl -n {w.namespace} get pods -o yaml | grep -n -A6 eks-pod-identity-token", logs)
        elif kind == "wrong-address":
            nxt = (f"kubectl -n {w.namespace} get pods -o yaml | grep -n -i -e proxy -e CREDENTIALS_FULL_URI", *nxt)
        else:
            nxt = (*nxt, logs)
    else:
        likely = f"{FM_AGENT}: the agent did not hand out credentials; its logs show why"
        nxt = (*nxt, logs)
    return [
        Finding(
            "pod_identity_agent",
            f"{where}: the Pod Identity Agent did not return credentials",
            f"GET {uri} with the pod's token answers credentials",
            seen,
            likely,
            nxt,
        )
    ]


def _provider_path(url: str) -> str:
    """Normalise an issuer URL, a provider URL or a provider ARN to ``host/path``."""
    url = url.split(":oidc-provider/", 1)[1] if ":oidc-provider/" in url else url
    return url.removeprefix("https://").removeprefix("http://").rstrip("/")


def oidc_provider_findings(
    issuer: str | None,
    providers: Mapping[str, Sequence[str]],
    *,
    cluster: str | None = None,
    region: str | None = None,
) -> list[Finding]:
    """IRSA: the account must have an IAM OIDC provider for the cluster's issuer, listing
    ``sts.amazonaws.com`` as a client id (audience).

    ``providers`` maps a provider URL (``host/path`` as IAM returns it; a scheme or a provider
    ARN is tolerated) to its client id list. ``cluster``/``region`` only fill in the commands.
    """
    name = cluster or "<cluster>"
    region_arg = f" --region {region}" if region else ""
    nxt = (
        "aws iam list-open-id-connect-providers",
        f"eksctl utils associate-iam-oidc-provider --cluster {name}{region_arg} --approve",
    )
    if issuer is None:
        return [
            Finding(
                "oidc_provider",
                f"cluster {name} has no OIDC issuer",
                "cluster.identity.oidc.issuer set (https://oidc.eks.<region>.amazonaws.com/id/<id>)",
                "no issuer",
                f"{FM_TRUST}: without an issuer IAM cannot verify the pod's tokens and IRSA cannot work "
                "(or the cluster description could not be read)",
                (f"aws eks describe-cluster --name {name}{region_arg} --query cluster.identity.oidc.issuer", *nxt),
            )
        ]
    path = _provider_path(issuer)
    known = {_provider_path(url).lower(): (url, list(ids)) for url, ids in providers.items()}
    match = known.get(path.lower())
    if match is None:
        listed = ", ".join(sorted(_provider_path(u) for u in providers)) or "none"
        return [
            Finding(
                "oidc_provider",
                f"cluster {name}: no IAM OIDC provider for its issuer",
                f"an IAM OIDC provider for {path}",
                f"providers in the account: {listed}",
                f"{FM_TRUST}: STS answers InvalidIdentityToken to every IRSA pod of the cluster (the provider was "
                "never created, or the cluster was recreated with a new issuer)",
                nxt,
            )
        ]
    _, client_ids = match
    if STS_AUDIENCE not in client_ids:
        return [
            Finding(
                "oidc_provider",
                f"cluster {name}: the IAM OIDC provider does not list {STS_AUDIENCE} as a client id",
                f"client ids of {path} include {STS_AUDIENCE}",
                f"client ids: {', '.join(client_ids) or 'none'}",
                f"{FM_TRUST}: the webhook projects tokens with audience {STS_AUDIENCE}; STS rejects them as "
                "InvalidIdentityToken (incorrect token audience)",
                (
                    f"aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn "
                    f'$(aws iam list-open-id-connect-providers --query "OpenIDConnectProviderList[?ends_with(Arn, '
                    f"'{path}')].Arn\" --output text) --client-id {STS_AUDIENCE}",
                    nxt[0],
                ),
            )
        ]
    return []
