"""The sandbox's two mutating webhooks (IRSA and EKS Pod Identity), seen through the kubernetes client.

Pods are created with the official client in the demo namespaces and read back with
``read_namespaced_pod``: what the webhooks injected is what the API server stored. Where it
matters, the pod's process also reports what it saw (never a secret).
"""

from __future__ import annotations

import json
import random
import textwrap
import time

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox, runner_client

ACCOUNT = "111122223333"
REGION = "eu-west-1"
CLUSTER = "demo"
BILLING_ROLE = f"arn:aws:iam::{ACCOUNT}:role/demo-billing-worker"
REPORTING_ROLE = f"arn:aws:iam::{ACCOUNT}:role/demo-reporting"
IRSA_NS, IRSA_SA = "billing-demo", "billing-worker-aws-sa"
PI_NS, PI_SA = "finance-demo", "invoice-exporter-aws-sa"

IRSA_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
IRSA_TOKEN_FILE = f"{IRSA_DIR}/token"
PI_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
PI_TOKEN_FILE = f"{PI_DIR}/eks-pod-identity-token"
PI_URI = "http://169.254.170.23/v1/credentials"
IRSA_VARS = {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION", "AWS_DEFAULT_REGION"}
PI_VARS = {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"}
IDENTITY_VOLUMES = {"aws-iam-token", "eks-pod-identity-token"}
SKIP = "eks.amazonaws.com/skip-containers"

# Prints what the pod's own projected tokens say about themselves (claims only, never the token).
CLAIMS_CODE = textwrap.dedent(
    """
    import base64, json, os
    out = {}
    for var in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
        path = os.environ.get(var)
        if not path:
            continue
        part = open(path).read().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        out[var] = {"aud": claims["aud"], "lifetime": claims["exp"] - claims["iat"], "sub": claims["sub"],
                    "rewritten": not path.startswith("/var/run/secrets/")}
    print(json.dumps(out))
    """
)


# --- fixtures and helpers ----------------------------------------------------------------


class FixedRandom(random.Random):
    """The webhook's jitter source, pinned: ``randrange`` answers ``value`` and records its spans."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value
        self.spans: list[int] = []

    def randrange(self, start, stop=None, step=1):  # type: ignore[override]
        self.spans.append(start)
        return self.value


@pytest.fixture(scope="class")
def demo(tmp_path_factory):
    """One demo sandbox shared by a class of tests; they only add objects with names of their own."""
    running = open_sandbox(demo_data(), tmp_path_factory.mktemp("sandbox"), "shared")
    try:
        yield running
    finally:
        close_sandbox(running)


class Cluster:
    """The kubernetes client (and boto3 for EKS/IAM) against one sandbox; cleans up what it made."""

    def __init__(self, run: Running) -> None:
        self.run = run
        self.api_client = config.new_client_from_config(config_file=str(run.connection.kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.pods: list[tuple[str, str]] = []
        self.service_accounts: list[tuple[str, str]] = []
        self.associations: list[str] = []
        self._aws: dict[str, object] = {}

    def aws(self, service: str):
        if service not in self._aws:
            env = self.run.connection.env
            self._aws[service] = runner_client(env, service, REGION)
        return self._aws[service]

    def service_account(self, namespace: str, name: str, annotations: dict[str, str] | None = None) -> None:
        self.core.create_namespaced_service_account(
            namespace, {"metadata": {"name": name, "annotations": annotations or {}}}
        )
        self.service_accounts.append((namespace, name))

    def associate(self, namespace: str, sa: str, role_arn: str) -> str:
        assoc = self.aws("eks").create_pod_identity_association(
            clusterName=CLUSTER, namespace=namespace, serviceAccount=sa, roleArn=role_arn
        )["association"]
        self.associations.append(assoc["associationId"])
        return assoc["associationId"]

    def pod(
        self,
        namespace: str,
        sa: str,
        *,
        code: str = "pass",
        containers: list[dict] | None = None,
        init_containers: list[dict] | None = None,
        env: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Create a pod (first container runs ``python3 -c code``); return its name."""
        first = {"name": "app", "image": "python", "command": ["python3", "-c", code]}
        if env:
            first["env"] = [{"name": k, "value": v} for k, v in env.items()]
        created = self.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {
                    "generateName": "wh-",
                    "annotations": annotations or {},
                    "labels": {"suite": "sandbox-webhooks", **(labels or {})},
                },
                "spec": {
                    "serviceAccountName": sa,
                    "restartPolicy": "Never",
                    "containers": [first, *(containers or [])],
                    **({"initContainers": init_containers} if init_containers else {}),
                },
            },
        )
        self.pods.append((namespace, created.metadata.name))
        return created.metadata.name

    def read(self, namespace: str, name: str) -> dict:
        """The pod as the API server stores it, as plain camelCase data."""
        return self.api_client.sanitize_for_serialization(self.core.read_namespaced_pod(name, namespace))

    def wait_phase(self, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = self.core.read_namespaced_pod(name, namespace).status.phase
            if phase in phases:
                return phase
            time.sleep(0.05)
        raise AssertionError(f"pod {namespace}/{name} not in {phases} after {timeout}s")

    def finish(self, namespace: str, name: str, timeout: float = 20.0) -> tuple[str, str]:
        phase = self.wait_phase(namespace, name, ("Succeeded", "Failed"), timeout)
        return phase, self.core.read_namespaced_pod_log(name, namespace)

    def close(self) -> None:
        try:
            for namespace, name in self.pods:
                try:
                    self.core.delete_namespaced_pod(name, namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            for namespace, name in self.service_accounts:
                self.core.delete_namespaced_service_account(name, namespace)
            for assoc_id in self.associations:
                self.aws("eks").delete_pod_identity_association(clusterName=CLUSTER, associationId=assoc_id)
        finally:
            self.api_client.close()
            for c in self._aws.values():
                c.close()


@pytest.fixture
def cluster():
    made: list[Cluster] = []

    def connect(run: Running) -> Cluster:
        made.append(Cluster(run))
        return made[-1]

    yield connect
    for c in made:
        c.close()


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def aws_env(container: dict) -> dict[str, str]:
    return {k: v for k, v in env_of(container).items() if k.startswith("AWS_")}


def volumes_of(pod: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod["spec"].get("volumes") or []}


def mounts_of(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts") or []}


def token_source(pod: dict, volume: str) -> dict:
    (source,) = volumes_of(pod)[volume]["projected"]["sources"]
    return source["serviceAccountToken"]


def last_json(log: str) -> dict:
    return json.loads(log.strip().splitlines()[-1])


# --- the shared demo cluster -------------------------------------------------------------------


class TestIrsaWebhook:
    """amazon-eks-pod-identity-webhook: the SA's role annotation becomes env and a projected token."""

    def test_irsa_pod_gets_env_and_token_volume(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(IRSA_NS, IRSA_SA, code=CLAIMS_CODE)
        pod = k.read(IRSA_NS, name)
        (app,) = pod["spec"]["containers"]
        assert aws_env(app) == {
            "AWS_ROLE_ARN": BILLING_ROLE,
            "AWS_WEB_IDENTITY_TOKEN_FILE": IRSA_TOKEN_FILE,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }
        assert "AWS_STS_REGIONAL_ENDPOINTS" not in env_of(app)
        assert token_source(pod, "aws-iam-token") == {
            "audience": "sts.amazonaws.com",
            "expirationSeconds": 86400,
            "path": "token",
        }
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == {"aws-iam-token"}
        assert mounts_of(app)["aws-iam-token"] == {
            "name": "aws-iam-token",
            "mountPath": IRSA_DIR,
            "readOnly": True,
        }
        # The kubelet projected that token; the pod's process reads it at the (host) path.
        phase, log = k.finish(IRSA_NS, name)
        assert phase == "Succeeded", log
        seen = last_json(log)
        assert seen == {
            "AWS_WEB_IDENTITY_TOKEN_FILE": {
                "aud": ["sts.amazonaws.com"],
                "lifetime": 86400,
                "sub": f"system:serviceaccount:{IRSA_NS}:{IRSA_SA}",
                "rewritten": True,
            }
        }
        # The stored spec keeps the EKS path.
        assert env_of(k.read(IRSA_NS, name)["spec"]["containers"][0])["AWS_WEB_IDENTITY_TOKEN_FILE"] == IRSA_TOKEN_FILE

    def test_service_account_annotations(self, demo, cluster):
        k = cluster(demo)
        k.service_account(
            IRSA_NS,
            "annotated-sa",
            {
                "eks.amazonaws.com/role-arn": REPORTING_ROLE,
                "eks.amazonaws.com/audience": "custom-aud",
                "eks.amazonaws.com/sts-regional-endpoints": "true",
                "eks.amazonaws.com/token-expiration": "100",
            },
        )
        name = k.pod(IRSA_NS, "annotated-sa", code=CLAIMS_CODE)
        pod = k.read(IRSA_NS, name)
        app = pod["spec"]["containers"][0]
        assert aws_env(app) == {
            "AWS_ROLE_ARN": REPORTING_ROLE,
            "AWS_WEB_IDENTITY_TOKEN_FILE": IRSA_TOKEN_FILE,
            "AWS_STS_REGIONAL_ENDPOINTS": "regional",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }
        # 100 s is raised to the webhook's minimum, 600.
        assert token_source(pod, "aws-iam-token") == {
            "audience": "custom-aud",
            "expirationSeconds": 600,
            "path": "token",
        }
        phase, log = k.finish(IRSA_NS, name)
        assert phase == "Succeeded", log
        token = last_json(log)["AWS_WEB_IDENTITY_TOKEN_FILE"]
        assert (token["aud"], token["lifetime"]) == (["custom-aud"], 600)

    def test_regional_endpoints_only_for_true(self, demo, cluster):
        k = cluster(demo)
        k.service_account(
            IRSA_NS,
            "regional-false-sa",
            {"eks.amazonaws.com/role-arn": REPORTING_ROLE, "eks.amazonaws.com/sts-regional-endpoints": "false"},
        )
        app = k.read(IRSA_NS, k.pod(IRSA_NS, "regional-false-sa"))["spec"]["containers"][0]
        assert "AWS_STS_REGIONAL_ENDPOINTS" not in env_of(app)
        assert env_of(app)["AWS_ROLE_ARN"] == REPORTING_ROLE

    def test_regional_endpoints_annotation_is_a_go_bool(self, demo, cluster):
        k = cluster(demo)
        k.service_account(
            IRSA_NS,
            "regional-title-sa",
            {"eks.amazonaws.com/role-arn": REPORTING_ROLE, "eks.amazonaws.com/sts-regional-endpoints": "True"},
        )
        app = k.read(IRSA_NS, k.pod(IRSA_NS, "regional-title-sa"))["spec"]["containers"][0]
        assert env_of(app).get("AWS_STS_REGIONAL_ENDPOINTS") == "regional"

    def test_invalid_pod_expiration_keeps_the_service_accounts(self, demo, cluster):
        k = cluster(demo)
        k.service_account(
            IRSA_NS,
            "exp-invalid-pod-sa",
            {"eks.amazonaws.com/role-arn": BILLING_ROLE, "eks.amazonaws.com/token-expiration": "7200"},
        )
        name = k.pod(IRSA_NS, "exp-invalid-pod-sa", annotations={"eks.amazonaws.com/token-expiration": "soon"})
        assert token_source(k.read(IRSA_NS, name), "aws-iam-token")["expirationSeconds"] == 7200

    @pytest.mark.parametrize(
        ("sa_expiration", "pod_expiration", "expected"),
        [
            (None, "3600", 3600),
            (None, "100", 600),
            (None, "600", 600),
            ("7200", None, 7200),
            ("7200", "1800", 1800),  # the pod's annotation wins over the SA's
        ],
    )
    def test_token_expiration(self, demo, cluster, sa_expiration, pod_expiration, expected):
        k = cluster(demo)
        sa = IRSA_SA
        if sa_expiration is not None:
            sa = f"exp-{sa_expiration}-{pod_expiration}-sa".lower().replace("none", "x")
            k.service_account(
                IRSA_NS,
                sa,
                {"eks.amazonaws.com/role-arn": BILLING_ROLE, "eks.amazonaws.com/token-expiration": sa_expiration},
            )
        annotations = {"eks.amazonaws.com/token-expiration": pod_expiration} if pod_expiration else {}
        pod = k.read(IRSA_NS, k.pod(IRSA_NS, sa, annotations=annotations))
        assert token_source(pod, "aws-iam-token")["expirationSeconds"] == expected

    def test_skip_containers(self, demo, cluster):
        k = cluster(demo)
        sidecars = [
            {"name": "sidecar", "image": "busybox", "command": ["sleep", "1"]},
            {"name": "other", "image": "busybox", "command": ["sleep", "1"]},
            {"name": "kept", "image": "busybox", "command": ["sleep", "1"]},
        ]
        name = k.pod(
            IRSA_NS,
            IRSA_SA,
            containers=sidecars,
            annotations={"eks.amazonaws.com/skip-containers": "sidecar,other"},
        )
        containers = {c["name"]: c for c in k.read(IRSA_NS, name)["spec"]["containers"]}
        for injected in ("app", "kept"):
            assert env_of(containers[injected])["AWS_ROLE_ARN"] == BILLING_ROLE
            assert "aws-iam-token" in mounts_of(containers[injected])
        for skipped in ("sidecar", "other"):
            assert aws_env(containers[skipped]) == {}
            assert "aws-iam-token" not in mounts_of(containers[skipped])

    def test_skip_containers_keeps_spaces_as_upstream_does(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(
            IRSA_NS,
            IRSA_SA,
            containers=[{"name": "other", "image": "busybox", "command": ["sleep", "1"]}],
            annotations={"eks.amazonaws.com/skip-containers": "sidecar, other"},
        )
        other = k.read(IRSA_NS, name)["spec"]["containers"][1]
        assert env_of(other).get("AWS_ROLE_ARN") == BILLING_ROLE

    def test_skip_label_skips_the_pod(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(IRSA_NS, IRSA_SA, labels={"eks.amazonaws.com/skip-pod-identity-webhook": "true"})
        pod = k.read(IRSA_NS, name)
        assert aws_env(pod["spec"]["containers"][0]) == {}
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == set()
        assert pod["metadata"]["labels"]["eks.amazonaws.com/skip-pod-identity-webhook"] == "true"

    def test_container_that_sets_role_arn_keeps_its_own(self, demo, cluster):
        k = cluster(demo)
        own = f"arn:aws:iam::{ACCOUNT}:role/set-by-the-container"
        name = k.pod(
            IRSA_NS,
            IRSA_SA,
            env={"AWS_ROLE_ARN": own},
            containers=[{"name": "plain", "image": "busybox", "command": ["sleep", "1"]}],
        )
        app, plain = k.read(IRSA_NS, name)["spec"]["containers"]
        env = env_of(app)
        assert env["AWS_ROLE_ARN"] == own
        assert [e["name"] for e in app["env"]].count("AWS_ROLE_ARN") == 1
        # The group is skipped as a whole: no token file next to a role the webhook did not set.
        assert "AWS_WEB_IDENTITY_TOKEN_FILE" not in env
        # The other container is injected as usual.
        assert env_of(plain)["AWS_ROLE_ARN"] == BILLING_ROLE
        assert env_of(plain)["AWS_WEB_IDENTITY_TOKEN_FILE"] == IRSA_TOKEN_FILE

    def test_container_that_sets_the_token_file_keeps_its_own(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(IRSA_NS, IRSA_SA, env={"AWS_WEB_IDENTITY_TOKEN_FILE": "/elsewhere/token"})
        env = env_of(k.read(IRSA_NS, name)["spec"]["containers"][0])
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/elsewhere/token"
        assert "AWS_ROLE_ARN" not in env

    def test_sa_without_role_annotation_is_left_alone(self, demo, cluster):
        k = cluster(demo)
        k.service_account(IRSA_NS, "audience-only-sa", {"eks.amazonaws.com/audience": "custom-aud"})
        for sa in ("default", "audience-only-sa"):
            pod = k.read(IRSA_NS, k.pod(IRSA_NS, sa))
            assert aws_env(pod["spec"]["containers"][0]) == {}, sa
            assert set(volumes_of(pod)) & IDENTITY_VOLUMES == set(), sa


class TestPodIdentityWebhook:
    """EKS Pod Identity: an association at pod creation becomes env and a projected token."""

    def test_pod_identity_pod_gets_env_and_token_volume(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(PI_NS, PI_SA, code=CLAIMS_CODE)
        pod = k.read(PI_NS, name)
        app = pod["spec"]["containers"][0]
        assert aws_env(app) == {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": PI_URI,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": PI_TOKEN_FILE,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_REGION": "eu-west-1",
        }
        source = token_source(pod, "eks-pod-identity-token")
        assert (source["audience"], source["path"]) == ("pods.eks.amazonaws.com", "eks-pod-identity-token")
        # 86400, which upstream jitters down to no less than 79200 (22 h) for Pod Identity.
        assert 79200 <= source["expirationSeconds"] <= 86400
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == {"eks-pod-identity-token"}
        assert mounts_of(app)["eks-pod-identity-token"] == {
            "name": "eks-pod-identity-token",
            "mountPath": PI_DIR,
            "readOnly": True,
        }
        phase, log = k.finish(PI_NS, name)
        assert phase == "Succeeded", log
        assert last_json(log) == {
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": {
                "aud": ["pods.eks.amazonaws.com"],
                "lifetime": source["expirationSeconds"],
                "sub": f"system:serviceaccount:{PI_NS}:{PI_SA}",
                "rewritten": True,
            }
        }

    def test_no_association_no_injection(self, demo, cluster):
        k = cluster(demo)
        pod = k.read(PI_NS, k.pod(PI_NS, "default"))
        assert aws_env(pod["spec"]["containers"][0]) == {}
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == set()

    def test_every_container_is_injected(self, demo, cluster):
        k = cluster(demo)
        name = k.pod(PI_NS, PI_SA, containers=[{"name": "side", "image": "busybox", "command": ["sleep", "1"]}])
        for container in k.read(PI_NS, name)["spec"]["containers"]:
            assert env_of(container)["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == PI_URI, container["name"]
            assert "eks-pod-identity-token" in mounts_of(container)

    def test_pod_identity_takes_precedence_over_the_role_annotation(self, demo, cluster):
        k = cluster(demo)
        k.service_account(PI_NS, "both-sa", {"eks.amazonaws.com/role-arn": REPORTING_ROLE})
        k.associate(PI_NS, "both-sa", REPORTING_ROLE)
        pod = k.read(PI_NS, k.pod(PI_NS, "both-sa"))
        env = aws_env(pod["spec"]["containers"][0])
        assert "AWS_ROLE_ARN" not in env
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == PI_URI
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == {"eks-pod-identity-token"}

    @pytest.mark.parametrize("setting", ["region", "skip-containers", "token-expiration", "skip-label", "pod-label"])
    def test_pod_identity_honours_the_webhook_settings(self, demo, cluster, setting):
        k = cluster(demo)
        if setting == "region":
            env = aws_env(k.read(PI_NS, k.pod(PI_NS, PI_SA))["spec"]["containers"][0])
            assert (env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION")) == (REGION, REGION)
        elif setting == "skip-containers":
            side = {"name": "sidecar", "image": "busybox", "command": ["sleep", "1"]}
            name = k.pod(PI_NS, PI_SA, containers=[side], annotations={"eks.amazonaws.com/skip-containers": "sidecar"})
            sidecar = k.read(PI_NS, name)["spec"]["containers"][1]
            assert aws_env(sidecar) == {}
        elif setting == "token-expiration":
            name = k.pod(PI_NS, PI_SA, annotations={"eks.amazonaws.com/token-expiration": "3600"})
            assert token_source(k.read(PI_NS, name), "eks-pod-identity-token")["expirationSeconds"] == 3600
        elif setting == "skip-label":
            name = k.pod(PI_NS, PI_SA, labels={"eks.amazonaws.com/skip-pod-identity-webhook": "true"})
            assert aws_env(k.read(PI_NS, name)["spec"]["containers"][0]) == {}
        else:
            labels = k.read(PI_NS, k.pod(PI_NS, PI_SA))["metadata"]["labels"]
            assert labels.get("eks.amazonaws.com/pod-identity") == "enabled"

    def test_association_created_after_the_pod(self, demo, cluster, tmp_path):
        """The `association-after-pod` symptom: a running pod keeps no identity until it is recreated."""
        k = cluster(demo)
        sa, role = "late-sa", "demo-late"
        k.service_account(PI_NS, sa)
        k.aws("iam").create_role(
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "pods.eks.amazonaws.com"},
                            "Action": ["sts:AssumeRole", "sts:TagSession"],
                            "Condition": {
                                "StringEquals": {
                                    "aws:RequestTag/kubernetes-namespace": PI_NS,
                                    "aws:RequestTag/kubernetes-service-account": sa,
                                }
                            },
                        }
                    ],
                }
            ),
        )
        go = tmp_path / "go"
        report = textwrap.dedent(
            """
            import json, os, pathlib, time, botocore.session
            go = os.environ.get("GO_FILE")
            deadline = time.monotonic() + 15
            while go and not pathlib.Path(go).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            session = botocore.session.Session()
            creds = session.get_credentials()
            out = {"full_uri": "AWS_CONTAINER_CREDENTIALS_FULL_URI" in os.environ, "method": None, "arn": None}
            if creds is not None:
                out["method"] = creds.method
                sts = session.create_client("sts", region_name="eu-west-1")
                out["arn"] = sts.get_caller_identity()["Arn"]
                sts.close()
            print(json.dumps(out))
            """
        )
        # IMDS is blocked for pods anyway; disabling it only saves the token PUT's timeout.
        no_imds = {"AWS_EC2_METADATA_DISABLED": "true"}
        old = k.pod(PI_NS, sa, code=report, env={"GO_FILE": str(go), **no_imds})
        k.wait_phase(PI_NS, old, ("Running",))
        k.associate(PI_NS, sa, f"arn:aws:iam::{ACCOUNT}:role/{role}")
        new = k.pod(PI_NS, sa, code=report, env=no_imds)

        assert PI_VARS.isdisjoint(env_of(k.read(PI_NS, old)["spec"]["containers"][0]))
        assert "eks-pod-identity-token" not in volumes_of(k.read(PI_NS, old))
        assert env_of(k.read(PI_NS, new)["spec"]["containers"][0])["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == PI_URI

        phase, log = k.finish(PI_NS, new)
        assert phase == "Succeeded", log
        seen = last_json(log)
        assert seen["full_uri"] is True
        assert seen["method"] == "container-role"
        assert seen["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/eks-{CLUSTER}-{new}-")

        go.touch()  # the old pod now looks for credentials, long after the association exists
        phase, log = k.finish(PI_NS, old)
        assert phase == "Succeeded", log
        assert last_json(log) == {"full_uri": False, "method": None, "arn": None}
        for secret in demo.sandbox.minted_secrets:
            assert secret not in log


class TestAdmission:
    def test_pod_with_missing_service_account_is_forbidden(self, demo, cluster):
        k = cluster(demo)
        for namespace in (IRSA_NS, PI_NS):
            with pytest.raises(ApiException) as err:
                k.pod(namespace, "x")
            assert err.value.status == 403
            body = json.loads(err.value.body)
            assert body["reason"] == "Forbidden"
            assert 'serviceaccount "x" not found' in body["message"]
            assert f"{namespace}/x" in body["message"]
            assert all(p.spec.service_account_name != "x" for p in k.core.list_namespaced_pod(namespace).items)

    def test_dry_run_pod_is_mutated_but_not_stored(self, demo, cluster):
        k = cluster(demo)
        pod = k.core.create_namespaced_pod(
            IRSA_NS,
            {
                "metadata": {"name": "dry-run-pod"},
                "spec": {
                    "serviceAccountName": IRSA_SA,
                    "containers": [{"name": "app", "image": "python", "command": ["python3", "-c", "pass"]}],
                },
            },
            dry_run="All",
        )
        assert {e.name for e in pod.spec.containers[0].env} >= {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"}
        with pytest.raises(ApiException) as err:
            k.core.read_namespaced_pod("dry-run-pod", IRSA_NS)
        assert err.value.status == 404

    @pytest.mark.parametrize(
        ("namespace", "sa", "workload", "variables"),
        [(IRSA_NS, IRSA_SA, "billing-worker", IRSA_VARS), (PI_NS, PI_SA, "invoice-exporter", PI_VARS)],
        ids=["irsa", "pod-identity"],
    )
    def test_hardened_workload_without_automount_gets_identity(self, demo, cluster, namespace, sa, workload, variables):
        # The seeded workloads disable automount on the ServiceAccount and the pod template (what the
        # clean demo's configuration checks see); the webhooks never read it and inject all the same
        # (EKS_FACTS.md, IRSA).
        k = cluster(demo)
        assert k.core.read_namespaced_service_account(sa, namespace).automount_service_account_token is False
        deployment = client.AppsV1Api(k.api_client).read_namespaced_deployment(workload, namespace)
        assert deployment.spec.template.spec.automount_service_account_token is False
        pods = k.core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={workload}").items
        assert pods, f"no running pod of {workload}"
        pod = k.api_client.sanitize_for_serialization(pods[0])
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert set(aws_env(pod["spec"]["containers"][0])) >= variables
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES


class TestAsUpstream:
    """Behaviours read from aws/amazon-eks-pod-identity-webhook@3bf80a34 (pkg/handler, pkg/cache)."""

    @pytest.mark.parametrize(
        ("namespace", "sa", "variable", "volume"),
        [
            (IRSA_NS, IRSA_SA, "AWS_ROLE_ARN", "aws-iam-token"),
            (PI_NS, PI_SA, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "eks-pod-identity-token"),
        ],
        ids=["irsa", "pod-identity"],
    )
    def test_init_containers_are_injected_and_skippable(self, demo, cluster, namespace, sa, variable, volume):
        # handler.go:325-334: initContainers go through addEnvToContainer as containers do, and
        # skip-containers names either kind (pkg/annotations.go:27).
        k = cluster(demo)
        inits = [
            {"name": "migrate", "image": "busybox", "command": ["true"]},
            {"name": "vault-init", "image": "busybox", "command": ["true"]},
        ]
        name = k.pod(
            namespace, sa, init_containers=inits, annotations={"eks.amazonaws.com/skip-containers": "vault-init"}
        )
        pod = k.read(namespace, name)
        migrate, vault_init = pod["spec"]["initContainers"]
        assert variable in env_of(migrate)
        assert env_of(migrate)["AWS_REGION"] == REGION
        assert mounts_of(migrate)[volume]["readOnly"] is True
        assert aws_env(vault_init) == {}
        assert volume not in mounts_of(vault_init)
        assert variable in env_of(pod["spec"]["containers"][0])

    def test_regional_sts_is_its_own_group(self, demo, cluster):
        # handler.go:191-239: AWS_STS_REGIONAL_ENDPOINTS is checked and added apart from the role/token pair.
        k = cluster(demo)
        k.service_account(
            IRSA_NS,
            "regional-group-sa",
            {"eks.amazonaws.com/role-arn": REPORTING_ROLE, "eks.amazonaws.com/sts-regional-endpoints": "true"},
        )
        own_role = f"arn:aws:iam::{ACCOUNT}:role/set-by-the-container"
        sets_sts = {
            "name": "sets-sts",
            "image": "busybox",
            "env": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "legacy"}],
        }
        sets_role = {"name": "sets-role", "image": "busybox", "env": [{"name": "AWS_ROLE_ARN", "value": own_role}]}
        name = k.pod(IRSA_NS, "regional-group-sa", containers=[sets_sts, sets_role])
        _, sts_container, role_container = k.read(IRSA_NS, name)["spec"]["containers"]
        # The container's own STS setting stays, and the role/token pair is still injected.
        assert env_of(sts_container)["AWS_STS_REGIONAL_ENDPOINTS"] == "legacy"
        assert [e["name"] for e in sts_container["env"]].count("AWS_STS_REGIONAL_ENDPOINTS") == 1
        assert env_of(sts_container)["AWS_ROLE_ARN"] == REPORTING_ROLE
        assert env_of(sts_container)["AWS_WEB_IDENTITY_TOKEN_FILE"] == IRSA_TOKEN_FILE
        # The container's own role stays (the pair is skipped), and the STS setting is still injected.
        assert env_of(role_container)["AWS_ROLE_ARN"] == own_role
        assert "AWS_WEB_IDENTITY_TOKEN_FILE" not in env_of(role_container)
        assert env_of(role_container)["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"

    def test_container_that_sets_every_group_is_left_alone(self, demo, cluster):
        # handler.go:212-217: credentials, region and STS all set: not even the token's mount is added.
        k = cluster(demo)
        own = {"AWS_ROLE_ARN": BILLING_ROLE, "AWS_REGION": "us-east-1", "AWS_STS_REGIONAL_ENDPOINTS": "regional"}
        name = k.pod(IRSA_NS, IRSA_SA, env=own)
        pod = k.read(IRSA_NS, name)
        app = pod["spec"]["containers"][0]
        assert aws_env(app) == own
        assert "aws-iam-token" not in mounts_of(app)
        assert "aws-iam-token" in volumes_of(pod)  # the pod-level volume is added all the same

    def test_pod_identity_gets_regional_sts_from_the_service_account(self, demo, cluster):
        # handler.go:444, 453 and cache.go:156-166: Pod Identity mode takes the SA's sts-regional-endpoints.
        k = cluster(demo)
        k.service_account(PI_NS, "pi-regional-sa", {"eks.amazonaws.com/sts-regional-endpoints": "true"})
        k.associate(PI_NS, "pi-regional-sa", REPORTING_ROLE)
        env = aws_env(k.read(PI_NS, k.pod(PI_NS, "pi-regional-sa"))["spec"]["containers"][0])
        assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == PI_URI
        assert "AWS_ROLE_ARN" not in env

    def test_regional_sts_flag_applies_to_both_modes_unless_the_sa_says_false(self, demo, cluster, monkeypatch):
        # main.go:83 --sts-regional-endpoint; an SA annotation overrides it either way (cache.go:238-246).
        k = cluster(demo)
        monkeypatch.setattr(demo.sandbox.webhooks.config, "regional_sts", True)
        k.service_account(
            IRSA_NS,
            "regional-off-sa",
            {"eks.amazonaws.com/role-arn": REPORTING_ROLE, "eks.amazonaws.com/sts-regional-endpoints": "false"},
        )
        irsa = env_of(k.read(IRSA_NS, k.pod(IRSA_NS, IRSA_SA))["spec"]["containers"][0])
        pod_identity = env_of(k.read(PI_NS, k.pod(PI_NS, PI_SA))["spec"]["containers"][0])
        off = env_of(k.read(IRSA_NS, k.pod(IRSA_NS, "regional-off-sa"))["spec"]["containers"][0])
        assert irsa["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert pod_identity["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert "AWS_STS_REGIONAL_ENDPOINTS" not in off

    @pytest.mark.parametrize(("drawn", "expected"), [(0, 79200), (7200, 86400), (3600, 82800)])
    def test_pod_identity_default_lifetime_is_jittered(self, demo, cluster, monkeypatch, drawn, expected):
        # handler.go:510-517: Int63n(86400 - 79200 + 1) + 79200, only for the default 86400.
        k = cluster(demo)
        source = FixedRandom(drawn)
        monkeypatch.setattr(demo.sandbox.webhooks.config, "random", source)
        name = k.pod(PI_NS, PI_SA)
        assert token_source(k.read(PI_NS, name), "eks-pod-identity-token")["expirationSeconds"] == expected
        assert source.spans == [7201]
        # Neither IRSA's default nor a lifetime the pod asks for is jittered.
        irsa = k.read(IRSA_NS, k.pod(IRSA_NS, IRSA_SA))
        asked = k.read(PI_NS, k.pod(PI_NS, PI_SA, annotations={"eks.amazonaws.com/token-expiration": "7200"}))
        assert token_source(irsa, "aws-iam-token")["expirationSeconds"] == 86400
        assert token_source(asked, "eks-pod-identity-token")["expirationSeconds"] == 7200
        assert source.spans == [7201]
        # Upstream compares the value, not where it came from: an explicit 86400 is jittered too.
        explicit = k.read(PI_NS, k.pod(PI_NS, PI_SA, annotations={"eks.amazonaws.com/token-expiration": "86400"}))
        assert token_source(explicit, "eks-pod-identity-token")["expirationSeconds"] == expected
        assert source.spans == [7201, 7201]

    def test_service_account_not_yet_in_the_informer_cache(self, demo, cluster, monkeypatch):
        # handler.go:463-486 with the default grace period 0: a cache miss leaves an IRSA pod unmutated.
        k = cluster(demo)
        cache = demo.sandbox.webhooks.cache
        monkeypatch.setattr(cache, "_lagging", set())  # the shared sandbox's own set comes back at teardown
        cache.lag(IRSA_NS, "fresh-sa")
        k.service_account(IRSA_NS, "fresh-sa", {"eks.amazonaws.com/role-arn": REPORTING_ROLE})
        early = k.read(IRSA_NS, k.pod(IRSA_NS, "fresh-sa"))
        assert aws_env(early["spec"]["containers"][0]) == {}
        assert set(volumes_of(early)) & IDENTITY_VOLUMES == set()
        # With a grace period the webhook asks the API server and mutates.
        monkeypatch.setattr(demo.sandbox.webhooks.config, "sa_lookup_grace_seconds", 0.5)
        graced = k.read(IRSA_NS, k.pod(IRSA_NS, "fresh-sa"))
        assert env_of(graced["spec"]["containers"][0])["AWS_ROLE_ARN"] == REPORTING_ROLE
        monkeypatch.setattr(demo.sandbox.webhooks.config, "sa_lookup_grace_seconds", 0.0)
        # Once the informer has caught up, the next pod is mutated.
        cache.catch_up()
        later = k.read(IRSA_NS, k.pod(IRSA_NS, "fresh-sa"))
        assert env_of(later["spec"]["containers"][0])["AWS_ROLE_ARN"] == REPORTING_ROLE

    def test_pod_identity_cache_miss_falls_back_to_the_defaults(self, demo, cluster, monkeypatch):
        # cache.go:156-166: the association still injects, but the SA's settings are not seen (false, 86400).
        k = cluster(demo)
        cache = demo.sandbox.webhooks.cache
        monkeypatch.setattr(cache, "_lagging", set())  # the shared sandbox's own set comes back at teardown
        cache.lag(PI_NS, "pi-fresh-sa")
        monkeypatch.setattr(demo.sandbox.webhooks.config, "random", FixedRandom(0))
        k.service_account(
            PI_NS,
            "pi-fresh-sa",
            {"eks.amazonaws.com/sts-regional-endpoints": "true", "eks.amazonaws.com/token-expiration": "3600"},
        )
        k.associate(PI_NS, "pi-fresh-sa", REPORTING_ROLE)
        pod = k.read(PI_NS, k.pod(PI_NS, "pi-fresh-sa"))
        env = env_of(pod["spec"]["containers"][0])
        assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == PI_URI
        assert "AWS_STS_REGIONAL_ENDPOINTS" not in env
        assert token_source(pod, "eks-pod-identity-token")["expirationSeconds"] == 79200

    def test_identity_volume_goes_first(self, demo, cluster):
        # handler.go:394-412: with volumes present the patch adds at /spec/volumes/0.
        k = cluster(demo)
        created = k.core.create_namespaced_pod(
            IRSA_NS,
            {
                "metadata": {"generateName": "wh-", "labels": {"suite": "sandbox-webhooks"}},
                "spec": {
                    "serviceAccountName": IRSA_SA,
                    "restartPolicy": "Never",
                    "containers": [{"name": "app", "image": "python", "command": ["python3", "-c", "pass"]}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                },
            },
        )
        k.pods.append((IRSA_NS, created.metadata.name))
        pod = k.read(IRSA_NS, created.metadata.name)
        assert [v["name"] for v in pod["spec"]["volumes"]] == ["aws-iam-token", "scratch"]

    @pytest.mark.parametrize("label", ["kubernetes.io/os", "beta.kubernetes.io/os"])
    def test_windows_pods_get_a_windows_token_path(self, demo, cluster, label):
        # handler.go:314-321: the token file variable (not the mount) is rewritten for Windows nodes.
        k = cluster(demo)
        created = k.core.create_namespaced_pod(
            IRSA_NS,
            {
                "metadata": {"generateName": "wh-", "labels": {"suite": "sandbox-webhooks"}},
                "spec": {
                    "serviceAccountName": IRSA_SA,
                    "nodeSelector": {label: "windows"},
                    "containers": [{"name": "app", "image": "mcr.microsoft.com/windows/nanoserver"}],
                },
            },
        )
        k.pods.append((IRSA_NS, created.metadata.name))
        app = k.read(IRSA_NS, created.metadata.name)["spec"]["containers"][0]
        assert (
            env_of(app)["AWS_WEB_IDENTITY_TOKEN_FILE"]
            == "C:\\var\\run\\secrets\\eks.amazonaws.com\\serviceaccount\\token"
        )
        assert mounts_of(app)["aws-iam-token"]["mountPath"] == IRSA_DIR

    @pytest.mark.parametrize(
        ("annotation", "record"),
        [
            ("sidecar,other", ["sidecar", "other"]),
            ("sidecar, other", ["sidecar", " other"]),  # no TrimLeadingSpace: " other" names no container
            ('"sidecar",other', ["sidecar", "other"]),
            ('"a""b",c', ['a"b', "c"]),
            ("\n\nx,y\nz", ["x", "y"]),  # empty lines skipped, only the first record read
            ("a\r\nb", ["a"]),
            ('"a\nb",c', ["a\nb", "c"]),
            ("a,", ["a", ""]),
            ("", None),  # io.EOF
            ('a"b,c', None),  # ErrBareQuote
            ('"a"b,c', None),  # ErrQuote
            ('"abc', None),  # ErrQuote at the end
        ],
    )
    def test_skip_containers_is_read_as_go_csv_reads_it(self, annotation, record):
        # handler.go:153-170: csv.NewReader(...).Read(); on an error no container is skipped.
        from pytest_eksid.sandbox.webhooks import go_csv_first_record

        assert go_csv_first_record(annotation) == record

    def test_skip_containers_quoted_and_malformed(self, demo, cluster):
        k = cluster(demo)
        side = [{"name": "sidecar", "image": "busybox", "command": ["sleep", "1"]}]
        quoted = k.read(IRSA_NS, k.pod(IRSA_NS, IRSA_SA, containers=side, annotations={SKIP: '"sidecar",x'}))
        assert aws_env(quoted["spec"]["containers"][1]) == {}
        # A bare quote is a CSV error: upstream then skips nothing, not even the well-formed names.
        bare = k.read(IRSA_NS, k.pod(IRSA_NS, IRSA_SA, containers=side, annotations={SKIP: 'sidecar,x"y'}))
        assert env_of(bare["spec"]["containers"][1])["AWS_ROLE_ARN"] == BILLING_ROLE


# --- faults -------------------------------------------------------------------------------------


def test_webhook_not_injecting(start_sandbox, cluster):
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "webhook-not-injecting"}]
    run = start_sandbox(data)
    k = cluster(run)
    # The bindings are in place...
    sa = k.core.read_namespaced_service_account(IRSA_SA, IRSA_NS)
    assert sa.metadata.annotations["eks.amazonaws.com/role-arn"] == BILLING_ROLE
    found = k.aws("eks").list_pod_identity_associations(clusterName=CLUSTER, namespace=PI_NS)["associations"]
    assert [a["serviceAccount"] for a in found] == [PI_SA]
    # ...yet pods are admitted bare (failurePolicy: Ignore), silently.
    for namespace, name in ((IRSA_NS, IRSA_SA), (PI_NS, PI_SA)):
        pod = k.read(namespace, k.pod(namespace, name))
        assert aws_env(pod["spec"]["containers"][0]) == {}, name
        assert set(volumes_of(pod)) & IDENTITY_VOLUMES == set(), name


def test_webhook_cache_miss(start_sandbox, cluster):
    """The fault: the workload's running pod was created before the webhook's informer had its SA."""
    data = demo_data()
    data["sandbox"]["faults"] = [{"fault": "webhook-cache-miss", "workload": "billing-worker"}]
    run = start_sandbox(data)
    k = cluster(run)
    sa = k.core.read_namespaced_service_account(IRSA_SA, IRSA_NS)
    assert sa.metadata.annotations["eks.amazonaws.com/role-arn"] == BILLING_ROLE
    (running,) = k.core.list_namespaced_pod(IRSA_NS, label_selector="app.kubernetes.io/name=billing-worker").items
    running_pod = k.api_client.sanitize_for_serialization(running)
    assert aws_env(running_pod["spec"]["containers"][0]) == {}
    assert set(volumes_of(running_pod)) & IDENTITY_VOLUMES == set()
    # The informer has caught up since: a pod made now (the probe's) is mutated, and Pod Identity never missed.
    assert env_of(k.read(IRSA_NS, k.pod(IRSA_NS, IRSA_SA))["spec"]["containers"][0])["AWS_ROLE_ARN"] == BILLING_ROLE
    (pi_running,) = k.core.list_namespaced_pod(PI_NS, label_selector="app.kubernetes.io/name=invoice-exporter").items
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in {e.name for e in pi_running.spec.containers[0].env}
