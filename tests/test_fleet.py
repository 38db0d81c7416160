"""Several clusters in one run: --profile a --profile b, fleet files, and pytest-xdist's loadgroup.

The end-to-end tests run the real suites against two emulated clusters at once (the second
sandbox of a process runs in a child process) and compare a serial run with ``-n 2 --dist
loadgroup``: the same tests, the same outcomes, each cluster's tests on one worker.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from pytest_eksid.profile import ProfileError, check_unique_names, load_fleet, load_profile
from tests.helpers import REPO
from tests.helpers.profiles import demo_data, write_profile
from tests.helpers.runs import interrupt_pytest, pytester_run, run_pytest

WRONG_ROLE = {"fault": "wrong-role", "workload": "invoice-exporter", "role": "demo-reporting"}


def second_cluster(tmp_path: Path, *faults: dict[str, object]) -> Path:
    """The demo profile as another cluster ("east", in another region), with these faults."""
    data = demo_data()
    data["cluster"]["name"] = "demo-east"
    data["sandbox"]["faults"] = list(faults)
    return write_profile(tmp_path, data, "east")


def without_group(outcomes: dict[str, str]) -> dict[str, str]:
    """Node ids as a serial run has them: xdist's loadgroup appends @<group> to each."""
    return {re.sub(r"@[\w.-]+$", "", k) if k.endswith(("@demo", "@east")) else k: v for k, v in outcomes.items()}


def test_two_clusters_serial_and_loadgroup_give_the_same_results(tmp_path):
    east = second_cluster(tmp_path, WRONG_ROLE)
    # Two suites are enough to compare the runs (probe-based, per-cluster and per-workload tests), at half the pods.
    args = ("--profile", "demo", f"--profile={east}", "suites/test_identity.py", "suites/test_agent.py")
    serial = run_pytest(*args, tmp_path=tmp_path)
    spread = run_pytest(*args, "-n", "2", "--dist", "loadgroup", "-v", tmp_path=tmp_path)

    assert serial.returncode == 1, serial.stdout[-4000:]
    assert spread.returncode == 1, spread.stdout[-4000:]
    assert len(serial.outcomes) >= 20
    assert without_group(spread.outcomes) == serial.outcomes
    # Both clusters were checked, and only the faulted one fails.
    assert {k.split("[")[1].split("/")[0].rstrip("]") for k in serial.outcomes if "[" in k} == {"demo", "east"}
    failed = serial.failed()
    assert failed
    assert all("[east/invoice-exporter" in t for t in failed), failed
    # The matrix names each cluster's rows.
    assert re.search(r"^east/invoice-exporter\s+FAIL", serial.stdout, re.M), serial.stdout[-3000:]
    assert re.search(r"^demo/invoice-exporter\s+pass", serial.stdout, re.M)
    # --dist loadgroup: all of one cluster's tests ran on one worker.
    workers: dict[str, set[str]] = {}
    for worker, group in re.findall(r"^\[(gw\d+)\] \[[ \d]+%\] \w+ \S+\[(demo|east)/", spread.stdout, re.M):
        workers.setdefault(group, set()).add(worker)
    assert set(workers) == {"demo", "east"}, spread.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), workers


def test_second_sandbox_runs_in_a_child_process_and_leaves_nothing(tmp_path):
    east = second_cluster(tmp_path)
    scratch = tmp_path / "tmp"  # the run's temporary files (sandbox work dirs, the child's connection dir)
    scratch.mkdir()
    run = run_pytest(
        "--profile",
        "demo",
        f"--profile={east}",
        "suites/test_identity.py",
        tmp_path=tmp_path,
        env={"TMPDIR": str(scratch)},
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "eksid: demo: sandbox demo ready in" in run.stdout
    assert "eksid: east: sandbox demo-east ready in a child process" in run.stdout
    assert "eksid: east: launching" in run.stdout  # progress says which cluster
    # pytest stopped the child itself (after deleting its pods), not the child noticing pytest gone
    assert run.stdout.index("eksid: east: deleted") < run.stdout.index("eksid: east: sandbox stopped")
    assert "eksid: demo: sandbox stopped" in run.stdout
    # The identity suite alone reaches each cluster through its probes: the summary knows the contexts.
    assert "eksid: east: runner arn:aws:iam::111122223333:user/eksid-runner; kube context eksid-sandbox-demo-east" in (
        run.stdout
    )
    # this run's child only: another test may be running its own at the same time
    left = subprocess.run(["pgrep", "-f", f"pytest_eksid.sandbox --profile {east}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith("eksid-")) == []


def test_live_and_sandbox_clusters_in_one_run(tmp_path):
    """A live cluster that cannot be reached fails its own tests, with why; the sandbox's still pass."""
    live = yaml.safe_load((REPO / "profiles" / "finance-prod.yaml").read_text())
    live["cluster"]["kubeconfig"] = str(tmp_path / "no-such-kubeconfig")
    path = write_profile(tmp_path, live, "prod")
    run = run_pytest("--profile", "demo", f"--profile={path}", "suites/test_identity.py", tmp_path=tmp_path)
    assert run.returncode == 1, run.stdout[-4000:]
    assert {k for k, v in run.outcomes.items() if v == "passed"} == {
        f"suites/test_identity.py::{t}[demo/{w}]"
        for t in ("test_caller_role", "test_credential_provider")
        for w in ("invoice-exporter", "billing-worker")
    }
    assert all("[prod/" in k for k, v in run.outcomes.items() if v != "passed")
    assert "no-such-kubeconfig" in run.stdout


def test_fleet_file(tmp_path):
    east = second_cluster(tmp_path)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"clusters:\n  - profile: demo\n  - profile: {east.name}\n")
    inventory = tmp_path / "inventory.json"
    run = run_pytest(
        f"--fleet={fleet}", "suites/test_configuration.py", f"--eksid-inventory={inventory}", tmp_path=tmp_path
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert f"eksid: profile east: {east} (from --fleet {fleet})" in run.stdout
    rows = yaml.safe_load(inventory.read_text())
    assert sorted((r["cluster"], r["workload"], r["configuration"]) for r in rows) == [
        ("demo", "billing-worker", "pass"),
        ("demo", "invoice-exporter", "pass"),
        ("demo-east", "billing-worker", "pass"),
        ("demo-east", "invoice-exporter", "pass"),
    ]


def test_profile_fixture_without_a_workload_is_ambiguous_with_several_clusters(
    tmp_path: Path, user_pytester: pytest.Pytester
) -> None:
    east = second_cluster(tmp_path)
    user_pytester.makepyfile(test_custom="def test_cluster_name(eksid_profile):\n    assert eksid_profile.name\n")
    demo = REPO / "profiles" / "demo.yaml"
    result = pytester_run(user_pytester, f"--profile={demo}", f"--profile={east}", timeout=300)
    result.assert_outcomes(errors=1)  # its setup failed, with a message and no traceback
    result.stdout.fnmatch_lines(
        ["*this test has no workload, so which cluster it is about is unknown*several profiles (demo, east)*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


OWN_SESSION_FIXTURE = (
    "import pytest\n"
    "@pytest.fixture(scope='session')\n"
    "def contexts(eksid_cluster_for, eksid_settings):\n"
    "    return {p.name: eksid_cluster_for(p).kube.context for p in eksid_settings.loaded_all}\n"
    "def test_uses_it(contexts, eksid_cluster, eksid_connection, eksid_kube):\n"
    "    assert contexts[eksid_cluster.name] == eksid_kube.context\n"
    "    assert eksid_connection['KUBECONFIG'] and eksid_connection['AWS_ENDPOINT_URL']\n"
    "def test_the_only_cluster(eksid_cluster_for, eksid_settings):\n"
    "    if len(eksid_settings.profiles) > 1:\n"
    "        with pytest.raises(pytest.UsageError, match='needs a profile name'):\n"
    "            eksid_cluster_for()\n"
    "    else:\n"
    "        assert eksid_cluster_for().name == eksid_settings.loaded.name\n"
)


def test_own_session_fixtures_use_the_cluster_factory_with_one_cluster_or_several(tmp_path):
    """Fixture scopes do not change with the number of clusters: a session fixture of one's own that works with
    one profile works with several (eksid_cluster_for), and the per-test accessors follow the test's cluster."""
    test = tmp_path / "test_own.py"
    test.write_text(OWN_SESSION_FIXTURE)
    demo = f"--profile={REPO / 'profiles' / 'demo.yaml'}"
    one = run_pytest(demo, str(test), tmp_path=tmp_path)
    assert one.returncode == 0, one.stdout[-3000:]
    assert sorted(one.outcomes.values()) == ["passed", "passed"], one.outcomes
    two = run_pytest(demo, f"--profile={second_cluster(tmp_path)}", str(test), tmp_path=tmp_path)
    assert two.returncode == 0, two.stdout[-3000:]
    assert sorted(two.outcomes.values()) == ["passed"] * 3, two.outcomes  # test_uses_it once per cluster


# --- fleet files: parsing and errors (no cluster needed) -------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


LIVE = (REPO / "profiles" / "finance-prod.yaml").read_text()


def test_fleet_overrides_apply_to_live_clusters(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "prod.yaml").write_text(LIVE)
    (tmp_path / "fleets").mkdir()
    fleet = write(
        tmp_path / "fleets" / "nightly.yaml",
        """\
        clusters:
          - profile: prod
            kubeContext: arn:aws:eks:ap-southeast-1:111122223333:cluster/prod
            kubeconfig: ../kube/nightly.config
            awsProfile: prod-audit
        """,
    )
    [loaded] = load_fleet(str(fleet), tmp_path, tmp_path)
    cluster = loaded.profile.cluster
    assert loaded.name == "prod"
    assert cluster.kube_context == "arn:aws:eks:ap-southeast-1:111122223333:cluster/prod"
    assert cluster.kubeconfig == str((tmp_path / "kube" / "nightly.config").resolve())
    assert cluster.aws_profile == "prod-audit"


def test_fleet_profile_paths_are_relative_to_the_fleet_file(tmp_path):
    (tmp_path / "fleets").mkdir()
    (tmp_path / "fleets" / "prod.yaml").write_text(LIVE)
    write(tmp_path / "fleets" / "all.yaml", "clusters:\n  - profile: ./prod.yaml\n")
    # The fleet file is relative to where the option came from; its profile to the fleet file.
    [loaded] = load_fleet("fleets/all.yaml", REPO, tmp_path)
    assert loaded.path == tmp_path / "fleets" / "prod.yaml"


def test_a_fleet_entry_cannot_point_a_sandbox_profile_elsewhere(tmp_path):
    """The sandbox provider refuses what would be silently ignored: the core loads the override as it would for
    any cluster; the sandbox, which owns how its cluster is reached, says no before anything starts."""
    write(tmp_path / "all.yaml", "clusters:\n  - profile: demo\n    kubeContext: other\n    awsProfile: p\n")
    run = run_pytest(f"--fleet={tmp_path / 'all.yaml'}", tmp_path=tmp_path)
    assert run.returncode == 4, run.stdout[-2000:]
    assert (
        "starts the embedded sandbox, which brings its own kubeconfig and credentials; remove kubeContext, awsProfile"
        in run.stderr
    )
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: []\n", "all.yaml:1: clusters: List should have at least 1 item"),
        (
            "clusters:\n  - profile: demo\n    context: x\n",
            "unknown key 'context'; allowed here: awsProfile, kubeContext",
        ),
        ("clusters:\n  - profile: nosuch\n", "clusters[0]: profile 'nosuch': no such file"),
        ("- demo\n", "a fleet file is a YAML mapping with a 'clusters' list"),
        ("clusters: [\n", "YAML syntax error"),
    ],
    ids=["empty", "unknown-key", "missing-profile", "not-a-mapping", "yaml"],
)
def test_fleet_errors_name_the_file_and_the_fix(tmp_path, text, message):
    fleet = write(tmp_path / "all.yaml", text)
    with pytest.raises(ProfileError) as err:
        load_fleet(str(fleet), REPO, tmp_path)
    assert message in str(err.value)


def test_missing_fleet_file(tmp_path):
    with pytest.raises(ProfileError, match=r"fleet file 'nope.yaml': no such file .*nope.yaml"):
        load_fleet("nope.yaml", REPO, tmp_path)


def test_two_profiles_of_one_name_are_refused(tmp_path):
    copy = tmp_path / "demo.yaml"
    copy.write_text((REPO / "profiles" / "demo.yaml").read_text())
    with pytest.raises(ProfileError, match="two profiles named 'demo' in one run"):
        check_unique_names([load_profile("demo", REPO), load_profile(str(copy), REPO)])


def test_one_file_named_twice_is_one_cluster_two_of_a_name_an_error(tmp_path):
    twice = run_pytest("--profile", "demo", f"--profile={REPO / 'profiles' / 'demo.yaml'}", "--co", tmp_path=tmp_path)
    assert twice.returncode == 0, twice.stdout[-2000:]
    assert twice.stdout.count("eksid: profile demo:") == 1
    once = run_pytest("--profile", "demo", "--co", tmp_path=tmp_path / "once")
    collected = re.search(r"\d+/\d+ tests collected", once.stdout)
    assert collected, once.stdout[-2000:]
    assert collected.group(0) in twice.stdout  # the same file named twice is one cluster's tests, once
    other = tmp_path / "demo.yaml"
    other.write_text((REPO / "profiles" / "demo.yaml").read_text())
    clash = run_pytest("--profile", "demo", f"--profile={other}", "--co", tmp_path=tmp_path)
    assert clash.returncode == 4
    assert "ERROR: two profiles named 'demo' in one run" in clash.stderr


def test_cluster_group_reads_the_profile_from_the_parameter_id():
    from pytest_eksid.grouping import cluster_group

    profiles = ["demo", "east"]
    assert cluster_group("suites/test_identity.py::test_caller_role[east/invoice-exporter]", profiles) == "east"
    assert cluster_group("suites/test_imds.py::test_imds_blocked[demo/w@ng-batch-v1]", profiles) == "demo"
    assert cluster_group("suites/test_permissions.py::test_action[demo/w/allow-0:s3:PutObject]", profiles) == "demo"
    assert cluster_group("tests/test_x.py::test_y[other/thing]", profiles) is None  # not a profile of the run
    assert cluster_group("tests/test_x.py::test_y", profiles) is None
    # another parameter's id before the workload's (a user's parametrize ran first)
    assert cluster_group("tests/test_x.py::test_y[eu-east/w]", profiles) == "east"
    assert cluster_group("tests/test_x.py::test_y[a/b-demo/w]", ["demo", "a"]) == "a"


def test_command_line_profiles_do_not_mix_with_the_environments(
    tmp_path: Path, user_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    east = second_cluster(tmp_path)
    user_pytester.mkdir("profiles").joinpath("demo.yaml").write_text((REPO / "profiles" / "demo.yaml").read_text())
    user_pytester.makepyfile(test_uses_workload="def test_x(eksid_workload):\n    pass\n")
    fleet = user_pytester.path / "fleet.yaml"
    fleet.write_text(f"clusters:\n  - profile: {east}\n")
    monkeypatch.setenv("EKSID_PROFILE", "demo")
    run = pytester_run(user_pytester, f"--fleet={fleet}", "--co", timeout=120)
    assert run.ret == pytest.ExitCode.OK, run.stdout.str()[-2000:]
    run.stdout.fnmatch_lines(["eksid: profile east: *"])
    run.stdout.no_fnmatch_line("eksid: profile demo: *")  # $EKSID_PROFILE does not join a --fleet given here
    monkeypatch.setenv("EKSID_PROFILE", f"demo, {east}")
    both = pytester_run(user_pytester, "--co", timeout=120)
    both.stdout.fnmatch_lines(["eksid: profile demo: *", "eksid: profile east: *"])


def test_fleet_profile_path_with_a_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "east.yaml").write_text((REPO / "profiles" / "finance-prod.yaml").read_text())
    fleet = write(tmp_path / "fleet.yaml", "clusters:\n  - profile: ~/east.yaml\n")
    [loaded] = load_fleet(str(fleet), REPO, tmp_path)
    assert loaded.path == tmp_path / "east.yaml"


def test_ctrl_c_with_two_clusters_deletes_pods_and_stops_the_child_sandbox(tmp_path):
    data = demo_data()
    data["cluster"]["name"] = "demo-east"
    data["sandbox"]["podStartSeconds"] = 30
    east = write_profile(tmp_path, data, "east")
    code, out = interrupt_pytest("--profile", "demo", f"--profile={east}", when="east: launching 4 probe pod(s)")
    assert code == 2, out
    assert "eksid: east: deleted 4 probe pod(s)" in out
    assert "INTERNALERROR" not in out
    left = subprocess.run(["pgrep", "-f", f"pytest_eksid.sandbox --profile {east}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
