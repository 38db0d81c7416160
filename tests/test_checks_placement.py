"""The probe mirrors the workload's pod template (placement and network settings) and the template's own
network problems for Pod Identity are found — all from real apps/v1 Deployment JSON, hostile fields included."""

from __future__ import annotations

import ipaddress

import pytest

from pytest_eksid.checks.placement import Placement, mirror, network_findings, no_proxy_covers
from pytest_eksid.probe.pod import probe_pod_manifest, profile_placement, with_overrides
from pytest_eksid.profile import WorkloadProbe, load_profile
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import run_pytest

DEMO = load_profile("demo", REPO).profile
PI = next(w for w in DEMO.workloads if w.mechanism == "pod-identity")
IRSA = next(w for w in DEMO.workloads if w.mechanism == "irsa")
FALLBACK = Placement("profile probe settings", node_selector={"pool": "probes"})


def deployment(name="app", ns="finance", *, spec=None, env=None):
    pod = {
        "serviceAccountName": "app-sa",
        "securityContext": {"runAsUser": 0},
        "volumes": [{"name": "creds", "secret": {"secretName": "aws"}}],
        "containers": [{"name": "app", "image": "app:1", "env": env or [], "securityContext": {"privileged": True}}],
        **(spec or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {}, "spec": pod}},
    }


TEMPLATE = deployment(
    spec={
        "nodeSelector": {"eks.amazonaws.com/nodegroup": "ng-batch", "bad key!": "x", "k": "\x1b]0;pwned\x07"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
                    ]
                }
            },
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
        },
        "tolerations": [{"key": "batch", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
    },
    env=[
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "NO_PROXY", "value": "169.254.170.23,fd00:ec2::23"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAEXAMPLEEXAMPLE00"},
        {"name": "AWS_ENDPOINT_URL_STS", "value": "https://sts.attacker.example"},
        {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
        {"name": "HTTP_PROXY", "valueFrom": {"configMapKeyRef": {"name": "proxy", "key": "url"}}},
    ],
)


def test_the_probe_takes_placement_and_network_settings_from_the_template():
    placed = mirror([TEMPLATE], "app=app", FALLBACK)
    assert placed.mirrored
    assert placed.source == "mirrored from Deployment finance/app"
    assert placed.node_selector == {"eks.amazonaws.com/nodegroup": "ng-batch"}  # invalid labels dropped
    assert placed.node_affinity is not None
    assert "requiredDuringSchedulingIgnoredDuringExecution" in placed.node_affinity
    assert placed.tolerations == ({"key": "batch", "operator": "Equal", "value": "true", "effect": "NoSchedule"},)
    assert placed.host_network is True
    assert placed.dns_policy == "ClusterFirstWithHostNet"
    # proxies and AWS settings only, literal values only: no credential, no injected variable, no endpoint
    assert placed.env == {
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "169.254.170.23,fd00:ec2::23",
        "AWS_REGION": "eu-west-1",
    }


def test_the_manifest_keeps_the_probe_contract_whatever_the_template_says():
    placed = mirror([TEMPLATE], "app=app", FALLBACK)
    manifest = probe_pod_manifest(
        DEMO.model_copy(update={"probe": DEMO.probe.model_copy(update={"node_groups": []})}),
        PI,
        "run",
        placement=placed,
    )
    spec = manifest["spec"]
    assert spec["serviceAccountName"] == PI.service_account
    assert spec["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "ng-batch"}
    assert spec["affinity"] == {"nodeAffinity": placed.node_affinity}  # pod (anti-)affinity is not placement
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["tolerations"] == [dict(t) for t in placed.tolerations]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "volumes" not in spec
    (container,) = spec["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    names = [e["name"] for e in container["env"]]
    assert "AWS_ACCESS_KEY_ID" not in names
    assert "AWS_ENDPOINT_URL_STS" not in names
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]


def test_no_template_or_disagreeing_templates_fall_back_to_the_profile_and_say_why():
    none = mirror([], "app.kubernetes.io/name=app", FALLBACK)
    assert not none.mirrored
    assert none.node_selector == {"pool": "probes"}
    assert none.source == "profile probe settings (no Deployment or StatefulSet matches app.kubernetes.io/name=app)"
    other = deployment("app-canary", spec={"nodeSelector": {"pool": "canary"}})
    two = mirror([deployment(), other], "app=app", FALLBACK)
    assert not two.mirrored
    assert "2 pod templates disagree on placement" in two.source
    same = mirror([deployment(), deployment("app-b")], "app=app", FALLBACK)
    assert same.mirrored


def test_the_profile_overrides_mirrored_fields_one_by_one():
    w = PI.model_copy(
        update={"probe": WorkloadProbe.model_validate({"hostNetwork": False, "nodeSelector": {"pool": "x"}})}
    )
    placed = with_overrides(mirror([TEMPLATE], "s", FALLBACK), w)
    assert placed.host_network is False
    assert placed.node_selector == {"pool": "x"}
    assert placed.dns_policy == "ClusterFirstWithHostNet"  # not overridden: still mirrored
    assert "overriding hostNetwork, nodeSelector" in placed.source
    assert profile_placement(DEMO, PI).source == "profile probe settings"


@pytest.mark.parametrize(
    ("no_proxy", "covered"),
    [
        ("", False),
        ("127.0.0.1,localhost,.svc", False),
        ("169.254.170.23", True),
        ("10.0.0.0/8, 169.254.0.0/16", True),
        ("*", True),
        ("169.254.170.23:80", True),
        ("169.254.170.2", False),  # the ECS address, not the agent's
    ],
)
def test_no_proxy_coverage(no_proxy, covered):
    assert no_proxy_covers(no_proxy, ipaddress.ip_address("169.254.170.23")) is covered


def test_ipv6_entries_with_brackets():
    assert no_proxy_covers("[fd00:ec2::23]", ipaddress.ip_address("fd00:ec2::23"))
    assert no_proxy_covers("fd00:ec2::/64", ipaddress.ip_address("fd00:ec2::23"))


def test_a_proxy_that_would_carry_the_agents_requests_is_a_finding():
    env = [{"name": "HTTP_PROXY", "value": "http://proxy:3128"}, {"name": "no_proxy", "value": "localhost"}]
    (finding,) = network_findings("app", "pod-identity", [deployment(env=env)])
    assert "sets an HTTP proxy" in finding.summary
    assert "169.254.170.23,fd00:ec2::23" in finding.message()
    exempt = [*env, {"name": "NO_PROXY", "value": "169.254.170.23,fd00:ec2::23"}]
    assert network_findings("app", "pod-identity", [deployment(env=exempt)]) == []
    # HTTPS_PROXY does not apply to the agent's http:// URL; a proxy from a ConfigMap is not read
    https_only = [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]
    indirect = [{"name": "HTTP_PROXY", "valueFrom": {"configMapKeyRef": {"name": "p", "key": "u"}}}]
    assert network_findings("app", "pod-identity", [deployment(env=https_only), deployment(env=indirect)]) == []
    assert network_findings("app", "irsa", [deployment(env=env)]) == []  # IRSA calls STS, not the agent


def test_host_network_with_pod_identity_is_a_finding_and_names_are_escaped():
    hostile = deployment("x\x1b[31mALL CHECKS PASSED", spec={"hostNetwork": True})
    (finding,) = network_findings("app", "pod-identity", [hostile])
    assert "hostNetwork" in finding.summary
    assert "\x1b" not in finding.message()
    assert network_findings("app", "irsa", [hostile]) == []


def test_agent_coverage_follows_the_workloads_placement(tmp_path):
    """Agent down on ng-batch only: a workload placed on ng-general passes its coverage check (it cannot land
    on the broken group), where the same workload allowed anywhere fails it (the agent-down-one-node-group row)."""
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "agent-down", "nodegroup": "ng-batch"}]
    exporter = next(w for w in data["workloads"] if w["name"] == "invoice-exporter")
    exporter["probe"] = {"nodeSelector": {"eks.amazonaws.com/nodegroup": "ng-general"}}
    run = run_pytest(
        f"--profile={write_profile(tmp_path, data, 'placed')}", "-k", "test_agent_on_every_node", tmp_path=tmp_path
    )
    assert run.outcomes == {"suites/test_agent.py::test_agent_on_every_node[placed/invoice-exporter]": "passed"}, (
        run.stdout[-3000:]
    )
