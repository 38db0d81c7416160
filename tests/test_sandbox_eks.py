"""The sandbox's EKS API answers as EKS does, held against botocore's own ``eks`` service model.

Driven through boto3's real EKS client (and, where botocore's client-side validation would stop a
request before EKS sees it, through botocore's SigV4 signer with a raw request). Credentials the
Pod Identity agent hands out are used, never printed.
"""

from __future__ import annotations

import ast
import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import boto3
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError

from pytest_eksid.probe.program import agent_error_code
from pytest_eksid.sandbox import eks as sandbox_eks
from pytest_eksid.sandbox.cloud import Iam
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import close_sandbox, open_sandbox, sa_token

ACCOUNT = "111122223333"
REGION = "eu-west-1"
CLUSTER = "demo"
PI_AUDIENCE = "pods.eks.amazonaws.com"
SANDBOX = Path(sandbox_eks.__file__).parent
ALL_ACTIONS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def eks_model():
    return botocore.session.get_session().get_service_model("eks")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    running = open_sandbox(demo_data(), tmp_path_factory.mktemp("sandbox"), "eksapi")
    try:
        yield running
    finally:
        close_sandbox(running)


def admin_keys(run) -> dict[str, str]:
    return {
        "aws_access_key_id": run.connection.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": run.connection.env["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def aws(run):
    made: list = []

    def make(service, keys=None):
        c = boto3.client(
            service,
            region_name=REGION,
            endpoint_url=run.connection.env["AWS_ENDPOINT_URL"],
            **(keys or admin_keys(run)),
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def raw_eks(run, method: str, path: str, body: dict | None = None) -> tuple[int, str, dict]:
    """A SigV4-signed EKS call past botocore's client-side validation: (status, x-amzn-ErrorType, body)."""
    url = run.connection.env["AWS_ENDPOINT_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    keys = admin_keys(run)
    SigV4Auth(Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"]), "eks", REGION).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=data, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, "", json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-amzn-ErrorType", ""), json.loads(exc.read() or b"{}")


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def pi_token(run, namespace: str, service_account: str) -> str:
    return sa_token(run, namespace, service_account, audience=PI_AUDIENCE)


def agent_get(run, token: str) -> tuple[int, str]:
    req = urllib.request.Request(run.sandbox.nodes[0].agent.uri, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def session_keys(body: str) -> dict[str, str]:
    creds = json.loads(body)
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["Token"],
    }


def make_role(iam, name: str, trust: dict, permissions: dict | None = None) -> str:
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if permissions is not None:
        iam.put_role_policy(RoleName=name, PolicyName="perms", PolicyDocument=json.dumps(permissions))
    return arn


def pod_identity_trust(*, condition: dict | None = None) -> dict:
    statement: dict = {
        "Effect": "Allow",
        "Principal": {"Service": PI_AUDIENCE},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    }
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


# --- errors: the model's codes and statuses ------------------------------------------------------


def _emitted_codes() -> set[str]:
    """Every error code sandbox/eks.py and the EKS routing in sandbox/cloud.py raise: ``EksError("<code>", ...)``."""
    codes: set[str] = set()
    for module in ("eks.py", "cloud.py"):
        tree = ast.parse((SANDBOX / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EksError":
                first = node.args[0]
                where = f"{module}:{node.lineno}: EksError's first argument must be the error code, a literal"
                assert isinstance(first, ast.Constant), where
                assert isinstance(first.value, str), where
                codes.add(first.value)
    return codes


def test_every_error_the_api_emits_has_the_models_code_and_status():
    model = eks_model()
    emitted = _emitted_codes()
    assert emitted, "found no EksError in the sandbox's EKS API"
    modeled = {s.name for s in model.error_shapes}
    for code in emitted:
        if code in sandbox_eks.COMMON_ERRORS:
            assert code not in modeled, f"{code} is in the eks model: list it in MODELED_ERRORS"
            assert sandbox_eks.EksError(code, "").status == 403
            continue
        assert code in modeled, f"{code} is not an error shape of botocore's eks model"
        assert sandbox_eks.EksError(code, "").status == model.shape_for(code).metadata["error"]["httpStatusCode"]
    for code, status in sandbox_eks.MODELED_ERRORS.items():
        assert status == model.shape_for(code).metadata["error"]["httpStatusCode"], code
    with pytest.raises(KeyError):
        sandbox_eks.EksError("NoSuchErrorException", "")


def test_errors_over_http_carry_the_models_status(run, aws):
    eks = aws("eks")
    # An operation EKS does not have on this path: InvalidRequestException, which the model makes a 400.
    status, code, _ = raw_eks(run, "PATCH", f"/clusters/{CLUSTER}/pod-identity-associations")
    assert (code, status) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as err:
        eks.describe_pod_identity_association(clusterName=CLUSTER, associationId="a-doesnotexist00000")
    assert error_of(err) == ("ResourceNotFoundException", 404)
    assert isinstance(err.value, eks.exceptions.ResourceNotFoundException)  # botocore maps it by the model


# --- DescribeCluster and ListClusters ------------------------------------------------------------


def test_describe_cluster_gives_the_api_servers_ca(run, aws):
    cluster = aws("eks").describe_cluster(name=CLUSTER)["cluster"]
    pem = base64.b64decode(cluster["certificateAuthority"]["data"]).decode()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    # The CA is the one that signed the API server's certificate: a TLS client trusting only it connects.
    endpoint = urlparse(cluster["endpoint"])
    assert endpoint.scheme == "https"
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False  # the certificate names the host; only the chain is under test
    with (
        socket.create_connection((endpoint.hostname, endpoint.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.hostname) as tls,
    ):
        assert tls.version() is not None


def test_list_clusters_pages_as_the_model_says(run, aws):
    eks = aws("eks")
    assert eks.list_clusters()["clusters"] == [CLUSTER]
    pages = list(eks.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 1}))
    assert [p["clusters"] for p in pages] == [[CLUSTER]]
    assert "nextToken" not in pages[-1]
    with pytest.raises(ClientError) as err:
        eks.list_clusters(maxResults=101)  # the model's ListClustersRequestMaxResults is 1..100
    assert error_of(err) == ("InvalidParameterException", 400)


def test_list_clusters_paginates_several_clusters():
    assert sandbox_eks.list_clusters(["b", "a", "c"], {"maxResults": "2"}) == {"clusters": ["a", "b"], "nextToken": "2"}
    assert sandbox_eks.list_clusters(["b", "a", "c"], {"maxResults": "2", "nextToken": "2"}) == {"clusters": ["c"]}
    with pytest.raises(sandbox_eks.EksError) as err:
        sandbox_eks.list_clusters(["a"], {"nextToken": "garbage"})
    assert (err.value.code, err.value.status) == ("InvalidParameterException", 400)


# --- externalId: generated by EKS, required by the target role's trust ---------------------------


def test_external_id_is_generated_and_cannot_be_sent(run, aws):
    eks = aws("eks")
    target = f"arn:aws:iam::{ACCOUNT}:role/demo-reporting"
    with pytest.raises(ParamValidationError):  # not a member of CreatePodIdentityAssociationRequest
        eks.create_pod_identity_association(
            clusterName=CLUSTER, namespace="x-ns", serviceAccount="x", roleArn=target, externalId="mine"
        )
    status, code, body = raw_eks(
        run,
        "POST",
        f"/clusters/{CLUSTER}/pod-identity-associations",
        {"namespace": "x-ns", "serviceAccount": "x", "roleArn": target, "targetRoleArn": target, "externalId": "mine"},
    )
    assert (code, status) == ("InvalidParameterException", 400)
    assert "externalId" in body["message"]

    plain = eks.create_pod_identity_association(
        clusterName=CLUSTER, namespace="x-ns", serviceAccount="plain", roleArn=target
    )["association"]
    chained = eks.create_pod_identity_association(
        clusterName=CLUSTER, namespace="x-ns", serviceAccount="chained", roleArn=target, targetRoleArn=target
    )["association"]
    try:
        assert "externalId" not in plain
        assert chained["externalId"]
        assert chained["externalId"] != "mine"
        described = eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=chained["associationId"])[
            "association"
        ]
        assert described["externalId"] == chained["externalId"]
    finally:
        for a in (plain, chained):
            eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=a["associationId"])


def test_target_role_is_assumed_with_the_generated_external_id(run, aws):
    iam, eks = aws("iam"), aws("eks")
    source = make_role(iam, "xid-source", pod_identity_trust())
    assoc = eks.create_pod_identity_association(
        clusterName=CLUSTER, namespace="xid-ns", serviceAccount="xid", roleArn=source, targetRoleArn=source
    )["association"]

    def target_trust(external_id: str) -> dict:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": source},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }
            ],
        }

    target = make_role(iam, "xid-target", target_trust(assoc["externalId"]))
    eks.update_pod_identity_association(clusterName=CLUSTER, associationId=assoc["associationId"], targetRoleArn=target)
    try:
        status, body = agent_get(run, pi_token(run, "xid-ns", "xid"))
        assert status == 200, body
        arn = aws("sts", session_keys(body)).get_caller_identity()["Arn"]
        assert ":assumed-role/xid-target/" in arn

        # A target trust that requires another association's id refuses this one.
        iam.update_assume_role_policy(RoleName="xid-target", PolicyDocument=json.dumps(target_trust("other")))
        status, body = agent_get(run, pi_token(run, "xid-ns", "xid"))
        assert status != 200
        assert "AccessDeniedException" in body
        assert target in body
    finally:
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc["associationId"])


# --- policy and disableSessionTags -----------------------------------------------------------------


def test_policy_requires_disable_session_tags(run, aws):
    eks = aws("eks")
    role = f"arn:aws:iam::{ACCOUNT}:role/demo-reporting"
    policy = json.dumps(ALL_ACTIONS)
    with pytest.raises(ClientError) as err:
        eks.create_pod_identity_association(
            clusterName=CLUSTER, namespace="pol-ns", serviceAccount="a", roleArn=role, policy=policy
        )
    assert error_of(err) == ("InvalidParameterException", 400)
    assert "disableSessionTags" in err.value.response["Error"]["Message"]
    made = eks.create_pod_identity_association(
        clusterName=CLUSTER,
        namespace="pol-ns",
        serviceAccount="a",
        roleArn=role,
        policy=policy,
        disableSessionTags=True,
    )["association"]
    try:
        assert made["policy"] == policy
        assert made["disableSessionTags"] is True
        with pytest.raises(ClientError) as err:  # turning the tags back on while the policy stays
            eks.update_pod_identity_association(
                clusterName=CLUSTER, associationId=made["associationId"], disableSessionTags=False
            )
        assert error_of(err) == ("InvalidParameterException", 400)
    finally:
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=made["associationId"])


def test_session_policy_limits_the_pods_session(run, aws):
    iam, eks = aws("iam"), aws("eks")
    both = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets", "s3:ListBucket", "iam:ListRoles"], "Resource": "*"}
        ],
    }
    only_s3 = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
    }
    role = make_role(iam, "sp-role", pod_identity_trust(), both)
    assoc = eks.create_pod_identity_association(
        clusterName=CLUSTER,
        namespace="sp-ns",
        serviceAccount="sp",
        roleArn=role,
        policy=json.dumps(only_s3),
        disableSessionTags=True,
    )["association"]
    try:
        status, body = agent_get(run, pi_token(run, "sp-ns", "sp"))
        assert status == 200, body
        keys = session_keys(body)
        aws("s3", keys).list_buckets()  # the role's policy and the session policy both allow it
        with pytest.raises(ClientError) as err:
            aws("iam", keys).list_roles()  # the role allows it, the session policy does not
        assert error_of(err)[1] == 403
        bucket = aws("s3").list_buckets()["Buckets"][0]["Name"]
        with pytest.raises(ClientError) as err:  # S3 goes through the sandbox's own S3 front: limited too
            aws("s3", keys).list_objects_v2(Bucket=bucket)
        assert error_of(err) == ("AccessDenied", 403)
    finally:
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc["associationId"])


def test_mint_without_policy_is_not_limited(run, aws):
    iam = aws("iam")
    role = make_role(
        iam,
        "mint-role",
        pod_identity_trust(),
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}]},
    )
    sandbox_iam: Iam = run.sandbox.iam
    creds = sandbox_iam.mint(role, "no-policy")
    keys = {
        "aws_access_key_id": creds.access_key_id,
        "aws_secret_access_key": creds.secret_access_key,
        "aws_session_token": creds.session_token,
    }
    aws("iam", keys).list_roles()
    limited = sandbox_iam.mint(role, "with-policy", policy=json.dumps({"Version": "2012-10-17", "Statement": []}))
    keys = {
        "aws_access_key_id": limited.access_key_id,
        "aws_secret_access_key": limited.secret_access_key,
        "aws_session_token": limited.session_token,
    }
    with pytest.raises(ClientError):
        aws("iam", keys).list_roles()


def test_without_session_tags_a_trust_on_request_tags_no_longer_holds(run, aws):
    iam, eks = aws("iam"), aws("eks")
    role = make_role(
        iam,
        "tags-role",
        pod_identity_trust(condition={"StringEquals": {"aws:RequestTag/kubernetes-namespace": "tags-ns"}}),
    )
    assoc = eks.create_pod_identity_association(
        clusterName=CLUSTER, namespace="tags-ns", serviceAccount="t", roleArn=role
    )["association"]
    try:
        assert agent_get(run, pi_token(run, "tags-ns", "t"))[0] == 200  # the tags are sent and match
        eks.update_pod_identity_association(
            clusterName=CLUSTER, associationId=assoc["associationId"], disableSessionTags=True
        )
        status, body = agent_get(run, pi_token(run, "tags-ns", "t"))
        assert status == 400
        assert agent_error_code(body) == "AccessDeniedException"
    finally:
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc["associationId"])


# --- in-process: the guessed, configurable parts ------------------------------------------------


def plane(**kw) -> sandbox_eks.EksControlPlane:
    return sandbox_eks.EksControlPlane(
        name=CLUSTER, region=REGION, account_id=ACCOUNT, issuer_url="https://issuer", endpoint="https://api", **kw
    )


def test_unknown_members_can_be_ignored_but_never_used():
    role = f"arn:aws:iam::{ACCOUNT}:role/r"
    body = {"namespace": "n", "serviceAccount": "s", "roleArn": role, "targetRoleArn": role, "externalId": "mine"}
    with pytest.raises(sandbox_eks.EksError) as err:
        plane().handle("POST", f"/clusters/{CLUSTER}/pod-identity-associations", {}, body)
    assert (err.value.code, err.value.status) == ("InvalidParameterException", 400)
    made = plane(refuse_unknown_members=False).handle(
        "POST", f"/clusters/{CLUSTER}/pod-identity-associations", {}, body
    )
    assert made["association"]["externalId"] not in ("", "mine")


def test_external_id_follows_the_target_role_through_updates():
    eks = plane()
    role = f"arn:aws:iam::{ACCOUNT}:role/r"
    assoc = eks.create_association("n", "s", role)
    path = f"/clusters/{CLUSTER}/pod-identity-associations/{assoc.association_id}"
    assert "externalId" not in eks.handle("GET", path, {}, {})["association"]
    first = eks.handle("POST", path, {}, {"targetRoleArn": role})["association"]["externalId"]
    assert first
    assert eks.handle("POST", path, {}, {"roleArn": role})["association"]["externalId"] == first
    assert "externalId" not in eks.handle("POST", path, {}, {"targetRoleArn": ""})["association"]
    assert eks.handle("POST", path, {}, {"targetRoleArn": role})["association"]["externalId"] != first
