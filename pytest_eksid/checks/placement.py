"""Where and how a workload's pods reach their credentials, read from its own pod templates: the probe
mirrors it (so a verdict holds for the nodes and network the workload really uses), and the checks of
what the template itself gets wrong (a proxy that captures the agent's address, hostNetwork with Pod Identity).

Inputs are apps/v1 Deployment and StatefulSet JSON from the cluster: hostile input. Only the fields that
decide how credentials are reached are taken, each validated and bounded; containers, volumes and security
contexts are never copied (the probe's own restricted pod is part of the contract).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_eksid.checks import Finding, shown

# Literal environment values the probe copies from the workload's first container. Proxies decide whether the
# agent's address is reached directly; the others change which endpoints and retries the SDK uses. Not copied,
# on purpose: credentials, the variables the webhooks inject, AWS_ENDPOINT_URL* (a template could point the
# probe's STS calls at a server of its own choosing), AWS_CA_BUNDLE/AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE
# (paths in the workload's image, not the probe's).
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")
AWS_SETTINGS = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_METADATA_SERVICE_TIMEOUT",
    "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
)
MIRRORED_VARIABLES = frozenset(PROXY_VARIABLES + AWS_SETTINGS)
DNS_POLICIES = frozenset({"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"})
# The Pod Identity agent's addresses (EKS_FACTS.md: agent, cmd/server.go).
AGENT_IPV4 = ipaddress.ip_address("169.254.170.23")
AGENT_IPV6 = ipaddress.ip_address("fd00:ec2::23")
_LABEL_KEY_RE = re.compile(
    r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", re.ASCII
)
_LABEL_VALUE_RE = re.compile(r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", re.ASCII)
_MAX_VALUE = 2048
_MAX_ITEMS = 64
FM_AGENT_REACH = "the pods cannot reach the Pod Identity Agent directly"


@dataclass(frozen=True)
class Placement:
    """How a probe pod is placed and what network settings it runs with, and where that came from."""

    source: str  # e.g. "mirrored from Deployment finance/app" or "profile probe settings (no pod template ...)"
    mirrored: bool = False
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: dict[str, Any] | None = None
    tolerations: tuple[dict[str, Any], ...] = ()
    host_network: bool = False
    dns_policy: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    template = (obj.get("spec") or {}).get("template") or {}
    spec = template.get("spec") if isinstance(template, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'Deployment')} {shown(meta.get('namespace') or '?')}/{shown(meta.get('name') or '?')}"


def _labels(value: Any) -> dict[str, str]:
    """A nodeSelector as Kubernetes accepts it; anything else is dropped (hostile input)."""
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for k, v in list(value.items())[:_MAX_ITEMS]:
        if isinstance(k, str) and isinstance(v, str) and _LABEL_KEY_RE.fullmatch(k) and _LABEL_VALUE_RE.fullmatch(v):
            out[k] = v
    return out


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON data, bounded in depth, size and string length (node affinity and tolerations are copied as data)."""
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        return {str(k)[:_MAX_VALUE]: _plain(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value[:_MAX_ITEMS]]
    if isinstance(value, str):
        return value[:_MAX_VALUE]
    return value if isinstance(value, bool | int | float) or value is None else None


def _tolerations(value: Any) -> tuple[dict[str, Any], ...]:
    keys = ("key", "operator", "value", "effect", "tolerationSeconds")
    out = []
    for t in value if isinstance(value, list) else []:
        if isinstance(t, Mapping):
            kept = {k: _plain(t[k]) for k in keys if k in t and isinstance(t[k], str | int)}
            if kept:
                out.append(kept)
    return tuple(out[:_MAX_ITEMS])


def template_env(spec: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(literal values of the mirrored variables in the first container, names of those set from elsewhere)."""
    containers = spec.get("containers") if isinstance(spec.get("containers"), list) else []
    first = containers[0] if containers and isinstance(containers[0], Mapping) else {}
    literal: dict[str, str] = {}
    indirect: list[str] = []
    for env in first.get("env") or []:
        if not isinstance(env, Mapping):
            continue
        name = env.get("name")
        if not isinstance(name, str) or name not in MIRRORED_VARIABLES:
            continue
        if isinstance(env.get("value"), str):
            literal[name] = env["value"][:_MAX_VALUE]
        elif env.get("valueFrom") is not None:
            indirect.append(name)
    return literal, indirect


def _template_placement(obj: Mapping[str, Any]) -> Placement:
    spec = _pod_spec(obj)
    raw = spec.get("affinity")
    affinity: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity.get("nodeAffinity"), Mapping) else None
    dns = spec.get("dnsPolicy")
    return Placement(
        source=f"mirrored from {_name(obj)}",
        mirrored=True,
        node_selector=_labels(spec.get("nodeSelector")),
        node_affinity=_plain(node_affinity) if node_affinity is not None else None,
        tolerations=_tolerations(spec.get("tolerations")),
        host_network=spec.get("hostNetwork") is True,
        dns_policy=dns if isinstance(dns, str) and dns in DNS_POLICIES else None,
        env=template_env(spec)[0],
    )


def mirror(templates: Sequence[Mapping[str, Any]], selector: str, fallback: Placement) -> Placement:
    """The placement of the workload's pods, from its templates; ``fallback`` (the profile's probe settings,
    with the reason added) when there is none, or when several disagree on it."""
    if not templates:
        return _with_source(
            fallback, f"profile probe settings (no Deployment or StatefulSet matches {shown(selector)})"
        )
    found = [_template_placement(t) for t in templates[:_MAX_ITEMS]]
    first = found[0]
    if any(_key(p) != _key(first) for p in found[1:]):
        names = ", ".join(p.source.removeprefix("mirrored from ") for p in found[:5])
        return _with_source(
            fallback, f"profile probe settings ({len(found)} pod templates disagree on placement: {names})"
        )
    return first


def _key(p: Placement) -> tuple[Any, ...]:
    return (
        sorted(p.node_selector.items()),
        repr(p.node_affinity),
        p.tolerations,
        p.host_network,
        p.dns_policy,
        sorted(p.env.items()),
    )


def _with_source(p: Placement, source: str) -> Placement:
    return Placement(
        source, False, dict(p.node_selector), p.node_affinity, p.tolerations, p.host_network, p.dns_policy, dict(p.env)
    )


# --- what the template itself gets wrong -----------------------------------------------------


def _covers(entry: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether one NO_PROXY entry exempts the address: ``*``, the address itself (IPv6 with or without
    brackets, a port ignored), or a CIDR block holding it (Go's httpproxy and the AWS SDKs that use it)."""
    entry = entry.strip().lower()
    if entry == "*":
        return True
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def no_proxy_covers(no_proxy: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(_covers(e, address) for e in no_proxy.split(",")[:_MAX_ITEMS])


def network_findings(workload_name: str, mechanism: str, templates: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Pod Identity: a template whose pods would not reach the agent's address directly.

    - ``HTTP_PROXY``/``http_proxy`` set without ``NO_PROXY`` exempting 169.254.170.23: SDKs that honour the
      proxy variables for the container credentials request (Go's default transport, and others) send it to
      the proxy, which cannot reach the node-local agent (EKS_FACTS.md: known field failures). botocore does
      not (its ContainerMetadataFetcher builds its URLLib3Session without proxies; botocore 1.44 utils.py),
      so a Python-only workload may work today and break with the next sidecar. The agent's URL is http, so
      only the http proxy variables matter.
    - ``hostNetwork: true``: EKS_FACTS.md lists hostNetwork pods among Pod Identity's known field failures.
    """
    if mechanism != "pod-identity":
        return []
    out: list[Finding] = []
    for obj in templates:
        spec = _pod_spec(obj)
        where = _name(obj)
        literal, _indirect = template_env(spec)
        proxy = literal.get("HTTP_PROXY") or literal.get("http_proxy")
        no_proxy = ",".join(v for k, v in literal.items() if k in ("NO_PROXY", "no_proxy"))
        if proxy and not no_proxy_covers(no_proxy, AGENT_IPV4):
            out.append(
                Finding(
                    "pod_identity_agent",
                    f"{workload_name}: {where} sets an HTTP proxy that would carry the agent's requests",
                    "NO_PROXY (and no_proxy) listing 169.254.170.23 and fd00:ec2::23 wherever HTTP_PROXY is set",
                    "HTTP_PROXY set; NO_PROXY " + (f"is {shown(no_proxy, 120)}" if no_proxy else "not set"),
                    f"{FM_AGENT_REACH}: an SDK that honours the proxy variables sends the container credentials "
                    "request to the proxy, which cannot reach the node-local agent (botocore ignores them for "
                    "this request; Go and others do not)",
                    ("add 169.254.170.23,fd00:ec2::23 to NO_PROXY and no_proxy in the pod template",),
                )
            )
        # A proxy set from a ConfigMap or Secret (valueFrom) is not read here: its value is not ours to see.
        if spec.get("hostNetwork") is True:
            out.append(
                Finding(
                    "pod_identity_agent",
                    f"{workload_name}: {where} runs its pods with hostNetwork",
                    "pods on the pod network (hostNetwork unset or false)",
                    "hostNetwork: true",
                    "hostNetwork pods are a known Pod Identity field failure (EKS_FACTS.md), and they share the "
                    "node's network namespace: the IMDS hop limit that keeps pods from the node's role does not "
                    "apply to them",
                    ("remove hostNetwork from the pod template, or bind this workload by IRSA",),
                )
            )
    return out
