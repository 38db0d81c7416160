"""The sandbox's Kubernetes API through the official ``kubernetes`` client and pytest-testinfra."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from pytest_eksid.sandbox.kubeapi import streaming
from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.resources import resource_type
from tests.helpers.sandboxes import wait_pod_phase

REPO = Path(__file__).resolve().parent.parent
NS = "finance-demo"
SA = "invoice-exporter-aws-sa"


@pytest.fixture(scope="module")
def api(kubeconfig):
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api):
    return client.AppsV1Api(api)


def _status(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert body["code"] == exc.status
    return body


def _pod(name_prefix, command, sa=SA, **spec):
    return {
        "metadata": {"generateName": name_prefix, "labels": {"suite": "kubeapi-client"}},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "python:3.11", "command": command}],
            **spec,
        },
    }


def _wait_phase(core, name, phases=("Running",), timeout=20.0):
    return wait_pod_phase(core, NS, name, phases, timeout)


@pytest.fixture(scope="module")
def sleeper(core):
    name = core.create_namespaced_pod(
        NS, _pod("client-sleeper-", ["python3", "-c", "import time; print('up', flush=True); time.sleep(300)"])
    ).metadata.name
    _wait_phase(core, name)
    deadline = time.monotonic() + 60  # generous: an interpreter starts slowly on a busy machine
    while core.read_namespaced_pod_log(name, NS) != "up\n":  # the interpreter may still be starting
        assert time.monotonic() < deadline, "the sleeper never logged in 60 s"
        time.sleep(0.05)
    yield name
    if core.list_namespaced_pod(NS, field_selector=f"metadata.name={name}").items:
        core.delete_namespaced_pod(name, NS)


# --- CRUD, errors, dry run ---------------------------------------------------------------


def test_crud_resource_versions_and_status_bodies(core):
    created = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "client-cm", "labels": {"tier": "a"}}, "data": {"k": "v1"}}
    )
    meta = created.metadata
    assert meta.uid
    assert meta.resource_version
    assert meta.creation_timestamp is not None
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS, label_selector="tier in (a,b)").items] == [
        "client-cm"
    ]
    stale = core.read_namespaced_config_map("client-cm", NS)
    fresh = core.replace_namespaced_config_map("client-cm", NS, {**stale.to_dict(), "data": {"k": "v2"}})
    assert int(fresh.metadata.resource_version) > int(meta.resource_version)
    assert fresh.metadata.uid == meta.uid
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("client-cm", NS, {**stale.to_dict(), "data": {"k": "v3"}})
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    deleted = core.delete_namespaced_config_map("client-cm", NS)  # a Status, which this client leaves a dict
    assert (deleted["kind"], deleted["status"], deleted["details"]["uid"]) == ("Status", "Success", meta.uid)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("client-cm", NS)
    body = _status(err.value)
    assert (err.value.status, body["reason"], body["message"]) == (404, "NotFound", 'configmaps "client-cm" not found')
    assert body["details"] == {"name": "client-cm", "kind": "configmaps"}


def test_already_exists_and_invalid(core, apps):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service_account(NS, {"metadata": {"name": SA}})
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == f'serviceaccounts "{SA}" already exists'
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Not_A_Name"}})
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["kind"] == "ConfigMap"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["details"]["causes"][0]["reason"] == "FieldValueInvalid"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NS, {"metadata": {"name": "no-containers"}, "spec": {"containers": []}})
    assert _status(err.value)["message"] == 'Pod "no-containers" is invalid: spec.containers: Required value'
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(
            NS,
            {
                "metadata": {"name": "mismatch"},
                "spec": {
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {
                        "metadata": {"labels": {"app": "y"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                },
            },
        )
    body = _status(err.value)
    assert body["reason"] == "Invalid"
    assert "`selector` does not match template `labels`" in body["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-namespace", {"metadata": {"name": "x"}})
    assert _status(err.value)["message"] == 'namespaces "no-such-namespace" not found'


def test_pod_with_unknown_service_account_is_forbidden(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NS, _pod("forbidden-", ["true"], sa="nope"))
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (403, "Forbidden")
    assert 'serviceaccount "nope" not found' in body["message"]


def test_dry_run_create_and_delete(core):
    pod = core.create_namespaced_pod(NS, _pod("dry-", ["true"]), dry_run="All")
    assert pod.metadata.uid
    assert pod.metadata.name.startswith("dry-")
    # Admission ran: the Pod Identity webhook's injection is visible without creating anything.
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].endswith("/eks-pod-identity-token")
    assert core.list_namespaced_pod(NS, field_selector=f"metadata.name={pod.metadata.name}").items == []
    core.create_namespaced_secret(NS, {"metadata": {"name": "client-dry"}, "stringData": {"a": "b"}})
    core.delete_namespaced_secret("client-dry", NS, dry_run="All")
    assert core.read_namespaced_secret("client-dry", NS).type == "Opaque"
    core.delete_namespaced_secret("client-dry", NS)


def test_unauthorized_without_the_token(kubeconfig, tmp_path):
    data = yaml.safe_load(Path(kubeconfig).read_text())
    data["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "kubeconfig"
    bad.write_text(yaml.safe_dump(data))
    api_client = config.new_client_from_config(config_file=str(bad))
    try:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(api_client).list_namespace()
        assert (err.value.status, _status(err.value)["reason"]) == (401, "Unauthorized")
    finally:
        api_client.close()


def test_plain_http_kubeconfig_still_serves_the_python_client(sandbox):
    _, connection = sandbox
    api_client = config.new_client_from_config(config_file=str(connection.kubeconfig))
    try:
        names = [n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items]
    finally:
        api_client.close()
    assert NS in names


# --- selectors, patches, watch -----------------------------------------------------------


def test_label_and_field_selectors(core):
    listed = core.list_service_account_for_all_namespaces(label_selector="platform.mycompany.io/identity-owner")
    assert sorted(s.metadata.name for s in listed.items) == ["billing-worker-aws-sa", SA]
    only = core.list_service_account_for_all_namespaces(
        label_selector="platform.mycompany.io/identity-owner notin (billing-team),app.kubernetes.io/name"
    )
    assert [s.metadata.name for s in only.items] == [SA]
    assert [
        s.metadata.namespace
        for s in core.list_service_account_for_all_namespaces(field_selector=f"metadata.name={SA}").items
    ] == [NS]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS, field_selector="spec.containers=x")
    assert (err.value.status, _status(err.value)["message"]) == (400, 'field label not supported: "spec.containers"')
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(NS, label_selector="a in (b")
    assert err.value.status == 400


def test_patch_service_account_annotations(core):
    core.create_namespaced_service_account(NS, {"metadata": {"name": "client-patched", "labels": {"keep": "me"}}})
    try:
        role = "arn:aws:iam::111122223333:role/demo-invoice-exporter"
        # A dict body: the client sends a strategic merge patch.
        patched = core.patch_namespaced_service_account(
            "client-patched", NS, {"metadata": {"annotations": {"eks.amazonaws.com/role-arn": role}}}
        )
        assert patched.metadata.annotations == {"eks.amazonaws.com/role-arn": role}
        assert patched.metadata.labels == {"keep": "me"}
        # A list body: a JSON patch.
        patched = core.patch_namespaced_service_account(
            "client-patched", NS, [{"op": "add", "path": "/metadata/labels/extra", "value": "1"}]
        )
        assert patched.metadata.labels == {"keep": "me", "extra": "1"}
        # A JSON merge patch; null removes.
        patched = core.patch_namespaced_service_account(
            "client-patched",
            NS,
            {"metadata": {"annotations": {"eks.amazonaws.com/role-arn": None}}},
            _content_type="application/merge-patch+json",
        )
        assert not patched.metadata.annotations
        with pytest.raises(ApiException) as err:
            core.patch_namespaced_service_account(
                "client-patched", NS, [{"op": "test", "path": "/metadata/labels/keep", "value": "other"}]
            )
        assert err.value.status == 422
        with pytest.raises(ApiException) as err:
            core.patch_namespaced_service_account(
                "client-patched", NS, {"metadata": {"name": "renamed"}}, _content_type="application/merge-patch+json"
            )
        assert err.value.status == 400
        dry = core.patch_namespaced_service_account(
            "client-patched", NS, {"metadata": {"labels": {"dry": "run"}}}, dry_run="All"
        )
        assert dry.metadata.labels["dry"] == "run"
        assert "dry" not in core.read_namespaced_service_account("client-patched", NS).metadata.labels
    finally:
        core.delete_namespaced_service_account("client-patched", NS)


def test_pod_status_subresource_and_logs(core, sleeper):
    pod = core.read_namespaced_pod_status(sleeper, NS)
    assert pod.status.phase == "Running"
    patched = core.patch_namespaced_pod_status(
        sleeper, NS, {"status": {"conditions": [{"type": "example.com/Probe", "status": "True"}]}}
    )
    assert {c.type for c in patched.status.conditions} >= {"Ready", "example.com/Probe"}  # merged by type
    # A status write through the main resource is ignored, as kube-apiserver does.
    assert core.patch_namespaced_pod(sleeper, NS, {"status": {"phase": "Failed"}}).status.phase == "Running"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod(sleeper, NS, {"spec": {"restartPolicy": "Always"}})
    assert _status(err.value)["details"]["causes"][0]["field"] == "spec"
    assert core.read_namespaced_pod_log(sleeper, NS) == "up\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log(sleeper, NS, container="other")
    assert err.value.status == 400


def test_watch(core):
    def churn():  # the watch replays from rv: it sees these whether they come before or after it starts
        core.create_namespaced_config_map(NS, {"metadata": {"name": "client-watched"}, "data": {"a": "1"}})
        core.patch_namespaced_config_map("client-watched", NS, {"data": {"a": "2"}})
        core.delete_namespaced_config_map("client-watched", NS)

    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    writer = threading.Thread(target=churn)
    writer.start()
    seen = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map,
        NS,
        field_selector="metadata.name=client-watched",
        resource_version=rv,
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].data))
        if event["type"] == "DELETED":
            w.stop()
    writer.join(timeout=5)
    assert seen == [("ADDED", {"a": "1"}), ("MODIFIED", {"a": "2"}), ("DELETED", {"a": "2"})]


def test_a_list_is_as_of_its_resource_version_so_a_watch_from_it_misses_nothing(core, sandbox, monkeypatch):
    """kube-apiserver answers a list from one snapshot, with that snapshot's version. A change that lands right after
    the list's items were gathered is after the list's version, and a watch from that version brings it. (Read apart,
    the version once included such a change that the items did not: neither the list nor the watch had it, and a
    probe pod's ErrImagePull went unseen until its timeout.)"""
    sb, _ = sandbox
    store = sb.store
    name = "list-then-change"
    only = f"metadata.name={name}"
    core.create_namespaced_config_map(NS, {"metadata": {"name": name}, "data": {"a": "1"}})
    try:
        gathered = store.list_at

        def then_change(resource: Any, *args: Any, **kwargs: Any) -> Any:
            out = gathered(resource, *args, **kwargs)
            if resource_type(resource).key == resource_type("configmaps").key:  # not the authorizer's lists
                store.update("configmaps", NS, name, lambda o: o["data"].update({"a": "2"}))
            return out

        monkeypatch.setattr(store, "list_at", then_change)
        listed = core.list_namespaced_config_map(NS, field_selector=only)
        monkeypatch.undo()
        assert [c.data for c in listed.items] == [{"a": "1"}]
        seen = []
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_config_map,
            NS,
            field_selector=only,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=10,
        ):
            seen.append((event["type"], event["object"].data))
            w.stop()
        assert seen == [("MODIFIED", {"a": "2"})]
    finally:
        core.delete_namespaced_config_map(name, NS)


# --- apps/v1, admissionregistration, discovery, the in-process API -----------------------


def _workload(name, labels):
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
            },
        },
    }


def test_apps_daemonsets_deployments_replicasets(apps):
    ds = apps.create_namespaced_daemon_set("kube-system", _workload("client-agent", {"app": "client-agent"}))
    assert ds.metadata.generation == 1
    assert ds.status.number_ready == 0
    apps.patch_namespaced_daemon_set_status(
        "client-agent", "kube-system", {"status": {"desiredNumberScheduled": 2, "numberReady": 2}}
    )
    status = apps.read_namespaced_daemon_set_status("client-agent", "kube-system").status
    assert (status.desired_number_scheduled, status.number_ready) == (2, 2)
    # A spec change bumps the generation; the status sticks.
    changed = apps.patch_namespaced_daemon_set(
        "client-agent",
        "kube-system",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "v2"}]}}}},
    )
    assert changed.metadata.generation == 2
    assert changed.spec.template.spec.containers[0].image == "v2"  # strategic merge: containers by name
    assert changed.status.number_ready == 2
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_daemon_set(
            "client-agent", "kube-system", {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
        )
    assert "field is immutable" in _status(err.value)["message"]
    assert "client-agent" in [d.metadata.name for d in apps.list_daemon_set_for_all_namespaces().items]
    assert apps.delete_namespaced_daemon_set("client-agent", "kube-system")["status"] == "Success"

    deploy = apps.create_namespaced_deployment(NS, _workload("client-web", {"app": "client-web"}))
    assert deploy.spec.replicas == 1  # defaulted
    owned = _workload("client-web-abc12", {"app": "client-web", "pod-template-hash": "abc12"})
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "client-web", "uid": deploy.metadata.uid}
    ]
    apps.create_namespaced_replica_set(NS, owned)
    assert [r.metadata.name for r in apps.list_namespaced_replica_set(NS, label_selector="app=client-web").items] == [
        "client-web-abc12"
    ]
    apps.delete_namespaced_deployment("client-web", NS)
    # Garbage collection: the ReplicaSet the Deployment owned goes with it.
    assert apps.list_namespaced_replica_set(NS, label_selector="app=client-web").items == []


def test_mutating_webhook_configurations(api):
    admission = client.AdmissionregistrationV1Api(api)
    hook = {
        "metadata": {"name": "client-test-webhook"},
        "webhooks": [
            {
                "name": "client-test.example.com",
                "clientConfig": {"url": "https://127.0.0.1:9443/mutate"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
    created = admission.create_mutating_webhook_configuration(hook)
    try:
        assert created.metadata.namespace is None
        assert created.webhooks[0].failure_policy == "Fail"
        names = [m.metadata.name for m in admission.list_mutating_webhook_configuration().items]
        assert "client-test-webhook" in names
        assert admission.read_mutating_webhook_configuration("client-test-webhook").webhooks[0].name == (
            "client-test.example.com"
        )
        with pytest.raises(ApiException) as err:
            admission.create_mutating_webhook_configuration(
                {"metadata": {"name": "bad-side-effects"}, "webhooks": [{**hook["webhooks"][0], "sideEffects": "Some"}]}
            )
        assert err.value.status == 422
    finally:
        admission.delete_mutating_webhook_configuration("client-test-webhook")


def test_discovery(api):
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name: g.preferred_version.group_version for g in client.ApisApi(api).get_api_versions().groups}
    assert groups == {
        "apps": "apps/v1",
        "admissionregistration.k8s.io": "admissionregistration.k8s.io/v1",
        "rbac.authorization.k8s.io": "rbac.authorization.k8s.io/v1",
        "authorization.k8s.io": "authorization.k8s.io/v1",
        "authentication.k8s.io": "authentication.k8s.io/v1",
    }
    resources = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert resources["daemonsets"].short_names == ["ds"]
    assert resources["daemonsets"].namespaced is True
    assert "patch" in resources["daemonsets/status"].verbs
    core_resources = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods/exec", "pods/log", "pods/status", "serviceaccounts", "events"} <= core_resources


def test_in_process_store_api(sandbox):
    """What runtime.py, node.py and webhooks.py use: resource names resolve to their group."""
    sb, _ = sandbox
    store = sb.store
    store.create("daemonsets", "kube-system", _workload("store-agent", {"app": "store-agent"}))
    try:
        store.patch("ds", "kube-system", "store-agent", {"status": {"numberReady": 1}}, subresource="status")
        assert store.get("daemonsets.apps", "kube-system", "store-agent")["status"]["numberReady"] == 1
        assert [d["metadata"]["name"] for d in store.list("apps/v1/daemonsets", "kube-system", "app=store-agent")] == [
            "store-agent"
        ]
        patched = store.patch(
            "serviceaccounts", NS, SA, {"metadata": {"annotations": {"example.com/x": "y"}}}, "strategic"
        )
        assert patched["metadata"]["annotations"]["example.com/x"] == "y"
        store.patch("serviceaccounts", NS, SA, {"metadata": {"annotations": {"example.com/x": None}}})
        sa = store.get("serviceaccounts", NS, SA)
        event = store.record_event(sa, "Annotated", "by the test", component="tests")
        assert event["involvedObject"]["uid"] == sa["metadata"]["uid"]
        found = store.list("events", NS, field_selector=f"involvedObject.uid={sa['metadata']['uid']}")
        assert [e["reason"] for e in found] == ["Annotated"]
        with pytest.raises(ApiError) as err:
            store.get("daemonsets", "kube-system", "nope")
        assert err.value.status()["message"] == 'daemonsets.apps "nope" not found'
    finally:
        store.delete("daemonsets", "kube-system", "store-agent")


# --- exec --------------------------------------------------------------------------------


def _exec(core: client.CoreV1Api, pod: str, command: list[str], stdin: bool = False) -> Any:
    """An exec stream (stdout and stderr, no tty) read by the caller. Not the default _preload_content, with
    which the client never closes its WebSocket (the socket then waits for the garbage collector and its
    ResourceWarning fails whichever test runs at that moment)."""
    return stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=command,
        stderr=True,
        stdin=stdin,
        stdout=True,
        tty=False,
        _preload_content=False,
    )


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_exec_through_kubernetes_stream(core, sleeper):
    first = _exec(core, sleeper, ["sh", "-c", 'echo "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"; pwd'])
    try:
        first.run_forever(timeout=10)
        out = first.read_stdout()
    finally:
        first.close()
    token_file, cwd = out.splitlines()
    assert Path(token_file).name == "eks-pod-identity-token"
    assert Path(token_file).read_text().count(".") == 2
    assert Path(token_file).is_relative_to(cwd)  # the pod's own directory on the node
    resp = _exec(
        core,
        sleeper,
        ["python3", "-c", "import sys; d = sys.stdin.read(); print(d.upper()); sys.exit(len(d))"],
        stdin=True,
    )
    try:
        resp.write_stdin("abcd")
        resp.close_channel(0)  # v5.channel.k8s.io: close stdin
        resp.run_forever(timeout=10)
        assert resp.read_stdout() == "ABCD\n"
        assert resp.returncode == 4
        assert resp.subprotocol == "v5.channel.k8s.io"
    finally:
        resp.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_exec_output_forwarded_slower_than_the_command_ends_still_arrives(core, sleeper, monkeypatch):
    """On a loaded machine the command can end before its output has been forwarded: the stream must carry all
    of it before the exit status (it lost it when the server gave forwarding 2 s after the exit)."""
    real_send = streaming.WebSocket.send
    delayed: list[bytes] = []

    def slow_send(self: Any, data: bytes) -> None:
        if data[:1] == bytes([streaming.STDOUT]) and len(data) > 1 and not delayed:
            delayed.append(data)
            time.sleep(2.5)  # forwarding stalls, as a starved thread does; the command has long ended
        real_send(self, data)

    monkeypatch.setattr(streaming.WebSocket, "send", slow_send)
    resp = _exec(core, sleeper, ["sh", "-c", "echo late-output"])
    try:
        resp.run_forever(timeout=30)
        assert resp.read_stdout() == "late-output\n"
        assert resp.returncode == 0
    finally:
        resp.close()
    assert delayed


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_exec_needs_a_running_container(core):
    name = core.create_namespaced_pod(NS, _pod("client-done-", ["true"])).metadata.name
    _wait_phase(core, name, ("Succeeded",))
    try:
        with pytest.raises(ApiException) as err:
            stream(core.connect_get_namespaced_pod_exec, name, NS, command=["env"], stdout=True, stderr=True)
        message = str(err.value)
        # The client drops the failed WebSocket without closing it, and the exception's traceback holds it: let it
        # go and collect it here, under this test's filter, not during whichever test runs next.
        del err
        gc.collect()
        assert "Handshake status 400" in message
    finally:
        core.delete_namespaced_pod(name, NS)


def test_testinfra_kubectl_backend(kubeconfig, sleeper, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path))
    host = testinfra.get_host(f"kubectl://{sleeper}?namespace={NS}&container=c", kubeconfig=str(kubeconfig))
    result = host.run("env")
    assert result.rc == 0
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    token = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
    assert host.file(token).exists
    assert host.file(token).content_string.count(".") == 2
    real = host.file("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token")
    # In its own mount namespace (docs/sandbox.md "In-cluster access") the pod sees the token at its real path
    # as well; without one, only at the path the variable was rewritten to.
    if real.exists:
        assert real.content_string == host.file(token).content_string
    assert host.run("exit 7").rc == 7
