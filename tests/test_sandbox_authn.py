"""Authentication as EKS does it: EKS tokens made with botocore exactly as ``aws eks get-token`` makes them,
checked as aws-iam-authenticator checks them and mapped by access entries or the aws-auth ConfigMap; the
access-policy authorizer; service-account tokens; the access-entry API against botocore's ``eks`` model."""

from __future__ import annotations

import base64
import datetime
import json
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import kubernetes.client
import pytest
import yaml
from botocore.exceptions import ClientError

from pytest_eksid.redact import redact_text
from pytest_eksid.sandbox import eks as sandbox_eks
from pytest_eksid.sandbox import get_token
from pytest_eksid.sandbox.eks import ACCESS_POLICY_PREFIX, EksControlPlane
from pytest_eksid.sandbox.eks_access import AccessPolicyAuthorizer
from pytest_eksid.sandbox.eks_authn import EksTokenAuthenticator, canonical_arn_of
from pytest_eksid.sandbox.kubeapi.authn import API_AUDIENCE, ServiceAccountTokenAuthenticator
from pytest_eksid.sandbox.kubeapi.request import RequestInfo
from pytest_eksid.sandbox.kubeapi.resources import BY_PATH
from pytest_eksid.sandbox.kubeapi.server import Caller, Decision
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import close_sandbox, open_sandbox

ACCOUNT = "111122223333"
REGION = "eu-west-1"
CLUSTER = "demo"
RUNNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/eksid-runner"
VIEW = ACCESS_POLICY_PREFIX + "AmazonEKSViewPolicy"
EDIT = ACCESS_POLICY_PREFIX + "AmazonEKSEditPolicy"
ADMIN = ACCESS_POLICY_PREFIX + "AmazonEKSAdminPolicy"
CLUSTER_ADMIN = ACCESS_POLICY_PREFIX + "AmazonEKSClusterAdminPolicy"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    running = open_sandbox(demo_data(), tmp_path_factory.mktemp("sandbox"), "authn")
    try:
        yield running
    finally:
        close_sandbox(running)


def client(run, service: str, keys: dict[str, str] | None = None) -> Any:
    keys = keys or {
        "aws_access_key_id": run.connection.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": run.connection.env["AWS_SECRET_ACCESS_KEY"],
    }
    return boto3.client(service, region_name=REGION, endpoint_url=run.connection.env["AWS_ENDPOINT_URL"], **keys)


def eks_token(run, keys: dict[str, str] | None = None, cluster: str = CLUSTER) -> str:
    """A token made as ``aws eks get-token`` makes it: botocore presigns with the x-k8s-aws-id header."""
    return get_token.token(client(run, "sts", keys), cluster)


def get(run, path: str, token: str) -> int:
    request = urllib.request.Request(run.sandbox.kubeapi.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def authenticator(run, now: datetime.datetime | None = None, cluster: EksControlPlane | None = None):
    return EksTokenAuthenticator(
        cluster or run.sandbox.eks,
        run.sandbox.aws.url,
        aws_auth=lambda: (run.sandbox.store.find("configmaps", "kube-system", "aws-auth") or {}).get("data"),
        now=(lambda: now) if now is not None else (lambda: datetime.datetime.now(datetime.UTC)),
    )


def new_user(run, name: str) -> tuple[str, dict[str, str]]:
    iam = client(run, "iam")
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return arn, {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def new_role_session(run, role: str, session: str) -> tuple[str, dict[str, str]]:
    iam = client(run, "iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": RUNNER_ARN}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    creds = client(run, "sts").assume_role(RoleArn=arn, RoleSessionName=session)["Credentials"]
    return arn, {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def info(verb: str, group: str, version: str, plural: str, namespace: str | None = None, **kw: Any) -> RequestInfo:
    return RequestInfo(verb, "/x", BY_PATH[(group, version, plural)], namespace, kw.get("name"), kw.get("sub"))


# --- the token and its checks --------------------------------------------------------------------------


def test_get_token_authenticates_the_runner_through_its_access_entry(run):
    token = eks_token(run)
    assert token.startswith("k8s-aws-v1.")
    assert "=" not in token
    url = base64.urlsafe_b64decode(token[len("k8s-aws-v1.") :] + "==").decode()
    assert url.startswith(run.sandbox.aws.url + "/?")
    assert "x-k8s-aws-id" in url
    assert "X-Amz-Expires=60" in url
    caller = run.sandbox.kubeapi.authenticators[0](token)
    assert caller is not None
    # EKS's default username for an IAM user is its ARN; groups: none of the entry's, plus system:authenticated.
    assert (caller.name, caller.groups) == (RUNNER_ARN, ("system:authenticated",))
    extra = dict(caller.extra)
    assert extra["arn"] == extra["canonicalArn"] == (RUNNER_ARN,)
    assert extra["accessKeyId"] == (run.connection.env["AWS_ACCESS_KEY_ID"],)
    assert caller.uid.startswith(f"aws-iam-authenticator:{ACCOUNT}:")
    # The runner is cluster admin by AmazonEKSClusterAdminPolicy, not by system:masters.
    assert get(run, "/api/v1/nodes", token) == 200
    assert token in run.sandbox.minted_secrets  # the ledger knows it
    assert "k8s-aws-v1" not in redact_text(f"Authorization: {token} and {token}")


def test_the_kubeconfig_authenticates_by_exec_plugin_not_by_a_static_token(run):
    config = yaml.safe_load(run.connection.kubeconfig.read_text())
    user = config["users"][0]["user"]
    assert "token" not in user
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert user["exec"]["args"][:2] == ["-m", "pytest_eksid.sandbox.get_token"]
    # The product's client (kubernetes' exec provider) got an EKS token and is the runner.
    assert kubernetes.client.CoreV1Api(run.kube.api_client).list_namespace().items


def test_a_token_for_another_cluster_is_refused(run):
    assert authenticator(run)(eks_token(run, cluster="someone-elses")) is None
    assert get(run, "/api/v1/namespaces", eks_token(run, cluster="someone-elses")) == 401


def test_expiry_is_15_minutes_from_x_amz_date_whatever_x_amz_expires_says(run):
    token = eks_token(run)  # X-Amz-Expires=60, as aws eks get-token signs it
    now = datetime.datetime.now(datetime.UTC)
    assert authenticator(run, now + datetime.timedelta(minutes=14))(token) is not None
    assert authenticator(run, now + datetime.timedelta(minutes=16))(token) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("X-Amz-Signature=", "X-Amz-Signature=0"),
        lambda url: url.replace("Action=GetCallerIdentity", "Action=GetSessionToken"),
        lambda url: url + "&X-Amz-Foo=1",
        lambda url: url + "&action=GetCallerIdentity",
        lambda url: url.replace("X-Amz-Expires=60", "X-Amz-Expires=901"),
        lambda url: url.replace("/?", "/other?"),
        lambda url: url.replace("127.0.0.1", "localhost"),
    ],
    ids=["signature", "action", "extra-parameter", "duplicate-parameter", "expires", "path", "host"],
)
def test_a_tampered_token_is_refused(run, tamper):
    url = get_token.presigned_url(client(run, "sts"), CLUSTER)
    token = "k8s-aws-v1." + base64.urlsafe_b64encode(tamper(url).encode()).decode().rstrip("=")
    assert authenticator(run)(token) is None


def test_a_url_that_does_not_sign_the_cluster_header_is_refused(run):
    url = client(run, "sts").generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    assert authenticator(run)("k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")) is None


def test_padding_and_size_are_refused(run):
    token = eks_token(run)
    assert authenticator(run)(token + "=") is None
    assert authenticator(run)(token + "A" * 4096) is None


# --- mapping: access entries and aws-auth --------------------------------------------------------------


def test_an_unmapped_principal_is_401_then_its_access_entry_and_policy_decide(run):
    arn, keys = new_user(run, f"dev-{uuid.uuid4().hex[:6]}")
    eks = client(run, "eks")
    assert get(run, "/api/v1/namespaces/finance/pods", eks_token(run, keys)) == 401
    eks.create_access_entry(clusterName=CLUSTER, principalArn=arn, kubernetesGroups=["devs"])
    caller = authenticator(run)(eks_token(run, keys))
    assert caller is not None
    assert (caller.name, caller.groups) == (arn, ("devs", "system:authenticated"))
    assert get(run, "/api/v1/namespaces/finance/pods", eks_token(run, keys)) == 403  # no policy: no opinion
    eks.associate_access_policy(
        clusterName=CLUSTER,
        principalArn=arn,
        policyArn=VIEW,
        accessScope={"type": "namespace", "namespaces": ["finance"]},
    )
    assert get(run, "/api/v1/namespaces/finance/pods", eks_token(run, keys)) == 200
    assert get(run, "/api/v1/namespaces/kube-system/pods", eks_token(run, keys)) == 403
    assert get(run, "/api/v1/namespaces/finance/secrets", eks_token(run, keys)) == 403
    eks.delete_access_entry(clusterName=CLUSTER, principalArn=arn)
    assert get(run, "/api/v1/namespaces/finance/pods", eks_token(run, keys)) == 401


def test_a_role_session_maps_by_its_role_with_the_default_session_username(run):
    role = f"ops-{uuid.uuid4().hex[:6]}"
    arn, keys = new_role_session(run, role, "alice@example.com")
    entry = client(run, "eks").create_access_entry(clusterName=CLUSTER, principalArn=arn)["accessEntry"]
    assert entry["username"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{{{{SessionName}}}}"
    assert entry["type"] == "STANDARD"
    caller = authenticator(run)(eks_token(run, keys))
    assert caller is not None
    assert caller.name == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/alice-example.com"  # @ becomes -
    assert canonical_arn_of(caller) == arn
    assert dict(caller.extra)["sessionName"] == ("alice@example.com",)


def test_aws_auth_maps_roles_with_templates_and_not_in_api_mode(run):
    role = f"cm-{uuid.uuid4().hex[:6]}"
    arn, keys = new_role_session(run, role, "bob")
    # The ARN's case differs: the authenticator compares canonical ARNs case-insensitively.
    shouted = arn.replace(role, role.upper())
    map_roles = f"- rolearn: {shouted}\n  username: dev:{{{{SessionName}}}}\n  groups:\n  - devs-{{{{AccountID}}}}\n"
    store = run.sandbox.store
    store.create("configmaps", "kube-system", {"metadata": {"name": "aws-auth"}, "data": {"mapRoles": map_roles}})
    try:
        caller = authenticator(run)(eks_token(run, keys))
        assert caller is not None
        assert (caller.name, caller.groups) == (
            "dev:bob",
            (f"devs-{ACCOUNT}", "system:authenticated"),
        )
        plane = EksControlPlane(
            name=CLUSTER,
            region=REGION,
            account_id=ACCOUNT,
            issuer_url="https://x",
            endpoint="https://y",
            authentication_mode="API",
        )
        assert authenticator(run, cluster=plane)(eks_token(run, keys)) is None  # API mode ignores aws-auth
        # CONFIG_MAP mode ignores access entries, even the runner's
        plane.authentication_mode = "CONFIG_MAP"
        assert authenticator(run, cluster=plane)(eks_token(run, keys)) is not None
        assert authenticator(run, cluster=plane)(eks_token(run)) is None
    finally:
        store.delete("configmaps", "kube-system", "aws-auth")


def test_hostile_aws_auth_maps_nobody(run):
    role = f"bad-{uuid.uuid4().hex[:6]}"
    _, keys = new_role_session(run, role, "eve")
    store = run.sandbox.store
    store.create(
        "configmaps",
        "kube-system",
        {"metadata": {"name": "aws-auth"}, "data": {"mapRoles": "[: not yaml", "mapUsers": "7"}},
    )
    try:
        assert authenticator(run)(eks_token(run, keys)) is None
    finally:
        store.delete("configmaps", "kube-system", "aws-auth")


# --- the access-policy authorizer ----------------------------------------------------------------------


def _entry_caller(arn: str) -> Caller:
    return Caller(arn, ("system:authenticated",), extra=(("canonicalArn", (arn,)),))


@pytest.mark.parametrize(
    ("policy", "scope", "request_info", "allowed"),
    [
        (VIEW, ["finance"], info("list", "", "v1", "pods", "finance"), True),
        (VIEW, ["finance"], info("list", "", "v1", "pods", "billing"), False),
        (VIEW, ["finance"], info("get", "", "v1", "secrets", "finance", name="s"), False),
        (VIEW, ["finance"], info("create", "", "v1", "pods", "finance"), False),
        (VIEW, ["finance"], info("get", "", "v1", "pods", "finance", name="p", sub="log"), True),
        (VIEW, ["finance"], info("get", "", "v1", "namespaces", name="finance"), True),
        (VIEW, None, info("list", "", "v1", "nodes"), False),
        (EDIT, ["finance"], info("get", "", "v1", "secrets", "finance", name="s"), True),
        (EDIT, ["finance"], info("create", "", "v1", "pods", "finance"), True),
        (EDIT, ["finance"], info("create", "", "v1", "pods", "finance", name="p", sub="exec"), True),
        (EDIT, None, info("update", "apps", "v1", "deployments", "finance", name="d"), True),
        (ADMIN, ["finance"], info("create", "", "v1", "namespaces"), False),
        (CLUSTER_ADMIN, None, info("list", "", "v1", "nodes"), True),
        (CLUSTER_ADMIN, ["finance"], info("list", "", "v1", "nodes"), False),
        (CLUSTER_ADMIN, None, RequestInfo("get", "/version"), True),
        (CLUSTER_ADMIN, ["finance"], RequestInfo("get", "/version"), False),
    ],
)
def test_access_policies_decide_within_their_scope(policy, scope, request_info, allowed):
    plane = EksControlPlane(
        name=CLUSTER, region=REGION, account_id=ACCOUNT, issuer_url="https://x", endpoint="https://y"
    )
    arn = f"arn:aws:iam::{ACCOUNT}:role/someone"
    plane.create_access_entry(arn)
    plane.associate_access_policy(arn, policy, "namespace" if scope else "cluster", scope)
    decision = AccessPolicyAuthorizer(plane)(_entry_caller(arn), request_info)
    assert decision is (Decision.ALLOW if allowed else Decision.NO_OPINION)


def test_the_authorizer_has_no_opinion_on_callers_without_an_entry():
    plane = EksControlPlane(
        name=CLUSTER, region=REGION, account_id=ACCOUNT, issuer_url="https://x", endpoint="https://y"
    )
    caller = Caller("system:serviceaccount:a:b", ("system:authenticated",))
    assert AccessPolicyAuthorizer(plane)(caller, info("list", "", "v1", "nodes")) is Decision.NO_OPINION


# --- service-account tokens ----------------------------------------------------------------------------


def _bound_pod(run) -> tuple[dict, dict]:
    store = run.sandbox.store
    for pod in store.list("pods"):
        sa = store.find("serviceaccounts", pod["metadata"]["namespace"], pod["spec"].get("serviceAccountName", ""))
        if sa is not None and pod["metadata"].get("uid"):
            return pod, sa
    raise AssertionError("the demo sandbox has no pod bound to a service account")


def _sa_token(
    run, pod: dict, sa: dict, *, audience: str = API_AUDIENCE, sa_uid: str | None = None, pod_uid: str | None = None
) -> str:
    return run.sandbox.issuer.service_account_token(
        namespace=pod["metadata"]["namespace"],
        service_account=sa["metadata"]["name"],
        sa_uid=sa_uid or sa["metadata"]["uid"],
        pod_name=pod["metadata"]["name"],
        pod_uid=pod_uid or pod["metadata"]["uid"],
        node_name=run.sandbox.nodes[0].name,
        audience=audience,
        expiration_seconds=3600,
    )


def test_a_service_account_token_for_the_api_server_authenticates(run):
    pod, sa = _bound_pod(run)
    ns, name = pod["metadata"]["namespace"], sa["metadata"]["name"]
    caller = ServiceAccountTokenAuthenticator(run.sandbox.store, run.sandbox.issuer.verify)(_sa_token(run, pod, sa))
    assert caller is not None
    assert caller.name == f"system:serviceaccount:{ns}:{name}"
    assert caller.groups == ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated")
    extra = dict(caller.extra)
    assert extra["authentication.kubernetes.io/pod-name"] == (pod["metadata"]["name"],)
    assert extra["authentication.kubernetes.io/pod-uid"] == (pod["metadata"]["uid"],)
    assert extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    # Over HTTP, through the sandbox's chain: authenticated (then RBAC decides; without it, forbidden).
    assert get(run, "/api/v1/namespaces", _sa_token(run, pod, sa)) == 403


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "sts.amazonaws.com"},
        {"audience": "pods.eks.amazonaws.com"},
        {"sa_uid": "00000000-0000-0000-0000-000000000000"},
        {"pod_uid": "00000000-0000-0000-0000-000000000000"},
    ],
    ids=["irsa-audience", "pod-identity-audience", "sa-recreated", "pod-recreated"],
)
def test_service_account_tokens_not_for_the_api_server_or_stale_are_refused(run, change):
    pod, sa = _bound_pod(run)
    authn = ServiceAccountTokenAuthenticator(run.sandbox.store, run.sandbox.issuer.verify)
    assert authn(_sa_token(run, pod, sa, **change)) is None
    assert get(run, "/api/v1/namespaces", _sa_token(run, pod, sa, **change)) == 401


# --- the EKS API -----------------------------------------------------------------------------------------


def error_of(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_describe_cluster_names_the_authentication_mode(run):
    access = client(run, "eks").describe_cluster(name=CLUSTER)["cluster"]["accessConfig"]
    assert access == {"bootstrapClusterCreatorAdminPermissions": True, "authenticationMode": "API_AND_CONFIG_MAP"}


def test_access_entry_api_round_trip_and_pagination(run):
    eks = client(run, "eks")
    arns = [new_user(run, f"pg-{uuid.uuid4().hex[:6]}")[0] for _ in range(2)]
    for arn in arns:
        eks.create_access_entry(clusterName=CLUSTER, principalArn=arn, tags={"team": "x"})
    listed = [
        a
        for page in eks.get_paginator("list_access_entries").paginate(
            clusterName=CLUSTER, PaginationConfig={"PageSize": 1}
        )
        for a in page["accessEntries"]
    ]
    assert set(arns) | {RUNNER_ARN} <= set(listed)
    assert len(listed) == len(set(listed))
    only_admins = eks.list_access_entries(clusterName=CLUSTER, associatedPolicyArn=CLUSTER_ADMIN)["accessEntries"]
    assert only_admins == [RUNNER_ARN]
    updated = eks.update_access_entry(
        clusterName=CLUSTER, principalArn=arns[0], kubernetesGroups=["a", "b"], username="custom"
    )
    assert updated["accessEntry"]["kubernetesGroups"] == ["a", "b"]
    assert updated["accessEntry"]["username"] == "custom"
    described = eks.describe_access_entry(clusterName=CLUSTER, principalArn=arns[0])["accessEntry"]
    assert described["principalArn"] == arns[0]
    assert described["tags"] == {"team": "x"}
    eks.associate_access_policy(
        clusterName=CLUSTER, principalArn=arns[0], policyArn=EDIT, accessScope={"type": "cluster"}
    )
    eks.associate_access_policy(
        clusterName=CLUSTER,
        principalArn=arns[0],
        policyArn=VIEW,
        accessScope={"type": "namespace", "namespaces": ["a"]},
    )
    pages = list(
        eks.get_paginator("list_associated_access_policies").paginate(
            clusterName=CLUSTER, principalArn=arns[0], PaginationConfig={"PageSize": 1}
        )
    )
    assert [p["associatedAccessPolicies"][0]["policyArn"] for p in pages] == [EDIT, VIEW]
    eks.disassociate_access_policy(clusterName=CLUSTER, principalArn=arns[0], policyArn=EDIT)
    left = eks.list_associated_access_policies(clusterName=CLUSTER, principalArn=arns[0])["associatedAccessPolicies"]
    assert [p["policyArn"] for p in left] == [VIEW]
    assert left[0]["accessScope"] == {
        "type": "namespace",
        "namespaces": ["a"],
    }
    for arn in arns:
        eks.delete_access_entry(clusterName=CLUSTER, principalArn=arn)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda eks: eks.create_access_entry(clusterName=CLUSTER, principalArn=RUNNER_ARN),
            ("ResourceInUseException", 409),
        ),
        (
            lambda eks: eks.describe_access_entry(
                clusterName=CLUSTER, principalArn=f"arn:aws:iam::{ACCOUNT}:user/nobody"
            ),
            ("ResourceNotFoundException", 404),
        ),
        (
            lambda eks: eks.create_access_entry(
                clusterName=CLUSTER, principalArn=f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s"
            ),
            ("InvalidParameterException", 400),
        ),
        (
            lambda eks: eks.create_access_entry(
                clusterName=CLUSTER, principalArn=f"arn:aws:iam::{ACCOUNT}:user/u1", username="system:admin"
            ),
            ("InvalidParameterException", 400),
        ),
        (
            lambda eks: eks.create_access_entry(
                clusterName=CLUSTER, principalArn=f"arn:aws:iam::{ACCOUNT}:user/u2", kubernetesGroups=["system:masters"]
            ),
            ("InvalidParameterException", 400),
        ),
        (
            lambda eks: eks.associate_access_policy(
                clusterName=CLUSTER, principalArn=RUNNER_ARN, policyArn=VIEW, accessScope={"type": "namespace"}
            ),
            ("InvalidParameterException", 400),
        ),
        (
            lambda eks: eks.associate_access_policy(
                clusterName=CLUSTER,
                principalArn=RUNNER_ARN,
                policyArn=ACCESS_POLICY_PREFIX + "NoSuchPolicy",
                accessScope={"type": "cluster"},
            ),
            ("InvalidParameterException", 400),
        ),
        (
            lambda eks: eks.disassociate_access_policy(clusterName=CLUSTER, principalArn=RUNNER_ARN, policyArn=VIEW),
            ("ResourceNotFoundException", 404),
        ),
        (lambda eks: eks.list_access_entries(clusterName="nope"), ("ResourceNotFoundException", 404)),
    ],
    ids=[
        "duplicate",
        "missing",
        "session-arn",
        "reserved-username",
        "system-group",
        "namespace-scope-without-namespaces",
        "unknown-policy",
        "not-associated",
        "no-cluster",
    ],
)
def test_access_entry_errors_are_the_models(run, call, expected):
    eks = client(run, "eks")
    with pytest.raises(ClientError) as err:
        call(eks)
    assert error_of(err) == expected
    modeled = {s.name: s.metadata["error"]["httpStatusCode"] for s in eks.meta.service_model.error_shapes}
    assert modeled[expected[0]] == expected[1]


def test_config_map_mode_refuses_the_access_entry_api():
    plane = EksControlPlane(
        name=CLUSTER,
        region=REGION,
        account_id=ACCOUNT,
        issuer_url="https://x",
        endpoint="https://y",
        authentication_mode="CONFIG_MAP",
    )
    with pytest.raises(sandbox_eks.EksError) as err:
        plane.handle("GET", f"/clusters/{CLUSTER}/access-entries", {}, {})
    assert (err.value.code, err.value.status) == ("InvalidRequestException", 400)


def test_list_access_policies_pages_the_known_policies():
    first = sandbox_eks.list_access_policies({"maxResults": "2"})
    assert [p["name"] for p in first["accessPolicies"]] == ["AmazonEKSAdminPolicy", "AmazonEKSAdminViewPolicy"]
    rest = sandbox_eks.list_access_policies({"nextToken": first["nextToken"]})
    names = {p["name"] for p in first["accessPolicies"] + rest["accessPolicies"]}
    assert {"AmazonEKSClusterAdminPolicy", "AmazonEKSEditPolicy", "AmazonEKSViewPolicy"} <= names
    assert all(p["arn"] == ACCESS_POLICY_PREFIX + p["name"] for p in rest["accessPolicies"])


# --- get_token ---------------------------------------------------------------------------------------------


def test_exec_credential_is_what_aws_eks_get_token_prints(run, monkeypatch):
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)
    cred = get_token.exec_credential(client(run, "sts"), CLUSTER, now)
    assert cred["kind"] == "ExecCredential"
    assert cred["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert cred["status"]["expirationTimestamp"] == "2026-01-02T03:18:05Z"
    assert cred["spec"] == {}
    assert cred["status"]["token"].startswith("k8s-aws-v1.")
    monkeypatch.setenv("KUBERNETES_EXEC_INFO", json.dumps({"apiVersion": "client.authentication.k8s.io/v1"}))
    assert (
        get_token.exec_credential(client(run, "sts"), CLUSTER, now)["apiVersion"] == "client.authentication.k8s.io/v1"
    )


def test_a_validly_signed_url_for_another_action_is_refused(run):
    sts = client(run, "sts")
    sts.meta.events.register(
        "before-sign.sts.GetSessionToken", lambda request, **_: request.headers.__setitem__("x-k8s-aws-id", CLUSTER)
    )
    url = sts.generate_presigned_url("get_session_token", ExpiresIn=60, HttpMethod="GET")
    assert "Action=GetSessionToken" in url
    assert "x-k8s-aws-id" in url
    assert authenticator(run)("k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")) is None


def test_the_plugin_reuses_its_cached_credential_while_six_minutes_are_left(run, monkeypatch, capsys, tmp_path):
    plugin = next(u["user"]["exec"] for u in yaml.safe_load(run.connection.kubeconfig.read_text())["users"])
    for item in plugin["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)
    args = plugin["args"][2:]
    assert args[args.index("--cache-file") + 1].startswith(str(run.sandbox.workdir))  # private to the sandbox
    cache = tmp_path / "cache.json"
    args[args.index("--cache-file") + 1] = str(cache)
    signed: list[str] = []
    sign = get_token.exec_credential

    def counted(*a: Any, **k: Any) -> dict[str, Any]:
        made = sign(*a, **k)
        signed.append(made["status"]["token"])
        return made

    monkeypatch.setattr(get_token, "exec_credential", counted)

    def credential() -> dict[str, str]:
        assert get_token.main(args) == 0
        status: dict[str, str] = json.loads(capsys.readouterr().out)["status"]
        return status

    first = credential()
    assert cache.stat().st_mode & 0o777 == 0o600  # a bearer secret at rest: its owner's only
    assert credential() == first
    assert len(signed) == 1  # reused: signed once
    assert get(run, "/api/v1/nodes", first["token"]) == 200
    # With less than six minutes left (the Python client refreshes 5 minutes early), a fresh token, kept.
    entry = json.loads(cache.read_text())
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5, seconds=30)
    entry["status"]["expirationTimestamp"] = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    cache.write_text(json.dumps(entry))
    second = credential()
    assert len(signed) == 2
    assert second["token"] == signed[-1]
    assert credential() == second
    assert len(signed) == 2
    # Another credentials file (a rotated key) never gets the old key's token.
    rotated = tmp_path / "rotated"
    rotated.write_text(Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).read_text() + "\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(rotated))
    credential()
    assert len(signed) == 3
    # A damaged cache is ignored, not trusted.
    cache.write_text("{not json")
    assert credential()["token"] == signed[-1]
    assert len(signed) == 4
