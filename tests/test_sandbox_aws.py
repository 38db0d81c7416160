"""The sandbox's AWS side, driven only through real clients: boto3/botocore and urllib.

Covers the EKS API, STS ``AssumeRoleWithWebIdentity``, the Pod Identity agent, IMDS and the
AWS-fidelity answers. Tokens are minted with the emulated cluster's own issuer (what its
kubelet projects into pods) or read by a pod from its projected file; no returned secret is
ever printed or put into an assertion message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import time
import urllib.error
import urllib.request
from datetime import datetime

import boto3
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client, config

from pytest_eksid.probe.program import AUTHENTICATION_CODES, agent_error_code
from pytest_eksid.sandbox.tokens import Issuer
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import close_sandbox, open_sandbox, sa_token

ACCOUNT = "111122223333"
REGION = "eu-west-1"
CLUSTER = "demo"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/"
BILLING_ROLE = ROLE + "demo-billing-worker"
EXPORTER_ROLE = ROLE + "demo-invoice-exporter"
REPORTING_ROLE = ROLE + "demo-reporting"
NODE_ROLE = ROLE + "demo-node"
IRSA_NS, IRSA_SA = "billing-demo", "billing-worker-aws-sa"
PI_NS, PI_SA = "finance-demo", "invoice-exporter-aws-sa"
BUCKET = "company-demo-finance"
FINANCE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/5e1f0c2a-7b3d-4c9e-8a61-2f4d9b0e7c13"  # demo.yaml fixes its id
PI_AUDIENCE = "pods.eks.amazonaws.com"


# --- helpers -------------------------------------------------------------------------------


def with_faults(*faults: dict) -> dict:
    data = demo_data()
    data["sandbox"]["faults"] = list(faults)
    return data


@pytest.fixture(scope="class")
def demo(tmp_path_factory):
    """One demo sandbox (plus a KMS key, a table and a KMS role) shared by a class of tests.

    Starting a sandbox costs about a second; the tests that share one leave its state as they
    found it (or touch only names of their own). Tests that need a fault start their own.
    """
    running = open_sandbox(fidelity_data(), tmp_path_factory.mktemp("sandbox"), "shared")
    try:
        yield running
    finally:
        close_sandbox(running)


@pytest.fixture
def clients():
    """Make boto3/botocore clients against a sandbox; every one is closed at teardown."""
    made: list = []

    class Factory:
        def aws(self, run, service, creds=None, **kw):
            """A boto3 client as the runner (admin keys), or with the given role session."""
            if creds is None:
                keys = {
                    "aws_access_key_id": run.connection.env["AWS_ACCESS_KEY_ID"],
                    "aws_secret_access_key": run.connection.env["AWS_SECRET_ACCESS_KEY"],
                }
            elif isinstance(creds, dict):
                keys = creds
            else:
                keys = {
                    "aws_access_key_id": creds.access_key_id,
                    "aws_secret_access_key": creds.secret_access_key,
                    "aws_session_token": creds.session_token,
                }
            c = boto3.client(
                service, region_name=REGION, endpoint_url=run.connection.env["AWS_ENDPOINT_URL"], **keys, **kw
            )
            made.append(c)
            return c

        def unsigned_sts(self, run):
            """STS as a web-identity caller: botocore directly, unsigned (no credentials at all)."""
            c = botocore.session.get_session().create_client(
                "sts",
                region_name=REGION,
                endpoint_url=run.connection.env["AWS_ENDPOINT_URL"],
                config=Config(signature_version=UNSIGNED),
            )
            made.append(c)
            return c

    yield Factory()
    for c in made:
        c.close()


def error_of(excinfo) -> tuple[str, str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["Error"].get("Message", ""), err["ResponseMetadata"]["HTTPStatusCode"]


def http(url, *, method="GET", headers=None, timeout=5.0) -> tuple[int, bytes]:
    """One HTTP call with urllib: (status, body) for answers of any status."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read()
        finally:
            exc.close()


def run_pod(run, namespace, sa, code, *, env=None, timeout=30.0):
    """Run ``python3 -c code`` as a pod; return (phase, log). The pod is deleted afterwards."""
    api_client = config.new_client_from_config(config_file=str(run.connection.kubeconfig))
    core = client.CoreV1Api(api_client)
    container = {"name": "c", "image": "python", "command": ["python3", "-c", code]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    try:
        pod = core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"generateName": "aws-t-"},
                "spec": {"serviceAccountName": sa, "restartPolicy": "Never", "containers": [container]},
            },
        )
        name = pod.metadata.name
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                phase = core.read_namespaced_pod(name, namespace).status.phase
                if phase in ("Succeeded", "Failed"):
                    return phase, core.read_namespaced_pod_log(name, namespace)
                time.sleep(0.05)
            raise AssertionError(f"pod {namespace}/{name} did not finish in {timeout}s")
        finally:
            core.delete_namespaced_pod(name, namespace)
    finally:
        api_client.close()


def last_json(log: str) -> dict:
    return json.loads(log.strip().splitlines()[-1])


# --- EKS API ---------------------------------------------------------------------------------


def _seed_associations(eks, prefix: str) -> list[str]:
    ids = []
    for ns, sa in ((f"{prefix}-a", "one"), (f"{prefix}-a", "two"), (f"{prefix}-b", "one")):
        created = eks.create_pod_identity_association(
            clusterName=CLUSTER, namespace=ns, serviceAccount=sa, roleArn=REPORTING_ROLE
        )
        ids.append(created["association"]["associationId"])
    return ids


def _delete_associations(eks, ids: list[str]) -> None:
    for assoc_id in ids:
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)


class TestEksApi:
    """The EKS REST API through boto3 `eks`, on one shared demo sandbox."""

    def test_describe_cluster_issuer_shape(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        cluster = eks.describe_cluster(name=CLUSTER)["cluster"]
        issuer = cluster["identity"]["oidc"]["issuer"]
        prefix = f"https://oidc.eks.{REGION}.amazonaws.com/id/"
        assert issuer.startswith(prefix)
        oidc_id = issuer.removeprefix(prefix)
        assert len(oidc_id) == 32
        assert all(ch in "0123456789ABCDEF" for ch in oidc_id)
        assert issuer == run.sandbox.issuer.url
        assert cluster["name"] == CLUSTER
        assert cluster["arn"] == f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"
        assert cluster["status"] == "ACTIVE"

    def test_pod_identity_association_lifecycle(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        created = eks.create_pod_identity_association(
            clusterName=CLUSTER, namespace="brand-new-ns", serviceAccount="brand-new-sa", roleArn=REPORTING_ROLE
        )["association"]
        assoc_id = created["associationId"]
        assert created["associationArn"] == (
            f"arn:aws:eks:{REGION}:{ACCOUNT}:podidentityassociation/{CLUSTER}/{assoc_id}"
        )

        described = eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)["association"]
        assert (described["namespace"], described["serviceAccount"]) == ("brand-new-ns", "brand-new-sa")
        assert described["roleArn"] == REPORTING_ROLE
        assert isinstance(described["createdAt"], datetime)
        assert isinstance(described["modifiedAt"], datetime)
        assert described["createdAt"] == described["modifiedAt"]

        # The same (namespace, SA) again: EKS refuses a second association.
        with pytest.raises(ClientError) as dup:
            eks.create_pod_identity_association(
                clusterName=CLUSTER, namespace="brand-new-ns", serviceAccount="brand-new-sa", roleArn=BILLING_ROLE
            )
        code, message, status = error_of(dup)
        assert (code, status) == ("ResourceInUseException", 409)
        assert assoc_id in message

        time.sleep(0.01)  # so that modifiedAt can move
        updated = eks.update_pod_identity_association(
            clusterName=CLUSTER, associationId=assoc_id, roleArn=EXPORTER_ROLE
        )["association"]
        assert updated["roleArn"] == EXPORTER_ROLE
        again = eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)["association"]
        assert again["roleArn"] == EXPORTER_ROLE
        assert again["createdAt"] == described["createdAt"]
        assert again["modifiedAt"] > described["modifiedAt"]

        deleted = eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)["association"]
        assert deleted["associationId"] == assoc_id
        with pytest.raises(ClientError) as gone:
            eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)
        assert error_of(gone)[0::2] == ("ResourceNotFoundException", 404)
        with pytest.raises(ClientError) as gone_again:
            eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)
        assert error_of(gone_again)[0] == "ResourceNotFoundException"

    def test_create_association_requires_fields(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        with pytest.raises(ClientError) as err:
            # botocore requires the fields client-side unless validation is off: send an empty roleArn.
            eks.create_pod_identity_association(clusterName=CLUSTER, namespace="ns", serviceAccount="sa", roleArn="")
        code, message, status = error_of(err)
        assert (code, status) == ("InvalidParameterException", 400)
        assert "roleArn" in message

    def test_list_associations_with_filters(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        ids = _seed_associations(eks, "filt")

        def pairs(**filters):
            found = eks.list_pod_identity_associations(clusterName=CLUSTER, **filters)["associations"]
            for a in found:
                assert a["clusterName"] == CLUSTER
                assert a["associationArn"].endswith("/" + a["associationId"])
                assert "roleArn" not in a  # a summary, as in the service model
            return sorted((a["namespace"], a["serviceAccount"]) for a in found)

        try:
            everything = pairs()
            assert ("finance-demo", PI_SA) in everything
            assert {("filt-a", "one"), ("filt-a", "two"), ("filt-b", "one")} <= set(everything)
            assert pairs(namespace="filt-a") == [("filt-a", "one"), ("filt-a", "two")]
            assert pairs(namespace="finance-demo") == [("finance-demo", PI_SA)]
            assert ("filt-a", "one") in pairs(serviceAccount="one")
            assert ("filt-b", "one") in pairs(serviceAccount="one")
            assert ("filt-a", "two") not in pairs(serviceAccount="one")
            assert pairs(namespace="filt-b", serviceAccount="one") == [("filt-b", "one")]
            assert pairs(namespace="filt-b", serviceAccount="two") == []
            assert pairs(namespace="nowhere") == []
        finally:
            _delete_associations(eks, ids)

    def test_list_associations_pagination(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        ids = _seed_associations(eks, "page")
        try:
            everything = eks.list_pod_identity_associations(clusterName=CLUSTER)["associations"]
            assert len(everything) >= 4

            # The boto3 paginator, one per page.
            pages = list(
                eks.get_paginator("list_pod_identity_associations").paginate(
                    clusterName=CLUSTER, PaginationConfig={"PageSize": 1}
                )
            )
            assert [len(p["associations"]) for p in pages] == [1] * len(everything)
            assert [p["associations"][0] for p in pages] == everything
            assert all("nextToken" in p for p in pages[:-1])
            assert "nextToken" not in pages[-1]

            # By hand, with nextToken; filters still apply across pages.
            seen, token, calls = [], None, 0
            while calls < 10:
                calls += 1
                kw = {"nextToken": token} if token else {}
                page = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace="page-a", maxResults=1, **kw)
                assert len(page["associations"]) <= 1
                seen += [a["serviceAccount"] for a in page["associations"]]
                token = page.get("nextToken")
                if token is None:
                    break
            assert sorted(seen) == ["one", "two"]
            assert calls == 2

            for bad in ({"nextToken": "not-a-token"}, {"maxResults": 101}):
                with pytest.raises(ClientError) as err:
                    eks.list_pod_identity_associations(clusterName=CLUSTER, **bad)
                assert error_of(err)[0::2] == ("InvalidParameterException", 400), bad
        finally:
            _delete_associations(eks, ids)

    def test_describe_addon_active(self, demo, clients):
        run = demo
        addon = clients.aws(run, "eks").describe_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")["addon"]
        assert addon["addonName"] == "eks-pod-identity-agent"
        assert addon["status"] == "ACTIVE"
        assert addon["health"]["issues"] == []

    def test_unknown_cluster(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        for call in (
            lambda: eks.describe_cluster(name="nope"),
            lambda: eks.list_pod_identity_associations(clusterName="nope"),
            lambda: eks.describe_addon(clusterName="nope", addonName="eks-pod-identity-agent"),
        ):
            with pytest.raises(ClientError) as err:
                call()
            code, message, status = error_of(err)
            assert (code, status) == ("ResourceNotFoundException", 404)
            assert "nope" in message

    def test_unknown_access_key_is_refused(self, demo, clients):
        run = demo
        unknown = clients.aws(
            run, "eks", {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x" * 40}
        )
        with pytest.raises(ClientError) as err:
            unknown.list_pod_identity_associations(clusterName=CLUSTER)
        assert error_of(err)[2] == 403
        bad_secret = clients.aws(
            run,
            "eks",
            {"aws_access_key_id": run.connection.env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": "y" * 40},
        )
        with pytest.raises(ClientError) as err:
            bad_secret.describe_cluster(name=CLUSTER)
        assert error_of(err)[2] == 403

    def test_unknown_access_key_is_an_authentication_error_not_a_denial(self, demo, clients):
        run = demo
        unknown = clients.aws(
            run, "eks", {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x" * 40}
        )
        with pytest.raises(ClientError) as err:
            unknown.list_pod_identity_associations(clusterName=CLUSTER)
        assert error_of(err)[0] in AUTHENTICATION_CODES

    def test_runner_without_eks_permissions_is_denied(self, demo, clients):
        run = demo
        iam = clients.aws(run, "iam")
        iam.create_user(UserName="runner-no-eks")
        policy_arn = iam.create_policy(
            PolicyName="list-buckets-only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
                }
            ),
        )["Policy"]["Arn"]
        iam.attach_user_policy(UserName="runner-no-eks", PolicyArn=policy_arn)
        key = iam.create_access_key(UserName="runner-no-eks")["AccessKey"]
        keys = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

        # The user's keys work where its policy allows...
        buckets = [b["Name"] for b in clients.aws(run, "s3", keys).list_buckets()["Buckets"]]
        assert BUCKET in buckets
        # ...and every EKS call is refused for want of permission.
        eks = clients.aws(run, "eks", keys)
        for call in (
            lambda: eks.describe_cluster(name=CLUSTER),
            lambda: eks.list_pod_identity_associations(clusterName=CLUSTER),
            lambda: eks.create_pod_identity_association(
                clusterName=CLUSTER, namespace="x", serviceAccount="y", roleArn=REPORTING_ROLE
            ),
            lambda: eks.describe_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent"),
        ):
            with pytest.raises(ClientError) as err:
                call()
            code, _message, status = error_of(err)
            assert (code, status) == ("AccessDeniedException", 403)
        # Nothing was created by the refused call.
        admin = clients.aws(run, "eks")
        assert admin.list_pod_identity_associations(clusterName=CLUSTER, namespace="x")["associations"] == []


def test_describe_addon_degraded_when_agent_down(start_sandbox, clients):
    run = start_sandbox(with_faults({"fault": "agent-down", "nodegroup": "ng-batch"}))
    eks = clients.aws(run, "eks")
    addon = eks.describe_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")["addon"]
    assert addon["status"] == "DEGRADED"
    issues = addon["health"]["issues"]
    assert len(issues) == 1
    assert issues[0]["code"] == "InsufficientNumberOfReplicas"
    assert "replicas" in issues[0]["message"]
    with pytest.raises(ClientError) as err:
        eks.describe_addon(clusterName=CLUSTER, addonName="vpc-cni")
    assert error_of(err)[0::2] == ("ResourceNotFoundException", 404)


# --- STS AssumeRoleWithWebIdentity ----------------------------------------------------------


def assume(sts, role_arn, token, session="test"):
    return sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=token)


class TestWebIdentity:
    """STS AssumeRoleWithWebIdentity through botocore (unsigned), on one shared demo sandbox."""

    def test_web_identity_from_a_pods_own_token(self, demo):
        """A pod of the IRSA workload calls AssumeRoleWithWebIdentity itself with its projected token."""
        run = demo
        code = textwrap.dedent(
            f"""
            import json, os, botocore.session
            from botocore import UNSIGNED
            from botocore.config import Config
            session = botocore.session.Session()
            token = open(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]).read()
            sts = session.create_client("sts", region_name="{REGION}", config=Config(signature_version=UNSIGNED))
            out = {{}}
            answer = sts.assume_role_with_web_identity(
                RoleArn=os.environ["AWS_ROLE_ARN"], RoleSessionName="from-pod", WebIdentityToken=token
            )
            out["subject"] = answer["SubjectFromWebIdentityToken"]
            out["audience"] = answer["Audience"]
            out["assumed"] = answer["AssumedRoleUser"]["Arn"]
            c = answer["Credentials"]
            who = session.create_client(
                "sts", region_name="{REGION}", aws_access_key_id=c["AccessKeyId"],
                aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"],
            )
            out["caller"] = who.get_caller_identity()["Arn"]
            who.close()
            try:
                sts.assume_role_with_web_identity(
                    RoleArn="{EXPORTER_ROLE}", RoleSessionName="other", WebIdentityToken=token
                )
                out["other_role"] = "allowed"
            except Exception as exc:
                out["other_role"] = exc.response["Error"]["Code"]
            sts.close()
            print(json.dumps(out))
            """
        )
        phase, log = run_pod(run, IRSA_NS, IRSA_SA, code)
        assert phase == "Succeeded", log
        result = last_json(log)
        assert result == {
            "subject": f"system:serviceaccount:{IRSA_NS}:{IRSA_SA}",
            "audience": "sts.amazonaws.com",
            "assumed": f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-billing-worker/from-pod",
            "caller": f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-billing-worker/from-pod",
            "other_role": "AccessDenied",
        }
        for secret in run.sandbox.minted_secrets:
            assert secret not in log

    def test_web_identity_valid_token(self, demo, clients):
        run = demo
        sts = clients.unsigned_sts(run)
        answer = assume(sts, BILLING_ROLE, sa_token(run, IRSA_NS, IRSA_SA), session="valid")
        assert answer["SubjectFromWebIdentityToken"] == f"system:serviceaccount:{IRSA_NS}:{IRSA_SA}"
        assert answer["Provider"] == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{run.sandbox.issuer.host_path}"
        creds = answer["Credentials"]
        assert isinstance(creds["Expiration"], datetime)
        keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
        caller = clients.aws(run, "sts", keys).get_caller_identity()
        assert caller["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-billing-worker/valid"
        assert caller["Arn"] == answer["AssumedRoleUser"]["Arn"]
        assert caller["Account"] == ACCOUNT
        # The session is limited by the role's policy (moto enforces it).
        sqs = clients.aws(run, "sqs", keys)
        url = clients.aws(run, "sqs").get_queue_url(QueueName="billing-demo")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        with pytest.raises(ClientError) as err:
            clients.aws(run, "s3", keys).put_object(Bucket=BUCKET, Key="invoices/x.pdf", Body=b"x")
        assert error_of(err)[0] == "AccessDenied"

    def test_web_identity_subject_mismatch_is_access_denied(self, demo, clients):
        run = demo
        sts = clients.unsigned_sts(run)
        for namespace, sa in ((IRSA_NS, "default"), (IRSA_NS, "other-sa"), (PI_NS, IRSA_SA)):
            with pytest.raises(ClientError) as err:
                assume(sts, BILLING_ROLE, sa_token(run, namespace, sa))
            code, message, status = error_of(err)
            assert (code, status) == ("AccessDenied", 403), (namespace, sa)
            assert message == "Not authorized to perform sts:AssumeRoleWithWebIdentity"
        # The right token for a role whose trust names another workload (Pod Identity's role).
        with pytest.raises(ClientError) as err:
            assume(sts, EXPORTER_ROLE, sa_token(run, IRSA_NS, IRSA_SA))
        assert error_of(err)[0::2] == ("AccessDenied", 403)
        # A role that does not exist.
        with pytest.raises(ClientError) as err:
            assume(sts, ROLE + "no-such-role", sa_token(run, IRSA_NS, IRSA_SA))
        assert error_of(err)[0::2] == ("AccessDenied", 403)

    @pytest.mark.parametrize(
        ("case", "needle"),
        [
            ("wrong-audience", "audience"),
            ("pod-identity-audience", "audience"),
            ("expired", "expired"),
            ("other-issuer-key", "signature"),
            ("garbage", "JWT"),
        ],
    )
    def test_web_identity_invalid_token(self, demo, clients, case, needle):
        run = demo
        sts = clients.unsigned_sts(run)
        if case == "wrong-audience":
            token = sa_token(run, IRSA_NS, IRSA_SA, audience="not-sts")
        elif case == "pod-identity-audience":
            token = sa_token(run, IRSA_NS, IRSA_SA, audience=PI_AUDIENCE)
        elif case == "expired":
            token = sa_token(run, IRSA_NS, IRSA_SA, expiration=-60)
        elif case == "other-issuer-key":
            # Same issuer URL, so the IAM OIDC provider matches; signed with a key that is not the cluster's.
            token = sa_token(run, IRSA_NS, IRSA_SA, issuer=Issuer(url=run.sandbox.issuer.url))
        else:
            header = base64.urlsafe_b64encode(json.dumps({"iss": run.sandbox.issuer.url}).encode()).decode().rstrip("=")
            token = f"x.{header}"
        with pytest.raises(ClientError) as err:
            assume(sts, BILLING_ROLE, token)
        code, message, status = error_of(err)
        # An expired token is the sts model's own error (400), not InvalidIdentityToken.
        assert (code, status) == ("ExpiredTokenException" if case == "expired" else "InvalidIdentityToken", 400)
        assert needle.lower() in message.lower()

    def test_web_identity_token_of_an_unknown_issuer(self, demo, clients):
        run = demo
        other = Issuer(url=f"https://oidc.eks.{REGION}.amazonaws.com/id/{'0' * 32}")
        with pytest.raises(ClientError) as err:
            assume(clients.unsigned_sts(run), BILLING_ROLE, sa_token(run, IRSA_NS, IRSA_SA, issuer=other))
        code, message, status = error_of(err)
        assert (code, status) == ("InvalidIdentityToken", 400)
        assert message.startswith("No OpenIDConnect provider found")

    def test_web_identity_without_the_fault_refuses_other_service_accounts(self, demo, clients):
        run = demo
        with pytest.raises(ClientError) as err:
            assume(clients.unsigned_sts(run), BILLING_ROLE, sa_token(run, IRSA_NS, "some-other-sa"))
        assert error_of(err)[0::2] == ("AccessDenied", 403)


def test_web_identity_without_oidc_provider(start_sandbox, clients):
    run = start_sandbox(with_faults({"fault": "no-oidc-provider"}))
    iam = clients.aws(run, "iam")
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    with pytest.raises(ClientError) as err:
        assume(clients.unsigned_sts(run), BILLING_ROLE, sa_token(run, IRSA_NS, IRSA_SA))
    code, message, status = error_of(err)
    assert (code, status) == ("InvalidIdentityToken", 400)
    assert f"No OpenIDConnect provider found in your account for {run.sandbox.issuer.url}" in message


def test_web_identity_wildcard_trust_sub_admits_other_service_accounts(start_sandbox, clients):
    """The security symptom of `wildcard-trust-sub`: any SA of the namespace gets the role."""
    run = start_sandbox(with_faults({"fault": "wildcard-trust-sub", "workload": "billing-worker"}))
    sts = clients.unsigned_sts(run)
    answer = assume(sts, BILLING_ROLE, sa_token(run, IRSA_NS, "some-other-sa"), session="intruder")
    assert answer["SubjectFromWebIdentityToken"] == f"system:serviceaccount:{IRSA_NS}:some-other-sa"
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-billing-worker/intruder"
    # default too; another namespace is still refused.
    assume(sts, BILLING_ROLE, sa_token(run, IRSA_NS, "default"))
    with pytest.raises(ClientError) as err:
        assume(sts, BILLING_ROLE, sa_token(run, PI_NS, "some-other-sa"))
    assert error_of(err)[0] == "AccessDenied"
    trust = clients.aws(run, "iam").get_role(RoleName="demo-billing-worker")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Condition"]["StringLike"] == {
        f"{run.sandbox.issuer.host_path}:sub": f"system:serviceaccount:{IRSA_NS}:*"
    }


def test_web_identity_missing_aud_condition(start_sandbox, clients):
    """Without the trust's aud condition, the IAM OIDC provider's client list still pins the audience."""
    run = start_sandbox(with_faults({"fault": "missing-aud-condition", "workload": "billing-worker"}))
    trust = clients.aws(run, "iam").get_role(RoleName="demo-billing-worker")["Role"]["AssumeRolePolicyDocument"]
    assert list(trust["Statement"][0]["Condition"]["StringEquals"]) == [f"{run.sandbox.issuer.host_path}:sub"]
    sts = clients.unsigned_sts(run)
    assume(sts, BILLING_ROLE, sa_token(run, IRSA_NS, IRSA_SA))
    with pytest.raises(ClientError) as err:
        assume(sts, BILLING_ROLE, sa_token(run, IRSA_NS, IRSA_SA, audience="not-sts"))
    assert error_of(err)[0] == "InvalidIdentityToken"


# --- Pod Identity agent -----------------------------------------------------------------------


def agent_get(run, token, *, host=None, node=0, path="/v1/credentials"):
    uri = run.sandbox.nodes[node].agent.uri.replace("/v1/credentials", path)
    headers = {"Authorization": token} if token is not None else {}
    if host is not None:
        headers["Host"] = host
    return http(uri, headers=headers)


class TestPodIdentityAgent:
    """The nodes' Pod Identity agents over HTTP (urllib), on one shared demo sandbox."""

    def test_agent_serves_credentials(self, demo, clients):
        run = demo
        token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
        for node in range(len(run.sandbox.nodes)):  # every node's agent
            status, body = agent_get(run, token, node=node)
            assert status == 200
            creds = json.loads(body)
            assert sorted(creds) == ["AccessKeyId", "AccountId", "Expiration", "SecretAccessKey", "Token"]
            assert creds["AccountId"] == ACCOUNT
            assert creds["AccessKeyId"]
            assert creds["SecretAccessKey"]
            assert creds["Token"]
            assert creds["Expiration"].endswith("Z")
            expires = datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
            assert expires.tzinfo is not None
            assert expires.timestamp() > time.time() + 600
        keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["Token"],
        }
        arn = clients.aws(run, "sts", keys).get_caller_identity()["Arn"]
        assert arn.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-invoice-exporter/eks-{CLUSTER}-{PI_SA}-test-")

    def test_agent_accepts_the_eks_host_header(self, demo):
        run = demo
        token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
        assert agent_get(run, token, host="169.254.170.23")[0] == 200
        assert agent_get(run, token, host="[fd00:ec2::23]")[0] == 200

    def test_agent_refuses_a_wrong_host_header(self, demo):
        run = demo
        token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
        for host in ("evil.example", "169.254.170.2", "localhost"):
            status, body = agent_get(run, token, host=host)
            assert status == 403, host
            text = body.decode()
            # The real agent's text (aws/eks-pod-identity-agent internal/validation/request.go), no EKS Auth code.
            assert text.startswith("Access Denied. Called agent through invalid address, please use either "), text
            assert text.endswith(f"address not {host}\n"), text
            assert agent_error_code(text) is None

    @pytest.mark.parametrize(
        ("case", "code", "needle"),
        [  # the agent's own checks answer without a code; EKS Auth's name InvalidTokenException
            ("garbage", None, "Service account token cannot be parsed"),
            ("missing", None, "Service account token cannot be empty"),
            ("expired", None, "failed basic claim validations: token has invalid claims: token is expired"),
            ("irsa-audience", "InvalidTokenException", "audience"),
            ("other-issuer-key", "InvalidTokenException", "signature"),
        ],
    )
    def test_agent_refuses_bad_tokens(self, demo, case, code, needle):
        run = demo
        token = {
            "garbage": lambda: "not-a-jwt",
            "missing": lambda: None,
            "irsa-audience": lambda: sa_token(run, PI_NS, PI_SA),
            "expired": lambda: sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE, expiration=-60),
            "other-issuer-key": lambda: sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE, issuer=Issuer(url="x")),
        }[case]()
        status, body = agent_get(run, token)
        assert status == 400
        assert agent_error_code(body.decode()) == code
        assert needle.lower() in body.decode().lower()

    def test_agent_without_association(self, demo):
        """EKS Auth's 404 ResourceNotFoundException, passed on by the agent in its text format."""
        run = demo
        for namespace, sa in ((PI_NS, "default"), (IRSA_NS, IRSA_SA)):
            status, body = agent_get(run, sa_token(run, namespace, sa, audience=PI_AUDIENCE))
            assert status == 404
            assert agent_error_code(body.decode()) == "ResourceNotFoundException"
            assert f"{namespace}/{sa}" in body.decode()

    def test_agent_looks_up_the_association_at_request_time(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
        (assoc,) = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace=PI_NS)["associations"]
        eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc["associationId"])
        assert agent_get(run, token)[0] == 404
        eks.create_pod_identity_association(
            clusterName=CLUSTER, namespace=PI_NS, serviceAccount=PI_SA, roleArn=EXPORTER_ROLE
        )
        assert agent_get(run, token)[0] == 200

    def test_agent_trust_refuses_a_role_that_does_not_trust_the_sa(self, demo, clients):
        run = demo
        eks = clients.aws(run, "eks")
        (assoc,) = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace=PI_NS)["associations"]
        eks.update_pod_identity_association(
            clusterName=CLUSTER, associationId=assoc["associationId"], roleArn=REPORTING_ROLE
        )
        try:
            status, body = agent_get(run, sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE))
        finally:
            eks.update_pod_identity_association(
                clusterName=CLUSTER, associationId=assoc["associationId"], roleArn=EXPORTER_ROLE
            )
        assert status == 400  # EKS Auth's AccessDeniedException is a 400 (botocore's eks-auth model)
        assert agent_error_code(body.decode()) == "AccessDeniedException"
        assert REPORTING_ROLE in body.decode()

    def test_agent_health_endpoints(self, demo):
        """On their own port, as the agent's probe server (localhost:2703 on EKS): 200, no body."""
        run = demo
        for node in run.sandbox.nodes:
            for path in ("/healthz", "/readyz"):
                assert http(node.agent.probe_uri + path) == (200, b"")
        for path in ("/healthz", "/v1/other"):
            assert agent_get(run, None, path=path) == (404, b"404 page not found\n")

    def test_agent_called_from_inside_a_pod(self, demo):
        """The injected URI and token file, used with urllib by the pod itself; no secret is printed."""
        run = demo
        code = textwrap.dedent(
            """
            import json, os, urllib.request
            token = open(os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]).read()
            uri = os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
            req = urllib.request.Request(uri, headers={"Authorization": token})
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = json.loads(resp.read())
                print(json.dumps({"status": resp.status, "keys": sorted(body), "account": body["AccountId"]}))
            """
        )
        phase, log = run_pod(run, PI_NS, PI_SA, code)
        assert phase == "Succeeded", log
        assert last_json(log) == {
            "status": 200,
            "keys": ["AccessKeyId", "AccountId", "Expiration", "SecretAccessKey", "Token"],
            "account": ACCOUNT,
        }
        for secret in run.sandbox.minted_secrets:
            assert secret not in log


def test_agent_missing_tag_session(start_sandbox, clients):
    run = start_sandbox(with_faults({"fault": "missing-tag-session", "workload": "invoice-exporter"}))
    status, body = agent_get(run, sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE))
    assert status == 400
    assert agent_error_code(body.decode()) == "AccessDeniedException"
    assert "sts:TagSession" in body.decode()
    # With session tags disabled on the association, sts:TagSession is no longer asked for; but the
    # tags are absent too, so the trust's aws:RequestTag conditions cannot hold any more ...
    eks = clients.aws(run, "eks")
    (assoc,) = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace=PI_NS)["associations"]
    eks.update_pod_identity_association(
        clusterName=CLUSTER, associationId=assoc["associationId"], disableSessionTags=True
    )
    status, body = agent_get(run, sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE))
    assert status == 400
    assert agent_error_code(body.decode()) == "AccessDeniedException"
    assert "sts:TagSession" not in body.decode()
    # ... and sts:AssumeRole alone is enough for a trust that does not condition on them.
    untagged = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": PI_AUDIENCE}, "Action": "sts:AssumeRole"}],
    }
    clients.aws(run, "iam").update_assume_role_policy(
        RoleName=EXPORTER_ROLE.rsplit("/", 1)[1], PolicyDocument=json.dumps(untagged)
    )
    assert agent_get(run, sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE))[0] == 200


def test_agent_down_refuses_connections(start_sandbox):
    run = start_sandbox(with_faults({"fault": "agent-down", "nodegroup": "ng-general"}))
    token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
    by_group = {n.nodegroup: i for i, n in enumerate(run.sandbox.nodes)}
    with pytest.raises(urllib.error.URLError) as err:
        agent_get(run, token, node=by_group["ng-general"])
    assert isinstance(err.value.reason, ConnectionRefusedError)
    assert agent_get(run, token, node=by_group["ng-batch"])[0] == 200


def test_agent_throttling_fault(start_sandbox):
    """The agent's own rate limiter refuses every credential request on the faulted node group."""
    run = start_sandbox(with_faults({"fault": "agent-throttling", "nodegroup": "ng-general"}))
    token = sa_token(run, PI_NS, PI_SA, audience=PI_AUDIENCE)
    by_group = {n.nodegroup: i for i, n in enumerate(run.sandbox.nodes)}
    assert agent_get(run, token, node=by_group["ng-general"]) == (429, b"Too Many Requests\n")
    assert agent_get(run, token, node=by_group["ng-batch"])[0] == 200
    # Its health stays green: the probe server has its own limiter (pkg/server/server.go:109-128).
    assert http(run.sandbox.nodes[by_group["ng-general"]].agent.probe_uri + "/readyz") == (200, b"")


# --- IMDS ------------------------------------------------------------------------------------


CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"


class TestImds:
    """The nodes' IMDS as a pod sees it, on one shared demo sandbox."""

    def test_imds_blocked_by_default(self, demo):
        run = demo
        for node in run.sandbox.nodes:
            url = node.imds.url
            with pytest.raises((TimeoutError, urllib.error.URLError)) as err:
                http(url + "/latest/api/token", method="PUT", headers={TTL_HEADER: "21600"}, timeout=0.3)
            reason = err.value if isinstance(err.value, TimeoutError) else err.value.reason
            assert isinstance(reason, TimeoutError), repr(err.value)  # no reply at all: not refused
            assert http(url + CREDS_PATH)[0] == 401
            assert http(url + CREDS_PATH + "demo-node")[0] == 401
            # A made-up v2 token does not help.
            assert http(url + CREDS_PATH, headers={"x-aws-ec2-metadata-token": "made-up"})[0] == 401


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_imds_exposed_serves_the_node_role(start_sandbox, clients, version):
    run = start_sandbox(with_faults({"fault": "imds-exposed", "versions": [version]}))
    url = run.sandbox.nodes[0].imds.url
    headers = {}
    if version == "v2":
        status, token = http(url + "/latest/api/token", method="PUT", headers={TTL_HEADER: "60"})
        assert status == 200
        assert token
        headers["x-aws-ec2-metadata-token"] = token.decode()
    else:
        # v1 only: the token PUT still goes unanswered (hop limit 1).
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            http(url + "/latest/api/token", method="PUT", timeout=0.3)
    status, role = http(url + CREDS_PATH, headers=headers)
    assert (status, role) == (200, b"demo-node")
    status, body = http(url + CREDS_PATH + "demo-node", headers=headers)
    assert status == 200
    creds = json.loads(body)
    assert creds["Code"] == "Success"
    assert creds["Type"] == "AWS-HMAC"
    assert http(url + CREDS_PATH + "other-role", headers=headers)[0] == 404
    keys = {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["Token"],
    }
    arn = clients.aws(run, "sts", keys).get_caller_identity()["Arn"]
    assert arn.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-node/i-")
    # The node role is broad: a pod that reaches it can read what its own role cannot.
    body = clients.aws(run, "s3", keys).get_object(Bucket=BUCKET, Key="payroll/2026-11.csv")["Body"]
    with body:
        assert body.read() == b"x"


def test_imds_exposed_reached_by_botocore_in_a_pod(start_sandbox):
    """Failure mode 6 as a pod lives it: no binding, yet the default chain finds the node role."""
    run = start_sandbox(with_faults({"fault": "imds-exposed"}))
    code = textwrap.dedent(
        """
        import json, botocore.session
        session = botocore.session.Session()
        creds = session.get_credentials()
        sts = session.create_client("sts", region_name="eu-west-1")
        print(json.dumps({"method": creds.method, "arn": sts.get_caller_identity()["Arn"]}))
        sts.close()
        """
    )
    phase, log = run_pod(run, PI_NS, "default", code)
    assert phase == "Succeeded", log
    result = last_json(log)
    assert result["method"] == "iam-role"
    assert result["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-node/")
    for secret in run.sandbox.minted_secrets:
        assert secret not in log


# --- AWS fidelity ------------------------------------------------------------------------------


def fidelity_data() -> dict:
    data = demo_data()
    data["sandbox"]["keys"].append("demo-key")
    data["sandbox"]["tables"] = [{"name": "demo-table"}]
    data["sandbox"]["roles"].append(
        {
            "name": "demo-kms-user",
            "policy": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["kms:Encrypt"], "Resource": "*"}],
            },
        }
    )
    return data


class TestFidelity:
    """Where the sandbox answers as AWS does and moto would not, on one shared sandbox."""

    def test_s3_missing_key_without_list_bucket_is_403(self, demo, clients):
        run = demo
        reporting = clients.aws(run, "s3", run.sandbox.iam.mint(REPORTING_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            reporting.get_object(Bucket=BUCKET, Key="reports/missing.csv")
        code, _message, status = error_of(err)
        assert (code, status) == ("AccessDenied", 403)
        # The node role has s3:ListBucket: the same miss is a 404.
        node = clients.aws(run, "s3", run.sandbox.iam.mint(NODE_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            node.get_object(Bucket=BUCKET, Key="reports/missing.csv")
        assert error_of(err)[0::2] == ("NoSuchKey", 404)
        # A denied existing key: 403 naming the policy type.
        with pytest.raises(ClientError) as err:
            reporting.get_object(Bucket=BUCKET, Key="payroll/2026-11.csv")
        code, message, status = error_of(err)
        assert (code, status) == ("AccessDenied", 403)
        assert "assumed-role/demo-reporting/test" in message
        assert "s3:GetObject" in message
        assert "identity-based policy" in message

    def test_s3_put_with_wrong_content_md5(self, demo, clients):
        run = demo
        exporter = clients.aws(run, "s3", run.sandbox.iam.mint(EXPORTER_ROLE, "test"))
        admin = clients.aws(run, "s3")
        key = "invoices/2026/11/29/digest.pdf"
        wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        with pytest.raises(ClientError) as err:
            exporter.put_object(Bucket=BUCKET, Key=key, Body=b"payload", ContentMD5=wrong)
        code, _message, status = error_of(err)
        assert (code, status) == ("BadDigest", 400)
        with pytest.raises(ClientError) as err:
            admin.head_object(Bucket=BUCKET, Key=key)
        assert error_of(err)[2] == 404  # nothing stored
        # A denied caller learns nothing about the digest: authorization comes first.
        billing = clients.aws(run, "s3", run.sandbox.iam.mint(BILLING_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            billing.put_object(Bucket=BUCKET, Key=key, Body=b"payload", ContentMD5=wrong)
        assert error_of(err)[0::2] == ("AccessDenied", 403)
        # The right digest stores the object.
        right = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
        exporter.put_object(Bucket=BUCKET, Key=key, Body=b"payload", ContentMD5=right)
        body = admin.get_object(Bucket=BUCKET, Key=key)["Body"]
        with body:
            assert body.read() == b"payload"

    def test_s3_head_object_reports_the_object_size(self, demo, clients):
        run = demo
        admin = clients.aws(run, "s3")
        admin.put_object(Bucket=BUCKET, Key="reports/sized.csv", Body=b"12345")
        assert admin.head_object(Bucket=BUCKET, Key="reports/sized.csv")["ContentLength"] == 5

    def test_json_service_denials(self, demo, clients):
        run = demo
        billing = run.sandbox.iam.mint(BILLING_ROLE, "test")
        queue_url = clients.aws(run, "sqs").get_queue_url(QueueName="invoice-exported-demo")["QueueUrl"]
        calls = {
            "sqs": lambda c: c.send_message(QueueUrl=queue_url, MessageBody="x"),
            "kms": lambda c: c.encrypt(KeyId="alias/demo-key", Plaintext=b"x"),
            "dynamodb": lambda c: c.get_item(TableName="demo-table", Key={"pk": {"S": "a"}}),
        }
        expected = {
            "sqs": ("AccessDenied", 403),
            "kms": ("AccessDeniedException", 400),
            "dynamodb": ("AccessDeniedException", 400),
        }
        for service, call in calls.items():
            with pytest.raises(ClientError) as err:
                call(clients.aws(run, service, billing))
            code, message, status = error_of(err)
            assert (code, status) == expected[service], service
            assert "assumed-role/demo-billing-worker/test" in message
            assert "identity-based policy" in message, service
            assert f"{service}:" in message

    def test_json_service_authentication_failure_is_not_a_policy_denial(self, demo, clients):
        run = demo
        unknown = {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x" * 40}
        failures = {}
        for service, call in (
            ("sqs", lambda c: c.list_queues()),
            ("kms", lambda c: c.list_keys()),
            ("dynamodb", lambda c: c.list_tables()),
        ):
            with pytest.raises(ClientError) as err:
                call(clients.aws(run, service, unknown))
            code, message, _ = error_of(err)
            if code not in AUTHENTICATION_CODES or "identity-based policy" in message:
                failures[service] = code
        assert failures == {}

    def test_kms_dry_run(self, demo, clients):
        run = demo
        allowed = clients.aws(run, "kms", run.sandbox.iam.mint(ROLE + "demo-kms-user", "test"))
        with pytest.raises(ClientError) as err:
            allowed.encrypt(KeyId="alias/demo-key", Plaintext=b"x", DryRun=True)
        assert error_of(err)[0::2] == ("DryRunOperationException", 412)
        # Without DryRun the same call succeeds.
        assert allowed.encrypt(KeyId="alias/demo-key", Plaintext=b"x")["CiphertextBlob"]
        # A DryRun by a caller that is not allowed is a denial, not a DryRun answer.
        denied = clients.aws(run, "kms", run.sandbox.iam.mint(BILLING_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            denied.encrypt(KeyId="alias/demo-key", Plaintext=b"x", DryRun=True)
        code, message, _ = error_of(err)
        assert code == "AccessDeniedException"
        assert "identity-based policy" in message

    def test_kms_key_is_usable_through_s3_only(self, demo, clients):
        run = demo
        assert clients.aws(run, "kms").describe_key(KeyId="alias/demo-finance")["KeyMetadata"]["Arn"] == FINANCE_KEY
        # The exporter's grant carries kms:ViaService = S3 (moto ignores conditions; the sandbox does not).
        exporter = clients.aws(run, "kms", run.sandbox.iam.mint(EXPORTER_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            exporter.decrypt(KeyId=FINANCE_KEY, CiphertextBlob=b"\x01" * 64, DryRun=True)
        code, message, status = error_of(err)
        assert (code, status) == ("AccessDeniedException", 400)
        assert message.endswith("because no identity-based policy allows the kms:Decrypt action"), message

    def test_sse_kms_bucket_needs_the_key(self, demo, clients):
        run = demo
        admin = clients.aws(run, "s3")
        assert admin.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0][
            "ApplyServerSideEncryptionByDefault"
        ] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": FINANCE_KEY}
        # The exporter may write invoices and use the key: the object is stored SSE-KMS.
        exporter = clients.aws(run, "s3", run.sandbox.iam.mint(EXPORTER_ROLE, "test"))
        exporter.put_object(Bucket=BUCKET, Key="invoices/2026/11/29/kms.pdf", Body=b"x")
        head = admin.head_object(Bucket=BUCKET, Key="invoices/2026/11/29/kms.pdf")
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", FINANCE_KEY)
        # The reporting role may read reports/* from S3, but not decrypt with the bucket's key.
        admin.put_object(Bucket=BUCKET, Key="reports/2026-11.csv", Body=b"x")
        reporting = clients.aws(run, "s3", run.sandbox.iam.mint(REPORTING_ROLE, "test"))
        with pytest.raises(ClientError) as err:
            reporting.get_object(Bucket=BUCKET, Key="reports/2026-11.csv")
        code, message, status = error_of(err)
        assert (code, status) == ("AccessDenied", 403)
        assert f"kms:Decrypt on resource: {FINANCE_KEY} because no identity-based policy allows" in message

    def test_minted_role_sessions_are_honoured_and_limited(self, demo, clients):
        run = demo
        creds = run.sandbox.iam.mint(EXPORTER_ROLE, "test")
        assert clients.aws(run, "sts", creds).get_caller_identity()["Arn"] == (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-invoice-exporter/test"
        )
        s3 = clients.aws(run, "s3", creds)
        s3.put_object(Bucket=BUCKET, Key="invoices/2026/11/29/ok.pdf", Body=b"x")
        with pytest.raises(ClientError) as err:
            s3.delete_object(Bucket=BUCKET, Key="invoices/2026/11/29/ok.pdf")
        assert error_of(err)[0::2] == ("AccessDenied", 403)


def test_kms_authorizes_against_the_key_arn(start_sandbox, clients):
    # Without its kms:ViaService condition the exporter's grant lets it use its key directly.
    data = fidelity_data()
    data["sandbox"]["faults"] = [{"fault": "kms-via-service-missing", "workload": "invoice-exporter"}]
    run = start_sandbox(data)
    exporter = clients.aws(run, "kms", run.sandbox.iam.mint(EXPORTER_ROLE, "test"))
    # The policy names the key's ARN (not "*"): allowed on that key ...
    with pytest.raises(ClientError) as err:
        exporter.decrypt(KeyId=FINANCE_KEY, CiphertextBlob=b"\x01" * 64, DryRun=True)
    assert error_of(err)[0::2] == ("DryRunOperationException", 412)
    # ... also when the key comes from the ciphertext alone (Decrypt without KeyId) ...
    blob = clients.aws(run, "kms").encrypt(KeyId="alias/demo-finance", Plaintext=b"invoice")["CiphertextBlob"]
    assert exporter.decrypt(CiphertextBlob=blob)["Plaintext"] == b"invoice"
    # ... and on no other key.
    with pytest.raises(ClientError) as err:
        exporter.generate_data_key(KeyId="alias/demo-key", KeySpec="AES_256")
    code, message, _ = error_of(err)
    assert code == "AccessDeniedException"
    assert "kms:GenerateDataKey on resource: arn:aws:kms:" in message
    assert "identity-based policy" in message


def test_kms_key_policy_deny(start_sandbox, clients):
    """The key policy lists its users without the workload's role: IAM allows, KMS still says no."""
    fault = {"fault": "kms-key-policy-deny", "workload": "invoice-exporter", "key": "demo-finance"}
    direct = {"fault": "kms-via-service-missing", "workload": "invoice-exporter"}  # so that IAM allows direct use
    run = start_sandbox(with_faults(fault, direct))
    creds = run.sandbox.iam.mint(EXPORTER_ROLE, "test")
    kms = clients.aws(run, "kms", creds)
    with pytest.raises(ClientError) as err:
        kms.decrypt(KeyId=FINANCE_KEY, CiphertextBlob=b"\x01" * 64, DryRun=True)
    code, message, status = error_of(err)
    assert (code, status) == ("AccessDeniedException", 400)
    assert message.endswith(
        f"kms:Decrypt on resource: {FINANCE_KEY} because no resource-based policy allows the kms:Decrypt action"
    )
    # Writing to the SSE-KMS bucket fails the same way: S3 asks KMS for a data key as the caller.
    with pytest.raises(ClientError) as err:
        clients.aws(run, "s3", creds).put_object(Bucket=BUCKET, Key="invoices/2026/11/29/k.pdf", Body=b"x")
    code, message, status = error_of(err)
    assert (code, status) == ("AccessDenied", 403)
    assert "kms:GenerateDataKey" in message
    assert "no resource-based policy allows" in message
    # The key's users (here the runner) are unaffected.
    clients.aws(run, "s3").put_object(Bucket=BUCKET, Key="invoices/2026/11/29/k.pdf", Body=b"x")
    policy = json.loads(clients.aws(run, "kms").get_key_policy(KeyId=FINANCE_KEY, PolicyName="default")["Policy"])
    users = next(st for st in policy["Statement"] if st["Sid"] == "KeyUsers")["Principal"]["AWS"]
    assert EXPORTER_ROLE not in users
    # An explicit deny in the key policy is named as one.
    policy["Statement"].append(
        {"Effect": "Deny", "Principal": {"AWS": EXPORTER_ROLE}, "Action": "kms:*", "Resource": "*"}
    )
    policy["Statement"][1]["Principal"]["AWS"] = [*users, EXPORTER_ROLE]
    clients.aws(run, "kms").put_key_policy(KeyId=FINANCE_KEY, PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError) as err:
        kms.decrypt(KeyId=FINANCE_KEY, CiphertextBlob=b"\x01" * 64, DryRun=True)
    assert error_of(err)[1].endswith("with an explicit deny in a resource-based policy")


def test_one_evaluator_decides_every_service_against_its_resource(start_sandbox, clients):
    """DynamoDB, Secrets Manager and SSM grants on one resource, a conditional Deny and a session
    policy, through boto3: each denial names the resource's real ARN and the policy type that denied."""
    data = demo_data()
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/reports"
    data["sandbox"]["tables"] = [{"name": "reports"}]
    data["sandbox"]["secrets"] = [{"name": "demo/db", "value": "s3cr3t-db"}]
    data["sandbox"]["parameters"] = [{"name": "/demo/db-host", "value": "db.internal"}]
    statements = [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": table},
        {
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:demo/db-??????",
        },
        {
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/demo/*",
        },
        {
            "Effect": "Deny",
            "Action": "dynamodb:PutItem",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": REGION}},
        },
    ]
    data["sandbox"]["roles"].append(
        {"name": "demo-scoped", "policy": {"Version": "2012-10-17", "Statement": statements}}
    )
    run = start_sandbox(data)
    creds = run.sandbox.iam.mint(ROLE + "demo-scoped", "test")
    ddb = clients.aws(run, "dynamodb", creds)
    assert "Item" not in ddb.get_item(TableName="reports", Key={"pk": {"S": "x"}})
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName="reports", Item={"pk": {"S": "x"}})
    code, message, status = error_of(err)
    assert (code, status) == ("AccessDeniedException", 400)
    assert message.endswith(
        f"dynamodb:PutItem on resource: {table} with an explicit deny in an identity-based policy"
    ), message
    secret = clients.aws(run, "secretsmanager", creds).get_secret_value(SecretId="demo/db")
    assert secret["ARN"].startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:demo/db-")
    ssm = clients.aws(run, "ssm", creds)
    assert ssm.get_parameter(Name="/demo/db-host")["Parameter"]["Value"] == "db.internal"
    # A session policy (a Pod Identity association's) allowing DynamoDB only: the parameter is denied by it.
    limited = run.sandbox.iam.mint(
        ROLE + "demo-scoped",
        "limited",
        policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]}
        ),
    )
    with pytest.raises(ClientError) as err:
        clients.aws(run, "ssm", limited).get_parameter(Name="/demo/db-host")
    code, message, status = error_of(err)
    assert (code, status) == ("AccessDeniedException", 400)
    assert message.endswith(
        f"ssm:GetParameter on resource: arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/demo/db-host"
        " because no session policy allows the ssm:GetParameter action"
    ), message
    assert "Item" not in clients.aws(run, "dynamodb", limited).get_item(TableName="reports", Key={"pk": {"S": "x"}})
