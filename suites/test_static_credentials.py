"""Definition of done, point 6: no static AWS credentials exist for the workload."""

import pytest

from pytest_eksid.checks import static
from pytest_eksid.fixtures import fail_on, see

pytestmark = pytest.mark.static_credentials


def test_probe_environment(eksid_workload, eksid_probe):
    """No keys in the environment or files of a pod running as the workload's ServiceAccount."""
    fail_on(static.probe_findings(eksid_workload, eksid_probe.environment, eksid_probe.identity))


def _namespace_scan(kube, namespace):
    return static.scan_objects("Secret", kube.secrets(namespace)) + static.scan_objects(
        "ConfigMap", kube.config_maps(namespace)
    )


def test_namespace_secrets_and_configmaps(eksid_namespace, eksid_kube):
    """Once per namespace of the profile's workloads: no Secret or ConfigMap there carries AWS keys (names
    reported, never values)."""
    fail_on(_namespace_scan(eksid_kube, eksid_namespace))


def test_pod_templates(eksid_profile, eksid_workload, eksid_kube):
    """The workload's pod templates set no AWS key variables, directly or through envFrom."""
    ns = eksid_workload.namespace
    flagged = {(f.details.get("kind", ""), f.details.get("name", "")) for f in _namespace_scan(eksid_kube, ns)}
    selector = eksid_workload.selector or f"app.kubernetes.io/name={eksid_workload.name}"
    owner = see(
        "suites/test_static_credentials.py::test_namespace_secrets_and_configmaps", f"{eksid_profile.name}/ns/{ns}"
    )
    fail_on(static.scan_pod_templates(eksid_kube.workloads(ns, selector), flagged=flagged, flagged_by=owner))


@pytest.mark.eksid_applies(lambda w: w.legacy_iam_user is not None)
def test_legacy_iam_user_has_no_active_keys(eksid_workload, eksid_aws):
    """The IAM user the workload used before holds no active access keys."""
    user = eksid_workload.legacy_iam_user
    fail_on(static.legacy_user_findings(user, eksid_aws.access_keys(user)))


@pytest.mark.eksid_exec
def test_running_containers(eksid_profile, eksid_workload, eksid_kube, record_property, request):
    """With --eksid-exec: inside the workload's running containers, its identity and no static keys.

    Containers the pod's `eks.amazonaws.com/skip-containers` annotation names are left without identity
    by design: they are reported as skipped (property `skipped_container`, section "eksid skipped
    containers") and still scanned for static keys.
    """
    from pytest_eksid.checks.containers import container_findings, skip_note, skipped_containers
    from pytest_eksid.incontainer import inspect_container

    selector = eksid_workload.selector or f"app.kubernetes.io/name={eksid_workload.name}"
    pods = eksid_kube.running_pods(eksid_workload.namespace, selector)
    if not pods:
        pytest.fail(
            f"{eksid_workload.name}: no running pod matches {selector!r} in {eksid_workload.namespace}: "
            "nothing to inspect (set 'selector' in the profile)",
            pytrace=False,
        )
    findings = []
    notes = []
    for pod in pods:
        name = pod["metadata"]["name"]
        skip = skipped_containers(pod["metadata"].get("annotations"))
        for container in pod["spec"]["containers"]:
            view = inspect_container(
                name,
                eksid_workload.namespace,
                container["name"],
                kubeconfig=eksid_kube.target.kubeconfig,
                context=eksid_kube.target.context,
            )
            skipped = container["name"] in skip
            if skipped:
                notes.append(skip_note(eksid_workload, name, container["name"], view.variables))
            findings += container_findings(
                eksid_profile.profile,
                eksid_workload,
                name,
                container["name"],
                view.variables,
                view.values,
                view.files,
                service_account=pod["spec"].get("serviceAccountName") or "default",
                skipped=skipped,
            )
    for note in notes:
        record_property("skipped_container", note)
    if notes:
        request.node.add_report_section("call", "eksid skipped containers", "\n".join(notes))
    fail_on(findings)
